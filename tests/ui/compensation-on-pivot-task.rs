use saga_core::{saga, saga_task, StepError, Task, TaskFn, UndoFn};

struct Shop;

/// The pivot, with an undo.
struct Ship;
impl Task<Shop> for Ship {
    type Output = ();
    const NAME: &'static str = "ship";
    const PIVOT: bool = true;
    const ACTION: TaskFn<Shop, (), ()> = TaskFn::Exclusive(|_, _| Ok(()));
    const UNDO: Option<UndoFn<Shop, (), ()>> = Some(UndoFn::Exclusive(|_, _, _| Ok(())));
}

#[saga_task]
fn charge(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        step charge;
        step Ship;
    };
}
