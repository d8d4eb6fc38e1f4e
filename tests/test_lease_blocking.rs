//! A step's start commit gives the step the whole lease: a sync step that
//! blocks its thread for most of the ttl keeps its lease, and a second
//! engine on the same SQLite file finds the execution busy instead of
//! running the step again. (Since the renewal runs in a task of its own,
//! a step longer than the ttl keeps it too: test_lease_long_step.)

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use saga_core::store::SqliteStore;
use saga_core::{Saga, SagaEngine, Step, StepError, StepInfo};
use support::durable::scratch_dir;

const TTL: Duration = Duration::from_secs(3);

static SECOND_RUNS: AtomicUsize = AtomicUsize::new(0);

/// `first` blocks for 0.9 s, then `second` for 2.5 s: the second's start is
/// committed when less than a third of the ttl is gone, and the step runs
/// past the expiry the creation set.
fn saga() -> Saga<()> {
    Saga::builder("blocking")
        .step(Step::new("first", |_: &mut (), _: &StepInfo<'_>| {
            std::thread::sleep(Duration::from_millis(900));
            Ok::<(), StepError>(())
        }))
        .step(Step::new("second", |_: &mut (), _: &StepInfo<'_>| {
            SECOND_RUNS.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(2500));
            Ok::<(), StepError>(())
        }))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_step_blocking_its_thread_keeps_the_lease_its_start_gave() {
    let path = scratch_dir("lease_blocking").join("sagas.db");
    let owner = SagaEngine::new(SqliteStore::open(&path).unwrap()).with_lease_ttl(TTL);
    let other = SagaEngine::new(SqliteStore::open(&path).unwrap()).with_lease_ttl(TTL);
    owner.register(saga()).await.unwrap();
    other.register(saga()).await.unwrap();

    let id = owner.start("blocking", ()).await.unwrap();
    // Past the expiry the creation set, while `second` still runs.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_eq!(SECOND_RUNS.load(Ordering::SeqCst), 1);
    let recovery = other.recover().await.unwrap();

    assert!(recovery.resumed.is_empty(), "{recovery:?}");
    assert_eq!(recovery.busy, std::slice::from_ref(&id), "{recovery:?}");
    let report = owner.wait(&id).await.unwrap();
    assert_eq!(report.status, saga_core::ExecutionStatus::Completed);
    assert_eq!(SECOND_RUNS.load(Ordering::SeqCst), 1, "`second` ran twice");
}
