//! `tracing` spans (feature `tracing`): one `saga` span per execution and,
//! inside it, one `step` or `compensation` span per attempt, so a
//! subscriber (OpenTelemetry's among them) sees a saga as one trace, and
//! the user's own spans and events inside a step nest under that step.
//!
//! Where the execution span hangs ([`Origin`]): a run the caller awaits
//! nests under the caller's current span; a durable run started with
//! `SagaEngine::start` goes on in a task of its own, and its span's
//! parent is the span current where `start` was called (an HTTP
//! request's, say), captured at the call; a run claimed from the store
//! (by `recover` or a `Worker`) starts a trace of its own, a root span,
//! with `resumed = true` if it was taken over from a log that has events
//! (`false` for a submitted execution's first run): whatever span the
//! claiming code is in has nothing to do with the run.
//!
//! Fields: `saga`, `execution_id`, `resumed` and (at the end) `status` on
//! the execution span; `step`, `attempt` and, when the attempt fails, `error`
//! (the step error's text with its control characters escaped, as
//! [`crate::escape`] does) and `outcome_unknown` on an attempt span.
//! Target `saga`, level INFO.

use std::future::Future;

use tracing::field::{Empty, display};
use tracing::{Instrument, Span};

use crate::error::{SagaError, StepError};
use crate::escape::Escaped;
use crate::id::ExecutionId;
use crate::report::SagaReport;

/// Where a run's `saga` span hangs in the trace.
#[derive(Debug, Clone, Default)]
pub(crate) enum Origin {
    /// Under the span current where the run is polled: a run its caller
    /// awaits.
    #[default]
    Current,
    /// Under this span, the caller's when it started a durable run, which
    /// then goes on in a task of its own.
    Caller(Span),
    /// A root span: a run claimed from the store, which has nothing to do
    /// with whatever span the claiming code is in. `resumed` if its log
    /// has events (it was taken over); not for a submitted execution's
    /// first run.
    Claimed {
        /// Whether the run goes on from a log that has events.
        resumed: bool,
    },
}

/// Runs an execution inside its `saga` span; records its final status.
pub(crate) async fn execution<F>(saga: &str, id: &ExecutionId, origin: Origin, run: F) -> F::Output
where
    F: Future<Output = Result<SagaReport, SagaError>>,
{
    let span = match origin {
        Origin::Current => {
            tracing::info_span!(target: "saga", "saga", saga, execution_id = %id, resumed = false, status = Empty)
        }
        Origin::Caller(parent) => {
            tracing::info_span!(target: "saga", parent: &parent, "saga", saga, execution_id = %id, resumed = false, status = Empty)
        }
        Origin::Claimed { resumed } => {
            tracing::info_span!(target: "saga", parent: None, "saga", saga, execution_id = %id, resumed, status = Empty)
        }
    };
    let result = run.instrument(span.clone()).await;
    let status = match &result {
        Ok(report) => report.status,
        Err(error) => error.report().status,
    };
    span.record("status", display(status));
    result
}

/// Runs one attempt of a step's action (`compensation` false) or of its
/// compensation inside its span; records a failure.
pub(crate) async fn attempt<F, T>(compensation: bool, step: &str, attempt: u32, run: F) -> F::Output
where
    F: Future<Output = Result<T, StepError>>,
{
    let span = attempt_span(compensation, step, attempt);
    let result = run.instrument(span.clone()).await;
    record_failure(&span, &result);
    result
}

/// [`attempt`] for a sync attempt, made by a call rather than a future.
pub(crate) fn attempt_sync<T>(
    compensation: bool,
    step: &str,
    attempt: u32,
    run: impl FnOnce() -> Result<T, StepError>,
) -> Result<T, StepError> {
    let span = attempt_span(compensation, step, attempt);
    let result = span.in_scope(run);
    record_failure(&span, &result);
    result
}

fn attempt_span(compensation: bool, step: &str, attempt: u32) -> Span {
    if compensation {
        tracing::info_span!(target: "saga", "compensation", step, attempt, error = Empty, outcome_unknown = Empty)
    } else {
        tracing::info_span!(target: "saga", "step", step, attempt, error = Empty, outcome_unknown = Empty)
    }
}

fn record_failure<T>(span: &Span, result: &Result<T, StepError>) {
    if let Err(error) = result {
        // Escaped as the `log` records are: the text comes from the
        // services a step calls, and a subscriber may write it to a
        // terminal or a line-based log as it is.
        span.record("error", display(Escaped(&error.to_string())));
        span.record("outcome_unknown", error.is_outcome_unknown());
    }
}
