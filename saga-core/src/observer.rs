//! [`SagaObserver`]: every lifecycle event of a run, for custom loggers,
//! metrics and before/after hooks.

use std::time::Duration;

use crate::error::StepError;
use crate::id::ExecutionId;
use crate::report::ExecutionStatus;

/// A lifecycle event of one run.
///
/// An execution that a take-over ends stuck without running it (a step
/// cut off by a crash too often, see
/// [`Worker::with_crash_limit`](crate::Worker::with_crash_limit)) is told
/// with `SagaFinished` alone (`elapsed` zero).
#[derive(Debug)]
#[non_exhaustive]
pub enum SagaEvent<'a> {
    /// The run started: the execution's first run.
    SagaStarted,
    /// A run carried the execution on from its log, in place of
    /// [`SagaStarted`](Self::SagaStarted): a take-over after its owner
    /// died or stopped, a [`recover`](crate::SagaEngine::recover), or an
    /// operator's [`resume`](crate::SagaEngine::resume) of a stuck one. A
    /// step a crash cut off starts again after this, with the same key.
    ///
    /// An execution has one `SagaStarted`, a `SagaFinished` per end (a
    /// stuck end included) and a `SagaResumed` per run after the first.
    /// Executions in flight are started, plus resumed `after_stuck`, minus
    /// finished (an execution an operator
    /// [abandons](crate::SagaEngine::abandon) before its end is told
    /// nothing: count abandons apart).
    SagaResumed {
        /// Whether it had ended stuck (told with a `SagaFinished`) and an
        /// operator's resume carries it on; `false` for a take-over of a
        /// run cut off before its end.
        after_stuck: bool,
    },
    /// An attempt of a step's action is about to run (the "before" hook).
    StepStarted {
        /// The step.
        step: &'a str,
        /// The attempt, from 1.
        attempt: u32,
    },
    /// A step's action succeeded (an "after" hook).
    StepSucceeded {
        /// The step.
        step: &'a str,
        /// The attempt that succeeded.
        attempt: u32,
        /// Time in the action, retries included.
        elapsed: Duration,
    },
    /// An attempt of a step's action failed (an "after" hook).
    StepFailed {
        /// The step.
        step: &'a str,
        /// The attempt that failed.
        attempt: u32,
        /// Its error.
        error: &'a StepError,
        /// The delay before the next attempt, or `None` if the step failed
        /// for good.
        retry_in: Option<Duration>,
    },
    /// A compensation attempt is about to run.
    CompensationStarted {
        /// The step being compensated.
        step: &'a str,
        /// The attempt, from 1.
        attempt: u32,
    },
    /// A compensation succeeded.
    CompensationSucceeded {
        /// The step compensated.
        step: &'a str,
        /// The attempt that succeeded.
        attempt: u32,
        /// Time in the compensation, retries included.
        elapsed: Duration,
    },
    /// A compensation attempt failed.
    CompensationFailed {
        /// The step whose compensation failed.
        step: &'a str,
        /// The attempt that failed.
        attempt: u32,
        /// Its error.
        error: &'a StepError,
        /// The delay before the next attempt, or `None` if the compensation
        /// failed for good.
        retry_in: Option<Duration>,
    },
    /// A cancellation stops the run before its pivot: it rolls back what
    /// took effect (the compensations follow) and ends cancelled, or stuck
    /// if a compensation fails for good. Told by the run that saw the
    /// request, once; a rollback a take-over carries on from the log is
    /// not told again (a crash before the rollback's start was logged
    /// leaves it to the run that takes over, which tells it).
    CancelHonoured {
        /// The step about to run when the cancellation was seen, or the
        /// one whose attempt or retries it stopped.
        step: &'a str,
    },
    /// A cancellation arrived after the pivot, or during the last step:
    /// recorded and ignored.
    CancelIgnored {
        /// The step about to run when the cancellation was seen, or the
        /// last step if it came during that one.
        step: &'a str,
    },
    /// The run ended: a durable run's, once its end is in the log (if that
    /// write fails, the execution is still running in the store, and
    /// whoever carries it on tells of its end).
    SagaFinished {
        /// How it ended.
        status: ExecutionStatus,
        /// The run's duration.
        elapsed: Duration,
    },
}

/// Which run an event belongs to.
#[derive(Debug, Clone, Copy)]
pub struct RunInfo<'a> {
    /// The saga's name.
    pub saga: &'a str,
    /// The execution's id.
    pub execution_id: &'a ExecutionId,
}

/// Receives every lifecycle event of the runs it is attached to, in order,
/// on the thread running the saga: keep it quick. A panic in
/// [`on_event`](SagaObserver::on_event) is caught and logged (target `saga`,
/// level error); the run and the other observers go on.
///
/// Attach with [`SagaBuilder::observer`](crate::SagaBuilder::observer) (every
/// run of the saga) or [`RunOptions::with_observer`](crate::RunOptions::with_observer)
/// (one run).
///
/// ```
/// use std::sync::Mutex;
/// use saga_core::{RunInfo, SagaEvent, SagaObserver};
///
/// #[derive(Default)]
/// struct Before(Mutex<Vec<String>>);
///
/// impl SagaObserver for Before {
///     fn on_event(&self, _run: &RunInfo<'_>, event: &SagaEvent<'_>) {
///         if let SagaEvent::StepStarted { step, .. } = event {
///             self.0.lock().unwrap().push(step.to_string());
///         }
///     }
/// }
/// ```
pub trait SagaObserver: Send + Sync {
    /// Called for each event.
    fn on_event(&self, run: &RunInfo<'_>, event: &SagaEvent<'_>);
}
