use std::cell::Cell;

use saga_core::{saga, saga_task, StepError};

struct Trip {
    booked: Cell<u32>,
}

#[saga_task]
fn book_hotel(trip: &Trip) -> Result<(), StepError> {
    trip.booked.set(trip.booked.get() + 1);
    Ok(())
}

fn main() {
    let _saga = saga! {
        name: "trip",
        context: Trip,
        parallel {
            step book_hotel;
        }
    };
}
