//! A retry whose backoff was under way when its owner went away (killed,
//! or shut down and its lease released) is made by the run that takes the
//! execution over when it was due: the failure's logged time plus its
//! backoff, not at once. A compensation's retry likewise. A cancellation
//! still stops that wait at once, as it stops a backoff.
//!
//! Before: the next owner ran the next attempt as soon as it took the
//! execution over (an outside workload: 1.5 s after a restart where 4.5 s
//! were due; a compensation retried 0.19 s after its failure), so a
//! crash or restart loop hammered a failing provider and spent the retry
//! budget early.
//!
//! The times compared are the log's (`at_ms`, one wall clock: every
//! engine here shares a store on one SQLite file); only lower bounds are
//! asserted.

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use saga_core::store::{Event, EventKind, SagaStore, SqliteStore};
use saga_core::{
    ExecutionId, RetryPolicy, Saga, SagaEngine, SagaError, Step, StepError, StepInfo, WaitError,
    Worker,
};
use support::durable::{in_dying_runtime, scratch_dir, short_lease};

/// The backoff the tests' policies draw (no jitter).
const BACKOFF: Duration = Duration::from_secs(2);

/// The log's clock reads milliseconds, truncated: what two readings of
/// the same instant may differ by.
const SLACK_MS: i64 = 5;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn policy(backoff: Duration) -> RetryPolicy {
    RetryPolicy::attempts(3)
        .with_backoff(backoff)
        .with_max_backoff(backoff)
        .with_jitter(0.0)
}

/// One step, `charge`, whose first attempt fails (the provider is down)
/// and whose retries succeed, retried after `backoff`.
fn charge(backoff: Duration) -> Saga<()> {
    Saga::builder("charge-once")
        .step(
            Step::new_async("charge", |_: &mut (), info: &StepInfo<'_>| {
                let attempt = info.attempt();
                Box::pin(async move {
                    if attempt == 1 {
                        return Err(StepError::new("provider unavailable"));
                    }
                    Ok::<(), StepError>(())
                })
            })
            .retry(policy(backoff)),
        )
        .build()
        .unwrap()
}

/// `reserve`, whose compensation's first attempt fails and is retried
/// after [`BACKOFF`], then `charge`, declined for good: the run rolls
/// back.
fn release_after_decline() -> Saga<()> {
    Saga::builder("release-after-decline")
        .step(
            Step::new_async("reserve", |_: &mut (), _: &StepInfo<'_>| {
                Box::pin(async { Ok::<(), StepError>(()) })
            })
            .undo_async(|_: &mut (), _: Option<&()>, info: &StepInfo<'_>| {
                let attempt = info.attempt();
                Box::pin(async move {
                    if attempt == 1 {
                        return Err(StepError::new("stock service unavailable"));
                    }
                    Ok::<(), StepError>(())
                })
            })
            .undo_retry(policy(BACKOFF)),
        )
        .step(Step::new_async("charge", |_: &mut (), _: &StepInfo<'_>| {
            Box::pin(async { Err::<(), StepError>(StepError::new("card declined").permanent()) })
        }))
        .build()
        .unwrap()
}

/// The last event of `kind` in `events`.
fn last(events: &[Event], kind: EventKind) -> Option<&Event> {
    events.iter().rev().find(|e| e.kind == kind)
}

/// Polls `id`'s log (for 10 s at most) until a failure of `kind` to be
/// retried is in it; returns that event.
async fn retry_logged(store: &Arc<dyn SagaStore>, id: &ExecutionId, kind: EventKind) -> Event {
    for _ in 0..1000 {
        let events = store.events(id).await.unwrap();
        if let Some(failed) = last(&events, kind).filter(|e| e.will_retry) {
            return failed.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no {kind} to be retried was logged");
}

/// Starts `saga` on an engine of its own and "crashes" it once `kind` is
/// logged to be retried: its runtime is dropped mid-backoff, the lease
/// still held (and short, so the next owner takes over at once).
fn start_and_crash_in_backoff(
    store: &Arc<dyn SagaStore>,
    saga: Saga<()>,
    kind: EventKind,
) -> (ExecutionId, Event) {
    in_dying_runtime(|| {
        let store = Arc::clone(store);
        async move {
            let engine = short_lease(SagaEngine::with_store(Arc::clone(&store)));
            let name = saga.name().to_owned();
            engine.register(saga).await.unwrap();
            let id = engine.start(&name, ()).await.unwrap();
            let failed = retry_logged(&store, &id, kind).await;
            (id, failed)
        }
    })
}

/// A second engine takes `id` over (once the crashed owner's lease
/// expired); returns the time it did, and the engine.
async fn take_over(
    store: &Arc<dyn SagaStore>,
    saga: Saga<()>,
    id: &ExecutionId,
) -> (i64, SagaEngine) {
    let engine = short_lease(SagaEngine::with_store(Arc::clone(store)));
    engine.register(saga).await.unwrap();
    for _ in 0..200 {
        let recovery = engine.recover().await.unwrap();
        assert!(recovery.refused.is_empty(), "{:?}", recovery.refused);
        if recovery.resumed.contains(id) {
            return (now_ms(), engine);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("`{id}` was never taken over");
}

/// The log's retry after `failed`: attempt 2, its start (`started`) no
/// earlier than the failure's logged time plus its backoff.
async fn retried_when_due(
    store: &Arc<dyn SagaStore>,
    id: &ExecutionId,
    started: EventKind,
    failed: &Event,
) {
    let due = failed.at_ms + BACKOFF.as_millis() as i64;
    let events = store.events(id).await.unwrap();
    let retried = last(&events, started).unwrap();
    assert_eq!(retried.attempt, 2);
    assert!(
        retried.at_ms >= due - SLACK_MS,
        "{started} attempt 2 at {} ms after the failure; its backoff was {BACKOFF:?}",
        retried.at_ms - failed.at_ms
    );
}

fn sqlite(test: &str) -> Arc<dyn SagaStore> {
    Arc::new(SqliteStore::open(scratch_dir(test).join("sagas.db")).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_due_when_its_owner_crashed_runs_when_its_backoff_ends() {
    let store = sqlite("backoff_crash");
    let (id, failed) = {
        let store = Arc::clone(&store);
        tokio::task::spawn_blocking(move || {
            start_and_crash_in_backoff(&store, charge(BACKOFF), EventKind::StepFailed)
        })
        .await
        .unwrap()
    };
    let due = failed.at_ms + BACKOFF.as_millis() as i64;
    let (taken_at, engine) = take_over(&store, charge(BACKOFF), &id).await;
    assert!(
        taken_at < due,
        "taken over at {taken_at}, after the retry was due ({due})"
    );
    let report = engine.wait(&id).await.unwrap();
    assert_eq!(report.steps[0].attempts, 2);
    retried_when_due(&store, &id, EventKind::StepStarted, &failed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_due_when_its_worker_shut_down_runs_when_its_backoff_ends() {
    let store = sqlite("backoff_release");
    let first = SagaEngine::with_store(Arc::clone(&store));
    first.register(charge(BACKOFF)).await.unwrap();
    let worker = Worker::new(first.clone())
        .with_poll_interval(Duration::from_millis(20))
        .spawn()
        .unwrap();
    let id = first.submit("charge-once", ()).await.unwrap();
    let failed = retry_logged(&store, &id, EventKind::StepFailed).await;
    // A graceful shutdown mid-backoff: the run is stopped and its lease
    // released for the next process.
    worker.shutdown(Duration::ZERO).await;
    let due = failed.at_ms + BACKOFF.as_millis() as i64;
    let second = SagaEngine::with_store(Arc::clone(&store));
    second.register(charge(BACKOFF)).await.unwrap();
    let worker = Worker::new(second.clone())
        .with_poll_interval(Duration::from_millis(20))
        .spawn()
        .unwrap();
    let claimed_by = now_ms();
    assert!(
        claimed_by < due,
        "the next worker started after the retry was due"
    );
    let report = tokio::time::timeout(Duration::from_secs(10), second.wait(&id))
        .await
        .expect("the run never ended")
        .unwrap();
    worker.shutdown(Duration::from_secs(1)).await;
    assert_eq!(report.steps[0].attempts, 2);
    retried_when_due(&store, &id, EventKind::StepStarted, &failed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compensation_retry_due_when_its_owner_crashed_runs_when_its_backoff_ends() {
    let store = sqlite("backoff_compensation");
    let (id, failed) = {
        let store = Arc::clone(&store);
        tokio::task::spawn_blocking(move || {
            start_and_crash_in_backoff(
                &store,
                release_after_decline(),
                EventKind::CompensationFailed,
            )
        })
        .await
        .unwrap()
    };
    let due = failed.at_ms + BACKOFF.as_millis() as i64;
    let (taken_at, engine) = take_over(&store, release_after_decline(), &id).await;
    assert!(
        taken_at < due,
        "taken over at {taken_at}, after the retry was due ({due})"
    );
    match engine.wait(&id).await {
        Err(WaitError::Saga(SagaError::Compensated { report, .. })) => {
            assert_eq!(report.steps[0].compensation_attempts, 2);
        }
        other => panic!("expected a clean rollback, got {other:?}"),
    }
    retried_when_due(&store, &id, EventKind::CompensationStarted, &failed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_the_wait_for_a_retry_due_after_a_takeover() {
    let long = Duration::from_secs(60);
    let store = sqlite("backoff_cancel");
    let (id, _) = {
        let store = Arc::clone(&store);
        tokio::task::spawn_blocking(move || {
            start_and_crash_in_backoff(&store, charge(long), EventKind::StepFailed)
        })
        .await
        .unwrap()
    };
    let (_, engine) = take_over(&store, charge(long), &id).await;
    // Asked by another engine (as by the CLI): the owner hears of it at
    // its next write, the lease's renewal.
    let operator = SagaEngine::with_store(Arc::clone(&store));
    operator.cancel(&id).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), engine.wait(&id))
        .await
        .expect("the cancel did not stop the wait for the retry");
    match ended {
        Err(WaitError::Saga(SagaError::Cancelled { report, .. })) => {
            assert_eq!(report.steps[0].attempts, 1);
        }
        other => panic!("expected a cancellation, got {other:?}"),
    }
    let events = store.events(&id).await.unwrap();
    let starts: Vec<u32> = events
        .iter()
        .filter(|e| e.kind == EventKind::StepStarted)
        .map(|e| e.attempt)
        .collect();
    assert_eq!(starts, [1], "the retry ran after all");
}
