use saga_core::{saga, saga_task, StepError};

struct Shop;

#[saga_task(name = "reserve")]
fn reserve_stock(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

#[saga_task(name = "reserve")]
fn reserve_seat(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        step reserve_stock;
        step reserve_seat;
    };
}
