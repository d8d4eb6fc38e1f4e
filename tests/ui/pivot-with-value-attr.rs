use saga_core::{saga_task, StepError};

struct Shop;

#[saga_task(pivot = true)]
fn ship(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {}
