// A deprecated step and compensation, still in the saga while old
// executions drain: the attribute's own calls of them do not warn, and
// the saga that names them is allowed to as any caller would be.
#![deny(warnings)]

use saga_core::{saga, saga_task, Saga, StepError};

pub struct Ctx {
    pub n: u32,
}

#[saga_task(undo = old_undo)]
#[deprecated(note = "v2 uses charge_v2")]
pub fn old_step(c: &mut Ctx) -> Result<u32, StepError> {
    c.n += 1;
    Ok(c.n)
}

#[saga_task]
#[deprecated(note = "v2 uses refund_v2")]
pub fn old_undo(c: &mut Ctx, _n: Option<&u32>) -> Result<(), StepError> {
    c.n = 0;
    Ok(())
}

#[saga_task]
#[deprecated]
pub async fn old_async(c: &Ctx) -> Result<(), StepError> {
    let _ = c.n;
    Ok(())
}

#[allow(deprecated)]
pub fn old() -> Saga<Ctx> {
    saga! { name: "old", context: Ctx, step old_step; step old_async; }
}

fn main() {
    let _ = old();
}
