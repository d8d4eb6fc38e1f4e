use saga_core::{saga, saga_task, StepError, Task, TaskFn};

struct Shop;

struct Reserve;
impl Task<Shop> for Reserve {
    type Output = u32;
    const NAME: &'static str = "reserve";
    const ACTION: TaskFn<Shop, (), u32> = TaskFn::Exclusive(|_, _| Ok(7));
}

#[saga_task]
fn release(_: &mut Shop, _: Option<&String>) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        step Reserve => undo release;
    };
}
