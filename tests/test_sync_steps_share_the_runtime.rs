//! Durable runs keep their leases while sync steps block, on a
//! multi-thread runtime: every sync step of a durable run leaves its
//! worker thread's duties (`block_in_place`), so the lease keeper, the
//! runtime's timers and the store's I/O go on.
//!
//! Before: four runs of a sync step three times longer than the lease on
//! two worker threads held both threads; the leases expired, a second
//! engine on the same file took the executions over, and each step ran
//! twice at once (an outside workload saw its pivot run twice and
//! executions end stuck as crash loops). Then, with all but one worker
//! free: one sync step on PostgreSQL, woken by the store's reply on the
//! worker that drives the runtime's timers and I/O, stalled them all
//! while it ran in place (a 100 ms sleep took 3 s), and the lease expired.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use saga_core::store::{SagaStore, SqliteStore};
use saga_core::{ExecutionId, ExecutionStatus, Saga, SagaEngine, Step, StepError, StepInfo};
use support::durable::scratch_dir;
use support::steps::BlockingProbe as Probe;

const TTL: Duration = Duration::from_millis(600);
const BLOCK: Duration = Duration::from_millis(2400);
const RUNS: usize = 4;

fn saga(probe: &Arc<Probe>) -> Saga<u32> {
    Saga::builder("booking")
        .step(probe.step("book", BLOCK))
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

/// `after_async` then `block`, a sync step of [`BLOCK`]; `block` counts
/// its starts in `starts`.
fn woken_by_the_store(starts: &Arc<AtomicUsize>) -> Saga<u32> {
    let starts = Arc::clone(starts);
    Saga::builder("woken")
        .step(Step::new_async(
            "after_async",
            |_: &mut u32, _: &StepInfo<'_>| Box::pin(async { Ok::<(), StepError>(()) }),
        ))
        .step(Step::new("block", move |_: &mut u32, _: &StepInfo<'_>| {
            starts.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(BLOCK);
            Ok::<(), StepError>(())
        }))
        .build()
        .unwrap()
}

/// One run whose sync step follows a commit (so the store's reply wakes
/// it): while the step blocks, a ticker on the owner's runtime (started
/// before the run, and never poked from outside, which would hand the
/// runtime's duties to an idle worker) ticks on time, and a second engine,
/// on a store handle and runtime of its own, finds the execution busy
/// every time.
fn one_blocking_step_stalls_nothing(
    open: impl Fn() -> Arc<dyn SagaStore>,
    rts: [&tokio::runtime::Runtime; 2],
    store_name: &str,
) {
    let [owner_rt, other_rt] = rts;
    let starts = Arc::new(AtomicUsize::new(0));
    let owner = owner_rt.block_on(async {
        let engine = SagaEngine::with_store(open()).with_lease_ttl(TTL);
        engine.register(woken_by_the_store(&starts)).await.unwrap();
        engine
    });
    let other = other_rt.block_on(async {
        let engine = SagaEngine::with_store(open()).with_lease_ttl(TTL);
        engine.register(woken_by_the_store(&starts)).await.unwrap();
        engine
    });
    // The longest gap between two 20 ms ticks, until told to stop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
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
    let id = owner_rt.block_on(owner.start("woken", 0_u32)).unwrap();
    let begun = Instant::now();
    other_rt.block_on(async {
        while starts.load(Ordering::SeqCst) == 0 || begun.elapsed() < BLOCK {
            assert!(
                begun.elapsed() < 2 * BLOCK,
                "{store_name}: `block` never started"
            );
            let recovery = other.recover().await.unwrap();
            assert!(
                recovery.resumed.is_empty(),
                "{store_name}: taken over after {:?}: {recovery:?}",
                begun.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    stop.store(true, Ordering::SeqCst);
    let longest = owner_rt.block_on(ticker).unwrap();
    assert!(
        longest < BLOCK / 2,
        "{store_name}: a 20 ms timer waited {longest:?} while the step blocked"
    );
    let report = owner_rt.block_on(owner.wait(&id)).unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed, "{store_name}");
    assert_eq!(
        starts.load(Ordering::SeqCst),
        1,
        "{store_name}: `block` ran twice"
    );
}

fn runtimes() -> [tokio::runtime::Runtime; 2] {
    [(), ()].map(|()| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

#[test]
fn a_blocking_step_on_sqlite_stalls_nothing() {
    let path = scratch_dir("sync_stall").join("sagas.db");
    let [a, b] = runtimes();
    one_blocking_step_stalls_nothing(
        || Arc::new(SqliteStore::open(&path).unwrap()),
        [&a, &b],
        "sqlite",
    );
}

#[cfg(feature = "postgres")]
#[test]
fn a_blocking_step_on_postgres_stalls_nothing() {
    use saga_core::store::{PostgresOptions, PostgresStore};
    let url = support::pg::pg_url();
    let schema = support::pg::fresh_schema("sync_stall");
    let [a, b] = runtimes();
    // Each store handle is made on the runtime that uses it: its
    // connection's tasks run there.
    let on = |rt: &tokio::runtime::Runtime| -> Arc<dyn SagaStore> {
        let store = rt
            .block_on(PostgresStore::connect_with(
                &url,
                PostgresOptions::new().with_schema(schema.clone()),
            ))
            .unwrap();
        Arc::new(store)
    };
    let (owner_store, other_store) = (on(&a), on(&b));
    let stores = std::sync::Mutex::new(vec![other_store, owner_store]);
    one_blocking_step_stalls_nothing(
        || stores.lock().unwrap().pop().expect("two stores"),
        [&a, &b],
        "postgres",
    );
}
