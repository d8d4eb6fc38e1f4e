//! What observers and the log are told of an execution carried on from
//! its log: a take-over (here a recovery of a log a dead process left) is
//! `SagaResumed`, not a second `SagaStarted`; an operator's resume of a
//! stuck one is `SagaResumed` after its stuck `SagaFinished`, marked so;
//! one that a take-over ends stuck as a crash loop, without running it,
//! is still told with `SagaFinished`. Started, plus resumed after stuck,
//! minus finished counts the executions in flight.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use log::{Level, LevelFilter};
use saga_core::store::{Event, EventKind, MemoryStore, NewExecution, SagaStore};
use saga_core::{
    Context, ExecutionId, ExecutionStatus, RunInfo, Saga, SagaEngine, SagaEvent, SagaObserver,
    Step, StepError, StepInfo,
};
use support::logs::{entries_where, install_logger};

/// Each event as `kind step`.
#[derive(Default)]
struct Told(Mutex<Vec<String>>);

impl SagaObserver for Told {
    fn on_event(&self, _run: &RunInfo<'_>, event: &SagaEvent<'_>) {
        let line = match event {
            SagaEvent::SagaStarted => "saga started".to_owned(),
            SagaEvent::SagaResumed { after_stuck: false } => "saga resumed".to_owned(),
            SagaEvent::SagaResumed { after_stuck: true } => "saga resumed after stuck".to_owned(),
            SagaEvent::StepStarted { step, attempt } => format!("started {step}#{attempt}"),
            SagaEvent::StepSucceeded { step, .. } => format!("succeeded {step}"),
            SagaEvent::SagaFinished { status, elapsed } => {
                let zero = if elapsed.is_zero() { " (0)" } else { "" };
                format!("finished {status}{zero}")
            }
            other => format!("{other:?}"),
        };
        self.0.lock().unwrap().push(line);
    }
}

impl Told {
    /// The execution-level events only (starts, resumes, ends).
    fn saga_level(&self) -> Vec<String> {
        let told = self.0.lock().unwrap();
        told.iter()
            .filter(|line| line.starts_with("saga") || line.starts_with("finished"))
            .cloned()
            .collect()
    }
}

/// A saga past its pivot whose `mail` step fails for good once (the
/// execution ends stuck), then works (an operator's resume completes it).
fn stuck_once(told: &Arc<Told>) -> Saga<Context> {
    let declined = Arc::new(std::sync::atomic::AtomicBool::new(true));
    Saga::<Context>::builder("resumable")
        .pivot(Step::new("ship", |_: &mut Context, _: &StepInfo<'_>| {
            Ok::<(), StepError>(())
        }))
        .step(Step::new(
            "mail",
            move |_: &mut Context, _: &StepInfo<'_>| {
                if declined.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    return Err(StepError::new("mail server refused").permanent());
                }
                Ok(())
            },
        ))
        .observer(Arc::clone(told) as Arc<dyn SagaObserver>)
        .build()
        .unwrap()
}

fn saga(told: &Arc<Told>) -> Saga<Context> {
    let step = |name: &'static str| {
        Step::new(name, |_: &mut Context, _: &StepInfo<'_>| {
            Ok::<(), StepError>(())
        })
    };
    Saga::<Context>::builder("told")
        .step(step("a"))
        .step(step("b"))
        .observer(Arc::clone(told) as Arc<dyn SagaObserver>)
        .build()
        .unwrap()
}

fn started(seq: u64, step: u32) -> Event {
    let mut event = Event::new(seq, EventKind::StepStarted);
    event.step = Some(step);
    event.attempt = 1;
    event
}

/// An engine with the saga registered, on a store holding execution `id`
/// whose log is `events` and whose lease is free (its process died).
async fn left_by_a_dead_process(
    id: &str,
    events: Vec<Event>,
    told: &Arc<Told>,
) -> (SagaEngine, ExecutionId) {
    let store: Arc<dyn SagaStore> = Arc::new(MemoryStore::new());
    let engine = SagaEngine::with_store(Arc::clone(&store));
    let fingerprint = engine.register(saga(told)).await.unwrap();
    let id = ExecutionId::new(id);
    store
        .create(
            NewExecution {
                id: id.clone(),
                saga: "told".into(),
                fingerprint,
                context: "{}".into(),
                events,
            },
            "a-dead-process",
            Duration::ZERO,
        )
        .await
        .unwrap();
    (engine, id)
}

#[tokio::test]
async fn a_take_over_is_told_as_resumed_not_started_again() {
    install_logger(LevelFilter::Debug);
    let told = Arc::new(Told::default());
    // Its process died inside `a`.
    let (engine, id) = left_by_a_dead_process("resumed-1", vec![started(1, 0)], &told).await;
    engine.recover().await.unwrap();
    let report = engine.wait(&id).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
    assert_eq!(
        *told.0.lock().unwrap(),
        [
            "saga resumed",
            "started a#1",
            "succeeded a",
            "started b#1",
            "succeeded b",
            "finished completed",
        ]
    );
    let records = entries_where("execution", "resumed-1");
    let first = &records[0];
    assert_eq!(
        (first.level, first.message.as_str(), first.field("saga")),
        (Level::Info, "saga resumed", Some("told"))
    );
    assert!(!records.iter().any(|r| r.message == "saga started"));
}

#[tokio::test]
async fn a_crash_loop_ended_stuck_without_a_run_is_told_finished() {
    install_logger(LevelFilter::Debug);
    let told = Arc::new(Told::default());
    // `b`'s first attempt started three times, and never ended.
    let events = vec![
        started(1, 0),
        {
            let mut done = Event::new(2, EventKind::StepSucceeded);
            done.step = Some(0);
            done.attempt = 1;
            done
        },
        started(3, 1),
        started(4, 1),
        started(5, 1),
    ];
    let (engine, id) = left_by_a_dead_process("looped-1", events, &told).await;
    engine.recover().await.unwrap();
    let report = engine.wait(&id).await.or_else(support::ended).unwrap();
    assert_eq!(report.status, ExecutionStatus::Stuck);
    assert_eq!(*told.0.lock().unwrap(), ["finished stuck (0)"]);
    let records = entries_where("execution", "looped-1");
    let messages: Vec<(Level, &str, Option<&str>, Option<&str>)> = records
        .iter()
        .map(|r| {
            (
                r.level,
                r.message.as_str(),
                r.field("saga"),
                r.field("step"),
            )
        })
        .collect();
    assert_eq!(
        messages,
        [
            (
                Level::Error,
                "cut off too often (a crash loop, or shutdowns whose grace ended mid-step): the execution ends stuck",
                Some("told"),
                Some("b")
            ),
            (Level::Error, "saga finished", Some("told"), None),
        ]
    );
}

#[tokio::test]
async fn an_operators_resume_of_a_stuck_execution_is_told_resumed_after_stuck() {
    let told = Arc::new(Told::default());
    let saga = stuck_once(&told);
    let engine = SagaEngine::new(MemoryStore::new());
    engine.register(saga).await.unwrap();
    let id = engine.start("resumable", Context::new()).await.unwrap();
    let stuck = engine.wait(&id).await.or_else(support::ended).unwrap();
    assert_eq!(stuck.status, ExecutionStatus::Stuck);
    engine.resume(&id).await.unwrap();
    let report = engine.wait(&id).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
    let saga_level = told.saga_level();
    // Started 1 + resumed after stuck 1 - finished 2 = 0 in flight.
    assert_eq!(
        saga_level,
        [
            "saga started",
            "finished stuck",
            "saga resumed after stuck",
            "finished completed"
        ]
    );
}

/// A resumed run whose first write fails: the take-over after it is a
/// plain resume, not a second "after stuck" (which would leave the
/// execution counted in flight for good).
#[tokio::test]
async fn a_take_over_after_a_failed_resumed_run_is_not_after_stuck_again() {
    use saga_core::store::StoreError;
    use saga_core::testkit::{DelayedStore, StoreOp};
    use std::sync::atomic::{AtomicU8, Ordering};

    let told = Arc::new(Told::default());
    let saga = stuck_once(&told);
    // 0: not yet; 1: the resume was written, its next append fails; 2: done.
    let state = Arc::new(AtomicU8::new(0));
    let hook = Arc::clone(&state);
    let store = DelayedStore::new(MemoryStore::new(), Duration::ZERO).before_call(move |call| {
        if call.op != StoreOp::Append {
            return Ok(());
        }
        if call.events.contains(&EventKind::Resumed) {
            hook.store(1, Ordering::SeqCst);
        } else if hook
            .compare_exchange(1, 2, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return Err(StoreError::Unavailable {
                store: "a store restarting".to_owned(),
                what: "append".to_owned(),
                source: "connection reset".into(),
            });
        }
        Ok(())
    });
    let engine = SagaEngine::new(store).with_lease_ttl(Duration::from_millis(200));
    engine.register(saga).await.unwrap();
    let id = engine.start("resumable", Context::new()).await.unwrap();
    engine.wait(&id).await.or_else(support::ended).unwrap();
    // The resumed run stops at its first write.
    let _ = engine.resume(&id).await;
    assert_eq!(state.load(Ordering::SeqCst), 2);
    // A take-over once its lease is gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        engine.recover().await.unwrap();
        if let Ok(report) = engine.wait(&id).await.or_else(support::ended) {
            if report.status == ExecutionStatus::Completed {
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "never completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let saga_level = told.saga_level();
    assert_eq!(
        saga_level,
        [
            "saga started",
            "finished stuck",
            "saga resumed after stuck",
            "saga resumed",
            "finished completed"
        ]
    );
}
