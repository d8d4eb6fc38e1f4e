// `dependencies:` names a concrete type: `saga!` checks the saga with
// items (consts), which cannot see the function's type parameters. The
// builder takes a generic `D` (tests/test_macros.rs shows it).
use saga_core::{saga, saga_task, Provides, Saga, StepError};

struct Order;
struct Payments;

#[saga_task]
fn charge(_order: &mut Order, _payments: &Payments) -> Result<u64, StepError> {
    Ok(1)
}

fn checkout<D>() -> Saga<Order, D>
where
    D: Provides<Payments> + Send + Sync + 'static,
{
    saga! { name: "checkout", context: Order, dependencies: D, step charge; }
}

fn main() {
    let _ = checkout::<Payments>();
}
