use saga_core::{saga_task, StepError};

struct Shop;

#[saga_task(retry(attempts = 3, backoff = 100))]
fn charge(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {}
