use saga_core::{saga, saga_task, StepError};

struct Shop;

#[saga_task(compensate = cancel_order)]
fn create_order(_: &mut Shop) -> Result<u64, StepError> { Ok(1) }

#[saga_task]
fn cancel_order(_: &mut Shop, _: Option<&u64>) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        step create_order => undo cancel_order;
    };
}
