//! A compensation's timeout (`Step::undo_timeout`, `undo_timeout` in the
//! macros): an attempt of an async compensation that runs longer is
//! dropped, its outcome unknown, and retried by the compensation's policy;
//! when that gives up the run ends stuck, rolling back, as it does for a
//! compensation that fails. Without it, a refund calling a provider that
//! never answers held the rollback in `compensating` forever.

mod support;

use std::sync::Arc;
use std::time::Duration;

use saga_core::store::{Event, EventKind, SagaStore, SqliteStore};
use saga_core::{
    BuildError, ExecutionStatus, Failure, Outcome, RetryPolicy, Saga, SagaEngine, SagaError, Step,
    StepError, StepInfo, StepKind, StepStatus, StuckPhase, Timeout, saga, saga_task,
};
use support::durable::{Order, scratch_dir};
use support::{ReportRow as Row, report_rows as rows};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `future`, or a failure if it takes longer than 20 s: a rollback that
/// never ends fails the test rather than hanging it.
async fn unless_hung<F: std::future::Future>(future: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(20), future).await {
        Ok(output) => output,
        Err(_) => panic!("the run did not end within 20 s: its rollback hangs"),
    }
}

/// Charges, then `ship` fails: the charge is refunded. The refund's first
/// `hangs` attempts never answer (a stalled payment provider); later ones
/// succeed. The refund has a 200 ms timeout and 2 attempts, 10 ms apart.
fn refund_saga(hangs: u32) -> Saga<Order> {
    Saga::<Order>::builder("order")
        .step(
            Step::new_async("charge", |o: &mut Order, _: &StepInfo<'_>| {
                Box::pin(async move {
                    o.done.push("charge".into());
                    Ok::<_, StepError>(())
                })
            })
            .undo_async(move |o: &mut Order, _: Option<&()>, info: &StepInfo<'_>| {
                let attempt = info.attempt();
                Box::pin(async move {
                    o.done.push(format!("refund#{attempt}"));
                    if attempt <= hangs {
                        std::future::pending::<()>().await;
                    }
                    o.done.push("refunded".into());
                    Ok::<_, StepError>(())
                })
            })
            .undo_timeout(ms(200))
            .undo_retry(RetryPolicy::attempts(2).with_backoff(ms(10))),
        )
        .step(Step::new("ship", |_: &mut Order, _: &StepInfo<'_>| {
            Err::<(), _>(StepError::new("no courier").permanent())
        }))
        .build()
        .unwrap()
}

fn row(
    name: &str,
    status: StepStatus,
    outcome: Outcome,
    attempts: u32,
    comp: u32,
    error: Option<&str>,
) -> Row {
    (
        name.to_owned(),
        status,
        outcome,
        attempts,
        comp,
        error.map(str::to_owned),
    )
}

/// The compensation events of a log: kind, attempt, error, unknown
/// outcome, will retry.
fn compensations(events: &[Event]) -> Vec<(EventKind, u32, Option<String>, bool, bool)> {
    events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::CompensationStarted
                    | EventKind::CompensationFailed
                    | EventKind::CompensationSucceeded
            )
        })
        .map(|e| {
            (
                e.kind,
                e.attempt,
                e.error.clone(),
                e.outcome_unknown,
                e.will_retry,
            )
        })
        .collect()
}

const TIMED_OUT: &str = "attempt timed out after 200ms";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compensation_that_never_answers_times_out_and_the_run_ends_stuck() {
    let dir = scratch_dir("undo-timeout-stuck");
    let store: Arc<dyn SagaStore> = Arc::new(SqliteStore::open(dir.join("sagas.db")).unwrap());
    let engine = SagaEngine::with_store(Arc::clone(&store));
    engine.register(refund_saga(u32::MAX)).await.unwrap();
    let id = engine.start("order", Order::default()).await.unwrap();
    let error = unless_hung(engine.wait(&id)).await.unwrap_err();

    let saga_core::WaitError::Saga(error) = error else {
        panic!("not a saga error: {error}");
    };
    let SagaError::Stuck {
        step,
        phase,
        failures,
        remaining,
        report,
        ..
    } = &error
    else {
        panic!("not stuck: {error}");
    };
    assert_eq!(&**step, "charge");
    assert_eq!(*phase, StuckPhase::Rollback);
    assert_eq!(
        remaining.iter().map(|s| &**s).collect::<Vec<_>>(),
        ["charge"]
    );
    assert_eq!(
        failures,
        &[
            Failure {
                step: "ship".into(),
                compensation: false,
                attempt: 1,
                message: "no courier".into(),
                outcome_unknown: false,
                permanent: true,
            },
            Failure {
                step: "charge".into(),
                compensation: true,
                attempt: 2,
                message: TIMED_OUT.into(),
                outcome_unknown: true,
                permanent: false,
            },
        ]
    );
    assert_eq!(
        std::error::Error::source(&error).unwrap().to_string(),
        TIMED_OUT
    );
    let expected = (
        ExecutionStatus::Stuck,
        vec![
            row(
                "charge",
                StepStatus::CompensationFailed,
                Outcome::Applied,
                1,
                2,
                Some(TIMED_OUT),
            ),
            row(
                "ship",
                StepStatus::Failed,
                Outcome::NotApplied,
                1,
                0,
                Some("no courier"),
            ),
        ],
    );
    assert_eq!(rows(report), expected);
    assert_eq!(report.steps[0].kind, StepKind::Compensable);
    // Each attempt ran about its timeout: dropped, not awaited to the end.
    assert!(
        report.steps[0].compensation_duration >= ms(400),
        "{:?}",
        report.steps[0].compensation_duration
    );

    // The log: both attempts started, and failed as timed out, their
    // outcome unknown; the first was retried.
    let events = store.events(&id).await.unwrap();
    assert_eq!(
        compensations(&events),
        [
            (EventKind::CompensationStarted, 1, None, false, false),
            (
                EventKind::CompensationFailed,
                1,
                Some(TIMED_OUT.to_owned()),
                true,
                true
            ),
            (EventKind::CompensationStarted, 2, None, false, false),
            (
                EventKind::CompensationFailed,
                2,
                Some(TIMED_OUT.to_owned()),
                true,
                false
            ),
        ]
    );
    // What an operator alerts on lists it.
    let stuck = engine.list(Some(ExecutionStatus::Stuck)).await.unwrap();
    assert_eq!(stuck.len(), 1);
    // The report rebuilt from the log by a tool agrees.
    let tool = SagaEngine::with_store(Arc::clone(&store));
    assert_eq!(rows(&tool.report(&id).await.unwrap()), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compensation_that_hangs_once_is_retried_and_the_run_ends_compensated() {
    let dir = scratch_dir("undo-timeout-retried");
    let store: Arc<dyn SagaStore> = Arc::new(SqliteStore::open(dir.join("sagas.db")).unwrap());
    let engine = SagaEngine::with_store(Arc::clone(&store));
    engine.register(refund_saga(1)).await.unwrap();
    let id = engine.start("order", Order::default()).await.unwrap();
    let error = unless_hung(engine.wait(&id)).await.unwrap_err();

    let saga_core::WaitError::Saga(SagaError::Compensated { step, report, .. }) = error else {
        panic!("not compensated: {error}");
    };
    assert_eq!(&*step, "ship");
    let expected = (
        ExecutionStatus::Compensated,
        vec![
            row(
                "charge",
                StepStatus::Compensated,
                Outcome::Applied,
                1,
                2,
                Some(TIMED_OUT),
            ),
            row(
                "ship",
                StepStatus::Failed,
                Outcome::NotApplied,
                1,
                0,
                Some("no courier"),
            ),
        ],
    );
    assert_eq!(rows(&report), expected);
    let events = store.events(&id).await.unwrap();
    assert_eq!(
        compensations(&events),
        [
            (EventKind::CompensationStarted, 1, None, false, false),
            (
                EventKind::CompensationFailed,
                1,
                Some(TIMED_OUT.to_owned()),
                true,
                true
            ),
            (EventKind::CompensationStarted, 2, None, false, false),
            (EventKind::CompensationSucceeded, 2, None, false, false),
        ]
    );
    // The context the second attempt left: the first attempt's push was
    // kept (it ran until it was dropped), then the refund.
    let context = events
        .iter()
        .rfind(|e| e.kind == EventKind::CompensationSucceeded)
        .and_then(|e| e.context.clone());
    assert_eq!(
        context.as_deref(),
        Some(r#"{"done":["charge","refund#1","refund#2","refunded"]}"#)
    );
}

#[tokio::test]
async fn an_in_memory_run_times_a_compensation_out_too() {
    let saga = refund_saga(u32::MAX);
    let mut order = Order::default();
    let error = unless_hung(saga.run(&mut order)).await.unwrap_err();
    assert!(error.is_stuck(), "{error}");
    assert_eq!(support::steps::user_error::<Timeout>(&error).after, ms(200));
    assert_eq!(order.done, ["charge", "refund#1", "refund#2"]);
    assert_eq!(
        rows(error.report()).1[0],
        row(
            "charge",
            StepStatus::CompensationFailed,
            Outcome::Applied,
            1,
            2,
            Some(TIMED_OUT)
        )
    );
}

#[tokio::test]
async fn a_parallel_branch_times_its_compensation_out() {
    let branch = |name: &'static str, hangs: bool| {
        Step::<Order>::shared_async(name, |_: &Order, _: &StepInfo<'_>| {
            Box::pin(async { Ok::<_, StepError>(()) })
        })
        .undo_shared_async(move |_: &Order, _: Option<&()>, _: &StepInfo<'_>| {
            Box::pin(async move {
                if hangs {
                    std::future::pending::<()>().await;
                }
                Ok::<_, StepError>(())
            })
        })
        .undo_timeout(ms(200))
        .undo_retry(RetryPolicy::attempts(1))
    };
    let saga = Saga::<Order>::builder("order")
        .parallel(
            saga_core::Parallel::new()
                .step(branch("reserve", true))
                .step(branch("hold", false)),
        )
        .step(Step::new("ship", |_: &mut Order, _: &StepInfo<'_>| {
            Err::<(), _>(StepError::new("no courier").permanent())
        }))
        .build()
        .unwrap();
    let error = unless_hung(saga.run(&mut Order::default()))
        .await
        .unwrap_err();
    assert!(error.is_stuck(), "{error}");
    assert_eq!(
        rows(error.report()).1[..2],
        [
            row(
                "reserve",
                StepStatus::CompensationFailed,
                Outcome::Applied,
                1,
                1,
                Some(TIMED_OUT)
            ),
            row(
                "hold",
                StepStatus::Compensated,
                Outcome::Applied,
                1,
                1,
                None
            ),
        ]
    );
}

fn charge() -> Step<Order> {
    Step::new_async("charge", |_: &mut Order, _: &StepInfo<'_>| {
        Box::pin(async { Ok::<_, StepError>(()) })
    })
}

fn build(step: Step<Order>) -> Result<Saga<Order>, BuildError> {
    Saga::<Order>::builder("order").step(step).build()
}

#[test]
fn an_undo_timeout_of_zero_is_refused() {
    let step = charge()
        .undo_async(|_: &mut Order, _: Option<&()>, _: &StepInfo<'_>| {
            Box::pin(async { Ok::<_, StepError>(()) })
        })
        .undo_timeout(Duration::ZERO);
    let error = build(step).err().unwrap();
    assert_eq!(
        error,
        BuildError::ZeroUndoTimeout {
            saga: "order".into(),
            step: "charge".into()
        }
    );
    assert_eq!(
        error.to_string(),
        "step `charge` of saga `order` has an undo timeout of zero, which would fail every attempt of its compensation before it starts; give a positive duration or none"
    );
}

#[test]
fn an_undo_timeout_on_a_sync_compensation_is_refused() {
    let step = charge()
        .undo(|_: &mut Order, _: Option<&()>, _: &StepInfo<'_>| Ok::<_, StepError>(()))
        .undo_timeout(ms(200));
    let error = build(step).err().unwrap();
    assert_eq!(
        error,
        BuildError::UndoTimeoutOnSyncUndo {
            saga: "order".into(),
            step: "charge".into()
        }
    );
    assert_eq!(
        error.to_string(),
        "step `charge` of saga `order` has an undo timeout but a sync compensation; a sync compensation cannot be pre-empted, make it async (`undo_async`)"
    );
    // Shared compensations alike.
    let step = Step::<Order>::shared("charge", |_: &Order, _: &StepInfo<'_>| {
        Ok::<_, StepError>(())
    })
    .undo_shared(|_: &Order, _: Option<&()>, _: &StepInfo<'_>| Ok::<_, StepError>(()))
    .undo_timeout(ms(200));
    assert!(matches!(
        build(step),
        Err(BuildError::UndoTimeoutOnSyncUndo { .. })
    ));
}

#[test]
fn an_undo_timeout_without_a_compensation_is_refused() {
    let error = build(charge().undo_timeout(ms(200))).err().unwrap();
    assert_eq!(
        error,
        BuildError::UndoTimeoutWithoutUndo {
            saga: "order".into(),
            step: "charge".into()
        }
    );
    assert_eq!(
        error.to_string(),
        "step `charge` of saga `order` has an undo timeout but no compensation; give it one with `undo_async`, or drop `undo_timeout`"
    );
}

#[test]
fn a_sync_step_may_have_an_async_compensation_with_a_timeout() {
    let step = Step::<Order>::new("charge", |_: &mut Order, _: &StepInfo<'_>| {
        Ok::<_, StepError>(())
    })
    .undo_async(|_: &mut Order, _: Option<&()>, _: &StepInfo<'_>| {
        Box::pin(async { Ok::<_, StepError>(()) })
    })
    .undo_timeout(ms(200));
    assert!(build(step).is_ok());
}

#[test]
fn an_undo_timeout_leaves_the_fingerprint_alone() {
    // Timeouts are not part of what a log means.
    let undone = || {
        charge().undo_async(|_: &mut Order, _: Option<&()>, _: &StepInfo<'_>| {
            Box::pin(async { Ok::<_, StepError>(()) })
        })
    };
    let plain = build(undone()).unwrap();
    let timed = build(undone().undo_timeout(ms(200))).unwrap();
    assert_eq!(plain.fingerprint(), timed.fingerprint());
}

// The macros: `undo_timeout` on the step's attribute, and in `saga!`.

#[saga_task(undo = refund, undo_timeout = "200ms", undo_retry(attempts = 2, backoff = "10ms"))]
async fn pay(order: &mut Order) -> Result<(), StepError> {
    order.done.push("pay".into());
    Ok(())
}

#[saga_task]
async fn refund(order: &mut Order, _: Option<&()>) -> Result<(), StepError> {
    order.done.push("refund".into());
    std::future::pending::<()>().await;
    Ok(())
}

#[saga_task]
async fn book(order: &mut Order) -> Result<(), StepError> {
    order.done.push("book".into());
    Ok(())
}

#[saga_task]
async fn cancel_booking(order: &mut Order, _: Option<&()>) -> Result<(), StepError> {
    order.done.push("cancel".into());
    std::future::pending::<()>().await;
    Ok(())
}

#[saga_task]
fn ship(_: &mut Order) -> Result<(), StepError> {
    Err(StepError::new("no courier").permanent())
}

#[tokio::test]
async fn the_attribute_gives_a_compensation_its_timeout() {
    let saga = saga! {
        name: "order",
        context: Order,
        step pay;
        step ship;
    };
    let mut order = Order::default();
    let error = unless_hung(saga.run(&mut order)).await.unwrap_err();
    assert!(error.is_stuck(), "{error}");
    assert_eq!(order.done, ["pay", "refund", "refund"]);
    assert_eq!(
        rows(error.report()).1[0],
        row(
            "pay",
            StepStatus::CompensationFailed,
            Outcome::Applied,
            1,
            2,
            Some(TIMED_OUT)
        )
    );
}

#[tokio::test]
async fn saga_gives_a_compensation_its_timeout() {
    let saga = saga! {
        name: "order",
        context: Order,
        step book => undo cancel_booking, undo_timeout 200ms, undo_retry 2;
        step ship;
    };
    let mut order = Order::default();
    let error = unless_hung(saga.run(&mut order)).await.unwrap_err();
    assert!(error.is_stuck(), "{error}");
    assert_eq!(order.done, ["book", "cancel", "cancel"]);
    assert_eq!(
        rows(error.report()).1[0],
        row(
            "book",
            StepStatus::CompensationFailed,
            Outcome::Applied,
            1,
            2,
            Some(TIMED_OUT)
        )
    );
}
