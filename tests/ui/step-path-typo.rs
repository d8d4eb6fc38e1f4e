// A misspelled step in another module, and a misspelled type that
// implements `Task` by hand: one error each, at the path.
use saga_core::{saga, StepError, Task, TaskFn};

struct Order;

mod payments {
    use super::*;

    #[saga_core::saga_task]
    pub fn charge(_: &mut Order) -> Result<(), StepError> { Ok(()) }
}

struct Refund;

impl Task<Order> for Refund {
    type Output = ();
    const NAME: &'static str = "refund";
    const ACTION: TaskFn<Order, (), ()> = TaskFn::Exclusive(|_, _| Ok::<(), StepError>(()));
}

fn main() {
    let _saga = saga! {
        name: "order",
        context: Order,
        step payments::chrage;
    };
    let _saga = saga! {
        name: "refund",
        context: Order,
        step Refnud;
    };
}
