//! [`Worker`]: carries executions on, the one call a service makes at
//! startup, on every store; one of N processes on a shared store.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::engine::{Done, EngineError, SagaEngine};
use crate::escape::Escaped;
use crate::id::ExecutionId;
use crate::store::{ClaimRequest, StoreError};

mod census;

/// Polls between two censuses of executions no process runs.
const CENSUS_POLLS: u32 = 6;

/// A claim that takes this long is logged (a warning, "store slow"): a
/// store locked or overloaded is otherwise silent until it fails.
const SLOW_CLAIM: Duration = Duration::from_secs(1);

/// Carries executions on: the one call a service makes at startup, on
/// every store, after registering its sagas. No user code needs a loop of
/// [`recover`](SagaEngine::recover): the worker takes over what a crashed
/// or stopped process left (once its lease expired, or at once if it was
/// released), runs what was [submitted](SagaEngine::submit), carries out
/// an operator's [resume requests](SagaEngine::request_resume) (the `saga`
/// CLI's `resume`) and the [cancellations](SagaEngine::cancel) of
/// executions no process runs, [purges](Self::with_purge_interval) by the
/// engine's retention, and ends a [crash loop](Self::with_crash_limit).
/// On a store shared by many processes, any process may
/// [`start`](SagaEngine::start) an execution, and the workers run the
/// ones their owner left.
///
/// A worker claims unfinished executions whose definition it has
/// registered (by fingerprint: during a rolling upgrade, an execution
/// started with a definition this worker lacks is left to the workers that
/// have it), at most [`concurrency`](Self::with_concurrency) at a time.
/// Every six polls it looks for executions of definitions it lacks that
/// no process has touched since its last look (free, their log unchanged,
/// and no execution of that definition held or moved on meanwhile: a
/// process busy with that version is not a dropped version), and warns
/// once per definition (again every 10 minutes while they wait): a
/// version dropped in a deploy leaves them to no one, and nothing else
/// says so (they are not stuck, and `wait` on them does not end). It
/// warns the same way of operators' resume requests of definitions it
/// lacks that nobody carried out since its last look (spared the same
/// way while a process runs that version), and of executions
/// it refused (their log or context does not fit this build) that still
/// wait with no owner, or whose resume request still waits.
/// Each claim gives it a lease, which the engine renews while the run goes
/// on. When a worker dies or stalls, its leases expire and another worker
/// takes the executions over, carrying each on from its log; a step that
/// started and never recorded its end runs again with the same
/// [`idempotency_key`](crate::StepInfo::idempotency_key).
///
/// Fencing guards the log, not the outside world. A worker that stalled
/// past its lease (a long GC-like pause, a `SIGSTOP`, a partition) and
/// wakes up can write nothing more to the log (its writes are refused with
/// [`StoreError::LeaseLost`](crate::store::StoreError::LeaseLost)), but a
/// step it was inside may still call a remote service once more. Steps
/// must therefore pass their idempotency key to every service they call,
/// and the services must apply a key at most once.
///
/// New work is noticed at once where the store signals it
/// ([`work_signal`](crate::store::SagaStore::work_signal): every store of
/// this crate signals the creations and releases of its own process, and
/// PostgreSQL those of every process, by `LISTEN`/`NOTIFY`); expired
/// leases, other processes' work on SQLite, and resume requests are found
/// by a slow poll ([`with_poll_interval`](Self::with_poll_interval)). A
/// claim reads no context but those of the executions it takes; a worker
/// never polls in a busy loop. When the store is unreachable (the database
/// restarts), the worker logs it and tries again with exponential backoff;
/// the runs that could not write their log stop before their next step,
/// and are carried on from the log once the store is back. Refused
/// credentials ([`StoreError::Unauthorized`]) are no outage: the worker
/// logs an error and stops, as after [`shutdown`](WorkerHandle::shutdown)
/// with no grace period (credentials live in the process's
/// configuration: fixing them means a restart anyway). A store that says
/// it is misconfigured ([`StoreError::Misconfigured`]: a database that
/// does not exist, a privilege its user lacks) is no outage either, but
/// is fixed in the database (a `GRANT`, a `CREATE DATABASE`) with the
/// service left running: the worker logs an error naming what is missing
/// at every attempt (`worker cannot claim work: the store is
/// misconfigured; retrying`), tries again with the same backoff, and
/// carries on by itself once the fix is made. Alert on the worker's
/// error records.
///
/// ```no_run
/// use std::time::Duration;
/// use saga_core::{SagaEngine, Worker};
/// use saga_core::store::SqliteStore;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let engine = SagaEngine::new(SqliteStore::open("sagas.db")?);
/// // engine.register(saga).await?; for each saga this service runs
/// let worker = Worker::new(engine.clone()).spawn()?;
/// // ... serve requests that call engine.start(..), until asked to stop:
/// let stats = worker.shutdown(Duration::from_secs(30)).await;
/// println!("finished {} executions", stats.finished);
/// # Ok(()) }
/// ```
///
/// See [`WorkerHandle::shutdown`] for the shutdown of a service beside
/// an HTTP server's.
#[derive(Debug, Clone)]
pub struct Worker {
    engine: SagaEngine,
    concurrency: usize,
    poll: Duration,
    max_backoff: Duration,
    purge_every: Duration,
}

/// What a worker did, so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Executions it claimed (new ones and take-overs).
    pub claimed: u64,
    /// Runs that ended (completed, compensated, cancelled or stuck): its
    /// own, and at a [`shutdown`](WorkerHandle::shutdown) those its
    /// engine began otherwise that ended within the grace period.
    pub finished: u64,
    /// Runs that stopped because the log could not be written (a lost
    /// lease, an unreachable store), counted as `finished` is; whoever
    /// holds the lease next carries them on.
    pub interrupted: u64,
    /// Runs it stopped at shutdown, releasing their leases: its own, and
    /// at a [`shutdown`](WorkerHandle::shutdown) those its engine began
    /// otherwise (`start`, `recover`, `resume`) that were still going on
    /// once the grace period ended.
    pub released: u64,
    /// Executions it refused to run (a log it cannot decode); left as they
    /// were, for an operator.
    pub refused: u64,
    /// Stuck executions it resumed at an operator's request
    /// ([`request_resume`](SagaEngine::request_resume), the `saga` CLI);
    /// also counted in `claimed`.
    pub resumed: u64,
    /// Finished executions its purges deleted.
    pub purged: u64,
}

#[derive(Default)]
struct Counters {
    claimed: AtomicU64,
    finished: AtomicU64,
    interrupted: AtomicU64,
    released: AtomicU64,
    refused: AtomicU64,
    resumed: AtomicU64,
    purged: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> WorkerStats {
        WorkerStats {
            claimed: self.claimed.load(Ordering::Relaxed),
            finished: self.finished.load(Ordering::Relaxed),
            interrupted: self.interrupted.load(Ordering::Relaxed),
            released: self.released.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            resumed: self.resumed.load(Ordering::Relaxed),
            purged: self.purged.load(Ordering::Relaxed),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A running worker; [`shutdown`](Self::shutdown) stops it. Dropping the
/// handle stops it too, releasing its own runs' leases as soon as each
/// run has stopped (the engine's other runs go on).
///
/// Call `shutdown` before `main` returns. A runtime dropped with runs in
/// flight stops its tasks, and with them the renewal of their leases, but
/// a sync step already under way runs on to its end: its lease expires
/// meanwhile (after the engine's ttl), and another process may take the
/// execution over and start the same step beside it.
#[derive(Debug)]
#[must_use = "dropping the handle stops the worker: keep it (`let worker = ...`) and call `shutdown` before `main` returns"]
pub struct WorkerHandle {
    stop: watch::Sender<Option<Stop>>,
    task: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

/// How a worker is asked to stop.
#[derive(Debug, Clone, Copy)]
struct Stop {
    /// How long its runs may go on.
    grace: Duration,
    /// Whether the engine's other runs (begun by `start`, `recover`,
    /// `resume`) are waited for and stopped too: at a shutdown, not when
    /// the handle is dropped.
    all: bool,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

impl Worker {
    /// A worker running `engine`'s registered sagas: 16 executions at a
    /// time, polling for expired leases and resume requests every 5 s,
    /// purging by the engine's retention every hour, and ending a run
    /// stuck once one step attempt was cut off 3 times (its process
    /// crashed, or lost its lease, each time before the attempt ended).
    pub fn new(engine: SagaEngine) -> Self {
        Worker {
            engine,
            concurrency: 16,
            poll: Duration::from_secs(5),
            max_backoff: Duration::from_secs(5),
            purge_every: Duration::from_secs(3600),
        }
    }

    /// How often it deletes the executions that finished longer ago than
    /// the engine's [retention](SagaEngine::with_retention) (default every
    /// hour, the first time at its start; at least 10 ms), as
    /// [`purge`](SagaEngine::purge) does. Stuck executions are never
    /// purged. To keep everything, give the engine a retention of
    /// [`Duration::MAX`].
    #[must_use]
    pub fn with_purge_interval(mut self, every: Duration) -> Self {
        self.purge_every = every.max(Duration::from_millis(10));
        self
    }

    /// How many times one attempt of a step (or of a compensation) may be
    /// started without an end before the take-over that finds it ends the
    /// execution stuck instead of running it again (default 3; at least
    /// 1). A step that takes its process down (an abort, an out-of-memory
    /// kill, a segfault in a native library) would otherwise be run again
    /// at every restart, forever; stuck, the report says
    /// ``step `x` was cut off 3 times``, and an operator resumes
    /// (or abandons) it once the cause is known.
    ///
    /// Every start cut off counts, whatever cut it off: a crash, a stall
    /// past the lease, or a shutdown whose grace period ended before the
    /// step did (give [`shutdown`](WorkerHandle::shutdown) a grace period
    /// longer than your steps take).
    #[must_use]
    pub fn with_crash_limit(mut self, starts: u32) -> Self {
        self.engine.set_crash_limit(starts);
        self
    }

    /// The most executions it runs at a time (at least 1; default 16).
    ///
    /// A run waiting out a retry's backoff still holds its place: with
    /// every place held by runs backing off (a provider down, each
    /// retrying every few seconds), executions it could take over wait
    /// for a place too. Set it above the number of executions you expect
    /// to wait on one outage at once. Runs begun by
    /// [`start`](crate::SagaEngine::start) are not counted.
    #[must_use]
    pub fn with_concurrency(mut self, executions: usize) -> Self {
        self.concurrency = executions.max(1);
        self
    }

    /// How often it looks for executions whose lease expired (default
    /// 5 s; at least 10 ms). New work is noticed sooner where the store
    /// signals it.
    #[must_use]
    pub fn with_poll_interval(mut self, every: Duration) -> Self {
        self.poll = every.max(Duration::from_millis(10));
        self
    }

    /// The longest wait between attempts while the store is unreachable
    /// (default 5 s; the waits double from 100 ms).
    #[must_use]
    pub fn with_max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max.max(Duration::from_millis(100));
        self
    }

    /// Starts the worker on the current tokio runtime.
    ///
    /// # Errors
    /// [`EngineError::NoRuntime`] outside a tokio runtime.
    pub fn spawn(self) -> Result<WorkerHandle, EngineError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| EngineError::NoRuntime)?;
        let (stop, stopped) = watch::channel(None);
        let counters = Arc::new(Counters::default());
        let task = handle.spawn(self.run(stopped, Arc::clone(&counters)));
        Ok(WorkerHandle {
            stop,
            task: Some(task),
            counters,
        })
    }

    async fn run(self, mut stop: watch::Receiver<Option<Stop>>, counters: Arc<Counters>) {
        let engine = &self.engine;
        let store = Arc::clone(engine.store());
        let mut signal = store.work_signal();
        let mut running: JoinSet<(ExecutionId, bool)> = JoinSet::new();
        let mut mine: HashSet<ExecutionId> = HashSet::new();
        let mut refused: HashSet<ExecutionId> = HashSet::new();
        let mut backoff: Option<Duration> = None;
        // When a claim that failed is tried again: woken before (a run's
        // end, a work signal), the worker claims nothing.
        let mut retry_at = Instant::now();
        // Why the last claim failed: the store is misconfigured, or
        // unreachable (else it failed another way: a full disk, say).
        let (mut misconfigured, mut unreachable) = (false, false);
        // Resume requests at each poll, purges on their own schedule; both
        // the first time at once.
        let mut next_sweep = Instant::now();
        let mut next_purge = Instant::now();
        let mut purging: Option<JoinHandle<()>> = None;
        let mut census = census::Census::default();
        let census_every = self.poll.checked_mul(CENSUS_POLLS).unwrap_or(Duration::MAX);
        let mut next_census = later(Instant::now(), census_every);
        log::info!(target: "saga", owner:% = Escaped(engine.owner()), concurrency = self.concurrency; "worker started");
        while stop.borrow().is_none() {
            let now = Instant::now();
            if now >= next_purge {
                next_purge = later(now, self.purge_every);
                if purging.as_ref().is_none_or(JoinHandle::is_finished) {
                    purging = Some(tokio::spawn(purge(engine.clone(), Arc::clone(&counters))));
                }
            }
            if now >= next_sweep && backoff.is_none() {
                next_sweep = later(now, self.poll);
                let free = self.concurrency.saturating_sub(running.len());
                if free > 0 {
                    self.sweep(free, &counters, &mut running, &mut mine, &mut refused)
                        .await;
                }
            }
            if now >= next_census && backoff.is_none() {
                next_census = later(now, census_every);
                census.take(engine, &refused).await;
            }
            let free = self.concurrency.saturating_sub(running.len());
            let mut more = false;
            if free > 0 && (backoff.is_none() || now >= retry_at) {
                // Runs of this engine dropped with an earlier runtime hold
                // leases no claim would take until they expire.
                engine.release_dropped_runs().await;
                let mut exclude = engine.running();
                exclude.extend(refused.iter().cloned());
                let request = ClaimRequest {
                    fingerprints: engine.fingerprints(),
                    owner: engine.owner().to_owned(),
                    ttl: engine.lease_ttl(),
                    limit: free,
                    exclude,
                };
                let asked = Instant::now();
                let claimed = store.claim_next_with_log(request).await;
                let took = asked.elapsed();
                // A failed claim says so itself.
                if took >= SLOW_CLAIM && claimed.is_ok() {
                    log::warn!(target: "saga", owner:% = Escaped(engine.owner()), store:% = Escaped(&store.describe()), took:? = took; "store slow: claiming work took long");
                }
                match claimed {
                    Ok(claims) => {
                        if backoff.take().is_some() {
                            let (owner, described) = (Escaped(engine.owner()), store.describe());
                            let described = Escaped(&described);
                            if misconfigured {
                                log::info!(target: "saga", owner:% = owner, store:% = described; "store configuration fixed; worker claims work again");
                            } else if unreachable {
                                log::info!(target: "saga", owner:% = owner, store:% = described; "store reachable again");
                            } else {
                                // Never unreachable: a full disk, say.
                                log::info!(target: "saga", owner:% = owner, store:% = described; "store works again; worker claims work again");
                            }
                        }
                        more = claims.len() == free;
                        for claimed in claims {
                            let id = claimed.claimed.record.id.clone();
                            let saga = claimed.claimed.record.saga.clone();
                            // Given back (run by another entry point of
                            // this engine, or ended meanwhile): no claim.
                            let outcome = engine.run_claimed(claimed).await;
                            if !matches!(outcome, Ok(None)) {
                                bump(&counters.claimed);
                            }
                            match outcome {
                                Ok(None) => {}
                                Ok(Some(done)) => track(&mut running, &mut mine, id, done),
                                Err(EngineError::Store(error)) => {
                                    bump(&counters.interrupted);
                                    log::log!(target: "saga", level(&error), execution:% = Escaped(id.as_str()), error:% = Escaped(&error.to_string()); "worker could not start a claimed execution");
                                }
                                Err(error) => {
                                    bump(&counters.refused);
                                    log::error!(target: "saga", owner:% = Escaped(engine.owner()), saga:% = Escaped(&saga), execution:% = Escaped(id.as_str()), error:% = Escaped(&error.to_string()); "worker refused an execution");
                                    refused.insert(id);
                                }
                            }
                        }
                    }
                    Err(error @ StoreError::Unauthorized { .. }) => {
                        // Not an outage: every retry would be refused too.
                        log::error!(target: "saga", owner:% = Escaped(engine.owner()), error:% = Escaped(&error.to_string()); "worker stops: the store refused its credentials");
                        break;
                    }
                    Err(error) => {
                        let wait = backoff.map_or(Duration::from_millis(100), |b| {
                            (b * 2).min(self.max_backoff)
                        });
                        misconfigured = matches!(error, StoreError::Misconfigured { .. });
                        unreachable = matches!(error, StoreError::Unavailable { .. });
                        if misconfigured {
                            // Not an outage either, but fixed in the
                            // database (a `GRANT`, a `CREATE DATABASE`),
                            // not in this process: an error at every
                            // attempt, and carrying on once it is fixed.
                            log::error!(target: "saga", owner:% = Escaped(engine.owner()), retry_in:? = wait, error:% = Escaped(&error.to_string()); "worker cannot claim work: the store is misconfigured; retrying");
                        } else {
                            log::warn!(target: "saga", owner:% = Escaped(engine.owner()), retry_in:? = wait, error:% = Escaped(&error.to_string()); "worker cannot claim work, retrying");
                        }
                        backoff = Some(wait);
                        retry_at = later(Instant::now(), wait);
                    }
                }
            }
            if more && backoff.is_none() {
                // A full batch: there may be more waiting; reap finished
                // runs first, without waiting.
                while let Some(Ok((id, ok))) = running.try_join_next() {
                    finish(&counters, &mut mine, &id, ok);
                }
                if running.len() < self.concurrency {
                    continue;
                }
            }
            let deadline = match backoff {
                Some(_) => retry_at,
                None => later(Instant::now(), self.poll),
            }
            .min(next_purge);
            tokio::select! {
                changed = stop.changed() => if changed.is_err() { break },
                Some(joined) = running.join_next(), if !running.is_empty() => {
                    if let Ok((id, ok)) = joined {
                        finish(&counters, &mut mine, &id, ok);
                    }
                }
                changed = async {
                    match signal.as_mut() {
                        Some(s) => s.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                } => {
                    if !changed {
                        // The store stopped signalling: polling remains.
                        signal = None;
                    }
                }
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
        if let Some(purging) = purging {
            purging.abort();
        }
        // Stop claiming; let the runs finish within the grace period, then
        // stop the rest and release their leases for another worker. At a
        // shutdown, the runs this engine began otherwise (`start`,
        // `recover`, `resume`) are the process's too: waited for, then
        // stopped, alike.
        let Stop { grace, all } = (*stop.borrow()).unwrap_or(Stop {
            grace: Duration::ZERO,
            all: false,
        });
        // `started`: the runs this engine began otherwise (a request's
        // `start`), which a shutdown waits for and stops alike.
        let started = if all {
            engine.runs_not_by_worker().len()
        } else {
            0
        };
        log::info!(target: "saga", owner:% = Escaped(engine.owner()), running = running.len(), started = started, grace:? = grace; "worker stopping");
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        // The others' ends, as `running`'s: whether each ended (or was
        // stopped by its store).
        let mut others: JoinSet<bool> = JoinSet::new();
        loop {
            if all && running.is_empty() && others.is_empty() {
                // Those begun since the last look (a request the server
                // was finishing) are waited for too.
                for (_, mut done) in engine.runs_not_by_worker() {
                    others.spawn(async move {
                        done.wait_for(Option::is_some)
                            .await
                            .is_ok_and(|done| matches!(*done, Some(Ok(_))))
                    });
                }
            }
            if running.is_empty() && others.is_empty() {
                break;
            }
            tokio::select! {
                Some(joined) = running.join_next(), if !running.is_empty() => {
                    if let Ok((id, ok)) = joined {
                        finish(&counters, &mut mine, &id, ok);
                    }
                }
                Some(joined) = others.join_next(), if !others.is_empty() => {
                    if let Ok(ok) = joined {
                        ended(&counters, ok);
                    }
                }
                () = &mut deadline => break,
            }
        }
        // Runs that ended as the grace did are counted as they ended.
        while let Some(joined) = running.try_join_next() {
            if let Ok((id, ok)) = joined {
                finish(&counters, &mut mine, &id, ok);
            }
        }
        while let Some(joined) = others.try_join_next() {
            if let Ok(ok) = joined {
                ended(&counters, ok);
            }
        }
        running.abort_all();
        others.abort_all();
        let mut ids: Vec<ExecutionId> = mine.drain().collect();
        if all {
            ids.extend(engine.runs_not_by_worker().into_iter().map(|(id, _)| id));
        }
        let aborted = engine.abort_runs(ids).await;
        counters
            .released
            .fetch_add(aborted.stopped, Ordering::Relaxed);
        counters
            .finished
            .fetch_add(aborted.finished, Ordering::Relaxed);
        counters
            .interrupted
            .fetch_add(aborted.interrupted, Ordering::Relaxed);
        log::info!(target: "saga", owner:% = Escaped(engine.owner()), stats:? = counters.snapshot(); "worker stopped");
    }
}

impl Worker {
    /// Carries out the pending resume requests of the definitions this
    /// worker has, at most `free` of them.
    async fn sweep(
        &self,
        free: usize,
        counters: &Counters,
        running: &mut JoinSet<(ExecutionId, bool)>,
        mine: &mut HashSet<ExecutionId>,
        refused: &mut HashSet<ExecutionId>,
    ) {
        let engine = &self.engine;
        let requests = match engine.store().resume_requests().await {
            Ok(requests) => requests,
            Err(error) => {
                log::log!(target: "saga", level(&error), owner:% = Escaped(engine.owner()), error:% = Escaped(&error.to_string()); "worker cannot read resume requests");
                return;
            }
        };
        let fingerprints = engine.fingerprints();
        let mine_to_run = requests
            .into_iter()
            .filter(|r| fingerprints.contains(&r.fingerprint) && !refused.contains(&r.id))
            .take(free)
            .collect::<Vec<_>>();
        for request in mine_to_run {
            let (id, saga) = (request.id, request.saga);
            match engine.carry_out_resume_request(&id).await {
                Ok(None) => {}
                Ok(Some(done)) => {
                    bump(&counters.claimed);
                    bump(&counters.resumed);
                    log::info!(target: "saga", saga:% = Escaped(&saga), execution:% = Escaped(id.as_str()); "worker resumes an execution at an operator's request");
                    track(running, mine, id, done);
                }
                Err(EngineError::Store(error)) => {
                    log::log!(target: "saga", level(&error), saga:% = Escaped(&saga), execution:% = Escaped(id.as_str()), error:% = Escaped(&error.to_string()); "worker could not resume a requested execution");
                }
                Err(error) => {
                    bump(&counters.refused);
                    log::error!(target: "saga", owner:% = Escaped(engine.owner()), saga:% = Escaped(&saga), execution:% = Escaped(id.as_str()), error:% = Escaped(&error.to_string()); "worker refused an execution");
                    refused.insert(id);
                }
            }
        }
    }
}

/// `after` from `now`; an interval too long for the clock (a poll or a
/// purge interval of `Duration::MAX`) means about never.
fn later(now: Instant, after: Duration) -> Instant {
    now.checked_add(after)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

/// Deletes what the engine's retention lets go.
async fn purge(engine: SagaEngine, counters: Arc<Counters>) {
    match engine.purge().await {
        Ok(0) => {}
        Ok(purged) => {
            counters.purged.fetch_add(purged, Ordering::Relaxed);
            log::info!(target: "saga", owner:% = Escaped(engine.owner()), purged = purged; "worker purged finished executions");
        }
        Err(error) => {
            let level = match &error {
                EngineError::Store(error) => level(error),
                _ => log::Level::Warn,
            };
            log::log!(target: "saga", level, owner:% = Escaped(engine.owner()), error:% = Escaped(&error.to_string()); "worker could not purge");
        }
    }
}

/// How a store's error is logged by the worker: an error when the store
/// says it is misconfigured (a database missing, a privilege lacking),
/// which only an operator can fix; a warning otherwise (an outage passes
/// by itself).
fn level(error: &StoreError) -> log::Level {
    if matches!(error, StoreError::Misconfigured { .. }) {
        log::Level::Error
    } else {
        log::Level::Warn
    }
}

/// Follows a run this worker started until its end.
fn track(
    running: &mut JoinSet<(ExecutionId, bool)>,
    mine: &mut HashSet<ExecutionId>,
    id: ExecutionId,
    mut done: watch::Receiver<Option<Done>>,
) {
    mine.insert(id.clone());
    running.spawn(async move {
        let ended = done
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|d| d.as_ref().map(Result::is_ok));
        (id, ended == Some(true))
    });
}

fn finish(counters: &Counters, mine: &mut HashSet<ExecutionId>, id: &ExecutionId, ok: bool) {
    mine.remove(id);
    ended(counters, ok);
}

/// Counts a run's end: `ok` if it ended, else its store stopped it.
fn ended(counters: &Counters, ok: bool) {
    if ok {
        bump(&counters.finished);
    } else {
        bump(&counters.interrupted);
    }
}

impl WorkerHandle {
    /// What the worker did so far.
    pub fn stats(&self) -> WorkerStats {
        self.counters.snapshot()
    }

    /// Whether the worker stopped by itself: when its store refuses its
    /// credentials (a password rotated away; logged at error, "worker
    /// stops: the store refused its credentials"), since every retry
    /// would be refused too, or when its task panicked (a bug). A service's health check should report
    /// unhealthy then, so that the process is restarted with working
    /// credentials: nothing carries its executions on meanwhile.
    pub fn has_stopped(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the worker gracefully: it claims nothing more, lets its runs
    /// finish for up to `grace`, then stops the others where they are and
    /// releases their leases, so another worker carries them on at once
    /// (a step cut off runs again there, with the same idempotency key,
    /// and counts towards the [crash limit](Worker::with_crash_limit)).
    /// Returns what it did.
    ///
    /// The runs it waits for, and then stops, are every run its engine (or
    /// a clone of it) has going on in this process: its own and those that
    /// [`start`](SagaEngine::start), [`recover`](SagaEngine::recover) and
    /// [`resume`](SagaEngine::resume) began, including any begun while it
    /// waits. Dropping the handle instead stops only the worker's own runs.
    ///
    /// It can return later than `grace`: a sync step cannot be cut off
    /// mid-call, so a run stopped during one is waited for until the call
    /// returns (its lease released then). Keep sync steps shorter than the
    /// time between the orchestrator's SIGTERM and its SIGKILL, less
    /// `grace`; async steps are cut off at once.
    ///
    /// In a service, stop the HTTP server first (it stops taking requests
    /// and finishes those in flight, which may start executions), then the
    /// worker. With axum, whose `serve(..).with_graceful_shutdown(signal)`
    /// takes any future as its signal, one watch channel stops both
    /// (`axum` and tokio's `signal` feature are the service's
    /// dependencies, not this crate's):
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use saga_core::{SagaEngine, Worker};
    /// use saga_core::store::SqliteStore;
    ///
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = SagaEngine::new(SqliteStore::open("sagas.db")?);
    /// // engine.register(saga).await?; for each saga this service runs
    /// let worker = Worker::new(engine.clone()).spawn()?;
    ///
    /// let (stop, stopping) = tokio::sync::watch::channel(false);
    /// // Sends `true` on SIGTERM or Ctrl-C, e.g. in a task:
    /// //   tokio::signal::ctrl_c().await?; stop.send(true)?;
    /// # stop.send(true)?;
    /// let mut until_stop = stopping.clone();
    /// let server_stop = async move {
    ///     let _ = until_stop.wait_for(|stop| *stop).await;
    /// };
    /// // axum::serve(listener, app.with_state(engine.clone()))
    /// //     .with_graceful_shutdown(server_stop)
    /// //     .await?;
    /// # server_stop.await;
    /// // The server has finished its requests; now the runs, for up to
    /// // 30 s (within the orchestrator's own grace period, before its
    /// // SIGKILL); what is left is released for the next process.
    /// let stats = worker.shutdown(Duration::from_secs(30)).await;
    /// println!("finished {}, released {}", stats.finished, stats.released);
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(mut self, grace: Duration) -> WorkerStats {
        let _ = self.stop.send(Some(Stop { grace, all: true }));
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.counters.snapshot()
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        // Without a grace period: the runs stop and their leases are
        // released by the worker's task.
        if self.task.is_some() {
            let _ = self.stop.send(Some(Stop {
                grace: Duration::ZERO,
                all: false,
            }));
        }
    }
}
