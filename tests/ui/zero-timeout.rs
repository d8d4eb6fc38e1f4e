use saga_core::{saga, saga_task, StepError};

struct Shop;

#[saga_task]
async fn ship(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

#[saga_task(timeout = "0s")]
async fn bill(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        step ship, timeout 0ms;
    };
}
