use saga_core::{saga_task, StepError};

struct Shop;

#[saga_task(timeout = 2s)]
async fn charge(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {}
