//! The live set: the runs this engine is claiming or running, at most one
//! per execution, and how a claimed execution is launched.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::crash::{CrashLoop, Cut, crash_loops};
use super::{EngineError, EngineInner, Job, Registry, Runner, SagaEngine, fold, resume_requested};
use crate::cancel::CancellationToken;
use crate::id::ExecutionId;
use crate::journal::ResumePhase;
use crate::name::Name;
use crate::report::{ExecutionStatus, SagaReport};
use crate::store::{Claimed, ClaimedWithLog, Event, EventKind, ExecutionRecord, Lease, StoreError};

/// An entry of the live set.
pub(super) struct Live {
    /// Who made the entry: only they remove or replace it.
    pub(super) slot: u64,
    /// The run, once launched; `None` while its maker is still claiming
    /// (or, for an operator's command, writing under the lease).
    pub(super) run: Option<LiveRun>,
}

impl Live {
    /// Whether the entry stands for work going on (a claim, or a run that
    /// has not ended), as opposed to a run that stopped and stays listed
    /// for `wait`, or one whose task is gone.
    pub(super) fn active(&self) -> bool {
        self.run
            .as_ref()
            .is_none_or(|run| run.done.borrow().is_none() && !run.dropped())
    }

    /// The lease of a run whose task is gone (see [`LiveRun::dropped`]).
    fn dropped_lease(&self) -> Option<&Lease> {
        self.run
            .as_ref()
            .filter(|run| run.dropped())
            .map(|run| &run.lease)
    }

    /// Whether the entry is a run stopped by its store (its log could not
    /// be written), listed for `wait` until it runs again.
    fn stopped(&self) -> bool {
        self.run
            .as_ref()
            .is_some_and(|run| matches!(*run.done.borrow(), Some(Err(_))))
    }
}

/// A run of this engine.
pub(super) struct LiveRun {
    pub(super) cancel: CancellationToken,
    pub(super) done: watch::Receiver<Option<Done>>,
    pub(super) task: tokio::task::AbortHandle,
    pub(super) lease: Lease,
    /// Its execution's saga, for the log.
    pub(super) saga: Name,
    /// The starts of its execution that store failures cut off, as this
    /// engine saw them: not crashes (see [`Cut`]).
    pub(super) cuts: Vec<Cut>,
    /// The last event of the log it was launched from (0 for none): the
    /// starts after it are its own.
    pub(super) from_seq: u64,
    /// Launched by a [`Worker`](crate::Worker), which stops it at its
    /// shutdown; the others (`start`, `recover`, `resume`) a shutting-down
    /// worker waits for and stops too.
    pub(super) by_worker: bool,
}

impl LiveRun {
    /// Whether its task is gone without telling an end: it was dropped
    /// with the runtime it ran on (shut down mid-step), or aborted. No
    /// run goes on; the lease it held is this engine's to give back.
    pub(super) fn dropped(&self) -> bool {
        self.done.borrow().is_none() && self.done.has_changed().is_err()
    }
}

/// A claiming entry in the live set, made by [`SagaEngine::enter`]: while
/// it stands, nothing else in this engine claims or runs its execution.
/// Dropped without a launch, it gives back the lease it took, if any, and
/// puts back the entry it replaced if that was a run stopped by its store,
/// or one whose task is gone and whose lease it did not give back (or
/// removes its own).
pub(super) struct Claiming {
    pub(super) inner: Arc<EngineInner>,
    pub(super) id: ExecutionId,
    pub(super) slot: u64,
    pub(super) launched: bool,
    /// The entry it replaced: a stopped run's, kept for `wait`.
    pub(super) previous: Option<Live>,
    /// The lease its claim took, once it has one.
    pub(super) lease: Option<Lease>,
    /// The lease of the entry it replaced, a run whose task is gone (see
    /// [`LiveRun::dropped`]): the store lets no owner claim a lease it
    /// holds, so it is given back before the claim.
    pub(super) stale: Option<Lease>,
    /// Made for a [`Worker`](crate::Worker)'s run.
    pub(super) by_worker: bool,
    /// The starts store failures cut off, for the run it launches.
    pub(super) cuts: Vec<Cut>,
}

impl Claiming {
    /// The starts of the execution (`events`, a log of `steps` steps) that
    /// store failures cut off, as this engine saw them: the replaced
    /// run's, and the starts that run logged and was inside (every one in
    /// flight: a group's branches run together) if it was stopped by its
    /// store (its next write refused; a run that lost its lease stalled,
    /// and counts as cut off) and no other claim came between it and
    /// `lease` (whose token is then the next one): else those starts may
    /// be another owner's, cut by a crash.
    fn store_cuts(&self, events: &[Event], steps: usize, lease: &Lease) -> Vec<Cut> {
        let Some(run) = self.previous.as_ref().and_then(|p| p.run.as_ref()) else {
            return Vec::new();
        };
        let mut cuts = run.cuts.clone();
        let by_store = matches!(&*run.done.borrow(), Some(Err(stopped)) if !stopped.lease_lost);
        if by_store && lease.token == run.lease.token + 1 {
            cuts.extend(Cut::in_flight(events, steps, run.from_seq));
        }
        cuts
    }

    /// Gives back the lease of the replaced run whose task is gone, if
    /// any, so that this engine's claim can take it (a lease another owner
    /// took since is left alone: the release is fenced).
    ///
    /// # Errors
    /// The store's, if it failed to take the lease back (an outage): the
    /// lease is kept, and the entry it came from put back when this one
    /// goes, for the next claim to give it back. A claim now would find
    /// the lease held (by this engine) until it expired.
    pub(super) async fn give_back_stale(&mut self) -> Result<(), StoreError> {
        let Some(lease) = self.stale.take() else {
            return Ok(());
        };
        match self.inner.store.release(&self.id, &lease).await {
            // Gone, or another owner's: nothing of this engine's to give back.
            Ok(()) | Err(StoreError::NotFound { .. } | StoreError::LeaseLost { .. }) => Ok(()),
            Err(error) => {
                self.stale = Some(lease);
                Err(error)
            }
        }
    }

    /// [`give_back_stale`](Self::give_back_stale), for a caller whose
    /// claim then answers for itself (busy, or the store's error): a
    /// failure is logged, and the lease kept for the next claim.
    pub(super) async fn release_stale(&mut self) {
        if let Err(error) = self.give_back_stale().await {
            log::warn!(target: "saga", execution:% = crate::escape::Escaped(self.id.as_str()), error:% = crate::escape::Escaped(&error.to_string()); "releasing a dropped run's lease failed");
        }
    }
}

impl Drop for Claiming {
    fn drop(&mut self) {
        if self.launched {
            return;
        }
        // A claim that took the lease and was dropped before its launch
        // (its caller gave up): give the lease back rather than hold it,
        // with no run, until it expires.
        if let Some(lease) = self.lease.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let (store, id) = (Arc::clone(&self.inner.store), self.id.clone());
                handle.spawn(async move {
                    let _ = store.release(&id, &lease).await;
                });
            }
        }
        let mut live = self
            .inner
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if live.get(&self.id).is_some_and(|l| l.slot == self.slot) {
            // Only a run stopped by its store stays listed (for `wait`,
            // until it runs again): one that ended may have been replaced
            // just before its task's removal, which then skipped it. A run
            // whose task is gone stays listed while its lease is not given
            // back, for the next claim to give it back.
            let stale = self.stale.is_some();
            match self
                .previous
                .take()
                .filter(|previous| previous.stopped() || stale)
            {
                Some(previous) => {
                    live.insert(self.id.clone(), previous);
                }
                None => {
                    live.remove(&self.id);
                }
            }
        }
    }
}

/// Debug builds: one run task of an execution alive in this engine, from
/// its spawn until its run has returned (or its task was dropped, once
/// aborted). Made at the spawn, it asserts that no other task of the same
/// execution is alive: at most one live run per execution id.
#[cfg(debug_assertions)]
struct TaskAlive {
    inner: Arc<EngineInner>,
    id: ExecutionId,
}

#[cfg(debug_assertions)]
impl TaskAlive {
    fn new(inner: &Arc<EngineInner>, id: &ExecutionId) -> Self {
        let mut tasks = inner.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        let alive = tasks.entry(id.clone()).or_insert(0);
        *alive += 1;
        assert_eq!(*alive, 1, "two live runs of execution {id} in one engine");
        TaskAlive {
            inner: Arc::clone(inner),
            id: id.clone(),
        }
    }
}

#[cfg(debug_assertions)]
impl Drop for TaskAlive {
    fn drop(&mut self) {
        let mut tasks = self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(alive) = tasks.get_mut(&self.id) {
            *alive -= 1;
            if *alive == 0 {
                tasks.remove(&self.id);
            }
        }
    }
}

/// How a run in this process ended: its report, or why it stopped.
pub(crate) type Done = Result<SagaReport, Stopped>;

/// What [`SagaEngine::abort_runs`] did with the runs it was given.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Aborted {
    /// Stopped where they were, their leases given back.
    pub(crate) stopped: u64,
    /// Ended by themselves first.
    pub(crate) finished: u64,
    /// Stopped by their store (an outage, a lost lease) first.
    pub(crate) interrupted: u64,
}

/// Why a run stopped without an end: its log could not be written.
#[derive(Debug, Clone)]
pub(crate) struct Stopped {
    /// Another owner took the execution's lease: its `wait` goes on
    /// waiting for that owner.
    pub(crate) lease_lost: bool,
    /// The store could not be reached (an outage): its `wait` goes on
    /// waiting for whoever carries the execution on once it is back.
    pub(crate) outage: bool,
    /// The store's error.
    pub(crate) detail: String,
}

impl SagaEngine {
    pub(super) fn registry_mut(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn registry(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn ended(&self) -> std::sync::MutexGuard<'_, super::ended::Ended> {
        self.inner.ended()
    }

    pub(super) fn live(&self) -> std::sync::MutexGuard<'_, HashMap<ExecutionId, Live>> {
        self.inner
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes a claiming entry for `id` in the live set, to be made before
    /// the first await of anything that may lead to a run of it; `None` if
    /// this engine is claiming or running it already. Replaces the entry of
    /// a run that stopped (kept for `wait`).
    pub(super) fn enter(&self, id: &ExecutionId) -> Option<Claiming> {
        let mut live = self.live();
        // One lookup (a hash of the id) for the test and the insertion.
        let entry = live.entry(id.clone());
        if let Entry::Occupied(entry) = &entry {
            if entry.get().active() {
                return None;
            }
        }
        let slot = self.inner.slots.fetch_add(1, Ordering::Relaxed);
        let mine = Live { slot, run: None };
        let previous = match entry {
            Entry::Occupied(mut entry) => Some(std::mem::replace(entry.get_mut(), mine)),
            Entry::Vacant(entry) => {
                entry.insert(mine);
                None
            }
        };
        let stale = previous.as_ref().and_then(Live::dropped_lease).cloned();
        Some(Claiming {
            inner: Arc::clone(&self.inner),
            id: id.clone(),
            slot,
            launched: false,
            previous,
            lease: None,
            stale,
            by_worker: false,
            cuts: Vec::new(),
        })
    }

    /// Gives back the leases of this engine's runs whose task is gone
    /// (dropped with the runtime they ran on), so that a claim (a worker's,
    /// this engine's included) takes them over at once rather than when
    /// they expire.
    pub(crate) async fn release_dropped_runs(&self) {
        let dropped: Vec<ExecutionId> = self
            .live()
            .iter()
            .filter(|(_, live)| live.dropped_lease().is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for id in dropped {
            if let Some(mut claiming) = self.enter(&id) {
                // A failure is logged; the lease is kept for the next round.
                claiming.release_stale().await;
            }
        }
    }

    /// The answer to a command on an execution this engine is claiming or
    /// running.
    pub(super) fn busy_here(&self, id: &ExecutionId) -> EngineError {
        EngineError::Busy {
            execution_id: id.clone(),
            owner: self.inner.owner.clone(),
        }
    }

    pub(super) fn by_name(&self, name: &str) -> Result<Arc<dyn Runner>, EngineError> {
        let registry = self.registry();
        registry
            .by_name
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::UnknownSaga {
                name: name.to_owned(),
                registered: sorted(registry.by_name.keys()),
            })
    }

    pub(super) async fn record(&self, id: &ExecutionId) -> Result<ExecutionRecord, EngineError> {
        self.inner
            .store
            .get(id)
            .await?
            .ok_or_else(|| EngineError::NotFound {
                execution_id: id.clone(),
            })
    }

    pub(super) async fn busy(&self, id: &ExecutionId) -> EngineError {
        let owner = match self.inner.store.get(id).await {
            Ok(Some(record)) => record.owner.unwrap_or_default(),
            _ => String::new(),
        };
        EngineError::Busy {
            execution_id: id.clone(),
            owner,
        }
    }

    /// Claims an execution and runs it from its log, after checking (before
    /// any write) that its definition is registered and its log decodes.
    /// `mark` is an event to log first (an operator's resume). Returns
    /// where the run's end will be told; `None` if another owner holds its
    /// lease (or the take-over no longer applies).
    /// `requested`: carry out a pending [`request_resume`](Self::request_resume)
    /// (skipped if it is no longer pending).
    pub(super) async fn take_over(
        &self,
        record: &ExecutionRecord,
        mark: Option<EventKind>,
        requested: bool,
        mut claiming: Claiming,
    ) -> Result<Option<watch::Receiver<Option<Done>>>, EngineError> {
        let id = &record.id;
        let runner = self.runner_for(record)?;
        let store = &self.inner.store;
        // A dry run of the decoding, so that a log this build cannot read
        // is refused before the lease is touched.
        let events = store.events(id).await?;
        runner.check(id, &record.context, &events)?;
        claiming.give_back_stale().await?;
        let Some(lease) = store.claim(id, &self.inner.owner, self.lease_ttl).await? else {
            return Ok(None);
        };
        claiming.lease = Some(lease.clone());
        // Another owner may have carried it on between the listing and the
        // claim: recovery is for unfinished executions, a resume for stuck
        // ones (and a requested one only while the request is pending).
        let still = move |record: &ExecutionRecord, events: &[Event]| match mark {
            None => !record.status.is_finished(),
            Some(_) => {
                record.status == ExecutionStatus::Stuck && (!requested || resume_requested(events))
            }
        };
        self.launch_claimed(runner, id, lease, None, mark, still, claiming)
            .await
    }

    /// The registered definition an execution was started with.
    pub(super) fn runner_for(
        &self,
        record: &ExecutionRecord,
    ) -> Result<Arc<dyn Runner>, EngineError> {
        let id = &record.id;
        let registry = self.registry();
        match registry.by_fingerprint.get(&record.fingerprint) {
            Some(runner) => Ok(Arc::clone(runner)),
            None if !registry.by_name.contains_key(&record.saga)
                && !registry
                    .by_fingerprint
                    .values()
                    .any(|r| r.name() == record.saga) =>
            {
                Err(EngineError::UnknownSaga {
                    name: record.saga.clone(),
                    registered: sorted(registry.by_name.keys()),
                })
            }
            None => Err(EngineError::UnknownDefinition {
                execution_id: id.clone(),
                saga: record.saga.clone(),
                fingerprint: record.fingerprint.clone(),
                registered: versions(&registry, &record.saga),
            }),
        }
    }

    /// Runs an execution whose lease this engine holds, from its log (read
    /// again under the lease: it may have grown since it was listed).
    /// `read`: the record and log as the claim read them under this lease
    /// (a worker's claim that returned the log), not read again then.
    /// `mark` is an event to log first (an operator's resume). `None` if
    /// `still` finds, under the lease, that the run no longer applies.
    /// Gives the lease up if the run does not start.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn launch_claimed(
        &self,
        runner: Arc<dyn Runner>,
        id: &ExecutionId,
        lease: Lease,
        read: Option<(ExecutionRecord, Vec<Event>)>,
        mark: Option<EventKind>,
        still: impl FnOnce(&ExecutionRecord, &[Event]) -> bool,
        mut claiming: Claiming,
    ) -> Result<Option<watch::Receiver<Option<Done>>>, EngineError> {
        let store = &self.inner.store;
        let started = async {
            let (record, mut events) = match read {
                Some(read) => read,
                None => {
                    let events = store.events(id).await?;
                    (self.record(id).await?, events)
                }
            };
            if !still(&record, &events) {
                return Ok(None);
            }
            if let Some(kind) = mark {
                let event = Event::new(record.last_seq + 1, kind);
                let phase = fold(id, runner.steps(), &events)?.phase;
                let status = match phase {
                    ResumePhase::Forward => ExecutionStatus::Running,
                    ResumePhase::Rollback { .. } => ExecutionStatus::Compensating,
                };
                store
                    .append(id, &lease, vec![event.clone()], status)
                    .await?;
                events.push(event);
            }
            claiming.cuts = claiming.store_cuts(&events, runner.steps(), &lease);
            let loops = crash_loops(&events, runner.steps(), self.crash_limit, &claiming.cuts);
            if !loops.is_empty() {
                let report = self
                    .end_crash_loop(&*runner, &record, &lease, &events, &loops)
                    .await?;
                // The final write released the lease; the run is over.
                claiming.lease = None;
                drop(claiming);
                return Ok(Some(watch::channel(Some(Ok(report))).1));
            }
            let cancel = CancellationToken::new();
            if record.cancel_requested {
                cancel.cancel();
            }
            let context_len = events
                .iter()
                .rev()
                .find_map(|e| e.context.as_ref())
                .map_or(record.context.len(), String::len);
            let job = Job {
                id: id.clone(),
                initial_context: record.context.clone(),
                context_len,
                events,
                fresh: None,
                lease: lease.clone(),
                cancel,
                after_stuck: mark == Some(EventKind::Resumed),
            };
            self.launch(runner, job, claiming).map(Some)
        }
        .await;
        if !matches!(started, Ok(Some(_))) {
            let _ = store.release(id, &lease).await;
        }
        started
    }

    /// Ends an execution whose take-over found a crash loop: each looping
    /// attempt fails for good, its outcome unknown, with a message naming
    /// its step, and the execution ends stuck, for an operator (who can
    /// resume it once the cause is fixed). Returns its report.
    async fn end_crash_loop(
        &self,
        runner: &dyn Runner,
        record: &ExecutionRecord,
        lease: &Lease,
        events: &[Event],
        loops: &[CrashLoop],
    ) -> Result<SagaReport, EngineError> {
        let id = &record.id;
        let mut seq = events.last().map_or(record.last_seq, |e| e.seq);
        let mut written = Vec::with_capacity(loops.len() + 1);
        for looping in loops {
            seq += 1;
            let step = runner.step_name(looping.step);
            let message = looping.message(&step);
            log::error!(target: "saga", saga:% = crate::escape::Escaped(runner.name()), execution:% = crate::escape::Escaped(id.as_str()), step:% = crate::escape::Escaped(&step), error:% = crate::escape::Escaped(&message); "cut off too often (a crash loop, or shutdowns whose grace ended mid-step): the execution ends stuck");
            written.push(looping.failure(seq, message));
        }
        written.push(Event::new(seq + 1, EventKind::Finished));
        self.inner
            .store
            .append(id, lease, written, ExecutionStatus::Stuck)
            .await?;
        runner.tell_ended_unrun(id, ExecutionStatus::Stuck);
        let record = self.record(id).await?;
        self.rebuilt_report(&record).await
    }

    /// Runs an execution a worker claimed (see
    /// [`SagaStore::claim_next_with_log`](crate::store::SagaStore::claim_next_with_log)),
    /// from the record and log its claim read under the new lease if it
    /// read the log, else from both read again; returns where its end will
    /// be told (`None` if it finished meanwhile). Gives the lease up if
    /// the run does not start (its definition is not registered, its log
    /// does not decode).
    pub(crate) async fn run_claimed(
        &self,
        claimed: ClaimedWithLog,
    ) -> Result<Option<watch::Receiver<Option<Done>>>, EngineError> {
        let ClaimedWithLog {
            claimed: Claimed { record, lease },
            events,
        } = claimed;
        let Some(mut claiming) = self.enter(&record.id) else {
            // Claimed or run by another entry point of this engine: the
            // store's claim makes that one fail or this one stale.
            let _ = self.inner.store.release(&record.id, &lease).await;
            return Ok(None);
        };
        let runner = match self.runner_for(&record) {
            Ok(runner) => runner,
            Err(error) => {
                let _ = self.inner.store.release(&record.id, &lease).await;
                return Err(error);
            }
        };
        claiming.by_worker = true;
        let id = record.id.clone();
        // A log that does not end where the record does is read again
        // (a store's mistake must not start a run from half a log).
        let read = events
            .filter(|events| events.last().map_or(0, |e| e.seq) == record.last_seq)
            .map(|events| (record, events));
        // `None` if another owner finished it since the claim's listing.
        self.launch_claimed(
            runner,
            &id,
            lease,
            read,
            None,
            |r, _| !r.status.is_finished(),
            claiming,
        )
        .await
    }

    /// The fingerprints of every registered definition.
    pub(crate) fn fingerprints(&self) -> Vec<String> {
        sorted(self.registry().by_fingerprint.keys())
    }

    /// The fingerprints of `name`'s registered definitions, sorted, each
    /// with the version it declared, if any (`<fingerprint> (version 2)`).
    pub(crate) fn version_labels_of(&self, name: &str) -> Vec<String> {
        let registry = self.registry();
        let mut labels: Vec<String> = registry
            .by_fingerprint
            .values()
            .filter(|r| r.name() == name)
            .map(|r| {
                let version = r.shape().version.as_deref();
                format!("{}{}", r.fingerprint(), declared(version))
            })
            .collect();
        labels.sort();
        labels
    }

    /// The executions this engine runs now.
    pub(crate) fn running(&self) -> Vec<ExecutionId> {
        self.live()
            .iter()
            .filter(|(_, live)| live.active())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The runs of this engine going on that no worker launched (begun by
    /// `start`, `recover` or `resume` in this process), each with where
    /// its end will be told.
    pub(crate) fn runs_not_by_worker(&self) -> Vec<(ExecutionId, watch::Receiver<Option<Done>>)> {
        self.live()
            .iter()
            .filter(|(_, live)| live.active())
            .filter_map(|(id, live)| live.run.as_ref().map(|run| (id, run)))
            .filter(|(_, run)| !run.by_worker)
            .map(|(id, run)| (id.clone(), run.done.clone()))
            .collect()
    }

    /// The lease time to live.
    pub(crate) fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    /// Stops runs `ids` of this engine where they are (as a crash would)
    /// and gives their leases up, so another owner carries them on from
    /// their logs at once. All are told to stop before any is waited for:
    /// a run waited for in turn would go on starting steps meanwhile.
    /// Says how many were stopped, and how many ended by themselves first
    /// or were stopped by their store before the abort took (ids this
    /// engine does not run count in none).
    pub(crate) async fn abort_runs(&self, ids: impl IntoIterator<Item = ExecutionId>) -> Aborted {
        let runs: Vec<(ExecutionId, LiveRun)> = {
            let mut live = self.live();
            ids.into_iter()
                .filter_map(|id| {
                    match live.get(&id) {
                        Some(Live { run: Some(_), .. }) => {}
                        _ => return None,
                    }
                    let run = live.remove(&id)?.run?;
                    run.task.abort();
                    Some((id, run))
                })
                .collect()
        };
        let mut aborted = Aborted::default();
        for (id, run) in runs {
            // An abort takes effect at the run's next await, and a sync
            // step does not await: the lease goes back only once the task
            // is gone (its sender dropped), or another owner, or this
            // engine's recover, would start the step again beside it.
            let mut done = run.done.clone();
            let _ = done.wait_for(|_| false).await;
            // Its end told before the abort took: the task gave the lease
            // back itself.
            let told = match &*done.borrow() {
                Some(Ok(_)) => Some(&mut aborted.finished),
                Some(Err(_)) => Some(&mut aborted.interrupted),
                None => None,
            };
            if let Some(count) = told {
                *count += 1;
                continue;
            }
            // The abort may have taken after the run's last write (while
            // it waited for a renewal under way to end): then the
            // execution has ended, and its lease went with its end.
            let ended = matches!(
                self.inner.store.get(&id).await,
                Ok(Some(record)) if record.status.is_finished()
            );
            if ended {
                aborted.finished += 1;
                continue;
            }
            aborted.stopped += 1;
            log::warn!(target: "saga", owner:% = crate::escape::Escaped(&self.inner.owner), saga:% = crate::escape::Escaped(run.saga.as_str()), execution:% = crate::escape::Escaped(id.as_str()); "run stopped unfinished: its lease is given back and a worker carries it on from its log (a step it cut off counts toward the crash limit)");
            if let Err(error) = self.inner.store.release(&id, &run.lease).await {
                log::warn!(target: "saga", saga:% = crate::escape::Escaped(run.saga.as_str()), execution:% = crate::escape::Escaped(id.as_str()), error:% = crate::escape::Escaped(&error.to_string()); "releasing an aborted run's lease failed");
            }
        }
        aborted
    }

    /// Prepares a run (decoding its log) and spawns it, in the place of
    /// its claiming entry; returns where its end will be told.
    pub(super) fn launch(
        &self,
        runner: Arc<dyn Runner>,
        job: Job,
        mut claiming: Claiming,
    ) -> Result<watch::Receiver<Option<Done>>, EngineError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| EngineError::NoRuntime)?;
        let (body, listing) = self.prepare_run(runner, job, &claiming)?;
        // Spawned under the lock, so the task's own removal (which takes
        // the lock) comes after its entry exists.
        let mut live = self.live();
        let task = handle.spawn(body).abort_handle();
        let done = listing.list(&mut live, task);
        drop(live);
        claiming.launched = true;
        Ok(done)
    }

    /// [`launch`](Self::launch) in the calling task, whose abort handle is
    /// `task`: lists the run in the place of its claiming entry and
    /// returns it, for the caller to await (it tells its end as a spawned
    /// run does). A fresh start runs this way, in the task that recorded
    /// the execution: one task per start, not two.
    pub(super) fn launch_here(
        &self,
        runner: Arc<dyn Runner>,
        job: Job,
        mut claiming: Claiming,
        task: tokio::task::AbortHandle,
    ) -> Result<impl Future<Output = ()> + Send + 'static + use<>, EngineError> {
        let (body, listing) = self.prepare_run(runner, job, &claiming)?;
        listing.list(&mut self.live(), task);
        claiming.launched = true;
        Ok(body)
    }

    /// Decodes a run's log and makes its task's body (the run, then its
    /// end told and its entry removed) and the entry that lists it.
    fn prepare_run(
        &self,
        runner: Arc<dyn Runner>,
        job: Job,
        claiming: &Claiming,
    ) -> Result<(impl Future<Output = ()> + Send + 'static + use<>, Listing), EngineError> {
        let id = job.id.clone();
        let lease = job.lease.clone();
        let cancel = job.cancel.clone();
        let saga = runner.saga_name();
        let from_seq = job.events.last().map_or(0, |e| e.seq);
        let run = runner.prepare(Arc::clone(&self.inner.store), job)?;
        let (tx, rx) = watch::channel(None);
        let inner = Arc::clone(&self.inner);
        let task_lease = lease.clone();
        let task_id = id.clone();
        let slot = claiming.slot;
        #[cfg(debug_assertions)]
        let alive = TaskAlive::new(&self.inner, &id);
        let body = async move {
            let done = run.await;
            // The run's code has returned: another run may start once the
            // end is told below.
            #[cfg(debug_assertions)]
            drop(alive);
            // The final write released the lease already.
            let finished = matches!(&done, Ok(report) if report.status.is_finished());
            if !finished {
                let _ = inner.store.release(&task_id, &task_lease).await;
            }
            // A run stopped by its store stays listed with its error, for
            // `wait`, until a recovery (or a worker) runs it again.
            let interrupted = done.is_err();
            let completed =
                matches!(&done, Ok(report) if report.status == ExecutionStatus::Completed);
            let _ = tx.send(Some(done));
            if completed {
                // Kept before its entry goes: a `wait` finds one or the other.
                inner.ended().keep(task_id.clone(), tx.subscribe());
            }
            if !interrupted {
                let mut live = inner.live.lock().unwrap_or_else(PoisonError::into_inner);
                if let Entry::Occupied(entry) = live.entry(task_id) {
                    if entry.get().slot == slot {
                        entry.remove();
                    }
                }
            }
        };
        let listing = Listing {
            id,
            slot,
            cancel,
            done: rx,
            lease,
            saga,
            cuts: claiming.cuts.clone(),
            from_seq,
            by_worker: claiming.by_worker,
        };
        Ok((body, listing))
    }
}

/// A prepared run's entry in the live set, listed once its task is known.
struct Listing {
    id: ExecutionId,
    slot: u64,
    cancel: CancellationToken,
    done: watch::Receiver<Option<Done>>,
    lease: Lease,
    saga: Name,
    cuts: Vec<Cut>,
    from_seq: u64,
    by_worker: bool,
}

impl Listing {
    /// Lists the run, run by `task`, in the place of its claiming entry;
    /// returns where its end will be told.
    fn list(
        self,
        live: &mut HashMap<ExecutionId, Live>,
        task: tokio::task::AbortHandle,
    ) -> watch::Receiver<Option<Done>> {
        let Listing {
            id,
            slot,
            cancel,
            done,
            lease,
            saga,
            cuts,
            from_seq,
            by_worker,
        } = self;
        // One live run per execution: the entry is still the claiming one
        // this run was claimed under.
        debug_assert!(
            live.get(&id)
                .is_some_and(|l| l.slot == slot && l.run.is_none()),
            "a second live run of execution {id}"
        );
        live.insert(
            id,
            Live {
                slot,
                run: Some(LiveRun {
                    cancel,
                    done: done.clone(),
                    task,
                    lease,
                    saga,
                    cuts,
                    from_seq,
                    by_worker,
                }),
            },
        );
        done
    }
}

/// The fingerprints of the versions of saga `name` in `registry`, sorted.
fn versions(registry: &Registry, name: &str) -> Vec<String> {
    let mut versions: Vec<String> = registry
        .by_fingerprint
        .values()
        .filter(|r| r.name() == name)
        .map(|r| r.fingerprint().to_owned())
        .collect();
    versions.sort();
    versions
}

/// ` (version 2)` after a fingerprint whose definition declared one;
/// nothing otherwise.
pub(crate) fn declared(version: Option<&str>) -> String {
    version.map_or_else(String::new, |v| {
        format!(" (version {})", crate::escape::Escaped(v))
    })
}

pub(super) fn sorted<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut names: Vec<String> = names.cloned().collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    /// Lists a run of `id` that ended with `done`, as its task leaves it
    /// before removing it.
    fn list_ended(engine: &SagaEngine, id: &ExecutionId, done: Done) {
        let task = tokio::spawn(async {});
        let run = LiveRun {
            cancel: CancellationToken::new(),
            done: watch::channel(Some(done)).1,
            task: task.abort_handle(),
            lease: Lease {
                owner: "here".into(),
                token: 1,
                ttl: Duration::from_secs(10),
            },
            saga: Name::from("test"),
            cuts: Vec::new(),
            from_seq: 0,
            by_worker: false,
        };
        engine.live().insert(
            id.clone(),
            Live {
                slot: 99,
                run: Some(run),
            },
        );
    }

    /// `start_with_id` of an execution whose run just ended replaces the
    /// run's entry before the run's task removes it (the task then skips
    /// it, not its own). Its claim given up, the entry must not come back:
    /// nothing would remove it again.
    #[tokio::test]
    async fn a_claim_given_up_puts_back_a_stopped_run_but_not_an_ended_one() {
        let engine = SagaEngine::new(MemoryStore::new());
        let (ended, stopped) = (ExecutionId::new("ended"), ExecutionId::new("stopped"));
        let report = SagaReport {
            saga: "s".into(),
            execution_id: ended.clone(),
            status: ExecutionStatus::Completed,
            steps: Vec::new(),
            cancel_ignored: false,
            duration: Duration::ZERO,
        };
        list_ended(&engine, &ended, Ok(report));
        let stop = Stopped {
            lease_lost: false,
            outage: false,
            detail: "disk full".to_owned(),
        };
        list_ended(&engine, &stopped, Err(stop));
        drop(
            engine
                .enter(&ended)
                .expect("an ended run's entry is replaced"),
        );
        drop(
            engine
                .enter(&stopped)
                .expect("a stopped run's entry is replaced"),
        );
        let live = engine.live();
        assert!(
            live.get(&ended).is_none(),
            "the ended run's entry came back"
        );
        assert!(live.get(&stopped).is_some_and(Live::stopped));
    }
}
