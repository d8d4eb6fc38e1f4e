use saga_core::{saga, saga_task, StepError};

struct Shop;

#[saga_task]
fn refund(_: &mut Shop, _payment: Option<&u64>) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        step refund;
    };
}
