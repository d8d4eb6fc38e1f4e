use saga_core::{saga_task, StepError};

struct Shop;

impl Shop {
    #[saga_task]
    fn charge(&mut self) -> Result<(), StepError> { Ok(()) }
}

fn main() {}
