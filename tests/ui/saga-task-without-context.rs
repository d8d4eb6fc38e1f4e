use saga_core::{saga_task, StepError};

struct Shop;

#[saga_task]
fn charge() -> Result<(), StepError> { Ok(()) }

fn main() {}
