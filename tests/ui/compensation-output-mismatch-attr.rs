use saga_core::{saga_task, StepError};

struct Shop;

struct PaymentId(u64);

#[saga_task(compensate = refund)]
fn charge(_: &mut Shop) -> Result<PaymentId, StepError> { Ok(PaymentId(1)) }

#[saga_task]
fn refund(_: &mut Shop, _payment: Option<&u64>) -> Result<(), StepError> { Ok(()) }

fn main() {}
