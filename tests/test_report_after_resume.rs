//! The whole report after an operator's command on a stuck execution, on
//! every store: every step's status, outcome, attempts, compensation
//! attempts and last error, from the run's own report (`wait`) and rebuilt
//! from the log (`report`, by another engine too). For a run stuck going
//! forward (after its pivot) and one stuck rolling back (on a failing
//! compensation), each resumed, abandoned, or asked to cancel (refused).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use saga_core::{
    EngineError, ExecutionId, ExecutionStatus, Outcome, RetryPolicy, Saga, SagaEngine, SagaReport,
    Step, StepError, StepInfo, StepStatus,
};
use support::durable::Order;
use support::report_rows;
use support::stores::every_store as stores;

/// One step of a report, without its durations (which the clock decides).
type Row = (
    &'static str,
    StepStatus,
    Outcome,
    u32,
    u32,
    Option<&'static str>,
);

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
    assert_eq!(report_rows(report), (status, expected), "{label}");
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
                return Err(StepError::new("no courier").permanent());
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
        .undo_retry(RetryPolicy::attempts(1))
        .step(
            Step::new("reserve", |o: &mut Order, _: &StepInfo<'_>| {
                o.done.push("reserve".into());
                Ok::<_, StepError>(())
            })
            .undo(move |o: &mut Order, _: Option<&()>, _: &StepInfo<'_>| {
                if !up.load(Ordering::SeqCst) {
                    return Err(StepError::new("stock service down"));
                }
                o.done.push("undo reserve".into());
                Ok(())
            }),
        )
        .step(Step::new("pay", |_: &mut Order, _: &StepInfo<'_>| {
            Err::<(), _>(StepError::new("card declined").permanent())
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
    let report = engine.wait(&id).await.or_else(support::ended).unwrap();
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

/// On every store: three executions of `saga` (built with a switch that
/// is off) stuck with the `stuck` report; then, with the switch on, one is
/// resumed and ends `resumed` with the `after` report, one is abandoned and
/// one asked to cancel, both keeping the `stuck` report.
async fn operator_commands(
    test: &str,
    saga: fn(&Arc<AtomicBool>) -> Saga<Order>,
    stuck_rows: &[Row],
    resumed: ExecutionStatus,
    after: &[Row],
) {
    for (name, store) in stores(test).await {
        let up = Arc::new(AtomicBool::new(false));
        let saga = saga(&up);
        let saga_name = saga.name().to_owned();
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine.register(saga).await.unwrap();
        let to_resume = stuck(name, &engine, &saga_name, stuck_rows).await;
        let abandoned = stuck(name, &engine, &saga_name, stuck_rows).await;
        let cancelled = stuck(name, &engine, &saga_name, stuck_rows).await;

        up.store(true, Ordering::SeqCst);
        engine.resume(&to_resume).await.unwrap();
        let report = engine
            .wait(&to_resume)
            .await
            .or_else(support::ended)
            .unwrap();
        let label = format!("{name}, resumed");
        assert_report(&label, &report, resumed, after);
        assert_rebuilt(&label, &engine, &to_resume, resumed, after).await;

        // Abandoned: nothing runs; the steps stay as they were.
        engine.abandon(&abandoned).await.unwrap();
        let label = format!("{name}, abandoned");
        let status = ExecutionStatus::Abandoned;
        assert_rebuilt(&label, &engine, &abandoned, status, stuck_rows).await;

        // Asked to cancel: a stuck run is not running, the request is
        // refused, and nothing changes.
        let refused = engine.cancel(&cancelled).await.unwrap_err();
        assert!(
            matches!(
                refused,
                EngineError::WrongStatus {
                    status: ExecutionStatus::Stuck,
                    ..
                }
            ),
            "{name}: {refused:?}"
        );
        let label = format!("{name}, asked to cancel");
        let status = ExecutionStatus::Stuck;
        assert_rebuilt(&label, &engine, &cancelled, status, stuck_rows).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stuck_going_forward_reports_every_step_after_resume_abandon_and_cancel() {
    // Resumed: the failed step runs again on a fresh budget, the pivot
    // does not; its error before the resume stays its last, and its
    // attempts count the one before the resume (before: 1, beside "a
    // later attempt succeeded" in `saga show`).
    let after: &[Row] = &[
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
            StepStatus::Succeeded,
            Outcome::Applied,
            2,
            0,
            Some("no courier"),
        ),
    ];
    operator_commands(
        "forward",
        ship,
        STUCK_FORWARD,
        ExecutionStatus::Completed,
        after,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stuck_rolling_back_reports_every_step_after_resume_abandon_and_cancel() {
    // Resumed: the failed compensation runs again on a fresh budget (its
    // attempts count both); the step whose failure started the rollback
    // stays failed, as it was (it is not run again).
    let after: &[Row] = &[
        (
            "reserve",
            StepStatus::Compensated,
            Outcome::Applied,
            1,
            2,
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
    let compensated = ExecutionStatus::Compensated;
    operator_commands("rollback", reserve, STUCK_ROLLING_BACK, compensated, after).await;
}

/// A step (or compensation) whose attempt started and whose process died
/// before it ended: the report rebuilt from the log counts that attempt.
/// Before: `attempts` (or `compensation_attempts`) said 0 for it, and
/// `saga show` printed a pivot cut off by a SIGKILL as tried 0 times.
#[test]
fn a_report_counts_the_attempt_a_crash_cut_off() {
    use support::durable::in_dying_runtime;
    use tokio::sync::{Notify, Semaphore};
    let setup = tokio::runtime::Runtime::new().unwrap();
    for (label, store) in setup.block_on(stores("report_cut_off")) {
        for undo in [false, true] {
            let entered = Arc::new(Notify::new());
            let never = Arc::new(Semaphore::new(0));
            let gate = {
                let (entered, never) = (Arc::clone(&entered), Arc::clone(&never));
                move || {
                    let (entered, never) = (Arc::clone(&entered), Arc::clone(&never));
                    async move {
                        entered.notify_one();
                        let _ = never.acquire().await;
                    }
                }
            };
            let (action_gate, undo_gate) = (gate.clone(), gate);
            let saga = Saga::<Order>::builder(format!("cut_off_{undo}"))
                .step(
                    Step::new_async("hold", move |_: &mut Order, _: &StepInfo<'_>| {
                        let gate = action_gate.clone();
                        Box::pin(async move {
                            if !undo {
                                gate().await;
                            }
                            Ok::<(), StepError>(())
                        })
                    })
                    .undo_async(
                        move |_: &mut Order, _: Option<&()>, _: &StepInfo<'_>| {
                            let gate = undo_gate.clone();
                            Box::pin(async move {
                                gate().await;
                                Ok::<(), StepError>(())
                            })
                        },
                    ),
                )
                .step(Step::new("fail", |_: &mut Order, _: &StepInfo<'_>| {
                    Err::<(), _>(StepError::new("no").permanent())
                }))
                .build()
                .unwrap();
            let engine = SagaEngine::with_store(Arc::clone(&store));
            let name = saga.name().to_owned();
            setup.block_on(engine.register(saga)).unwrap();
            let id = in_dying_runtime(|| async {
                let id = engine.start(&name, Order::default()).await.unwrap();
                support::steps::unless_hung(entered.notified()).await;
                id
            });
            let report = setup.block_on(engine.report(&id)).unwrap();
            let hold = &report.steps[0];
            if undo {
                assert_eq!(hold.status, StepStatus::Compensating, "{label}: {report:?}");
                assert_eq!(hold.attempts, 1, "{label}: {report:?}");
                assert_eq!(hold.compensation_attempts, 1, "{label}: {report:?}");
            } else {
                assert_eq!(hold.status, StepStatus::Running, "{label}: {report:?}");
                assert_eq!(hold.attempts, 1, "{label}: {report:?}");
                assert_eq!(hold.outcome, Outcome::Unknown, "{label}: {report:?}");
            }
        }
    }
}
