use saga_core::{saga_task, StepError};

struct Order;

struct PaymentsClient;

#[saga_task]
fn charge(_payments: &PaymentsClient, _order: &mut Order) -> Result<(), StepError> { Ok(()) }

fn main() {}
