use saga_core::{saga, StepError};

struct Shop;

use saga_core::{Task, TaskFn};

struct Charge;

impl Task<Shop> for Charge {
    type Output = ();
    const NAME: &'static str = "charge";
    const ACTION: TaskFn<Shop, (), ()> = TaskFn::Exclusive(|_, _| Ok::<(), StepError>(()));
}

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        step Charge;
    };
}
