//! `#[saga_task]` functions that ask for their saga's dependencies as
//! `&T` parameters, in a `saga!` with `dependencies: Services`: sync and
//! async steps and compensations (named by the attribute or by `saga!`)
//! get the tools the process lent, in memory (`saga.using(&services)`)
//! and in the durable engine (`SagaEngine::with_dependencies`, on a real
//! SQLite file); a step that asks for nothing runs in the same saga.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use saga_core::store::{SagaStore, SqliteStore};
use saga_core::{
    ExecutionStatus, Outcome, Provides, Saga, SagaEngine, SagaReport, StepError, StepInfo,
    StepStatus, saga, saga_task,
};
use serde::{Deserialize, Serialize};
use support::durable::scratch_dir;

/// A tool: records each call it serves, with the process it belongs to.
struct Client {
    process: &'static str,
    calls: Arc<Mutex<Vec<String>>>,
}

impl Client {
    fn call(&self, what: String) {
        let mut calls = self.calls.lock().unwrap();
        calls.push(format!("{}:{what}", self.process));
    }
}

/// Another tool: counts the mails it sends.
struct Mailer {
    sent: Arc<AtomicUsize>,
}

/// The saga's dependencies: two tools.
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

/// What a test reads back of the tools it lent.
struct Ledger {
    calls: Arc<Mutex<Vec<String>>>,
    sent: Arc<AtomicUsize>,
}

impl Ledger {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

fn services(process: &'static str) -> (Services, Ledger) {
    let calls = Arc::<Mutex<Vec<String>>>::default();
    let sent = Arc::new(AtomicUsize::new(0));
    let services = Services {
        client: Client {
            process,
            calls: Arc::clone(&calls),
        },
        mailer: Mailer {
            sent: Arc::clone(&sent),
        },
    };
    (services, Ledger { calls, sent })
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    /// `ship` fails, so the saga rolls back.
    fail: bool,
    seat: Option<u32>,
    charged: Option<u64>,
    shipped: bool,
}

/// Sync, with its undo named by the attribute; asks for the client.
#[saga_task(undo = release)]
fn reserve(order: &mut Order, client: &Client) -> Result<u32, StepError> {
    client.call("reserve".into());
    order.seat = Some(12);
    Ok(12)
}

/// A sync undo asking for the client, its parameters out of the usual
/// order.
#[saga_task]
fn release(
    order: &mut Order,
    client: &Client,
    info: &StepInfo<'_>,
    seat: Option<&u32>,
) -> Result<(), StepError> {
    client.call(format!("release {seat:?} in {}", info.step()));
    order.seat = None;
    Ok(())
}

/// Async, asking for both tools, the `StepInfo` between them.
#[saga_task]
async fn charge(
    order: &mut Order,
    client: &Client,
    info: &StepInfo<'_>,
    mailer: &Mailer,
) -> Result<u64, StepError> {
    client.call(format!("charge attempt {}", info.attempt()));
    mailer.sent.fetch_add(1, Ordering::SeqCst);
    order.charged = Some(4200);
    Ok(4200)
}

/// An async undo named in `saga!`, asking for the mailer only.
#[saga_task]
async fn refund(order: &mut Order, cents: Option<&u64>, mailer: &Mailer) -> Result<(), StepError> {
    assert_eq!(cents, Some(&4200));
    mailer.sent.fetch_add(1, Ordering::SeqCst);
    order.charged = None;
    Ok(())
}

/// A step that asks for nothing runs in a saga with dependencies.
#[saga_task]
fn ship(order: &mut Order) -> Result<(), StepError> {
    if order.fail {
        return Err(StepError::new("no courier"));
    }
    order.shipped = true;
    Ok(())
}

fn checkout() -> Saga<Order, Services> {
    saga! {
        name: "checkout",
        context: Order,
        dependencies: Services,
        step reserve;
        step charge => undo refund;
        step ship;
    }
}

type StepRow = (&'static str, StepStatus, Outcome, u32, u32);

/// A run that completed, as `steps` shows it.
const COMPLETED: [StepRow; 3] = [
    ("reserve", StepStatus::Succeeded, Outcome::Applied, 1, 0),
    ("charge", StepStatus::Succeeded, Outcome::Applied, 1, 0),
    ("ship", StepStatus::Succeeded, Outcome::Applied, 1, 0),
];

/// A run whose `ship` failed, each earlier step compensated once.
const ROLLED_BACK: [StepRow; 3] = [
    ("reserve", StepStatus::Compensated, Outcome::Applied, 1, 1),
    ("charge", StepStatus::Compensated, Outcome::Applied, 1, 1),
    ("ship", StepStatus::Failed, Outcome::NotApplied, 1, 0),
];

/// Each step's name, status, outcome and attempts, and the compensation's.
fn steps(report: &SagaReport) -> Vec<(&str, StepStatus, Outcome, u32, u32)> {
    report
        .steps
        .iter()
        .map(|s| {
            (
                &*s.name,
                s.status,
                s.outcome,
                s.attempts,
                s.compensation_attempts,
            )
        })
        .collect()
}

#[tokio::test]
async fn steps_and_undos_get_the_tools_lent_to_an_in_memory_run() {
    let saga = checkout();
    let (services, ledger) = services("memory");
    let mut order = Order::default();
    let report = saga.using(&services).run(&mut order).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
    assert_eq!(steps(&report), COMPLETED);
    assert_eq!(
        ledger.calls(),
        ["memory:reserve", "memory:charge attempt 1"]
    );
    assert_eq!(ledger.sent.load(Ordering::SeqCst), 1);
    assert_eq!(
        order,
        Order {
            fail: false,
            seat: Some(12),
            charged: Some(4200),
            shipped: true,
        }
    );
}

#[tokio::test]
async fn undos_get_the_tools_when_an_in_memory_run_rolls_back() {
    let saga = checkout();
    let (services, ledger) = services("memory");
    let mut order = Order {
        fail: true,
        ..Order::default()
    };
    let err = saga.using(&services).run(&mut order).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "saga `checkout` failed at step `ship` and was rolled back (compensated: charge, reserve)"
    );
    let report = err.report();
    assert_eq!(report.status, ExecutionStatus::Compensated);
    assert_eq!(steps(report), ROLLED_BACK);
    assert_eq!(
        ledger.calls(),
        [
            "memory:reserve",
            "memory:charge attempt 1",
            "memory:release Some(12) in reserve",
        ]
    );
    // One mail for the charge, one for its refund.
    assert_eq!(ledger.sent.load(Ordering::SeqCst), 2);
    assert_eq!(order.seat, None);
    assert_eq!(order.charged, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_durable_engine_hands_its_dependencies_to_saga_macro_steps_and_undos() {
    let store: Arc<dyn SagaStore> =
        Arc::new(SqliteStore::open(scratch_dir("macro-dependencies").join("sagas.db")).unwrap());
    let (services, ledger) = services("engine");
    let engine = SagaEngine::with_store(store).with_dependencies(services);
    engine.register(checkout()).await.unwrap();

    let id = engine.start("checkout", Order::default()).await.unwrap();
    let report = engine.wait(&id).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
    assert_eq!(steps(&report), COMPLETED);

    let failing = Order {
        fail: true,
        ..Order::default()
    };
    let id = engine.start("checkout", failing).await.unwrap();
    let report = match engine.wait(&id).await {
        Err(saga_core::WaitError::Saga(failed)) => failed.report().clone(),
        other => panic!("the failing order did not roll back: {other:?}"),
    };
    assert_eq!(report.status, ExecutionStatus::Compensated);
    assert_eq!(steps(&report), ROLLED_BACK);
    assert_eq!(
        ledger.calls(),
        [
            "engine:reserve",
            "engine:charge attempt 1",
            "engine:reserve",
            "engine:charge attempt 1",
            "engine:release Some(12) in reserve",
        ]
    );
    assert_eq!(ledger.sent.load(Ordering::SeqCst), 3);
}

/// Sync, reaching the whole dependency struct through its
/// `&StepInfo<'_, Services>`.
#[saga_task(undo = unhold)]
fn hold(order: &mut Order, info: &StepInfo<'_, Services>) -> Result<u32, StepError> {
    let services = info.dependencies();
    services.client.call(format!(
        "hold in {} attempt {}",
        info.step(),
        info.attempt()
    ));
    services.mailer.sent.fetch_add(1, Ordering::SeqCst);
    order.seat = Some(7);
    Ok(7)
}

/// Its undo, taking `StepInfo<'_, Services>` by value before the output.
#[saga_task]
fn unhold(
    order: &mut Order,
    info: StepInfo<'_, Services>,
    seat: Option<&u32>,
) -> Result<(), StepError> {
    info.dependencies()
        .client
        .call(format!("unhold {seat:?} in {}", info.step()));
    order.seat = None;
    Ok(())
}

/// Async, taking `StepInfo<'_, Client>`: the part of the saga's
/// dependencies that `Services` provides.
#[saga_task]
async fn bill(order: &mut Order, info: StepInfo<'_, Client>) -> Result<u64, StepError> {
    info.dependencies().call(format!("bill in {}", info.step()));
    order.charged = Some(900);
    Ok(900)
}

/// An async undo named in `saga!`, with `&StepInfo<'_, Services>`.
#[saga_task]
async fn unbill(
    order: &mut Order,
    cents: Option<&u64>,
    info: &StepInfo<'_, Services>,
) -> Result<(), StepError> {
    info.dependencies()
        .client
        .call(format!("unbill {cents:?} in {}", info.step()));
    info.dependencies()
        .mailer
        .sent
        .fetch_add(1, Ordering::SeqCst);
    order.charged = None;
    Ok(())
}

fn held_checkout() -> Saga<Order, Services> {
    saga! {
        name: "held_checkout",
        context: Order,
        dependencies: Services,
        step hold;
        step bill => undo unbill;
        step ship;
    }
}

#[tokio::test]
async fn steps_and_undos_taking_step_info_of_the_dependencies_reach_them() {
    let (services, ledger) = services("memory");
    let mut order = Order::default();
    let report = held_checkout()
        .using(&services)
        .run(&mut order)
        .await
        .unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
    assert_eq!(
        ledger.calls(),
        ["memory:hold in hold attempt 1", "memory:bill in bill"]
    );
    assert_eq!(ledger.sent.load(Ordering::SeqCst), 1);
    assert_eq!((order.seat, order.charged), (Some(7), Some(900)));

    let mut order = Order {
        fail: true,
        ..Order::default()
    };
    let err = held_checkout()
        .using(&services)
        .run(&mut order)
        .await
        .unwrap_err();
    assert_eq!(err.report().status, ExecutionStatus::Compensated);
    assert_eq!(
        &ledger.calls()[2..],
        [
            "memory:hold in hold attempt 1",
            "memory:bill in bill",
            "memory:unbill Some(900) in bill",
            "memory:unhold Some(7) in hold",
        ]
    );
    // The first run's hold, the second's hold and its unbill.
    assert_eq!(ledger.sent.load(Ordering::SeqCst), 3);
    assert_eq!((order.seat, order.charged), (None, None));
}

#[test]
fn a_step_taking_step_info_of_the_dependencies_is_callable_by_hand() {
    let (services, ledger) = services("unit");
    let id = saga_core::ExecutionId::new("unit-1");
    let info = StepInfo::new("unit", &id, "hold", 3).with_dependencies(&services);
    let mut order = Order::default();
    assert_eq!(hold(&mut order, &info).unwrap(), 7);
    assert_eq!(ledger.calls(), ["unit:hold in hold attempt 3"]);
}
