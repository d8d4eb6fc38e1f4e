//! [`SagaReport`]: what happened in one run, step by step.
//!
//! Reports are `Serialize` and `Deserialize`, so a handler can return one:
//! statuses, outcomes and kinds as their labels (`"compensated"`), the id
//! as its text, durations as integer microseconds in `*_us` fields. Step
//! error text (`last_error`) is user data: escape it where a terminal
//! shows it, and leave it out of what an untrusted client sees if it may
//! hold secrets.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::ExecutionId;
use crate::name::Name;
use crate::status::StepKind;
pub use crate::status::{ExecutionStatus, Outcome, StepStatus};

/// One step of a run.
///
/// Serialized as `{"name", "kind", "status", "outcome", "attempts",
/// "compensation_attempts", "duration_us", "compensation_duration_us",
/// "last_error"}` (as [`SagaReport`] says).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "StepWire", from = "StepWire")]
#[non_exhaustive]
pub struct StepReport {
    /// The step's name.
    pub name: Name,
    /// Its kind in the saga.
    pub kind: StepKind,
    /// Its status at the end of the run.
    pub status: StepStatus,
    /// Whether its action took effect.
    pub outcome: Outcome,
    /// Attempts of its action, those before an operator's resume included
    /// (the resume gives a fresh budget: its attempts count from 1 again,
    /// as [`StepInfo::attempt`](crate::StepInfo::attempt) says).
    pub attempts: u32,
    /// Attempts of its compensation, likewise.
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
///
/// Serialized as `{"saga", "execution_id", "status", "steps",
/// "cancel_ignored", "duration_us"}`: statuses, outcomes and kinds as
/// their labels (`"compensated"`), the id as its text, durations as
/// integer microseconds. Step error text (`last_error`) is user data:
/// escape it where a terminal shows it, and leave it out of what an
/// untrusted client sees if it may hold secrets.
///
/// ```
/// # use saga_core::{Saga, Step, StepError, StepInfo};
/// let saga = Saga::builder("greet")
///     .step(Step::new("hello", |_: &mut (), _: &StepInfo<'_>| Ok::<_, StepError>(())))
///     .build()?;
/// let report = saga.run_blocking(&mut ())?;
/// let json = serde_json::to_value(&report)?;
/// assert_eq!(json["status"], "completed");
/// assert_eq!(json["steps"][0]["outcome"], "applied");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "ReportWire", from = "ReportWire")]
#[non_exhaustive]
pub struct SagaReport {
    /// The saga's name.
    pub saga: Name,
    /// The execution's id.
    pub execution_id: ExecutionId,
    /// How the execution ended.
    pub status: ExecutionStatus,
    /// Every step, in definition order.
    pub steps: Vec<StepReport>,
    /// Whether a cancellation arrived that the run did not act on: after
    /// the pivot, or during the last step (nothing was left to stop).
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

/// A duration as whole microseconds (saturating).
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// [`StepReport`] as serialized.
#[derive(Serialize, Deserialize)]
struct StepWire {
    name: String,
    kind: StepKind,
    status: StepStatus,
    outcome: Outcome,
    attempts: u32,
    compensation_attempts: u32,
    duration_us: u64,
    compensation_duration_us: u64,
    last_error: Option<String>,
}

impl From<StepReport> for StepWire {
    fn from(s: StepReport) -> Self {
        StepWire {
            name: s.name.to_string(),
            kind: s.kind,
            status: s.status,
            outcome: s.outcome,
            attempts: s.attempts,
            compensation_attempts: s.compensation_attempts,
            duration_us: micros(s.duration),
            compensation_duration_us: micros(s.compensation_duration),
            last_error: s.last_error,
        }
    }
}

impl From<StepWire> for StepReport {
    fn from(s: StepWire) -> Self {
        StepReport {
            name: s.name.into(),
            kind: s.kind,
            status: s.status,
            outcome: s.outcome,
            attempts: s.attempts,
            compensation_attempts: s.compensation_attempts,
            duration: Duration::from_micros(s.duration_us),
            compensation_duration: Duration::from_micros(s.compensation_duration_us),
            last_error: s.last_error,
        }
    }
}

/// [`SagaReport`] as serialized.
#[derive(Serialize, Deserialize)]
struct ReportWire {
    saga: String,
    execution_id: ExecutionId,
    status: ExecutionStatus,
    steps: Vec<StepReport>,
    cancel_ignored: bool,
    duration_us: u64,
}

impl From<SagaReport> for ReportWire {
    fn from(r: SagaReport) -> Self {
        ReportWire {
            saga: r.saga.to_string(),
            execution_id: r.execution_id,
            status: r.status,
            steps: r.steps,
            cancel_ignored: r.cancel_ignored,
            duration_us: micros(r.duration),
        }
    }
}

impl From<ReportWire> for SagaReport {
    fn from(r: ReportWire) -> Self {
        SagaReport {
            saga: r.saga.into(),
            execution_id: r.execution_id,
            status: r.status,
            steps: r.steps,
            cancel_ignored: r.cancel_ignored,
            duration: Duration::from_micros(r.duration_us),
        }
    }
}
