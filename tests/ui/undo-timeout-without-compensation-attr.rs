use saga_core::{saga, saga_task, StepError};

struct Shop;

#[saga_task(undo_timeout = "5s")]
async fn ship(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        step ship;
    };
}
