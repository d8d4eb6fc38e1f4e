use saga_core::{saga, saga_task, StepError};

struct Shop;

struct PaymentId(u64);

#[saga_task]
fn charge(_: &mut Shop) -> Result<PaymentId, StepError> { Ok(PaymentId(1)) }

#[saga_task]
fn refund(_: &mut Shop, _payment: Option<&u64>) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        step charge => undo refund;
    };
}
