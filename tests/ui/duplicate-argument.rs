use saga_core::{saga_task, StepError};

struct Shop;

#[saga_task(name = "a", name = "b")]
fn charge(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {}
