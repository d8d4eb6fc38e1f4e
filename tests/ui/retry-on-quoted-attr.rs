use saga_core::{saga_task, StepError};

struct Shop;

fn busy(_: &saga_core::StepError) -> bool { true }

#[saga_task(retry(attempts = 3, on = "busy"))]
fn charge(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {}
