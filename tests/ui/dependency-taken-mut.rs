use saga_core::{saga_task, StepError};

struct Order;

struct Pool;

#[saga_task]
fn charge(_order: &mut Order, _pool: &mut Pool) -> Result<(), StepError> { Ok(()) }

fn main() {}
