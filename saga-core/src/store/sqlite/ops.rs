//! The SQLite store's [`SagaStore`] operations: each a statement or a few,
//! run by the writer thread.

use std::time::Duration;

use rusqlite::{OptionalExtension, params};

use super::rows::{
    SELECT_EXECUTION, SELECT_SUMMARY, bad_record, db, execution, get_execution, insert_events,
    lease_lost, raw_execution, summary,
};
use super::{SqliteStore, describe};
use crate::id::ExecutionId;
use crate::report::ExecutionStatus;
use crate::step::BoxFuture;
use tokio::sync::watch;

use crate::store::{
    Ack, ClaimRequest, Claimed, ClaimedWithLog, Created, DefinitionRecord, Event, EventKind,
    ExecutionRecord, ExecutionSummary, Lease, ListQuery, NewExecution, SagaStore, StoreError,
    StoreResult, now_ms, skip_unknown_status, status_from_label, ttl_ms,
};

/// How far beyond a whole ttl an append sets a lease it extends, as a
/// fraction of the ttl (1/32: 312 ms of the default 10 s): the appends
/// within that time find the lease a whole ttl away and leave it, so a run
/// writes its lease about once a thirty-second of a ttl instead of at every
/// step. A dead owner's lease, when no file lock proves it dead, is taken
/// over at most that much later.
const LEASE_SLACK: i64 = 32;

/// A JSON array of strings, for `json_each`.
fn json_list(items: Vec<String>) -> String {
    serde_json::Value::from(items).to_string()
}

/// Records the death of the `dead` owners in the claim's transaction:
/// their leases expire now ([`super::liveness::expire_leases`]), for every
/// claimer in every process, before their sidecars (the proof) are
/// removed. The owners as a JSON array, for the claim's statement. Two
/// writing statements in a fenced write: a claim fails after this one
/// only on a damaged file or an I/O error, which roll its batch back.
fn expire_dead(
    conn: &rusqlite::Connection,
    path: &std::path::Path,
    dead: Vec<String>,
    now: i64,
) -> StoreResult<String> {
    let dead = json_list(dead);
    if dead != "[]" {
        super::liveness::expire_leases(conn, &dead, now)
            .map_err(db(path, "expiring a dead owner's leases"))?;
    }
    Ok(dead)
}

/// An execution's log, in order (in a claim's transaction, or read alone),
/// with each event's context or none.
fn read_events(
    conn: &rusqlite::Connection,
    path: &std::path::Path,
    id: &str,
    contexts: bool,
) -> StoreResult<Vec<Event>> {
    let err = db(path, "reading events");
    let sql = if contexts {
        "SELECT seq, kind, step, attempt, output, context, error, outcome_unknown,
            will_retry, at, detail
         FROM events WHERE execution_id = ?1 ORDER BY seq"
    } else {
        "SELECT seq, kind, step, attempt, output, NULL, error, outcome_unknown,
            will_retry, at, detail
         FROM events WHERE execution_id = ?1 ORDER BY seq"
    };
    let mut stmt = conn.prepare_cached(sql).map_err(&err)?;
    let rows = stmt
        .query_map([id], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<u32>>(2)?,
                row.get::<_, u32>(3)?,
                row.get::<_, Option<String>>(4)?,
                row.get::<_, Option<String>>(5)?,
                row.get::<_, Option<String>>(6)?,
                row.get::<_, bool>(7)?,
                row.get::<_, bool>(8)?,
                row.get::<_, i64>(9)?,
                row.get::<_, Option<String>>(10)?,
            ))
        })
        .map_err(&err)?;
    let mut events = Vec::new();
    for row in rows {
        let (seq, kind, step, attempt, output, context, error, unknown, retry, at, detail) =
            row.map_err(&err)?;
        let kind = EventKind::from_label(&kind).ok_or_else(|| {
            bad_record(
                path,
                format!("event {seq} of execution `{id}`"),
                format!("unknown kind `{kind}`"),
            )
        })?;
        events.push(Event {
            seq: u64::try_from(seq).unwrap_or(0),
            kind,
            step,
            attempt,
            output,
            context,
            error,
            outcome_unknown: unknown,
            will_retry: retry,
            detail,
            at_ms: at,
        });
    }
    Ok(events)
}

impl SqliteStore {
    /// Claims as [`SagaStore::claim_next`] does, in one write transaction;
    /// each claim with its log if `with_log`.
    fn claim_in_one_transaction(
        &self,
        request: ClaimRequest,
        with_log: bool,
    ) -> BoxFuture<'_, StoreResult<Vec<ClaimedWithLog>>> {
        if request.limit == 0 || request.fingerprints.is_empty() {
            return Box::pin(std::future::ready(Ok(Vec::new())));
        }
        let owners = self.owners();
        let claimed = self.write_fenced("claiming executions", move |conn, path| {
            let err = db(path, "claiming executions");
            let now = now_ms();
            let mut owners = super::owners(&owners);
            owners.hold(&request.owner);
            // The owners of live leases on unfinished executions, and of
            // those the ones whose process is gone.
            let holders = conn
                .prepare_cached(
                    "SELECT DISTINCT l.owner FROM leases l
                     JOIN executions e ON e.id = l.execution_id
                     WHERE e.status IN ('running', 'compensating')
                       AND l.owner IS NOT NULL AND l.expires_at > ?1",
                )
                .and_then(|mut stmt| {
                    stmt.query_map([now], |row| row.get::<_, String>(0))?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(&err)?;
            let dead = owners.dead_among(holders);
            drop(owners);
            let dead_list = expire_dead(conn, path, dead.clone(), now)?;
            let as_json = |items: Vec<&str>| serde_json::Value::from(items).to_string();
            let fingerprints = as_json(request.fingerprints.iter().map(String::as_str).collect());
            let exclude = as_json(request.exclude.iter().map(ExecutionId::as_str).collect());
            let limit = i64::try_from(request.limit).unwrap_or(i64::MAX);
            let mut stmt = conn
                .prepare_cached(
                    "UPDATE leases SET owner = ?1, token = token + 1, expires_at = ?2
                     WHERE execution_id IN (
                        SELECT e.id FROM executions e
                        JOIN leases l ON l.execution_id = e.id
                        WHERE e.status IN ('running', 'compensating')
                          AND e.fingerprint IN (SELECT value FROM json_each(?4))
                          AND e.id NOT IN (SELECT value FROM json_each(?5))
                          AND (l.owner IS NULL OR l.expires_at IS NULL OR l.expires_at <= ?3
                               OR l.owner IN (SELECT value FROM json_each(?7)))
                        ORDER BY e.created_at, e.id
                        LIMIT ?6)
                     RETURNING execution_id, token",
                )
                .map_err(&err)?;
            let tokens = stmt
                .query_map(
                    params![
                        request.owner,
                        now.saturating_add(ttl_ms(request.ttl)),
                        now,
                        fingerprints,
                        exclude,
                        limit,
                        dead_list
                    ],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)),
                )
                .map_err(&err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(&err)?;
            let mut claimed = Vec::with_capacity(tokens.len());
            for (id, token) in tokens {
                // In the claim's transaction: the execution and its log as
                // claimed.
                let Some(record) = get_execution(conn, path, &id)? else {
                    continue;
                };
                let events = match with_log {
                    true => Some(read_events(conn, path, &id, true)?),
                    false => None,
                };
                let lease = request.lease(token);
                claimed.push(ClaimedWithLog::new(Claimed { record, lease }, events));
            }
            claimed.sort_by(|a, b| {
                let (a, b) = (&a.claimed.record, &b.claimed.record);
                (a.created_at_ms, a.id.as_str()).cmp(&(b.created_at_ms, b.id.as_str()))
            });
            Ok((claimed, dead))
        });
        Box::pin(async move {
            let (claimed, dead) = claimed.await?;
            self.forget_dead(&dead);
            Ok(claimed)
        })
    }

    /// Removes the sidecars of `dead` owners, whose leases a committed
    /// claim expired.
    fn forget_dead(&self, dead: &[String]) {
        if !dead.is_empty() {
            super::owners(&self.owners()).forget(dead);
        }
    }
}

/// An execution's latest context: its log's last, the log's key read
/// from its end (a context not read but the one returned), else its
/// initial one; no row for an unknown id.
const LATEST_CONTEXT: &str = "SELECT COALESCE(
        (SELECT context FROM events WHERE execution_id = ?1 AND context IS NOT NULL
         ORDER BY seq DESC LIMIT 1),
        context)
    FROM executions WHERE id = ?1";

impl SagaStore for SqliteStore {
    fn describe(&self) -> String {
        describe(&self.inner.path)
    }

    fn put_definition(&self, definition: DefinitionRecord) -> BoxFuture<'_, StoreResult<()>> {
        self.write_fenced("recording a definition", move |conn, path| {
            conn.prepare_cached(
                "INSERT INTO definitions (fingerprint, saga, shape, registered_at)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (fingerprint) DO NOTHING",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    definition.fingerprint,
                    definition.saga,
                    definition.shape,
                    now_ms()
                ])
            })
            .map_err(db(path, "recording a definition"))?;
            Ok(())
        })
    }

    fn definition(
        &self,
        fingerprint: &str,
    ) -> BoxFuture<'_, StoreResult<Option<DefinitionRecord>>> {
        let fingerprint = fingerprint.to_owned();
        self.read(move |conn, path| {
            conn.prepare_cached("SELECT saga, shape FROM definitions WHERE fingerprint = ?1")
                .and_then(|mut stmt| {
                    stmt.query_row([&fingerprint], |row| {
                        Ok(DefinitionRecord {
                            fingerprint: fingerprint.clone(),
                            saga: row.get(0)?,
                            shape: row.get(1)?,
                        })
                    })
                    .optional()
                })
                .map_err(db(path, "reading a definition"))
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
        let owner = owner.to_owned();
        let owners = self.owners();
        let created = self.write("creating an execution", move |conn, path| {
            super::owners(&owners).hold(&owner);
            let now = now_ms();
            let id = execution.id.as_str();
            // Cached, not kept ([`super::writer::Db::kept`]): a statement
            // kept holds some of the connection's lookaside memory for
            // good, and with less of it left the appends' statements
            // allocate from the heap: that costs more than the cache's
            // look-up, at one creation in eleven writes.
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO executions (id, saga, fingerprint, status, context, last_seq,
                        created_at, updated_at)
                     VALUES (?1, ?2, ?3, 'running', ?4, ?6, ?5, ?5)
                     ON CONFLICT (id) DO NOTHING",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        id,
                        execution.saga,
                        execution.fingerprint,
                        execution.context,
                        now,
                        execution.events.len() as i64
                    ])
                })
                .map_err(db(path, "creating an execution"))?;
            if inserted == 0 {
                return match get_execution(conn, path, id)? {
                    Some(existing) => Ok(Created::Existing(existing)),
                    None => Err(StoreError::NotFound {
                        execution_id: execution.id.clone(),
                    }),
                };
            }
            // A new execution's lease is new too: token 1, known without
            // reading it back (with a statement that was prepared anew at
            // every creation). A lease row left without its execution
            // (nothing this store writes leaves one) is taken over with its
            // token bumped.
            let expires_at = now.saturating_add(ttl_ms(ttl));
            let new_lease = conn
                .prepare_cached(
                    "INSERT INTO leases (execution_id, owner, token, expires_at)
                     VALUES (?1, ?2, 1, ?3) ON CONFLICT (execution_id) DO NOTHING",
                )
                .and_then(|mut stmt| stmt.execute(params![id, owner, expires_at]))
                .map_err(db(path, "creating a lease"))?;
            let token: i64 = if new_lease == 1 {
                1
            } else {
                conn.query_row(
                    "UPDATE leases SET owner = ?2, token = token + 1, expires_at = ?3
                     WHERE execution_id = ?1 RETURNING token",
                    params![id, owner, expires_at],
                    |row| row.get(0),
                )
                .map_err(db(path, "creating a lease"))?
            };
            let lease = Lease {
                owner: owner.into(),
                token,
                ttl,
            };
            // The lease was taken above, in this write's savepoint: its
            // events need no fence of their own. Not a kept statement, as
            // the ones above.
            insert_events(conn, &execution.id, &execution.events, now, false)
                .map_err(db(path, "creating an execution"))?;
            Ok(Created::New(lease))
        });
        Box::pin(async move {
            let created = created.await;
            if matches!(created, Ok(Created::New(_))) {
                self.signal_work();
            }
            created
        })
    }

    fn claim(
        &self,
        id: &ExecutionId,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Option<Lease>>> {
        let id = id.clone();
        let owner = owner.to_owned();
        let owners = self.owners();
        let claimed = self.write_fenced("claiming an execution", move |conn, path| {
            let now = now_ms();
            let mut owners = super::owners(&owners);
            owners.hold(&owner);
            let holder: Option<String> = conn
                .prepare_cached(
                    "SELECT owner FROM leases
                     WHERE execution_id = ?1 AND owner IS NOT NULL AND expires_at > ?2",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(params![id.as_str(), now], |row| row.get(0))
                        .optional()
                })
                .map_err(db(path, "claiming an execution"))?;
            let dead = owners.dead_among(holder);
            drop(owners);
            let dead_list = expire_dead(conn, path, dead.clone(), now)?;
            let token: Option<i64> = conn
                .prepare_cached(
                    "UPDATE leases SET owner = ?2, token = token + 1, expires_at = ?3
                     WHERE execution_id = ?1
                       AND (owner IS NULL OR expires_at IS NULL OR expires_at <= ?4
                            OR owner IN (SELECT value FROM json_each(?5)))
                     RETURNING token",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(
                        params![
                            id.as_str(),
                            owner,
                            now.saturating_add(ttl_ms(ttl)),
                            now,
                            dead_list
                        ],
                        |row| row.get(0),
                    )
                    .optional()
                })
                .map_err(db(path, "claiming an execution"))?;
            let lease = match token {
                Some(token) => Some(Lease {
                    owner: owner.into(),
                    token,
                    ttl,
                }),
                None if get_execution(conn, path, id.as_str())?.is_none() => {
                    return Err(StoreError::NotFound { execution_id: id });
                }
                None => None,
            };
            Ok((lease, dead))
        });
        Box::pin(async move {
            let (lease, dead) = claimed.await?;
            self.forget_dead(&dead);
            Ok(lease)
        })
    }

    fn append<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
        events: Vec<Event>,
        status: ExecutionStatus,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        if let Err(error) = super::super::consecutive(&self.describe(), id, &events, false) {
            return Box::pin(std::future::ready(Err(error)));
        }
        let id = id.clone();
        let lease = lease.clone();
        self.write_fenced("appending events", move |conn, path| {
            let now = now_ms();
            let err = db(path, "appending events");
            let first = events.first().map_or(0, |e| e.seq);
            let last = events.last().map_or(0, |e| e.seq);
            let prev = first.saturating_sub(1);
            // The fence and the sequence check in the statement that moves
            // the execution on: a lost lease or a gap writes nothing. The
            // status is set by a second statement, only when it changes:
            // naming it in this `SET` would rewrite its index entry (a page
            // of the log) at every step. The usual append (the status
            // unchanged, no cancellation asked) is this one statement,
            // which tells both; any other reads them after moving the
            // execution (`RETURNING` builds a temporary table for its
            // rows, about 14k instructions an append).
            let to = if events.is_empty() { prev } else { last } as i64;
            // Moves the execution by `sql` (`?7`: `status`, if named).
            let move_on = |sql: &'static str, status: Option<&str>| {
                conn.kept(sql, |stmt| {
                    stmt.raw_bind_parameter(1, id.as_str())?;
                    stmt.raw_bind_parameter(2, lease.token)?;
                    stmt.raw_bind_parameter(3, &*lease.owner)?;
                    stmt.raw_bind_parameter(4, to)?;
                    stmt.raw_bind_parameter(5, now)?;
                    stmt.raw_bind_parameter(6, prev as i64)?;
                    if let Some(status) = status {
                        stmt.raw_bind_parameter(7, status)?;
                    }
                    stmt.raw_execute()
                })
                .map_err(&err)
            };
            let usual = move_on(
                concat!(
                    "UPDATE executions SET last_seq = ?4, updated_at = ?5
                     WHERE id = ?1 AND last_seq = ?6 AND status = ?7
                       AND cancel_requested = 0 AND ",
                    lease_held!()
                ),
                Some(status.label()),
            )?;
            let moved: Option<(bool, bool)> = if usual == 1 {
                Some((false, true))
            } else {
                let moved = move_on(
                    concat!(
                        "UPDATE executions SET last_seq = ?4, updated_at = ?5
                         WHERE id = ?1 AND last_seq = ?6 AND ",
                        lease_held!()
                    ),
                    None,
                )?;
                if moved == 1 {
                    conn.prepare_cached(
                        "SELECT cancel_requested, status = ?2 FROM executions WHERE id = ?1",
                    )
                    .and_then(|mut stmt| {
                        stmt.query_row(params![id.as_str(), status.label()], |row| {
                            Ok((row.get(0)?, row.get(1)?))
                        })
                    })
                    .map(Some)
                    .map_err(&err)?
                } else {
                    None
                }
            };
            let Some((cancel_requested, unchanged)) = moved else {
                let record = get_execution(conn, path, id.as_str())?;
                return Err(match record {
                    None => StoreError::NotFound { execution_id: id },
                    Some(r) if r.last_seq != prev && r.owner.as_deref() == Some(&*lease.owner) => {
                        bad_record(
                            path,
                            format!("event {first} of execution `{id}`"),
                            format!("the log ends at {}, expected {prev}", r.last_seq),
                        )
                    }
                    Some(_) => lease_lost(&id),
                });
            };
            if !unchanged {
                conn.kept("UPDATE executions SET status = ?2 WHERE id = ?1", |stmt| {
                    stmt.execute(params![id.as_str(), status.label()])
                })
                .map_err(&err)?;
            }
            // Fenced by the update above, in this transaction.
            insert_events(conn, &id, &events, now, true).map_err(&err)?;
            // Extends the lease, or releases it when the execution ended.
            // Every append commits a start (or the end), and a step's start
            // must give the step the whole ttl: a sync step blocks the
            // thread the run's renewals fire on
            // (tests/test_lease_blocking.rs). A lease already a whole ttl
            // away is left as it is (a row not rewritten: about 4k
            // instructions of the writer's 48k a write); one that is not is
            // set [`LEASE_SLACK`] beyond a ttl, so that the appends of the
            // next part of a ttl leave it too.
            // Fenced above: the lease is this append's.
            if status.is_finished() {
                conn.kept(
                    "UPDATE leases SET owner = NULL, expires_at = NULL WHERE execution_id = ?1",
                    |stmt| stmt.execute([id.as_str()]),
                )
            } else {
                let ttl = ttl_ms(lease.ttl);
                let due = now.saturating_add(ttl);
                conn.kept(
                    "UPDATE leases SET expires_at = ?2
                     WHERE execution_id = ?1 AND (expires_at IS NULL OR expires_at < ?3)",
                    |stmt| {
                        stmt.execute(params![
                            id.as_str(),
                            due.saturating_add(ttl / LEASE_SLACK),
                            due
                        ])
                    },
                )
            }
            .map_err(&err)?;
            Ok(Ack { cancel_requested })
        })
    }

    fn renew<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        let id = id.clone();
        let lease = lease.clone();
        self.write_fenced("renewing a lease", move |conn, path| {
            let now = now_ms();
            let cancel: Option<bool> = conn
                .prepare_cached(
                    "UPDATE leases SET expires_at = ?4
                     WHERE execution_id = ?1 AND token = ?2 AND owner = ?3
                     RETURNING (SELECT cancel_requested FROM executions WHERE id = ?1)",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(
                        params![
                            id.as_str(),
                            lease.token,
                            &*lease.owner,
                            now.saturating_add(ttl_ms(lease.ttl))
                        ],
                        |row| row.get(0),
                    )
                    .optional()
                })
                .map_err(db(path, "renewing a lease"))?;
            match cancel {
                Some(cancel_requested) => Ok(Ack { cancel_requested }),
                None => Err(lease_lost(&id)),
            }
        })
    }

    fn release<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<()>> {
        let id = id.clone();
        let lease = lease.clone();
        let released = self.write_fenced("releasing a lease", move |conn, path| {
            conn.prepare_cached(
                "UPDATE leases SET owner = NULL, expires_at = NULL
                 WHERE execution_id = ?1 AND token = ?2 AND owner = ?3",
            )
            .and_then(|mut stmt| stmt.execute(params![id.as_str(), lease.token, &*lease.owner]))
            .map(|changed| changed == 1)
            .map_err(db(path, "releasing a lease"))
        });
        Box::pin(async move {
            if released.await? {
                self.signal_work();
            }
            Ok(())
        })
    }

    fn get<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> BoxFuture<'a, StoreResult<Option<ExecutionRecord>>> {
        let id = id.clone();
        self.read(move |conn, path| get_execution(conn, path, id.as_str()))
    }

    fn events<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<Vec<Event>>> {
        let id = id.clone();
        self.read(move |conn, path| read_events(conn, path, id.as_str(), true))
    }

    /// The log's columns but the context: a large context spills into
    /// overflow pages, which are then not copied out.
    fn events_without_contexts<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> BoxFuture<'a, StoreResult<Vec<Event>>> {
        let id = id.clone();
        self.read(move |conn, path| read_events(conn, path, id.as_str(), false))
    }

    fn list(
        &self,
        status: Option<ExecutionStatus>,
    ) -> BoxFuture<'_, StoreResult<Vec<ExecutionRecord>>> {
        self.read(move |conn, path| {
            let err = db(path, "listing executions");
            let mut stmt = conn
                .prepare_cached(&format!(
                    "{SELECT_EXECUTION} WHERE ?1 IS NULL OR e.status = ?1 ORDER BY e.created_at, e.id"
                ))
                .map_err(&err)?;
            let rows = stmt
                .query_map([status.map(ExecutionStatus::label)], raw_execution)
                .map_err(&err)?;
            let mut records = Vec::new();
            for row in rows {
                let raw = row.map_err(&err)?;
                if status_from_label(&raw.3).is_none() {
                    skip_unknown_status(&describe(path), &raw.0, &raw.3);
                    continue;
                }
                records.push(execution(path, raw)?);
            }
            Ok(records)
        })
    }

    fn list_summaries(
        &self,
        query: ListQuery,
    ) -> BoxFuture<'_, StoreResult<Vec<ExecutionSummary>>> {
        self.read(move |conn, path| {
            let err = db(path, "listing executions");
            let mut stmt = conn
                .prepare_cached(&list_sql(query.status.is_some(), query.after.is_some()))
                .map_err(&err)?;
            let after = query.after.as_ref();
            let limit = query
                .limit
                .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
            let rows = stmt
                .query_map(
                    params![
                        query.status.map(ExecutionStatus::label),
                        after.map(|c| c.created_at_ms),
                        after.map(|c| c.id.as_str()),
                        limit
                    ],
                    |row| summary(path, row),
                )
                .map_err(&err)?;
            let mut summaries = Vec::new();
            for row in rows {
                summaries.extend(row.map_err(&err)?);
            }
            Ok(summaries)
        })
    }

    fn context<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<Option<String>>> {
        let id = id.clone();
        self.read(move |conn, path| {
            conn.prepare_cached("SELECT context FROM executions WHERE id = ?1")
                .and_then(|mut stmt| stmt.query_row([id.as_str()], |row| row.get(0)).optional())
                .map_err(db(path, "reading a context"))
        })
    }

    /// One statement: the last logged context, by the log's key read from
    /// its end, else the initial one.
    fn latest_context<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> BoxFuture<'a, StoreResult<Option<String>>> {
        let id = id.clone();
        self.read(move |conn, path| {
            conn.prepare_cached(LATEST_CONTEXT)
                .and_then(|mut stmt| stmt.query_row([id.as_str()], |row| row.get(0)).optional())
                .map_err(db(path, "reading a context"))
        })
    }

    /// One statement, which reads no context but those of the executions
    /// it claims (to run them).
    fn claim_next(&self, request: ClaimRequest) -> BoxFuture<'_, StoreResult<Vec<Claimed>>> {
        let claimed = self.claim_in_one_transaction(request, false);
        Box::pin(async move { Ok(claimed.await?.into_iter().map(|c| c.claimed).collect()) })
    }

    /// [`claim_next`](SagaStore::claim_next)'s claims, each with its log,
    /// read in the claim's transaction.
    fn claim_next_with_log(
        &self,
        request: ClaimRequest,
    ) -> BoxFuture<'_, StoreResult<Vec<ClaimedWithLog>>> {
        self.claim_in_one_transaction(request, true)
    }

    fn resume_requests(&self) -> BoxFuture<'_, StoreResult<Vec<ExecutionSummary>>> {
        self.read(move |conn, path| {
            let err = db(path, "listing resume requests");
            let mut stmt = conn
                .prepare_cached(&format!(
                    "{SELECT_SUMMARY}
                     JOIN events v ON v.execution_id = e.id AND v.seq = e.last_seq
                     WHERE e.status = 'stuck' AND v.kind = 'resume_requested'
                     ORDER BY e.created_at, e.id"
                ))
                .map_err(&err)?;
            let rows = stmt.query_map([], |row| summary(path, row)).map_err(&err)?;
            let mut summaries = Vec::new();
            for row in rows {
                summaries.extend(row.map_err(&err)?);
            }
            Ok(summaries)
        })
    }

    fn work_signal(&self) -> Option<watch::Receiver<u64>> {
        Some(self.inner.work.subscribe())
    }

    fn request_cancel<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<bool>> {
        let id = id.clone();
        self.write_fenced("requesting a cancellation", move |conn, path| {
            let changed = conn
                .execute(
                    "UPDATE executions SET cancel_requested = 1 WHERE id = ?1",
                    [id.as_str()],
                )
                .map_err(db(path, "requesting a cancellation"))?;
            Ok(changed == 1)
        })
    }

    /// In batches of at most 500 executions, each a write of its own: the
    /// writes queued meanwhile (the runs in flight) commit between two
    /// batches instead of after the whole purge.
    fn purge(&self, before_ms: i64) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(async move {
            let (mut purged, mut after) = (0, (i64::MIN, String::new()));
            loop {
                let (deleted, next) = self.purge_batch(before_ms, after).await?;
                purged += deleted;
                match next {
                    Some(next) => after = next,
                    None => return Ok(purged),
                }
            }
        })
    }
}

/// How many executions one transaction of a purge deletes at most: a
/// batch holds the writer (every other write of the process waits) for
/// a few milliseconds, where the whole purge of a year-old store held it
/// for seconds.
const PURGE_BATCH: i64 = 500;

/// Where a purge's next batch starts: after the execution created at
/// this time (ms) with this id, in `(created_at, id)` order.
type PurgeAfter = (i64, String);

impl SqliteStore {
    /// One batch of a purge: deletes the first [`PURGE_BATCH`] finished
    /// executions last written at or before `before`, after `after` in
    /// `(created_at, id)` order, with their logs and leases, in one
    /// transaction; how many, and where the next batch starts (`None`
    /// once none is left).
    fn purge_batch(
        &self,
        before: i64,
        after: PurgeAfter,
    ) -> BoxFuture<'static, StoreResult<(u64, Option<PurgeAfter>)>> {
        self.write("purging executions", move |conn, path| {
            let err = db(path, "purging executions");
            // Walked along `executions_by_created` from the last batch
            // (`+status` keeps SQLite off `executions_by_status`, which
            // would read and sort every finished execution left, at each
            // batch). Last written at or before `before`, so created then
            // too: the walk ends there.
            let mut doomed = conn
                .prepare_cached(
                    "SELECT id, created_at FROM executions
                     WHERE +status IN ('completed', 'compensated', 'cancelled', 'abandoned')
                       AND updated_at <= ?1 AND created_at <= ?1
                       AND (created_at, id) > (?2, ?3)
                     ORDER BY created_at, id
                     LIMIT ?4",
                )
                .map_err(&err)?
                .query_map(params![before, after.0, after.1, PURGE_BATCH], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })
                .map_err(&err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(&err)?;
            let mut purged = 0;
            for (id, _) in &doomed {
                for sql in [
                    "DELETE FROM events WHERE execution_id = ?1",
                    "DELETE FROM leases WHERE execution_id = ?1",
                ] {
                    conn.prepare_cached(sql)
                        .and_then(|mut stmt| stmt.execute([id]))
                        .map_err(&err)?;
                }
                purged += conn
                    .prepare_cached("DELETE FROM executions WHERE id = ?1")
                    .and_then(|mut stmt| stmt.execute([id]))
                    .map_err(&err)?;
            }
            let full = doomed.len() == usize::try_from(PURGE_BATCH).unwrap_or(usize::MAX);
            let next = doomed.pop().filter(|_| full).map(|(id, at)| (at, id));
            Ok((purged as u64, next))
        })
    }
}

/// The listing statement for a query with or without a status and a
/// cursor: one of four, so that each uses an index (`executions_by_status`
/// for a status, `executions_by_created` from a cursor), where one
/// statement with `?1 IS NULL OR ..` terms read every execution whatever
/// the query. Every one binds the same four parameters (status, the
/// cursor's time and id, the limit); a parameter a statement does not
/// filter on is only tested for `NULL`, once.
fn list_sql(status: bool, after: bool) -> String {
    let status = if status {
        "e.status = ?1"
    } else {
        "?1 IS NULL"
    };
    let after = if after {
        "(e.created_at, e.id) > (?2, ?3)"
    } else {
        "?2 IS NULL AND ?3 IS NULL"
    };
    format!(
        "{SELECT_SUMMARY}
         WHERE {status} AND {after}
         ORDER BY e.created_at, e.id LIMIT ?4"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(test: &str) -> SqliteStore {
        let dir = std::env::temp_dir().join(format!("saga-ops-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        SqliteStore::open(dir.join("sagas.db")).unwrap()
    }

    /// Each listing statement searches an index: before, one statement
    /// for every query scanned all executions (a watch of a store of
    /// 100,000 read them all at every look, about 6 ms each).
    #[test]
    fn a_listing_searches_an_index() {
        let store = scratch("list-plan");
        let conn = rusqlite::Connection::open(store.path()).unwrap();
        for (status, after, index) in [
            (true, false, "executions_by_status"),
            (true, true, "executions_by_status"),
            (false, true, "executions_by_created"),
        ] {
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {}", list_sql(status, after)))
                .unwrap()
                .query_map(params!["stuck", 1_i64, "x", 10_i64], |row| {
                    row.get::<_, String>(3)
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let outer = &plan[0];
            assert!(
                outer.starts_with("SEARCH e USING") && outer.contains(index),
                "status {status}, after {after}: {plan:?}"
            );
        }
    }

    fn started(seq: u64, step: u32) -> Event {
        let mut event = Event::new(seq, EventKind::StepStarted);
        event.step = Some(step);
        event.attempt = 1;
        event
    }

    async fn create(store: &SqliteStore, id: &str, ttl: Duration) -> Lease {
        let created = store
            .create(
                NewExecution {
                    id: ExecutionId::new(id),
                    saga: "s".to_owned(),
                    fingerprint: "f".to_owned(),
                    context: "{}".to_owned(),
                    events: vec![started(1, 0)],
                },
                "owner",
                ttl,
            )
            .await
            .unwrap();
        match created {
            Created::New(lease) => lease,
            Created::Existing(_) => panic!("{id} existed"),
        }
    }

    async fn status_listed(store: &SqliteStore, status: ExecutionStatus) -> Vec<String> {
        store
            .list_summaries(ListQuery::new().with_status(status))
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id.as_str().to_owned())
            .collect()
    }

    /// Moves the lease of `id` back by `ms`, as if that much time had gone.
    /// Appends the start of step `step` as event `seq` under `lease`: the
    /// time just before, and the lease's expiry after.
    async fn append_start(
        store: &SqliteStore,
        id: &ExecutionId,
        lease: &Lease,
        seq: u64,
        step: u32,
    ) -> (i64, i64) {
        let before = now_ms();
        let running = ExecutionStatus::Running;
        store
            .append(id, lease, vec![started(seq, step)], running)
            .await
            .unwrap();
        let record = store.get(id).await.unwrap().unwrap();
        (before, record.lease_expires_at_ms.unwrap())
    }

    fn age_lease(store: &SqliteStore, id: &str, ms: i64) {
        let conn = rusqlite::Connection::open(store.path()).unwrap();
        conn.execute(
            "UPDATE leases SET expires_at = expires_at - ?2 WHERE execution_id = ?1",
            rusqlite::params![id, ms],
        )
        .unwrap();
    }

    /// The status is written only when it changes: the record and the
    /// status index (which listings by status read) follow every change.
    #[tokio::test]
    async fn an_append_moves_the_status_and_its_index_only_when_it_changes() {
        let store = scratch("status");
        let id = ExecutionId::new("a");
        let lease = create(&store, "a", Duration::from_secs(60)).await;
        let running = ExecutionStatus::Running;
        store
            .append(&id, &lease, vec![started(2, 1)], running)
            .await
            .unwrap();
        assert_eq!(status_listed(&store, running).await, ["a"]);
        let rollback = ExecutionStatus::Compensating;
        let events = vec![Event::new(3, EventKind::RollbackStarted)];
        store.append(&id, &lease, events, rollback).await.unwrap();
        assert_eq!(store.get(&id).await.unwrap().unwrap().status, rollback);
        assert!(status_listed(&store, running).await.is_empty());
        assert_eq!(status_listed(&store, rollback).await, ["a"]);
        let end = ExecutionStatus::Compensated;
        let events = vec![Event::new(4, EventKind::Finished)];
        store.append(&id, &lease, events, end).await.unwrap();
        let record = store.get(&id).await.unwrap().unwrap();
        assert_eq!((record.status, record.last_seq), (end, 4));
        assert_eq!(status_listed(&store, end).await, ["a"]);
        assert!(status_listed(&store, rollback).await.is_empty());
        assert_eq!(store.events(&id).await.unwrap().len(), 4);
    }

    /// An append tells of a cancellation request, with the status
    /// unchanged or changed.
    #[tokio::test]
    async fn an_append_tells_of_a_cancellation_request() {
        let store = scratch("cancel");
        let id = ExecutionId::new("d");
        let lease = create(&store, "d", Duration::from_secs(60)).await;
        let running = ExecutionStatus::Running;
        let ack = store
            .append(&id, &lease, vec![started(2, 1)], running)
            .await
            .unwrap();
        assert!(!ack.cancel_requested);
        assert!(store.request_cancel(&id).await.unwrap());
        let ack = store
            .append(&id, &lease, vec![started(3, 2)], running)
            .await
            .unwrap();
        assert!(ack.cancel_requested);
        let events = vec![Event::new(4, EventKind::RollbackStarted)];
        let rollback = ExecutionStatus::Compensating;
        let ack = store.append(&id, &lease, events, rollback).await.unwrap();
        assert!(ack.cancel_requested);
        let record = store.get(&id).await.unwrap().unwrap();
        assert_eq!((record.status, record.last_seq), (rollback, 4));
    }

    /// An append whose events fail half-way (a row already there: a
    /// damaged log) writes none of them and does not move the execution.
    #[tokio::test]
    async fn an_append_that_fails_half_way_writes_nothing() {
        let store = scratch("half-way");
        let id = ExecutionId::new("c");
        let lease = create(&store, "c", Duration::from_secs(60)).await;
        let conn = rusqlite::Connection::open(store.path()).unwrap();
        conn.execute(
            "INSERT INTO events (execution_id, seq, at, kind, attempt, outcome_unknown, will_retry)
             VALUES ('c', 3, 0, 'step_started', 1, 0, 0)",
            [],
        )
        .unwrap();
        let events = vec![started(2, 1), started(3, 2)];
        let running = ExecutionStatus::Running;
        assert!(store.append(&id, &lease, events, running).await.is_err());
        let record = store.get(&id).await.unwrap().unwrap();
        assert_eq!(record.last_seq, 1);
        let seqs: Vec<u64> = store
            .events(&id)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, [1, 3]);
        // The store goes on.
        let events = vec![Event::new(2, EventKind::Finished)];
        let end = ExecutionStatus::Completed;
        store.append(&id, &lease, events, end).await.unwrap();
        assert_eq!(store.get(&id).await.unwrap().unwrap().last_seq, 2);
    }

    /// An append leaves a lease that is already a whole ttl away as it is
    /// (no row rewritten); one it extends, it sets beyond a whole ttl.
    #[tokio::test]
    async fn an_append_leaves_a_lease_a_whole_ttl_away() {
        let store = scratch("lease-slack");
        let id = ExecutionId::new("s");
        let ttl = Duration::from_secs(3600);
        let lease = create(&store, "s", ttl).await;
        // Less than a ttl away (the creation left exactly a ttl, which an
        // append in the same millisecond would leave as it is).
        age_lease(&store, "s", 1000);
        let (before, extended) = append_start(&store, &id, &lease, 2, 1).await;
        // Extended beyond a whole ttl, by the slack.
        assert!(
            extended >= before + 3_600_000 + 3_600_000 / LEASE_SLACK,
            "{extended} < {before} + ttl + slack"
        );
        // Moved back by a second: still more than a ttl away.
        age_lease(&store, "s", 1000);
        let (before, left) = append_start(&store, &id, &lease, 3, 2).await;
        assert_eq!(left, extended - 1000);
        assert!(left >= before + 3_600_000, "{left} < {before} + ttl");
    }

    /// A creation takes over a lease row left without its execution,
    /// bumping its token: a writer holding the old token is fenced out.
    #[tokio::test]
    async fn a_creation_bumps_the_token_of_a_lease_left_behind() {
        let store = scratch("lease-left");
        let conn = rusqlite::Connection::open(store.path()).unwrap();
        conn.execute(
            "INSERT INTO leases (execution_id, owner, token, expires_at) VALUES ('z', 'old', 5, 0)",
            [],
        )
        .unwrap();
        let lease = create(&store, "z", Duration::from_secs(60)).await;
        assert_eq!((&*lease.owner, lease.token), ("owner", 6));
        let fresh = create(&store, "y", Duration::from_secs(60)).await;
        assert_eq!(fresh.token, 1);
        let id = ExecutionId::new("z");
        let record = store.get(&id).await.unwrap().unwrap();
        assert_eq!(record.owner.as_deref(), Some("owner"));
        let old = Lease {
            owner: "old".into(),
            token: 5,
            ttl: Duration::from_secs(60),
        };
        let refused = store
            .append(&id, &old, vec![started(2, 1)], ExecutionStatus::Running)
            .await;
        assert!(matches!(refused, Err(StoreError::LeaseLost { .. })));
    }

    /// Every append extends the lease by a whole ttl from its commit; a
    /// finishing append releases it.
    #[tokio::test]
    async fn every_append_extends_the_lease_by_its_ttl() {
        let store = scratch("lease");
        let id = ExecutionId::new("b");
        let ttl = Duration::from_secs(30);
        let lease = create(&store, "b", ttl).await;
        let running = ExecutionStatus::Running;
        // Moved back by a little, as if that much time had gone.
        age_lease(&store, "b", 1000);
        let (before, extended) = append_start(&store, &id, &lease, 2, 1).await;
        assert!(extended >= before + 30_000, "{extended} < {before} + ttl");
        // Moved back by half the ttl, as if that much time had gone.
        age_lease(&store, "b", 15000);
        let (before, extended) = append_start(&store, &id, &lease, 3, 2).await;
        assert!(extended >= before + 30_000, "{extended} < {before} + ttl");
        // Another owner's lease is not touched, and the append is refused.
        let stranger = Lease {
            owner: "other".into(),
            ..lease.clone()
        };
        let refused = store
            .append(&id, &stranger, vec![started(4, 3)], running)
            .await;
        assert!(matches!(refused, Err(StoreError::LeaseLost { .. })));
        let events = vec![Event::new(4, EventKind::Finished)];
        let end = ExecutionStatus::Completed;
        store.append(&id, &lease, events, end).await.unwrap();
        let record = store.get(&id).await.unwrap().unwrap();
        assert_eq!((record.owner, record.lease_expires_at_ms), (None, None));
    }
}

#[cfg(test)]
mod failure_tests {
    use super::*;
    fn scratch(test: &str) -> SqliteStore {
        let dir = std::env::temp_dir().join(format!("saga-ops-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        SqliteStore::open(dir.join("sagas.db")).unwrap()
    }
    fn started(seq: u64, step: u32) -> Event {
        let mut event = Event::new(seq, EventKind::StepStarted);
        event.step = Some(step);
        event.attempt = 1;
        event
    }
    async fn create(store: &SqliteStore, id: &str) -> Lease {
        match store
            .create(
                NewExecution {
                    id: ExecutionId::new(id),
                    saga: "s".into(),
                    fingerprint: "f".into(),
                    context: "{}".into(),
                    events: vec![started(1, 0)],
                },
                "owner",
                Duration::from_secs(60),
            )
            .await
            .unwrap()
        {
            Created::New(l) => l,
            Created::Existing(_) => panic!(),
        }
    }
    /// Six events: the second statement (rows 6, 7) conflicts.
    #[tokio::test]
    async fn an_append_failing_in_its_second_insert_writes_nothing() {
        let store = scratch("chunk");
        let id = ExecutionId::new("c");
        let lease = create(&store, "c").await;
        let conn = rusqlite::Connection::open(store.path()).unwrap();
        conn.execute(
            "INSERT INTO events (execution_id, seq, at, kind, attempt, outcome_unknown, will_retry)
             VALUES ('c', 7, 0, 'step_started', 1, 0, 0)",
            [],
        )
        .unwrap();
        let events: Vec<Event> = (2..=7).map(|s| started(s, s as u32)).collect();
        let r = store
            .append(&id, &lease, events, ExecutionStatus::Running)
            .await;
        assert!(r.is_err());
        let seqs: Vec<u64> = store
            .events(&id)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, [1, 7]);
        assert_eq!(store.get(&id).await.unwrap().unwrap().last_seq, 1);
    }
    /// Many executions at once: each append's resolution is seen by a read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn each_read_sees_the_appends_that_returned_under_load() {
        let store = scratch("ryw");
        let mut tasks = Vec::new();
        for n in 0..48 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let name = format!("x{n}");
                let id = ExecutionId::new(name.as_str());
                let lease = create(&store, &name).await;
                for seq in 2..=30u64 {
                    store
                        .append(
                            &id,
                            &lease,
                            vec![started(seq, seq as u32)],
                            ExecutionStatus::Running,
                        )
                        .await
                        .unwrap();
                    let r = store.get(&id).await.unwrap().unwrap();
                    assert_eq!(r.last_seq, seq);
                    assert_eq!(store.events(&id).await.unwrap().len() as u64, seq);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }

    /// The text of `error` and of its causes.
    fn chain(error: &StoreError) -> String {
        let mut text = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        text
    }

    /// Holds the writer thread in a write of its own until the returned
    /// sender is dropped, so that the writes sent meanwhile make its next
    /// batch together.
    fn hold_writer(
        store: &SqliteStore,
    ) -> (
        std::sync::mpsc::Sender<()>,
        BoxFuture<'static, StoreResult<()>>,
    ) {
        let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holding = store.write("holding", move |_, _| {
            held_tx.send(()).unwrap();
            let _ = release_rx.recv();
            Ok(())
        });
        held_rx.recv().unwrap();
        (release_tx, holding)
    }

    /// A write's work that writes (renames every execution), then panics.
    fn rename_then_panic(
        conn: &crate::store::sqlite::Db<'_>,
        _: &std::path::Path,
    ) -> StoreResult<()> {
        conn.execute("UPDATE executions SET saga = 'renamed'", [])
            .unwrap();
        panic!("a write bug")
    }

    /// A panic in the store's own code (a bug) fails the call that hit it,
    /// with the panic's message; the threads go on. A write with a
    /// savepoint of its own is undone alone: a write of the same commit
    /// commits.
    #[tokio::test]
    async fn a_panic_in_the_store_s_code_fails_that_call_alone() {
        let store = scratch("panic");
        let lease = create(&store, "a").await;
        let id = ExecutionId::new("a");
        let read = store
            .read(|_, _| -> StoreResult<()> { panic!("a read bug") })
            .await
            .unwrap_err();
        assert!(chain(&read).contains("panicked"), "{}", chain(&read));
        assert!(chain(&read).contains("a read bug"), "{}", chain(&read));
        assert_eq!(store.get(&id).await.unwrap().unwrap().last_seq, 1);
        let (release, holding) = hold_writer(&store);
        let bad = store.write("renaming", rename_then_panic);
        let good = store.append(&id, &lease, vec![started(2, 1)], ExecutionStatus::Running);
        drop(release);
        let (holding, bad, good) = tokio::join!(holding, bad, good);
        holding.unwrap();
        let bad = bad.unwrap_err();
        assert!(chain(&bad).contains("a write bug"), "{}", chain(&bad));
        good.unwrap();
        let record = store.get(&id).await.unwrap().unwrap();
        assert_eq!((record.saga.as_str(), record.last_seq), ("s", 2));
        // The writer goes on.
        store
            .append(&id, &lease, vec![started(3, 2)], ExecutionStatus::Running)
            .await
            .unwrap();
    }

    /// A write without a savepoint that panicked after writing is undone
    /// with the writes of its commit before it (they hear so); those after
    /// it commit.
    #[tokio::test]
    async fn a_panic_half_way_through_a_write_without_savepoint_undoes_its_batch() {
        let store = scratch("panic_batch");
        let (a, b) = (create(&store, "a").await, create(&store, "b").await);
        let (id_a, id_b) = (ExecutionId::new("a"), ExecutionId::new("b"));
        let (release, holding) = hold_writer(&store);
        let before = store.append(&id_a, &a, vec![started(2, 1)], ExecutionStatus::Running);
        let bad = store.write_fenced("renaming", rename_then_panic);
        let after = store.append(&id_b, &b, vec![started(2, 1)], ExecutionStatus::Running);
        drop(release);
        let (holding, before, bad, after) = tokio::join!(holding, before, bad, after);
        holding.unwrap();
        assert!(chain(&before.unwrap_err()).contains("rolled back"));
        assert!(chain(&bad.unwrap_err()).contains("a write bug"));
        after.unwrap();
        let (a_now, b_now) = (
            store.get(&id_a).await.unwrap().unwrap(),
            store.get(&id_b).await.unwrap().unwrap(),
        );
        assert_eq!((a_now.saga.as_str(), a_now.last_seq), ("s", 1));
        assert_eq!((b_now.saga.as_str(), b_now.last_seq), ("s", 2));
    }
}
