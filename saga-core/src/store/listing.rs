//! Listing executions without their contexts: summaries, and the keyset
//! cursor that pages through them in `(created_at, id)` order.
//!
//! A context can be megabytes of JSON; a listing of thousands of
//! executions must not read them all. [`SagaStore::list_summaries`] reads
//! everything but the context, a page at a time;
//! [`SagaStore::context`] reads one context when it is needed.
//!
//! [`SagaStore::list_summaries`]: super::SagaStore::list_summaries
//! [`SagaStore::context`]: super::SagaStore::context

use std::fmt;
use std::str::FromStr;

use super::ExecutionRecord;
use crate::id::ExecutionId;
use crate::report::ExecutionStatus;

/// An execution as a listing shows it: an [`ExecutionRecord`] without its
/// context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionSummary {
    /// Its id.
    pub id: ExecutionId,
    /// The saga's name.
    pub saga: String,
    /// The fingerprint of the definition it was started with.
    pub fingerprint: String,
    /// Its status.
    pub status: ExecutionStatus,
    /// The sequence number of its last event (0: none yet).
    pub last_seq: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Last write, milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
    /// Who holds its lease, if anyone.
    pub owner: Option<String>,
    /// When that lease expires, milliseconds since the Unix epoch.
    pub lease_expires_at_ms: Option<i64>,
    /// Whether a cancellation was requested.
    pub cancel_requested: bool,
}

impl ExecutionSummary {
    /// The cursor of the page that starts right after this execution.
    pub fn cursor(&self) -> ListCursor {
        ListCursor {
            created_at_ms: self.created_at_ms,
            id: self.id.clone(),
        }
    }
}

impl From<ExecutionRecord> for ExecutionSummary {
    fn from(record: ExecutionRecord) -> Self {
        ExecutionSummary {
            id: record.id,
            saga: record.saga,
            fingerprint: record.fingerprint,
            status: record.status,
            last_seq: record.last_seq,
            created_at_ms: record.created_at_ms,
            updated_at_ms: record.updated_at_ms,
            owner: record.owner,
            lease_expires_at_ms: record.lease_expires_at_ms,
            cancel_requested: record.cancel_requested,
        }
    }
}

/// Where a page of a listing starts: after the execution created at
/// `created_at_ms` with id `id`, in `(created_at, id)` order. Executions
/// created meanwhile never shift a page (keyset paging, not offsets).
///
/// Written as `<created_at_ms>:<id>`, e.g. for a command line:
///
/// ```
/// use saga_core::store::ListCursor;
///
/// let cursor: ListCursor = "1700000000000:order/7".parse()?;
/// assert_eq!(cursor.created_at_ms, 1_700_000_000_000);
/// assert_eq!(cursor.id.as_str(), "order/7");
/// assert_eq!(cursor.to_string(), "1700000000000:order/7");
/// # Ok::<(), saga_core::store::BadCursor>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListCursor {
    /// The creation time of the last execution of the previous page.
    pub created_at_ms: i64,
    /// Its id.
    pub id: ExecutionId,
}

impl fmt::Display for ListCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.created_at_ms, self.id)
    }
}

/// A cursor that is not `<created_at_ms>:<id>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{text}` is not a listing cursor (expected `<created_at_ms>:<id>`, as a listing prints it)"
)]
pub struct BadCursor {
    /// The text given.
    pub text: String,
}

impl FromStr for ListCursor {
    type Err = BadCursor;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadCursor {
            text: text.to_owned(),
        };
        let (ms, id) = text.split_once(':').ok_or_else(bad)?;
        let created_at_ms = ms.parse().map_err(|_| bad())?;
        if id.is_empty() {
            return Err(bad());
        }
        Ok(ListCursor {
            created_at_ms,
            id: ExecutionId::new(id),
        })
    }
}

/// What to list: which status, from where, how many.
///
/// ```
/// use saga_core::ExecutionStatus;
/// use saga_core::store::ListQuery;
///
/// let first_page = ListQuery::new()
///     .with_status(ExecutionStatus::Stuck)
///     .with_limit(50);
/// # let _ = first_page;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Only executions with this status (all for `None`).
    pub status: Option<ExecutionStatus>,
    /// Only executions after this cursor (from the first for `None`).
    pub after: Option<ListCursor>,
    /// At most this many (all for `None`).
    pub limit: Option<usize>,
}

impl ListQuery {
    /// Every execution, from the first.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only executions with `status`.
    #[must_use]
    pub fn with_status(mut self, status: ExecutionStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Only executions after `cursor` (the last summary of the previous
    /// page's [`cursor`](ExecutionSummary::cursor)).
    #[must_use]
    pub fn with_after(mut self, cursor: ListCursor) -> Self {
        self.after = Some(cursor);
        self
    }

    /// At most `limit` executions.
    #[must_use]
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Whether `summary` is after the cursor (for stores that filter in
    /// memory).
    pub fn is_after(&self, summary: &ExecutionSummary) -> bool {
        self.after.as_ref().is_none_or(|c| {
            (summary.created_at_ms, summary.id.as_str()) > (c.created_at_ms, c.id.as_str())
        })
    }
}
