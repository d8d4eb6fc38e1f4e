use saga_core::{saga, saga_task, StepError};

struct Shop;

#[saga_task(pivot)]
fn ship(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

#[saga_task(undo = unnotify)]
fn notify(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

#[saga_task]
fn unnotify(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        step ship;
        step notify;
    };
}
