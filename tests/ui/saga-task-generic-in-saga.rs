// A generic `#[saga_task]` named in `saga!`: the attribute's error only,
// not a second "type annotations needed" where the saga names it.
use saga_core::{saga, saga_task, StepError};

struct Order;

trait Pay {
    fn pay(&self) -> u64;
}

struct Stripe;

impl Pay for Stripe {
    fn pay(&self) -> u64 { 1 }
}

#[saga_task]
fn charge<P: Pay>(_: &mut Order, p: &P) -> Result<u64, StepError> { Ok(p.pay()) }

fn main() {
    let _saga = saga! {
        name: "order",
        context: Order,
        dependencies: Stripe,
        step charge;
    };
}
