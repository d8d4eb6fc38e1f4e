use saga_core::{saga, saga_task, StepError};

struct Order;

trait Http {
    fn get(&self) -> u32;
}

#[saga_task]
fn charge(_order: &mut Order, http: &impl Http) -> Result<u32, StepError> {
    Ok(http.get())
}

fn main() {
    let _saga = saga! { name: "order", context: Order, step charge; };
}
