//! Rows of the PostgreSQL store: decoding an execution.

use tokio_postgres::Row;

use super::Inner;
use super::session::Session;
use super::writer::Failure;
use crate::id::ExecutionId;
use crate::store::{
    ExecutionRecord, ExecutionSummary, StoreError, StoreResult, skip_unknown_status,
    status_from_label,
};

pub(super) fn lease_lost(id: &ExecutionId) -> StoreError {
    StoreError::LeaseLost {
        execution_id: id.clone(),
    }
}

pub(super) const SELECT_EXECUTION: &str =
    "SELECT e.id, e.saga, e.fingerprint, e.status, e.context, e.last_seq,
        e.created_at, e.updated_at, l.owner, l.expires_at, e.cancel_requested
    FROM executions e LEFT JOIN leases l ON l.execution_id = e.id";

pub(super) fn execution(store: &Inner, row: &Row) -> StoreResult<ExecutionRecord> {
    let id: String = row.get(0);
    let status: String = row.get(3);
    let status = status_from_label(&status).ok_or_else(|| StoreError::BadRecord {
        store: store.describe.clone(),
        what: format!("execution `{id}`"),
        detail: format!("unknown status `{status}`"),
    })?;
    Ok(ExecutionRecord {
        id: ExecutionId::new(id),
        saga: row.get(1),
        fingerprint: row.get(2),
        status,
        context: row.get(4),
        last_seq: u64::try_from(row.get::<_, i64>(5)).unwrap_or(0),
        created_at_ms: row.get(6),
        updated_at_ms: row.get(7),
        owner: row.get(8),
        lease_expires_at_ms: row.get(9),
        cancel_requested: row.get(10),
    })
}

pub(super) async fn get_execution(
    s: &Session,
    store: &Inner,
    id: &str,
) -> Result<Option<ExecutionRecord>, Failure> {
    let row = s
        .query_opt(const_format!("{SELECT_EXECUTION} WHERE e.id = $1"), &[&id])
        .await?;
    row.map(|row| execution(store, &row))
        .transpose()
        .map_err(Failure::Refused)
}

/// The columns of a summary: those of [`SELECT_EXECUTION`] but the
/// context, which a listing never reads.
pub(super) const SELECT_SUMMARY: &str = "SELECT e.id, e.saga, e.fingerprint, e.status, e.last_seq,
        e.created_at, e.updated_at, l.owner, l.expires_at, e.cancel_requested
    FROM executions e LEFT JOIN leases l ON l.execution_id = e.id";

/// A row of [`SELECT_SUMMARY`]; `None` (with a warning) for a status this
/// build does not know.
pub(super) fn summary(store: &Inner, row: &Row) -> Option<ExecutionSummary> {
    let id: String = row.get(0);
    let status: String = row.get(3);
    let Some(status) = status_from_label(&status) else {
        skip_unknown_status(&store.describe, &id, &status);
        return None;
    };
    Some(ExecutionSummary {
        id: ExecutionId::new(id),
        saga: row.get(1),
        fingerprint: row.get(2),
        status,
        last_seq: u64::try_from(row.get::<_, i64>(4)).unwrap_or(0),
        created_at_ms: row.get(5),
        updated_at_ms: row.get(6),
        owner: row.get(7),
        lease_expires_at_ms: row.get(8),
        cancel_requested: row.get(9),
    })
}
