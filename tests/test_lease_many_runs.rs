//! Many runs at once keep their leases however long their steps: twenty
//! runs on one engine, each in a step that lasts more than three ttls
//! (half of them sync steps blocking a worker thread each, half async
//! steps waiting on a timer), on a multi-thread runtime with a worker
//! thread to spare. A second engine on the same SQLite file tries to take
//! them over all along: it finds every one busy, and every step runs
//! once. (`tests/test_lease_long_step.rs` shows one run.)

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use saga_core::store::SqliteStore;
use saga_core::{ExecutionStatus, Saga, SagaEngine, Step, StepError, StepInfo};
use support::durable::scratch_dir;

const TTL: Duration = Duration::from_millis(1500);
/// More than three ttls: a run keeps its lease by renewals only.
const STEP: Duration = Duration::from_millis(5000);
const SYNC_RUNS: usize = 10;
const ASYNC_RUNS: usize = 10;

/// How many times each run's long step started, by run (the context).
#[derive(Default)]
struct Starts(Vec<AtomicUsize>);

impl Starts {
    fn new(runs: usize) -> Arc<Self> {
        Arc::new(Starts((0..runs).map(|_| AtomicUsize::new(0)).collect()))
    }

    fn count(&self, run: usize) {
        self.0[run].fetch_add(1, Ordering::SeqCst);
    }

    fn each(&self) -> Vec<usize> {
        self.0.iter().map(|n| n.load(Ordering::SeqCst)).collect()
    }
}

/// `long`, blocking its thread (`sync`) or waiting on a timer for
/// [`STEP`], then `after`. The context is the run's number.
fn saga(name: &'static str, starts: &Arc<Starts>, sync: bool) -> Saga<usize> {
    let starts = Arc::clone(starts);
    let long = if sync {
        Step::new("long", move |run: &mut usize, _: &StepInfo<'_>| {
            starts.count(*run);
            std::thread::sleep(STEP);
            Ok::<(), StepError>(())
        })
    } else {
        Step::new_async("long", move |run: &mut usize, _: &StepInfo<'_>| {
            starts.count(*run);
            Box::pin(async {
                tokio::time::sleep(STEP).await;
                Ok::<(), StepError>(())
            })
        })
    };
    Saga::builder(name)
        .step(long)
        .step(Step::new("after", |_: &mut usize, _: &StepInfo<'_>| {
            Ok::<(), StepError>(())
        }))
        .build()
        .unwrap()
}

/// One worker thread per sync step, and two to spare.
#[tokio::test(flavor = "multi_thread", worker_threads = 12)]
async fn twenty_long_runs_keep_their_leases_at_once() {
    let path = scratch_dir("lease_many_runs").join("sagas.db");
    let owner = SagaEngine::new(SqliteStore::open(&path).unwrap()).with_lease_ttl(TTL);
    let other = SagaEngine::new(SqliteStore::open(&path).unwrap()).with_lease_ttl(TTL);
    let (sync_starts, async_starts) = (Starts::new(SYNC_RUNS), Starts::new(ASYNC_RUNS));
    for engine in [&owner, &other] {
        engine
            .register(saga("long-sync", &sync_starts, true))
            .await
            .unwrap();
        engine
            .register(saga("long-async", &async_starts, false))
            .await
            .unwrap();
    }

    let mut ids = Vec::new();
    for run in 0..SYNC_RUNS.max(ASYNC_RUNS) {
        if run < SYNC_RUNS {
            ids.push(owner.start("long-sync", run).await.unwrap());
        }
        if run < ASYNC_RUNS {
            ids.push(owner.start("long-async", run).await.unwrap());
        }
    }
    // Past the steps' end: every 100 ms, a take-over attempt.
    let until = tokio::time::Instant::now() + STEP + Duration::from_millis(200);
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
    for id in &ids {
        let report = tokio::time::timeout(Duration::from_secs(30), owner.wait(id))
            .await
            .expect("the run ends")
            .unwrap();
        assert_eq!(report.status, ExecutionStatus::Completed);
    }
    assert_eq!(sync_starts.each(), vec![1; SYNC_RUNS], "sync `long` starts");
    assert_eq!(
        async_starts.each(),
        vec![1; ASYNC_RUNS],
        "async `long` starts"
    );
}
