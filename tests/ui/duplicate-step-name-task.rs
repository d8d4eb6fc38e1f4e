use saga_core::{saga, saga_task, StepError, Task, TaskFn};

struct Shop;

struct Reserve;
impl Task<Shop> for Reserve {
    type Output = ();
    const NAME: &'static str = "reserve";
    const ACTION: TaskFn<Shop, (), ()> = TaskFn::Exclusive(|_, _| Ok(()));
}

/// Another type, the same name.
struct ReserveAgain;
impl Task<Shop> for ReserveAgain {
    type Output = ();
    const NAME: &'static str = "reserve";
    const ACTION: TaskFn<Shop, (), ()> = TaskFn::Exclusive(|_, _| Ok(()));
}

#[saga_task]
fn charge(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        step Reserve;
        step charge;
        step ReserveAgain;
    };
}
