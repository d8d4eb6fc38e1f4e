use saga_core::{saga, saga_task, StepError};

struct Shop;

#[saga_task(undo = refund)]
fn charge(_: &mut Shop) -> Result<u64, StepError> { Ok(1) }

// `&u64` asks the saga's dependencies for a `u64`: the output is missing.
#[saga_task]
fn refund(_: &mut Shop, _payment: &u64) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        step charge;
    };
}
