// An associated function named in `saga!` by its type's path: the saga
// says to write a free function.
use saga_core::{saga, saga_task, StepError};

struct Order;

struct Payments;

impl Payments {
    #[saga_task]
    fn charge(_: &mut Order) -> Result<(), StepError> { Ok(()) }
}

fn main() {
    let _saga = saga! {
        name: "order",
        context: Order,
        step Payments::charge;
    };
}
