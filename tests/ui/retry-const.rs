use saga_core::{saga, saga_task, StepError};

struct Order;

const MAX_ATTEMPTS: u32 = 5;

#[saga_task]
fn charge(_order: &mut Order) -> Result<u64, StepError> {
    Ok(1)
}

fn main() {
    let _saga = saga! { name: "order", context: Order, step charge, retry MAX_ATTEMPTS; };
}
