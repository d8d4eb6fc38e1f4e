//! `SagaEngine::wait` gives the outcome an in-memory run gives: for every
//! case of an unwind-at-every-step matrix, the running engine, a second
//! engine on the same store and `Saga::run` give equal errors; a lease
//! this engine lost does not end its `wait`; `context` reads the last
//! logged context; a `wait` just after a run completed here gives that
//! run's own report, while the record says it completed.

mod support;

use std::error::Error as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use saga_core::store::{MemoryStore, SagaStore, StoreError};
use saga_core::testkit::{DelayedStore, StoreOp};
use saga_core::{
    EngineError, ExecutionId, ExecutionStatus, LoggedError, Saga, SagaEngine, SagaError, Step,
    StepError, StepInfo, StuckPhase, WaitError,
};
use serde::{Deserialize, Serialize};
use support::steps::unless_hung;
use support::stores::every_store;

/// The context: where the case fails, and what ran.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Plan {
    /// The step whose action fails.
    fail_step: Option<String>,
    /// The step whose compensation fails.
    fail_undo: Option<String>,
    /// The action's failure is of unknown outcome.
    unknown: bool,
    done: Vec<String>,
}

/// A user error with a cause chain two deep.
#[derive(Debug, thiserror::Error)]
#[error("{what} of `{step}` failed")]
struct Broke {
    what: &'static str,
    step: String,
    #[source]
    cause: Outer,
}

#[derive(Debug, thiserror::Error)]
#[error("the service answered 503")]
struct Outer {
    #[source]
    cause: std::io::Error,
}

fn broke(what: &'static str, step: &str) -> StepError {
    StepError::new(Broke {
        what,
        step: step.to_owned(),
        cause: Outer {
            cause: std::io::Error::other("connection reset by peer"),
        },
    })
    .permanent()
}

fn step(name: &'static str, undo: bool) -> Step<Plan, ()> {
    let step = Step::new(name, move |p: &mut Plan, _: &StepInfo<'_>| {
        if p.fail_step.as_deref() == Some(name) {
            let error = broke("the action", name);
            return Err(if p.unknown {
                error.outcome_unknown()
            } else {
                error
            });
        }
        p.done.push(name.to_owned());
        Ok(())
    });
    if !undo {
        return step;
    }
    step.undo(move |p: &mut Plan, _: Option<&()>, _: &StepInfo<'_>| {
        if p.fail_undo.as_deref() == Some(name) {
            return Err(broke("the compensation", name));
        }
        p.done.push(format!("undo {name}"));
        Ok(())
    })
}

/// `reserve` and `hold` (compensable), `charge` (the pivot), `ship` (after
/// it).
fn saga() -> Saga<Plan> {
    Saga::builder("matrix")
        .step(step("reserve", true))
        .step(step("hold", true))
        .pivot(step("charge", false))
        .step(step("ship", false))
        .build()
        .unwrap()
}

/// Every case: each step failing, the pivot failing with an unknown
/// outcome, each compensation failing (the rollback from the pivot).
fn cases() -> Vec<(String, Plan)> {
    let mut cases = Vec::new();
    for name in ["reserve", "hold", "charge", "ship"] {
        cases.push((
            format!("{name} fails"),
            Plan {
                fail_step: Some(name.to_owned()),
                ..Plan::default()
            },
        ));
    }
    cases.push((
        "charge fails, outcome unknown".to_owned(),
        Plan {
            fail_step: Some("charge".to_owned()),
            unknown: true,
            ..Plan::default()
        },
    ));
    for name in ["reserve", "hold"] {
        cases.push((
            format!("the compensation of {name} fails"),
            Plan {
                fail_step: Some("charge".to_owned()),
                fail_undo: Some(name.to_owned()),
                ..Plan::default()
            },
        ));
    }
    cases
}

/// What a user compares of two errors: the variant, step, phase, what
/// remains, the statuses, and the text with its cause chain.
fn seen(error: &SagaError) -> String {
    let (variant, step, phase, remaining) = match error {
        SagaError::Compensated { step, .. } => ("compensated", step.to_string(), None, vec![]),
        SagaError::Stuck {
            step,
            phase,
            remaining,
            ..
        } => (
            "stuck",
            step.to_string(),
            Some(*phase),
            remaining.iter().map(|s| s.to_string()).collect(),
        ),
        SagaError::Cancelled { .. } => ("cancelled", String::new(), None, vec![]),
        SagaError::Abandoned { .. } => ("abandoned", String::new(), None, vec![]),
        other => panic!("unexpected {other}"),
    };
    let report = error.report();
    let statuses: Vec<String> = report
        .steps
        .iter()
        .map(|s| format!("{}={}/{}", s.name, s.status, s.outcome.label()))
        .collect();
    let mut chain = vec![error.to_string()];
    let mut next = error.source();
    while let Some(cause) = next {
        chain.push(cause.to_string());
        next = cause.source();
    }
    format!(
        "{variant} step={step} phase={phase:?} remaining={remaining:?} status={} steps={statuses:?} text={chain:#?}",
        report.status
    )
}

fn saga_error(outcome: Result<saga_core::SagaReport, WaitError>) -> SagaError {
    match outcome {
        Err(WaitError::Saga(error)) => error,
        other => panic!("expected the saga's error, got {other:?}"),
    }
}

#[tokio::test]
async fn wait_here_wait_elsewhere_and_run_give_equal_errors_at_every_step() {
    for (name, store) in every_store("wait_outcome_matrix").await {
        matrix(name, store).await;
    }
}

async fn matrix(name: &str, store: Arc<dyn SagaStore>) {
    let running = SagaEngine::with_store(Arc::clone(&store));
    running.register(saga()).await.unwrap();
    let elsewhere = SagaEngine::with_store(Arc::clone(&store));
    elsewhere.register(saga()).await.unwrap();
    for (n, (case, plan)) in cases().into_iter().enumerate() {
        let in_memory = saga().run(&mut plan.clone()).await.unwrap_err();
        let id = running
            .start_with_id("matrix", format!("case-{n}"), plan)
            .await
            .unwrap();
        let here = saga_error(unless_hung(running.wait(&id)).await);
        let there = saga_error(unless_hung(elsewhere.wait(&id)).await);

        assert_eq!(seen(&here), seen(&in_memory), "{name}, {case}: this engine");
        assert_eq!(
            seen(&there),
            seen(&in_memory),
            "{name}, {case}: another engine"
        );
        // The logged form, with the marks the step gave its error.
        for error in [&here, &there] {
            let logged = error
                .source()
                .and_then(|e| e.downcast_ref::<LoggedError>())
                .unwrap_or_else(|| panic!("{name}, {case}: not the logged form: {error:?}"));
            assert!(logged.is_permanent(), "{name}, {case}");
            assert_eq!(
                logged.causes(),
                ["the service answered 503", "connection reset by peer"],
                "{case}"
            );
        }
    }
    // One of them, spelled out.
    let id = ExecutionId::new("case-1");
    let error = saga_error(elsewhere.wait(&id).await);
    assert_eq!(
        error.to_string(),
        "saga `matrix` failed at step `hold` and was rolled back (compensated: reserve)"
    );
    let SagaError::Stuck { phase, .. } =
        saga_error(elsewhere.wait(&ExecutionId::new("case-6")).await)
    else {
        panic!("the compensation case is not stuck");
    };
    assert_eq!(phase, StuckPhase::Rollback);
}

#[tokio::test]
async fn an_abandoned_execution_is_a_saga_error_and_an_unknown_id_an_engine_error() {
    let store: Arc<dyn SagaStore> = Arc::new(MemoryStore::new());
    let engine = SagaEngine::with_store(Arc::clone(&store));
    engine.register(saga()).await.unwrap();
    let plan = Plan {
        fail_step: Some("ship".to_owned()),
        ..Plan::default()
    };
    let id = engine.start("matrix", plan).await.unwrap();
    assert!(saga_error(engine.wait(&id).await).is_stuck());
    engine.abandon(&id).await.unwrap();
    let error = saga_error(engine.wait(&id).await);
    assert!(matches!(error, SagaError::Abandoned { .. }), "{error:?}");
    assert_eq!(error.report().status, ExecutionStatus::Abandoned);
    assert_eq!(
        error.to_string(),
        "saga `matrix` was abandoned by an operator; nothing more runs and nothing was compensated by it"
    );

    let unknown = engine.wait(&ExecutionId::new("nope")).await.unwrap_err();
    assert!(
        matches!(unknown, WaitError::Engine(EngineError::NotFound { .. })),
        "{unknown:?}"
    );
    assert_eq!(unknown.to_string(), "no execution `nope`");
    assert!(unknown.report().is_none());
}

#[tokio::test]
async fn context_reads_the_last_logged_context() {
    let store: Arc<dyn SagaStore> = Arc::new(MemoryStore::new());
    let engine = SagaEngine::with_store(Arc::clone(&store));
    engine.register(saga()).await.unwrap();
    let id = engine.start("matrix", Plan::default()).await.unwrap();
    engine.wait(&id).await.unwrap();
    let plan: Plan = engine.context(&id).await.unwrap();
    assert_eq!(plan.done, ["reserve", "hold", "charge", "ship"]);

    let err = engine
        .context::<Plan>(&ExecutionId::new("nope"))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "no execution `nope`");
    let err = engine.context::<u64>(&id).await.unwrap_err();
    assert!(matches!(err, EngineError::Undecodable { .. }), "{err:?}");
    assert!(err.to_string().contains("no longer decodes"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_this_engine_lost_does_not_end_its_wait() {
    let inner: Arc<dyn SagaStore> = Arc::new(MemoryStore::new());
    // This engine's renewals never reach the store: its lease expires
    // while its step runs, and another engine takes the execution over.
    let renewals_lost =
        DelayedStore::shared(Arc::clone(&inner), Duration::ZERO).before_call(|call| {
            match call.op {
                StoreOp::Renew => Err(StoreError::Closed {
                    store: "the test's store".into(),
                }),
                _ => Ok(()),
            }
        });
    let first_call = Arc::new(AtomicBool::new(true));
    let release = Arc::new(tokio::sync::Notify::new());
    let started = Arc::new(tokio::sync::Notify::new());
    let slow_saga = {
        let (first_call, release, started) = (
            Arc::clone(&first_call),
            Arc::clone(&release),
            Arc::clone(&started),
        );
        Saga::<Plan>::builder("slow")
            .step(Step::new_async(
                "hold",
                move |_: &mut Plan, _: &StepInfo<'_>| {
                    let first = first_call.swap(false, Ordering::SeqCst);
                    let (release, started) = (Arc::clone(&release), Arc::clone(&started));
                    Box::pin(async move {
                        if first {
                            started.notify_one();
                            release.notified().await;
                        }
                        Ok::<_, StepError>(())
                    })
                },
            ))
            .build()
            .unwrap()
    };
    let losing = SagaEngine::new(renewals_lost).with_lease_ttl(Duration::from_millis(200));
    losing.register(slow_saga.clone()).await.unwrap();
    let taking_over = SagaEngine::with_store(Arc::clone(&inner));
    taking_over.register(slow_saga).await.unwrap();

    let id = losing.start("slow", Plan::default()).await.unwrap();
    started.notified().await;
    let waiting = {
        let (losing, id) = (losing.clone(), id.clone());
        tokio::spawn(async move { losing.wait(&id).await })
    };
    // The other engine takes the execution over once the lease expired,
    // and completes it.
    unless_hung(async {
        loop {
            let recovery = taking_over.recover().await.unwrap();
            if recovery.resumed.contains(&id) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let theirs = unless_hung(taking_over.wait(&id)).await.unwrap();
    assert_eq!(theirs.status, ExecutionStatus::Completed);
    // The first run wakes, and its next write is refused (fenced).
    release.notify_one();
    let ours = unless_hung(waiting).await.unwrap();
    let report = match ours {
        Ok(report) => report,
        Err(e) => panic!("the lost lease ended the wait: {e}"),
    };
    assert_eq!(report.status, ExecutionStatus::Completed);
}

/// A saga of one step that naps 2.5 ms (a report of its own run has
/// sub-millisecond durations) and fails if the plan says so.
fn napping() -> Saga<Plan> {
    Saga::builder("napping")
        .step(Step::new_async(
            "nap",
            |plan: &mut Plan, _: &StepInfo<'_>| {
                let fail = plan.fail_step.is_some();
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_micros(2500)).await;
                    if fail {
                        return Err(StepError::new(std::io::Error::other("no nap")).permanent());
                    }
                    Ok::<(), StepError>(())
                })
            },
        ))
        .build()
        .unwrap()
}

/// A `wait` called after its run completed here (a fast run on a
/// multi-thread runtime ends before its caller waits) gives the run's own
/// report, the one a `wait` during the run gave, not one rebuilt from the
/// log at a millisecond's resolution.
#[tokio::test]
async fn a_wait_after_the_run_completed_here_gives_the_runs_own_report() {
    let engine = SagaEngine::new(MemoryStore::new());
    engine.register(napping()).await.unwrap();
    let id = engine.start("napping", Plan::default()).await.unwrap();
    // Called before the run's task first ran: it waits on the run itself.
    let during = engine.wait(&id).await.unwrap();
    let after = engine.wait(&id).await.unwrap();
    assert_eq!(format!("{after:?}"), format!("{during:?}"));
    let rebuilt = engine.report(&id).await.unwrap();
    assert_ne!(
        format!("{rebuilt:?}"),
        format!("{during:?}"),
        "a rebuilt report has the log's millisecond durations"
    );
}

/// The kept report of a run that completed here is not given for an
/// execution another engine purged since (not found), nor for one it
/// created again with the same id (its own outcome).
#[tokio::test]
async fn a_kept_report_is_not_given_once_another_engine_purged_the_execution() {
    let store: Arc<dyn SagaStore> = Arc::new(MemoryStore::new());
    let here = SagaEngine::with_store(Arc::clone(&store));
    here.register(napping()).await.unwrap();
    let elsewhere = SagaEngine::with_store(store).with_retention(Duration::ZERO);
    elsewhere.register(napping()).await.unwrap();
    let id = here
        .start_with_id("napping", "order-7", Plan::default())
        .await
        .unwrap();
    here.wait(&id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(elsewhere.purge().await.unwrap(), 1);
    let purged = here.wait(&id).await.unwrap_err();
    assert!(
        matches!(purged, WaitError::Engine(EngineError::NotFound { .. })),
        "{purged:?}"
    );
    let failing = Plan {
        fail_step: Some("nap".to_owned()),
        ..Plan::default()
    };
    elsewhere
        .start_with_id("napping", "order-7", failing)
        .await
        .unwrap();
    let error = saga_error(unless_hung(here.wait(&id)).await);
    assert_eq!(error.report().status, ExecutionStatus::Compensated);
    assert_eq!(
        error.to_string(),
        saga_error(elsewhere.wait(&id).await).to_string()
    );
    // Purged again, then submitted here and run to its end elsewhere: this
    // engine forgot the first run's report when it created the execution.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(elsewhere.purge().await.unwrap(), 1);
    here.submit_with_id("napping", "order-7", Plan::default())
        .await
        .unwrap();
    assert_eq!(
        elsewhere.recover().await.unwrap().resumed,
        std::slice::from_ref(&id)
    );
    let report = unless_hung(here.wait(&id)).await.unwrap();
    let rebuilt = elsewhere.report(&id).await.unwrap();
    assert_eq!(format!("{report:?}"), format!("{rebuilt:?}"));
}

/// A `wait` on a compensated execution whose run is no longer this
/// engine's reads the record and the log once each, and not the stored
/// definition (the registered one has the same shape): the report and the
/// logged error come from the one read of the log. The same report as the
/// run's own, but for durations at the log's millisecond resolution.
#[tokio::test]
async fn a_late_wait_reads_the_record_and_the_log_once_each() {
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = DelayedStore::new(MemoryStore::new(), Duration::ZERO).before_call({
        let calls = Arc::clone(&calls);
        move |call| {
            calls.lock().unwrap().push(call.op.label());
            Ok(())
        }
    });
    let engine = SagaEngine::new(store);
    engine.register(napping()).await.unwrap();
    let failing = Plan {
        fail_step: Some("nap".to_owned()),
        ..Plan::default()
    };
    let id = engine.start("napping", failing).await.unwrap();
    let during = saga_error(engine.wait(&id).await);
    calls.lock().unwrap().clear();
    let late = saga_error(engine.wait(&id).await);
    assert_eq!(*calls.lock().unwrap(), ["get", "events_without_contexts"]);
    assert_eq!(late.to_string(), during.to_string());
    assert_eq!(late.report().statuses(), during.report().statuses());
}

/// A store hook that fails every `op` call as an outage would, while
/// `down` is set.
fn unreachable_while(
    down: &Arc<AtomicBool>,
    op: StoreOp,
) -> impl Fn(&saga_core::testkit::StoreCall) -> Result<(), StoreError> + Send + Sync + 'static {
    let down = Arc::clone(down);
    move |call| {
        if down.load(Ordering::SeqCst) && call.op == op {
            return Err(StoreError::Unavailable {
                store: "the test's store".to_owned(),
                what: format!("calling `{}`", op.label()),
                source: Box::new(std::io::Error::other("connection refused")),
            });
        }
        Ok(())
    }
}

/// An outage of the store (a database restarting) does not end a `wait`:
/// it reads again until the store is back, and gives the outcome.
#[tokio::test]
async fn a_wait_goes_on_through_an_outage_of_the_store() {
    let store: Arc<dyn SagaStore> = Arc::new(MemoryStore::new());
    let running = SagaEngine::with_store(Arc::clone(&store));
    running.register(napping()).await.unwrap();
    let down = Arc::new(AtomicBool::new(true));
    let outage = DelayedStore::shared(Arc::clone(&store), Duration::ZERO)
        .before_call(unreachable_while(&down, StoreOp::Get));
    let waiting = SagaEngine::new(outage);
    waiting.register(napping()).await.unwrap();
    let id = running.start("napping", Plan::default()).await.unwrap();
    let wait = {
        let id = id.clone();
        tokio::spawn(async move { waiting.wait(&id).await })
    };
    running.wait(&id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!wait.is_finished(), "the wait ended during the outage");
    down.store(false, Ordering::SeqCst);
    let report = unless_hung(wait).await.unwrap().unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
}

/// A run of this engine that an outage of the store stopped (its writes
/// fail) does not end a `wait` either: it waits until the execution is
/// carried on (here by a recovery once the lease expired and the store is
/// back) and gives that run's outcome.
#[tokio::test]
async fn a_wait_goes_on_when_an_outage_stops_this_engines_run() {
    let down = Arc::new(AtomicBool::new(true));
    let outage = DelayedStore::new(MemoryStore::new(), Duration::ZERO)
        .before_call(unreachable_while(&down, StoreOp::Append));
    let engine = Arc::new(SagaEngine::new(outage).with_lease_ttl(Duration::from_millis(100)));
    engine.register(napping()).await.unwrap();
    let id = engine.start("napping", Plan::default()).await.unwrap();
    let wait = {
        let (engine, id) = (Arc::clone(&engine), id.clone());
        tokio::spawn(async move { engine.wait(&id).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!wait.is_finished(), "{:?}", wait.await);
    down.store(false, Ordering::SeqCst);
    assert_eq!(
        engine.recover().await.unwrap().resumed,
        std::slice::from_ref(&id)
    );
    let report = unless_hung(wait).await.unwrap().unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
}

/// A report rebuilt for an execution whose definition is neither
/// registered here nor stored is a clear error naming the definition,
/// not a guess at its steps.
#[tokio::test]
async fn a_report_without_its_definition_is_a_bad_record() {
    let store = MemoryStore::new();
    let created = store
        .create(
            saga_core::store::NewExecution {
                id: ExecutionId::new("orphan"),
                saga: "gone".to_owned(),
                fingerprint: "f00d".to_owned(),
                context: "{}".to_owned(),
                events: Vec::new(),
            },
            "elsewhere",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(matches!(created, saga_core::store::Created::New(_)));
    let tool = SagaEngine::new(store);
    let err = tool.report(&ExecutionId::new("orphan")).await.unwrap_err();
    assert!(
        matches!(err, EngineError::Store(StoreError::BadRecord { .. })),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(
            "execution `orphan` in the memory store cannot be read: its definition f00d is not stored"
        ),
        "{err}"
    );
}
