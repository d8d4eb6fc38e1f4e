use saga_core::{saga, saga_task, StepError, Task, TaskFn, TaskFuture};

struct Shop;

/// Takes the context as `&mut Shop`.
struct Book;
impl Task<Shop> for Book {
    type Output = ();
    const NAME: &'static str = "book";
    const ACTION: TaskFn<Shop, (), ()> = TaskFn::ExclusiveAsync(|_, _| TaskFuture::new(async { Ok(()) }));
}

#[saga_task]
async fn mail(_: &Shop) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        parallel {
            step Book;
            step mail;
        }
    };
}
