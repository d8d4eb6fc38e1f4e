use saga_core::{saga, StepError};

struct Shop;

fn create_order(_: &mut Shop) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        step create_order;
    };
}
