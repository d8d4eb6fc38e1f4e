use saga_core::{saga, saga_task, StepError};

struct Shop;

#[saga_task(undo = refund)]
fn charge(_shop: &mut Shop) -> Result<u64, StepError> {
    Ok(1)
}

// No `#[saga_task]`.
fn refund(_shop: &mut Shop, _payment: Option<&u64>) -> Result<(), StepError> {
    Ok(())
}

fn main() {
    let _saga = saga! { name: "order", context: Shop, step charge; };
}
