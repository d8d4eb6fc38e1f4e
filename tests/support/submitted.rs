//! `SagaEngine::wait` on a submitted execution that no one has run yet,
//! on any store: it waits until a worker runs it (or an operator ends it),
//! and only an unknown id is an error. Each store's test binary calls
//! [`contract`] with a fresh store.

use std::sync::Arc;
use std::time::Duration;

use saga_core::store::SagaStore;
use saga_core::{
    EngineError, ExecutionId, ExecutionStatus, SagaEngine, SagaReport, StepStatus, WaitError,
    Worker, WorkerHandle,
};
use tokio::task::JoinHandle;

use super::durable::{Order, STEPS, Script, saga};

/// Long enough for a `wait` that wrongly gives up on a submitted
/// execution to have done so (it would at its first read of the record).
/// A correct `wait` never returns within it, whatever the machine's load,
/// so the checks below cannot fail for being slow.
const STILL_WAITING: Duration = Duration::from_millis(300);

/// How long a worker may take to run what it was given before the test
/// gives up (a hang, not a timing check).
const HANG: Duration = Duration::from_secs(60);

/// An engine on `store` with the test saga registered.
async fn engine_on(store: &Arc<dyn SagaStore>, script: &Arc<Script>) -> SagaEngine {
    let engine = SagaEngine::with_store(Arc::clone(store));
    engine.register(saga(script)).await.unwrap();
    engine
}

/// `wait(id)` on its own task; an execution that ended and did not
/// complete gives its report too (its status says how it ended).
fn waiter(engine: &SagaEngine, id: &ExecutionId) -> JoinHandle<Result<SagaReport, EngineError>> {
    let (engine, id) = (engine.clone(), id.clone());
    tokio::spawn(async move {
        match engine.wait(&id).await {
            Ok(report) => Ok(report),
            Err(WaitError::Saga(ended)) => Ok(ended.report().clone()),
            Err(WaitError::Engine(error)) => Err(error),
            Err(other) => panic!("an unknown wait error: {other}"),
        }
    })
}

/// Asserts that `waiter` has not returned: the execution is not finished,
/// and no error ended the wait.
async fn still_waiting(store: &str, waiter: &mut JoinHandle<Result<SagaReport, EngineError>>) {
    if let Ok(ended) = tokio::time::timeout(STILL_WAITING, waiter).await {
        panic!("{store}: `wait` returned before anyone ran the execution: {ended:?}");
    }
}

/// The wait's end, or a panic if it hung.
async fn ended(
    store: &str,
    waiter: JoinHandle<Result<SagaReport, EngineError>>,
) -> Result<SagaReport, EngineError> {
    tokio::time::timeout(HANG, waiter)
        .await
        .unwrap_or_else(|_| panic!("{store}: `wait` did not return"))
        .unwrap()
}

fn statuses(report: &SagaReport) -> Vec<StepStatus> {
    report.steps.iter().map(|s| s.status).collect()
}

/// A worker of `engine`, polling often (the embedded stores send no work
/// signal).
fn worker(engine: SagaEngine) -> WorkerHandle {
    Worker::new(engine)
        .with_poll_interval(Duration::from_millis(20))
        .spawn()
        .unwrap()
}

/// Asserts that the wait ended with `status` and that no step ran.
async fn ended_before_any_step(
    name: &str,
    waiter: JoinHandle<Result<SagaReport, EngineError>>,
    status: ExecutionStatus,
    script: &Script,
) {
    let report = ended(name, waiter).await.unwrap();
    assert_eq!(report.status, status, "{name}");
    assert_eq!(
        statuses(&report),
        vec![StepStatus::Pending; STEPS],
        "{name}"
    );
    assert!(script.calls().is_empty(), "{name}: nothing ran");
}

/// The whole contract on one store; `name` labels failures.
pub async fn contract(name: &str, store: Arc<dyn SagaStore>) {
    run_by_a_worker_of_another_engine(name, &store).await;
    run_by_a_worker_of_the_waiting_engine(name, &store).await;
    abandoned_before_anyone_ran_it(name, &store).await;
    cancelled_before_anyone_ran_it(name, &store).await;
    unknown_id(name, &store).await;
}

/// Submitted by one engine, waited for there (on another task), run by
/// another engine's worker: the wait returns the report.
async fn run_by_a_worker_of_another_engine(name: &str, store: &Arc<dyn SagaStore>) {
    let script = Arc::new(Script::default());
    let submitter = engine_on(store, &script).await;
    let id = submitter.submit("order", Order::default()).await.unwrap();
    let mut waiting = waiter(&submitter, &id);
    still_waiting(name, &mut waiting).await;
    let record = store.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (record.status, record.last_seq),
        (ExecutionStatus::Running, 0),
        "{name}: no one ran it yet"
    );
    assert!(script.calls().is_empty(), "{name}");

    let runner = engine_on(store, &script).await;
    let worker = worker(runner);
    let report = ended(name, waiting).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed, "{name}");
    assert_eq!(report.execution_id, id, "{name}");
    assert_eq!(
        statuses(&report),
        vec![StepStatus::Succeeded; STEPS],
        "{name}"
    );
    assert_eq!(script.calls().len(), STEPS, "{name}: each step ran once");
    let stats = worker.shutdown(HANG).await;
    assert_eq!((stats.claimed, stats.finished), (1, 1), "{name}");
}

/// Submitted and waited for by the engine whose own worker then runs it:
/// the wait takes the run's own report once the run is live here.
async fn run_by_a_worker_of_the_waiting_engine(name: &str, store: &Arc<dyn SagaStore>) {
    let script = Arc::new(Script::default());
    let engine = engine_on(store, &script).await;
    let id = engine.submit("order", Order::default()).await.unwrap();
    let mut waiting = waiter(&engine, &id);
    still_waiting(name, &mut waiting).await;
    let worker = worker(engine.clone());
    let report = ended(name, waiting).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed, "{name}");
    assert_eq!(script.calls().len(), STEPS, "{name}");
    worker.shutdown(HANG).await;
}

/// Abandoned by an operator before any worker ran it: the wait ends with
/// the abandoned status, no step run.
async fn abandoned_before_anyone_ran_it(name: &str, store: &Arc<dyn SagaStore>) {
    let script = Arc::new(Script::default());
    let engine = engine_on(store, &script).await;
    let id = engine.submit("order", Order::default()).await.unwrap();
    let mut waiting = waiter(&engine, &id);
    still_waiting(name, &mut waiting).await;
    engine.abandon(&id).await.unwrap();
    ended_before_any_step(name, waiting, ExecutionStatus::Abandoned, &script).await;
}

/// Cancelled before any worker ran it: the request waits with the
/// execution, the worker that picks it up stops its first step before it
/// runs, and the wait ends with the cancelled status, no step run.
async fn cancelled_before_anyone_ran_it(name: &str, store: &Arc<dyn SagaStore>) {
    let script = Arc::new(Script::default());
    let engine = engine_on(store, &script).await;
    let id = engine.submit("order", Order::default()).await.unwrap();
    let mut waiting = waiter(&engine, &id);
    engine.cancel(&id).await.unwrap();
    still_waiting(name, &mut waiting).await;
    assert!(store.get(&id).await.unwrap().unwrap().cancel_requested);

    let runner = engine_on(store, &script).await;
    let worker = worker(runner);
    ended_before_any_step(name, waiting, ExecutionStatus::Cancelled, &script).await;
    worker.shutdown(HANG).await;
}

/// An id no one submitted is an error at once, naming the id.
async fn unknown_id(name: &str, store: &Arc<dyn SagaStore>) {
    let script = Arc::new(Script::default());
    let engine = engine_on(store, &script).await;
    let err = engine.wait(&ExecutionId::new("nope")).await.unwrap_err();
    assert!(
        matches!(&err, WaitError::Engine(EngineError::NotFound { execution_id }) if execution_id.as_str() == "nope"),
        "{name}: {err:?}"
    );
    assert_eq!(err.to_string(), "no execution `nope`", "{name}");
}
