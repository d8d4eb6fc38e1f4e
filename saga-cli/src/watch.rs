//! `saga watch`: follow one execution until it ends, or the whole store.
//!
//! On SQLite both look at the store every `--interval` milliseconds (a
//! file has no way to tell another process it changed). On PostgreSQL
//! the store `LISTEN`s ([`SagaStore::change_signal`]): the store watch
//! looks when an execution is created, changes status, has a cancel
//! requested or ends, and otherwise only every [`SAFETY_POLL`]; the
//! execution watch looks at once on those too, and every `--interval`
//! for its step events, which do not notify (a notification per step
//! transition would make PostgreSQL take a database-wide lock at every
//! commit).
//!
//! A watch outlives an outage of its store (a PostgreSQL server that
//! restarts or refuses connections, a connection it closes): once it has started, a read that finds
//! the store unreachable prints one line saying so, the watch looks again
//! every `--interval`, and prints one line when the store answers again.
//! Any other error ends the watch.
//!
//! [`SagaStore::change_signal`]: saga_core::store::SagaStore::change_signal

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use saga_core::escape::Escaped;
use saga_core::store::{ExecutionSummary, ListQuery, StoreError};
use saga_core::{EngineError, ExecutionId, ExecutionStatus, SagaEngine};
use tokio::sync::watch;

use crate::output::{Style, utc};
use crate::show::{Timeline, event_json};
use crate::{CliError, record};

/// How often the store watch looks at a store that signals changes, in
/// case a notification was missed (a lost connection is signalled too).
const SAFETY_POLL: Duration = Duration::from_secs(30);

/// Waits `every`, or less when the store signals a change.
async fn pause(signal: &mut Option<watch::Receiver<u64>>, every: Duration) {
    let Some(changes) = signal.as_mut() else {
        tokio::time::sleep(every).await;
        return;
    };
    tokio::select! {
        changed = changes.changed() => {
            if changed.is_err() {
                // The store stopped signalling: polling remains.
                *signal = None;
            }
        }
        () = tokio::time::sleep(every) => {}
    }
}

/// Whether the store answered the watch's last read: a watch goes on
/// through an outage and says when it began and ended.
#[derive(Default)]
struct Reach {
    /// The last read found the store unreachable.
    lost: bool,
}

impl Reach {
    /// The value of a read that succeeded; `None` if the store could not
    /// be reached (said once per outage); the error of any other failure.
    fn read<T>(
        &mut self,
        result: Result<T, CliError>,
        json: bool,
        out: &mut dyn Write,
    ) -> Result<Option<T>, CliError> {
        match result {
            Ok(value) => {
                if self.lost {
                    self.lost = false;
                    let line = if json {
                        json_line(&serde_json::json!({ "store": "reachable" }))
                    } else {
                        "the store answers again".to_owned()
                    };
                    emit(out, &line)?;
                }
                Ok(Some(value))
            }
            Err(error) if unreachable(&error) => {
                if !self.lost {
                    self.lost = true;
                    let line = if json {
                        json_line(&serde_json::json!({
                            "store": "unreachable",
                            "error": error.to_string(),
                        }))
                    } else {
                        format!("{error}; still watching: looking again until it answers")
                    };
                    emit(out, &line)?;
                }
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }
}

/// The store could not be reached: an outage a watch waits out.
fn unreachable(error: &CliError) -> bool {
    matches!(
        error,
        CliError::Store(StoreError::Unavailable { .. })
            | CliError::Engine(EngineError::Store(StoreError::Unavailable { .. }))
    )
}

/// Every execution's summary (no contexts), page by page.
async fn summaries(engine: &SagaEngine) -> Result<Vec<ExecutionSummary>, CliError> {
    const PAGE: usize = 500;
    let mut all = Vec::new();
    let mut query = ListQuery::new().with_limit(PAGE);
    loop {
        let page = engine.store().list_summaries(query.clone()).await?;
        let last = page.last().map(ExecutionSummary::cursor);
        let full = page.len() == PAGE;
        all.extend(page);
        match last {
            Some(cursor) if full => query = query.with_after(cursor),
            _ => return Ok(all),
        }
    }
}

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
/// `{"ended": "<status>"}`; `{"store": "unreachable", "error": ...}` and
/// `{"store": "reachable"}` around an outage), and returns when the execution has ended
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
    let mut signal = engine.store().change_signal();
    let mut seen = 0_u64;
    let mut timeline = Timeline::default();
    let mut reach = Reach::default();
    loop {
        let Some((record, events)) = reach.read(crate::record(engine, id).await, json, out)? else {
            pause(&mut signal, every).await;
            continue;
        };
        let before = seen;
        for e in events.iter().filter(|e| e.seq > before) {
            let step = e
                .step
                .and_then(|s| steps.get(s as usize))
                .map(String::as_str);
            let line = if json {
                json_line(&event_json(e, step))
            } else {
                timeline.line(e, record.created_at_ms, step)
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
        pause(&mut signal, every).await;
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
    let mut signal = engine.store().change_signal();
    // The first read's error ends the watch: nothing was watched yet.
    let mut records = summaries(engine).await?;
    let mut first = true;
    let mut reach = Reach::default();
    loop {
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
        loop {
            // Through an outage, look every `every`: the listener
            // signals its reconnection only after its own backoff.
            let wait = if signal.is_some() && !reach.lost {
                SAFETY_POLL
            } else {
                every
            };
            pause(&mut signal, wait).await;
            if let Some(now) = reach.read(summaries(engine).await, json, out)? {
                records = now;
                break;
            }
        }
    }
}
