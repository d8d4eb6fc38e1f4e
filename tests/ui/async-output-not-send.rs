// An async step's output must be `Send + Sync`: errors at the output type,
// and (a known gap since the one-box TaskFuture) again at the attribute.
use std::rc::Rc;

use saga_core::{saga_task, StepError};

struct Shop;

#[saga_task]
async fn charge(_: &mut Shop) -> Result<Rc<u32>, StepError> { Ok(Rc::new(1)) }

fn main() {}
