//! What a step's name may be: a type implementing `Task` by hand, braced
//! or an enum (it has no value), a function that shares its name with a
//! macro or a prelude macro, functions declared in a generic function's
//! body, and paths through `self` and `crate`.

#![deny(warnings)]

use saga_core::{StepError, Task, TaskFn, saga, saga_task};

struct Shop;

struct Charge {}

impl Task<Shop> for Charge {
    type Output = ();
    const NAME: &'static str = "charge";
    const ACTION: TaskFn<Shop, (), ()> = TaskFn::Exclusive(|_, _| Ok::<(), StepError>(()));
}

enum Refund {}

impl Task<Shop> for Refund {
    type Output = ();
    const NAME: &'static str = "refund";
    const ACTION: TaskFn<Shop, (), ()> = TaskFn::Exclusive(|_, _| Ok::<(), StepError>(()));
}

macro_rules! notify {
    () => {};
}

#[saga_task]
fn notify(_: &mut Shop) -> Result<(), StepError> {
    notify!();
    Ok(())
}

#[saga_task]
fn vec(_: &mut Shop) -> Result<(), StepError> {
    Ok(())
}

fn build<T>() -> saga_core::Saga<Shop> {
    #[saga_task]
    fn local(_: &mut Shop) -> Result<(), StepError> {
        Ok(())
    }
    saga! {
        name: "names",
        context: Shop,
        step Charge;
        step Refund;
        step notify;
        step vec;
        step local;
        step self::notify, name "notify_again";
        step crate::vec, name "vec_again";
    }
}

fn main() {
    let report = build::<u8>().run_blocking(&mut Shop).unwrap();
    assert_eq!(report.steps.len(), 7);
}
