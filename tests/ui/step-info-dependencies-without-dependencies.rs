//! An undo takes `StepInfo<'_, Services>` in a saga without dependencies
//! (`()`): one error, at the undo in `saga!`.
use saga_core::{saga, saga_task, StepError, StepInfo};

struct Shop;

struct Services;

#[saga_task]
fn charge(_: &mut Shop) -> Result<u64, StepError> {
    Ok(1)
}

#[saga_task]
fn refund(_: &mut Shop, _id: Option<&u64>, _info: StepInfo<'_, Services>) -> Result<(), StepError> {
    Ok(())
}

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        step charge => undo refund;
    };
}
