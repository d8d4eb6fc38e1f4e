use saga_core::{saga, saga_task, StepError};

struct Shop;

#[saga_task]
fn ship(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

/// Reads the error instead of taking and giving it back.
fn classify(error: &StepError) -> bool {
    error.is_permanent()
}

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        classify_errors: classify,
        step ship;
    };
}
