use saga_core::{saga_task, StepError};

struct Shop;

#[saga_task(retry(3))]
fn charge(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {}
