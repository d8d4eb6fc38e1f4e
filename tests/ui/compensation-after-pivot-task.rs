use saga_core::{saga, saga_task, StepError, Task, TaskFn, UndoFn};

struct Shop;

struct Notify;
impl Task<Shop> for Notify {
    type Output = ();
    const NAME: &'static str = "notify";
    const ACTION: TaskFn<Shop, (), ()> = TaskFn::Exclusive(|_, _| Ok(()));
    const UNDO: Option<UndoFn<Shop, (), ()>> = Some(UndoFn::Exclusive(|_, _, _| Ok(())));
}

#[saga_task]
fn ship(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        pivot ship;
        step Notify;
    };
}
