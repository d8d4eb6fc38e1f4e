//! More sync steps of durable runs at once than the runtime's blocking
//! pool has threads: a bounded number leave their worker threads at once
//! (`SagaEngine::with_sync_steps_at_once`), the others wait for their turn
//! without holding a thread, so the runtime's timers fire, leases are
//! renewed, and no step runs twice.
//!
//! Before: each sync step of a durable run entered `block_in_place`, which
//! hands its worker's duties to a thread of the blocking pool; with the
//! pool at its size the hand-over could not happen and the worker just
//! blocked. With 40 steps of 200 ms on 2 workers and a pool of 8 threads,
//! every worker blocked: a 20 ms timer fired seconds late, the leases
//! expired, and a second engine took the executions over while their
//! steps still ran (an outside workload saw it with 600 steps on tokio's
//! default pool of 512).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use saga_core::store::{MemoryStore, SagaStore};
use saga_core::{ExecutionId, ExecutionStatus, Saga, SagaEngine};
use support::steps::BlockingProbe as Probe;

const RUNS: usize = 40;
const BLOCK: Duration = Duration::from_millis(200);
const TTL: Duration = Duration::from_millis(600);
/// The runtime's blocking pool, and the engine's limit below it.
const POOL: usize = 8;
const AT_ONCE: usize = 4;

fn saga(probe: &Arc<Probe>) -> Saga<u32> {
    Saga::builder("blocking")
        .step(probe.step("block", BLOCK))
        .build()
        .unwrap()
}

#[test]
fn sync_steps_past_the_blocking_pool_wait_without_stalling_the_runtime() {
    let probe = Arc::new(Probe::default());
    let store: Arc<dyn SagaStore> = Arc::new(MemoryStore::new());
    let owner_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(POOL)
        .enable_all()
        .build()
        .unwrap();
    let other_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let owner = SagaEngine::with_store(Arc::clone(&store))
        .with_lease_ttl(TTL)
        .with_sync_steps_at_once(AT_ONCE);
    let other = SagaEngine::with_store(store).with_lease_ttl(TTL);
    owner_rt.block_on(owner.register(saga(&probe))).unwrap();
    other_rt.block_on(other.register(saga(&probe))).unwrap();

    // The longest gap between two 20 ms ticks on the owner's runtime,
    // until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = owner_rt.spawn({
        let stop = Arc::clone(&stop);
        async move {
            let mut longest = Duration::ZERO;
            let mut last = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                longest = longest.max(last.elapsed());
                last = Instant::now();
            }
            longest
        }
    });
    // Started at once, as request handlers would: no worker bounds them.
    let ids: Vec<ExecutionId> = owner_rt.block_on(async {
        let mut starts = Vec::new();
        for _ in 0..RUNS {
            let owner = owner.clone();
            starts.push(tokio::spawn(async move {
                owner.start("blocking", 0_u32).await.unwrap()
            }));
        }
        let mut ids = Vec::new();
        for start in starts {
            ids.push(start.await.unwrap());
        }
        ids
    });
    // A second engine, on a runtime of its own, tries to take them over
    // while the steps run (or wait for their turn): each is busy every
    // time.
    let begun = Instant::now();
    // Ten times what the steps take one limit's worth at a time.
    let limit = 10 * BLOCK * RUNS.div_ceil(AT_ONCE) as u32;
    let taken = other_rt.block_on(async {
        let mut taken = Vec::new();
        while probe.over.load(Ordering::SeqCst) < RUNS && begun.elapsed() < limit {
            let recovery = other.recover().await.unwrap();
            taken.extend(recovery.resumed);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        taken
    });
    stop.store(true, Ordering::SeqCst);
    let longest = owner_rt
        .block_on(async { tokio::time::timeout(limit, ticker).await })
        .expect("the ticker never stopped")
        .unwrap();
    assert!(
        longest < Duration::from_millis(300),
        "a 20 ms timer waited {longest:?} while the steps ran"
    );
    assert!(taken.is_empty(), "taken over: {taken:?}");
    assert!(
        probe.over.load(Ordering::SeqCst) == RUNS,
        "{} of {RUNS} steps ended within {limit:?}",
        probe.over.load(Ordering::SeqCst)
    );
    let most = probe.most_inside.load(Ordering::SeqCst);
    assert!(most <= AT_ONCE, "{most} steps blocked at once");
    owner_rt.block_on(async {
        for id in &ids {
            let report = tokio::time::timeout(limit, owner.wait(id))
                .await
                .expect("a run never ended")
                .unwrap();
            assert_eq!(report.status, ExecutionStatus::Completed, "{report:?}");
            assert_eq!(report.steps[0].attempts, 1, "{report:?}");
        }
    });
    let started = probe.started.lock().unwrap();
    assert_eq!(started.len(), RUNS, "{started:?}");
    assert!(
        started.values().all(|n| *n == 1),
        "`block` ran twice: {started:?}"
    );
}

/// The limit holds for sagas registered before it was set: it is the
/// engine's (and its clones'), not fixed at each registration.
#[test]
fn a_limit_set_after_registering_bounds_the_sagas_registered_before() {
    const LIMIT: usize = 2;
    const RUNS: usize = 8;
    let probe = Arc::new(Probe::default());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let engine = SagaEngine::with_store(Arc::new(MemoryStore::new()));
    rt.block_on(engine.register(saga(&probe))).unwrap();
    let engine = engine.with_sync_steps_at_once(LIMIT);
    rt.block_on(async {
        let mut runs = Vec::new();
        for _ in 0..RUNS {
            let engine = engine.clone();
            runs.push(tokio::spawn(async move {
                let id = engine.start("blocking", 0_u32).await.unwrap();
                engine.wait(&id).await.unwrap()
            }));
        }
        for run in runs {
            let report = tokio::time::timeout(Duration::from_secs(30), run)
                .await
                .expect("a run never ended")
                .unwrap();
            assert_eq!(report.status, ExecutionStatus::Completed, "{report:?}");
        }
    });
    assert_eq!(probe.over.load(Ordering::SeqCst), RUNS);
    let most = probe.most_inside.load(Ordering::SeqCst);
    assert!(
        most <= LIMIT,
        "{most} steps blocked at once, the limit {LIMIT}"
    );
}
