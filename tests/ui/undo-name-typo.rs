// A misspelled compensation: one error, at the token.
use saga_core::{saga, saga_task, StepError};

struct Order;

#[saga_task]
fn charge(_: &mut Order) -> Result<u64, StepError> { Ok(1) }

#[saga_task]
fn refund(_: &mut Order, _payment: Option<&u64>) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "order",
        context: Order,
        step charge => undo refnud;
    };
}
