use saga_core::{saga_task, StepError};

struct Shop;

#[saga_task]
async fn refund(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

#[saga_task(undo = refund, undo_timeout = 5s)]
async fn charge(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {}
