use saga_core::{saga, saga_task, StepError};

struct Trip;

#[saga_task]
fn book_hotel(_: &Trip) -> Result<(), StepError> { Ok(()) }

#[saga_task(name = "book_hotel")]
fn book_room(_: &Trip) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "trip",
        context: Trip,
        parallel {
            step book_hotel;
        }
        parallel {
            step book_room;
        }
    };
}
