use saga_core::{saga, saga_task, StepError};

struct Order;

#[saga_task]
fn charge(_order: &mut Order) -> Result<u64, StepError> {
    Ok(1)
}

fn main() {
    let _saga = saga! { name: "order", context: Ordr, step charge; };
}
