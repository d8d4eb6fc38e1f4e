use std::future::Future;

use saga_core::{saga_task, StepError};

struct Order;

#[saga_task]
fn charge(_: &mut Order) -> impl Future<Output = Result<(), StepError>> { async { Ok(()) } }

fn main() {}
