use saga_core::{saga_task, StepError};

struct Shop;

// serde's habit: a string. Paths are not quoted here.
#[saga_task(crate = "saga_core")]
fn charge(_shop: &mut Shop) -> Result<(), StepError> {
    Ok(())
}

fn main() {}
