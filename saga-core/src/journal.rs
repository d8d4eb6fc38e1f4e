//! The journal: the log's vocabulary. The events of an execution's log
//! and their kinds, the [`Journal`] a durable run writes them to, the
//! [`Resume`] state a log folds into, and the [`StoreError`] a journal
//! (and a store) fails with.
//!
//! Below both the executor and the stores, as steno keeps `saga_log.rs`
//! below its executor and its store: the executor emits these events and
//! knows no store; a store persists them and knows no executor; the engine
//! joins the two. `store` re-exports the public items at their public
//! paths (`saga_core::store::Event`, ...).
//!
//! It names only the leaf modules (`id`, `status`): the error, the step
//! and the future aliases it would otherwise take from `error` and `step`
//! are spelled out here, because `error` names [`StoreError`] (in
//! `SagaError::Store`) and so sits above this module.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::id::ExecutionId;
use crate::status::{ExecutionStatus, Outcome, StepStatus};

/// A boxed error as a store reports its cause: the same type as
/// [`BoxError`](crate::BoxError), spelled out (see the module doc).
type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

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
    /// A cancellation after the pivot, or during the last step: recorded
    /// and ignored.
    CancelIgnored,
    /// The execution ended; the execution's status says how.
    Finished,
    /// An operator resumed a stuck execution.
    Resumed,
    /// An operator abandoned the execution.
    Abandoned,
    /// An operator asked for a stuck execution to be resumed (from a tool
    /// that does not hold the saga's code, such as the `saga` CLI); a
    /// [`Worker`](crate::Worker) that has the definition registered
    /// carries it out at its next poll (as does a
    /// [`recover`](crate::SagaEngine::recover)).
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
    /// More of what happened, JSON, written since 0.2.0 (`None` in older
    /// logs, which still decode): for a failure, its error's cause chain
    /// as text, its permanent mark and, if it is to be retried, its
    /// backoff (`retry_in_ms`, which a run taking the execution over
    /// waits out); for `finished`, how the run ended,
    /// in the form [`SagaEngine::wait`](crate::SagaEngine::wait) returns.
    pub detail: Option<String>,
    /// Wall-clock time of the write, milliseconds since the Unix epoch
    /// (set by the store).
    pub at_ms: i64,
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
            detail: None,
            at_ms: 0,
        }
    }
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
    #[error("`{}` is read-only ({detail}){}", path.display(), read_only_remedy(detail))]
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
    /// The database reported an error. Its message ends with the
    /// database's (the engine and the worker log an error's message
    /// alone), and for a full disk (SQLite's `SQLITE_FULL`) with what to
    /// do.
    #[error("{store}: {what} failed: {source}{}", advice(.source))]
    Backend {
        /// The store (for SQLite: its file).
        store: String,
        /// The operation.
        what: String,
        /// The database's error.
        #[source]
        source: Cause,
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
    /// address is wrong). Nothing was written by the failed call, except
    /// by a write cut off as it committed (the connection lost once its
    /// `COMMIT` was sent): whether it was written is unknown, and only a
    /// read of the store once it is back tells. The engine assumes
    /// neither: a run whose write fails so stops, and is carried on from
    /// its log.
    #[error("{store} is unreachable while {what}; check that the server runs and the URL is right")]
    Unavailable {
        /// The store.
        store: String,
        /// The operation.
        what: String,
        /// The client's error.
        #[source]
        source: Cause,
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
        source: Cause,
    },
    /// The store's configuration does not match the server, and trying
    /// again cannot help until it is fixed: a database that does not
    /// exist, a user without a privilege the store needs (on the database,
    /// the schema or its tables). Not an outage, unlike
    /// [`Unavailable`](Self::Unavailable).
    #[error("{store}: {problem}")]
    Misconfigured {
        /// The store.
        store: String,
        /// What is wrong and what to check, in words.
        problem: String,
        /// The server's error, if it gave one.
        #[source]
        source: Option<Cause>,
    },
    /// No store where one was expected: a connection that must not
    /// create one (a read-only one, or one told not to) found no schema of
    /// that name, or a schema without the store's tables. Nothing was
    /// created.
    #[error(
        "{store} holds no saga store ({detail}); nothing was created: check the schema name and the database of the URL"
    )]
    NoStore {
        /// The store.
        store: String,
        /// What was found instead.
        detail: String,
    },
    /// A database schema older than this build's, opened without
    /// migrating it (read-only, or told not to migrate: the `saga`
    /// command): this build's reads and writes need the newer one.
    #[error(
        "{store} has schema version {found}, older than this build's ({supported}), and this connection does not migrate it (read-only, or opened not to migrate); it was left untouched: let a worker of this build connect first (it migrates the schema), or use the tools of the version that wrote it"
    )]
    OlderSchema {
        /// The store.
        store: String,
        /// The schema version found.
        found: i64,
        /// The version this build reads.
        supported: i64,
    },
    /// The file exists but is empty (0 bytes). It is not taken for a new
    /// store: an empty file where a store was expected is more often a
    /// mistake (a wrong path, a truncating copy) than an intent.
    #[error("`{}` is empty: delete it to start a new store", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The store's file is not where its path says: missing while its
    /// `-wal` (holding the last writes, perhaps) or `-shm` is there (the
    /// file was deleted or moved; nothing is created there), or deleted
    /// or replaced by another file while this process had it open (what
    /// it wrote would be lost with the process: every write is refused
    /// from then on, until the process is restarted).
    #[error("`{}` {problem}", path.display())]
    FileGone {
        /// The file.
        path: PathBuf,
        /// What was found and what to do, in words.
        problem: String,
    },
    /// The store was closed (its writer thread is gone).
    #[error("{store} is closed")]
    Closed {
        /// The store.
        store: String,
    },
}

/// What to do about a [`StoreError::Backend`] of this cause, if it is one
/// the operator can fix: a full disk. SQLite's message for `SQLITE_FULL`
/// is how it is known, in the cause or below it: the SQLite store passes
/// a commit's error on as its text.
fn advice(source: &Cause) -> &'static str {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&**source);
    while let Some(c) = cause {
        if c.to_string().contains("database or disk is full") {
            return "; free disk space: the store carries on by itself once there is room";
        }
        cause = c.source();
    }
    ""
}

/// Where a durable run writes its log. The executor awaits
/// [`record`](Journal::record) at each log point, in order; the journal
/// decides what must be durable before it returns (every `*_started` and
/// `finished` event, with whatever it buffered before).
pub(crate) trait Journal<C>: Send + Sync {
    /// The gate the run's sync steps pass (see
    /// [`BlockingGate`](crate::gate::BlockingGate)): a
    /// durable run on a multi-thread runtime must not hold its runtime's
    /// last worker thread, which its lease's renewal needs.
    fn gate(&self) -> Option<&crate::gate::BlockingGate> {
        None
    }

    /// Encodes the context for an event (synchronously, so no borrow of it
    /// is held across an await).
    fn encode_context(&self, ctx: &C) -> Result<String, StoreError>;

    /// The context of the last event recorded since the last commit that
    /// holds one, if any: the context as it is now when no step ran since
    /// (every step's end logs the context it left), so that the run's end
    /// copies it rather than encoding the context again.
    fn last_context(&self) -> Option<String>;

    /// Records `event` (its `seq` is the journal's to set); `status` is the
    /// execution's status after it. An event after which nothing must be
    /// committed before the run goes on (a step's or a compensation's end:
    /// it is committed with the next start or the end) is buffered at the
    /// call, and its write is [`Write::Done`]. A failure to be retried is
    /// committed at once: the backoff before the retry may be long, and a
    /// crash in it must not read as one that cut the attempt off.
    fn record(&self, event: Event, status: ExecutionStatus) -> Write<'_>;

    /// Commits the events buffered so far (none: nothing to write); `status`
    /// is the execution's status after them.
    fn flush(&self, status: ExecutionStatus) -> Write<'_>;
}

/// A store's write, boxed.
type Boxed<'a> = Pin<Box<dyn Future<Output = Result<Ack, StoreError>> + Send + 'a>>;

/// A journal's write ([`Journal::record`], [`Journal::flush`]): `Ok(())`
/// once what it commits is durable. A commit whose turn came at the call
/// holds the store's own future, with no box of its own around it (one
/// allocation and a copy of the event fewer per commit).
pub(crate) enum Write<'a> {
    /// Nothing to commit.
    Done,
    /// The store's write under way, the flush lock held until it is
    /// dropped; or (`flushing` none) a commit waiting for the one before
    /// it (a sibling branch's), then writing: boxed, as it is rare, with
    /// the lock inside.
    Writing {
        write: Boxed<'a>,
        flushing: Option<FlushGuard<'a>>,
    },
}

impl Future for Write<'_> {
    type Output = Result<(), StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Write::Done => Poll::Ready(Ok(())),
            Write::Writing { write, flushing } => {
                let ack = match write.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(answer) => answer?,
                };
                if let Some(flushing) = flushing.as_ref().filter(|_| ack.cancel_requested) {
                    flushing.0.cancel.cancel();
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}

/// What a [`Write`] tells of a cancellation the store's answer reports:
/// the run's cancellation token (named above this module).
pub(crate) trait Cancel: Send + Sync {
    /// Asks the run to stop.
    fn cancel(&self);
}

/// A journal's flush lock: held by the commit under way, from the
/// numbering of its events to the store's answer, so that the writes of a
/// run's concurrent branches reach the store in the order of their
/// numbers. A flag and a [`Notify`](tokio::sync::Notify) for the rare
/// commit that waits, where a `tokio::sync::Mutex` took its semaphore's
/// lock at every release.
pub(crate) struct FlushLock {
    held: AtomicBool,
    released: tokio::sync::Notify,
    /// The run's cancellation, which a store's answer may ask for.
    cancel: Arc<dyn Cancel>,
}

/// The [`FlushLock`] held: released when dropped.
pub(crate) struct FlushGuard<'a>(&'a FlushLock);

impl FlushLock {
    /// A lock not held, for a run whose cancellation is `cancel`.
    pub(crate) fn new(cancel: Arc<dyn Cancel>) -> Self {
        FlushLock {
            held: AtomicBool::new(false),
            released: tokio::sync::Notify::new(),
            cancel,
        }
    }

    /// The lock, if no commit holds it.
    pub(crate) fn try_lock(&self) -> Option<FlushGuard<'_>> {
        self.held
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| FlushGuard(self))
    }

    /// The lock, once the commits holding it or waiting before this one
    /// let it go. (Each release wakes one waiter, which takes the lock or,
    /// beaten to it, waits for that holder's release.)
    pub(crate) async fn lock(&self) -> FlushGuard<'_> {
        loop {
            let released = self.released.notified();
            let mut released = std::pin::pin!(released);
            // Listening before the test: a release in between is heard.
            released.as_mut().enable();
            if let Some(guard) = self.try_lock() {
                return guard;
            }
            released.await;
        }
    }
}

impl Drop for FlushGuard<'_> {
    fn drop(&mut self) {
        self.0.held.store(false, Ordering::Release);
        self.0.released.notify_one();
    }
}

/// Where a recovered run starts: what its log says of each step.
pub(crate) struct Resume {
    /// Per step: status, outcome and attempt counters. A step to run again
    /// has `attempts` set to the attempt before the one to run.
    pub(crate) steps: Vec<ResumeStep>,
    /// The outputs of the steps that succeeded.
    pub(crate) outputs: Vec<Option<Box<dyn Any + Send + Sync>>>,
    /// Forward, or rolling back (from the failure of a step, or a
    /// cancellation).
    pub(crate) phase: ResumePhase,
    /// Whether the log records a cancellation as ignored already: a run
    /// carried on from it does not record it again.
    pub(crate) cancel_ignored: bool,
    /// Whether this run carries the execution on after it ended stuck:
    /// the run that wrote an operator's resume.
    pub(crate) after_stuck: bool,
    /// The time the log shows the execution took before this run (from
    /// its first event to the take-over): the run's report adds its own.
    pub(crate) took: Duration,
}

/// One step of a [`Resume`].
pub(crate) struct ResumeStep {
    pub(crate) status: StepStatus,
    pub(crate) outcome: Outcome,
    pub(crate) attempts: u32,
    pub(crate) compensation_attempts: u32,
    /// Attempts of its action made before an operator's resume gave it a
    /// fresh budget (`attempts` counts from there): the report counts
    /// them all.
    pub(crate) earlier_attempts: u32,
    /// The same for its compensation.
    pub(crate) earlier_compensation_attempts: u32,
    pub(crate) last_error: Option<String>,
    /// The detail (cause chain and marks) of the failure that logged
    /// `last_error`, if the log has one.
    pub(crate) last_detail: Option<String>,
    /// Whether its last attempt was cut off by a crash: started, and no
    /// end logged. (A step `Running` otherwise has a retry due, or was
    /// given a fresh budget by an operator's resume.)
    pub(crate) cut_off: bool,
    /// Whether its last compensation attempt was cut off the same way.
    pub(crate) undo_cut_off: bool,
    /// The retry its last failure left due, if the log has it: a run
    /// carrying the execution on waits out the rest of its backoff.
    pub(crate) retry_due: Option<RetryDue>,
    /// The same for its compensation.
    pub(crate) undo_retry_due: Option<RetryDue>,
    /// The time the log shows its action took before this run (to the
    /// take-over for one the run carries on): the run's report adds its
    /// own, so that it says what [`SagaEngine::report`](crate::SagaEngine::report)
    /// rebuilds from the log.
    pub(crate) took: Duration,
    /// The same for its compensation.
    pub(crate) undo_took: Duration,
}

/// A retry a failure event left due: when the failure was logged (the
/// store's clock) and the backoff logged with it. A run that takes the
/// execution over (after a crash, a release, a claim) waits out what is
/// left of the backoff before the next attempt, so a restart loop does not
/// run the attempts faster than the policy says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryDue {
    /// The failure event's `at_ms`.
    pub(crate) at_ms: i64,
    /// The backoff its run drew before the next attempt.
    pub(crate) backoff: Duration,
}

/// The part of a failure event's detail that tells its backoff (the rest
/// is the error's: `crate::logged`).
#[derive(serde::Deserialize)]
struct Backoff {
    retry_in_ms: Option<u64>,
}

impl RetryDue {
    /// The retry a failure event (`step_failed`, `compensation_failed`)
    /// left due: none if it was not to be retried, or if its log has no
    /// backoff (written before this was logged: the next attempt runs at
    /// once, as it did then).
    pub(crate) fn of(event: &Event) -> Option<Self> {
        if !event.will_retry {
            return None;
        }
        let ms = serde_json::from_str::<Backoff>(event.detail.as_deref()?)
            .ok()?
            .retry_in_ms?;
        Some(RetryDue {
            at_ms: event.at_ms,
            backoff: Duration::from_millis(ms),
        })
    }

    /// What is left of the backoff at `now_ms` (on the wall clock, as the
    /// event's time). Never more than the backoff itself: a clock behind
    /// the store's (or a store's clock ahead) does not make the wait
    /// longer than the policy's delay.
    pub(crate) fn remaining(&self, now_ms: i64) -> Duration {
        let backoff_ms = i64::try_from(self.backoff.as_millis()).unwrap_or(i64::MAX);
        let left = self
            .at_ms
            .saturating_add(backoff_ms)
            .saturating_sub(now_ms)
            .clamp(0, backoff_ms);
        Duration::from_millis(u64::try_from(left).unwrap_or(0))
    }

    /// What is left of the backoff now.
    pub(crate) fn remaining_now(&self) -> Duration {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.remaining(now_ms)
    }
}

/// The detail of a failure event to be retried after `retry_in`: the
/// error's `detail` (a JSON object, or none) with the backoff added as
/// `retry_in_ms`, which [`RetryDue::of`] reads back. A failure not to be
/// retried keeps the error's detail alone.
pub(crate) fn with_retry_in(detail: Option<String>, retry_in: Option<Duration>) -> Option<String> {
    let Some(delay) = retry_in else {
        return detail;
    };
    let field = format!("\"retry_in_ms\":{}", delay.as_millis());
    Some(match detail {
        // The error's detail is a serialized struct: `{...}`, a field or
        // more in it.
        Some(mut object) if object.len() > 2 && object.ends_with('}') => {
            object.insert_str(object.len() - 1, &format!(",{field}"));
            object
        }
        _ => format!("{{{field}}}"),
    })
}

/// The direction of a [`Resume`].
pub(crate) enum ResumePhase {
    Forward,
    /// Rolling back; `cause` is the failed step and its error as logged
    /// (none for a cancellation).
    Rollback {
        cause: Option<(usize, LoggedCause)>,
    },
}

/// The error of the failure that started a rollback, as its
/// `rollback_started` event logged it.
pub(crate) struct LoggedCause {
    pub(crate) message: String,
    pub(crate) outcome_unknown: bool,
    pub(crate) detail: Option<String>,
}

/// What [`StoreError::ReadOnly`] tells to do, after its detail: a detail
/// that names a read-only filesystem says it itself (`chmod` cannot help
/// there).
fn read_only_remedy(detail: &str) -> &'static str {
    if detail.contains("mounted read-only") {
        ""
    } else {
        "; make it and its directory writable (e.g. `chmod u+w`), or copy it somewhere writable"
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn failed(detail: Option<String>, will_retry: bool) -> Event {
        let mut event = Event::new(3, EventKind::StepFailed);
        event.will_retry = will_retry;
        event.detail = detail;
        event.at_ms = 10_000;
        event
    }

    #[test]
    fn a_retried_failure_logs_its_backoff_beside_its_error_detail() {
        let delay = Some(Duration::from_millis(4_500));
        let alone = with_retry_in(None, delay);
        assert_eq!(alone.as_deref(), Some(r#"{"retry_in_ms":4500}"#));
        let with_causes = with_retry_in(Some(r#"{"causes":["x"]}"#.into()), delay);
        assert_eq!(
            with_causes.as_deref(),
            Some(r#"{"causes":["x"],"retry_in_ms":4500}"#)
        );
        let due = RetryDue::of(&failed(with_causes, true)).unwrap();
        assert_eq!(
            (due.at_ms, due.backoff),
            (10_000, Duration::from_millis(4_500))
        );
        // Not retried, or logged without a backoff: nothing is due.
        assert_eq!(with_retry_in(None, None), None);
        assert_eq!(RetryDue::of(&failed(alone, false)), None);
        assert_eq!(RetryDue::of(&failed(None, true)), None);
        assert_eq!(RetryDue::of(&failed(Some("{}".into()), true)), None);
    }

    #[test]
    fn the_wait_left_is_never_more_than_the_backoff_nor_less_than_zero() {
        let due = RetryDue {
            at_ms: 10_000,
            backoff: Duration::from_millis(4_500),
        };
        assert_eq!(due.remaining(11_500), Duration::from_millis(3_000));
        assert_eq!(due.remaining(14_500), Duration::ZERO);
        // This clock far ahead of the store's: due long ago.
        assert_eq!(due.remaining(i64::MAX), Duration::ZERO);
        // Behind it (or the store's ahead): the backoff, not more.
        assert_eq!(due.remaining(0), Duration::from_millis(4_500));
        assert_eq!(due.remaining(i64::MIN), Duration::from_millis(4_500));
    }

    struct NoCancel;

    impl Cancel for NoCancel {
        fn cancel(&self) {}
    }

    /// Takes `lock` in a task of its own, then holds it until told.
    fn taker(
        lock: &Arc<FlushLock>,
    ) -> (
        tokio::task::JoinHandle<()>,
        tokio::sync::oneshot::Receiver<()>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let (taken, told_taken) = tokio::sync::oneshot::channel();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let lock = Arc::clone(lock);
        let task = tokio::spawn(async move {
            let _guard = lock.lock().await;
            let _ = taken.send(());
            let _ = released.await;
        });
        (task, told_taken, release)
    }

    #[tokio::test]
    async fn a_commit_waiting_for_the_flush_lock_takes_it_once_released() {
        let lock = Arc::new(FlushLock::new(Arc::new(NoCancel)));
        let held = lock.try_lock().expect("a free lock");
        assert!(lock.try_lock().is_none(), "a held lock taken again");
        // Two waiters; the first gives up before the release: the release
        // still reaches the second.
        let (first, _, _) = taker(&lock);
        let (second, mut second_taken, release_second) = taker(&lock);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(second_taken.try_recv().is_err(), "taken while held");
        first.abort();
        let _ = first.await;
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), second_taken)
            .await
            .expect("the waiter took the lock once released")
            .expect("taken");
        assert!(lock.try_lock().is_none(), "taken by the waiter");
        let _ = release_second.send(());
        second.await.expect("the waiter ended");
        assert!(lock.try_lock().is_some(), "released by the waiter");
    }

    /// A database error's message names its cause: the engine and the
    /// worker log an error's `Display` alone, and "committing failed"
    /// told a full disk from nothing else.
    #[test]
    fn a_backend_error_names_its_cause() {
        let error = StoreError::Backend {
            store: "the test store".into(),
            what: "appending events".into(),
            source: "connection reset".into(),
        };
        assert_eq!(
            error.to_string(),
            "the test store: appending events failed: connection reset"
        );
    }

    /// SQLite's full disk (SQLITE_FULL, as the store's writer passes it
    /// on: its text) says what to do, once.
    #[cfg(feature = "sqlite")]
    #[test]
    fn a_full_disk_says_to_free_space() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (b BLOB); PRAGMA max_page_count=4;")
            .unwrap();
        let full = conn
            .execute("INSERT INTO t VALUES (zeroblob(100000))", [])
            .unwrap_err();
        assert_eq!(
            full.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DiskFull)
        );
        let expected = "the SQLite store `x.db`: committing (appending events) failed: \
             database or disk is full; free disk space: the store carries on by \
             itself once there is room";
        // As the writer passes a commit's error on (its text), and as the
        // error itself.
        for source in [Cause::from(full.to_string()), Box::new(full)] {
            let error = StoreError::Backend {
                store: "the SQLite store `x.db`".into(),
                what: "committing (appending events)".into(),
                source,
            };
            assert_eq!(error.to_string(), expected);
        }
    }

    #[test]
    fn a_read_only_error_tells_chmod_only_where_it_can_help() {
        let path = std::path::PathBuf::from("x.db");
        let permissions = StoreError::ReadOnly {
            path: path.clone(),
            detail: "the file's permissions forbid writing".into(),
        };
        assert!(
            permissions
                .to_string()
                .ends_with("(e.g. `chmod u+w`), or copy it somewhere writable")
        );
        let mount = StoreError::ReadOnly {
            path,
            detail: "its filesystem is mounted read-only (`mount` shows `ro` for it), so `chmod` cannot help".into(),
        };
        assert_eq!(
            mount.to_string(),
            "`x.db` is read-only (its filesystem is mounted read-only (`mount` shows `ro` for it), so `chmod` cannot help)"
        );
    }
}
