//! `saga!` sagas in the durable engine. A `#[saga_task]` step whose output
//! implements serde's traits is logged without any annotation, so its
//! saga registers, runs on a real SQLite file and is carried on after a
//! crash like a builder saga, its compensations getting the outputs back
//! from the log. A step whose output lacks serde still runs in memory, and
//! `register` refuses it saying what to derive.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use saga_core::store::{EventKind, SagaStore, SqliteStore};
use saga_core::{
    ExecutionId, ExecutionStatus, Outcome, Saga, SagaEngine, StepError, StepInfo, StepStatus, saga,
    saga_task,
};
use serde::{Deserialize, Serialize};
use support::durable::{recover_and_wait, scratch_dir, start_and_crash_when};

/// The context: who travels (each test its own traveller, which keys its
/// plan below) and what the steps did.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Trip {
    traveller: String,
    done: Vec<String>,
}

/// A step's output: a struct logged as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Seat {
    flight: String,
    row: u32,
}

/// Another output, wrapped in an `Option` to see that a generic type
/// whose parameter is serde-ready is logged too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Receipt {
    id: String,
    cents: u64,
}

/// What a test wants of its traveller's run, and what happened, outside
/// the saga (so that it survives the crash of the runtime running it).
#[derive(Default)]
struct Plan {
    /// `send_tickets` hangs (until the runtime is dropped).
    hang: bool,
    /// `send_tickets` fails for good.
    fail: bool,
    /// Each invocation, in order, with what a compensation received.
    calls: Vec<String>,
    /// Fired when `send_tickets` hangs.
    hung: Arc<tokio::sync::Notify>,
}

static PLANS: LazyLock<Mutex<HashMap<String, Plan>>> = LazyLock::new(Mutex::default);

fn plan<R>(traveller: &str, f: impl FnOnce(&mut Plan) -> R) -> R {
    f(PLANS
        .lock()
        .unwrap()
        .entry(traveller.to_owned())
        .or_default())
}

fn calls(traveller: &str) -> Vec<String> {
    plan(traveller, |p| p.calls.clone())
}

#[saga_task(undo = release_seat)]
async fn book_seat(trip: &mut Trip) -> Result<Seat, StepError> {
    plan(&trip.traveller, |p| p.calls.push("book_seat".into()));
    trip.done.push("book_seat".into());
    Ok(Seat {
        flight: format!("LX 318 for {}", trip.traveller),
        row: 12,
    })
}

#[saga_task]
async fn release_seat(trip: &mut Trip, seat: Option<&Seat>) -> Result<(), StepError> {
    plan(&trip.traveller, |p| {
        p.calls.push(format!("release_seat {seat:?}"));
    });
    trip.done.push("release_seat".into());
    Ok(())
}

#[saga_task(undo = refund)]
async fn charge_card(trip: &mut Trip) -> Result<Option<Receipt>, StepError> {
    plan(&trip.traveller, |p| p.calls.push("charge_card".into()));
    trip.done.push("charge_card".into());
    Ok(Some(Receipt {
        id: format!("rc-{}", trip.traveller),
        cents: 12_000,
    }))
}

#[saga_task]
async fn refund(trip: &mut Trip, receipt: Option<&Option<Receipt>>) -> Result<(), StepError> {
    plan(&trip.traveller, |p| {
        p.calls.push(format!("refund {receipt:?}"));
    });
    trip.done.push("refund".into());
    Ok(())
}

#[saga_task]
async fn send_tickets(trip: &mut Trip, info: &StepInfo<'_>) -> Result<(), StepError> {
    let (hang, fail, hung) = plan(&trip.traveller, |p| {
        p.calls.push(format!("send_tickets #{}", info.attempt()));
        (p.hang, p.fail, Arc::clone(&p.hung))
    });
    if hang {
        hung.notify_one();
        std::future::pending::<()>().await;
    }
    if fail {
        return Err("the mail server refused the tickets".into());
    }
    trip.done.push("send_tickets".into());
    Ok(())
}

fn travel() -> Saga<Trip> {
    saga! {
        name: "travel",
        context: Trip,
        step book_seat;
        step charge_card;
        step send_tickets;
    }
}

fn trip(traveller: &str) -> Trip {
    Trip {
        traveller: traveller.into(),
        done: Vec::new(),
    }
}

fn sqlite(dir: &std::path::Path) -> Arc<dyn SagaStore> {
    Arc::new(SqliteStore::open(dir.join("sagas.db")).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_macro_saga_logs_its_outputs_without_an_annotation_and_completes() {
    let store = sqlite(&scratch_dir("macro-complete"));
    let engine = SagaEngine::with_store(Arc::clone(&store));
    engine.register(travel()).await.unwrap();
    let id = engine.start("travel", trip("ada")).await.unwrap();
    let report = engine.wait(&id).await.or_else(support::ended).unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);

    let events = store.events(&id).await.unwrap();
    let outputs: Vec<(Option<u32>, Option<&str>)> = events
        .iter()
        .filter(|e| e.kind == EventKind::StepSucceeded)
        .map(|e| (e.step, e.output.as_deref()))
        .collect();
    assert_eq!(
        outputs,
        [
            (Some(0), Some(r#"{"flight":"LX 318 for ada","row":12}"#)),
            (Some(1), Some(r#"{"id":"rc-ada","cents":12000}"#)),
            (Some(2), Some("null")),
        ]
    );
    assert_eq!(
        calls("ada"),
        ["book_seat", "charge_card", "send_tickets #1"]
    );
}

/// Runs `travel` for `traveller` on a SQLite file in `dir` until
/// `send_tickets` hangs, then crashes (the runtime dropped with the step
/// cut off and the lease held). Returns the execution's id.
fn crash_in_send_tickets(dir: &std::path::Path, traveller: &str) -> ExecutionId {
    plan(traveller, |p| p.hang = true);
    let hung = plan(traveller, |p| Arc::clone(&p.hung));
    let id = start_and_crash_when(&sqlite(dir), travel(), trip(traveller), async move {
        hung.notified().await;
    });
    assert_eq!(
        calls(traveller),
        ["book_seat", "charge_card", "send_tickets #1"]
    );
    id
}

#[test]
fn a_saga_macro_saga_cut_off_by_a_crash_is_carried_on_to_completion() {
    let dir = scratch_dir("macro-forward");
    let id = crash_in_send_tickets(&dir, "hedy");
    plan("hedy", |p| p.hang = false);
    let store = sqlite(&dir);
    let report = recover_and_wait(&store, travel(), &id);
    assert_eq!(report.status, ExecutionStatus::Completed);
    // The context went on from the one logged before the crash.
    let events = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(store.events(&id))
        .unwrap();
    let last = events.iter().rev().find_map(|e| e.context.as_deref());
    assert_eq!(
        last,
        Some(r#"{"traveller":"hedy","done":["book_seat","charge_card","send_tickets"]}"#)
    );
    // Only the cut-off step ran again, as the same attempt.
    assert_eq!(
        calls("hedy"),
        [
            "book_seat",
            "charge_card",
            "send_tickets #1",
            "send_tickets #1"
        ]
    );
}

#[test]
fn a_saga_macro_saga_cut_off_by_a_crash_is_rolled_back_with_the_outputs_from_its_log() {
    let dir = scratch_dir("macro-crash");
    let id = crash_in_send_tickets(&dir, "grace");

    // A new process: the store reopened from its file, the same saga
    // registered, and the cut-off step failing this time.
    plan("grace", |p| {
        p.hang = false;
        p.fail = true;
    });
    let report = recover_and_wait(&sqlite(&dir), travel(), &id);

    assert_eq!(report.status, ExecutionStatus::Compensated);
    let statuses: Vec<StepStatus> = report.steps.iter().map(|s| s.status).collect();
    // `send_tickets` was cut off once, so it may have taken effect: the
    // rollback passes over it, having nothing to undo it with.
    assert_eq!(
        statuses,
        [
            StepStatus::Compensated,
            StepStatus::Compensated,
            StepStatus::Skipped
        ]
    );
    assert_eq!(report.steps[2].outcome, Outcome::Unknown);
    // The recovering process never ran `book_seat` or `charge_card`: their
    // compensations got the outputs the crashed one logged.
    assert_eq!(
        calls("grace"),
        [
            "book_seat",
            "charge_card",
            "send_tickets #1",
            "send_tickets #1",
            r#"refund Some(Some(Receipt { id: "rc-grace", cents: 12000 }))"#,
            r#"release_seat Some(Seat { flight: "LX 318 for grace", row: 12 })"#,
        ]
    );
}

// ------------------------------------------------- outputs without serde ----

/// An output without serde's traits: fine in memory, not durable.
#[derive(Debug, PartialEq)]
struct Cash {
    cents: u64,
}

#[saga_task(undo = put_back)]
fn take_cash(till: &mut Trip) -> Result<Cash, StepError> {
    till.done.push("take_cash".into());
    Ok(Cash { cents: 500 })
}

#[saga_task]
fn put_back(till: &mut Trip, cash: Option<&Cash>) -> Result<(), StepError> {
    till.done.push(format!("put_back {cash:?}"));
    Ok(())
}

/// A generic output whose parameter lacks serde: `Vec<T>` is `Serialize`
/// only if `T` is, which the choice of codec has to see through.
#[saga_task]
fn count_coins(till: &mut Trip) -> Result<Vec<Cash>, StepError> {
    till.done.push("count_coins".into());
    Ok(vec![Cash { cents: 200 }])
}

#[saga_task]
fn jam(till: &mut Trip) -> Result<(), StepError> {
    till.done.push("jam".into());
    Err("the drawer is stuck".into())
}

#[test]
fn a_saga_macro_step_whose_output_lacks_serde_runs_in_memory() {
    let till = saga! {
        name: "till",
        context: Trip,
        step take_cash;
        step count_coins;
        step jam;
    };
    let mut ctx = trip("in-memory");
    let err = till.run_blocking(&mut ctx).unwrap_err();
    assert_eq!(err.report().status, ExecutionStatus::Compensated);
    assert_eq!(
        ctx.done,
        [
            "take_cash",
            "count_coins",
            "jam",
            "put_back Some(Cash { cents: 500 })"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_refuses_a_saga_macro_step_whose_output_lacks_serde_saying_what_to_derive() {
    let store = sqlite(&scratch_dir("macro-refused"));
    let engine = SagaEngine::with_store(Arc::clone(&store));

    let till = saga! { name: "till", context: Trip, step book_seat; step take_cash; };
    let err = engine.register(till).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "step `take_cash` of saga `till` returns a `test_macros_durable::Cash` and has no codec \
         to log it, which a durable saga needs: a `#[saga_task]` step gets one by itself when its \
         output implements `serde::Serialize` and `serde::Deserialize`; a `Step` built by hand \
         from `.durable()`; a hand-written `Task` from `.step(Step::from_task(task).durable())` \
         in place of `.task(task)` or `saga!`; or return `()` and keep the value in the context"
    );

    let coins = saga! { name: "coins", context: Trip, step count_coins; };
    let err = engine.register(coins).await.unwrap_err();
    assert!(
        err.to_string().starts_with(
            "step `count_coins` of saga `coins` returns a `alloc::vec::Vec<test_macros_durable::Cash>` and has no codec to log it"
        ),
        "{err}"
    );

    // Nothing of the refused sagas was recorded or runs.
    let err = engine.start("till", trip("refused")).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("no saga named `till` is registered (registered: none)"),
        "{err}"
    );
    assert!(calls("refused").is_empty());
}
