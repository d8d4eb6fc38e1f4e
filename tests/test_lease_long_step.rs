//! A step that blocks its thread for longer than the lease's time to live
//! keeps its lease on a multi-thread runtime: renewal runs in a task of
//! its own, not in the run's future, which a blocked thread does not poll.
//! A second engine on the same SQLite file, trying to take the execution
//! over all along the step, finds it busy every time, and the step runs
//! once. (`tests/test_lease_blocking.rs` covers a step shorter than the
//! ttl, which its start commit's renewal alone covers.)

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use saga_core::store::SqliteStore;
use saga_core::{ExecutionStatus, Saga, SagaEngine, Step, StepError, StepInfo};
use support::durable::scratch_dir;

/// Two renewal periods fit in the ttl; the step blocks for 2.5 ttls.
const TTL: Duration = Duration::from_secs(2);
const BLOCK: Duration = Duration::from_secs(5);

/// How often a step started, and whether it is over.
struct Probe {
    runs: AtomicUsize,
    over: AtomicBool,
}

impl Probe {
    const fn new() -> Self {
        Probe {
            runs: AtomicUsize::new(0),
            over: AtomicBool::new(false),
        }
    }

    /// Blocks the thread for [`BLOCK`], counted.
    fn block(&self) {
        self.runs.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(BLOCK);
        self.over.store(true, Ordering::SeqCst);
    }
}

static SYNC: Probe = Probe::new();
static ASYNC: Probe = Probe::new();

/// `long`, the first step, blocks its thread; `after` returns.
fn saga(name: &'static str, probe: &'static Probe, sync: bool) -> Saga<()> {
    let long = if sync {
        Step::new("long", move |_: &mut (), _: &StepInfo<'_>| {
            probe.block();
            Ok::<(), StepError>(())
        })
    } else {
        Step::new_async("long", move |_: &mut (), _: &StepInfo<'_>| {
            Box::pin(async move {
                probe.block();
                Ok::<(), StepError>(())
            })
        })
    };
    Saga::builder(name)
        .step(long)
        .step(Step::new("after", |_: &mut (), _: &StepInfo<'_>| {
            Ok::<(), StepError>(())
        }))
        .build()
        .unwrap()
}

/// Starts the saga on one engine and, while its step blocks, has a second
/// engine on the same file recover every 200 ms: busy each time.
async fn blocked_step_keeps_its_lease(name: &'static str, probe: &'static Probe, sync: bool) {
    let path = scratch_dir(name).join("sagas.db");
    let owner = SagaEngine::new(SqliteStore::open(&path).unwrap()).with_lease_ttl(TTL);
    let other = SagaEngine::new(SqliteStore::open(&path).unwrap()).with_lease_ttl(TTL);
    owner.register(saga(name, probe, sync)).await.unwrap();
    other.register(saga(name, probe, sync)).await.unwrap();

    let started = Instant::now();
    let id = owner.start(name, ()).await.unwrap();
    // When the last recovery that found it busy began: the check means
    // something only once the start's lease would have expired unrenewed.
    let mut last_try = Duration::ZERO;
    while !probe.over.load(Ordering::SeqCst) {
        let tried = started.elapsed();
        let recovery = other.recover().await.unwrap();
        assert!(
            recovery.resumed.is_empty(),
            "taken over while its step ran: {recovery:?}"
        );
        if !probe.over.load(Ordering::SeqCst) {
            last_try = tried;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        last_try > TTL + TTL / 2,
        "no recovery tried after the start's lease would have expired (last at {last_try:?})"
    );
    let report = owner.wait(&id).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
    assert_eq!(probe.runs.load(Ordering::SeqCst), 1, "`long` ran twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_step_longer_than_the_ttl_keeps_its_lease() {
    blocked_step_keeps_its_lease("long_sync", &SYNC, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_step_blocking_its_thread_longer_than_the_ttl_keeps_its_lease() {
    blocked_step_keeps_its_lease("long_async", &ASYNC, false).await;
}
