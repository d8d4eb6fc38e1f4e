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

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::BoxError;
use crate::id::ExecutionId;
use crate::report::ExecutionStatus;
use crate::step::BoxFuture;

mod listing;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

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

/// What kind of event a log entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// An attempt of a step's action is about to run.
    StepStarted,
    /// A step's action succeeded; the event holds its output and the
    /// context after it.
    StepSucceeded,
    /// An attempt of a step's action failed; the event holds the error and
    /// the context as the attempt left it.
    StepFailed,
    /// The run turned back; `step` is the step whose failure caused it
    /// (none for a cancellation).
    RollbackStarted,
    /// A compensation attempt is about to run.
    CompensationStarted,
    /// A compensation succeeded; the event holds the context after it.
    CompensationSucceeded,
    /// A compensation attempt failed.
    CompensationFailed,
    /// A cancellation after the pivot: recorded and ignored.
    CancelIgnored,
    /// The execution ended; the execution's status says how.
    Finished,
    /// An operator resumed a stuck execution.
    Resumed,
    /// An operator abandoned the execution.
    Abandoned,
    /// An operator asked for a stuck execution to be resumed (from a tool
    /// that does not hold the saga's code, such as the `saga` CLI); a
    /// worker that has the definition registered carries it out at its
    /// next [`recover`](crate::SagaEngine::recover).
    ResumeRequested,
}

impl EventKind {
    /// A snake_case label, as stored.
    pub fn label(self) -> &'static str {
        match self {
            EventKind::StepStarted => "step_started",
            EventKind::StepSucceeded => "step_succeeded",
            EventKind::StepFailed => "step_failed",
            EventKind::RollbackStarted => "rollback_started",
            EventKind::CompensationStarted => "compensation_started",
            EventKind::CompensationSucceeded => "compensation_succeeded",
            EventKind::CompensationFailed => "compensation_failed",
            EventKind::CancelIgnored => "cancel_ignored",
            EventKind::Finished => "finished",
            EventKind::Resumed => "resumed",
            EventKind::Abandoned => "abandoned",
            EventKind::ResumeRequested => "resume_requested",
        }
    }

    /// The kind of a stored label.
    pub fn from_label(label: &str) -> Option<Self> {
        const ALL: [EventKind; 12] = [
            EventKind::StepStarted,
            EventKind::StepSucceeded,
            EventKind::StepFailed,
            EventKind::RollbackStarted,
            EventKind::CompensationStarted,
            EventKind::CompensationSucceeded,
            EventKind::CompensationFailed,
            EventKind::CancelIgnored,
            EventKind::Finished,
            EventKind::Resumed,
            EventKind::Abandoned,
            EventKind::ResumeRequested,
        ];
        ALL.into_iter().find(|k| k.label() == label)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The parse of a stored [`ExecutionStatus`] label.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn status_from_label(label: &str) -> Option<ExecutionStatus> {
    ExecutionStatus::from_label(label)
}

/// One entry of an execution's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its place in the execution's log, from 1, without gaps.
    pub seq: u64,
    /// What happened.
    pub kind: EventKind,
    /// The step's index in the definition, for step, compensation and
    /// rollback events.
    pub step: Option<u32>,
    /// The attempt, from 1 (0 where it does not apply).
    pub attempt: u32,
    /// The step's output, JSON (for `step_succeeded`).
    pub output: Option<String>,
    /// The context after the event, JSON.
    pub context: Option<String>,
    /// The error's message (for failures).
    pub error: Option<String>,
    /// Whether the failed attempt may have taken effect.
    pub outcome_unknown: bool,
    /// Whether a failed attempt will be retried.
    pub will_retry: bool,
    /// Wall-clock time of the write, milliseconds since the Unix epoch
    /// (set by the store).
    pub at_ms: i64,
}

/// Per step of a log with `steps` steps: the milliseconds its action and
/// its compensation took by the log's timestamps, each from its first
/// start to its last success or failure (`None` where the log has no such
/// pair: not run, or not ended). Wall clock: the time includes any wait for
/// a retry or a recovery, and a clock that went back gives a negative span.
pub fn logged_durations(steps: usize, events: &[Event]) -> Vec<(Option<i64>, Option<i64>)> {
    let mut spans: Vec<[(Option<i64>, Option<i64>); 2]> = vec![[(None, None); 2]; steps];
    for event in events {
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
    spans
        .into_iter()
        .map(|[action, undo]| {
            let took = |(a, b): (Option<i64>, Option<i64>)| Some(b? - a?);
            (took(action), took(undo))
        })
        .collect()
}

impl Event {
    /// An event of `kind` at `seq`, with nothing else set.
    pub fn new(seq: u64, kind: EventKind) -> Self {
        Event {
            seq,
            kind,
            step: None,
            attempt: 0,
            output: None,
            context: None,
            error: None,
            outcome_unknown: false,
            will_retry: false,
            at_ms: 0,
        }
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

/// An execution handed out by [`SagaStore::claim_next`], with its lease.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The execution, as it was when claimed.
    pub record: ExecutionRecord,
    /// The claimer's lease on it.
    pub lease: Lease,
}

/// What the store tells the owner after a write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ack {
    /// A cancellation of the execution was requested.
    pub cancel_requested: bool,
}

/// An error of a store. Every variant that concerns a file names it and
/// says what to do; none of them comes with data deleted or overwritten.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file is not an SQLite database at all.
    #[error(
        "`{}` is not an SQLite database ({detail}); it was left untouched: point the store at another file, or restore this one from a backup",
        path.display()
    )]
    NotADatabase {
        /// The file.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// The file is an SQLite database, but damaged (truncated, say).
    #[error(
        "`{}` is damaged ({detail}); it was left untouched: restore it from a backup, or try `sqlite3 {} .recover` on a copy",
        path.display(), path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What SQLite reported.
        detail: String,
    },
    /// The file is an SQLite database of another application.
    #[error(
        "`{}` is an SQLite database of another application ({detail}); it was left untouched: point the store at a file of its own",
        path.display()
    )]
    ForeignDatabase {
        /// The file.
        path: PathBuf,
        /// What identifies it as foreign.
        detail: String,
    },
    /// The file was written by a newer version of this library.
    #[error(
        "`{}` has schema version {found}, newer than this build understands ({supported}); it was left untouched: upgrade saga-core to the version that wrote it",
        path.display()
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// The schema version in the file.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// The file (or its directory) cannot be written.
    #[error(
        "`{}` is read-only ({detail}); make it and its directory writable (e.g. `chmod u+w`), or copy it somewhere writable",
        path.display()
    )]
    ReadOnly {
        /// The file.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// Another owner holds the execution's lease now: this owner must stop
    /// writing (fencing).
    #[error(
        "the lease on execution `{execution_id}` was lost to another owner; this owner stopped writing its log"
    )]
    LeaseLost {
        /// The execution.
        execution_id: ExecutionId,
    },
    /// No execution with that id.
    #[error("no execution `{execution_id}` in the store")]
    NotFound {
        /// The execution.
        execution_id: ExecutionId,
    },
    /// A stored value that this build cannot read.
    #[error("{what} in {store} cannot be read: {detail}; the record was left untouched")]
    BadRecord {
        /// The store (for SQLite: its file).
        store: String,
        /// Which record.
        what: String,
        /// Why.
        detail: String,
    },
    /// A context or output could not be encoded for the log.
    #[error("{what} could not be encoded as JSON: {detail}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// The encoder's error.
        detail: String,
    },
    /// The database reported an error.
    #[error("{store}: {what} failed")]
    Backend {
        /// The store (for SQLite: its file).
        store: String,
        /// The operation.
        what: String,
        /// The database's error.
        #[source]
        source: BoxError,
    },
    /// A database schema written by a newer version of this library, which
    /// this build cannot work with.
    #[error(
        "{store} has schema version {found}, which needs saga-core understanding version {required} or newer (this build understands {supported}); it was left untouched: upgrade saga-core on this worker"
    )]
    IncompatibleSchema {
        /// The store.
        store: String,
        /// The schema version found.
        found: i64,
        /// The oldest schema version a build must understand to use it.
        required: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// The database schema holds tables that are not ours.
    #[error(
        "{store} holds tables of another application ({detail}); they were left untouched: give the store a schema of its own (`PostgresOptions::with_schema`)"
    )]
    ForeignSchema {
        /// The store.
        store: String,
        /// What identifies it as foreign.
        detail: String,
    },
    /// The database server cannot be reached (down, restarting, or the
    /// address is wrong). Nothing was written by the failed call.
    #[error(
        "check that the server runs and the URL is right (for the test cluster: `scripts/pg.sh start`); {store} is unreachable while {what}"
    )]
    Unavailable {
        /// The store.
        store: String,
        /// The operation.
        what: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },
    /// The database server refused the credentials: a wrong password, or
    /// a user it does not know. Unlike [`Unavailable`](Self::Unavailable)
    /// this is not an outage: trying again fails the same way until the
    /// credentials are fixed, so a [`Worker`](crate::Worker) stops instead
    /// of retrying.
    #[error(
        "authentication failed for user `{user}` at {store} while {what}; check the user and password of the URL"
    )]
    Unauthorized {
        /// The store.
        store: String,
        /// The user the store connected as.
        user: String,
        /// The operation.
        what: String,
        /// The server's error.
        #[source]
        source: BoxError,
    },
    /// The file exists but is empty (0 bytes). It is not taken for a new
    /// store: an empty file where a store was expected is more often a
    /// mistake (a wrong path, a truncating copy) than an intent.
    #[error("`{}` is empty: delete it to start a new store", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The store was closed (its writer thread is gone).
    #[error("{store} is closed")]
    Closed {
        /// The store.
        store: String,
    },
}

/// Where durable executions keep their log. See the [module
/// documentation](self) for the ownership rules.
///
/// Implementations must make each call's writes durable (as far as the
/// store promises durability) before its future resolves: the engine runs
/// the next step only after the log says it may.
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
    /// (in the same commit) when `status` is a finished one.
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

    /// Marks a cancellation request on the execution, for its owner to see
    /// at its next write. `false` if there is no such execution.
    fn request_cancel<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<bool>>;

    /// Claims up to `request.limit` unfinished executions (running or
    /// compensating) whose definition is in `request.fingerprints` and
    /// whose lease is free or expired, oldest first, each with a new lease
    /// (its fencing token bumped) for `request.owner`.
    ///
    /// The default implementation lists and claims one by one (each claim
    /// is atomic, so two claimers never both win); a shared database store
    /// overrides it with one statement (`FOR UPDATE SKIP LOCKED`).
    fn claim_next(&self, request: ClaimRequest) -> BoxFuture<'_, StoreResult<Vec<Claimed>>> {
        Box::pin(async move {
            let mut claimed = Vec::new();
            let now = now_ms();
            for status in [ExecutionStatus::Running, ExecutionStatus::Compensating] {
                for record in self.list(Some(status)).await? {
                    if claimed.len() >= request.limit {
                        return Ok(claimed);
                    }
                    let free = record.owner.is_none()
                        || record.lease_expires_at_ms.is_none_or(|at| at <= now);
                    if !free
                        || !request.fingerprints.contains(&record.fingerprint)
                        || request.exclude.contains(&record.id)
                    {
                        continue;
                    }
                    if let Some(lease) = self.claim(&record.id, &request.owner, request.ttl).await?
                    {
                        claimed.push(Claimed { record, lease });
                    }
                }
            }
            Ok(claimed)
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

    /// Deletes finished executions (and their logs and leases) last written
    /// at or before `before_ms` (milliseconds since the Unix epoch), except
    /// stuck ones, which wait for an operator; returns how many.
    fn purge(&self, before_ms: i64) -> BoxFuture<'_, StoreResult<u64>>;
}

/// One row with a status this build does not know (written by a newer
/// version, or edited by hand) must not fail a listing of every
/// execution: the listing leaves it out and says so.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn skip_unknown_status(store: &str, id: &str, status: &str) {
    log::warn!(
        target: "saga",
        "listing skips an execution of unknown status store={store} execution_id={} status={}",
        crate::escape::user_text(id),
        crate::escape::user_text(status)
    );
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
