use saga_core::{saga_task, StepError};

struct Shop;

#[saga_task(name = charge_card)]
fn charge(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {}
