//! The crash harness: a durable run stopped dead at each log commit, then
//! recovered.

use super::inject::{Call, Fault, Probe, wrap};
use super::oracle::Plan;
use super::report::{CaseReport, TestReport, failed_case};
use super::{Durability, SagaTest};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::engine::{EngineError, SagaEngine};
use crate::id::ExecutionId;
use crate::report::ExecutionStatus;
use crate::step::BoxFuture;
use crate::store::{
    Ack, Created, DefinitionRecord, Event, EventKind, ExecutionRecord, Lease, MemoryStore,
    NewExecution, SagaStore, StoreError, StoreResult,
};

impl<C> SagaTest<C>
where
    C: Serialize + DeserializeOwned + Send + 'static,
{
    /// Runs the saga durably (on an engine and a store), undisturbed and
    /// on its longest rollback path, and then once per log commit of each,
    /// stopping the owner dead just before and just after that commit; a
    /// new engine on the same store then recovers the execution. Each case
    /// must end as the undisturbed run did, with the same step statuses
    /// (and, with [`with_state`](Self::with_state), the same final state),
    /// and no compensation for a step that never started.
    ///
    /// One exception, by the rules: a crash while the failing step of the
    /// rollback path runs (its start logged, its failure not) makes that
    /// step's outcome unknown, so the case must end as a run in which that
    /// step fails with an unknown outcome does (stuck if it is the pivot;
    /// its own compensation run if it has one); the final state is not
    /// compared then, as that run's step did take effect.
    ///
    /// The crashed owner writes nothing after the crash; its lease is
    /// treated as expired. The failing step of the rollback path gets one
    /// attempt (its retry policy is not used here).
    pub async fn crashes(&self, durability: Durability) -> TestReport {
        let plan = Plan::of(&self.saga);
        let mut cases = Vec::new();
        let paths = std::iter::once(Fault::None).chain(plan.longest_rollback().map(Fault::Clean));
        for fault in paths {
            let path = plan.describe(fault);
            let baseline = match self.durable_run(fault, None, durability).await {
                Ok(run) => run,
                Err(problem) => {
                    cases.push(failed_case(
                        format!("{path}, durable"),
                        plan.expected(fault),
                        problem,
                    ));
                    continue;
                }
            };
            let mut problems = plan.check(fault, &baseline.calls, baseline.status, false);
            if baseline.status != plan.expected(fault) {
                problems.insert(0, format!("ended {}", baseline.status));
            }
            cases.push(CaseReport {
                name: format!("{path}, durable, {} commits", baseline.commits),
                expected: plan.expected(fault),
                actual: Some(baseline.status),
                summary: plan.summary(&baseline.calls),
                problems,
            });
            // The same path with the failing step's outcome unknown: what
            // a crash while it runs must end like.
            let unknown = match fault {
                Fault::Clean(s) => {
                    Some(self.durable_run(Fault::Unknown(s), None, durability).await)
                }
                _ => None,
            };
            for commit in 1..=baseline.commits {
                for after in [false, true] {
                    let when = if after { "after" } else { "before" };
                    let name = format!(
                        "{path}, crash {when} commit {commit} of {}",
                        baseline.commits
                    );
                    let run = match self
                        .durable_run(fault, Some((commit, after)), durability)
                        .await
                    {
                        Ok(run) => run,
                        Err(problem) => {
                            cases.push(failed_case(name, baseline.status, problem));
                            continue;
                        }
                    };
                    let (reference, name) = match (&unknown, run.failing_in_flight) {
                        (Some(Ok(unknown)), true) => (
                            unknown,
                            format!("{name} (while the failing step ran: its outcome is unknown)"),
                        ),
                        (Some(Err(problem)), true) => {
                            cases.push(failed_case(
                                name,
                                baseline.status,
                                format!("the run with an unknown outcome failed: {problem}"),
                            ));
                            continue;
                        }
                        _ => (&baseline, name),
                    };
                    let mut problems = plan.check(fault, &run.calls, run.status, true);
                    if run.status != reference.status {
                        problems.insert(0, format!("ended {}", run.status));
                    }
                    if run.steps != reference.steps {
                        problems.push(format!(
                            "step statuses {} instead of {}",
                            run.steps.join(" "),
                            reference.steps.join(" ")
                        ));
                    }
                    if let (Some(compare), Some(a), Some(b), false) = (
                        &self.compare,
                        &reference.context,
                        &run.context,
                        run.failing_in_flight,
                    ) && let Some(difference) = compare(a, b)
                    {
                        problems.push(format!("the final state differs: {difference}"));
                    }
                    cases.push(CaseReport {
                        name,
                        expected: reference.status,
                        actual: Some(run.status),
                        summary: plan.summary(&run.calls),
                        problems,
                    });
                }
            }
        }
        self.report(cases)
    }

    /// One durable run of a case, crashed at `crash` (commit number, after
    /// it or before it) and recovered by a second engine.
    async fn durable_run(
        &self,
        fault: Fault,
        crash: Option<(usize, bool)>,
        durability: Durability,
    ) -> Result<DurableRun<C>, String> {
        let (store, _file) = open_store(durability)?;
        let probe = Probe::new(fault, false);
        let failing = match fault {
            Fault::Clean(s) | Fault::Unknown(s) => Some(s),
            _ => None,
        };
        let single = failing;
        let saga = wrap(&self.saga, &probe, single);
        let crashing = Arc::new(CrashingStore {
            inner: Arc::clone(&store),
            crash,
            commits: AtomicUsize::new(0),
            crashed: AtomicBool::new(false),
        });
        let first = SagaEngine::with_store(Arc::clone(&crashing) as Arc<dyn SagaStore>);
        first
            .register(saga.clone())
            .await
            .map_err(|e| format!("cannot register the saga: {e}"))?;
        // A caller-given id, so that the caller can retry the start after
        // a crash before its creation was committed.
        let id = ExecutionId::generate();
        let outcome = match first
            .start_with_id(self.saga.name(), id.clone(), (self.factory)())
            .await
        {
            Ok(id) => first.wait(&id).await,
            Err(_) if crashing.crashed.load(Ordering::SeqCst) => Err(EngineError::NotFound {
                execution_id: id.clone(),
            }),
            Err(e) => return Err(format!("cannot start the saga: {e}")),
        };
        let commits = crashing.commits.load(Ordering::SeqCst);
        let mut failing_in_flight = false;
        let report = if crashing.crashed.load(Ordering::SeqCst) {
            drop(first);
            // What the log says at the crash: the failing step started and
            // did not end?
            if let (Some(step), Ok(events)) = (failing, store.events(&id).await) {
                let last = events.iter().rev().find(|e| e.step == Some(step as u32));
                failing_in_flight = last.is_some_and(|e| e.kind == EventKind::StepStarted);
            }
            let second = SagaEngine::with_store(Arc::clone(&store));
            second
                .register(saga)
                .await
                .map_err(|e| format!("cannot register the saga after the crash: {e}"))?;
            let recovery = second
                .recover()
                .await
                .map_err(|e| format!("recovery failed: {e}"))?;
            if let Some((_, error)) = recovery.refused.iter().find(|(r, _)| *r == id) {
                return Err(format!("recovery refused the execution: {error}"));
            }
            if recovery.busy.contains(&id) {
                return Err("recovery found the execution busy".to_owned());
            }
            // The caller, whose start failed, starts it again (idempotent
            // by its id: a no-op if it was created).
            if !recovery.resumed.contains(&id) {
                second
                    .start_with_id(self.saga.name(), id.clone(), (self.factory)())
                    .await
                    .map_err(|e| format!("the retried start failed: {e}"))?;
            }
            second
                .wait(&id)
                .await
                .map_err(|e| format!("the recovered run did not end: {e}"))?
        } else {
            outcome.map_err(|e| format!("the run did not end: {e}"))?
        };
        let context = final_context::<C>(&*store, &id).await;
        let calls = probe.calls().clone();
        Ok(DurableRun {
            status: report.status,
            steps: report
                .steps
                .iter()
                .map(|s| format!("{}={}", s.name, s.status))
                .collect(),
            calls,
            commits,
            context,
            failing_in_flight,
        })
    }
}

struct DurableRun<C> {
    /// The crash cut the failing step of the path off.
    failing_in_flight: bool,
    status: ExecutionStatus,
    steps: Vec<String>,
    calls: Vec<Call>,
    commits: usize,
    context: Option<C>,
}

/// The context the log's `finished` event holds.
async fn final_context<C: DeserializeOwned>(store: &dyn SagaStore, id: &ExecutionId) -> Option<C> {
    let events = store.events(id).await.ok()?;
    let finished = events
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::Finished)?;
    serde_json::from_str(finished.context.as_deref()?).ok()
}

/// A temporary SQLite file, deleted on drop.
struct TempFile(Option<std::path::PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let mut file = path.clone().into_os_string();
                file.push(suffix);
                let _ = std::fs::remove_file(file);
            }
        }
    }
}

fn open_store(durability: Durability) -> Result<(Arc<dyn SagaStore>, TempFile), String> {
    match durability {
        Durability::Memory => Ok((Arc::new(MemoryStore::new()), TempFile(None))),
        #[cfg(feature = "sqlite")]
        Durability::Sqlite => {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let path = std::env::temp_dir().join(format!(
                "saga-testkit-{}-{}-{}.db",
                std::process::id(),
                ExecutionId::generate(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let file = TempFile(Some(path.clone()));
            let store = crate::store::SqliteStore::open(&path)
                .map_err(|e| format!("cannot open a temporary store: {e}"))?;
            Ok((Arc::new(store), file))
        }
    }
}

/// A store that dies at a chosen commit: from then on every write fails,
/// as if its process had been killed (reads still work, for the report).
struct CrashingStore {
    inner: Arc<dyn SagaStore>,
    /// The commit (from 1) to die at, and whether after writing it.
    crash: Option<(usize, bool)>,
    commits: AtomicUsize,
    crashed: AtomicBool,
}

impl CrashingStore {
    /// Numbers the next commit; dies if the crash is just before it (or
    /// came already).
    fn next_commit(&self) -> StoreResult<usize> {
        if self.crashed.load(Ordering::SeqCst) {
            return Err(self.dead());
        }
        let n = self.commits.fetch_add(1, Ordering::SeqCst) + 1;
        if self.crash == Some((n, false)) {
            self.crashed.store(true, Ordering::SeqCst);
            return Err(self.dead());
        }
        Ok(n)
    }

    /// Dies if the crash is just after commit `n`.
    fn after_commit(&self, n: usize) -> StoreResult<()> {
        if self.crash == Some((n, true)) {
            self.crashed.store(true, Ordering::SeqCst);
            return Err(self.dead());
        }
        Ok(())
    }

    fn dead(&self) -> StoreError {
        StoreError::Closed {
            store: format!("{} (crashed by the test kit)", self.inner.describe()),
        }
    }
}

impl SagaStore for CrashingStore {
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
        // The creation is a commit of the log too (with the first events).
        let owner = owner.to_owned();
        Box::pin(async move {
            let n = self.next_commit()?;
            let id = execution.id.clone();
            let created = self.inner.create(execution, &owner, ttl).await?;
            if let Err(dead) = self.after_commit(n) {
                // The run never starts, so nothing releases the lease: it
                // expires (as `release` stands for after a crash).
                if let Created::New(lease) = &created {
                    let _ = self.inner.release(&id, lease).await;
                }
                return Err(dead);
            }
            Ok(created)
        })
    }

    fn claim(
        &self,
        id: &ExecutionId,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Option<Lease>>> {
        self.inner.claim(id, owner, ttl)
    }

    fn append<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
        events: Vec<Event>,
        status: ExecutionStatus,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        Box::pin(async move {
            let n = self.next_commit()?;
            let ack = self.inner.append(id, lease, events, status).await?;
            self.after_commit(n)?;
            Ok(ack)
        })
    }

    fn renew<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        if self.crashed.load(Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(self.dead())));
        }
        self.inner.renew(id, lease)
    }

    fn release<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<()>> {
        // After a crash this stands for the lease expiring.
        self.inner.release(id, lease)
    }

    fn get<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> BoxFuture<'a, StoreResult<Option<ExecutionRecord>>> {
        self.inner.get(id)
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

    fn purge(&self, before_ms: i64) -> BoxFuture<'_, StoreResult<u64>> {
        self.inner.purge(before_ms)
    }
}
