use saga_core::{saga_task, StepError};

struct Shop;

#[saga_task(undo = charge)]
fn charge(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {}
