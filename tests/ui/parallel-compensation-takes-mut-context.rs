use saga_core::{saga, saga_task, StepError};

struct Trip;

#[saga_task]
fn book_hotel(_: &Trip) -> Result<u32, StepError> { Ok(7) }

#[saga_task]
fn cancel_hotel(_: &mut Trip, _: Option<&u32>) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "trip",
        context: Trip,
        parallel {
            step book_hotel => undo cancel_hotel;
        }
    };
}
