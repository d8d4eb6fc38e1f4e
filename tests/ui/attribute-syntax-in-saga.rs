// The attribute's `retry(attempts = 3)` and `timeout = "2s"` written in
// `saga!`, whose options are `retry 3` and `timeout 2s`.
use saga_core::{saga, saga_task, StepError};

struct Shop;

#[saga_task]
async fn charge(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        step charge, retry(attempts = 3);
    };
    let _saga = saga! {
        name: "order",
        context: Shop,
        step charge, timeout = "2s";
    };
}
