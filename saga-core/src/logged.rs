//! The logged form of errors and outcomes: what a durable log keeps of a
//! step's error ([`LoggedError`]: its message, its cause chain as text,
//! its permanent and outcome-unknown marks) and of how a run ended, so
//! that every engine reading the log gives the same
//! [`SagaError`](crate::SagaError), whichever process ran the execution.
//!
//! Both travel in an event's `detail` (JSON, since 0.2.0): a failure
//! event's holds its error's cause chain and marks, a `finished` event's
//! the run's outcome. A log written before has no detail; its errors are
//! their messages alone.

use crate::name::Name;
use std::error::Error as StdError;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{BoxError, Failure, SagaError, StepError, StuckPhase};
use crate::journal::Event;

/// A step's or a compensation's error as the durable log keeps it: its
/// message, its cause chain as text, and its marks. The errors inside the
/// [`SagaError`] that [`SagaEngine::wait`](crate::SagaEngine::wait)
/// returns are of this type, whether this process ran the execution or
/// another did; reach it with `error.downcast_ref::<LoggedError>()`.
///
/// Its text is user data (whatever the step's error said): escape it where
/// a terminal shows it ([`escape::user_text`](crate::escape::user_text)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedError {
    message: String,
    source: Option<Box<CauseText>>,
    permanent: bool,
    outcome_unknown: bool,
}

/// One cause of a [`LoggedError`], as text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CauseText {
    message: String,
    source: Option<Box<CauseText>>,
}

impl fmt::Display for CauseText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for CauseText {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|c| c as &(dyn StdError + 'static))
    }
}

impl LoggedError {
    /// The error a failure event (`step_failed`, `compensation_failed`)
    /// logged, with its cause chain and marks as the log keeps them (a log
    /// written before 0.2.0 has no chain: the message alone); `None` for
    /// an event without an error. What `saga show` prints.
    pub fn of_event(event: &Event) -> Option<LoggedError> {
        let message = event.error.as_deref()?;
        Some(Self::from_event(
            message,
            event.outcome_unknown,
            event.detail.as_deref(),
        ))
    }

    /// The error's message (its `Display`).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The cause chain below the message, outermost first, as text.
    pub fn causes(&self) -> Vec<&str> {
        let mut causes = Vec::new();
        let mut next = self.source.as_deref();
        while let Some(cause) = next {
            causes.push(cause.message.as_str());
            next = cause.source.as_deref();
        }
        causes
    }

    /// Whether the error was marked [`permanent`](StepError::permanent).
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// Whether the failed attempt may have taken effect.
    pub fn is_outcome_unknown(&self) -> bool {
        self.outcome_unknown
    }

    /// The logged form of a step's error.
    pub(crate) fn of(error: &StepError) -> Self {
        let mut causes = Vec::new();
        let mut next = error.error().source();
        while let Some(cause) = next {
            causes.push(cause.to_string());
            next = cause.source();
        }
        Self::from_parts(
            error.to_string(),
            causes,
            error.is_permanent(),
            error.is_outcome_unknown(),
        )
    }

    fn from_parts(
        message: String,
        causes: Vec<String>,
        permanent: bool,
        outcome_unknown: bool,
    ) -> Self {
        let source = causes.into_iter().rev().fold(None, |source, message| {
            Some(Box::new(CauseText { message, source }))
        });
        LoggedError {
            message,
            source,
            permanent,
            outcome_unknown,
        }
    }

    /// The error of a failure event: its message, its `outcome_unknown`
    /// column, and its detail (cause chain and marks) if it has one.
    pub(crate) fn from_event(message: &str, outcome_unknown: bool, detail: Option<&str>) -> Self {
        let detail = detail
            .and_then(|d| serde_json::from_str::<ErrorDetail>(d).ok())
            .unwrap_or_default();
        Self::from_parts(
            message.to_owned(),
            detail.causes,
            detail.permanent,
            outcome_unknown || detail.outcome_unknown,
        )
    }

    /// As a [`StepError`] with the same marks (its error is this one).
    pub(crate) fn into_step_error(self) -> StepError {
        let (permanent, unknown) = (self.permanent, self.outcome_unknown);
        let mut error = StepError::new(self);
        if permanent {
            error = error.permanent();
        }
        if unknown {
            error = error.outcome_unknown();
        }
        error
    }

    fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            causes: self.causes().into_iter().map(str::to_owned).collect(),
            permanent: self.permanent,
            outcome_unknown: self.outcome_unknown,
        }
    }
}

impl fmt::Display for LoggedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for LoggedError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|c| c as &(dyn StdError + 'static))
    }
}

/// What a failure event's detail holds: what its `error` column (the
/// message) and `outcome_unknown` column do not.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ErrorDetail {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    causes: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    permanent: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    outcome_unknown: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What the `rollback_started` event of a cancellation holds in its
/// detail (since 0.2.0): the steps whose last start was stopped before it
/// ran, as the request came with that start's commit. A start without an
/// end that it does not name was cut off by a crash, and may have taken
/// effect.
#[derive(Debug, Default, Serialize, Deserialize)]
struct RollbackDetail {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    not_run: Vec<u32>,
}

/// The detail of a cancellation's `rollback_started` event: `None` when no
/// start was stopped before it ran.
pub(crate) fn rollback_detail(not_run: Vec<u32>) -> Option<String> {
    if not_run.is_empty() {
        return None;
    }
    serde_json::to_string(&RollbackDetail { not_run }).ok()
}

/// The steps a cancellation's `rollback_started` detail names as stopped
/// before they ran: none in a log written before 0.2.0, or where the
/// detail does not read.
pub(crate) fn stopped_before_run(detail: Option<&str>) -> Vec<u32> {
    detail
        .and_then(|d| serde_json::from_str::<RollbackDetail>(d).ok())
        .map(|d| d.not_run)
        .unwrap_or_default()
}

/// The detail of a failure event for `error`: `None` when its message and
/// the event's columns say it all (no cause, not permanent).
pub(crate) fn failure_detail(error: &StepError) -> Option<String> {
    let detail = LoggedError::of(error).detail();
    if detail.causes.is_empty() && !detail.permanent && !detail.outcome_unknown {
        return None;
    }
    serde_json::to_string(&detail).ok()
}

/// A [`LoggedError`] as a `finished` event's detail holds it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ErrorRecord {
    message: String,
    #[serde(flatten)]
    detail: ErrorDetail,
}

impl ErrorRecord {
    fn of(error: &LoggedError) -> Self {
        ErrorRecord {
            message: error.message.clone(),
            detail: error.detail(),
        }
    }

    fn into_error(self) -> LoggedError {
        LoggedError::from_parts(
            self.message,
            self.detail.causes,
            self.detail.permanent,
            self.detail.outcome_unknown,
        )
    }
}

/// A [`Failure`] as a `finished` event's detail holds it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct FailureRecord {
    step: String,
    #[serde(default, skip_serializing_if = "is_false")]
    compensation: bool,
    attempt: u32,
    message: String,
    #[serde(default, skip_serializing_if = "is_false")]
    outcome_unknown: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    permanent: bool,
}

/// How a run ended, as a `finished` event's detail holds it (a completed
/// run has none).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub(crate) enum OutcomeRecord {
    Compensated {
        step: String,
        error: ErrorRecord,
    },
    Stuck {
        step: String,
        phase: String,
        error: ErrorRecord,
        failures: Vec<FailureRecord>,
        remaining: Vec<String>,
    },
    Cancelled,
}

/// The error inside a run's [`SagaError`], in its logged form: the error
/// a durable run puts there ([`LoggedError`]), or one made from the text.
fn logged(error: &BoxError) -> LoggedError {
    match error.downcast_ref::<LoggedError>() {
        Some(logged) => logged.clone(),
        None => LoggedError::of(&StepError::new(error.to_string())),
    }
}

/// The detail of a `finished` event for a run that ended with `error`.
pub(crate) fn outcome_detail(error: &SagaError) -> Option<String> {
    let record = match error {
        SagaError::Compensated { step, error, .. } => OutcomeRecord::Compensated {
            step: step.to_string(),
            error: ErrorRecord::of(&logged(error)),
        },
        SagaError::Stuck {
            step,
            phase,
            error,
            failures,
            remaining,
            ..
        } => OutcomeRecord::Stuck {
            step: step.to_string(),
            phase: phase_label(*phase).to_owned(),
            error: ErrorRecord::of(&logged(error)),
            failures: failures
                .iter()
                .map(|f| FailureRecord {
                    step: f.step.to_string(),
                    compensation: f.compensation,
                    attempt: f.attempt,
                    message: f.message.clone(),
                    outcome_unknown: f.outcome_unknown,
                    permanent: f.permanent,
                })
                .collect(),
            remaining: remaining.iter().map(|s| s.to_string()).collect(),
        },
        SagaError::Cancelled { .. } => OutcomeRecord::Cancelled,
        _ => return None,
    };
    serde_json::to_string(&record).ok()
}

fn phase_label(phase: StuckPhase) -> &'static str {
    match phase {
        StuckPhase::Forward => "forward",
        StuckPhase::Rollback => "rollback",
    }
}

/// A `finished` event's detail, read back.
pub(crate) fn read_outcome(detail: &str) -> Option<OutcomeRecord> {
    serde_json::from_str(detail).ok()
}

impl OutcomeRecord {
    /// The [`SagaError`] this outcome was, with `report`; `None` for a
    /// cancelled run (whose error needs no more than its report).
    pub(crate) fn into_error(self, saga: &str, report: crate::SagaReport) -> SagaError {
        let saga = Name::from(saga.to_owned());
        let report = Box::new(report);
        match self {
            OutcomeRecord::Compensated { step, error } => SagaError::Compensated {
                saga,
                step: step.into(),
                error: Box::new(error.into_error()),
                report,
            },
            OutcomeRecord::Stuck {
                step,
                phase,
                error,
                failures,
                remaining,
            } => SagaError::Stuck {
                saga,
                step: step.into(),
                phase: if phase == "rollback" {
                    StuckPhase::Rollback
                } else {
                    StuckPhase::Forward
                },
                error: Box::new(error.into_error()),
                failures: failures
                    .into_iter()
                    .map(|f| Failure {
                        step: f.step.into(),
                        compensation: f.compensation,
                        attempt: f.attempt,
                        message: f.message,
                        outcome_unknown: f.outcome_unknown,
                        permanent: f.permanent,
                    })
                    .collect(),
                remaining: remaining.into_iter().map(Name::from).collect(),
                report,
            },
            OutcomeRecord::Cancelled => SagaError::Cancelled { saga, report },
        }
    }
}
