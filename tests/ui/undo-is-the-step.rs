use saga_core::{saga, saga_task, StepError};

struct Shop;

#[saga_task]
fn charge(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        step charge => undo charge;
    };
}
