//! The PostgreSQL store's [`SagaStore`] operations: writes go to the
//! writer's batch, reads to the reading connection.

use std::time::Duration;

use tokio::sync::watch;

use super::PostgresStore;
use super::rows::{SELECT_EXECUTION, SELECT_SUMMARY, execution, summary};
use super::writer::{Op, Reply};
use crate::id::ExecutionId;
use crate::report::ExecutionStatus;
use crate::step::BoxFuture;
use crate::store::{
    Ack, ClaimRequest, Claimed, ClaimedWithLog, Created, DefinitionRecord, Event, EventKind,
    ExecutionRecord, ExecutionSummary, Lease, ListQuery, NewExecution, SagaStore, StoreError,
    StoreResult, skip_unknown_status, status_from_label,
};

pub(super) fn expect_reply<T>(
    store: &PostgresStore,
    reply: StoreResult<Reply>,
    pick: impl FnOnce(Reply) -> Option<T>,
) -> StoreResult<T> {
    pick(reply?).ok_or_else(|| StoreError::Closed {
        store: store.inner.describe.clone(),
    })
}

impl PostgresStore {
    /// An execution's log, in order, with each event's context or none.
    async fn read_events(&self, id: &ExecutionId, contexts: bool) -> StoreResult<Vec<Event>> {
        let what = "reading events";
        let s = self.reader(what).await?;
        let sql = if contexts {
            "SELECT seq, kind, step, attempt, output, context, error, outcome_unknown,
                will_retry, at, detail
             FROM events WHERE execution_id = $1 ORDER BY seq"
        } else {
            "SELECT seq, kind, step, attempt, output, NULL::text, error, outcome_unknown,
                will_retry, at, detail
             FROM events WHERE execution_id = $1 ORDER BY seq"
        };
        let rows = s.query(sql, &[&id.as_str()]).await.map_err(self.db(what))?;
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            events.push(decode_event(
                &self.inner.describe,
                id,
                EventRow {
                    seq: row.get(0),
                    kind: row.get(1),
                    step: row.get(2),
                    attempt: row.get(3),
                    output: row.get(4),
                    context: row.get(5),
                    error: row.get(6),
                    unknown: row.get(7),
                    retry: row.get(8),
                    at: row.get(9),
                    detail: row.get(10),
                },
            )?);
        }
        Ok(events)
    }
}

/// An execution's latest context: its log's last, the log's key read
/// from its end (a context not read but the one returned), else its
/// initial one; no row for an unknown id.
const LATEST_CONTEXT: &str = "SELECT COALESCE(
        (SELECT context FROM events WHERE execution_id = $1 AND context IS NOT NULL
         ORDER BY seq DESC LIMIT 1),
        context)
    FROM executions WHERE id = $1";

impl SagaStore for PostgresStore {
    fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    fn put_definition(&self, definition: DefinitionRecord) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            let reply = self.write(Op::PutDefinition(definition)).await;
            expect_reply(self, reply, |r| matches!(r, Reply::Done).then_some(()))
        })
    }

    fn definition(
        &self,
        fingerprint: &str,
    ) -> BoxFuture<'_, StoreResult<Option<DefinitionRecord>>> {
        let fingerprint = fingerprint.to_owned();
        Box::pin(async move {
            let what = "reading a definition";
            let s = self.reader(what).await?;
            let row = s
                .query_opt(
                    "SELECT saga, shape FROM definitions WHERE fingerprint = $1",
                    &[&fingerprint],
                )
                .await
                .map_err(self.db(what))?;
            Ok(row.map(|row| DefinitionRecord {
                fingerprint: fingerprint.clone(),
                saga: row.get(0),
                shape: row.get(1),
            }))
        })
    }

    fn create(
        &self,
        execution: NewExecution,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Created>> {
        if let Err(error) = super::super::first_events(&self.describe(), &execution) {
            return Box::pin(std::future::ready(Err(error)));
        }
        let op = Op::Create {
            execution,
            owner: owner.to_owned(),
            ttl,
        };
        Box::pin(async move {
            let reply = self.write(op).await;
            expect_reply(self, reply, |r| match r {
                Reply::Created(c) => Some(c),
                _ => None,
            })
        })
    }

    fn claim(
        &self,
        id: &ExecutionId,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Option<Lease>>> {
        let op = Op::Claim {
            id: id.clone(),
            owner: owner.to_owned(),
            ttl,
        };
        Box::pin(async move {
            let reply = self.write(op).await;
            expect_reply(self, reply, |r| match r {
                Reply::Lease(l) => Some(l),
                _ => None,
            })
        })
    }

    /// The claims of [`claim_next_with_log`](SagaStore::claim_next_with_log),
    /// whose statement reads the logs too.
    fn claim_next(&self, request: ClaimRequest) -> BoxFuture<'_, StoreResult<Vec<Claimed>>> {
        Box::pin(async move {
            let claimed = self.claim_next_with_log(request).await?;
            Ok(claimed.into_iter().map(|c| c.claimed).collect())
        })
    }

    /// One statement: the claim, and the log of each execution it claimed
    /// whose lease row it locked as its snapshot saw it (none was appended
    /// to or claimed in between); the others' logs are left to the engine.
    fn claim_next_with_log(
        &self,
        request: ClaimRequest,
    ) -> BoxFuture<'_, StoreResult<Vec<ClaimedWithLog>>> {
        Box::pin(async move {
            if request.limit == 0 || request.fingerprints.is_empty() {
                return Ok(Vec::new());
            }
            let reply = self.write(Op::ClaimNext(request)).await;
            expect_reply(self, reply, |r| match r {
                Reply::Claimed(c) => Some(c),
                _ => None,
            })
        })
    }

    fn append<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
        events: Vec<Event>,
        status: ExecutionStatus,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        // A repeat goes on to the events' key, which refuses it inside the
        // batch's transaction (tests/test_pg_store.rs makes a batch's
        // failure so).
        if let Err(error) = super::super::consecutive(&self.describe(), id, &events, true) {
            return Box::pin(std::future::ready(Err(error)));
        }
        let op = Op::Append {
            id: id.clone(),
            lease: lease.clone(),
            events,
            status,
        };
        Box::pin(async move {
            let reply = self.write(op).await;
            expect_reply(self, reply, |r| match r {
                Reply::Ack(a) => Some(a),
                _ => None,
            })
        })
    }

    fn renew<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        let op = Op::Renew {
            id: id.clone(),
            lease: lease.clone(),
        };
        Box::pin(async move {
            let reply = self.write(op).await;
            expect_reply(self, reply, |r| match r {
                Reply::Ack(a) => Some(a),
                _ => None,
            })
        })
    }

    fn release<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<()>> {
        let op = Op::Release {
            id: id.clone(),
            lease: lease.clone(),
        };
        Box::pin(async move {
            let reply = self.write(op).await;
            expect_reply(self, reply, |r| matches!(r, Reply::Done).then_some(()))
        })
    }

    fn get<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> BoxFuture<'a, StoreResult<Option<ExecutionRecord>>> {
        Box::pin(async move {
            let what = "reading an execution";
            let s = self.reader(what).await?;
            let row = s
                .query_opt(
                    const_format!("{SELECT_EXECUTION} WHERE e.id = $1"),
                    &[&id.as_str()],
                )
                .await
                .map_err(self.db(what))?;
            row.map(|row| execution(&self.inner, &row)).transpose()
        })
    }

    fn events<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<Vec<Event>>> {
        Box::pin(self.read_events(id, true))
    }

    /// The log's columns but the context, which is then not detoasted.
    fn events_without_contexts<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> BoxFuture<'a, StoreResult<Vec<Event>>> {
        Box::pin(self.read_events(id, false))
    }

    fn list(
        &self,
        status: Option<ExecutionStatus>,
    ) -> BoxFuture<'_, StoreResult<Vec<ExecutionRecord>>> {
        Box::pin(async move {
            let what = "listing executions";
            let s = self.reader(what).await?;
            let label = status.map(ExecutionStatus::label);
            let rows = s
                .query(
                    const_format!(
                        "{SELECT_EXECUTION} WHERE $1::text IS NULL OR e.status = $1
                         ORDER BY e.created_at, e.id"
                    ),
                    &[&label],
                )
                .await
                .map_err(self.db(what))?;
            let mut records = Vec::with_capacity(rows.len());
            for row in &rows {
                let status: String = row.get(3);
                if status_from_label(&status).is_none() {
                    let id: String = row.get(0);
                    skip_unknown_status(&self.inner.describe, &id, &status);
                    continue;
                }
                records.push(execution(&self.inner, row)?);
            }
            Ok(records)
        })
    }

    fn list_summaries(
        &self,
        query: ListQuery,
    ) -> BoxFuture<'_, StoreResult<Vec<ExecutionSummary>>> {
        Box::pin(async move {
            let what = "listing executions";
            let s = self.reader(what).await?;
            let label = query.status.map(ExecutionStatus::label);
            let after = query.after.as_ref();
            let after_ms = after.map(|c| c.created_at_ms);
            let after_id = after.map(|c| c.id.as_str());
            let limit = query.limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
            // Ids compare byte for byte (`COLLATE "C"`), as in the other
            // stores, whatever the database's collation.
            let rows = s
                .query(
                    const_format!(
                        "{SELECT_SUMMARY}
                         WHERE ($1::text IS NULL OR e.status = $1)
                           AND ($2::bigint IS NULL
                                OR (e.created_at, e.id COLLATE \"C\") > ($2, $3::text COLLATE \"C\"))
                         ORDER BY e.created_at, e.id COLLATE \"C\"
                         LIMIT $4"
                    ),
                    &[&label, &after_ms, &after_id, &limit],
                )
                .await
                .map_err(self.db(what))?;
            Ok(rows
                .iter()
                .filter_map(|row| summary(&self.inner, row))
                .collect())
        })
    }

    fn context<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<Option<String>>> {
        Box::pin(async move {
            let what = "reading a context";
            let s = self.reader(what).await?;
            let row = s
                .query_opt(
                    "SELECT context FROM executions WHERE id = $1",
                    &[&id.as_str()],
                )
                .await
                .map_err(self.db(what))?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    /// One statement: the last logged context, by the log's key read from
    /// its end, else the initial one.
    fn latest_context<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> BoxFuture<'a, StoreResult<Option<String>>> {
        Box::pin(async move {
            let what = "reading a context";
            let s = self.reader(what).await?;
            let row = s
                .query_opt(LATEST_CONTEXT, &[&id.as_str()])
                .await
                .map_err(self.db(what))?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    fn request_cancel<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<bool>> {
        Box::pin(async move {
            let reply = self.write(Op::RequestCancel(id.clone())).await;
            expect_reply(self, reply, |r| match r {
                Reply::Changed(c) => Some(c),
                _ => None,
            })
        })
    }

    fn resume_requests(&self) -> BoxFuture<'_, StoreResult<Vec<ExecutionSummary>>> {
        Box::pin(async move {
            let what = "listing resume requests";
            let s = self.reader(what).await?;
            let rows = s
                .query(
                    const_format!(
                        "{SELECT_SUMMARY}
                         JOIN events v ON v.execution_id = e.id AND v.seq = e.last_seq
                         WHERE e.status = 'stuck' AND v.kind = 'resume_requested'
                         ORDER BY e.created_at, e.id COLLATE \"C\""
                    ),
                    &[],
                )
                .await
                .map_err(self.db(what))?;
            Ok(rows
                .iter()
                .filter_map(|row| summary(&self.inner, row))
                .collect())
        })
    }

    fn work_signal(&self) -> Option<watch::Receiver<u64>> {
        Some(self.inner.signal.subscribe())
    }

    fn change_signal(&self) -> Option<watch::Receiver<u64>> {
        Some(self.inner.changes.subscribe())
    }

    /// In batches of at most 500 executions, each a write of its own: the
    /// writes queued meanwhile (the runs in flight) commit between two
    /// batches instead of after the whole purge.
    fn purge(&self, before_ms: i64) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(async move {
            let (mut purged, mut after) = (0, (i64::MIN, String::new()));
            loop {
                let op = Op::Purge {
                    before: before_ms,
                    after,
                };
                let reply = self.write(op).await;
                let (deleted, next) = expect_reply(self, reply, |r| match r {
                    Reply::Purged(deleted, next) => Some((deleted, next)),
                    _ => None,
                })?;
                purged += deleted;
                match next {
                    Some(next) => after = next,
                    None => return Ok(purged),
                }
            }
        })
    }
}

/// One row of the events table, as read.
pub(super) struct EventRow {
    pub(super) seq: i64,
    pub(super) kind: String,
    pub(super) step: Option<i64>,
    pub(super) attempt: i64,
    pub(super) output: Option<String>,
    pub(super) context: Option<String>,
    pub(super) error: Option<String>,
    pub(super) unknown: bool,
    pub(super) retry: bool,
    pub(super) at: i64,
    pub(super) detail: Option<String>,
}

/// The event of a row of execution `id`'s log; a row this build cannot
/// read is a [`StoreError::BadRecord`] of the store `describe`.
pub(super) fn decode_event(describe: &str, id: &ExecutionId, row: EventRow) -> StoreResult<Event> {
    let seq = row.seq;
    let bad = |detail: String| StoreError::BadRecord {
        store: describe.to_owned(),
        what: format!("event {seq} of execution `{id}`"),
        detail,
    };
    let kind = EventKind::from_label(&row.kind)
        .ok_or_else(|| bad(format!("unknown kind `{}`", row.kind)))?;
    let step = row
        .step
        .map(u32::try_from)
        .transpose()
        .map_err(|_| bad("step index out of range".to_owned()))?;
    let attempt = u32::try_from(row.attempt).map_err(|_| bad("attempt out of range".to_owned()))?;
    Ok(Event {
        seq: u64::try_from(seq).map_err(|_| bad("negative seq".to_owned()))?,
        kind,
        step,
        attempt,
        output: row.output,
        context: row.context,
        error: row.error,
        outcome_unknown: row.unknown,
        will_retry: row.retry,
        at_ms: row.at,
        detail: row.detail,
    })
}
