//! Errors: what a step returns ([`StepError`]), what an invalid definition
//! gives ([`BuildError`]) and how a run ends badly ([`SagaError`]).

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use crate::name::Name;
use crate::report::SagaReport;

/// The boxed error type user code may return: anything that converts into it
/// (a `thiserror` enum, an `anyhow::Error`, a `String`, a `&str`) works.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The error of one attempt of a step or a compensation.
///
/// Built from any user error (`E: Into<BoxError>`, so `?` converts), then
/// optionally marked:
///
/// - [`permanent`](StepError::permanent): no retry can fix it (a declined
///   card, a validation error), so no policy tries again; every other error
///   is retried while the step's policy has attempts left;
/// - [`outcome_unknown`](StepError::outcome_unknown): the step may have taken
///   effect (a request was sent, its answer was lost), so a rollback
///   compensates it too.
///
/// The engine makes its own step errors for a timed-out attempt
/// ([`Timeout`], unknown), a panic ([`Panicked`], unknown) and
/// a cancel-safe step dropped by a cancellation ([`Interrupted`], unknown).
///
/// `StepError` deliberately does not implement [`std::error::Error`]: that is
/// what lets it convert from every error type with `?`, as `anyhow` does.
/// Reach the user's error with [`error`](StepError::error) or
/// [`downcast_ref`](StepError::downcast_ref).
///
/// ```
/// use saga_core::StepError;
///
/// let e = StepError::new("card declined").permanent();
/// assert!(e.is_permanent());
/// assert!(!e.is_outcome_unknown());
/// assert_eq!(e.to_string(), "card declined");
/// ```
pub struct StepError {
    error: BoxError,
    permanent: bool,
    outcome_unknown: bool,
}

impl StepError {
    /// Wraps a user error; not permanent (a retry policy retries it) and
    /// not of unknown outcome.
    pub fn new(error: impl Into<BoxError>) -> Self {
        StepError {
            error: error.into(),
            permanent: false,
            outcome_unknown: false,
        }
    }

    /// Marks the error as one no retry can fix: no policy tries the step
    /// (or the compensation) again. Before the pivot the run rolls back;
    /// on the pivot with an unknown outcome, after the pivot, or in a
    /// compensation, it ends stuck at once.
    #[must_use]
    pub fn permanent(mut self) -> Self {
        self.permanent = true;
        self
    }

    /// Does nothing: since 0.2.0 every error not marked
    /// [`permanent`](Self::permanent) is retried by the step's policy.
    #[deprecated(
        since = "0.2.0",
        note = "every error is retried unless marked `permanent()`; drop the call"
    )]
    #[must_use]
    pub fn retryable(self) -> Self {
        self
    }

    /// Marks the step's effect as unknown: it may have happened, so a
    /// rollback compensates this step too (compensations must tolerate
    /// "nothing to undo").
    #[must_use]
    pub fn outcome_unknown(mut self) -> Self {
        self.outcome_unknown = true;
        self
    }

    /// Whether the error was marked [`permanent`](Self::permanent).
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// Whether a retry policy may retry the error: whether it is not
    /// permanent.
    #[deprecated(since = "0.2.0", note = "use `!is_permanent()`")]
    pub fn is_retryable(&self) -> bool {
        !self.permanent
    }

    /// Whether the step may have taken effect despite the error.
    pub fn is_outcome_unknown(&self) -> bool {
        self.outcome_unknown
    }

    /// Whether the attempt was cut off by its timeout.
    pub fn is_timeout(&self) -> bool {
        self.error.is::<Timeout>()
    }

    /// Whether the attempt panicked.
    pub fn is_panic(&self) -> bool {
        self.error.is::<Panicked>()
    }

    /// The underlying error, as returned by the user's code.
    pub fn error(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.error
    }

    /// The underlying error, if it is a `T`.
    pub fn downcast_ref<T: StdError + 'static>(&self) -> Option<&T> {
        self.error.downcast_ref::<T>()
    }

    /// Unwraps the user's error.
    pub fn into_inner(self) -> BoxError {
        self.error
    }

    pub(crate) fn timeout(after: Duration) -> Self {
        StepError::new(Timeout { after }).outcome_unknown()
    }

    pub(crate) fn panicked(payload: &(dyn std::any::Any + Send)) -> Self {
        let message = panic_message(payload);
        StepError::new(Panicked { message }).outcome_unknown()
    }

    pub(crate) fn interrupted() -> Self {
        StepError::new(Interrupted).outcome_unknown()
    }
}

/// The message of a panic's payload (a `&str` or a `String`, as `panic!`
/// makes them).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

impl<E: Into<BoxError>> From<E> for StepError {
    fn from(error: E) -> Self {
        StepError::new(error)
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl fmt::Debug for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepError")
            .field("error", &self.error)
            .field("permanent", &self.permanent)
            .field("outcome_unknown", &self.outcome_unknown)
            .finish()
    }
}

/// An attempt ran longer than its step's timeout (or, for a compensation,
/// its step's undo timeout) and was dropped; its outcome is unknown.
#[derive(Debug, Clone, thiserror::Error)]
#[error("attempt timed out after {after:?}")]
pub struct Timeout {
    /// The step's timeout, or its undo timeout.
    pub after: Duration,
}

/// User code panicked; the panic was caught and its outcome is unknown.
#[derive(Debug, Clone, thiserror::Error)]
#[error("panicked: {message}")]
pub struct Panicked {
    /// The panic's message, when it was a string.
    pub message: String,
}

/// A cancel-safe step was dropped mid-flight by a cancellation; its outcome
/// is unknown.
#[derive(Debug, Clone, thiserror::Error)]
#[error("interrupted by cancellation")]
pub struct Interrupted;

/// A saga definition is invalid; no run exists yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The saga has no steps.
    #[error("saga `{saga}` has no steps")]
    NoSteps {
        /// The saga's name.
        saga: String,
    },
    /// The saga's name is empty; names identify sagas in logs, reports and
    /// an engine's registry.
    #[error("a saga needs a name: `Saga::builder` was given an empty one")]
    EmptySagaName,
    /// The version given to [`SagaBuilder::version`](crate::SagaBuilder::version)
    /// is empty or blank.
    #[error("saga `{saga}` has an empty version; give it a label such as \"2\", or no version")]
    EmptyVersion {
        /// The saga's name.
        saga: String,
    },
    /// A step's name is empty.
    #[error("saga `{saga}` has a step with an empty name")]
    EmptyName {
        /// The saga's name.
        saga: String,
    },
    /// Two steps share a name; names identify steps in logs, reports and
    /// idempotency keys.
    #[error("saga `{saga}` has two steps named `{step}`")]
    DuplicateStep {
        /// The saga's name.
        saga: String,
        /// The repeated name.
        step: String,
    },
    /// A second pivot: a saga has at most one point of no return.
    #[error("saga `{saga}` has two pivots: `{first}` and `{second}`")]
    SecondPivot {
        /// The saga's name.
        saga: String,
        /// The first pivot.
        first: String,
        /// The second pivot.
        second: String,
    },
    /// A compensation on the pivot or on a step after it: nothing rolls back
    /// once the pivot has succeeded.
    #[error(
        "step `{step}` of saga `{saga}` has a compensation but is on or after the pivot `{pivot}`"
    )]
    CompensationAfterPivot {
        /// The saga's name.
        saga: String,
        /// The step with the compensation.
        step: String,
        /// The pivot.
        pivot: String,
    },
    /// A timeout on a sync step: a sync step cannot be pre-empted.
    #[error(
        "step `{step}` of saga `{saga}` is sync and has a timeout; a sync step cannot be pre-empted, make it async"
    )]
    TimeoutOnSyncStep {
        /// The saga's name.
        saga: String,
        /// The step.
        step: String,
    },
    /// A timeout of zero: every attempt would time out before it starts.
    #[error(
        "step `{step}` of saga `{saga}` has a timeout of zero, which would fail every attempt before it starts; give a positive duration or none"
    )]
    ZeroTimeout {
        /// The saga's name.
        saga: String,
        /// The step.
        step: String,
    },
    /// An undo timeout ([`Step::undo_timeout`](crate::Step::undo_timeout))
    /// on a step whose compensation is sync: a sync compensation cannot be
    /// pre-empted.
    #[error(
        "step `{step}` of saga `{saga}` has an undo timeout but a sync compensation; a sync compensation cannot be pre-empted, make it async (`undo_async`)"
    )]
    UndoTimeoutOnSyncUndo {
        /// The saga's name.
        saga: String,
        /// The step.
        step: String,
    },
    /// An undo timeout of zero: every attempt of the compensation would
    /// time out before it starts.
    #[error(
        "step `{step}` of saga `{saga}` has an undo timeout of zero, which would fail every attempt of its compensation before it starts; give a positive duration or none"
    )]
    ZeroUndoTimeout {
        /// The saga's name.
        saga: String,
        /// The step.
        step: String,
    },
    /// An undo timeout on a step without a compensation: nothing to time.
    #[error(
        "step `{step}` of saga `{saga}` has an undo timeout but no compensation; give it one with `undo_async`, or drop `undo_timeout`"
    )]
    UndoTimeoutWithoutUndo {
        /// The saga's name.
        saga: String,
        /// The step.
        step: String,
    },
    /// A step name containing `/`. A step's idempotency key is
    /// `{execution_id}/{step}` (see [`StepInfo`](crate::StepInfo)); the
    /// step follows the last `/` only if its name has none, and execution
    /// ids may contain `/`.
    #[error(
        "step `{step}` of saga `{saga}` has a `/` in its name, which would make idempotency keys (`{{execution_id}}/{{step}}`) ambiguous; rename the step, and if an older build ran this saga, finish its in-flight executions with that build first (a renamed step gets new keys)"
    )]
    SlashInStepName {
        /// The saga's name.
        saga: String,
        /// The step's name.
        step: String,
    },
    /// A parallel group without steps.
    #[error("saga `{saga}` has an empty parallel group")]
    EmptyGroup {
        /// The saga's name.
        saga: String,
    },
    /// A parallel branch whose action or compensation takes the context
    /// exclusively (`&mut C`): branches run at once and share it (`&C`).
    #[error(
        "step `{step}` of saga `{saga}` is in a parallel group but takes the context as `&mut`; build it with `Step::shared` (or `shared_async`) and `undo_shared` (or `undo_shared_async`), and keep what its compensation needs in its output"
    )]
    ExclusiveContextInGroup {
        /// The saga's name.
        saga: String,
        /// The step.
        step: String,
    },
    /// A step in a parallel group is the pivot: the point of no return
    /// must be one step, run alone, so that what comes before it can be
    /// compensated and what follows it cannot.
    #[error(
        "step `{step}` of saga `{saga}` is the pivot but is in a parallel group; make it a step of its own, before or after the group"
    )]
    PivotInGroup {
        /// The saga's name.
        saga: String,
        /// The step.
        step: String,
    },
    /// A retry policy allows zero attempts.
    #[error("step `{step}` of saga `{saga}` has a retry policy of zero attempts; use at least 1")]
    ZeroAttempts {
        /// The saga's name.
        saga: String,
        /// The step.
        step: String,
    },
}

/// One failure recorded during a run: which step, in which phase, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The step whose action or compensation failed.
    pub step: Name,
    /// Whether it was the step's compensation that failed.
    pub compensation: bool,
    /// The attempt that failed last.
    pub attempt: u32,
    /// The error's message.
    pub message: String,
    /// Whether the failed attempt may have taken effect.
    pub outcome_unknown: bool,
    /// Whether the error was marked [`permanent`](StepError::permanent).
    pub permanent: bool,
}

/// Where a stuck run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StuckPhase {
    /// Going forward: the pivot's outcome is unknown, or a step on or after
    /// the pivot failed for good. Finishing the run means making the
    /// remaining steps succeed.
    Forward,
    /// Rolling back: a compensation failed for good. Finishing the run
    /// means making the remaining compensations succeed.
    Rollback,
}

/// How a run ended, when it did not complete.
///
/// Every variant carries the [`SagaReport`]. `source()` is the error of the
/// step that failed (for `Stuck` in rollback: the compensation that failed):
/// the user's own error after an in-memory run, its logged form
/// ([`LoggedError`](crate::LoggedError): message, cause chain as text,
/// marks) after a durable one, so that every engine reading the log gives
/// the same error. Its text is user data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SagaError {
    /// A step failed and every step that took effect was compensated: the
    /// systems are back where they were.
    #[error("saga `{saga}` failed at step `{step}` and was rolled back ({})", rollback_summary(.report))]
    Compensated {
        /// The saga's name.
        saga: Name,
        /// The step that failed.
        step: Name,
        /// That step's error.
        #[source]
        error: BoxError,
        /// The run's report.
        report: Box<SagaReport>,
    },
    /// The run can go neither forward nor back on its own; an operator must
    /// act. `failures` lists every error that led here, in order.
    #[error("saga `{saga}` is stuck at {} of step `{step}`{}: {}", if *.phase == StuckPhase::Rollback { "the compensation" } else { "the action" }, unknown_note(.phase, .step, .report), stuck_summary(.phase, .remaining))]
    Stuck {
        /// The saga's name.
        saga: Name,
        /// The step (or compensation) that failed last.
        step: Name,
        /// Forward or rollback.
        phase: StuckPhase,
        /// The last error.
        #[source]
        error: BoxError,
        /// Every failure of the run, in order.
        failures: Vec<Failure>,
        /// What remains to be done: steps to run (forward) or steps to
        /// compensate (rollback), in the order they would run.
        remaining: Box<[Name]>,
        /// The run's report.
        report: Box<SagaReport>,
    },
    /// A durable run could not write its log, and stopped at that point
    /// without running another step or compensation. Its store still holds
    /// the log up to the last write that succeeded: recovery (once the
    /// store works again) carries the execution on from there.
    #[error("saga `{saga}` stopped: its durable log could not be written")]
    Store {
        /// The saga's name.
        saga: Name,
        /// The store's error.
        #[source]
        error: Box<crate::journal::StoreError>,
        /// The run's report, as far as it got.
        report: Box<SagaReport>,
    },
    /// The run was cancelled before its pivot and every step that took
    /// effect was compensated.
    #[error("saga `{saga}` was cancelled and rolled back ({})", rollback_summary(.report))]
    Cancelled {
        /// The saga's name.
        saga: Name,
        /// The run's report.
        report: Box<SagaReport>,
    },
    /// An operator gave up on a durable execution
    /// ([`SagaEngine::abandon`](crate::SagaEngine::abandon)): nothing more
    /// runs, and nothing was compensated by it.
    #[error(
        "saga `{saga}` was abandoned by an operator; nothing more runs and nothing was compensated by it"
    )]
    Abandoned {
        /// The saga's name.
        saga: Name,
        /// The execution's report, as far as it got.
        report: Box<SagaReport>,
    },
}

impl SagaError {
    /// The run's report, whatever the variant.
    pub fn report(&self) -> &SagaReport {
        match self {
            SagaError::Compensated { report, .. }
            | SagaError::Stuck { report, .. }
            | SagaError::Cancelled { report, .. }
            | SagaError::Abandoned { report, .. }
            | SagaError::Store { report, .. } => report,
        }
    }

    /// Whether the run ended stuck.
    pub fn is_stuck(&self) -> bool {
        matches!(self, SagaError::Stuck { .. })
    }
}

fn rollback_summary(report: &SagaReport) -> String {
    let undone: Vec<&str> = report.compensated_steps().collect();
    if undone.is_empty() {
        "nothing to compensate".to_owned()
    } else {
        format!("compensated: {}", undone.join(", "))
    }
}

/// Going forward, a step whose outcome is unknown: an attempt may have
/// taken effect, whatever the last error says (a pivot cut off, then
/// declined for good).
fn unknown_note(phase: &StuckPhase, step: &str, report: &SagaReport) -> &'static str {
    let unknown = *phase == StuckPhase::Forward
        && report
            .step(step)
            .is_some_and(|s| s.outcome == crate::Outcome::Unknown);
    if unknown {
        ", whose outcome is unknown (an attempt may have taken effect)"
    } else {
        ""
    }
}

fn stuck_summary(phase: &StuckPhase, remaining: &[Name]) -> String {
    let what = match phase {
        StuckPhase::Forward => "steps still to run",
        StuckPhase::Rollback => "compensations still to run",
    };
    if remaining.is_empty() {
        format!("no {what}; resolve the failed one")
    } else {
        let names: Vec<&str> = remaining.iter().map(|s| &**s).collect();
        format!("{what}: {}", names.join(", "))
    }
}
