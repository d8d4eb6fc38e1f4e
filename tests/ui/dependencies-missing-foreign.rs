// The saga's dependencies are a type of std (here `String`, or `()`
// without `dependencies:`), for which no `Provides` impl can be written:
// the note must not ask for one.
use saga_core::{saga, saga_task, StepError};

struct Shop;

#[saga_task]
fn charge(_: &mut Shop, _base_url: &str) -> Result<(), StepError> { Ok(()) }

struct PaymentsClient;

#[saga_task]
fn pay(_: &mut Shop, _client: &PaymentsClient) -> Result<(), StepError> { Ok(()) }

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        dependencies: String,
        step charge;
    };
    let _saga = saga! {
        name: "pay",
        context: Shop,
        step pay;
    };
}
