// An async step's output must be `Send + Sync`: each error points at the
// output type, not at the attribute.
use std::rc::Rc;

use saga_core::{saga_task, StepError};

struct Shop;

#[saga_task]
async fn charge(_: &mut Shop) -> Result<Rc<u32>, StepError> { Ok(Rc::new(1)) }

fn main() {}
