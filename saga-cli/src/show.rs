//! `saga show`: one execution, its steps and its log as a timeline.

use std::fmt::Write as _;

use saga_core::escape::{Escaped, user_text};
use saga_core::store::{Event, EventKind, logged_durations};
use saga_core::{LoggedError, Outcome, SagaEngine, SagaReport, StepStatus};
use serde::Serialize;

use crate::output::{ExecutionJson, Style, execution_json, fit, now_ms, seconds, to_json, utc};
use crate::{CliError, record};

#[derive(Serialize)]
struct StepJson<'a> {
    name: &'a str,
    kind: &'a str,
    status: &'a str,
    outcome: &'a str,
    attempts: u32,
    compensation_attempts: u32,
    duration_ms: Option<i64>,
    compensation_duration_ms: Option<i64>,
    last_error: Option<&'a str>,
    /// The size of its output's JSON, when it has one.
    output_bytes: Option<usize>,
}

#[derive(Serialize)]
pub(crate) struct EventJson<'a> {
    seq: u64,
    kind: &'a str,
    step: Option<&'a str>,
    attempt: u32,
    at_ms: i64,
    error: Option<&'a str>,
    /// The error's cause chain, outermost first, as logged (empty before
    /// 0.2.0 and for events without an error).
    causes: Vec<String>,
    /// Whether the error was marked permanent.
    permanent: bool,
    outcome_unknown: bool,
    will_retry: bool,
}

#[derive(Serialize)]
struct ShowJson<'a> {
    execution: ExecutionJson<'a>,
    /// The version its definition declared (`SagaBuilder::version`);
    /// absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    steps: Vec<StepJson<'a>>,
    events: Vec<EventJson<'a>>,
    /// The size of the latest context's JSON.
    context_bytes: usize,
    /// The latest context, with `--context` (`null` without).
    context: Option<serde_json::Value>,
    /// Each step's output by step name, with `--context` (`null` without).
    outputs: Option<serde_json::Map<String, serde_json::Value>>,
}

/// An event as `--json` prints it (`show`'s `events`, `watch`'s lines).
pub(crate) fn event_json<'a>(e: &'a Event, step: Option<&'a str>) -> EventJson<'a> {
    let logged = LoggedError::of_event(e);
    EventJson {
        seq: e.seq,
        kind: e.kind.label(),
        step,
        attempt: e.attempt,
        at_ms: e.at_ms,
        error: e.error.as_deref(),
        causes: logged.as_ref().map_or_else(Vec::new, |l| {
            l.causes().into_iter().map(str::to_owned).collect()
        }),
        permanent: logged.as_ref().is_some_and(LoggedError::is_permanent),
        outcome_unknown: e.outcome_unknown,
        will_retry: e.will_retry,
    }
}

/// A stored JSON text as a value (as a string if it does not parse).
fn value(raw: &str) -> serde_json::Value {
    serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.to_owned()))
}

/// Byte counts for a person: `812 B`, `4.2 KiB`, `8.0 MiB`.
fn size(bytes: usize) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

/// One event as a timeline line: seconds since `start_ms`, its kind, its
/// step and attempt, its error with its cause chain (`error: cause:
/// cause`, escaped) and its flags.
fn timeline_line(e: &Event, start_ms: i64, step: Option<&str>) -> String {
    let offset = (e.at_ms - start_ms) as f64 / 1000.0;
    let mut line = format!("{offset:>9.3}  {:<22}", e.kind.label());
    if let Some(step) = step {
        let _ = write!(line, "  {}", Escaped(step));
    }
    if e.attempt > 0 {
        let _ = write!(line, " #{}", e.attempt);
    }
    if let Some(logged) = LoggedError::of_event(e) {
        let _ = write!(line, ": {}", Escaped(logged.message()));
        for cause in logged.causes() {
            let _ = write!(line, ": {}", Escaped(cause));
        }
        if logged.is_permanent() {
            line.push_str(" (permanent)");
        }
    }
    if e.outcome_unknown {
        line.push_str(" (outcome unknown)");
    }
    if e.will_retry {
        line.push_str(" (will retry)");
    }
    line.trim_end().to_owned()
}

/// The timeline's lines, in log order: each event as [`timeline_line`]
/// writes it, and a start of a step (or of a compensation) whose previous
/// start never ended marked as a take-over: the run before was cut off
/// there (killed, or stopped with its lease lost) and another run started
/// the attempt again. A rollback logged again is marked likewise: a run
/// that took the execution over mid-rollback (or an operator's resume)
/// goes on with it.
#[derive(Default)]
pub(crate) struct Timeline {
    /// The starts not yet ended, as (compensation?, step).
    open: std::collections::HashSet<(bool, u32)>,
    /// Whether a rollback was logged already.
    rolling_back: bool,
}

impl Timeline {
    /// Event `e`'s line (see [`timeline_line`]).
    pub(crate) fn line(&mut self, e: &Event, start_ms: i64, step: Option<&str>) -> String {
        let mut line = timeline_line(e, start_ms, step);
        if e.kind == EventKind::RollbackStarted {
            if std::mem::replace(&mut self.rolling_back, true) {
                line.push_str(" (again: a later run goes on with the rollback)");
            }
            return line;
        }
        let Some(index) = e.step else {
            return line;
        };
        match e.kind {
            EventKind::StepStarted | EventKind::CompensationStarted => {
                let undo = e.kind == EventKind::CompensationStarted;
                if !self.open.insert((undo, index)) {
                    line.push_str(" (again: taken over, the run before was cut off here)");
                }
            }
            EventKind::StepSucceeded | EventKind::StepFailed => {
                self.open.remove(&(false, index));
            }
            EventKind::CompensationSucceeded | EventKind::CompensationFailed => {
                self.open.remove(&(true, index));
            }
            _ => {}
        }
        line
    }
}

fn resume_pending(events: &[Event]) -> bool {
    events.last().map(|e| e.kind) == Some(EventKind::ResumeRequested)
}

/// Prints execution `id`. Its context and its steps' outputs can hold
/// personal data: only their sizes are shown unless `context` is set.
pub(crate) async fn show(
    engine: &SagaEngine,
    id: &str,
    json: bool,
    context: bool,
    style: Style,
) -> Result<String, CliError> {
    let (record, events) = record(engine, id).await?;
    let report: SagaReport = engine.report(&record.id).await?;
    let times = logged_durations(report.steps.len(), &events);
    // The latest output of each step, and the latest context.
    let mut outputs: Vec<Option<&str>> = vec![None; report.steps.len()];
    for e in events.iter().filter(|e| e.kind == EventKind::StepSucceeded) {
        if let Some(slot) = e.step.and_then(|s| outputs.get_mut(s as usize)) {
            *slot = e.output.as_deref();
        }
    }
    // Read alone: the log above came without its contexts.
    let latest_context = engine
        .store()
        .latest_context(&record.id)
        .await?
        .unwrap_or_else(|| record.context.clone());
    let latest_context = latest_context.as_str();
    let step_name = |e: &Event| {
        e.step
            .and_then(|s| report.steps.get(s as usize))
            .map(|s| &*s.name)
    };
    // The version its definition declared, if the store holds the
    // definition and it declared one.
    let version = match engine.store().definition(&record.fingerprint).await {
        Ok(Some(definition)) => definition.version().ok().flatten(),
        _ => None,
    };
    if json {
        let doc = ShowJson {
            execution: execution_json(&record, resume_pending(&events)),
            version,
            steps: report
                .steps
                .iter()
                .zip(&times)
                .zip(&outputs)
                .map(|((s, (action, undo)), output)| StepJson {
                    name: &s.name,
                    kind: s.kind.label(),
                    status: s.status.label(),
                    outcome: s.outcome.label(),
                    attempts: s.attempts,
                    compensation_attempts: s.compensation_attempts,
                    duration_ms: *action,
                    compensation_duration_ms: *undo,
                    last_error: s.last_error.as_deref(),
                    output_bytes: output.map(str::len),
                })
                .collect(),
            events: events.iter().map(|e| event_json(e, step_name(e))).collect(),
            context_bytes: latest_context.len(),
            context: context.then(|| value(latest_context)),
            outputs: context.then(|| {
                report
                    .steps
                    .iter()
                    .zip(&outputs)
                    .filter_map(|(s, o)| Some((s.name.to_string(), value((*o)?))))
                    .collect()
            }),
        };
        return Ok(to_json(&doc));
    }
    let mut out = String::new();
    let _ = writeln!(out, "execution  {}", Escaped(record.id.as_str()));
    let _ = writeln!(out, "saga       {}", Escaped(&record.saga));
    match version {
        Some(version) => {
            let _ = writeln!(
                out,
                "definition {} (version {})",
                record.fingerprint,
                Escaped(&version)
            );
        }
        None => {
            let _ = writeln!(out, "definition {}", record.fingerprint);
        }
    }
    let _ = writeln!(
        out,
        "status     {}",
        style.paint(record.status, record.status.label())
    );
    let _ = writeln!(out, "created    {}", utc(record.created_at_ms, true));
    let _ = writeln!(out, "updated    {}", utc(record.updated_at_ms, true));
    let _ = write!(out, "context    {}", size(latest_context.len()));
    if !context {
        out.push_str(" (`--context` prints it and the outputs)");
    }
    out.push('\n');
    match (&record.owner, record.lease_expires_at_ms) {
        (Some(owner), Some(until)) if until < now_ms() => {
            // Its owner stopped renewing it: gone, or cut off from the
            // store (by this machine's clock; PostgreSQL judges by its own).
            let _ = writeln!(
                out,
                "lease      {}, expired at {} (a worker with this definition takes it over)",
                Escaped(owner),
                utc(until, true)
            );
        }
        (Some(owner), Some(until)) => {
            let _ = writeln!(
                out,
                "lease      {}, until {}",
                Escaped(owner),
                utc(until, true)
            );
        }
        _ => {
            let _ = writeln!(out, "lease      free");
        }
    }
    if record.cancel_requested {
        let _ = writeln!(out, "requested  cancel");
    }
    if resume_pending(&events) {
        let _ = writeln!(
            out,
            "requested  resume (a worker with this definition carries it out at its next poll)"
        );
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "{:<20}  {:<11}  {:<19}  {:>5}  {:>5}  {:>9}  {:>9}",
        "STEP", "KIND", "STATUS", "TRIES", "UNDOS", "TIME", "OUTPUT"
    );
    for ((s, (action, _)), output) in report.steps.iter().zip(&times).zip(&outputs) {
        let _ = writeln!(
            out,
            "{:<20}  {:<11}  {:<19}  {:>5}  {:>5}  {:>9}  {:>9}",
            fit(&user_text(&s.name), 20),
            s.kind.label(),
            s.status.label(),
            s.attempts,
            s.compensation_attempts,
            seconds(*action),
            output.map_or_else(|| "-".to_owned(), |o| size(o.len()))
        );
    }
    // Each step's action error and its compensation's, from the log: the
    // report's `last_error` is whichever came last, and a compensation's
    // error a retry recovered from would hide why the saga rolled back.
    let logged = |kind: EventKind, index: usize| {
        events
            .iter()
            .rev()
            .find(|e| e.kind == kind && e.step == Some(index as u32))
            .and_then(|e| e.error.as_deref())
    };
    for (index, s) in report.steps.iter().enumerate() {
        let undo_error = logged(EventKind::CompensationFailed, index);
        // A step that succeeded (and may have been compensated since)
        // keeps the error a retry recovered from; one of unknown outcome
        // had no attempt succeed, whatever happened next.
        let note = match (s.status, s.outcome) {
            (StepStatus::Succeeded | StepStatus::Compensated, Outcome::Applied) => {
                " (recovered: a later attempt succeeded)"
            }
            (StepStatus::Compensated, Outcome::Unknown) => " (outcome unknown, compensated)",
            (StepStatus::Failed, Outcome::Unknown) => {
                " (outcome unknown: an attempt may have taken effect)"
            }
            _ => "",
        };
        // Without a failure of the action in the log, the report's error
        // is the action's unless it is the compensation's.
        let action_error = logged(EventKind::StepFailed, index)
            .or_else(|| s.last_error.as_deref().filter(|e| Some(*e) != undo_error));
        if let Some(error) = action_error {
            let _ = writeln!(
                out,
                "error of `{}`{}: {}",
                Escaped(&s.name),
                note,
                Escaped(error)
            );
        }
        if let Some(error) = undo_error {
            let note = if s.status == StepStatus::Compensated {
                " (recovered: a later attempt succeeded)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "error of the compensation of `{}`{}: {}",
                Escaped(&s.name),
                note,
                Escaped(error)
            );
        }
    }
    out.push('\n');
    let _ = writeln!(out, "TIMELINE (seconds since the start)");
    let mut timeline = Timeline::default();
    for e in &events {
        out.push_str(&timeline.line(e, record.created_at_ms, step_name(e)));
        out.push('\n');
    }
    if context {
        out.push('\n');
        let _ = writeln!(out, "CONTEXT (JSON)");
        let _ = writeln!(out, "{}", Escaped(latest_context));
        for (s, o) in report.steps.iter().zip(&outputs) {
            if let Some(o) = o {
                let _ = writeln!(out, "output of `{}`: {}", Escaped(&s.name), Escaped(o));
            }
        }
    }
    Ok(out)
}
