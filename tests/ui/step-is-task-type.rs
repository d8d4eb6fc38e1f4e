use saga_core::{saga, StepError};

struct Shop;

use saga_core::{StepInfo, Task};

struct Charge;

impl Task<Shop> for Charge {
    type Output = ();
    fn name(&self) -> &str { "charge" }
    fn execute(&self, _: &mut Shop, _: &StepInfo<'_>) -> Result<(), StepError> { Ok(()) }
}

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        step Charge;
    };
}
