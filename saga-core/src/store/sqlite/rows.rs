//! Rows of the SQLite store: decoding executions, writing events under the
//! lease's fence, mapping statement errors.

use std::path::Path;

use rusqlite::{Connection, ErrorCode, OptionalExtension};

use super::describe;
use super::writer::Db;
use crate::id::ExecutionId;
use crate::store::{
    Event, ExecutionRecord, ExecutionSummary, StoreError, StoreResult, skip_unknown_status,
    status_from_label,
};

/// Maps an error of a statement. Allocates nothing until an error comes:
/// it is made for every statement a write runs.
pub(super) fn db<'a>(
    path: &'a Path,
    what: &'static str,
) -> impl Fn(rusqlite::Error) -> StoreError + 'a {
    move |e| match e.sqlite_error_code() {
        Some(ErrorCode::ReadOnly) => StoreError::ReadOnly {
            path: path.to_path_buf(),
            detail: e.to_string(),
        },
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        },
        _ => StoreError::Backend {
            store: describe(path),
            what: what.to_owned(),
            source: Box::new(e),
        },
    }
}

pub(super) fn bad_record(path: &Path, what: String, detail: String) -> StoreError {
    StoreError::BadRecord {
        store: describe(path),
        what,
        detail,
    }
}

pub(super) const SELECT_EXECUTION: &str = select_execution!();

pub(super) type RawExecution = (
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    Option<String>,
    Option<i64>,
    bool,
);

pub(super) fn raw_execution(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawExecution> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
        row.get(9)?,
        row.get(10)?,
    ))
}

pub(super) fn execution(path: &Path, raw: RawExecution) -> StoreResult<ExecutionRecord> {
    let (
        id,
        saga,
        fingerprint,
        status,
        context,
        last_seq,
        created,
        updated,
        owner,
        expires,
        cancel,
    ) = raw;
    let status = status_from_label(&status).ok_or_else(|| {
        bad_record(
            path,
            format!("execution `{id}`"),
            format!("unknown status `{status}`"),
        )
    })?;
    Ok(ExecutionRecord {
        id: ExecutionId::new(id),
        saga,
        fingerprint,
        status,
        context,
        last_seq: u64::try_from(last_seq).unwrap_or(0),
        created_at_ms: created,
        updated_at_ms: updated,
        owner,
        lease_expires_at_ms: expires,
        cancel_requested: cancel,
    })
}

pub(super) fn get_execution(
    conn: &Connection,
    path: &Path,
    id: &str,
) -> StoreResult<Option<ExecutionRecord>> {
    let raw = conn
        .prepare_cached(concat!(select_execution!(), " WHERE e.id = ?1"))
        .and_then(|mut stmt| stmt.query_row([id], raw_execution).optional())
        .map_err(db(path, "reading an execution"))?;
    raw.map(|raw| execution(path, raw)).transpose()
}

/// The columns of an event row: the execution id, `seq`, the time, then
/// the rest in the order [`bind_event`] binds them.
///
/// `OR FAIL`: a row that conflicts fails the statement and leaves the rows
/// before it, where the default (`ABORT`) undoes them, for which SQLite
/// copies every page the statement writes to a statement journal. An
/// append undoes a failed insert anyway, with its batch (its fencing
/// update wrote before it), a creation with its savepoint.
const EVENT_COLUMNS: &str =
    "INSERT OR FAIL INTO events (execution_id, seq, at, kind, step, attempt, output,
    context, error, outcome_unknown, will_retry, detail)";

/// How many parameters one event row binds: all its columns but the
/// execution id and the time, which every row of a statement shares (`?1`,
/// `?2`, bound once: SQLite copies every bound text).
const EVENT_PARAMS: usize = 10;

/// The most events one statement of [`insert_events`] inserts; a longer
/// batch takes several statements.
const EVENTS_PER_STATEMENT: usize = 4;

/// `INSERT INTO events ... VALUES (?1, ?3, ?2, ...), (?1, ?13, ?2, ...)`
/// of `rows` rows, `1..=` [`EVENTS_PER_STATEMENT`]; built once.
fn insert_rows_sql(rows: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        (1..=EVENTS_PER_STATEMENT)
            .map(|n| {
                let rows: Vec<String> = (0..n)
                    .map(|row| {
                        let first = 3 + row * EVENT_PARAMS;
                        let params: Vec<String> = (first..first + EVENT_PARAMS)
                            .map(|p| format!("?{p}"))
                            .collect();
                        // The columns' order: execution_id, seq, at, then
                        // the row's own.
                        format!("(?1, {}, ?2, {})", params[0], params[1..].join(", "))
                    })
                    .collect();
                format!("{EVENT_COLUMNS} VALUES {}", rows.join(", "))
            })
            .collect()
    });
    &all[rows - 1]
}

/// Binds one event's own columns from parameter `first` on, borrowing
/// its text.
fn bind_event(
    stmt: &mut rusqlite::Statement<'_>,
    first: usize,
    event: &Event,
) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(first, event.seq as i64)?;
    stmt.raw_bind_parameter(first + 1, event.kind.label())?;
    stmt.raw_bind_parameter(first + 2, event.step)?;
    stmt.raw_bind_parameter(first + 3, event.attempt)?;
    stmt.raw_bind_parameter(first + 4, event.output.as_deref())?;
    stmt.raw_bind_parameter(first + 5, event.context.as_deref())?;
    stmt.raw_bind_parameter(first + 6, event.error.as_deref())?;
    stmt.raw_bind_parameter(first + 7, event.outcome_unknown)?;
    stmt.raw_bind_parameter(first + 8, event.will_retry)?;
    stmt.raw_bind_parameter(first + 9, event.detail.as_deref())
}

/// Inserts `events`, several rows a statement, for a caller whose
/// transaction fenced the execution already (an append's fencing update, a
/// creation's new lease). A row that is there already fails the statement
/// (`OR FAIL`, see [`EVENT_COLUMNS`]).
///
/// `kept`: whether the statement is one the writer keeps prepared
/// ([`Db::kept`]: an append's, the hot path) or one from the connection's
/// cache (a creation's). A kept statement holds some of the connection's
/// lookaside memory for good; one more kept for creations left too little
/// of it, and the appends' statements allocated from the heap instead.
pub(super) fn insert_events(
    conn: &Db<'_>,
    id: &ExecutionId,
    events: &[Event],
    now: i64,
    kept: bool,
) -> rusqlite::Result<()> {
    for chunk in events.chunks(EVENTS_PER_STATEMENT) {
        let run = |insert: &mut rusqlite::Statement<'_>| {
            insert.raw_bind_parameter(1, id.as_str())?;
            insert.raw_bind_parameter(2, now)?;
            for (row, event) in chunk.iter().enumerate() {
                bind_event(insert, 3 + row * EVENT_PARAMS, event)?;
            }
            insert.raw_execute()
        };
        if kept {
            conn.kept(insert_rows_sql(chunk.len()), run)?;
        } else {
            run(&mut *conn.prepare_cached(insert_rows_sql(chunk.len()))?)?;
        }
    }
    Ok(())
}

pub(super) fn lease_lost(id: &ExecutionId) -> StoreError {
    StoreError::LeaseLost {
        execution_id: id.clone(),
    }
}

/// The columns of a summary: those of `SELECT_EXECUTION` but the
/// context, which a listing never reads.
pub(super) const SELECT_SUMMARY: &str = "SELECT e.id, e.saga, e.fingerprint, e.status, e.last_seq,
        e.created_at, e.updated_at, l.owner, l.expires_at, e.cancel_requested
    FROM executions e LEFT JOIN leases l ON l.execution_id = e.id";

/// A row of [`SELECT_SUMMARY`]; `None` (with a warning) for a status this
/// build does not know.
pub(super) fn summary(
    path: &Path,
    row: &rusqlite::Row<'_>,
) -> rusqlite::Result<Option<ExecutionSummary>> {
    let id: String = row.get(0)?;
    let status: String = row.get(3)?;
    let Some(status) = status_from_label(&status) else {
        skip_unknown_status(&describe(path), &id, &status);
        return Ok(None);
    };
    Ok(Some(ExecutionSummary {
        id: ExecutionId::new(id),
        saga: row.get(1)?,
        fingerprint: row.get(2)?,
        status,
        last_seq: u64::try_from(row.get::<_, i64>(4)?).unwrap_or(0),
        created_at_ms: row.get(5)?,
        updated_at_ms: row.get(6)?,
        owner: row.get(7)?,
        lease_expires_at_ms: row.get(8)?,
        cancel_requested: row.get(9)?,
    }))
}
