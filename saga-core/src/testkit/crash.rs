//! The crash harness: a durable run stopped dead at each log commit, then
//! recovered.

use super::inject::{Call, Fault, Probe, Retries, Twice, wrap};
use super::oracle::Plan;
use super::report::{CaseReport, TestReport, failed_case};
use super::{DelayedStore, Dependencies, Durability, SagaTest, StoreOp};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::engine::{EngineError, SagaEngine, WaitError};
use crate::id::ExecutionId;
use crate::report::{ExecutionStatus, SagaReport};
use crate::store::{EventKind, MemoryStore, SagaStore, StoreError};

impl<C, D> SagaTest<C, D>
where
    C: Serialize + DeserializeOwned + Send + 'static,
    D: Send + Sync + 'static,
{
    /// Runs the saga durably (on an engine and a store) on up to three
    /// paths, and then once per log commit of each path, stopping the
    /// owner dead just before and just after that commit; a new engine on
    /// the same store then recovers the execution. The paths:
    ///
    /// - undisturbed;
    /// - if a step's retry policy retries a plain error: every such step
    ///   fails its first attempt and succeeds on its second, so crashes
    ///   land after a failure that will be retried (in the backoff) and
    ///   in the retry itself. The backoff is not waited for (an engine
    ///   sleeps on the real clock); the log is the same;
    /// - the longest rollback: the last step that can still roll the saga
    ///   back fails cleanly, with one attempt (its retry policy is not
    ///   used there).
    ///
    /// Each case must end as its path's uncrashed run did, with the same
    /// step statuses (and, with [`with_state`](Self::with_state) and
    /// [`with_dependencies_state`](Self::with_dependencies_state), the
    /// same final state), and no compensation for a step that never
    /// started.
    ///
    /// One exception, by the rules: a crash while the failing step of the
    /// rollback path runs (its start logged, its failure not) makes that
    /// step's outcome unknown, so the case must end as a run in which that
    /// step fails with an unknown outcome does (stuck if it is the pivot;
    /// its own compensation run if it has one); the final state is not
    /// compared then, as that run's step did take effect.
    ///
    /// Not covered: other failure paths (a crash during the rollback that
    /// a compensation's failure halts, say), crashes during a compensation's
    /// retries, and two crashes in one run; [`failures`](Self::failures)
    /// runs those failures without a crash.
    ///
    /// The crashed owner writes nothing after the crash; its lease is
    /// treated as expired. With [`Durability::Sqlite`], the stores' files
    /// live in a directory of their own under the system's temporary
    /// directory, removed when the run ends.
    pub async fn crashes(&self, durability: Durability) -> TestReport {
        let deps = match self.dependencies() {
            Ok(deps) => deps,
            Err(report) => return report,
        };
        let scratch = match Scratch::new(durability) {
            Ok(scratch) => scratch,
            Err(problem) => {
                return self.report(vec![failed_case(
                    "durable store".to_owned(),
                    ExecutionStatus::Completed,
                    problem,
                )]);
            }
        };
        let plan = Plan::of(&self.saga);
        let mut cases = Vec::new();
        let paths = std::iter::once(Fault::None)
            .chain(plan.retry_path())
            .chain(plan.longest_rollback().map(Fault::Clean));
        for fault in paths {
            let path = plan.describe(fault);
            let baseline = match self.durable_run(&deps, &plan, fault, None, &scratch).await {
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
                Fault::Clean(s) => Some(
                    self.durable_run(&deps, &plan, Fault::Unknown(s), None, &scratch)
                        .await,
                ),
                _ => None,
            };
            for commit in 1..=baseline.commits {
                for after in [false, true] {
                    let when = if after { "after" } else { "before" };
                    let logs = baseline
                        .commit_logs
                        .get(commit - 1)
                        .map(|logs| format!(" ({logs})"))
                        .unwrap_or_default();
                    let name = format!(
                        "{path}, crash {when} commit {commit} of {}{logs}",
                        baseline.commits
                    );
                    let run = match self
                        .durable_run(&deps, &plan, fault, Some((commit, after)), &scratch)
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
                    let difference = match (
                        &self.compare,
                        &reference.context,
                        &run.context,
                        run.failing_in_flight,
                    ) {
                        (Some(compare), Some(a), Some(b), false) => compare(a, b),
                        _ => None,
                    };
                    if let Some(difference) = difference {
                        problems.push(format!("the final state differs: {difference}"));
                    }
                    let dependencies = match (&self.compare_deps, run.failing_in_flight) {
                        (Some(compare), false) => compare(&reference.deps, &run.deps),
                        _ => None,
                    };
                    if let Some(difference) = dependencies {
                        problems.push(format!(
                            "the dependencies' final state differs: {difference}"
                        ));
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
        deps: &Dependencies<D>,
        plan: &Plan,
        fault: Fault,
        crash: Option<(usize, bool)>,
        scratch: &Scratch,
    ) -> Result<DurableRun<C, D>, String> {
        // Declared first, so removed last: after the engines and the
        // store, which hold its files open.
        let _files;
        let store: Arc<dyn SagaStore> = match scratch.case()? {
            None => Arc::new(MemoryStore::new()),
            #[cfg(feature = "sqlite")]
            Some(dir) => {
                let path = dir.0.join("saga.db");
                _files = dir;
                Arc::new(
                    crate::store::SqliteStore::open(&path)
                        .map_err(|e| format!("cannot open a temporary store: {e}"))?,
                )
            }
            #[cfg(not(feature = "sqlite"))]
            Some(dir) => {
                _files = dir;
                return Err("no durable store in this build".to_owned());
            }
        };
        let deps = deps.make();
        let probe = Probe::retrying(fault, Twice::Nothing, plan.retried());
        let failing = match fault {
            Fault::Clean(s) | Fault::Unknown(s) => Some(s),
            _ => None,
        };
        let retries = match (fault, failing) {
            (_, Some(s)) => Retries::Single(s),
            (Fault::Retried, None) => Retries::NoBackoff,
            _ => Retries::AsGiven,
        };
        let saga = wrap(&self.saga, &probe, retries);
        let (crashing, crashed, sizes) = crashing(&store, crash);
        let first = SagaEngine::new(crashing.clone()).with_shared_dependencies(Arc::clone(&deps));
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
            Ok(id) => first.wait(&id).await.or_else(ended),
            Err(_) if crashed.load(Ordering::SeqCst) => Err(EngineError::NotFound {
                execution_id: id.clone(),
            }
            .into()),
            Err(e) => return Err(format!("cannot start the saga: {e}")),
        };
        let commits = crashing.commits();
        let mut failing_in_flight = false;
        let report = if crashed.load(Ordering::SeqCst) {
            drop(first);
            // What the log says at the crash: the failing step started and
            // did not end?
            if let (Some(step), Ok(events)) = (failing, store.events(&id).await) {
                let last = events.iter().rev().find(|e| e.step == Some(step as u32));
                failing_in_flight = last.is_some_and(|e| e.kind == EventKind::StepStarted);
            }
            let second = SagaEngine::with_store(Arc::clone(&store))
                .with_shared_dependencies(Arc::clone(&deps));
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
                .or_else(ended)
                .map_err(|e| format!("the recovered run did not end: {e}"))?
        } else {
            outcome.map_err(|e| format!("the run did not end: {e}"))?
        };
        let context = final_context::<C>(&*store, &id).await;
        let calls = probe.calls().clone();
        let sizes = sizes.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let commit_logs = match crash {
            Some(_) => Vec::new(),
            None => commit_logs(plan, &*store, &id, &sizes).await,
        };
        Ok(DurableRun {
            status: report.status,
            steps: report
                .steps
                .iter()
                .map(|s| format!("{}={}", s.name, s.status))
                .collect(),
            calls,
            commits,
            commit_logs,
            context,
            deps,
            failing_in_flight,
        })
    }
}

/// The report of a run that ended, completed or not.
fn ended(error: WaitError) -> Result<SagaReport, WaitError> {
    match error {
        WaitError::Saga(failed) => Ok(failed.report().clone()),
        other => Err(other),
    }
}

struct DurableRun<C, D> {
    /// The crash cut the failing step of the path off.
    failing_in_flight: bool,
    status: ExecutionStatus,
    steps: Vec<String>,
    calls: Vec<Call>,
    commits: usize,
    /// What each commit logged, in words ("logs `charge` step_succeeded,
    /// `ship` step_started"), in order: of a run not crashed.
    commit_logs: Vec<String>,
    context: Option<C>,
    /// The dependencies both engines used.
    deps: Arc<D>,
}

/// What each commit of execution `id` wrote, from its log cut in the
/// commits' sizes (the number of events each wrote, in order).
async fn commit_logs(
    plan: &Plan,
    store: &dyn SagaStore,
    id: &ExecutionId,
    sizes: &[usize],
) -> Vec<String> {
    let Ok(events) = store.events_without_contexts(id).await else {
        return Vec::new();
    };
    let mut events = events.iter();
    sizes
        .iter()
        .map(|&size| {
            let logged: Vec<String> = events
                .by_ref()
                .take(size)
                .map(|e| match e.step.and_then(|s| plan.names.get(s as usize)) {
                    Some(step) => format!("`{step}` {}", e.kind),
                    None => e.kind.to_string(),
                })
                .collect();
            format!("logs {}", logged.join(", "))
        })
        .collect()
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

/// Where the durable cases of one [`SagaTest::crashes`] run keep their
/// files: nowhere in memory; on SQLite, a directory of the run's own
/// under the system's temporary directory, with a directory per case in
/// it. A store leaves more than its file (its journal, and a lock file per
/// owner beside it): removing directories removes whatever it left.
struct Scratch {
    dir: Option<TempDir>,
    next: AtomicU64,
}

impl Scratch {
    fn new(durability: Durability) -> Result<Self, String> {
        let dir = match durability {
            Durability::Memory => None,
            #[cfg(feature = "sqlite")]
            Durability::Sqlite => {
                let path = std::env::temp_dir().join(format!(
                    "saga-testkit-{}-{}",
                    std::process::id(),
                    ExecutionId::generate()
                ));
                std::fs::create_dir(&path).map_err(|e| {
                    format!("cannot make a temporary directory {}: {e}", path.display())
                })?;
                Some(TempDir(path))
            }
        };
        Ok(Scratch {
            dir,
            next: AtomicU64::new(0),
        })
    }

    /// A new directory for one case's store; `None` in memory.
    fn case(&self) -> Result<Option<TempDir>, String> {
        let Some(TempDir(run)) = &self.dir else {
            return Ok(None);
        };
        let path = run.join(self.next.fetch_add(1, Ordering::Relaxed).to_string());
        std::fs::create_dir(&path)
            .map_err(|e| format!("cannot make a temporary directory {}: {e}", path.display()))?;
        Ok(Some(TempDir(path)))
    }
}

/// A temporary directory, removed with everything in it on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `store`, dying at a chosen commit (from 1; after writing it or before):
/// from then on every write fails, as if its process had been killed
/// (reads still work, for the report; a release stands for the lease
/// expiring). The flag tells whether it died.
fn crashing(
    store: &Arc<dyn SagaStore>,
    crash: Option<(usize, bool)>,
) -> (DelayedStore, Arc<AtomicBool>, Arc<Mutex<Vec<usize>>>) {
    let crashed = Arc::new(AtomicBool::new(false));
    // How many events each commit wrote, in order.
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let counted = Arc::clone(&sizes);
    let describe = store.describe();
    let dead = move || StoreError::Closed {
        store: format!("{describe} (crashed by the test kit)"),
    };
    let (before, after) = (Arc::clone(&crashed), Arc::clone(&crashed));
    let dead_after = dead.clone();
    let store = DelayedStore::shared(Arc::clone(store), Duration::ZERO)
        .before_call(move |call| {
            let writes = call.commit.is_some() || call.op == StoreOp::Renew;
            if writes && before.load(Ordering::SeqCst) {
                return Err(dead());
            }
            if call.commit.is_some_and(|n| crash == Some((n, false))) {
                before.store(true, Ordering::SeqCst);
                return Err(dead());
            }
            if call.commit.is_some() {
                counted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(call.events.len());
            }
            Ok(())
        })
        .after_call(move |call, _| {
            if call.commit.is_some_and(|n| crash == Some((n, true))) {
                after.store(true, Ordering::SeqCst);
                return Err(dead_after());
            }
            Ok(())
        });
    (store, crashed, sizes)
}
