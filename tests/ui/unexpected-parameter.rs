use saga_core::{saga_task, StepError};

struct Shop;

#[saga_task]
fn charge(_: &mut Shop, _amount: u64) -> Result<(), StepError> { Ok(()) }

fn main() {}
