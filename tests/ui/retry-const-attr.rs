use saga_core::{saga_task, StepError};

struct Order;

const MAX_ATTEMPTS: u32 = 5;

#[saga_task(retry(attempts = MAX_ATTEMPTS))]
fn charge(_order: &mut Order) -> Result<u64, StepError> {
    Ok(1)
}

fn main() {}
