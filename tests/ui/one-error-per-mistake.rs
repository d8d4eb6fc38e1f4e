//! A mistake in `#[saga_task]` gives one error: the function and a stand-in
//! twin are still emitted, so the saga and the direct call that use it do
//! not add errors of their own.
use saga_core::{saga, saga_task, StepError};

struct Shop;

#[saga_task(timeout = "2s")]
fn ship(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {
    let saga = saga! {
        name: "order",
        context: Shop,
        step ship;
    };
    let _ = saga.run_blocking(&mut Shop);
    let _ = ship(&mut Shop);
}
