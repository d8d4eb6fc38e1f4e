//! [`SagaReport`]: what happened in one run, step by step.

use std::sync::Arc;
use std::time::Duration;

use crate::id::ExecutionId;
use crate::status::StepKind;
pub use crate::status::{ExecutionStatus, Outcome, StepStatus};

/// One step of a run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StepReport {
    /// The step's name.
    pub name: Arc<str>,
    /// Its kind in the saga.
    pub kind: StepKind,
    /// Its status at the end of the run.
    pub status: StepStatus,
    /// Whether its action took effect.
    pub outcome: Outcome,
    /// Attempts of its action.
    pub attempts: u32,
    /// Attempts of its compensation.
    pub compensation_attempts: u32,
    /// Time spent in its action, retries and backoff included (monotonic).
    pub duration: Duration,
    /// Time spent in its compensation, retries included (monotonic).
    pub compensation_duration: Duration,
    /// The last error of its action or compensation, if any: whether the
    /// step failed for good with it or a retry recovered from it.
    pub last_error: Option<String>,
}

/// What happened in one run of a saga.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SagaReport {
    /// The saga's name.
    pub saga: Arc<str>,
    /// The execution's id.
    pub execution_id: ExecutionId,
    /// How the execution ended.
    pub status: ExecutionStatus,
    /// Every step, in definition order.
    pub steps: Vec<StepReport>,
    /// Whether a cancellation arrived after the pivot and was ignored.
    pub cancel_ignored: bool,
    /// The run's duration (monotonic).
    pub duration: Duration,
}

impl SagaReport {
    /// The report of the step called `name`.
    pub fn step(&self, name: &str) -> Option<&StepReport> {
        self.steps.iter().find(|s| &*s.name == name)
    }

    /// The names of the steps whose compensation succeeded, in the order
    /// they were compensated.
    pub fn compensated_steps(&self) -> impl Iterator<Item = &str> {
        self.steps
            .iter()
            .rev()
            .filter(|s| s.status == StepStatus::Compensated)
            .map(|s| &*s.name)
    }

    /// Each step's name and status, in definition order.
    pub fn statuses(&self) -> Vec<(&str, StepStatus)> {
        self.steps.iter().map(|s| (&*s.name, s.status)).collect()
    }
}
