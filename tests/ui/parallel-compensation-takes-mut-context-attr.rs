use saga_core::{saga, saga_task, StepError};

struct Trip;

#[saga_task(undo = cancel_flight)]
fn book_flight(_: &Trip) -> Result<String, StepError> { Ok("LH 400".into()) }

#[saga_task]
fn cancel_flight(_: &mut Trip, _: Option<&String>) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "trip",
        context: Trip,
        parallel {
            step book_flight;
        }
    };
}
