//! Rows of the SQLite store: decoding executions, writing events under the
//! lease's fence, mapping statement errors.

use std::path::Path;

use rusqlite::{Connection, ErrorCode, OptionalExtension, params};

use super::describe;
use crate::id::ExecutionId;
use crate::store::{
    Event, ExecutionRecord, ExecutionSummary, Lease, StoreError, StoreResult, skip_unknown_status,
    status_from_label,
};

/// Maps an error of a statement.
pub(super) fn db(path: &Path, what: &str) -> impl Fn(rusqlite::Error) -> StoreError {
    let store = describe(path);
    let path = path.to_path_buf();
    let what = what.to_owned();
    move |e| match e.sqlite_error_code() {
        Some(ErrorCode::ReadOnly) => StoreError::ReadOnly {
            path: path.clone(),
            detail: e.to_string(),
        },
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt {
            path: path.clone(),
            detail: e.to_string(),
        },
        _ => StoreError::Backend {
            store: store.clone(),
            what: what.clone(),
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

pub(super) const SELECT_EXECUTION: &str =
    "SELECT e.id, e.saga, e.fingerprint, e.status, e.context, e.last_seq,
        e.created_at, e.updated_at, l.owner, l.expires_at, e.cancel_requested
    FROM executions e LEFT JOIN leases l ON l.execution_id = e.id";

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
        .prepare_cached(&format!("{SELECT_EXECUTION} WHERE e.id = ?1"))
        .and_then(|mut stmt| stmt.query_row([id], raw_execution).optional())
        .map_err(db(path, "reading an execution"))?;
    raw.map(|raw| execution(path, raw)).transpose()
}

/// Inserts `events`, each only if `lease` is still held; with no lease,
/// for a caller whose transaction fenced the execution already, without
/// the check. `Err(None)`: the lease was lost.
pub(super) fn insert_events(
    conn: &Connection,
    id: &ExecutionId,
    lease: Option<&Lease>,
    events: &[Event],
    now: i64,
) -> Result<(), Option<rusqlite::Error>> {
    const INSERT: &str = "INSERT INTO events (execution_id, seq, at, kind, step, attempt, output,
            context, error, outcome_unknown, will_retry, detail)
         SELECT ?1, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14";
    let mut insert = match lease {
        Some(_) => conn.prepare_cached(&format!("{INSERT} WHERE {LEASE_HELD}"))?,
        // `?2` and `?3` (the lease) are bound and unused.
        None => conn.prepare_cached(INSERT)?,
    };
    for event in events {
        let written = insert.execute(params![
            id.as_str(),
            lease.map_or(0, |l| l.token),
            lease.map_or("", |l| &*l.owner),
            event.seq as i64,
            now,
            event.kind.label(),
            event.step,
            event.attempt,
            event.output,
            event.context,
            event.error,
            event.outcome_unknown,
            event.will_retry,
            event.detail
        ])?;
        if written != 1 {
            return Err(None);
        }
    }
    Ok(())
}

/// Whether `lease` is still the execution's lease: the condition every
/// fenced statement embeds.
pub(super) const LEASE_HELD: &str =
    "EXISTS (SELECT 1 FROM leases WHERE execution_id = ?1 AND token = ?2 AND owner = ?3)";

pub(super) fn lease_lost(id: &ExecutionId) -> StoreError {
    StoreError::LeaseLost {
        execution_id: id.clone(),
    }
}

/// The columns of a summary: those of [`SELECT_EXECUTION`] but the
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
