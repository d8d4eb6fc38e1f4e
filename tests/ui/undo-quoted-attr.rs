use saga_core::{saga_task, StepError};

struct Shop;

#[saga_task(undo = "refund")]
fn charge(_: &mut Shop) -> Result<u64, StepError> { Ok(1) }

#[saga_task]
fn refund(_: &mut Shop, _payment: Option<&u64>) -> Result<(), StepError> { Ok(()) }

fn main() {}
