use saga_core::{saga_task, StepError};

struct Shop;

// A compensation's timeout is its step's `undo_timeout`.
#[saga_task(timeout = "1s")]
async fn refund(_: &mut Shop, _payment: Option<&u64>) -> Result<(), StepError> { Ok(()) }

fn main() {}
