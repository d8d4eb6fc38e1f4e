use saga_core::{saga, saga_task, StepError};

struct Trip;

#[saga_task]
fn book_hotel(_: &Trip) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "trip",
        context: Trip,
        step book_hotel;
        parallel {
            step book_hotel;
        }
    };
}
