//! [`SagaReport`]: what happened in one run, step by step.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::id::ExecutionId;
use crate::step::StepKind;

/// Where an execution is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecutionStatus {
    /// Going forward.
    Running,
    /// Rolling back.
    Compensating,
    /// Every step succeeded.
    Completed,
    /// A step failed and everything that took effect was undone.
    Compensated,
    /// Cancelled before the pivot and rolled back.
    Cancelled,
    /// Can go neither forward nor back on its own; needs an operator.
    Stuck,
    /// Given up by an operator.
    Abandoned,
}

impl ExecutionStatus {
    /// Every status, in the order of the lifecycle.
    pub const ALL: [ExecutionStatus; 7] = [
        ExecutionStatus::Running,
        ExecutionStatus::Compensating,
        ExecutionStatus::Completed,
        ExecutionStatus::Compensated,
        ExecutionStatus::Cancelled,
        ExecutionStatus::Stuck,
        ExecutionStatus::Abandoned,
    ];

    /// The status with this [`label`](Self::label), if any.
    pub fn from_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.label() == label)
    }

    /// A snake_case label, for logs and tools.
    pub fn label(self) -> &'static str {
        match self {
            ExecutionStatus::Running => "running",
            ExecutionStatus::Compensating => "compensating",
            ExecutionStatus::Completed => "completed",
            ExecutionStatus::Compensated => "compensated",
            ExecutionStatus::Cancelled => "cancelled",
            ExecutionStatus::Stuck => "stuck",
            ExecutionStatus::Abandoned => "abandoned",
        }
    }

    /// Whether the execution has ended (successfully or not) and will not
    /// change on its own.
    pub fn is_finished(self) -> bool {
        !matches!(
            self,
            ExecutionStatus::Running | ExecutionStatus::Compensating
        )
    }
}

impl fmt::Display for ExecutionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Where a step is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepStatus {
    /// Not started.
    Pending,
    /// Its action is running (or being retried).
    Running,
    /// Its action succeeded.
    Succeeded,
    /// Its action failed for good.
    Failed,
    /// Its compensation is running.
    Compensating,
    /// Its compensation succeeded.
    Compensated,
    /// Its compensation failed for good.
    CompensationFailed,
    /// A step with nothing to undo, passed over by a rollback.
    Skipped,
}

impl StepStatus {
    /// A snake_case label, for logs and tools.
    pub fn label(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Compensating => "compensating",
            StepStatus::Compensated => "compensated",
            StepStatus::CompensationFailed => "compensation_failed",
            StepStatus::Skipped => "skipped",
        }
    }
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Whether a step's action took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The action never started.
    NotStarted,
    /// The action succeeded: it took effect.
    Applied,
    /// Every attempt failed cleanly: no effect.
    NotApplied,
    /// Some attempt may have taken effect (a timeout, a panic, an error
    /// marked so): compensated on rollback like an applied step.
    Unknown,
}

impl Outcome {
    /// A snake_case label, for logs and tools.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::NotStarted => "not_started",
            Outcome::Applied => "applied",
            Outcome::NotApplied => "not_applied",
            Outcome::Unknown => "unknown",
        }
    }

    /// Whether a rollback must compensate the step.
    pub fn needs_compensation(self) -> bool {
        matches!(self, Outcome::Applied | Outcome::Unknown)
    }
}

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
