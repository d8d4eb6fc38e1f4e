//! A step takes `StepInfo<'_, Services>` in a saga whose dependencies are
//! another type: one error, at the step in `saga!`, naming the step and
//! both types.
use saga_core::{saga, saga_task, StepError, StepInfo};

struct Shop;

struct Services;
struct Other;

#[saga_task]
fn charge(_: &mut Shop, _info: &StepInfo<'_, Services>) -> Result<u64, StepError> {
    Ok(1)
}

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        dependencies: Other,
        step charge;
    };
}
