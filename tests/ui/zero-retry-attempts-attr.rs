use saga_core::{saga_task, StepError};

struct Shop;

#[saga_task(retry(attempts = 0, backoff = "1s"))]
fn ship(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {}
