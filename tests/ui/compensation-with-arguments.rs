use saga_core::{saga_task, StepError};

struct Shop;

#[saga_task(retry(attempts = 3))]
fn refund(_: &mut Shop, _payment: Option<&u64>) -> Result<(), StepError> { Ok(()) }

fn main() {}
