//! An engine's runs across its callers' lifetimes, on the embedded stores
//! (a real SQLite file): a worker's shutdown waits for the runs `start`
//! began, and leaves another worker's alone; an engine that outlives its
//! runtime takes over the runs that runtime dropped, even when the store
//! failed to take their leases back at first; a start (or recovery) whose
//! future is dropped still runs what it recorded; two starts of one id at
//! once run it once, and one held up by the other gives up; engines made
//! by `with_dependencies` keep their own registrations; and what dropping
//! an in-memory run's future does.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use saga_core::store::{SagaStore, StoreError};
use saga_core::testkit::{DelayedStore, StoreOp};
use saga_core::{
    CancellationToken, EngineError, ExecutionId, ExecutionStatus, RunOptions, Saga, SagaEngine,
    SagaError, Step, StepError, StepInfo, Worker,
};
use tokio::sync::{Notify, Semaphore};

use support::durable::in_dying_runtime;
use support::logs;
use support::steps::unless_hung;
use support::stores::every_store;

/// A step's gate: the step tells it entered, then waits until the test
/// opens the gate (for good: every later attempt passes too).
struct Gate {
    entered: Notify,
    open: Semaphore,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            entered: Notify::new(),
            open: Semaphore::new(0),
        }
    }
}

impl Gate {
    fn open(&self) {
        self.open.add_permits(Semaphore::MAX_PERMITS / 2);
    }
}

/// `first` (which counts its runs in the context), then `gated`, which
/// waits at `gate`.
fn gated(name: &str, gate: &Arc<Gate>) -> Saga<u32> {
    let gate = Arc::clone(gate);
    Saga::<u32>::builder(name.to_owned())
        .step(Step::new("first", |n: &mut u32, _: &StepInfo<'_>| {
            *n += 1;
            Ok::<(), StepError>(())
        }))
        .step(Step::new_async(
            "gated",
            move |_: &mut u32, _: &StepInfo<'_>| {
                let gate = Arc::clone(&gate);
                Box::pin(async move {
                    gate.entered.notify_one();
                    let _ = gate.open.acquire().await.map(|p| p.forget());
                    Ok::<(), StepError>(())
                })
            },
        ))
        .build()
        .unwrap()
}

async fn status(store: &Arc<dyn SagaStore>, id: &ExecutionId) -> ExecutionStatus {
    store.get(id).await.unwrap().unwrap().status
}

async fn owner(store: &Arc<dyn SagaStore>, id: &ExecutionId) -> Option<String> {
    store.get(id).await.unwrap().unwrap().owner
}

/// Waits until the worker of `engine` logged that it is stopping.
async fn stopping(engine: &SagaEngine) {
    unless_hung(async {
        while !logs::entries_where("owner", engine.owner())
            .iter()
            .any(|e| e.message == "worker stopping")
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Before: `shutdown` joined only the worker's own runs and returned at
/// once, the started run still in its step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_waits_for_the_runs_start_began() {
    logs::install_logger(log::LevelFilter::Info);
    for (store_name, store) in every_store("shutdown_waits").await {
        let gate = Arc::new(Gate::default());
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine.register(gated("waited", &gate)).await.unwrap();
        let worker = Worker::new(engine.clone())
            .with_poll_interval(Duration::from_secs(3600))
            .spawn()
            .unwrap();
        let id = engine.start("waited", 0u32).await.unwrap();
        unless_hung(gate.entered.notified()).await;
        let shutdown = tokio::spawn(worker.shutdown(support::steps::HANG));
        // Opened once the worker stops claiming: its shutdown has nothing
        // of its own to wait for, only the started run.
        stopping(&engine).await;
        gate.open();
        let stats = unless_hung(shutdown).await.unwrap();
        assert_eq!(
            status(&store, &id).await,
            ExecutionStatus::Completed,
            "{store_name}: the shutdown returned before the started run ended"
        );
        // Counted as it ended within the grace (before: not at all, while
        // one stopped at the grace's end counted as released).
        assert_eq!(
            (stats.finished, stats.released),
            (1, 0),
            "{store_name}: {stats:?}"
        );
    }
}

/// Before: a started run still in its step when the grace period ended
/// kept its lease (and went on), so the next process waited for it to
/// expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_stops_a_started_run_its_grace_did_not_see_end() {
    logs::install_logger(log::LevelFilter::Info);
    for (store_name, store) in every_store("shutdown_stops").await {
        let gate = Arc::new(Gate::default());
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine.register(gated("stopped", &gate)).await.unwrap();
        let worker = Worker::new(engine.clone()).spawn().unwrap();
        let id = engine.start("stopped", 0u32).await.unwrap();
        unless_hung(gate.entered.notified()).await;
        let stats = unless_hung(worker.shutdown(Duration::ZERO)).await;
        assert_eq!(stats.released, 1, "{store_name}");
        assert_eq!(owner(&store, &id).await, None, "{store_name}: lease kept");
        // The log says which run it stopped, and the stopping worker
        // counted the started run (before: `running=0`, no id).
        let ours = logs::entries_where("owner", engine.owner());
        let stopping = ours.iter().find(|e| e.message == "worker stopping");
        assert_eq!(
            stopping.and_then(|e| e.field("started")),
            Some("1"),
            "{store_name}: {ours:?}"
        );
        assert!(
            ours.iter()
                .any(|e| e.message.starts_with("run stopped unfinished")
                    && e.field("execution") == Some(id.as_str())
                    && e.field("saga") == Some("stopped")),
            "{store_name}: {ours:?}"
        );
        // The next process carries it on at once, from its log.
        let next = SagaEngine::with_store(Arc::clone(&store));
        next.register(gated("stopped", &gate)).await.unwrap();
        let recovery = next.recover().await.unwrap();
        assert_eq!(recovery.resumed, vec![id.clone()], "{store_name}");
        gate.open();
        let report = unless_hung(next.wait(&id)).await.unwrap();
        assert_eq!(report.status, ExecutionStatus::Completed, "{store_name}");
    }
}

/// Dropping the worker's handle stops the worker's own runs only: a run
/// `start` began goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_worker_handle_leaves_started_runs_alone() {
    for (store_name, store) in every_store("handle_dropped").await {
        let gate = Arc::new(Gate::default());
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine.register(gated("kept", &gate)).await.unwrap();
        let worker = Worker::new(engine.clone()).spawn().unwrap();
        let id = engine.start("kept", 0u32).await.unwrap();
        unless_hung(gate.entered.notified()).await;
        drop(worker);
        gate.open();
        let report = unless_hung(engine.wait(&id)).await.unwrap();
        assert_eq!(report.status, ExecutionStatus::Completed, "{store_name}");
    }
}

/// An engine whose runtime was shut down with a run of `outlived` mid-step
/// (in its gated step), kept to be used on a new runtime.
struct Outlived {
    store_name: &'static str,
    store: Arc<dyn SagaStore>,
    engine: SagaEngine,
    gate: Arc<Gate>,
    /// The run's execution.
    id: ExecutionId,
}

/// An [`Outlived`] engine on each store, for test `test`; the stores are
/// made on `rt`, which must outlive them.
fn outlived(rt: &tokio::runtime::Runtime, test: &str) -> Vec<Outlived> {
    rt.block_on(every_store(test))
        .into_iter()
        .map(|(store_name, store)| outlive(rt, store_name, store))
        .collect()
}

/// An [`Outlived`] engine on `store`, made on `rt`.
fn outlive(
    rt: &tokio::runtime::Runtime,
    store_name: &'static str,
    store: Arc<dyn SagaStore>,
) -> Outlived {
    let gate = Arc::new(Gate::default());
    let engine = SagaEngine::with_store(Arc::clone(&store));
    rt.block_on(engine.register(gated("outlived", &gate)))
        .unwrap();
    let id = in_dying_runtime(|| async {
        let id = engine.start("outlived", 0u32).await.unwrap();
        unless_hung(gate.entered.notified()).await;
        id
    });
    Outlived {
        store_name,
        store,
        engine,
        gate,
        id,
    }
}

/// `store`, whose lease releases fail as in an outage while `failing` is
/// set, each refusal counted in `refused`; every other call goes through.
fn releases_failing(
    store: Arc<dyn SagaStore>,
    failing: &Arc<AtomicBool>,
    refused: &Arc<AtomicUsize>,
) -> Arc<dyn SagaStore> {
    let (failing, refused) = (Arc::clone(failing), Arc::clone(refused));
    let store = DelayedStore::shared(store, Duration::ZERO).before_call(move |call| {
        if call.op == StoreOp::Release && failing.load(Ordering::SeqCst) {
            refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Unavailable {
                store: "the test store".into(),
                what: "releasing a lease".into(),
                source: "connection reset".into(),
            });
        }
        Ok(())
    });
    Arc::new(store)
}

/// Before: the dropped run's entry counted as a run going on: `recover`
/// skipped it (neither resumed nor busy) and `wait` said the run was lost.
#[test]
fn an_engine_outliving_its_runtime_recovers_the_runs_it_dropped() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for Outlived {
        store_name,
        engine,
        gate,
        id,
        ..
    } in outlived(&rt, "outlives_recover")
    {
        let again = tokio::runtime::Runtime::new().unwrap();
        again.block_on(async {
            // A start of the same id finds it (nothing new starts).
            let same = engine.start_with_id("outlived", id.clone(), 0u32).await;
            assert_eq!(same.unwrap(), id, "{store_name}");
            let waiting = tokio::spawn({
                let (engine, id) = (engine.clone(), id.clone());
                async move { engine.wait(&id).await }
            });
            let recovery = engine.recover().await.unwrap();
            assert_eq!(recovery.resumed, vec![id.clone()], "{store_name}");
            gate.open();
            let report = unless_hung(waiting).await.unwrap().unwrap();
            assert_eq!(report.status, ExecutionStatus::Completed, "{store_name}");
            assert_eq!(engine.context::<u32>(&id).await.unwrap(), 1, "{store_name}");
        });
    }
}

/// Before: a worker of the engine never claimed the dropped run (its
/// lease, the engine's own, was held until it expired, and then the
/// engine still excluded it as running).
#[test]
fn a_worker_takes_over_the_runs_its_engine_dropped_with_a_runtime() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for Outlived {
        store_name,
        engine,
        gate,
        id,
        ..
    } in outlived(&rt, "outlives_worker")
    {
        let again = tokio::runtime::Runtime::new().unwrap();
        again.block_on(async {
            gate.open();
            let worker = Worker::new(engine.clone())
                .with_poll_interval(Duration::from_millis(20))
                .spawn()
                .unwrap();
            let report = unless_hung(engine.wait(&id)).await.unwrap();
            assert_eq!(report.status, ExecutionStatus::Completed, "{store_name}");
            let stats = worker.shutdown(Duration::ZERO).await;
            assert_eq!(stats.claimed, 1, "{store_name}");
        });
    }
}

/// Before: the store's refusal to take the dropped run's lease back (an
/// outage) made the engine forget that lease; once the store was back,
/// `recover` found the execution busy, its lease (the engine's own) held
/// until it expired (10 s). Now the refusal is the recovery's error for
/// that execution, and the next recovery gives the lease back and runs it.
#[test]
fn a_recovery_gives_back_a_dropped_runs_lease_the_store_failed_to_take_back() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (store_name, store) in rt.block_on(every_store("outlives_release_fails")) {
        let (failing, refused) = (Arc::default(), Arc::default());
        let store = releases_failing(store, &failing, &refused);
        let Outlived {
            engine, gate, id, ..
        } = outlive(&rt, store_name, store);
        let again = tokio::runtime::Runtime::new().unwrap();
        again.block_on(async {
            failing.store(true, Ordering::SeqCst);
            let recovery = engine.recover().await.unwrap();
            assert!(refused.load(Ordering::SeqCst) > 0, "{store_name}");
            assert!(recovery.resumed.is_empty(), "{store_name}: {recovery:?}");
            assert!(
                matches!(
                    &recovery.refused[..],
                    [(refused, EngineError::Store(StoreError::Unavailable { .. }))] if *refused == id
                ),
                "{store_name}: {recovery:?}"
            );
            failing.store(false, Ordering::SeqCst);
            let recovery = engine.recover().await.unwrap();
            assert_eq!(recovery.resumed, vec![id.clone()], "{store_name}: {recovery:?}");
            gate.open();
            let report = unless_hung(engine.wait(&id)).await.unwrap();
            assert_eq!(report.status, ExecutionStatus::Completed, "{store_name}");
            assert_eq!(engine.context::<u32>(&id).await.unwrap(), 1, "{store_name}");
        });
    }
}

/// Before: a worker's attempt to give the dropped run's lease back failed
/// in an outage and the engine forgot the lease, so once the store was
/// back the worker took the execution over only when that lease expired
/// (10 s after the start). Now it gives the lease back at its next round.
#[test]
fn a_worker_gives_back_a_dropped_runs_lease_once_an_outage_ends() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (store_name, store) in rt.block_on(every_store("outlives_worker_outage")) {
        let (failing, refused) = (Arc::default(), Arc::default());
        let store = releases_failing(store, &failing, &refused);
        let Outlived {
            engine, gate, id, ..
        } = outlive(&rt, store_name, store);
        let again = tokio::runtime::Runtime::new().unwrap();
        again.block_on(async {
            failing.store(true, Ordering::SeqCst);
            let worker = Worker::new(engine.clone())
                .with_poll_interval(Duration::from_millis(20))
                .spawn()
                .unwrap();
            unless_hung(async {
                while refused.load(Ordering::SeqCst) == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
            failing.store(false, Ordering::SeqCst);
            gate.open();
            // Well within the lease's 10 s: a take-over that waited for
            // it to expire fails here.
            let report = tokio::time::timeout(Duration::from_secs(5), engine.wait(&id))
                .await
                .unwrap_or_else(|_| panic!("{store_name}: taken over only once its lease expired"))
                .unwrap();
            assert_eq!(report.status, ExecutionStatus::Completed, "{store_name}");
            let stats = worker.shutdown(Duration::ZERO).await;
            assert_eq!(stats.claimed, 1, "{store_name}");
        });
    }
}

/// Before: `abandon` answered that the engine itself was running it.
#[test]
fn an_operator_abandons_a_run_its_engine_dropped_with_a_runtime() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for Outlived {
        store_name,
        store,
        engine,
        id,
        ..
    } in outlived(&rt, "outlives_abandon")
    {
        let again = tokio::runtime::Runtime::new().unwrap();
        again.block_on(async {
            engine.abandon(&id).await.unwrap();
            assert_eq!(
                status(&store, &id).await,
                ExecutionStatus::Abandoned,
                "{store_name}"
            );
            assert!(
                matches!(engine.wait(&id).await, Err(saga_core::WaitError::Saga(_))),
                "{store_name}"
            );
        });
    }
}

/// Before: an operator's command whose release of the dropped run's lease
/// failed (an outage) answered that this engine itself was running the
/// execution (`Busy`, owner this engine). Now it answers the store's
/// error, and the same command succeeds once the store takes the lease
/// back.
#[test]
fn an_operator_command_in_an_outage_answers_the_stores_error() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (store_name, store) in rt.block_on(every_store("outlives_abandon_outage")) {
        let (failing, refused) = (Arc::default(), Arc::default());
        let store = releases_failing(store, &failing, &refused);
        let Outlived {
            store, engine, id, ..
        } = outlive(&rt, store_name, store);
        let again = tokio::runtime::Runtime::new().unwrap();
        again.block_on(async {
            failing.store(true, Ordering::SeqCst);
            let refusal = engine.abandon(&id).await;
            assert!(
                matches!(
                    refusal,
                    Err(EngineError::Store(StoreError::Unavailable { .. }))
                ),
                "{store_name}: {refusal:?}"
            );
            assert!(refused.load(Ordering::SeqCst) > 0, "{store_name}");
            failing.store(false, Ordering::SeqCst);
            engine.abandon(&id).await.unwrap();
            assert_eq!(
                status(&store, &id).await,
                ExecutionStatus::Abandoned,
                "{store_name}"
            );
        });
    }
}

/// Before (SQLite, whose writes are done by its writer thread once
/// asked): the creation committed the execution and its lease, the
/// dropped future never launched the run, a retried start found the
/// execution and returned its id, and `wait` hung: no run, and the lease,
/// this engine's own, kept a recovery off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_whose_future_is_dropped_runs_what_it_recorded() {
    for (store_name, store) in every_store("start_dropped").await {
        let gate = Arc::new(Gate::default());
        gate.open();
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine.register(gated("dropped", &gate)).await.unwrap();
        let id = ExecutionId::new("order-1");
        let mut start = Box::pin(engine.start_with_id("dropped", id.clone(), 0u32));
        // Polled once, then given up (a request timed out).
        tokio::select! {
            biased;
            _ = &mut start => {}
            () = std::future::ready(()) => {}
        }
        drop(start);
        let again = engine.start_with_id("dropped", id.clone(), 0u32).await;
        assert_eq!(again.unwrap(), id, "{store_name}");
        let report = unless_hung(engine.wait(&id)).await.unwrap();
        assert_eq!(report.status, ExecutionStatus::Completed, "{store_name}");
        assert_eq!(engine.context::<u32>(&id).await.unwrap(), 1, "{store_name}");
    }
}

/// A start runs in a task of its own: a panic there (here, in the
/// store's creation of the execution) is the caller's, and the engine
/// starts the next execution as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_start_reaches_its_caller() {
    let store = DelayedStore::new(saga_core::store::MemoryStore::new(), Duration::ZERO)
        .before_call(|call| {
            if call.op == StoreOp::Create
                && call
                    .execution_id
                    .as_ref()
                    .is_some_and(|id| id.as_str() == "poison")
            {
                panic!("the store broke on purpose");
            }
            Ok(())
        });
    let gate = Arc::new(Gate::default());
    gate.open();
    let engine = SagaEngine::new(store);
    engine.register(gated("panics", &gate)).await.unwrap();
    let starting = engine.clone();
    let panicked = tokio::spawn(async move {
        starting
            .start_with_id("panics", ExecutionId::new("poison"), 0u32)
            .await
    })
    .await
    .expect_err("the start's panic reached its caller");
    let message = panicked.into_panic();
    assert_eq!(
        message.downcast_ref::<&str>(),
        Some(&"the store broke on purpose")
    );
    let id = engine.start("panics", 0u32).await.unwrap();
    let report = unless_hung(engine.wait(&id)).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
}

/// A recovery given up once its claim is committed: what it claimed runs
/// all the same (before: the lease was held, with no run, until it
/// expired, and a second `recover` listed it as busy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_whose_future_is_dropped_runs_what_it_claimed() {
    for (store_name, store) in every_store("recover_dropped").await {
        let gate = Arc::new(Gate::default());
        gate.open();
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine.register(gated("recovered", &gate)).await.unwrap();
        // Recorded with its lease free, for whoever claims it.
        let id = engine.submit("recovered", 0u32).await.unwrap();
        let mut recover = Box::pin(engine.recover());
        // Polled until the store holds the claim, then given up.
        unless_hung(async {
            loop {
                tokio::select! {
                    biased;
                    _ = &mut recover => break,
                    () = std::future::ready(()) => {}
                }
                if owner(&store, &id).await.is_some() {
                    break;
                }
            }
        })
        .await;
        drop(recover);
        let report = unless_hung(engine.wait(&id)).await.unwrap();
        assert_eq!(report.status, ExecutionStatus::Completed, "{store_name}");
    }
}

/// Before: a start whose creation found another start of the same id in
/// this engine (its creation not answered yet) waited for that one to
/// leave, polling every millisecond with no bound; one whose store call
/// never answered held it for good. Now it gives up after a third of the
/// lease's ttl (later, the lease it took could expire before its first
/// renewal), gives the lease back, and says the execution is busy; a
/// recovery (or a worker) runs it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_start_held_up_by_another_start_of_its_id_gives_up_within_the_lease_ttl() {
    for (store_name, store) in every_store("start_held_up").await {
        let (holding, let_go) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let creates = AtomicUsize::new(0);
        // The first creation is held (its thread blocked, as by a store
        // that does not answer) until the test lets it go.
        let store = DelayedStore::shared(store, Duration::ZERO).before_call({
            let (holding, let_go) = (Arc::clone(&holding), Arc::clone(&let_go));
            move |call| {
                if call.op == StoreOp::Create && creates.fetch_add(1, Ordering::SeqCst) == 0 {
                    holding.store(true, Ordering::SeqCst);
                    let since = Instant::now();
                    while !let_go.load(Ordering::SeqCst) && since.elapsed() < support::steps::HANG {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                Ok(())
            }
        });
        let gate = Arc::new(Gate::default());
        gate.open();
        let ttl = Duration::from_millis(300);
        let engine = SagaEngine::new(store).with_lease_ttl(ttl);
        engine.register(gated("held", &gate)).await.unwrap();
        let id = ExecutionId::new("order-held");
        let first = tokio::spawn({
            let (engine, id) = (engine.clone(), id.clone());
            async move { engine.start_with_id("held", id, 0u32).await }
        });
        unless_hung(async {
            while !holding.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        let since = Instant::now();
        let second = tokio::time::timeout(
            Duration::from_secs(5),
            engine.start_with_id("held", id.clone(), 0u32),
        )
        .await;
        let_go.store(true, Ordering::SeqCst);
        let second =
            second.unwrap_or_else(|_| panic!("{store_name}: the second start waited for good"));
        assert!(
            matches!(&second, Err(EngineError::Busy { execution_id, .. }) if *execution_id == id),
            "{store_name}: {second:?}"
        );
        assert!(
            since.elapsed() >= ttl / 3 && since.elapsed() < ttl,
            "{store_name}: gave up after {:?}, not a third of the ttl",
            since.elapsed()
        );
        // The first finds the execution the second recorded.
        assert_eq!(
            unless_hung(first).await.unwrap().unwrap(),
            id,
            "{store_name}"
        );
        assert_eq!(
            owner(engine.store(), &id).await,
            None,
            "{store_name}: lease kept"
        );
        let recovery = engine.recover().await.unwrap();
        assert_eq!(
            recovery.resumed,
            vec![id.clone()],
            "{store_name}: {recovery:?}"
        );
        let report = unless_hung(engine.wait(&id)).await.unwrap();
        assert_eq!(report.status, ExecutionStatus::Completed, "{store_name}");
        assert_eq!(engine.context::<u32>(&id).await.unwrap(), 1, "{store_name}");
    }
}

/// A saga of one step that counts its runs per execution in `runs`.
fn counted(name: &str, runs: &Arc<Mutex<HashMap<ExecutionId, u32>>>) -> Saga<u32> {
    let runs = Arc::clone(runs);
    Saga::<u32>::builder(name.to_owned())
        .step(Step::new(
            "count",
            move |_: &mut u32, info: &StepInfo<'_>| {
                *runs
                    .lock()
                    .unwrap()
                    .entry(info.execution_id().clone())
                    .or_insert(0) += 1;
                Ok::<(), StepError>(())
            },
        ))
        .build()
        .unwrap()
}

/// Two starts of one id at once, many times, on a store that answers
/// 1 ms late: of one saga, both answer the id; of two sagas, one answers
/// the id and the other `IdTaken`; either way the execution runs once,
/// and no start hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_starts_of_one_id_at_once_run_it_once() {
    for (store_name, store) in every_store("start_race").await {
        let store = DelayedStore::shared(store, Duration::from_millis(1));
        let engine = SagaEngine::new(store);
        let runs = Arc::new(Mutex::new(HashMap::new()));
        engine.register(counted("a", &runs)).await.unwrap();
        engine.register(counted("b", &runs)).await.unwrap();
        for i in 0..100 {
            let id = ExecutionId::new(format!("race-{i}"));
            let other = if i % 2 == 0 { "a" } else { "b" };
            let start = |name: &'static str| {
                let (engine, id) = (engine.clone(), id.clone());
                tokio::spawn(async move { engine.start_with_id(name, id, 0u32).await })
            };
            let (a, b) = (start("a"), start(other));
            let (a, b) = unless_hung(async { (a.await.unwrap(), b.await.unwrap()) }).await;
            let answers = [a, b];
            let ok = answers
                .iter()
                .filter(|r| matches!(r, Ok(answered) if *answered == id))
                .count();
            let taken = answers
                .iter()
                .filter(|r| matches!(r, Err(EngineError::IdTaken { execution_id, .. }) if *execution_id == id))
                .count();
            let expected = if other == "a" { (2, 0) } else { (1, 1) };
            assert_eq!((ok, taken), expected, "{store_name} {id}: {answers:?}");
            let report = unless_hung(engine.wait(&id)).await.unwrap();
            assert_eq!(
                report.status,
                ExecutionStatus::Completed,
                "{store_name} {id}"
            );
            assert_eq!(runs.lock().unwrap().get(&id), Some(&1), "{store_name} {id}");
        }
    }
}

/// A saga whose one step counts its starts in `inside` and waits at
/// `gate`.
fn waiting(inside: &Arc<AtomicUsize>, gate: &Arc<Gate>) -> Saga<u32> {
    let (inside, gate) = (Arc::clone(inside), Arc::clone(gate));
    Saga::<u32>::builder("waiting")
        .step(Step::new_async(
            "gated",
            move |_: &mut u32, _: &StepInfo<'_>| {
                let (inside, gate) = (Arc::clone(&inside), Arc::clone(&gate));
                Box::pin(async move {
                    inside.fetch_add(1, Ordering::SeqCst);
                    let _ = gate.open.acquire().await.map(|p| p.forget());
                    Ok::<(), StepError>(())
                })
            },
        ))
        .build()
        .unwrap()
}

/// Waits until `inside` counts `n`.
async fn until(inside: &AtomicUsize, n: usize) {
    unless_hung(async {
        while inside.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
}

/// Two workers of one engine, each running one execution: the first's
/// shutdown waits for its own run only, stops it when its grace ends, and
/// leaves the second's run alone, which goes on (and the second worker
/// then carries on the released one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_shutdown_leaves_another_workers_runs_alone() {
    for (store_name, store) in every_store("two_workers").await {
        let (inside, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Gate::default()));
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine.register(waiting(&inside, &gate)).await.unwrap();
        let ids = [
            engine.submit("waiting", 0u32).await.unwrap(),
            engine.submit("waiting", 0u32).await.unwrap(),
        ];
        let worker = || {
            Worker::new(engine.clone())
                .with_concurrency(1)
                .with_poll_interval(Duration::from_millis(20))
                .spawn()
                .unwrap()
        };
        let first = worker();
        until(&inside, 1).await;
        let second = worker();
        until(&inside, 2).await;
        let stats = unless_hung(first.shutdown(Duration::from_millis(50))).await;
        assert_eq!(
            (stats.claimed, stats.released),
            (1, 1),
            "{store_name}: {stats:?}"
        );
        let mut owners = Vec::new();
        for id in &ids {
            owners.push(owner(&store, id).await.is_some());
        }
        owners.sort_unstable();
        assert_eq!(
            owners,
            [false, true],
            "{store_name}: the second's lease went"
        );
        gate.open();
        for id in &ids {
            let report = unless_hung(engine.wait(id)).await.unwrap();
            assert_eq!(report.status, ExecutionStatus::Completed, "{store_name}");
        }
        let stats = second.shutdown(Duration::ZERO).await;
        assert_eq!(
            (stats.finished, stats.released),
            (2, 0),
            "{store_name}: {stats:?}"
        );
        // Two first starts and the released one's second: the second
        // worker's run was never cut off.
        assert_eq!(inside.load(Ordering::SeqCst), 3, "{store_name}");
    }
}

/// A mailer's sender, a saga's dependency.
struct Sender(&'static str);

fn signed() -> Saga<String, Sender> {
    Saga::<String, Sender>::builder("signed")
        .step(Step::new(
            "sign",
            |out: &mut String, info: &StepInfo<'_, Sender>| {
                out.push_str(info.dependencies().0);
                Ok::<(), StepError>(())
            },
        ))
        .build()
        .unwrap()
}

/// Before: both engines shared one registry, so the second registration
/// replaced the first, and `a` ran with `b`'s dependencies.
#[tokio::test]
async fn engines_made_by_with_dependencies_keep_their_own_registrations() {
    for (store_name, store) in every_store("own_registry").await {
        let base = SagaEngine::with_store(Arc::clone(&store));
        let a = base.clone().with_dependencies(Sender("a"));
        let b = base.clone().with_dependencies(Sender("b"));
        a.register(signed()).await.unwrap();
        b.register(signed()).await.unwrap();
        for (engine, sender) in [(&a, "a"), (&b, "b")] {
            let id = engine.start("signed", String::new()).await.unwrap();
            unless_hung(engine.wait(&id)).await.unwrap();
            let signed: String = engine.context(&id).await.unwrap();
            assert_eq!(signed, sender, "{store_name}");
        }
        // The base has registered neither; plain clones share one registry.
        assert!(base.start("signed", String::new()).await.is_err());
        let a2 = a.clone();
        let id = a2.start("signed", String::new()).await.unwrap();
        unless_hung(a2.wait(&id)).await.unwrap();
        assert_eq!(a2.context::<String>(&id).await.unwrap(), "a");
    }
}

/// `first` (undone into `undone`), `gated` (waiting at `gate`), `last`.
fn in_memory(undone: &Arc<Mutex<Vec<String>>>, gate: &Arc<Gate>) -> Saga<u32> {
    let (undone, gate) = (Arc::clone(undone), Arc::clone(gate));
    Saga::<u32>::builder("in-memory")
        .step(
            Step::new("first", |n: &mut u32, _: &StepInfo<'_>| {
                *n += 1;
                Ok::<(), StepError>(())
            })
            .undo(move |_: &mut u32, _: Option<&()>, _: &StepInfo<'_>| {
                undone.lock().unwrap().push("first".to_owned());
                Ok::<(), StepError>(())
            }),
        )
        .step(Step::new_async(
            "gated",
            move |_: &mut u32, _: &StepInfo<'_>| {
                let gate = Arc::clone(&gate);
                Box::pin(async move {
                    gate.entered.notify_one();
                    let _ = gate.open.acquire().await.map(|p| p.forget());
                    Ok::<(), StepError>(())
                })
            },
        ))
        .step(Step::new("last", |_: &mut u32, _: &StepInfo<'_>| {
            Ok::<(), StepError>(())
        }))
        .build()
        .unwrap()
}

/// What `Saga::run`'s documentation says: a run whose future is dropped
/// mid-step is abandoned where it is (nothing compensated); a cancellation
/// token stops it with compensation.
#[tokio::test]
async fn a_dropped_run_compensates_nothing_and_a_cancelled_one_does() {
    let undone = Arc::new(Mutex::new(Vec::<String>::new()));
    let gate = Arc::new(Gate::default());
    let saga = in_memory(&undone, &gate);
    let mut n = 0;
    tokio::select! {
        _ = saga.run(&mut n) => panic!("the gated step passed its closed gate"),
        () = gate.entered.notified() => {}
    }
    // The future is gone: the gate opened now wakes nothing.
    gate.open();
    tokio::task::yield_now().await;
    assert_eq!(n, 1, "the first step ran once");
    assert!(
        undone.lock().unwrap().is_empty(),
        "a dropped run compensated"
    );

    let gate = Arc::new(Gate::default());
    let saga = in_memory(&undone, &gate);
    let token = CancellationToken::new();
    let mut n = 0;
    let run = saga.run_with(&mut n, RunOptions::new().with_cancellation(token.clone()));
    let cancel = async {
        gate.entered.notified().await;
        token.cancel();
        gate.open();
    };
    let (ended, ()) = tokio::join!(run, cancel);
    assert!(
        matches!(ended, Err(SagaError::Cancelled { .. })),
        "{ended:?}"
    );
    assert_eq!(*undone.lock().unwrap(), ["first"]);
}

/// `SagaEngine::context` reads the one context it decodes, the log's
/// last, not the whole log (each step's context in it: hundreds of
/// megabytes for a large context over many steps); a report is rebuilt
/// from the log without its contexts.
#[tokio::test]
async fn the_context_is_read_alone_not_with_the_log() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = DelayedStore::new(saga_core::store::MemoryStore::new(), Duration::ZERO)
        .before_call({
            let seen = Arc::clone(&seen);
            move |call| {
                seen.lock().unwrap().push(call.op);
                Ok(())
            }
        });
    let engine = SagaEngine::new(store);
    let mut builder = Saga::<u32>::builder("count");
    for name in ["one", "two", "three"] {
        builder = builder.step(Step::new(name, |n: &mut u32, _: &StepInfo<'_>| {
            *n += 1;
            Ok::<(), StepError>(())
        }));
    }
    engine.register(builder.build().unwrap()).await.unwrap();
    let id = engine.start("count", 10_u32).await.unwrap();
    engine.wait(&id).await.unwrap();
    seen.lock().unwrap().clear();
    assert_eq!(engine.context::<u32>(&id).await.unwrap(), 13);
    assert_eq!(*seen.lock().unwrap(), [StoreOp::LatestContext]);
    // A report rebuilt from the log reads it without the contexts.
    seen.lock().unwrap().clear();
    let report = engine.report(&id).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
    assert_eq!(report.steps.len(), 3);
    assert_eq!(
        *seen.lock().unwrap(),
        [StoreOp::Get, StoreOp::EventsWithoutContexts]
    );
    let unknown = ExecutionId::new("nope");
    assert!(matches!(
        engine.context::<u32>(&unknown).await,
        Err(EngineError::NotFound { execution_id }) if execution_id == unknown
    ));
}
