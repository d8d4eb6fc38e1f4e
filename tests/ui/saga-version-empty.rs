use saga_core::{saga, saga_task, StepError};

struct Shop;

#[saga_task]
fn ship(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "order",
        version: " ",
        context: Shop,
        step ship;
    };
}
