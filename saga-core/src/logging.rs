//! Log records through the `log` facade, target `saga`. The library never
//! installs a logger; with none installed each record costs one atomic load.
//!
//! Levels: info = saga started/resumed/finished, debug = step started/succeeded,
//! warn = step failed or retried, compensation started, cancellation
//! ignored; error = compensation failed, run stuck.
//!
//! Messages are short fixed text (`step failed`); the details are `log`
//! key-values: `saga`, `execution`, and as the event has them `step`,
//! `attempt`, `took` (of a step or compensation that succeeded: since its
//! first attempt started, earlier attempts and backoffs included; in this
//! run only, after a take-over or a resume), `retry_in`, `outcome_unknown`,
//! `permanent` (of a step's last failure),
//! `error`, `status` and `elapsed` (since the run started). A logger
//! prints them only if it reads key-values (env_logger with its `kv`
//! feature). User text among them (names, ids, error messages) is escaped
//! ([`escape::user_text`](crate::escape::user_text)).

use std::time::Duration;

use log::Level;
use log::kv::{Key, Source, Value, VisitSource};

use crate::escape::Escaped;
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
    let elapsed = elapsed();
    let (saga, execution) = (Escaped(run.saga), Escaped(run.execution_id.as_str()));
    let run = [
        ("saga", Value::from_display(&saga)),
        ("execution", Value::from_display(&execution)),
    ];
    let elapsed = [("elapsed", Value::from_debug(&elapsed))];
    let attempt = |message, step, attempt, extra: &[(&str, Value<'_>)]| {
        write_attempt(level, message, &run, (step, attempt), extra, &elapsed);
    };
    match event {
        SagaEvent::SagaStarted => write(level, "saga started", &[&run, &elapsed]),
        SagaEvent::SagaResumed { after_stuck } => {
            let after_stuck = [("after_stuck", Value::from(*after_stuck))];
            write(level, "saga resumed", &[&run, &after_stuck, &elapsed]);
        }
        SagaEvent::StepStarted { step, attempt: n } => attempt("step started", step, *n, &[]),
        SagaEvent::StepSucceeded {
            step,
            attempt: n,
            elapsed: took,
        } => attempt(
            "step succeeded",
            step,
            *n,
            &[("took", Value::from_debug(took))],
        ),
        SagaEvent::StepFailed {
            step,
            attempt: n,
            error,
            retry_in,
        } => {
            let text = error.to_string();
            let text = Escaped(&text);
            let field = ("error", Value::from_display(&text));
            match retry_in {
                Some(delay) => attempt(
                    "step failed, retrying",
                    step,
                    *n,
                    &[("retry_in", Value::from_debug(delay)), field],
                ),
                None => {
                    // Marked permanent, or out of retries: a decline reads
                    // apart from a provider that never answered.
                    let unknown = Value::from(error.is_outcome_unknown());
                    let permanent = Value::from(error.is_permanent());
                    attempt(
                        "step failed",
                        step,
                        *n,
                        &[
                            ("outcome_unknown", unknown),
                            ("permanent", permanent),
                            field,
                        ],
                    );
                }
            }
        }
        SagaEvent::CompensationStarted { step, attempt: n } => {
            attempt("compensation started", step, *n, &[]);
        }
        SagaEvent::CompensationSucceeded {
            step,
            attempt: n,
            elapsed: took,
        } => attempt(
            "compensation succeeded",
            step,
            *n,
            &[("took", Value::from_debug(took))],
        ),
        SagaEvent::CompensationFailed {
            step,
            attempt: n,
            error,
            retry_in,
        } => {
            let text = error.to_string();
            let text = Escaped(&text);
            let error = ("error", Value::from_display(&text));
            match retry_in {
                Some(delay) => attempt(
                    "compensation failed, retrying",
                    step,
                    *n,
                    &[("retry_in", Value::from_debug(delay)), error],
                ),
                None => attempt("compensation failed", step, *n, &[error]),
            }
        }
        SagaEvent::CancelHonoured { step } => {
            let step = Escaped(step);
            let step = [("step", Value::from_display(&step))];
            write(
                level,
                "cancellation honoured: rolling back",
                &[&run, &step, &elapsed],
            );
        }
        SagaEvent::CancelIgnored { step } => {
            let step = Escaped(step);
            let step = [("step", Value::from_display(&step))];
            write(
                level,
                "cancellation ignored: past the pivot, or during the last step",
                &[&run, &step, &elapsed],
            );
        }
        SagaEvent::SagaFinished { status, .. } => {
            let status = [("status", Value::from(status.label()))];
            write(level, "saga finished", &[&run, &status, &elapsed]);
        }
    }
}

/// A record of one attempt: the run, `step` and `attempt`, `extra`, then
/// `elapsed`.
fn write_attempt(
    level: Level,
    message: &'static str,
    run: &[(&str, Value<'_>)],
    (step, attempt): (&str, u32),
    extra: &[(&str, Value<'_>)],
    elapsed: &[(&str, Value<'_>)],
) {
    let step = Escaped(step);
    let head = [
        ("step", Value::from_display(&step)),
        ("attempt", Value::from(attempt)),
    ];
    write(level, message, &[run, &head, extra, elapsed]);
}

/// Writes one record: `message` is fixed text, and the details are
/// key-values, in `groups` order (a logger prints them after the message,
/// or as fields of a JSON record). User text among them (saga, step and
/// execution names, error messages) is [`Escaped`]: a control character
/// or ESC in it is written as `\u{..}`, never acted on by a terminal.
fn write(level: Level, message: &'static str, groups: &[&[(&str, Value<'_>)]]) {
    let fields = Fields(groups);
    log::logger().log(
        &log::Record::builder()
            .args(format_args!("{message}"))
            .level(level)
            .target(TARGET)
            .module_path_static(Some(module_path!()))
            .file_static(Some(file!()))
            .line(Some(line!()))
            .key_values(&fields)
            .build(),
    );
}

/// The key-values of a record, kept in groups so each event names only its
/// own fields without building a list on the heap.
struct Fields<'a, 'v>(&'a [&'a [(&'a str, Value<'v>)]]);

impl Source for Fields<'_, '_> {
    fn visit<'kvs>(&'kvs self, visitor: &mut dyn VisitSource<'kvs>) -> Result<(), log::kv::Error> {
        for group in self.0 {
            for (key, value) in group.iter() {
                visitor.visit_pair(Key::from_str(key), value.clone())?;
            }
        }
        Ok(())
    }
}

#[inline]
fn level(event: &SagaEvent<'_>) -> Level {
    match event {
        SagaEvent::SagaStarted | SagaEvent::SagaResumed { .. } => Level::Info,
        SagaEvent::StepStarted { .. } | SagaEvent::StepSucceeded { .. } => Level::Debug,
        SagaEvent::StepFailed { .. }
        | SagaEvent::CompensationStarted { .. }
        | SagaEvent::CancelHonoured { .. }
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

/// Tells `event` to each of `observers`. An observer is user code: its
/// panic must not tear down the run (and leave compensations undone), nor
/// silence the others; it is logged, with the event and the panic's
/// message.
pub(crate) fn tell<'o>(
    observers: impl Iterator<Item = &'o std::sync::Arc<dyn crate::observer::SagaObserver>>,
    run: &RunInfo<'_>,
    event: &SagaEvent<'_>,
) {
    use std::panic::{AssertUnwindSafe, catch_unwind};

    for observer in observers {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| observer.on_event(run, event))) {
            let message = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("a panic without a message");
            log::error!(
                target: TARGET,
                saga:% = Escaped(run.saga),
                execution:% = Escaped(run.execution_id.as_str()),
                event:? = event,
                panic:% = Escaped(message);
                "observer panicked, event dropped for it"
            );
        }
    }
}
