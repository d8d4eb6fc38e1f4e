// A method taking the context after `&self`: one error, at `&self`, not
// a second one calling the context an unexpected parameter.
use saga_core::{saga_task, StepError};

struct Order;

struct Payments;

impl Payments {
    #[saga_task]
    fn charge(&self, _: &mut Order) -> Result<(), StepError> { Ok(()) }
}

fn main() {}
