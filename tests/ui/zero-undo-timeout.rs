use saga_core::{saga, saga_task, StepError};

struct Shop;

#[saga_task]
async fn charge(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

#[saga_task]
async fn refund(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

#[saga_task(undo = refund, undo_timeout = "0s")]
async fn bill(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        step charge => undo refund, undo_timeout 0ms;
    };
}
