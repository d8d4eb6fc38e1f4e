// A misspelled step: one error, rustc's, at the token, with the name it
// likely meant.
use saga_core::{saga, saga_task, StepError};

struct Order;

#[saga_task]
fn reserve_stock(_: &mut Order) -> Result<(), StepError> { Ok(()) }

#[saga_task]
fn charge_payment(_: &mut Order) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "order",
        context: Order,
        step reserve_stock;
        step charge_paymnet;
    };
}
