use saga_core::{saga, saga_task, Provides, StepError};

struct Shop;

struct Payments;
struct Mailer;
struct Services {
    mailer: Mailer,
}

impl Provides<Mailer> for Services {
    fn provide(&self) -> &Mailer {
        &self.mailer
    }
}

#[saga_task]
fn charge(_: &mut Shop, _payments: &Payments, _mailer: &Mailer) -> Result<u64, StepError> {
    Ok(1)
}

fn main() {
    let _saga = saga! {
        name: "order",
        context: Shop,
        dependencies: Services,
        step charge;
    };
}
