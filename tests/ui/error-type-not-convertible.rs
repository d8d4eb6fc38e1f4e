use saga_core::saga_task;

struct Shop;

/// Not an error type: `StepError` cannot be made from a `u32`.
#[saga_task]
fn charge(_: &mut Shop) -> Result<(), u32> { Ok(()) }

fn main() {}
