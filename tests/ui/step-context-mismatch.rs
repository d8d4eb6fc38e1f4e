use saga_core::{saga, saga_task, StepError};

struct Shop;

struct Ledger;

#[saga_task]
fn reserve(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

#[saga_task]
fn charge(_: &mut Ledger) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        step reserve;
        step charge;
    };
}
