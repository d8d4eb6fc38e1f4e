//! `saga show`: one execution, its steps and its log as a timeline.

use std::fmt::Write as _;

use saga_core::escape::{Escaped, user_text};
use saga_core::store::{Event, EventKind, logged_durations};
use saga_core::{SagaEngine, SagaReport};
use serde::Serialize;

use crate::output::{ExecutionJson, execution_json, fit, seconds, to_json, utc};
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
}

#[derive(Serialize)]
struct EventJson<'a> {
    seq: u64,
    kind: &'a str,
    step: Option<&'a str>,
    attempt: u32,
    at_ms: i64,
    error: Option<&'a str>,
    outcome_unknown: bool,
    will_retry: bool,
}

#[derive(Serialize)]
struct ShowJson<'a> {
    execution: ExecutionJson<'a>,
    steps: Vec<StepJson<'a>>,
    events: Vec<EventJson<'a>>,
}

fn resume_pending(events: &[Event]) -> bool {
    events.last().map(|e| e.kind) == Some(EventKind::ResumeRequested)
}

pub(crate) async fn show(engine: &SagaEngine, id: &str, json: bool) -> Result<String, CliError> {
    let (record, events) = record(engine, id).await?;
    let report: SagaReport = engine.report(&record.id).await?;
    let times = logged_durations(report.steps.len(), &events);
    let step_name = |e: &Event| {
        e.step
            .and_then(|s| report.steps.get(s as usize))
            .map(|s| &*s.name)
    };
    if json {
        let doc = ShowJson {
            execution: execution_json(&record, resume_pending(&events)),
            steps: report
                .steps
                .iter()
                .zip(&times)
                .map(|(s, (action, undo))| StepJson {
                    name: &s.name,
                    kind: s.kind.label(),
                    status: s.status.label(),
                    outcome: s.outcome.label(),
                    attempts: s.attempts,
                    compensation_attempts: s.compensation_attempts,
                    duration_ms: *action,
                    compensation_duration_ms: *undo,
                    last_error: s.last_error.as_deref(),
                })
                .collect(),
            events: events
                .iter()
                .map(|e| EventJson {
                    seq: e.seq,
                    kind: e.kind.label(),
                    step: step_name(e),
                    attempt: e.attempt,
                    at_ms: e.at_ms,
                    error: e.error.as_deref(),
                    outcome_unknown: e.outcome_unknown,
                    will_retry: e.will_retry,
                })
                .collect(),
        };
        return Ok(to_json(&doc));
    }
    let mut out = String::new();
    let _ = writeln!(out, "execution  {}", Escaped(record.id.as_str()));
    let _ = writeln!(out, "saga       {}", Escaped(&record.saga));
    let _ = writeln!(out, "definition {}", record.fingerprint);
    let _ = writeln!(out, "status     {}", record.status);
    let _ = writeln!(out, "created    {}", utc(record.created_at_ms, true));
    let _ = writeln!(out, "updated    {}", utc(record.updated_at_ms, true));
    match (&record.owner, record.lease_expires_at_ms) {
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
            "requested  resume (a worker with this definition carries it out at its next `recover()`)"
        );
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "{:<20}  {:<11}  {:<19}  {:>5}  {:>5}  {:>9}",
        "STEP", "KIND", "STATUS", "TRIES", "UNDOS", "TIME"
    );
    for (s, (action, _)) in report.steps.iter().zip(&times) {
        let _ = writeln!(
            out,
            "{:<20}  {:<11}  {:<19}  {:>5}  {:>5}  {:>9}",
            fit(&user_text(&s.name), 20),
            s.kind.label(),
            s.status.label(),
            s.attempts,
            s.compensation_attempts,
            seconds(*action)
        );
    }
    for s in report.steps.iter().filter(|s| s.last_error.is_some()) {
        let _ = writeln!(
            out,
            "error of `{}`: {}",
            Escaped(&s.name),
            Escaped(s.last_error.as_deref().unwrap_or_default())
        );
    }
    out.push('\n');
    let _ = writeln!(out, "TIMELINE (seconds since the start)");
    for e in &events {
        let offset = (e.at_ms - record.created_at_ms) as f64 / 1000.0;
        let mut line = format!("{offset:>9.3}  {:<22}", e.kind.label());
        if let Some(step) = step_name(e) {
            let _ = write!(line, "  {}", Escaped(step));
        }
        if e.attempt > 0 {
            let _ = write!(line, " #{}", e.attempt);
        }
        if let Some(error) = &e.error {
            let _ = write!(line, ": {}", Escaped(error));
        }
        if e.outcome_unknown {
            line.push_str(" (outcome unknown)");
        }
        if e.will_retry {
            line.push_str(" (will retry)");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    Ok(out)
}
