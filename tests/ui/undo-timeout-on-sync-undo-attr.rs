use saga_core::{saga, saga_task, StepError};

struct Shop;

#[saga_task(undo = refund, undo_timeout = "5s")]
async fn charge(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

#[saga_task]
fn refund(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        step charge;
    };
}
