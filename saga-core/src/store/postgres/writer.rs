//! The writer of the PostgreSQL store: one connection, one transaction per
//! batch of waiting writes (group commit), one write per transaction after
//! a failure.

use std::future::{Future, poll_fn, ready};
use std::pin::{Pin, pin};
use std::sync::Weak;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Statement;

use super::session::{Session, error_text, open_session, sql_error, unreachable};
use super::writes::{
    AppendOf, Outcome, answer, answer_committed, append, append_many, append_many_sql,
    append_outcome, append_sql, run_op,
};
use super::{CHANNEL, Inner, STATUS_CHANNEL};
use crate::escape::Escaped;
use crate::id::ExecutionId;
use crate::report::ExecutionStatus;
use crate::store::{
    Ack, ClaimRequest, ClaimedWithLog, Created, DefinitionRecord, Event, EventKind, Lease,
    NewExecution, StoreError, StoreResult,
};

/// Tells the listeners of a channel, at commit, that the schema changed.
const NOTIFY: &str = "SELECT pg_notify($1, current_schema())";

/// A write for the writer's task, and where its answer goes.
pub(super) struct Job {
    pub(super) op: Op,
    pub(super) reply: oneshot::Sender<StoreResult<Reply>>,
}

pub(super) enum Op {
    PutDefinition(DefinitionRecord),
    Create {
        execution: NewExecution,
        owner: String,
        ttl: Duration,
    },
    Claim {
        id: ExecutionId,
        owner: String,
        ttl: Duration,
    },
    ClaimNext(ClaimRequest),
    Append {
        id: ExecutionId,
        lease: Lease,
        events: Vec<Event>,
        status: ExecutionStatus,
    },
    Renew {
        id: ExecutionId,
        lease: Lease,
    },
    Release {
        id: ExecutionId,
        lease: Lease,
    },
    RequestCancel(ExecutionId),
    /// One batch of a purge: finished executions last written at or
    /// before `before`, after `after` in `(created_at, id)` order.
    Purge {
        before: i64,
        after: (i64, String),
    },
}

impl Op {
    pub(super) fn what(&self) -> &'static str {
        match self {
            Op::PutDefinition(_) => "recording a definition",
            Op::Create { .. } => "creating an execution",
            Op::Claim { .. } => "claiming an execution",
            Op::ClaimNext(_) => "claiming executions",
            Op::Append { .. } => "appending events",
            Op::Renew { .. } => "renewing a lease",
            Op::Release { .. } => "releasing a lease",
            Op::RequestCancel(_) => "requesting a cancellation",
            Op::Purge { .. } => "purging executions",
        }
    }

    /// Whether it may make work claimable (other workers are told).
    pub(super) fn signals_work(&self) -> bool {
        matches!(self, Op::Create { .. } | Op::Release { .. })
    }

    /// Whether it may change what a listing shows of an execution beyond
    /// [`signals_work`](Self::signals_work): a status or a cancel request.
    /// Step events do not count: a notification makes PostgreSQL take a
    /// database-wide lock at commit, and a few per execution is all a
    /// watcher needs.
    pub(super) fn signals_status(&self) -> bool {
        match self {
            Op::Append { events, .. } => events.iter().any(|e| {
                matches!(
                    e.kind,
                    EventKind::RollbackStarted
                        | EventKind::Finished
                        | EventKind::Resumed
                        | EventKind::Abandoned
                )
            }),
            Op::RequestCancel(_) => true,
            _ => false,
        }
    }
}

pub(super) enum Reply {
    Done,
    Created(Created),
    Lease(Option<Lease>),
    Claimed(Vec<ClaimedWithLog>),
    Ack(Ack),
    Changed(bool),
    /// A purge's batch: how many it deleted, and where the next starts
    /// (`None` once none is left).
    Purged(u64, Option<(i64, String)>),
}

/// Why an operation failed: the database refused a statement (the
/// transaction is aborted), or the operation found it must not write
/// (nothing was written, the transaction goes on).
pub(super) enum Failure {
    Sql(tokio_postgres::Error),
    Refused(StoreError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Sql(e)
    }
}

/// The first wait before connecting again after a failed connection.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
/// The longest: while the server is away, at most one connection
/// attempt a second, however many writes come.
const RECONNECT_MAX: Duration = Duration::from_secs(1);
/// How often an outage that goes on is told again.
const OUTAGE_TOLD_EVERY: Duration = Duration::from_secs(30);

/// The writer's view of an outage: the server could not be connected to.
/// Writes that come before the next attempt is due fail at once with the
/// last attempt's error (not one connection attempt per write), and the
/// log tells the outage once, then every [`OUTAGE_TOLD_EVERY`] with the
/// writes refused meanwhile, then its end.
struct Outage {
    error: StoreError,
    began: Instant,
    wait: Duration,
    next_try: Instant,
    told: Instant,
    /// Writes refused since the outage was last told.
    refused: u64,
    /// Writes refused in all.
    refused_in_all: u64,
}

impl Outage {
    fn begin(store: &Inner, error: StoreError) -> Self {
        tell_outage(store, &error, None);
        let now = Instant::now();
        Outage {
            error,
            began: now,
            wait: RECONNECT_FIRST,
            next_try: now + RECONNECT_FIRST,
            told: now,
            refused: 0,
            refused_in_all: 0,
        }
    }

    /// Another failed attempt: waits longer before the next one; tells
    /// the outage again if it is due.
    fn failed_again(&mut self, store: &Inner, error: StoreError) {
        self.error = error;
        self.wait = (self.wait * 2).min(RECONNECT_MAX);
        let now = Instant::now();
        self.next_try = now + self.wait;
        if now.duration_since(self.told) >= OUTAGE_TOLD_EVERY {
            tell_outage(store, &self.error, Some((now - self.began, self.refused)));
            self.told = now;
            self.refused = 0;
        }
    }

    fn refuse(&mut self, store: &Inner, batch: &mut Vec<Job>) {
        let count = batch.len() as u64;
        self.refused += count;
        self.refused_in_all += count;
        for job in batch.drain(..) {
            let reply = match &self.error {
                StoreError::Unauthorized {
                    store,
                    user,
                    source,
                    ..
                } => StoreError::Unauthorized {
                    store: store.clone(),
                    user: user.clone(),
                    what: job.op.what().to_owned(),
                    source: source.to_string().into(),
                },
                error => unavailable(store, &job.op, error),
            };
            let _ = job.reply.send(Err(reply));
        }
    }

    /// Connected again.
    fn end(self, store: &Inner) {
        log::info!(target: "saga", store:% = Escaped(&store.describe), down_for:? = self.began.elapsed(), writes_refused = self.refused_in_all; "postgres store reachable again, writes go on");
    }
}

/// Tells an outage: its start, or (`going_on`: how long so far, writes
/// refused since last told) that it goes on.
fn tell_outage(store: &Inner, error: &StoreError, going_on: Option<(Duration, u64)>) {
    let (down_for, refused) = going_on.unwrap_or_default();
    if matches!(error, StoreError::Unauthorized { .. }) {
        log::error!(target: "saga", store:% = Escaped(&store.describe), down_for:? = down_for, writes_refused = refused, error:% = Escaped(&error.to_string()); "postgres store refused the credentials, writes fail until they are fixed");
    } else {
        log::warn!(target: "saga", store:% = Escaped(&store.describe), down_for:? = down_for, writes_refused = refused, error:% = Escaped(&error.to_string()); "postgres store unreachable, writes fail until it is back");
    }
}

/// The writer: one transaction per batch of the writes waiting. A write
/// that fails in the database aborts the transaction; the batch is then
/// run again one write per transaction, so only that write fails.
pub(super) async fn writer_loop(
    inner: Weak<Inner>,
    mut session: Option<Session>,
    mut receiver: mpsc::UnboundedReceiver<Job>,
    max_batch: usize,
) {
    let mut batch = Vec::new();
    let mut outage: Option<Outage> = None;
    while receiver.recv_many(&mut batch, max_batch).await > 0 {
        let Some(store) = inner.upgrade() else {
            return;
        };
        let live = match session.take().filter(|s| !s.client.is_closed()) {
            Some(s) => Ok(s),
            None => {
                if let Some(down) = outage.as_mut().filter(|d| Instant::now() < d.next_try) {
                    down.refuse(&store, &mut batch);
                    continue;
                }
                open_session(&store.target, &store.describe, &store.schema, false).await
            }
        };
        let s = match live {
            Ok(s) => {
                if let Some(down) = outage.take() {
                    down.end(&store);
                }
                s
            }
            Err(error) => {
                let down = match outage.as_mut() {
                    Some(down) => {
                        down.failed_again(&store, error);
                        down
                    }
                    None => outage.insert(Outage::begin(&store, error)),
                };
                down.refuse(&store, &mut batch);
                continue;
            }
        };
        let jobs = std::mem::take(&mut batch);
        match run_batch(&s, &store, &jobs).await {
            Ok(replies) => {
                for (job, reply) in jobs.into_iter().zip(replies) {
                    let _ = job.reply.send(reply);
                }
            }
            Err(e) if unreachable(&e) || s.client.is_closed() => {
                log::warn!(target: "saga", store:% = Escaped(&store.describe), error:% = Escaped(&error_text(&e)); "postgres store connection lost, a commit's outcome is unknown");
                for job in jobs {
                    let _ = job.reply.send(Err(StoreError::Unavailable {
                        store: store.describe.clone(),
                        what: job.op.what().to_owned(),
                        source: Box::new(clone_error(&e)),
                    }));
                }
                continue;
            }
            Err(_) => {
                for job in jobs {
                    let reply = run_batch(&s, &store, std::slice::from_ref(&job))
                        .await
                        .map_err(|e| sql_error(&store.describe, job.op.what(), e))
                        .and_then(|mut r| r.pop().unwrap_or_else(|| Err(store_closed(&store))));
                    let _ = job.reply.send(reply);
                }
            }
        }
        session = Some(s);
    }
}

/// A client error cannot be cloned; its text can.
pub(super) fn clone_error(e: &tokio_postgres::Error) -> std::io::Error {
    std::io::Error::other(error_text(e))
}

pub(super) fn store_closed(store: &Inner) -> StoreError {
    StoreError::Closed {
        store: store.describe.clone(),
    }
}

pub(super) fn unavailable(store: &Inner, op: &Op, error: &StoreError) -> StoreError {
    StoreError::Unavailable {
        store: store.describe.clone(),
        what: op.what().to_owned(),
        source: error.to_string().into(),
    }
}

/// Runs `jobs` in one transaction. `Err` if the database refused a
/// statement (the transaction was rolled back); otherwise each job's
/// answer, committed.
pub(super) async fn run_batch(
    s: &Session,
    store: &Inner,
    jobs: &[Job],
) -> Result<Vec<StoreResult<Reply>>, tokio_postgres::Error> {
    if jobs.iter().all(|job| matches!(job.op, Op::Append { .. })) {
        return run_appends(s, store, jobs).await;
    }
    // The appends first, pipelined with the `BEGIN` (as in
    // `run_appends`; one statement for them all if they are to distinct
    // executions), then the other writes one statement at a time: a
    // claim does not make every append beside it a round trip of its own.
    let many = distinct_appends(jobs);
    let statement = match jobs.iter().any(|job| matches!(job.op, Op::Append { .. })) {
        true if many.is_some() => Some(s.statement(append_many_sql()).await?),
        true => Some(s.statement(append_sql()).await?),
        false => None,
    };
    let begin = s.client.batch_execute("BEGIN");
    let (appends, sent) = match (&statement, &many) {
        (Some(statement), Some(many)) => (Vec::new(), Some(append_many(s, statement, many))),
        (Some(statement), None) => (append_futures(s, store, statement, jobs), None),
        (None, _) => (Vec::new(), None),
    };
    let sent = async {
        match sent {
            Some(sent) => Some(sent.await),
            None => None,
        }
    };
    let (begun, mut appended, sent, ()) = in_order(begin, appends, sent, ready(())).await;
    begun?;
    if let (Some(sent), Some(many)) = (sent, &many) {
        let outcomes = match sent {
            Ok(outcomes) => outcomes,
            Err(e) => {
                let _ = s.client.batch_execute("ROLLBACK").await;
                return Err(e);
            }
        };
        for (a, outcome) in many.iter().zip(outcomes) {
            appended.push(answer(s, store, a.id, a.events, outcome).await);
        }
    }
    let mut appended = appended.into_iter();
    let mut replies = Vec::with_capacity(jobs.len());
    let (mut signal, mut status) = (false, false);
    for job in jobs {
        let result = match &job.op {
            Op::Append { .. } => match appended.next() {
                Some(result) => result,
                // One result per append, in their order.
                None => Err(Failure::Refused(store_closed(store))),
            },
            op => run_op(s, store, op).await,
        };
        match result {
            Ok(reply) => {
                signal |= job.op.signals_work();
                status |= job.op.signals_status();
                replies.push(Ok(reply));
            }
            Err(Failure::Refused(error)) => replies.push(Err(error)),
            Err(Failure::Sql(e)) => {
                let _ = s.client.batch_execute("ROLLBACK").await;
                return Err(e);
            }
        }
    }
    // Delivered to the listeners when the transaction commits.
    let notify = match (signal, status) {
        (false, false) => None,
        (true, false) => Some(CHANNEL),
        (false, true) => Some(STATUS_CHANNEL),
        // A listener of either channel bumps the change signal; the work
        // channel alone also wakes claimers.
        (true, true) => Some(CHANNEL),
    };
    let notified = match notify {
        Some(channel) => s.execute(NOTIFY, &[&channel]).await.map(drop),
        None => Ok(()),
    };
    if let Err(e) = notified {
        let _ = s.client.batch_execute("ROLLBACK").await;
        return Err(e);
    }
    s.client.batch_execute("COMMIT").await?;
    Ok(replies)
}

/// Sends the status notification of a pipelined batch, when it has one
/// (`notify`: the prepared `NOTIFY`); delivered when the batch commits.
async fn notify_status(
    s: &Session,
    notify: Option<&Statement>,
) -> Result<(), tokio_postgres::Error> {
    match notify {
        Some(statement) => s
            .client
            .execute(statement, &[&STATUS_CHANNEL])
            .await
            .map(drop),
        None => Ok(()),
    }
}

/// Runs a batch of appends in one transaction, pipelined: `BEGIN`, every
/// append's statement, the notification and `COMMIT` are sent together,
/// and the writer waits for one round trip rather than one per
/// statement.
///
/// Each request is sent when its future is first polled, and
/// [`in_order`] polls them first in this order, so the server runs them
/// so. An append is one statement; a refused one is explained by a read
/// after the `COMMIT` ([`answer_committed`]), whose failure fails that
/// append alone: the others committed. A statement the database refuses
/// aborts the transaction, which turns the pipelined `COMMIT` into a
/// rollback: the batch then answers `Err`, as [`run_batch`] does, and the
/// writer runs each append again alone.
async fn run_appends(
    s: &Session,
    store: &Inner,
    jobs: &[Job],
) -> Result<Vec<StoreResult<Reply>>, tokio_postgres::Error> {
    if let Some(appends) = distinct_appends(jobs) {
        return run_append_many(s, store, jobs, &appends).await;
    }
    // Prepared before the pipeline: a statement still to prepare would be
    // sent a round trip later, after the `COMMIT`.
    let statement = s.statement(append_sql()).await?;
    let status = jobs.iter().any(|job| job.op.signals_status());
    let notify = match status {
        true => Some(s.statement(NOTIFY).await?),
        false => None,
    };
    let begin = s.client.batch_execute("BEGIN");
    let appends = outcome_futures(s, &statement, jobs);
    // Committed with the appends; one for an append that is then refused
    // only wakes a watcher for nothing.
    let notified = notify_status(s, notify.as_ref());
    let commit = s.client.batch_execute("COMMIT");
    let (begun, outcomes, notified, committed) = in_order(begin, appends, notified, commit).await;
    begun?;
    let outcomes = outcomes.into_iter().collect::<Result<Vec<_>, _>>()?;
    notified?;
    committed?;
    let appended = jobs.iter().filter_map(|job| match &job.op {
        Op::Append { id, events, .. } => Some((id, &events[..])),
        _ => None,
    });
    Ok(answer_all(s, store, appended.zip(outcomes)).await)
}

/// The answers of a committed batch's appends, each `(id, events)` with
/// its outcome ([`answer_committed`]), in their order; the reads that
/// explain refused ones are pipelined.
async fn answer_all<'a>(
    s: &Session,
    store: &Inner,
    appends: impl Iterator<Item = ((&'a ExecutionId, &'a [Event]), Outcome)>,
) -> Vec<StoreResult<Reply>> {
    let answers = appends
        .map(|((id, events), outcome)| Box::pin(answer_committed(s, store, id, events, outcome)))
        .collect();
    let ((), answers, (), ()) = in_order(ready(()), answers, ready(()), ready(())).await;
    answers
}

/// The appends of `jobs`, in their order, if there are at least two and
/// each is to an execution of its own: what [`append_many`] takes.
fn distinct_appends(jobs: &[Job]) -> Option<Vec<AppendOf<'_>>> {
    let mut appends = Vec::with_capacity(jobs.len());
    let mut ids = std::collections::HashSet::with_capacity(jobs.len());
    for append in appends_of(jobs) {
        if !ids.insert(append.id.as_str()) {
            return None;
        }
        appends.push(append);
    }
    (appends.len() >= 2).then_some(appends)
}

/// Runs `appends` (all of `jobs`, each to an execution of its own) as
/// [`run_appends`] does, but as one statement ([`append_many`]): `BEGIN`, the statement, the
/// notification and `COMMIT` pipelined, then each append's answer (the
/// reads that explain a refused one come after the `COMMIT`, as there,
/// and a failed one fails that append alone).
async fn run_append_many(
    s: &Session,
    store: &Inner,
    jobs: &[Job],
    appends: &[AppendOf<'_>],
) -> Result<Vec<StoreResult<Reply>>, tokio_postgres::Error> {
    let statement = s.statement(append_many_sql()).await?;
    let status = jobs.iter().any(|job| job.op.signals_status());
    let notify = match status {
        true => Some(s.statement(NOTIFY).await?),
        false => None,
    };
    let begin = s.client.batch_execute("BEGIN");
    let sent = vec![Box::pin(append_many(s, &statement, appends))];
    let notified = notify_status(s, notify.as_ref());
    let commit = s.client.batch_execute("COMMIT");
    let (begun, mut outcomes, notified, committed) = in_order(begin, sent, notified, commit).await;
    begun?;
    let outcomes = outcomes.pop().unwrap_or_else(|| Ok(Vec::new()))?;
    notified?;
    committed?;
    let appended = appends.iter().map(|a| (a.id, a.events));
    Ok(answer_all(s, store, appended.zip(outcomes)).await)
}

/// The appends of `jobs`, in their order.
fn appends_of(jobs: &[Job]) -> impl Iterator<Item = AppendOf<'_>> {
    jobs.iter().filter_map(|job| match &job.op {
        Op::Append {
            id,
            lease,
            events,
            status,
        } => Some(AppendOf {
            id,
            lease,
            events,
            status: *status,
        }),
        _ => None,
    })
}

/// The appends of `jobs`, in their order, each a future that sends its
/// statement when first polled.
fn append_futures<'a>(
    s: &'a Session,
    store: &'a Inner,
    statement: &'a Statement,
    jobs: &'a [Job],
) -> Vec<Pin<Box<impl Future<Output = Result<Reply, Failure>> + 'a>>> {
    appends_of(jobs)
        .map(|a| {
            Box::pin(append(
                s, store, statement, a.id, a.lease, a.events, a.status,
            ))
        })
        .collect()
}

/// The statements of the appends of `jobs`, in their order, each a
/// future that sends its statement when first polled and returns what it
/// said (the refused ones are explained after the batch's `COMMIT`).
fn outcome_futures<'a>(
    s: &'a Session,
    statement: &'a Statement,
    jobs: &'a [Job],
) -> Vec<Pin<Box<impl Future<Output = Result<Outcome, tokio_postgres::Error>> + 'a>>> {
    appends_of(jobs)
        .map(|a| {
            Box::pin(append_outcome(
                s, statement, a.id, a.lease, a.events, a.status,
            ))
        })
        .collect()
}

/// Awaits `first`, each of `middle`, `then` and `last`, polling them in
/// that order every time: the first poll of each comes before the first
/// poll of the next. (`tokio::join!` rotates which future it polls
/// first.)
async fn in_order<A: Future, M: Future, N: Future, B: Future>(
    first: A,
    mut middle: Vec<Pin<Box<M>>>,
    then: N,
    last: B,
) -> (A::Output, Vec<M::Output>, N::Output, B::Output) {
    let (mut first, mut then, mut last) = (pin!(first), pin!(then), pin!(last));
    let (mut a, mut n, mut b) = (None, None, None);
    let mut m: Vec<Option<M::Output>> = middle.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut done = poll_once(first.as_mut(), &mut a, cx);
        for (future, out) in middle.iter_mut().zip(&mut m) {
            done &= poll_once(future.as_mut(), out, cx);
        }
        done &= poll_once(then.as_mut(), &mut n, cx);
        done &= poll_once(last.as_mut(), &mut b, cx);
        if done { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    match (a, n, b) {
        (Some(a), Some(n), Some(b)) => (a, m.into_iter().flatten().collect(), n, b),
        _ => unreachable!("in_order returns once every future is done"),
    }
}

/// Polls `future` unless it is done; whether it is done now.
fn poll_once<F: Future>(
    future: Pin<&mut F>,
    out: &mut Option<F::Output>,
    cx: &mut std::task::Context<'_>,
) -> bool {
    if out.is_none() {
        if let Poll::Ready(value) = future.poll(cx) {
            *out = Some(value);
        }
    }
    out.is_some()
}
