//! `saga watch`: follow one execution until it ends, or the whole store.
//!
//! Both poll the store every `--interval` milliseconds, on SQLite and on
//! PostgreSQL alike.
// TODO-design: follow PostgreSQL with `LISTEN` (the store has a work
// signal) rather than polling, once the store offers a change feed.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use saga_core::escape::Escaped;
use saga_core::{ExecutionId, ExecutionStatus, SagaEngine};

use crate::output::{Style, utc};
use crate::show::{event_json, timeline_line};
use crate::{CliError, record};

/// Writes `line` and a newline to `out`, at once (a person is watching).
fn emit(out: &mut dyn Write, line: &str) -> Result<(), CliError> {
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// One JSON document on one line (`--json`: JSON lines).
fn json_line(value: &impl serde::Serialize) -> String {
    // Serializing strings, numbers and booleans cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// Prints execution `id`'s events as they are logged, as `show`'s
/// timeline does (with `json`: one `show --json` event a line, then
/// `{"ended": "<status>"}`), and returns when the execution has ended
/// (stuck counts: it waits for an operator).
pub(crate) async fn execution(
    engine: &SagaEngine,
    id: &str,
    every: Duration,
    json: bool,
    style: Style,
    out: &mut dyn Write,
) -> Result<String, CliError> {
    let (record, _) = record(engine, id).await?;
    // The definition's step names, for the lines.
    let steps: Vec<String> = engine
        .report(&record.id)
        .await?
        .steps
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    if !json {
        emit(
            out,
            &format!(
                "watching execution `{}` of saga `{}` (seconds since its start)",
                Escaped(record.id.as_str()),
                Escaped(&record.saga)
            ),
        )?;
    }
    let mut seen = 0_u64;
    loop {
        let (record, events) = crate::record(engine, id).await?;
        let before = seen;
        for e in events.iter().filter(|e| e.seq > before) {
            let step = e
                .step
                .and_then(|s| steps.get(s as usize))
                .map(String::as_str);
            let line = if json {
                json_line(&event_json(e, step))
            } else {
                timeline_line(e, record.created_at_ms, step)
            };
            emit(out, &line)?;
            seen = e.seq;
        }
        if record.status.is_finished() {
            if json {
                let end = serde_json::json!({ "ended": record.status.label() });
                return Ok(json_line(&end) + "\n");
            }
            return Ok(format!(
                "ended {}\n",
                style.paint(record.status, record.status.label())
            ));
        }
        tokio::time::sleep(every).await;
    }
}

/// Prints a line for every execution that appears in the store or changes
/// status, until the process is stopped; starts with the unfinished ones.
/// With `json`, each line is `{"id", "saga", "status", "updated_at_ms"}`.
pub(crate) async fn store(
    engine: &SagaEngine,
    every: Duration,
    json: bool,
    style: Style,
    out: &mut dyn Write,
) -> Result<String, CliError> {
    let mut known: HashMap<ExecutionId, ExecutionStatus> = HashMap::new();
    let mut first = true;
    loop {
        let records = engine.list(None).await?;
        if first && !json {
            let unfinished = records.iter().filter(|r| !r.status.is_finished()).count();
            emit(
                out,
                &format!(
                    "watching the store: {} execution{}, {unfinished} unfinished; Ctrl-C stops",
                    records.len(),
                    if records.len() == 1 { "" } else { "s" }
                ),
            )?;
        }
        for r in &records {
            let before = known.insert(r.id.clone(), r.status);
            let show = match before {
                None => !first || !r.status.is_finished(),
                Some(status) => status != r.status,
            };
            if show && json {
                let line = serde_json::json!({
                    "id": r.id.as_str(),
                    "saga": r.saga,
                    "status": r.status.label(),
                    "updated_at_ms": r.updated_at_ms,
                });
                emit(out, &json_line(&line))?;
            } else if show {
                emit(
                    out,
                    &format!(
                        "{}  {}  {}  {}",
                        utc(r.updated_at_ms, true),
                        Escaped(r.id.as_str()),
                        Escaped(&r.saga),
                        style.paint(r.status, r.status.label())
                    ),
                )?;
            }
        }
        first = false;
        tokio::time::sleep(every).await;
    }
}
