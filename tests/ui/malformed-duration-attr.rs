use saga_core::{saga_task, StepError};

struct Shop;

#[saga_task(timeout = "2 sec")]
async fn ship(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {}
