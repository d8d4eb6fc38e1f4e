use saga_core::{saga_task, StepError};

struct Shop;

#[saga_task(retries = 3)]
fn charge(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {}
