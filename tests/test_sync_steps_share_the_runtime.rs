//! Durable runs whose sync steps outnumber the runtime's worker threads
//! keep their leases: a sync step beyond all but one of the workers
//! leaves its worker thread (`block_in_place`), so the lease keeper still
//! runs. Before, four runs of a sync step three times longer than the
//! lease on two worker threads held both threads; the leases expired, a
//! second engine on the same file took the executions over, and each step
//! ran twice at once (an outside workload saw its pivot run twice and
//! executions end stuck as crash loops).

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use saga_core::store::SqliteStore;
use saga_core::{ExecutionId, ExecutionStatus, Saga, SagaEngine, Step, StepError, StepInfo};
use support::durable::scratch_dir;

const TTL: Duration = Duration::from_millis(600);
const BLOCK: Duration = Duration::from_millis(2400);
const RUNS: usize = 4;

/// How many times `book` started, per execution, and how many are over.
#[derive(Default)]
struct Probe {
    started: Mutex<HashMap<String, u32>>,
    over: AtomicUsize,
}

fn saga(probe: &Arc<Probe>) -> Saga<u32> {
    let probe = Arc::clone(probe);
    Saga::builder("booking")
        .step(Step::new(
            "book",
            move |n: &mut u32, info: &StepInfo<'_>| {
                *probe
                    .started
                    .lock()
                    .unwrap()
                    .entry(info.execution_id().to_string())
                    .or_default() += 1;
                // A blocking call: a sync HTTP client, a file lock, a sleep.
                std::thread::sleep(BLOCK);
                probe.over.fetch_add(1, Ordering::SeqCst);
                *n += 1;
                Ok::<(), StepError>(())
            },
        ))
        .step(Step::new("confirm", |_: &mut u32, _: &StepInfo<'_>| {
            Ok::<(), StepError>(())
        }))
        .build()
        .unwrap()
}

#[test]
fn sync_steps_on_every_worker_thread_keep_their_leases() {
    let path = scratch_dir("sync_share").join("sagas.db");
    let probe = Arc::new(Probe::default());
    let owner_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let other_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let owner = SagaEngine::new(SqliteStore::open(&path).unwrap()).with_lease_ttl(TTL);
    let other = SagaEngine::new(SqliteStore::open(&path).unwrap()).with_lease_ttl(TTL);
    owner_rt.block_on(owner.register(saga(&probe))).unwrap();
    other_rt.block_on(other.register(saga(&probe))).unwrap();

    let ids: Vec<ExecutionId> = owner_rt.block_on(async {
        let mut ids = Vec::new();
        for _ in 0..RUNS {
            ids.push(owner.start("booking", 0_u32).await.unwrap());
        }
        ids
    });
    // A second engine, on threads of its own, tries to take them over
    // while the steps run: each is busy every time.
    let started = Instant::now();
    other_rt.block_on(async {
        while probe.over.load(Ordering::SeqCst) < RUNS {
            assert!(started.elapsed() < 4 * BLOCK, "the steps never ended");
            let recovery = other.recover().await.unwrap();
            assert!(
                recovery.resumed.is_empty(),
                "taken over after {:?}: {recovery:?}",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    owner_rt.block_on(async {
        for id in &ids {
            let report = owner.wait(id).await.unwrap();
            assert_eq!(report.status, ExecutionStatus::Completed);
            assert_eq!(report.steps[0].attempts, 1, "{report:?}");
        }
    });
    let started = probe.started.lock().unwrap();
    assert_eq!(started.len(), RUNS, "{started:?}");
    assert!(
        started.values().all(|n| *n == 1),
        "`book` ran twice: {started:?}"
    );
}
