//! Stores: where durable executions keep their log.
//!
//! A [`SagaStore`] persists definitions (by fingerprint), executions, their
//! append-only event log and one lease per execution. It knows nothing of
//! the executor: the [`SagaEngine`](crate::SagaEngine) joins the two.
//!
//! - [`MemoryStore`]: in memory, for tests; nothing survives the process.
//! - [`SqliteStore`]: the embedded default, one SQLite file (feature
//!   `sqlite`, on by default).
//! - `PostgresStore`: one PostgreSQL database shared by many worker
//!   processes (feature `postgres`; see [`Worker`](crate::Worker)).
//!
//! Every method returns a boxed future, so a store backed by a network
//! database fits the same trait; the trait is object-safe
//! (`Arc<dyn SagaStore>`).
//!
//! # Ownership
//!
//! An execution is run by one owner at a time: [`create`](SagaStore::create)
//! and [`claim`](SagaStore::claim) hand out a [`Lease`] with a fencing
//! token, and every write of the log ([`append`](SagaStore::append),
//! [`renew`](SagaStore::renew), [`release`](SagaStore::release)) checks that
//! token in the same statement as the write. A claim bumps the token, so an
//! owner whose lease was taken over can never write again
//! ([`StoreError::LeaseLost`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::id::ExecutionId;
use crate::report::ExecutionStatus;
use crate::step::BoxFuture;

mod listing;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use crate::journal::{Ack, Event, EventKind, StoreError};
pub use listing::{BadCursor, ExecutionSummary, ListCursor, ListQuery};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresOptions, PostgresStore};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteOptions, SqliteStore, Synchronous};

/// What a store operation returns.
pub type StoreResult<T> = Result<T, StoreError>;

/// The right to write one execution's log, until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Who holds it (an engine's owner id).
    pub owner: Arc<str>,
    /// The fencing token: bumped by every claim, checked by every write.
    pub token: i64,
    /// How long each write or renewal extends the lease.
    pub ttl: Duration,
}

/// The parse of a stored [`ExecutionStatus`] label.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn status_from_label(label: &str) -> Option<ExecutionStatus> {
    ExecutionStatus::from_label(label)
}

/// Per step of a log with `steps` steps: the milliseconds its action and
/// its compensation took by the log's timestamps, each from its first
/// start to its last success or failure (`None` where the log has no such
/// pair: not run, or not ended), less the time the execution sat ended
/// (stuck) until an operator's resume ran it again. Wall clock: the time
/// includes any wait for a retry or a take-over, and a clock that went
/// back gives a negative span.
pub fn logged_durations(steps: usize, events: &[Event]) -> Vec<(Option<i64>, Option<i64>)> {
    let logged = LoggedSpans::of(steps, events);
    logged
        .spans
        .iter()
        .map(|[action, undo]| {
            let took = |&(a, b): &(Option<i64>, Option<i64>)| Some(logged.took(a?, b?));
            (took(action), took(undo))
        })
        .collect()
}

/// What [`logged_durations`] reads off a log: per step, its action's and
/// its compensation's first start and last end (ms), and the spans the
/// execution sat ended until an operator's resume ran it again.
pub(crate) struct LoggedSpans {
    pub(crate) spans: Vec<[(Option<i64>, Option<i64>); 2]>,
    rests: Vec<(i64, i64)>,
}

impl LoggedSpans {
    /// The spans of a log with `steps` steps.
    pub(crate) fn of(steps: usize, events: &[Event]) -> Self {
        let mut spans: Vec<[(Option<i64>, Option<i64>); 2]> = vec![[(None, None); 2]; steps];
        // From each `finished` to the `resumed` that ran the execution again.
        let mut rests: Vec<(i64, i64)> = Vec::new();
        let mut ended_at = None;
        for event in events {
            match event.kind {
                EventKind::Finished => ended_at = Some(event.at_ms),
                EventKind::Resumed => {
                    if let Some(ended) = ended_at.take() {
                        rests.push((ended, event.at_ms));
                    }
                }
                _ => {}
            }
            let Some(step) = event.step.map(|s| s as usize).filter(|&s| s < steps) else {
                continue;
            };
            let (which, start) = match event.kind {
                EventKind::StepStarted => (0, true),
                EventKind::StepSucceeded | EventKind::StepFailed => (0, false),
                EventKind::CompensationStarted => (1, true),
                EventKind::CompensationSucceeded | EventKind::CompensationFailed => (1, false),
                _ => continue,
            };
            let span = &mut spans[step][which];
            if start {
                span.0.get_or_insert(event.at_ms);
            } else {
                span.1 = Some(event.at_ms);
            }
        }
        LoggedSpans { spans, rests }
    }

    /// The milliseconds from `from` to `to`, less the rests within them.
    pub(crate) fn took(&self, from: i64, to: i64) -> i64 {
        let resting: i64 = self
            .rests
            .iter()
            .map(|&(a, b)| (b.min(to) - a.max(from)).max(0))
            .sum();
        to - from - resting
    }
}

/// A definition's shape, kept by fingerprint for recovery checks,
/// diagrams and tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionRecord {
    /// SHA-256 of the canonical description, hex.
    pub fingerprint: String,
    /// The saga's name.
    pub saga: String,
    /// The canonical description, JSON (name, steps, kinds, order).
    pub shape: String,
}

/// A new execution, as [`SagaStore::create`] records it.
#[derive(Debug, Clone)]
pub struct NewExecution {
    /// Its id.
    pub id: ExecutionId,
    /// The saga's name.
    pub saga: String,
    /// The definition's fingerprint.
    pub fingerprint: String,
    /// The initial context, JSON.
    pub context: String,
    /// The first events of its log (numbered from 1), committed with its
    /// creation: the engine writes its first step's start there, which
    /// saves a commit per execution.
    pub events: Vec<Event>,
}

/// An execution as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionRecord {
    /// Its id.
    pub id: ExecutionId,
    /// The saga's name.
    pub saga: String,
    /// The fingerprint of the definition it was started with.
    pub fingerprint: String,
    /// Its status.
    pub status: ExecutionStatus,
    /// The initial context, JSON.
    pub context: String,
    /// The sequence number of its last event (0: none yet).
    pub last_seq: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Last write, milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
    /// Who holds its lease, if anyone.
    pub owner: Option<String>,
    /// When that lease expires, milliseconds since the Unix epoch.
    pub lease_expires_at_ms: Option<i64>,
    /// Whether a cancellation was requested.
    pub cancel_requested: bool,
}

/// What [`SagaStore::create`] found.
#[derive(Debug, Clone)]
pub enum Created {
    /// The execution is new; the caller holds its lease.
    New(Lease),
    /// An execution with that id exists already (a retried start); nothing
    /// was written.
    Existing(ExecutionRecord),
}

/// What [`SagaStore::claim_next`] looks for.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// The definitions the claimer can run: only executions started with
    /// one of these fingerprints are claimed (a rolling upgrade leaves the
    /// others to workers that have them).
    pub fingerprints: Vec<String>,
    /// Who claims.
    pub owner: String,
    /// The lease's time to live.
    pub ttl: Duration,
    /// The most executions to claim.
    pub limit: usize,
    /// Executions not to claim (the claimer runs them already, or refused
    /// them).
    pub exclude: Vec<ExecutionId>,
}

impl ClaimRequest {
    /// The lease a claim of this request takes, with the execution's new
    /// fencing `token`.
    pub(crate) fn lease(&self, token: i64) -> Lease {
        Lease {
            owner: self.owner.as_str().into(),
            token,
            ttl: self.ttl,
        }
    }
}

/// An execution handed out by [`SagaStore::claim_next`], with its lease.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The execution, as it was when claimed.
    pub record: ExecutionRecord,
    /// The claimer's lease on it.
    pub lease: Lease,
}

/// An execution handed out by [`SagaStore::claim_next_with_log`]: the
/// claim, and the execution's log as the claim found it, if the store
/// read it with the claim.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClaimedWithLog {
    /// The execution and the claimer's lease on it.
    pub claimed: Claimed,
    /// The execution's whole log, in order, read under the new lease (in
    /// the claim's transaction, or after it) and ending at
    /// `claimed.record.last_seq`; `None` if the store did not read it (the
    /// engine reads the record and the log itself then).
    pub events: Option<Vec<Event>>,
}

impl ClaimedWithLog {
    /// A claim with its log (`None`: not read with the claim).
    pub fn new(claimed: Claimed, events: Option<Vec<Event>>) -> Self {
        ClaimedWithLog { claimed, events }
    }
}

/// Where durable executions keep their log. See the [module
/// documentation](self) for the ownership rules.
///
/// Implementations must make each call's writes durable (as far as the
/// store promises durability) before its future resolves: the engine runs
/// the next step only after the log says it may.
///
/// # Implementing a store
///
/// What the engine relies on, beyond each method's own lines:
///
/// - **Reads see every write whose call returned**, from any process:
///   [`get`](Self::get), [`events`](Self::events) and the listings never
///   answer from a replica that may lag (a take-over and
///   [`wait`](crate::SagaEngine::wait) decide from what they read).
/// - **Events are kept as given**, every field, except
///   [`at_ms`](Event::at_ms): the engine passes 0, and
///   [`create`](Self::create) and [`append`](Self::append) set it to the
///   store's wall clock at the write (milliseconds since the Unix epoch).
///   A run that takes an execution over reads the backoff still due from
///   a failure's `at_ms` and `detail`, and reports read durations from
///   `at_ms`: a store that drops either retries at once after a crash.
///   Store new fields of [`Event`] too as releases add them (additively,
///   as `detail` was in 0.2.0).
/// - **Fencing**: a write checks, in the same atomic step as the write,
///   that the execution's current token and owner are the [`Lease`]'s.
///   A lease past its expiry that no one has claimed still writes; a
///   claim bumps the token, after which the old holder's writes fail with
///   [`StoreError::LeaseLost`] and write nothing.
/// - [`claim`](Self::claim) works on finished executions too (an
///   operator's [`resume`](crate::SagaEngine::resume) and
///   [`abandon`](crate::SagaEngine::abandon) claim stuck ones).
/// - **Errors steer the engine**: [`StoreError::Unavailable`] means "try
///   again later", for anything transient (a timeout, a connection lost,
///   a service answering 503): workers back off and retry, and a
///   [`wait`](crate::SagaEngine::wait) waits through it. Any other error
///   (`Backend` for a failure that retrying will not cure) is given to the
///   caller: a `wait` returns it, and a run stops with it.
///   [`StoreError::NotFound`] for an unknown id where a method says so,
///   [`StoreError::BadRecord`] for a stored row that cannot be read, and
///   for an append whose `seq` does not continue the log.
/// - **Which provided methods to override**: their defaults are correct
///   but read more than they need. [`list_summaries`](Self::list_summaries)
///   reads every context through [`list`](Self::list), and
///   [`claim_next`](Self::claim_next) lists through it at every worker
///   poll; [`resume_requests`](Self::resume_requests) reads each stuck
///   execution's whole log at every poll; [`latest_context`](Self::latest_context)
///   and [`events_without_contexts`](Self::events_without_contexts) read
///   every context of a log. A store holding more than a few thousand
///   executions overrides at least the first three.
/// - [`work_signal`](Self::work_signal) is optional: without it, work
///   another process submits waits for a worker's poll (5 s by default).
///   So is [`change_signal`](Self::change_signal), but one a store gives
///   must change for every process's status changes: a
///   [`wait`](crate::SagaEngine::wait) on another process's run reads
///   the record when it changes, and otherwise only once a second.
///
/// `saga_core::testkit::contract::check` (feature `testkit`) checks a
/// store against these rules and each method's own, every check named.
/// Also: an `append` or `renew` leaves the lease at least a ttl from the
/// store's now; an `append` whose events' `seq` do not continue the log
/// one by one (a gap or a repeat, inside its batch too) writes nothing.
pub trait SagaStore: Send + Sync + 'static {
    /// Names the store in messages (for SQLite: its file).
    fn describe(&self) -> String;

    /// Records a definition's shape under its fingerprint (idempotent).
    fn put_definition(&self, definition: DefinitionRecord) -> BoxFuture<'_, StoreResult<()>>;

    /// The definition recorded under `fingerprint`.
    fn definition(&self, fingerprint: &str)
    -> BoxFuture<'_, StoreResult<Option<DefinitionRecord>>>;

    /// Creates an execution with status `running` and its first events,
    /// and hands its lease to `owner`, in one commit; or reports the
    /// existing execution with that id (nothing is written then).
    fn create(
        &self,
        execution: NewExecution,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Created>>;

    /// Takes the lease of an execution if it is free or expired; bumps the
    /// fencing token. `None` if a live lease is held, by another owner or
    /// by `owner` itself: a lease its holder still has means a run of it
    /// goes on, and a second claim would start a second run. An owner that
    /// holds the lease keeps using the [`Lease`] (the token) it holds; an
    /// owner that stopped its run releases the lease first, then claims.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown id.
    fn claim(
        &self,
        id: &ExecutionId,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Option<Lease>>>;

    /// Appends `events` (whose `seq` continue the log without gaps) and
    /// sets the execution's `status`, in one commit, if `lease` is still
    /// the execution's lease; extends the lease by its ttl, or releases it
    /// (in the same commit) when `status` is a finished one. The
    /// extension must not be skipped: each append commits a step's start,
    /// and the step may block the thread the engine renews the lease on.
    ///
    /// # Errors
    /// [`StoreError::LeaseLost`] if another owner claimed it (nothing is
    /// written).
    fn append<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
        events: Vec<Event>,
        status: ExecutionStatus,
    ) -> BoxFuture<'a, StoreResult<Ack>>;

    /// Extends the lease by its ttl.
    ///
    /// # Errors
    /// [`StoreError::LeaseLost`] if another owner claimed it.
    fn renew<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<Ack>>;

    /// Gives the lease up (a no-op if it was lost).
    fn release<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<()>>;

    /// The execution with that id.
    fn get<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> BoxFuture<'a, StoreResult<Option<ExecutionRecord>>>;

    /// The execution's log, in order.
    fn events<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<Vec<Event>>>;

    /// Executions with `status` (every one for `None`), oldest first,
    /// each with its context: all of them read at once. For a listing, use
    /// [`list_summaries`](Self::list_summaries), which reads no context and
    /// pages.
    fn list(
        &self,
        status: Option<ExecutionStatus>,
    ) -> BoxFuture<'_, StoreResult<Vec<ExecutionRecord>>>;

    /// Summaries of the executions `query` selects (no contexts), in
    /// `(created_at, id)` order, after `query.after`, at most
    /// `query.limit`. A row this build cannot read is left out with a
    /// warning, so one bad row does not hide the others.
    ///
    /// The default reads [`list`](Self::list) and drops the contexts, so
    /// stores written before this method still compile; the SQLite and
    /// PostgreSQL stores read no context column.
    fn list_summaries(
        &self,
        query: ListQuery,
    ) -> BoxFuture<'_, StoreResult<Vec<ExecutionSummary>>> {
        Box::pin(async move {
            let records = self.list(query.status).await?;
            let mut summaries: Vec<ExecutionSummary> = records
                .into_iter()
                .map(ExecutionSummary::from)
                .filter(|s| query.is_after(s))
                .collect();
            summaries.sort_by(|a, b| {
                (a.created_at_ms, a.id.as_str()).cmp(&(b.created_at_ms, b.id.as_str()))
            });
            if let Some(limit) = query.limit {
                summaries.truncate(limit);
            }
            Ok(summaries)
        })
    }

    /// The initial context (JSON) of one execution; `None` if there is no
    /// such execution. The default reads [`get`](Self::get).
    fn context<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<Option<String>>> {
        Box::pin(async move { Ok(self.get(id).await?.map(|record| record.context)) })
    }

    /// One execution's log as [`events`](Self::events) gives it, but with
    /// no event's `context` (`None`): what a report or a timeline needs,
    /// without a copy of the context per step (each as large as the
    /// context). Empty for an unknown id.
    ///
    /// The default reads [`events`](Self::events) and drops the contexts;
    /// the crate's stores do not read them.
    fn events_without_contexts<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> BoxFuture<'a, StoreResult<Vec<Event>>> {
        Box::pin(async move {
            let mut events = self.events(id).await?;
            for event in &mut events {
                event.context = None;
            }
            Ok(events)
        })
    }

    /// The latest context (JSON) of one execution's log: that of its last
    /// event that logged one, or the initial one before any did; `None`
    /// if there is no such execution. What a run resumed now would start
    /// from, and what [`SagaEngine::context`](crate::SagaEngine::context)
    /// decodes.
    ///
    /// The default reads the whole log ([`events`](Self::events)), every
    /// context in it, then [`context`](Self::context); the crate's stores
    /// read the one context.
    fn latest_context<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> BoxFuture<'a, StoreResult<Option<String>>> {
        Box::pin(async move {
            let logged = self
                .events(id)
                .await?
                .into_iter()
                .rev()
                .find_map(|e| e.context);
            match logged {
                Some(context) => Ok(Some(context)),
                None => self.context(id).await,
            }
        })
    }

    /// Marks a cancellation request on the execution, for its owner to see
    /// at its next write. `false` if there is no such execution.
    fn request_cancel<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<bool>>;

    /// Claims up to `request.limit` unfinished executions (running or
    /// compensating) whose definition is in `request.fingerprints` and
    /// whose lease is free or expired, oldest first, each with a new lease
    /// (its fencing token bumped) for `request.owner`.
    ///
    /// The default implementation lists summaries (no contexts) and claims
    /// one by one (each claim is atomic, so two claimers never both win),
    /// then reads the record of each execution it claimed; the stores of
    /// this crate override it with one statement (PostgreSQL: `FOR UPDATE
    /// SKIP LOCKED`). An error after it claimed some ends the claim with
    /// those (an error is returned only when none was claimed): a lease
    /// taken and not handed back would hold its execution a whole ttl.
    fn claim_next(&self, request: ClaimRequest) -> BoxFuture<'_, StoreResult<Vec<Claimed>>> {
        Box::pin(async move {
            let mut candidates = Vec::new();
            for status in [ExecutionStatus::Running, ExecutionStatus::Compensating] {
                candidates.extend(
                    self.list_summaries(ListQuery::new().with_status(status))
                        .await?,
                );
            }
            candidates.sort_by(|a, b| {
                (a.created_at_ms, a.id.as_str()).cmp(&(b.created_at_ms, b.id.as_str()))
            });
            let now = now_ms();
            let mut claimed = Vec::new();
            for summary in candidates {
                if claimed.len() >= request.limit {
                    break;
                }
                let free = summary.owner.is_none()
                    || summary.lease_expires_at_ms.is_none_or(|at| at <= now);
                if !free
                    || !request.fingerprints.contains(&summary.fingerprint)
                    || request.exclude.contains(&summary.id)
                {
                    continue;
                }
                let lease = match self.claim(&summary.id, &request.owner, request.ttl).await {
                    Ok(Some(lease)) => lease,
                    Ok(None) => continue,
                    Err(error) if claimed.is_empty() => return Err(error),
                    // The leases taken so far go to the caller's runs.
                    Err(error) => {
                        log::warn!(target: "saga", store:% = crate::escape::Escaped(&self.describe()), error:% = crate::escape::Escaped(&error.to_string()); "claiming work stopped part-way; the claims made so far go on");
                        break;
                    }
                };
                match self.get(&summary.id).await {
                    Ok(Some(record)) => claimed.push(Claimed { record, lease }),
                    // Purged since the listing.
                    Ok(None) => {
                        if let Err(error) = self.release(&summary.id, &lease).await {
                            if claimed.is_empty() {
                                return Err(error);
                            }
                            break;
                        }
                    }
                    Err(error) => {
                        // Given back, as far as the store lets it.
                        let _ = self.release(&summary.id, &lease).await;
                        if claimed.is_empty() {
                            return Err(error);
                        }
                        break;
                    }
                }
            }
            Ok(claimed)
        })
    }

    /// [`claim_next`](Self::claim_next), each claimed execution with its
    /// log when the store reads it with the claim, so that a
    /// [`Worker`](crate::Worker) runs it without reading the execution
    /// and its log again. A log given here must be the execution's whole
    /// log as the new lease found it (every event an earlier owner
    /// committed, ending at the record's `last_seq`), and the record read
    /// under the new lease too: the engine runs from them.
    ///
    /// The default calls [`claim_next`](Self::claim_next) and gives no log
    /// (the engine reads the record and the log after the claim); the
    /// stores of this crate read the logs in the claim's statement or
    /// transaction (PostgreSQL: in the claim's statement, and only for
    /// executions whose lease no other transaction changed between the
    /// statement's snapshot and its lock).
    fn claim_next_with_log(
        &self,
        request: ClaimRequest,
    ) -> BoxFuture<'_, StoreResult<Vec<ClaimedWithLog>>> {
        Box::pin(async move {
            Ok(self
                .claim_next(request)
                .await?
                .into_iter()
                .map(|claimed| ClaimedWithLog::new(claimed, None))
                .collect())
        })
    }

    /// The stuck executions whose log ends with a pending resume request
    /// ([`EventKind::ResumeRequested`], written by
    /// [`request_resume`](crate::SagaEngine::request_resume), e.g. from the
    /// `saga` CLI), oldest first, without their contexts: what a
    /// [`Worker`](crate::Worker) carries out at each poll.
    ///
    /// The default lists the stuck executions and reads each one's log;
    /// the stores of this crate read only the last event of each, in one
    /// statement.
    fn resume_requests(&self) -> BoxFuture<'_, StoreResult<Vec<ExecutionSummary>>> {
        Box::pin(async move {
            let stuck = self
                .list_summaries(ListQuery::new().with_status(ExecutionStatus::Stuck))
                .await?;
            let mut requested = Vec::new();
            for summary in stuck {
                let events = self.events(&summary.id).await?;
                if events.last().map(|e| e.kind) == Some(EventKind::ResumeRequested) {
                    requested.push(summary);
                }
            }
            Ok(requested)
        })
    }

    /// A signal that new work may be claimable (an execution was created,
    /// or a lease released): the value changes when it may. `None` (the
    /// default) if the store cannot tell; claimers then rely on polling.
    /// A store shared by processes signals the other processes' work too
    /// (PostgreSQL: `LISTEN`/`NOTIFY`).
    fn work_signal(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// A signal that what a listing shows may have changed: an execution
    /// was created, changed status (rolled back, finished, resumed,
    /// abandoned), had a cancel requested, or released its lease. The
    /// value changes when it may, in this process and (PostgreSQL:
    /// `LISTEN`/`NOTIFY`) in others; a step's own events do not signal
    /// (a notification per step transition would make PostgreSQL take a
    /// database-wide lock at every commit). It also changes when the store
    /// loses the connection it listens on (a look then finds the outage).
    /// `None` (the default) if the store cannot tell; watchers then poll.
    /// `saga watch` uses it.
    fn change_signal(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// Deletes finished executions (and their logs and leases) last written
    /// at or before `before_ms` (milliseconds since the Unix epoch), except
    /// stuck ones, which wait for an operator; returns how many.
    ///
    /// A store whose writes share one writer (SQLite, PostgreSQL) deletes
    /// in batches of a few hundred executions, oldest first, each in a
    /// transaction of its own, so the writes of the runs in flight go
    /// between two batches rather than waiting for the whole purge. Each
    /// execution goes with its log and lease in one transaction. An
    /// error ends the purge: the batches committed before it stay
    /// deleted, and the next purge goes on from there.
    fn purge(&self, before_ms: i64) -> BoxFuture<'_, StoreResult<u64>>;
}

/// One row with a status this build does not know (written by a newer
/// version, or edited by hand) must not fail a listing of every
/// execution: the listing leaves it out and says so.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn skip_unknown_status(store: &str, id: &str, status: &str) {
    log::warn!(
        target: "saga",
        store:% = crate::escape::Escaped(store),
        execution:% = crate::escape::Escaped(id),
        status:% = crate::escape::Escaped(status);
        "listing skips an execution of unknown status"
    );
}

/// Refuses a batch of events whose `seq` do not follow each other: a
/// store's sequence check compares the first with the log's end. With
/// `repeats_allowed`, a number repeated at once is let through, for a
/// store whose events' key refuses it in the database.
pub(crate) fn consecutive(
    store: &str,
    id: &ExecutionId,
    events: &[Event],
    repeats_allowed: bool,
) -> StoreResult<()> {
    let mut previous: Option<u64> = None;
    for event in events {
        let follows = match previous {
            None => true,
            Some(previous) => {
                previous.checked_add(1) == Some(event.seq)
                    || (repeats_allowed && previous == event.seq)
            }
        };
        if !follows {
            let expected = previous.and_then(|p| p.checked_add(1));
            return Err(StoreError::BadRecord {
                store: store.to_owned(),
                what: format!("event {} of execution `{id}`", event.seq),
                detail: match expected {
                    Some(expected) => format!("expected sequence number {expected}"),
                    None => "no sequence number follows the one before".to_owned(),
                },
            });
        }
        previous = Some(event.seq);
    }
    Ok(())
}

/// Refuses a new execution whose first events do not number its log from
/// 1 one by one.
pub(crate) fn first_events(store: &str, execution: &NewExecution) -> StoreResult<()> {
    if let Some(first) = execution.events.first().filter(|e| e.seq != 1) {
        return Err(StoreError::BadRecord {
            store: store.to_owned(),
            what: format!("event {} of execution `{}`", first.seq, execution.id),
            detail: "expected sequence number 1".to_owned(),
        });
    }
    consecutive(store, &execution.id, &execution.events, false)
}

/// Milliseconds since the Unix epoch, by the wall clock (leases, event
/// times, retention).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

/// Whether retention may delete an execution with `status`: finished, and
/// not stuck (a stuck execution waits for an operator, however old).
pub(crate) fn purgeable(status: ExecutionStatus) -> bool {
    status.is_finished() && status != ExecutionStatus::Stuck
}

#[cfg(test)]
mod logged_tests {
    use super::{Event, EventKind, logged_durations};

    fn at(seq: u64, kind: EventKind, step: Option<u32>, at_ms: i64) -> Event {
        let mut event = Event::new(seq, kind);
        event.step = step;
        event.at_ms = at_ms;
        event
    }

    /// A step failed for good at 100 ms, sat stuck until an operator's
    /// resume ran it again at 5,100 ms, and succeeded at 5,200 ms: it
    /// took 200 ms, not 5,200 (the time stuck is nobody's attempt).
    #[test]
    fn the_time_an_execution_sat_stuck_is_not_a_steps() {
        let events = [
            at(1, EventKind::StepStarted, Some(0), 0),
            at(2, EventKind::StepFailed, Some(0), 100),
            at(3, EventKind::Finished, None, 100),
            at(4, EventKind::ResumeRequested, None, 5_000),
            at(5, EventKind::Resumed, None, 5_100),
            at(6, EventKind::StepStarted, Some(0), 5_100),
            at(7, EventKind::StepSucceeded, Some(0), 5_200),
            at(8, EventKind::StepStarted, Some(1), 5_200),
            at(9, EventKind::StepSucceeded, Some(1), 5_250),
            at(10, EventKind::Finished, None, 5_250),
        ];
        assert_eq!(
            logged_durations(2, &events),
            [(Some(200), None), (Some(50), None)]
        );
    }
}
