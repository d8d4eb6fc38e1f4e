use saga_core::{saga_task, StepError};

struct Shop;

#[saga_task(pivot, compensate = unship)]
fn ship(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

#[saga_task]
fn unship(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {}
