//! Log records through the `log` facade, target `saga`. The library never
//! installs a logger; with none installed each record costs one atomic load.
//!
//! Levels: info = saga started/finished, debug = step started/succeeded,
//! warn = step failed or retried, compensation started, cancellation
//! ignored; error = compensation failed, run stuck. User text (names,
//! error messages) is always an argument, never a format string, and is
//! escaped ([`escape::user_text`](crate::escape::user_text)).

use std::time::Duration;

use log::Level;

use crate::escape::user_text;
use crate::observer::{RunInfo, SagaEvent};
use crate::report::ExecutionStatus;

/// The target of every record.
pub const TARGET: &str = "saga";

/// Logs `event` if its level is enabled. Inlined, so that where the event
/// is built the level folds to a constant and a disabled record costs one
/// atomic load and a compare; the record itself (and `run`, the run's
/// names) is made out of line.
#[inline]
pub(crate) fn log_event<'r>(
    run: impl FnOnce() -> RunInfo<'r>,
    event: &SagaEvent<'_>,
    elapsed: impl FnOnce() -> Duration,
) {
    let level = level(event);
    if level > log::max_level() {
        return;
    }
    write_record(&run(), event, level, elapsed);
}

#[inline(never)]
fn write_record(
    run: &RunInfo<'_>,
    event: &SagaEvent<'_>,
    level: Level,
    elapsed: impl FnOnce() -> Duration,
) {
    if !log::log_enabled!(target: TARGET, level) {
        return;
    }
    let (saga, id, elapsed) = (run.saga, run.execution_id, elapsed());
    match event {
        SagaEvent::SagaStarted => {
            emit(
                level,
                format_args!("saga started saga={saga} execution={id} elapsed={elapsed:?}"),
            );
        }
        SagaEvent::StepStarted { step, attempt } => emit(
            level,
            format_args!(
                "step started saga={saga} execution={id} step={step} attempt={attempt} elapsed={elapsed:?}"
            ),
        ),
        SagaEvent::StepSucceeded {
            step,
            attempt,
            elapsed: took,
        } => emit(
            level,
            format_args!(
                "step succeeded saga={saga} execution={id} step={step} attempt={attempt} took={took:?} elapsed={elapsed:?}"
            ),
        ),
        SagaEvent::StepFailed {
            step,
            attempt,
            error,
            retry_in,
        } => match retry_in {
            Some(delay) => emit(
                level,
                format_args!(
                    "step failed, retrying saga={saga} execution={id} step={step} attempt={attempt} retry_in={delay:?} error={error} elapsed={elapsed:?}"
                ),
            ),
            None => emit(
                level,
                format_args!(
                    "step failed saga={saga} execution={id} step={step} attempt={attempt} outcome_unknown={} error={error} elapsed={elapsed:?}",
                    error.is_outcome_unknown()
                ),
            ),
        },
        SagaEvent::CompensationStarted { step, attempt } => emit(
            level,
            format_args!(
                "compensation started saga={saga} execution={id} step={step} attempt={attempt} elapsed={elapsed:?}"
            ),
        ),
        SagaEvent::CompensationSucceeded {
            step,
            attempt,
            elapsed: took,
        } => emit(
            level,
            format_args!(
                "compensation succeeded saga={saga} execution={id} step={step} attempt={attempt} took={took:?} elapsed={elapsed:?}"
            ),
        ),
        SagaEvent::CompensationFailed {
            step,
            attempt,
            error,
            retry_in,
        } => emit(
            level,
            format_args!(
                "compensation failed saga={saga} execution={id} step={step} attempt={attempt} retry_in={retry_in:?} error={error} elapsed={elapsed:?}"
            ),
        ),
        SagaEvent::CancelIgnored { step } => emit(
            level,
            format_args!(
                "cancellation ignored after the pivot saga={saga} execution={id} step={step} elapsed={elapsed:?}"
            ),
        ),
        SagaEvent::SagaFinished { status, .. } => emit(
            level,
            format_args!(
                "saga finished saga={saga} execution={id} status={status} elapsed={elapsed:?}"
            ),
        ),
    }
}

/// Writes one record. User text (saga, step and execution names, error
/// messages) reaches a terminal or a log file escaped: a control character
/// or ESC in it is written as `\u{..}`, never acted on.
fn emit(level: Level, message: std::fmt::Arguments<'_>) {
    let text = message.to_string();
    log::log!(target: TARGET, level, "{}", user_text(&text));
}

#[inline]
fn level(event: &SagaEvent<'_>) -> Level {
    match event {
        SagaEvent::SagaStarted => Level::Info,
        SagaEvent::StepStarted { .. } | SagaEvent::StepSucceeded { .. } => Level::Debug,
        SagaEvent::StepFailed { .. }
        | SagaEvent::CompensationStarted { .. }
        | SagaEvent::CancelIgnored { .. } => Level::Warn,
        SagaEvent::CompensationSucceeded { .. } => Level::Info,
        SagaEvent::CompensationFailed {
            retry_in: Some(_), ..
        } => Level::Warn,
        SagaEvent::CompensationFailed { retry_in: None, .. } => Level::Error,
        SagaEvent::SagaFinished {
            status: ExecutionStatus::Stuck,
            ..
        } => Level::Error,
        SagaEvent::SagaFinished { .. } => Level::Info,
    }
}
