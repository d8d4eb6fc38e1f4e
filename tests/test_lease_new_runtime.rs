//! An engine that outlives the runtime it ran on renews the leases of its
//! runs on the next one: the first runtime's lease renewal (its task) is
//! dropped with it, and a long run started on a second runtime keeps its
//! lease all along its step, however long. A second engine on the same
//! SQLite file, trying to take it over, finds it busy each time, and the
//! step runs once.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use saga_core::store::SqliteStore;
use saga_core::{ExecutionStatus, Saga, SagaEngine, Step, StepError, StepInfo};
use support::durable::scratch_dir;

const TTL: Duration = Duration::from_millis(1500);
/// More than three ttls.
const STEP: Duration = Duration::from_millis(5000);

static LONG_STARTS: AtomicUsize = AtomicUsize::new(0);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `quick` returns at once; `long` blocks its thread for [`STEP`].
fn sagas() -> [Saga<()>; 2] {
    let quick = Saga::builder("quick")
        .step(Step::new("quick", |_: &mut (), _: &StepInfo<'_>| {
            Ok::<(), StepError>(())
        }))
        .build()
        .unwrap();
    let long = Saga::builder("long")
        .step(Step::new("long", |_: &mut (), _: &StepInfo<'_>| {
            LONG_STARTS.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(STEP);
            Ok::<(), StepError>(())
        }))
        .build()
        .unwrap();
    [quick, long]
}

#[test]
fn a_long_run_on_a_second_runtime_keeps_its_lease() {
    let path = scratch_dir("lease_new_runtime").join("sagas.db");
    let owner = SagaEngine::new(SqliteStore::open(&path).unwrap()).with_lease_ttl(TTL);
    let other = SagaEngine::new(SqliteStore::open(&path).unwrap()).with_lease_ttl(TTL);

    // A run on the first runtime, which then shuts down (within a ttl of
    // the run's end: whatever renewed its lease is dropped, not ended).
    let first = runtime();
    first.block_on(async {
        for engine in [&owner, &other] {
            for saga in sagas() {
                engine.register(saga).await.unwrap();
            }
        }
        let id = owner.start("quick", ()).await.unwrap();
        let report = owner.wait(&id).await.unwrap();
        assert_eq!(report.status, ExecutionStatus::Completed);
    });
    drop(first);

    runtime().block_on(async {
        let id = owner.start("long", ()).await.unwrap();
        let until = tokio::time::Instant::now() + STEP;
        let mut tries = 0;
        while tokio::time::Instant::now() < until {
            let recovery = other.recover().await.unwrap();
            assert!(
                recovery.resumed.is_empty(),
                "taken over while its step ran (try {tries}): {recovery:?}"
            );
            tries += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(tries > 10, "{tries} take-over attempts");
        let report = tokio::time::timeout(Duration::from_secs(30), owner.wait(&id))
            .await
            .expect("the run ends")
            .unwrap();
        assert_eq!(report.status, ExecutionStatus::Completed);
    });
    assert_eq!(LONG_STARTS.load(Ordering::SeqCst), 1, "`long` ran twice");
}
