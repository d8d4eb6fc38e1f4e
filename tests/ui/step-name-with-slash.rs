use saga_core::{saga, saga_task, StepError};

struct Shop;

#[saga_task]
fn ship(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

#[saga_task(name = "bill/card")]
fn bill(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        step ship, name "ship/parcel";
    };
}
