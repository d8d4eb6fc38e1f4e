use saga_core::{Saga, Task, TaskFn};

/// A task configured by a field that nothing would read.
struct FailIf {
    fail: bool,
}

impl Task<u32> for FailIf {
    type Output = ();
    const NAME: &'static str = "fail_if";
    const ACTION: TaskFn<u32, (), ()> = TaskFn::Exclusive(|_, _| Ok(()));
}

fn main() {
    let task = FailIf { fail: true };
    let _ = task.fail;
    let _saga = Saga::builder("configurable").task(task).build();
}
