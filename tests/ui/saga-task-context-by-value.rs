use saga_core::{saga_task, StepError};

struct Shop;

#[saga_task]
fn charge(_shop: Shop) -> Result<(), StepError> { Ok(()) }

fn main() {}
