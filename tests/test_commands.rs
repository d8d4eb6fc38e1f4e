//! Durable operator commands on the engine: a resume requested by a tool
//! without the saga's code (`request_resume`), carried out by a worker's
//! `recover()` exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use saga_core::store::{EventKind, MemoryStore, SagaStore};
use saga_core::{EngineError, ExecutionStatus, Saga, SagaEngine, Step, StepError, StepInfo};

/// `pay` (the pivot), then `ship`, which fails while `ready` is false;
/// `calls` counts `ship`'s invocations.
fn saga(ready: &Arc<AtomicBool>, calls: &Arc<AtomicU32>) -> Saga<u32> {
    let (ready, calls) = (Arc::clone(ready), Arc::clone(calls));
    Saga::builder("parcel")
        .pivot(Step::new("pay", |_: &mut u32, _: &StepInfo<'_>| {
            Ok::<_, StepError>(())
        }))
        .step(Step::new("ship", move |_: &mut u32, _: &StepInfo<'_>| {
            calls.fetch_add(1, Ordering::SeqCst);
            if ready.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(StepError::new("no courier").permanent())
            }
        }))
        .build()
        .unwrap()
}

struct Setup {
    store: Arc<dyn SagaStore>,
    ready: Arc<AtomicBool>,
    calls: Arc<AtomicU32>,
}

impl Setup {
    async fn new() -> Self {
        let setup = Setup {
            store: Arc::new(MemoryStore::new()),
            ready: Arc::new(AtomicBool::new(false)),
            calls: Arc::new(AtomicU32::new(0)),
        };
        let engine = setup.worker().await;
        let id = engine.start_with_id("parcel", "p-1", 0_u32).await.unwrap();
        assert_eq!(
            engine.wait(&id).await.or_else(ended).unwrap().status,
            ExecutionStatus::Stuck
        );
        setup
    }

    /// An engine with the saga registered (a worker).
    async fn worker(&self) -> SagaEngine {
        let engine = SagaEngine::with_store(Arc::clone(&self.store));
        engine
            .register(saga(&self.ready, &self.calls))
            .await
            .unwrap();
        engine
    }

    /// An engine with nothing registered (a tool).
    fn tool(&self) -> SagaEngine {
        SagaEngine::with_store(Arc::clone(&self.store))
    }

    async fn kinds(&self) -> Vec<EventKind> {
        let events = self.store.events(&"p-1".into()).await.unwrap();
        events.into_iter().map(|e| e.kind).collect()
    }
}

#[tokio::test]
async fn a_requested_resume_is_carried_out_once_by_a_worker() {
    let setup = Setup::new().await;
    let id = "p-1".into();
    setup.tool().request_resume(&id).await.unwrap();
    // The request alone changes nothing: still stuck, nothing ran.
    let tool = setup.tool();
    assert_eq!(
        tool.get(&id).await.unwrap().unwrap().record.status,
        ExecutionStatus::Stuck
    );
    assert_eq!(setup.calls.load(Ordering::SeqCst), 1);
    // A tool's recover cannot run it (no definition) and says why.
    let recovery = tool.recover().await.unwrap();
    assert!(recovery.resumed.is_empty());
    assert!(matches!(
        recovery.refused[..],
        [(_, EngineError::UnknownSaga { .. })]
    ));

    setup.ready.store(true, Ordering::SeqCst);
    let worker = setup.worker().await;
    let recovery = worker.recover().await.unwrap();
    assert_eq!(recovery.resumed, std::slice::from_ref(&id));
    assert_eq!(
        worker.wait(&id).await.or_else(ended).unwrap().status,
        ExecutionStatus::Completed
    );
    // Once: neither this worker nor another runs it again.
    assert!(worker.recover().await.unwrap().resumed.is_empty());
    assert!(
        setup
            .worker()
            .await
            .recover()
            .await
            .unwrap()
            .resumed
            .is_empty()
    );
    assert_eq!(setup.calls.load(Ordering::SeqCst), 2);
    let kinds = setup.kinds().await;
    assert_eq!(
        kinds[kinds.len() - 5..],
        [
            EventKind::ResumeRequested,
            EventKind::Resumed,
            EventKind::StepStarted,
            EventKind::StepSucceeded,
            EventKind::Finished
        ]
    );
}

#[tokio::test]
async fn a_request_overtaken_by_a_direct_resume_is_not_carried_out_again() {
    let setup = Setup::new().await;
    let id = "p-1".into();
    setup.tool().request_resume(&id).await.unwrap();
    setup.ready.store(true, Ordering::SeqCst);
    // An operator resumes it directly in a worker (the embedded CLI).
    let worker = setup.worker().await;
    worker.resume(&id).await.unwrap();
    assert_eq!(
        worker.wait(&id).await.or_else(ended).unwrap().status,
        ExecutionStatus::Completed
    );
    assert!(
        setup
            .worker()
            .await
            .recover()
            .await
            .unwrap()
            .resumed
            .is_empty()
    );
    assert_eq!(setup.calls.load(Ordering::SeqCst), 2);
    let err = setup.tool().request_resume(&id).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "execution `p-1` is completed; `resume` applies to stuck executions"
    );
}

#[tokio::test]
async fn a_request_for_an_unknown_execution_is_an_error() {
    let setup = Setup::new().await;
    let err = setup
        .tool()
        .request_resume(&"nope".into())
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn the_report_of_any_execution_is_rebuilt_without_its_definition() {
    let setup = Setup::new().await;
    let report = setup.tool().report(&"p-1".into()).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Stuck);
    let statuses: Vec<(&str, &str)> = report
        .steps
        .iter()
        .map(|s| (&*s.name, s.status.label()))
        .collect();
    assert_eq!(statuses, [("pay", "succeeded"), ("ship", "failed")]);
    assert_eq!(
        report.step("ship").unwrap().last_error.as_deref(),
        Some("no courier")
    );
}

/// A `wait` that ended and did not complete, as its report.
fn ended(error: saga_core::WaitError) -> Result<saga_core::SagaReport, saga_core::WaitError> {
    match error {
        saga_core::WaitError::Saga(failed) => Ok(failed.report().clone()),
        other => Err(other),
    }
}
