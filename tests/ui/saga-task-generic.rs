use saga_core::{saga_task, StepError};

struct Shop;

#[saga_task]
fn charge<C>(_: &mut C) -> Result<(), StepError> { Ok(()) }

fn main() {}
