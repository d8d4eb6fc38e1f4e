use saga_core::{saga_task, StepError};

struct Shop;

#[saga_task]
fn refund(_: &mut Shop, _payment: &u64) -> Result<(), StepError> { Ok(()) }

fn main() {}
