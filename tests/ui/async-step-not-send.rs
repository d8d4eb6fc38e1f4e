use std::rc::Rc;

use saga_core::{saga_task, StepError};

struct Shop;

#[saga_task]
async fn charge(_: &mut Shop) -> Result<(), StepError> {
    let not_send = Rc::new(1);
    std::future::ready(()).await;
    drop(not_send);
    Ok(())
}

fn main() {}
