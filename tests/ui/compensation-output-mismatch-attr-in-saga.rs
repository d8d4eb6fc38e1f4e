//! The attribute's undo receives another output than the step returns,
//! and a `saga!` names the step: one error, at the attribute's `undo`.
use saga_core::{saga, saga_task, StepError};

struct Shop;

struct PaymentId(u64);

#[saga_task(undo = refund)]
fn charge(_: &mut Shop) -> Result<PaymentId, StepError> { Ok(PaymentId(1)) }

#[saga_task]
fn refund(_: &mut Shop, _payment: Option<&u64>) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        step charge;
    };
}
