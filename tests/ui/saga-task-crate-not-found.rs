use saga_core::{saga, saga_task, StepError};

struct Shop;

// `crate =` names saga-core's path in this crate, and here names nothing.
#[saga_task(crate = platform::saga_core)]
fn charge(_shop: &mut Shop) -> Result<(), StepError> {
    Ok(())
}

fn main() {
    let _saga = saga! { name: "order", context: Shop, step charge; };
}
