//! Lifecycle vocabulary: the statuses of an execution and of its steps,
//! a step's outcome and kind, each with the snake_case label that logs,
//! stores and tools use.
//!
//! A leaf module: the log's vocabulary, the reports and the definitions all
//! name these, so they sit below all of them (see `tests/layers.rs`).

use std::fmt;

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
        f.pad(self.label())
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
        f.pad(self.label())
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

/// A step's place in the saga's failure semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepKind {
    /// Has a compensation, run on rollback.
    Compensable,
    /// Nothing to undo (a validation, a read): skipped on rollback.
    NoUndo,
    /// The point of no return: once it succeeds the saga only goes forward.
    Pivot,
    /// After the pivot: no compensation, retried by its policy, and a
    /// failure for good leaves the run stuck.
    Retriable,
}

impl StepKind {
    /// A lowercase label, for logs and diagrams.
    pub fn label(self) -> &'static str {
        match self {
            StepKind::Compensable => "compensable",
            StepKind::NoUndo => "no_undo",
            StepKind::Pivot => "pivot",
            StepKind::Retriable => "retriable",
        }
    }
}

impl StepStatus {
    /// Every status, in the order of a step's life.
    pub const ALL: [StepStatus; 8] = [
        StepStatus::Pending,
        StepStatus::Running,
        StepStatus::Succeeded,
        StepStatus::Failed,
        StepStatus::Compensating,
        StepStatus::Compensated,
        StepStatus::CompensationFailed,
        StepStatus::Skipped,
    ];

    /// The status with this [`label`](Self::label), if any.
    pub fn from_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.label() == label)
    }
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 4] = [
        Outcome::NotStarted,
        Outcome::Applied,
        Outcome::NotApplied,
        Outcome::Unknown,
    ];

    /// The outcome with this [`label`](Self::label), if any.
    pub fn from_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.label() == label)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.label())
    }
}

impl StepKind {
    /// Every kind.
    pub const ALL: [StepKind; 4] = [
        StepKind::Compensable,
        StepKind::NoUndo,
        StepKind::Pivot,
        StepKind::Retriable,
    ];

    /// The kind with this [`label`](Self::label), if any.
    pub fn from_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.label() == label)
    }
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.label())
    }
}

/// Serialized as its label (what `Display` prints), and read back from it.
macro_rules! serde_as_label {
    ($($ty:ident: $what:literal),* $(,)?) => {$(
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.label())
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let label = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                $ty::from_label(&label).ok_or_else(|| {
                    let expected: Vec<&str> = $ty::ALL.iter().map(|s| s.label()).collect();
                    serde::de::Error::custom(format!(
                        concat!("unknown ", $what, " `{}`, expected one of: {}"),
                        label,
                        expected.join(", ")
                    ))
                })
            }
        }
    )*};
}

serde_as_label! {
    ExecutionStatus: "execution status",
    StepStatus: "step status",
    Outcome: "outcome",
    StepKind: "step kind",
}
