// `Box<dyn Error>` is neither `Send` nor `Sync`: one error per function,
// saying to add `+ Send + Sync`.
use saga_core::saga_task;

struct Order;

#[saga_task]
fn charge(_: &mut Order) -> Result<u64, Box<dyn std::error::Error>> { Ok(1) }

#[saga_task]
async fn refund(_: &mut Order) -> Result<(), Box<dyn std::error::Error>> { Ok(()) }

fn main() {}
