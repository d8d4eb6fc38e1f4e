//! The whole report after an operator's command on a stuck execution, on
//! every store: every step's status, outcome, attempts, compensation
//! attempts and last error, from the run's own report (`wait`) and rebuilt
//! from the log (`report`, by another engine too). For a run stuck going
//! forward (after its pivot) and one stuck rolling back (on a failing
//! compensation), each resumed, abandoned, or asked to cancel.

mod durable_common;
#[cfg(feature = "postgres")]
mod pg_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use durable_common::{Order, scratch_dir};
use saga_core::store::{MemoryStore, SagaStore, SqliteStore};
use saga_core::{
    ExecutionId, ExecutionStatus, Outcome, RetryPolicy, Saga, SagaEngine, SagaReport, Step,
    StepError, StepInfo, StepStatus,
};

/// Every store, fresh.
async fn stores(test: &str) -> Vec<(&'static str, Arc<dyn SagaStore>)> {
    let dir = scratch_dir(test);
    #[allow(unused_mut)]
    let mut stores = vec![
        ("memory", Arc::new(MemoryStore::new()) as Arc<dyn SagaStore>),
        (
            "sqlite",
            Arc::new(SqliteStore::open(dir.join("sagas.db")).unwrap()) as Arc<dyn SagaStore>,
        ),
    ];
    #[cfg(feature = "postgres")]
    {
        use saga_core::store::{PostgresOptions, PostgresStore};
        let store = PostgresStore::connect_with(
            &pg_common::pg_url(),
            PostgresOptions::new().with_schema(pg_common::fresh_schema(test)),
        )
        .await
        .unwrap();
        stores.push(("postgres", Arc::new(store) as Arc<dyn SagaStore>));
    }
    stores
}

/// One step of a report, without its durations (which the clock decides).
type Row = (
    &'static str,
    StepStatus,
    Outcome,
    u32,
    u32,
    Option<&'static str>,
);

/// A report as its status and rows.
fn rows(
    report: &SagaReport,
) -> (
    ExecutionStatus,
    Vec<(String, StepStatus, Outcome, u32, u32, Option<String>)>,
) {
    let steps = report
        .steps
        .iter()
        .map(|s| {
            (
                s.name.to_string(),
                s.status,
                s.outcome,
                s.attempts,
                s.compensation_attempts,
                s.last_error.clone(),
            )
        })
        .collect();
    (report.status, steps)
}

/// Checks `report` is `status` with exactly `expected` steps.
fn assert_report(label: &str, report: &SagaReport, status: ExecutionStatus, expected: &[Row]) {
    let expected = expected
        .iter()
        .map(|(name, st, outcome, attempts, comp, error)| {
            (
                (*name).to_owned(),
                *st,
                *outcome,
                *attempts,
                *comp,
                error.map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(rows(report), (status, expected), "{label}");
}

/// Checks the report `engine` rebuilds from the log, and the one a fresh
/// engine (with nothing registered) rebuilds.
async fn assert_rebuilt(
    label: &str,
    engine: &SagaEngine,
    id: &ExecutionId,
    status: ExecutionStatus,
    expected: &[Row],
) {
    let report = engine.report(id).await.unwrap();
    assert_report(&format!("{label}, rebuilt"), &report, status, expected);
    let tool = SagaEngine::with_store(Arc::clone(engine.store()));
    let report = tool.report(id).await.unwrap();
    assert_report(
        &format!("{label}, rebuilt by a tool"),
        &report,
        status,
        expected,
    );
}

/// Charges (the pivot), then ships, which fails while the courier is down:
/// stuck going forward.
fn ship(courier_up: &Arc<AtomicBool>) -> Saga<Order> {
    let up = Arc::clone(courier_up);
    Saga::<Order>::builder("ship")
        .pivot(Step::new("charge", |o: &mut Order, _: &StepInfo<'_>| {
            o.done.push("charge".into());
            Ok::<_, StepError>(())
        }))
        .step(Step::new("ship", move |o: &mut Order, _: &StepInfo<'_>| {
            if !up.load(Ordering::SeqCst) {
                return Err(StepError::new("no courier"));
            }
            o.done.push("ship".into());
            Ok(())
        }))
        .build()
        .unwrap()
}

/// Reserves, then `pay` fails; reserve's compensation fails while the
/// stock service is down: stuck rolling back.
fn reserve(stock_up: &Arc<AtomicBool>) -> Saga<Order> {
    let up = Arc::clone(stock_up);
    Saga::<Order>::builder("reserve")
        .compensation_retry(RetryPolicy::attempts(1))
        .step(
            Step::new("reserve", |o: &mut Order, _: &StepInfo<'_>| {
                o.done.push("reserve".into());
                Ok::<_, StepError>(())
            })
            .compensate(move |o: &mut Order, _: Option<&()>, _: &StepInfo<'_>| {
                if !up.load(Ordering::SeqCst) {
                    return Err(StepError::new("stock service down"));
                }
                o.done.push("undo reserve".into());
                Ok(())
            }),
        )
        .step(Step::new("pay", |_: &mut Order, _: &StepInfo<'_>| {
            Err::<(), _>(StepError::new("card declined"))
        }))
        .build()
        .unwrap()
}

const STUCK_FORWARD: &[Row] = &[
    (
        "charge",
        StepStatus::Succeeded,
        Outcome::Applied,
        1,
        0,
        None,
    ),
    (
        "ship",
        StepStatus::Failed,
        Outcome::NotApplied,
        1,
        0,
        Some("no courier"),
    ),
];

const STUCK_ROLLING_BACK: &[Row] = &[
    (
        "reserve",
        StepStatus::CompensationFailed,
        Outcome::Applied,
        1,
        1,
        Some("stock service down"),
    ),
    (
        "pay",
        StepStatus::Failed,
        Outcome::NotApplied,
        1,
        0,
        Some("card declined"),
    ),
];

/// Starts `name` and waits for it to be stuck with the `stuck` report.
async fn stuck(label: &str, engine: &SagaEngine, name: &str, expected: &[Row]) -> ExecutionId {
    let id = engine.start(name, Order::default()).await.unwrap();
    let report = engine.wait(&id).await.unwrap();
    assert_report(
        &format!("{label}, stuck"),
        &report,
        ExecutionStatus::Stuck,
        expected,
    );
    assert_rebuilt(
        &format!("{label}, stuck"),
        engine,
        &id,
        ExecutionStatus::Stuck,
        expected,
    )
    .await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stuck_going_forward_reports_every_step_after_resume_abandon_and_cancel() {
    for (name, store) in stores("forward").await {
        let up = Arc::new(AtomicBool::new(false));
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine.register(ship(&up)).await.unwrap();
        let resumed = stuck(name, &engine, "ship", STUCK_FORWARD).await;
        let abandoned = stuck(name, &engine, "ship", STUCK_FORWARD).await;
        let cancelled = stuck(name, &engine, "ship", STUCK_FORWARD).await;

        // Resumed: the failed step runs again on a fresh budget, the pivot
        // does not.
        up.store(true, Ordering::SeqCst);
        engine.resume(&resumed).await.unwrap();
        let after: &[Row] = &[
            (
                "charge",
                StepStatus::Succeeded,
                Outcome::Applied,
                1,
                0,
                None,
            ),
            // Its error before the resume stays its last.
            (
                "ship",
                StepStatus::Succeeded,
                Outcome::Applied,
                1,
                0,
                Some("no courier"),
            ),
        ];
        let report = engine.wait(&resumed).await.unwrap();
        let label = format!("{name}, resumed");
        assert_report(&label, &report, ExecutionStatus::Completed, after);
        assert_rebuilt(&label, &engine, &resumed, ExecutionStatus::Completed, after).await;

        // Abandoned: nothing runs; the steps stay as they were.
        engine.abandon(&abandoned).await.unwrap();
        let label = format!("{name}, abandoned");
        assert_rebuilt(
            &label,
            &engine,
            &abandoned,
            ExecutionStatus::Abandoned,
            STUCK_FORWARD,
        )
        .await;

        // Asked to cancel: a stuck run is not running; nothing changes.
        engine.cancel(&cancelled).await.unwrap();
        let label = format!("{name}, asked to cancel");
        assert_rebuilt(
            &label,
            &engine,
            &cancelled,
            ExecutionStatus::Stuck,
            STUCK_FORWARD,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stuck_rolling_back_reports_every_step_after_resume_abandon_and_cancel() {
    for (name, store) in stores("rollback").await {
        let up = Arc::new(AtomicBool::new(false));
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine.register(reserve(&up)).await.unwrap();
        let resumed = stuck(name, &engine, "reserve", STUCK_ROLLING_BACK).await;
        let abandoned = stuck(name, &engine, "reserve", STUCK_ROLLING_BACK).await;
        let cancelled = stuck(name, &engine, "reserve", STUCK_ROLLING_BACK).await;

        // Resumed: the failed compensation runs again on a fresh budget;
        // the step whose failure started the rollback stays failed, as it
        // was (it is not run again).
        up.store(true, Ordering::SeqCst);
        engine.resume(&resumed).await.unwrap();
        let after: &[Row] = &[
            (
                "reserve",
                StepStatus::Compensated,
                Outcome::Applied,
                1,
                1,
                Some("stock service down"),
            ),
            (
                "pay",
                StepStatus::Failed,
                Outcome::NotApplied,
                1,
                0,
                Some("card declined"),
            ),
        ];
        let report = engine.wait(&resumed).await.unwrap();
        let label = format!("{name}, resumed");
        assert_report(&label, &report, ExecutionStatus::Compensated, after);
        assert_rebuilt(
            &label,
            &engine,
            &resumed,
            ExecutionStatus::Compensated,
            after,
        )
        .await;

        engine.abandon(&abandoned).await.unwrap();
        let label = format!("{name}, abandoned");
        assert_rebuilt(
            &label,
            &engine,
            &abandoned,
            ExecutionStatus::Abandoned,
            STUCK_ROLLING_BACK,
        )
        .await;

        engine.cancel(&cancelled).await.unwrap();
        let label = format!("{name}, asked to cancel");
        assert_rebuilt(
            &label,
            &engine,
            &cancelled,
            ExecutionStatus::Stuck,
            STUCK_ROLLING_BACK,
        )
        .await;
    }
}
