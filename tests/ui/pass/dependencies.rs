//! A saga whose dependencies hold two tools: steps ask for either or
//! both, in any order with the `StepInfo` and a compensation's output; a
//! step asking for nothing fits too.
use saga_core::{saga, saga_task, Provides, Saga, StepError, StepInfo};

struct Shop;

struct Client;
struct Mailer;
struct Services {
    client: Client,
    mailer: Mailer,
}

impl Provides<Client> for Services {
    fn provide(&self) -> &Client {
        &self.client
    }
}

impl Provides<Mailer> for Services {
    fn provide(&self) -> &Mailer {
        &self.mailer
    }
}

#[saga_task(undo = release)]
fn reserve(_: &mut Shop, _client: &Client) -> Result<u32, StepError> {
    Ok(1)
}

#[saga_task]
fn release(_: &mut Shop, _mailer: &Mailer, _seat: Option<&u32>, _info: &StepInfo<'_>) -> Result<(), StepError> {
    Ok(())
}

#[saga_task]
async fn charge(_: &Shop, _info: &StepInfo<'_>, _mailer: &Mailer, _client: &Client) -> Result<u64, StepError> {
    Ok(1)
}

#[saga_task]
async fn refund(_: &Shop, _id: Option<&u64>, _client: &Client) -> Result<(), StepError> {
    Ok(())
}

#[saga_task]
fn ship(_: &mut Shop) -> Result<(), StepError> {
    Ok(())
}

fn main() {
    let saga: Saga<Shop, Services> = saga! {
        name: "order",
        context: Shop,
        dependencies: Services,
        step reserve;
        parallel {
            step charge => undo refund;
        }
        pivot ship;
    };
    let services = Services { client: Client, mailer: Mailer };
    let _ = saga.using(&services).run_blocking(&mut Shop);
    // A saga whose dependencies are one tool: every type provides itself.
    let _one: Saga<Shop, Client> = saga! {
        name: "one",
        context: Shop,
        dependencies: Client,
        step ship;
    };
}
