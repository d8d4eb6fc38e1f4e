//! The PostgreSQL store's writes, each run by the writer inside the
//! batch's transaction: one function per operation.

use std::borrow::Cow;
use std::time::Duration;

use super::ops::{EventRow, decode_event};
use super::rows::{execution, get_execution, lease_lost};
use tokio_postgres::types::FromSql;
use tokio_postgres::{Row, Statement};

use super::session::{Session, sql_error};
use super::writer::{Failure, Op, Reply};
use super::{Inner, NOW};
use crate::id::ExecutionId;
use crate::report::ExecutionStatus;
use crate::store::{
    Ack, ClaimRequest, Claimed, ClaimedWithLog, Created, DefinitionRecord, Event, Lease,
    NewExecution, StoreError, StoreResult, ttl_ms,
};

/// Runs one write inside the batch's transaction.
pub(super) async fn run_op(s: &Session, store: &Inner, op: &Op) -> Result<Reply, Failure> {
    match op {
        Op::PutDefinition(d) => put_definition(s, d).await,
        Op::Create {
            execution,
            owner,
            ttl,
        } => create(s, store, execution, owner, *ttl).await,
        Op::Claim { id, owner, ttl } => claim(s, store, id, owner, *ttl).await,
        Op::ClaimNext(request) => claim_next(s, store, request).await,
        Op::Append {
            id,
            lease,
            events,
            status,
        } => {
            let statement = s.statement(append_sql()).await?;
            append(s, store, &statement, id, lease, events, *status).await
        }
        Op::Renew { id, lease } => renew(s, id, lease).await,
        Op::Release { id, lease } => release(s, id, lease).await,
        Op::RequestCancel(id) => request_cancel(s, id).await,
        Op::Purge { before, after } => purge(s, *before, after).await,
    }
}

/// Records a definition; one already recorded stays as it was.
async fn put_definition(s: &Session, d: &DefinitionRecord) -> Result<Reply, Failure> {
    s.execute(
        const_format!(
            "INSERT INTO definitions (fingerprint, saga, shape, registered_at)
             VALUES ($1, $2, $3, {NOW}) ON CONFLICT (fingerprint) DO NOTHING"
        ),
        &[&d.fingerprint, &d.saga, &d.shape],
    )
    .await?;
    Ok(Reply::Done)
}

/// Inserts an execution with its lease and first events; an id already
/// taken answers with the existing execution.
async fn create(
    s: &Session,
    store: &Inner,
    execution: &NewExecution,
    owner: &str,
    ttl: Duration,
) -> Result<Reply, Failure> {
    let id = execution.id.as_str();
    let inserted = s
        .execute(
            const_format!(
                "INSERT INTO executions (id, saga, fingerprint, status, context, last_seq,
                    created_at, updated_at)
                 VALUES ($1, $2, $3, 'running', $4, $5, {NOW}, {NOW})
                 ON CONFLICT (id) DO NOTHING"
            ),
            &[
                &id,
                &execution.saga,
                &execution.fingerprint,
                &execution.context,
                &i64::try_from(execution.events.len()).unwrap_or(i64::MAX),
            ],
        )
        .await?;
    if inserted == 0 {
        return match get_execution(s, store, id).await? {
            Some(existing) => Ok(Reply::Created(Created::Existing(existing))),
            None => Err(Failure::Refused(StoreError::NotFound {
                execution_id: execution.id.clone(),
            })),
        };
    }
    let row = s
        .query_opt(
            const_format!(
                "INSERT INTO leases (execution_id, owner, token, expires_at)
                 VALUES ($1, $2, 1, {NOW} + $3)
                 ON CONFLICT (execution_id) DO UPDATE
                 SET owner = $2, token = leases.token + 1, expires_at = {NOW} + $3
                 RETURNING token"
            ),
            &[&id, &owner, &ttl_ms(ttl)],
        )
        .await?;
    let token = row.map_or(1, |r| r.get(0));
    if !execution.events.is_empty() {
        let c = Columns::of(&execution.events);
        s.execute(
            const_format!(
                "INSERT INTO events (execution_id, seq, at, kind, step, attempt, output,
                    context, error, outcome_unknown, will_retry, detail)
                 SELECT $1, u.seq, {NOW}, u.kind, u.step, u.attempt, u.output,
                    u.context, u.error, u.unknown, u.retry, u.detail
                 FROM {UNNEST_EVENTS}"
            ),
            &[
                &id,
                &c.seqs,
                &c.kinds,
                &c.steps,
                &c.attempts,
                &c.outputs,
                &c.contexts,
                &c.errors,
                &c.unknown,
                &c.retry,
                &c.details,
            ],
        )
        .await?;
    }
    Ok(Reply::Created(Created::New(Lease {
        owner: owner.into(),
        token,
        ttl,
    })))
}

/// Takes the lease of an execution nobody holds (or whose lease expired).
async fn claim(
    s: &Session,
    store: &Inner,
    id: &ExecutionId,
    owner: &str,
    ttl: Duration,
) -> Result<Reply, Failure> {
    let row = s
        .query_opt(
            const_format!(
                "UPDATE leases SET owner = $2, token = token + 1, expires_at = {NOW} + $3
                 WHERE execution_id = $1
                   AND (owner IS NULL OR expires_at IS NULL OR expires_at <= {NOW})
                 RETURNING token"
            ),
            &[&id.as_str(), &owner, &ttl_ms(ttl)],
        )
        .await?;
    match row {
        Some(row) => Ok(Reply::Lease(Some(Lease {
            owner: owner.into(),
            token: row.get(0),
            ttl,
        }))),
        None if get_execution(s, store, id.as_str()).await?.is_none() => {
            Err(Failure::Refused(StoreError::NotFound {
                execution_id: id.clone(),
            }))
        }
        None => Ok(Reply::Lease(None)),
    }
}

/// Takes up to `request.limit` claimable executions, skipping those another
/// claimer has locked, each with its log when the statement can vouch for
/// it.
///
/// The statement reads the executions and their logs as its snapshot saw
/// them, but it locks the newest version of each lease row: a lease
/// committed after the snapshot (an append's, which writes its events and
/// moves the lease row in one statement, or another claim's) is locked
/// and checked again, and its execution row and log in the snapshot may
/// be older than the lease. Every write of the log moves the lease row,
/// so a lease row locked as the snapshot saw it (same `ctid`) means that
/// the snapshot's execution row and log are the ones the new lease
/// covers; for the others the log is left out (`fresh` false), and the
/// engine reads the record and the log again under the lease.
async fn claim_next(s: &Session, store: &Inner, request: &ClaimRequest) -> Result<Reply, Failure> {
    let exclude: Vec<&str> = request.exclude.iter().map(ExecutionId::as_str).collect();
    let limit = i64::try_from(request.limit).unwrap_or(i64::MAX);
    let rows = s
        .query(
            const_format!(
                "WITH picked AS (
                    SELECT l.execution_id, l.ctid AS locked FROM leases l
                    JOIN executions e ON e.id = l.execution_id
                    WHERE e.status IN ('running', 'compensating')
                      AND e.fingerprint = ANY($1)
                      AND NOT (e.id = ANY($5))
                      AND (l.owner IS NULL OR l.expires_at IS NULL
                           OR l.expires_at <= {NOW})
                    ORDER BY e.created_at, e.id
                    LIMIT $4
                    FOR UPDATE OF l SKIP LOCKED
                ), claimed AS (
                    UPDATE leases l SET owner = $2, token = l.token + 1,
                        expires_at = {NOW} + $3
                    FROM picked WHERE l.execution_id = picked.execution_id
                    RETURNING l.execution_id, l.owner, l.token, l.expires_at, picked.locked
                )
                SELECT e.id, e.saga, e.fingerprint, e.status, e.context, e.last_seq,
                    e.created_at, e.updated_at, c.owner, c.expires_at,
                    e.cancel_requested, c.token, f.fresh,
                    v.seqs, v.kinds, v.steps, v.attempts, v.outputs, v.contexts,
                    v.errors, v.unknown, v.retry, v.ats, v.details
                FROM claimed c JOIN executions e ON e.id = c.execution_id
                CROSS JOIN LATERAL (
                    SELECT c.locked = (SELECT s.ctid FROM leases s
                        WHERE s.execution_id = c.execution_id) IS TRUE AS fresh
                ) f
                LEFT JOIN LATERAL (
                    SELECT array_agg(v.seq ORDER BY v.seq) AS seqs,
                        array_agg(v.kind ORDER BY v.seq) AS kinds,
                        array_agg(v.step ORDER BY v.seq) AS steps,
                        array_agg(v.attempt ORDER BY v.seq) AS attempts,
                        array_agg(v.output ORDER BY v.seq) AS outputs,
                        array_agg(v.context ORDER BY v.seq) AS contexts,
                        array_agg(v.error ORDER BY v.seq) AS errors,
                        array_agg(v.outcome_unknown ORDER BY v.seq) AS unknown,
                        array_agg(v.will_retry ORDER BY v.seq) AS retry,
                        array_agg(v.at ORDER BY v.seq) AS ats,
                        array_agg(v.detail ORDER BY v.seq) AS details
                    FROM events v WHERE f.fresh AND v.execution_id = c.execution_id
                ) v ON TRUE
                ORDER BY e.created_at, e.id"
            ),
            &[
                &request.fingerprints,
                &request.owner,
                &ttl_ms(request.ttl),
                &limit,
                &exclude,
            ],
        )
        .await?;
    let mut claimed = Vec::with_capacity(rows.len());
    for row in rows {
        let token: i64 = row.get(11);
        let record = execution(store, &row).map_err(Failure::Refused)?;
        let events = match row.get::<_, bool>(12) {
            true => Some(claimed_log(store, &record.id, &row).map_err(Failure::Refused)?),
            false => None,
        };
        let lease = request.lease(token);
        claimed.push(ClaimedWithLog::new(Claimed { record, lease }, events));
    }
    Ok(Reply::Claimed(claimed))
}

/// The log [`claim_next`] read for one execution: its columns 13 to 23,
/// one array each (all `NULL` for an empty log).
fn claimed_log(store: &Inner, id: &ExecutionId, row: &Row) -> StoreResult<Vec<Event>> {
    let seqs: Vec<i64> = row.get::<_, Option<_>>(13).unwrap_or_default();
    let mut kinds = column::<String>(row, 14);
    let mut steps = column::<Option<i64>>(row, 15);
    let mut attempts = column::<i64>(row, 16);
    let mut outputs = column::<Option<String>>(row, 17);
    let mut contexts = column::<Option<String>>(row, 18);
    let mut errors = column::<Option<String>>(row, 19);
    let mut unknown = column::<bool>(row, 20);
    let mut retry = column::<bool>(row, 21);
    let mut ats = column::<i64>(row, 22);
    let mut details = column::<Option<String>>(row, 23);
    let mut events = Vec::with_capacity(seqs.len());
    for seq in seqs {
        let short = || StoreError::BadRecord {
            store: store.describe.clone(),
            what: format!("event {seq} of execution `{id}`"),
            detail: "a column of the claimed log is short".to_owned(),
        };
        let row = EventRow {
            seq,
            kind: kinds.next().ok_or_else(short)?,
            step: steps.next().ok_or_else(short)?,
            attempt: attempts.next().ok_or_else(short)?,
            output: outputs.next().ok_or_else(short)?,
            context: contexts.next().ok_or_else(short)?,
            error: errors.next().ok_or_else(short)?,
            unknown: unknown.next().ok_or_else(short)?,
            retry: retry.next().ok_or_else(short)?,
            at: ats.next().ok_or_else(short)?,
            detail: details.next().ok_or_else(short)?,
        };
        events.push(decode_event(&store.describe, id, row)?);
    }
    Ok(events)
}

/// The elements of column `i` of `row`, an array (none for `NULL`).
fn column<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> std::vec::IntoIter<T> {
    row.get::<_, Option<Vec<T>>>(i)
        .unwrap_or_default()
        .into_iter()
}

/// Extends a lease that is still held.
async fn renew(s: &Session, id: &ExecutionId, lease: &Lease) -> Result<Reply, Failure> {
    let row = s
        .query_opt(
            const_format!(
                "UPDATE leases SET expires_at = {NOW} + $4
                 WHERE execution_id = $1 AND token = $2 AND owner = $3
                 RETURNING (SELECT cancel_requested FROM executions WHERE id = $1)"
            ),
            &[
                &id.as_str(),
                &lease.token,
                &&*lease.owner,
                &ttl_ms(lease.ttl),
            ],
        )
        .await?;
    match row {
        Some(row) => Ok(Reply::Ack(Ack {
            cancel_requested: row.get::<_, Option<bool>>(0).unwrap_or(false),
        })),
        None => Err(Failure::Refused(lease_lost(id))),
    }
}

/// Gives a lease up (a lease taken over meanwhile is left alone).
async fn release(s: &Session, id: &ExecutionId, lease: &Lease) -> Result<Reply, Failure> {
    s.execute(
        "UPDATE leases SET owner = NULL, expires_at = NULL
         WHERE execution_id = $1 AND token = $2 AND owner = $3",
        &[&id.as_str(), &lease.token, &&*lease.owner],
    )
    .await?;
    Ok(Reply::Done)
}

/// Marks an execution for cancellation.
async fn request_cancel(s: &Session, id: &ExecutionId) -> Result<Reply, Failure> {
    let changed = s
        .execute(
            "UPDATE executions SET cancel_requested = TRUE WHERE id = $1",
            &[&id.as_str()],
        )
        .await?;
    Ok(Reply::Changed(changed == 1))
}

/// How many executions one transaction of a purge deletes at most: a
/// batch holds the writer (every other write of the process waits) for
/// some milliseconds, where the whole purge of a year-old store held it
/// for seconds.
pub(super) const PURGE_BATCH: i64 = 500;

/// One batch of a purge: deletes the first [`PURGE_BATCH`] finished
/// executions last updated at or before `before` (ms), after `after` in
/// `(created_at, id)` order (walked along `executions_by_created`), with
/// their logs and leases, in one statement (one snapshot).
async fn purge(s: &Session, before: i64, after: &(i64, String)) -> Result<Reply, Failure> {
    let row = s
        .query_opt(
            // The limit written out, not a parameter: the plan kept for
            // the statement then expects a batch's few hundred rows and
            // deletes their logs through the primary key, where one for
            // a limit it cannot see scanned the whole events table at
            // each batch.
            const_format!(
                "WITH doomed AS MATERIALIZED (
                SELECT id, created_at FROM executions
                WHERE status IN ('completed', 'compensated', 'cancelled', 'abandoned')
                  AND updated_at <= $1 AND created_at <= $1
                  AND (created_at, id COLLATE \"C\") > ($2, $3::text COLLATE \"C\")
                ORDER BY created_at, id COLLATE \"C\"
                LIMIT {PURGE_BATCH}
             ), events_gone AS (
                DELETE FROM events WHERE execution_id IN (SELECT id FROM doomed)
             ), leases_gone AS (
                DELETE FROM leases WHERE execution_id IN (SELECT id FROM doomed)
             ), gone AS (
                DELETE FROM executions WHERE id IN (SELECT id FROM doomed)
                RETURNING 1
             )
             SELECT (SELECT count(*) FROM doomed), (SELECT count(*) FROM gone), last.created_at, last.id
             FROM (SELECT 1) one LEFT JOIN LATERAL (
                SELECT created_at, id FROM doomed
                ORDER BY created_at DESC, id COLLATE \"C\" DESC LIMIT 1
             ) last ON TRUE"
            ),
            &[&before, &after.0, &after.1],
        )
        .await?;
    // One row, always.
    let Some(row) = row else {
        return Ok(Reply::Purged(0, None));
    };
    let (found, purged): (i64, i64) = (row.get(0), row.get(1));
    let next = match (found == PURGE_BATCH, row.get(2), row.get(3)) {
        (true, Some(at), Some(id)) => Some((at, id)),
        _ => None,
    };
    Ok(Reply::Purged(u64::try_from(purged).unwrap_or(0), next))
}

/// The events' fields as arrays, for `unnest`.
pub(super) struct Columns<'a> {
    seqs: Vec<i64>,
    kinds: Vec<&'static str>,
    steps: Vec<Option<i64>>,
    attempts: Vec<i64>,
    outputs: Vec<Option<&'a str>>,
    contexts: Vec<Option<&'a str>>,
    errors: Vec<Option<Cow<'a, str>>>,
    unknown: Vec<bool>,
    retry: Vec<bool>,
    details: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    /// The events of several appends, one after the other.
    fn of_many(logs: impl Iterator<Item = &'a [Event]>) -> Self {
        let mut all = Columns::of(&[]);
        for events in logs {
            let c = Columns::of(events);
            all.seqs.extend(c.seqs);
            all.kinds.extend(c.kinds);
            all.steps.extend(c.steps);
            all.attempts.extend(c.attempts);
            all.outputs.extend(c.outputs);
            all.contexts.extend(c.contexts);
            all.errors.extend(c.errors);
            all.unknown.extend(c.unknown);
            all.retry.extend(c.retry);
            all.details.extend(c.details);
        }
        all
    }

    fn of(events: &'a [Event]) -> Self {
        Columns {
            seqs: events
                .iter()
                .map(|e| i64::try_from(e.seq).unwrap_or(i64::MAX))
                .collect(),
            kinds: events.iter().map(|e| e.kind.label()).collect(),
            steps: events.iter().map(|e| e.step.map(i64::from)).collect(),
            attempts: events.iter().map(|e| i64::from(e.attempt)).collect(),
            outputs: events.iter().map(|e| e.output.as_deref()).collect(),
            contexts: events.iter().map(|e| e.context.as_deref()).collect(),
            errors: events
                .iter()
                .map(|e| e.error.as_deref().map(text))
                .collect(),
            unknown: events.iter().map(|e| e.outcome_unknown).collect(),
            retry: events.iter().map(|e| e.will_retry).collect(),
            details: events.iter().map(|e| e.detail.as_deref()).collect(),
        }
    }
}

/// `s` as PostgreSQL's `text` takes it: with U+FFFD for each NUL, the
/// one character it refuses. An error message can hold anything (a C
/// library's, a peer's bytes); the other columns are JSON or names.
fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{fffd}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// The rows of `unnest`ed event columns `$2`..`$11` (see [`Columns`]).
pub(super) const UNNEST_EVENTS: &str =
    "unnest($2::bigint[], $3::text[], $4::bigint[], $5::bigint[],
    $6::text[], $7::text[], $8::text[], $9::bool[], $10::bool[], $11::text[])
    AS u(seq, kind, step, attempt, output, context, error, unknown, retry, detail)";

/// The statement of an append: the lease checked (and its row locked, as
/// an update would: a claim that commits meanwhile is seen), the
/// execution row moved on and the events inserted, and only then the
/// lease extended (or dropped when the execution finishes), all or
/// nothing. An append refused on its sequence leaves the lease as it was:
/// a stale writer's finishing append must not release the lease of the
/// owner still running the execution.
pub(super) fn append_sql() -> &'static str {
    const_format!(
        "WITH held AS (
            SELECT 1 FROM leases
            WHERE execution_id = $1 AND token = $2 AND owner = $3
            FOR NO KEY UPDATE
        ), moved AS (
            UPDATE executions SET status = $5, last_seq = $6, updated_at = {NOW}
            WHERE id = $1 AND last_seq = $7 AND EXISTS (SELECT 1 FROM held)
            RETURNING cancel_requested
        ), lease AS (
            UPDATE leases SET
                owner = CASE WHEN $17 THEN NULL ELSE owner END,
                expires_at = CASE WHEN $17 THEN NULL ELSE {NOW} + $4 END
            WHERE execution_id = $1 AND token = $2 AND owner = $3
              AND EXISTS (SELECT 1 FROM moved)
            RETURNING 1
        ), written AS (
            INSERT INTO events (execution_id, seq, at, kind, step, attempt, output,
                context, error, outcome_unknown, will_retry, detail)
            SELECT $1, u.seq, {NOW}, u.kind, u.step, u.attempt, u.output, u.context,
                u.error, u.unknown, u.retry, u.detail
            FROM unnest($8::bigint[], $9::text[], $10::bigint[], $11::bigint[],
                $12::text[], $13::text[], $14::text[], $15::bool[], $16::bool[],
                $18::text[])
                AS u(seq, kind, step, attempt, output, context, error, unknown, retry,
                    detail)
            WHERE EXISTS (SELECT 1 FROM moved)
            RETURNING 1
        )
        SELECT (SELECT cancel_requested FROM moved),
            (SELECT count(*) FROM held),
            (SELECT count(*) FROM written)"
    )
}

/// Appends events in one statement: the lease's fence, the sequence check
/// and the writes together, so a lost lease or a gap writes nothing and
/// leaves the lease as it was. A finished status releases the lease in the
/// same statement.
///
/// `statement` is [`append_sql`] prepared. The answer of a refused append
/// is read in the same transaction ([`answer`]).
pub(super) async fn append(
    s: &Session,
    store: &Inner,
    statement: &Statement,
    id: &ExecutionId,
    lease: &Lease,
    events: &[Event],
    status: ExecutionStatus,
) -> Result<Reply, Failure> {
    let outcome = append_outcome(s, statement, id, lease, events, status).await?;
    answer(s, store, id, events, outcome).await
}

/// Sends an append's statement ([`append_sql`] prepared, as `statement`)
/// and returns what it said, for [`answer`] or [`answer_committed`]: the
/// statement is sent when the future is first polled, which the writer's
/// pipelined batches rely on.
pub(super) async fn append_outcome(
    s: &Session,
    statement: &Statement,
    id: &ExecutionId,
    lease: &Lease,
    events: &[Event],
    status: ExecutionStatus,
) -> Result<Outcome, tokio_postgres::Error> {
    let first = events.first().map_or(0, |e| e.seq);
    let last = events.last().map_or(0, |e| e.seq);
    let prev = first.saturating_sub(1);
    let new_last = if events.is_empty() { prev } else { last };
    let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let c = Columns::of(events);
    let row = s
        .client
        .query_opt(
            statement,
            &[
                &id.as_str(),
                &lease.token,
                &&*lease.owner,
                &ttl_ms(lease.ttl),
                &status.label(),
                &as_i64(new_last),
                &as_i64(prev),
                &c.seqs,
                &c.kinds,
                &c.steps,
                &c.attempts,
                &c.outputs,
                &c.contexts,
                &c.errors,
                &c.unknown,
                &c.retry,
                &status.is_finished(),
                &c.details,
            ],
        )
        .await?;
    Ok(match row {
        Some(row) => Outcome {
            cancel: row.get(0),
            held: row.get(1),
            written: row.get(2),
        },
        None => Outcome::default(),
    })
}

/// What an append's statement said: the execution's cancel request if the
/// execution row moved on, how many leases matched (0 or 1), how many
/// events were written.
#[derive(Default)]
pub(super) struct Outcome {
    cancel: Option<bool>,
    held: i64,
    written: i64,
}

/// The answer to an append from its [`Outcome`]: the acknowledgement if
/// everything was written, else why not (read after the fact: a refused
/// append wrote nothing).
pub(super) async fn answer(
    s: &Session,
    store: &Inner,
    id: &ExecutionId,
    events: &[Event],
    outcome: Outcome,
) -> Result<Reply, Failure> {
    let Outcome {
        cancel,
        held,
        written,
    } = outcome;
    let first = events.first().map_or(0, |e| e.seq);
    let prev = first.saturating_sub(1);
    let all_written = usize::try_from(written).ok() == Some(events.len());
    if let (Some(cancel_requested), true) = (cancel, all_written) {
        return Ok(Reply::Ack(Ack { cancel_requested }));
    }
    if held == 0 {
        return Err(Failure::Refused(
            match get_execution(s, store, id.as_str()).await? {
                None => StoreError::NotFound {
                    execution_id: id.clone(),
                },
                Some(_) => lease_lost(id),
            },
        ));
    }
    let found = get_execution(s, store, id.as_str())
        .await?
        .map_or(0, |r| r.last_seq);
    Err(Failure::Refused(StoreError::BadRecord {
        store: store.describe.clone(),
        what: format!("event {first} of execution `{id}`"),
        detail: format!("the log ends at {found}, expected {prev}"),
    }))
}

/// What a read that explains a refused append was doing, for its error.
const EXPLAINING: &str = "reading why an append was refused";

/// [`answer`] for an append whose batch committed before its refusal is
/// explained (the writer's pipelined batches read after the `COMMIT`).
/// The explaining read failing (the connection dropped) fails this
/// append alone ([`explained`]): the batch committed, and the appends of
/// it that were written must be acknowledged, not run again.
pub(super) async fn answer_committed(
    s: &Session,
    store: &Inner,
    id: &ExecutionId,
    events: &[Event],
    outcome: Outcome,
) -> StoreResult<Reply> {
    explained(&store.describe, answer(s, store, id, events, outcome).await)
}

/// The answer to one append from [`answer`]'s, read after its batch
/// committed: a failed read is this append's error (an outage if the
/// connection dropped: [`StoreError::Unavailable`], which says nothing
/// was written, as nothing was), never the batch's.
fn explained(store: &str, answer: Result<Reply, Failure>) -> StoreResult<Reply> {
    match answer {
        Ok(reply) => Ok(reply),
        Err(Failure::Refused(error)) => Err(error),
        Err(Failure::Sql(e)) => Err(sql_error(store, EXPLAINING, e)),
    }
}

/// One append of a batch: what [`append`] takes.
pub(super) struct AppendOf<'a> {
    pub(super) id: &'a ExecutionId,
    pub(super) lease: &'a Lease,
    pub(super) events: &'a [Event],
    pub(super) status: ExecutionStatus,
}

/// The statement of a batch of appends to distinct executions: each
/// append as [`append_sql`]'s, side by side in one statement (one
/// execution of the plan, one answer from the server, instead of one of
/// each per append). Every append is fenced on its own: `$1`..`$8` hold
/// one element per append (`n` its place, from 1), `$9` the place of the
/// append each event of `$10`..`$19` belongs to. One row per append, in
/// order: as [`append_sql`]'s.
///
/// The executions must be distinct: two appends to one execution would
/// both be checked against the same snapshot (the writer sends those one
/// statement each).
pub(super) fn append_many_sql() -> &'static str {
    const_format!(
        "WITH input AS (
            SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[],
                $5::text[], $6::bigint[], $7::bigint[], $8::bool[])
                WITH ORDINALITY AS a(id, token, owner, ttl, status, new_last, prev, finished, n)
        ), held AS (
            SELECT a.n FROM leases l JOIN input a
                ON l.execution_id = a.id AND l.token = a.token AND l.owner = a.owner
            FOR NO KEY UPDATE OF l
        ), moved AS (
            UPDATE executions e SET status = a.status, last_seq = a.new_last,
                updated_at = {NOW}
            FROM input a
            WHERE e.id = a.id AND e.last_seq = a.prev AND a.n IN (SELECT n FROM held)
            RETURNING a.n, e.cancel_requested
        ), lease AS (
            UPDATE leases l SET
                owner = CASE WHEN a.finished THEN NULL ELSE l.owner END,
                expires_at = CASE WHEN a.finished THEN NULL ELSE {NOW} + a.ttl END
            FROM input a
            WHERE l.execution_id = a.id AND l.token = a.token AND l.owner = a.owner
              AND a.n IN (SELECT n FROM moved)
            RETURNING a.n
        ), written AS (
            INSERT INTO events (execution_id, seq, at, kind, step, attempt, output,
                context, error, outcome_unknown, will_retry, detail)
            SELECT a.id, u.seq, {NOW}, u.kind, u.step, u.attempt, u.output, u.context,
                u.error, u.unknown, u.retry, u.detail
            FROM unnest($9::bigint[], $10::bigint[], $11::text[], $12::bigint[],
                $13::bigint[], $14::text[], $15::text[], $16::text[], $17::bool[],
                $18::bool[], $19::text[])
                AS u(n, seq, kind, step, attempt, output, context, error, unknown, retry,
                    detail)
            JOIN input a ON a.n = u.n
            WHERE u.n IN (SELECT n FROM moved)
            RETURNING execution_id
        )
        SELECT a.n, m.cancel_requested, (h.n IS NOT NULL)::int::int8, coalesce(w.count, 0)
        FROM input a
        LEFT JOIN held h ON h.n = a.n
        LEFT JOIN moved m ON m.n = a.n
        LEFT JOIN (SELECT execution_id, count(*) FROM written GROUP BY execution_id) w
            ON w.execution_id = a.id
        ORDER BY a.n"
    )
}

/// Sends `appends` (to distinct executions) as one statement,
/// [`append_many_sql`] prepared (sent when the future is first polled);
/// each append's [`Outcome`], in their order, for [`answer`].
pub(super) async fn append_many(
    s: &Session,
    statement: &Statement,
    appends: &[AppendOf<'_>],
) -> Result<Vec<Outcome>, tokio_postgres::Error> {
    let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let mut ids = Vec::with_capacity(appends.len());
    let mut tokens = Vec::with_capacity(appends.len());
    let mut owners = Vec::with_capacity(appends.len());
    let mut ttls = Vec::with_capacity(appends.len());
    let mut statuses = Vec::with_capacity(appends.len());
    let mut new_lasts = Vec::with_capacity(appends.len());
    let mut prevs = Vec::with_capacity(appends.len());
    let mut finished = Vec::with_capacity(appends.len());
    let mut places = Vec::new();
    for (n, a) in appends.iter().enumerate() {
        let first = a.events.first().map_or(0, |e| e.seq);
        let prev = first.saturating_sub(1);
        let new_last = a.events.last().map_or(prev, |e| e.seq);
        ids.push(a.id.as_str());
        tokens.push(a.lease.token);
        owners.push(&*a.lease.owner);
        ttls.push(ttl_ms(a.lease.ttl));
        statuses.push(a.status.label());
        new_lasts.push(as_i64(new_last));
        prevs.push(as_i64(prev));
        finished.push(a.status.is_finished());
        let place = i64::try_from(n + 1).unwrap_or(i64::MAX);
        places.extend(a.events.iter().map(|_| place));
    }
    let c = Columns::of_many(appends.iter().map(|a| a.events));
    let rows = s
        .client
        .query(
            statement,
            &[
                &ids,
                &tokens,
                &owners,
                &ttls,
                &statuses,
                &new_lasts,
                &prevs,
                &finished,
                &places,
                &c.seqs,
                &c.kinds,
                &c.steps,
                &c.attempts,
                &c.outputs,
                &c.contexts,
                &c.errors,
                &c.unknown,
                &c.retry,
                &c.details,
            ],
        )
        .await?;
    let mut outcomes: Vec<Outcome> = appends.iter().map(|_| Outcome::default()).collect();
    for row in rows {
        let n = usize::try_from(row.get::<_, i64>(0)).unwrap_or(0);
        if let Some(slot) = n.checked_sub(1).and_then(|i| outcomes.get_mut(i)) {
            *slot = Outcome {
                cancel: row.get(1),
                held: row.get(2),
                written: row.get(3),
            };
        }
    }
    Ok(outcomes)
}
