use saga_core::{saga, saga_task, StepError};

struct Shop;

struct Payments;

#[saga_task]
fn charge(_: &mut Shop) -> Result<u64, StepError> {
    Ok(1)
}

#[saga_task]
fn refund(_: &mut Shop, _id: Option<&u64>, _payments: &Payments) -> Result<(), StepError> {
    Ok(())
}

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        step charge => undo refund;
    };
}
