//! A review of issue 12 ("never twice"): paths of one engine that the
//! race tests (`test_never_twice.rs`) do not take. Each test puts the
//! engine into one interleaving on purpose, through a store wrapper
//! (`Gate`) that can fail the writes, stall after a claim, or hold a read
//! until the test lets it go.
//!
//! - an interrupted run's error is lost for `wait` when a later claim of
//!   the same execution in this engine fails (`recover`, or an idempotent
//!   `start_with_id` again);
//! - a `resume` cancelled by its caller while its claim is answered
//!   leaves the lease held by this engine with no run: its own next
//!   `resume` is refused until the lease expires;
//! - a worker's shutdown gives a run's lease up before the run stopped: a
//!   sync step cut off is still running when this engine starts the
//!   execution again, so one step runs twice at once;
//! - a `start_with_id` next to an operator's command on an id that does
//!   not exist yet creates the execution, answers `Busy` and leaves it
//!   unrun: a retry returns its id and nothing ever runs it.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use saga_core::store::{
    Ack, ClaimRequest, Claimed, Created, DefinitionRecord, Event, ExecutionRecord, Lease,
    NewExecution, SagaStore, StoreError, StoreResult,
};
use saga_core::{
    BoxFuture, EngineError, ExecutionId, ExecutionStatus, Parallel, RetryPolicy, Saga, SagaEngine,
    SagaReport, Step, StepError, StepInfo, StepStatus, WaitError, Worker,
};
use support::durable::{Order, Script, saga};
use support::stores::every_store;
use tokio::sync::Notify;

/// A store that passes everything to `inner`, except where a test turns a
/// switch: writes that fail, a claim that never answers once it took the
/// lease, a read held until the test lets it go.
struct Gate {
    inner: Arc<dyn SagaStore>,
    /// Appends, renewals and releases fail (creations and claims do not).
    writes_fail: AtomicBool,
    /// The next claim takes the lease, then answers only once told `go`.
    stall_after_claim: AtomicBool,
    /// Told when a claim stalled.
    claimed: Notify,
    /// The next `get` waits for `go` first.
    hold_get: AtomicBool,
    /// Told when a `get` is held.
    held: Notify,
    go: Notify,
}

impl Gate {
    fn new(inner: Arc<dyn SagaStore>) -> Arc<Self> {
        Arc::new(Gate {
            inner,
            writes_fail: AtomicBool::new(false),
            stall_after_claim: AtomicBool::new(false),
            claimed: Notify::new(),
            hold_get: AtomicBool::new(false),
            held: Notify::new(),
            go: Notify::new(),
        })
    }

    fn down(&self) -> Option<StoreError> {
        self.writes_fail
            .load(Ordering::SeqCst)
            .then(|| StoreError::Closed {
                store: "the gate (writes switched off by the test)".to_owned(),
            })
    }
}

impl SagaStore for Gate {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn put_definition(&self, definition: DefinitionRecord) -> BoxFuture<'_, StoreResult<()>> {
        self.inner.put_definition(definition)
    }

    fn definition(
        &self,
        fingerprint: &str,
    ) -> BoxFuture<'_, StoreResult<Option<DefinitionRecord>>> {
        self.inner.definition(fingerprint)
    }

    fn create(
        &self,
        execution: NewExecution,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Created>> {
        self.inner.create(execution, owner, ttl)
    }

    fn claim(
        &self,
        id: &ExecutionId,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Option<Lease>>> {
        let claim = self.inner.claim(id, owner, ttl);
        Box::pin(async move {
            let lease = claim.await;
            if self.stall_after_claim.swap(false, Ordering::SeqCst) {
                let go = self.go.notified();
                self.claimed.notify_one();
                go.await;
            }
            lease
        })
    }

    fn append<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
        events: Vec<Event>,
        status: ExecutionStatus,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        match self.down() {
            Some(error) => Box::pin(async move { Err(error) }),
            None => self.inner.append(id, lease, events, status),
        }
    }

    fn renew<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        match self.down() {
            Some(error) => Box::pin(async move { Err(error) }),
            None => self.inner.renew(id, lease),
        }
    }

    fn release<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<()>> {
        match self.down() {
            Some(error) => Box::pin(async move { Err(error) }),
            None => self.inner.release(id, lease),
        }
    }

    fn get<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> BoxFuture<'a, StoreResult<Option<ExecutionRecord>>> {
        Box::pin(async move {
            if self.hold_get.swap(false, Ordering::SeqCst) {
                let go = self.go.notified();
                self.held.notify_one();
                go.await;
            }
            self.inner.get(id).await
        })
    }

    fn events<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<Vec<Event>>> {
        self.inner.events(id)
    }

    fn list(
        &self,
        status: Option<ExecutionStatus>,
    ) -> BoxFuture<'_, StoreResult<Vec<ExecutionRecord>>> {
        self.inner.list(status)
    }

    fn request_cancel<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<bool>> {
        self.inner.request_cancel(id)
    }

    fn claim_next(&self, request: ClaimRequest) -> BoxFuture<'_, StoreResult<Vec<Claimed>>> {
        self.inner.claim_next(request)
    }

    fn work_signal(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.work_signal()
    }

    fn purge(&self, before_ms: i64) -> BoxFuture<'_, StoreResult<u64>> {
        self.inner.purge(before_ms)
    }
}

/// Every store, fresh, each behind its own gate.
async fn gated(test: &str) -> Vec<(&'static str, Arc<Gate>)> {
    every_store(test)
        .await
        .into_iter()
        .map(|(name, store)| (name, Gate::new(store)))
        .collect()
}

/// An engine on `gate`, with the test saga registered.
async fn engine_on(gate: &Arc<Gate>, script: &Arc<Script>) -> SagaEngine {
    let engine = SagaEngine::with_store(Arc::clone(gate) as Arc<dyn SagaStore>);
    engine.register(saga(script)).await.unwrap();
    engine
}

/// Bounds a wait that, right, ends at once: a hang is the failure.
const HANG: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_stays_interrupted_for_wait_after_a_failed_claim_here() {
    for (name, gate) in gated("review_interrupted").await {
        let script = Arc::new(Script::default());
        let engine = engine_on(&gate, &script).await;
        // The store takes the creation, then no write: the run stops at its
        // first step's end, and cannot give its lease up either.
        gate.writes_fail.store(true, Ordering::SeqCst);
        let id = engine
            .start_with_id("order", "interrupted", Order::default())
            .await
            .unwrap();
        let first = engine.wait(&id).await;
        assert!(
            matches!(first, Err(WaitError::Engine(EngineError::RunLost { .. }))),
            "{name}: {first:?}"
        );
        // The lease is still this engine's (its release failed), so each of
        // these claims fails, as it should: nothing runs the execution again.
        let recovery = engine.recover().await.unwrap();
        assert!(recovery.resumed.is_empty(), "{name}: {recovery:?}");
        let again = engine
            .start_with_id("order", "interrupted", Order::default())
            .await
            .unwrap();
        assert_eq!(again, id);
        // No recovery ran it again: `wait` still tells the run's end.
        let second = tokio::time::timeout(HANG, engine.wait(&id)).await;
        assert!(
            matches!(
                second,
                Ok(Err(WaitError::Engine(EngineError::RunLost { .. })))
            ),
            "{name}: after a failed claim here, wait {:?}",
            second.map_err(|_| "hung (polling the store)")
        );
        gate.writes_fail.store(false, Ordering::SeqCst);
    }
}

/// The saga of the resume tests: `reserve`, then `pay` fails; reserve's
/// compensation fails while `up` is false: stuck rolling back.
fn fragile(up: &Arc<AtomicBool>) -> Saga<Order> {
    let up = Arc::clone(up);
    Saga::<Order>::builder("fragile")
        .undo_retry(RetryPolicy::attempts(1))
        .step(
            Step::new("reserve", |_: &mut Order, _: &StepInfo<'_>| {
                Ok::<_, StepError>(())
            })
            .undo(move |_: &mut Order, _: Option<&()>, _: &StepInfo<'_>| {
                if !up.load(Ordering::SeqCst) {
                    return Err(StepError::new("stock service down"));
                }
                Ok(())
            }),
        )
        .step(Step::new("pay", |_: &mut Order, _: &StepInfo<'_>| {
            Err::<(), _>(StepError::new("card declined").permanent())
        }))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_cancelled_after_its_claim_gives_the_lease_back() {
    for (name, gate) in gated("review_cancelled").await {
        let up = Arc::new(AtomicBool::new(false));
        let engine = SagaEngine::with_store(Arc::clone(&gate) as Arc<dyn SagaStore>);
        engine.register(fragile(&up)).await.unwrap();
        let id = engine.start("fragile", Order::default()).await.unwrap();
        let report = engine.wait(&id).await.or_else(support::ended).unwrap();
        assert_eq!(report.status, ExecutionStatus::Stuck, "{name}");
        up.store(true, Ordering::SeqCst);
        // The caller gives up on its resume (a request timeout, a dropped
        // connection) while the store answers its claim, which took the
        // lease.
        gate.stall_after_claim.store(true, Ordering::SeqCst);
        let claimed = gate.claimed.notified();
        let resuming = {
            let (engine, id) = (engine.clone(), id.clone());
            tokio::spawn(async move { engine.resume(&id).await })
        };
        claimed.await;
        resuming.abort();
        let _ = resuming.await;
        gate.go.notify_one();
        // Not stranded: either the resume carried on without its caller,
        // or the lease is given back and the operator's next resume runs
        // it. 50 looks, 20 ms apart (1 s, well inside the 10 s lease a
        // stranded one would wait for).
        let mut last = None;
        for _ in 0..50 {
            let record = engine.store().get(&id).await.unwrap().unwrap();
            if record.status != ExecutionStatus::Stuck {
                last = None;
                break;
            }
            match engine.resume(&id).await {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(error) => last = Some((record.owner, error)),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            last.is_none(),
            "{name}: still stuck; (lease owner, resume): {last:?}, this engine: {}",
            engine.owner()
        );
        let report = engine.wait(&id).await.or_else(support::ended).unwrap();
        assert_eq!(report.status, ExecutionStatus::Compensated, "{name}");
    }
}

/// How many invocations of one step are inside it at once, at most, and
/// how many there were; the first invocation holds on until a second one
/// comes in (or `HANG` passes).
#[derive(Default)]
struct Overlap {
    inside: AtomicUsize,
    most: AtomicUsize,
    calls: AtomicUsize,
    second: Mutex<bool>,
    came: Condvar,
}

impl Overlap {
    fn enter(&self) {
        let inside = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(inside, Ordering::SeqCst);
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            let second = self.second.lock().unwrap();
            let _ = self.came.wait_timeout_while(second, HANG, |came| !*came);
        } else {
            *self.second.lock().unwrap() = true;
            self.came.notify_all();
        }
        self.inside.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A sync step that blocks its thread on its first invocation (as a
/// blocking client call does), then a quick second step.
fn blocking(overlap: &Arc<Overlap>) -> Saga<Order> {
    let overlap = Arc::clone(overlap);
    Saga::<Order>::builder("blocking")
        .step(Step::new("call", move |_: &mut Order, _: &StepInfo<'_>| {
            overlap.enter();
            Ok::<_, StepError>(())
        }))
        .step(Step::new("after", |_: &mut Order, _: &StepInfo<'_>| {
            Ok::<_, StepError>(())
        }))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_run_stopped_at_shutdown_is_not_run_again_while_its_step_still_runs() {
    for (name, store) in every_store("review_abort").await {
        let overlap = Arc::new(Overlap::default());
        let engine = SagaEngine::with_store(store);
        engine.register(blocking(&overlap)).await.unwrap();
        let worker = Worker::new(engine.clone())
            .with_poll_interval(Duration::from_millis(10))
            .spawn()
            .unwrap();
        let id = engine.submit("blocking", Order::default()).await.unwrap();
        // The worker's run is inside the blocking step.
        for _ in 0..500 {
            if overlap.calls.load(Ordering::SeqCst) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(overlap.calls.load(Ordering::SeqCst), 1, "{name}");
        // Shut down without grace: the run is stopped "as a crash would"
        // and its lease given up, so another run carries it on...
        let stats = worker.shutdown(Duration::ZERO).await;
        // One lease given up, or none if the stopped run reached its end
        // first (the step never awaits, and a store that answers at once
        // may let the rest of the run through before the abort lands).
        assert!(stats.released <= 1, "{name}: {stats:?}");
        // ... here, by this engine's recovery (unless the stopped run got
        // to its end before it stopped: an abort takes effect at an await).
        let recovery = engine.recover().await.unwrap();
        assert!(recovery.refused.is_empty(), "{name}: {recovery:?}");
        let report = tokio::time::timeout(HANG, engine.wait(&id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(report.status, ExecutionStatus::Completed, "{name}");
        // The step may run twice (its first run cut off): at least once
        // semantics. But never twice at once in one engine.
        assert_eq!(
            overlap.most.load(Ordering::SeqCst),
            1,
            "{name}: the step ran again while its stopped run was still inside it"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_next_to_a_command_on_its_new_id_runs_it() {
    for (name, gate) in gated("review_start_busy").await {
        let script = Arc::new(Script::default());
        let engine = engine_on(&gate, &script).await;
        let id = ExecutionId::new("order-1");
        // An operator resumes `order-1` (a typo, a stale list) while a
        // client starts it: the command's first read is held.
        gate.hold_get.store(true, Ordering::SeqCst);
        let held = gate.held.notified();
        let resuming = {
            let (engine, id) = (engine.clone(), id.clone());
            tokio::spawn(async move { engine.resume(&id).await })
        };
        held.await;
        let started = engine
            .start_with_id("order", id.clone(), Order::default())
            .await;
        gate.go.notify_one();
        let resumed = resuming.await.unwrap();
        assert!(
            matches!(resumed, Err(EngineError::WrongStatus { .. })),
            "{name}: {resumed:?}"
        );
        // Whatever the first start answered, the client's retry returns the
        // id, and the execution runs to its end.
        let retried = engine
            .start_with_id("order", id.clone(), Order::default())
            .await
            .unwrap();
        assert_eq!(retried, id);
        let waited = tokio::time::timeout(HANG, engine.wait(&id)).await;
        assert!(
            matches!(&waited, Ok(Ok(report)) if report.status == ExecutionStatus::Completed),
            "{name}: first start {started:?}, then wait {:?}; the steps ran {} times",
            waited.map_err(|_| "hung: nothing runs it"),
            script.calls().len()
        );
    }
}

/// Charges (the pivot), then books `a`, `b` and `c` at once; `b` and `c`
/// fail while `up` is false: stuck going forward, two branches failed.
fn group_forward(up: &Arc<AtomicBool>) -> Saga<Order> {
    let branch = |name: &'static str, fragile: bool| {
        let up = Arc::clone(up);
        Step::shared(name, move |_: &Order, _: &StepInfo<'_>| {
            if fragile && !up.load(Ordering::SeqCst) {
                return Err(StepError::new(format!("{name} down")).permanent());
            }
            Ok::<_, StepError>(())
        })
    };
    Saga::<Order>::builder("group-forward")
        .pivot(Step::new("charge", |_: &mut Order, _: &StepInfo<'_>| {
            Ok::<_, StepError>(())
        }))
        .parallel(
            Parallel::new()
                .step(branch("a", false))
                .step(branch("b", true))
                .step(branch("c", true)),
        )
        .build()
        .unwrap()
}

/// Books `x` and `y` at once, then `pay` fails; both compensations fail
/// while `up` is false: stuck rolling back a group.
fn group_rollback(up: &Arc<AtomicBool>) -> Saga<Order> {
    let branch = |name: &'static str| {
        let up = Arc::clone(up);
        Step::shared(name, |_: &Order, _: &StepInfo<'_>| Ok::<_, StepError>(())).undo_shared(
            move |_: &Order, _: Option<&()>, _: &StepInfo<'_>| {
                if !up.load(Ordering::SeqCst) {
                    return Err(StepError::new("undo down"));
                }
                Ok::<_, StepError>(())
            },
        )
    };
    Saga::<Order>::builder("group-rollback")
        .undo_retry(RetryPolicy::attempts(1))
        .parallel(Parallel::new().step(branch("x")).step(branch("y")))
        .step(Step::new("pay", |_: &mut Order, _: &StepInfo<'_>| {
            Err::<(), _>(StepError::new("card declined").permanent())
        }))
        .build()
        .unwrap()
}

/// Each step's name, status, attempts and compensation attempts.
fn rows(report: &SagaReport) -> Vec<(String, StepStatus, u32, u32)> {
    report
        .steps
        .iter()
        .map(|s| {
            (
                s.name.to_string(),
                s.status,
                s.attempts,
                s.compensation_attempts,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_parallel_group_reports_every_branch_after_resume() {
    use StepStatus::{Compensated, Failed, Succeeded};
    for (name, store) in every_store("review_group").await {
        let up = Arc::new(AtomicBool::new(false));
        let engine = SagaEngine::with_store(store);
        engine.register(group_forward(&up)).await.unwrap();
        engine.register(group_rollback(&up)).await.unwrap();
        let forward = engine
            .start("group-forward", Order::default())
            .await
            .unwrap();
        let rollback = engine
            .start("group-rollback", Order::default())
            .await
            .unwrap();
        for id in [&forward, &rollback] {
            let report = engine.wait(id).await.or_else(support::ended).unwrap();
            assert_eq!(report.status, ExecutionStatus::Stuck, "{name}: {report:?}");
        }
        up.store(true, Ordering::SeqCst);
        let row = |step: &str, status, attempts, undos| (step.to_owned(), status, attempts, undos);
        let cases = [
            (
                &forward,
                ExecutionStatus::Completed,
                // `b` and `c` failed for good before the resume: their
                // attempt then and the one after.
                vec![
                    row("charge", Succeeded, 1, 0),
                    row("a", Succeeded, 1, 0),
                    row("b", Succeeded, 2, 0),
                    row("c", Succeeded, 2, 0),
                ],
            ),
            (
                &rollback,
                ExecutionStatus::Compensated,
                // Their compensations' failed attempts before the
                // resume are counted with the one after.
                vec![
                    row("x", Compensated, 1, 2),
                    row("y", Compensated, 1, 2),
                    row("pay", Failed, 1, 0),
                ],
            ),
        ];
        for (id, status, expected) in cases {
            engine.resume(id).await.unwrap();
            let report = engine.wait(id).await.or_else(support::ended).unwrap();
            assert_eq!(report.status, status, "{name}");
            assert_eq!(rows(&report), expected, "{name}: the run's report");
            let rebuilt = engine.report(id).await.unwrap();
            assert_eq!(rows(&rebuilt), expected, "{name}: rebuilt from the log");
        }
    }
}
