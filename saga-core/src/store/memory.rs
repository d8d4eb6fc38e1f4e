//! [`MemoryStore`]: the store for tests; nothing survives the process.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::watch;

use super::{
    Ack, ClaimRequest, Claimed, ClaimedWithLog, Created, DefinitionRecord, Event, EventKind,
    ExecutionRecord, ExecutionSummary, Lease, ListQuery, NewExecution, SagaStore, StoreError,
    StoreResult, now_ms, ttl_ms,
};
use crate::id::ExecutionId;
use crate::report::ExecutionStatus;
use crate::step::BoxFuture;

/// A store in memory, for tests: the same contract as [`SqliteStore`]
/// (leases, fencing, sequence numbers), no persistence. Clones share the
/// same data, so two engines on one `MemoryStore` behave like two
/// processes on one database.
///
/// Its [`work_signal`](SagaStore::work_signal) is bumped by every creation
/// and every lease released while someone listens, so a
/// [`Worker`](crate::Worker) on it hears of new work at once.
///
/// [`SqliteStore`]: super::SqliteStore
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    /// Bumped when work may have become claimable (a creation, a release).
    work: Arc<watch::Sender<u64>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            inner: Arc::default(),
            work: Arc::new(watch::channel(0).0),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    definitions: HashMap<String, DefinitionRecord>,
    executions: HashMap<ExecutionId, Stored, BuildHasherDefault<IdHasher>>,
    /// Creation order, for `list`.
    order: Vec<ExecutionId>,
}

#[derive(Debug)]
struct Stored {
    record: ExecutionRecord,
    events: Log,
    token: i64,
}

/// An execution's events, kept as its writes brought them: one vector per
/// creation or append, so that a write moves its vector in, where one
/// flat vector would free it and copy the whole log each time it grows.
#[derive(Debug)]
struct Log(Vec<Vec<Event>>);

impl Log {
    /// The log of a creation's first events, stamped `now`.
    fn new(events: Vec<Event>, now: i64) -> Self {
        // Room for the writes of a saga of about ten steps.
        let mut log = Log(Vec::with_capacity(16));
        log.push(events, now);
        log
    }

    /// Adds a write's events, stamped `now`.
    fn push(&mut self, mut events: Vec<Event>, now: i64) {
        if events.is_empty() {
            return;
        }
        for event in &mut events {
            event.at_ms = now;
        }
        self.0.push(events);
    }

    fn last(&self) -> Option<&Event> {
        self.0.last().and_then(|write| write.last())
    }

    /// The context of the last event that logged one.
    fn latest_context(&self) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .flat_map(|write| write.iter().rev())
            .find_map(|e| e.context.as_deref())
    }

    /// Every event, in order, none with its context (not copied).
    fn without_contexts(&self) -> Vec<Event> {
        self.0
            .iter()
            .flatten()
            .map(|e| Event {
                seq: e.seq,
                kind: e.kind,
                step: e.step,
                attempt: e.attempt,
                output: e.output.clone(),
                context: None,
                error: e.error.clone(),
                outcome_unknown: e.outcome_unknown,
                will_retry: e.will_retry,
                detail: e.detail.clone(),
                at_ms: e.at_ms,
            })
            .collect()
    }

    /// Every event, in order.
    fn to_vec(&self) -> Vec<Event> {
        let mut all = Vec::with_capacity(self.0.iter().map(Vec::len).sum());
        for write in &self.0 {
            all.extend_from_slice(write);
        }
        all
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind, still
        // consistent at the granularity of one call: keep going.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tells claimers that work may have become claimable. With no one
    /// listening it does nothing: a listener that subscribes later starts
    /// from the value as it is then, and notifying wakes no one but locks
    /// each of the channel's waiter lists (about 300 instructions, on
    /// every creation of an engine without workers).
    fn signal_work(&self) {
        if self.work.receiver_count() > 0 {
            self.work.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Claims as [`SagaStore::claim_next`] does, under one lock; each
    /// claim with its log if `with_log`.
    fn claim_under_lock(&self, request: &ClaimRequest, with_log: bool) -> Vec<ClaimedWithLog> {
        let mut inner = self.lock();
        let now = now_ms();
        let Inner {
            executions, order, ..
        } = &mut *inner;
        let mut picked: Vec<&ExecutionId> = order
            .iter()
            .filter(|id| {
                executions
                    .get(*id)
                    .is_some_and(|s| Self::claimable(s, request, now))
            })
            .collect();
        picked.sort_by_key(|id| {
            executions
                .get(*id)
                .map(|s| (s.record.created_at_ms, s.record.id.as_str()))
        });
        picked.truncate(request.limit);
        let mut claimed = Vec::with_capacity(picked.len());
        for id in picked {
            let Some(stored) = executions.get_mut(id) else {
                continue;
            };
            stored.token += 1;
            stored.record.owner = Some(request.owner.clone());
            stored.record.lease_expires_at_ms = Some(now.saturating_add(ttl_ms(request.ttl)));
            let claim = Claimed {
                record: stored.record.clone(),
                lease: request.lease(stored.token),
            };
            let events = with_log.then(|| stored.events.to_vec());
            claimed.push(ClaimedWithLog::new(claim, events));
        }
        claimed
    }

    /// Whether a stored execution is unfinished, free (or expired) and
    /// claimable by `request` at `now`.
    fn claimable(stored: &Stored, request: &ClaimRequest, now: i64) -> bool {
        let record = &stored.record;
        matches!(
            record.status,
            ExecutionStatus::Running | ExecutionStatus::Compensating
        ) && (record.owner.is_none() || record.lease_expires_at_ms.is_none_or(|at| at <= now))
            && request.fingerprints.contains(&record.fingerprint)
            && !request.exclude.contains(&record.id)
    }

    fn fenced<T>(
        &self,
        id: &ExecutionId,
        lease: &Lease,
        write: impl FnOnce(&mut Stored, i64) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut inner = self.lock();
        let stored = inner
            .executions
            .get_mut(id)
            .ok_or_else(|| StoreError::NotFound {
                execution_id: id.clone(),
            })?;
        if stored.token != lease.token || stored.record.owner.as_deref() != Some(&*lease.owner) {
            return Err(StoreError::LeaseLost {
                execution_id: id.clone(),
            });
        }
        let now = now_ms();
        let value = write(stored, now)?;
        stored.record.updated_at_ms = now;
        Ok(value)
    }
}

/// A record's summary, cloning everything but its context.
fn summary_of(r: &ExecutionRecord) -> ExecutionSummary {
    ExecutionSummary {
        id: r.id.clone(),
        saga: r.saga.clone(),
        fingerprint: r.fingerprint.clone(),
        status: r.status,
        last_seq: r.last_seq,
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
        owner: r.owner.clone(),
        lease_expires_at_ms: r.lease_expires_at_ms,
        cancel_requested: r.cancel_requested,
    }
}

/// The executions' hasher: a multiply-and-rotate over eight bytes at a
/// time (the scheme of rustc's `FxHasher`), about 20 instructions for a
/// generated id where std's SipHash takes about 250, paid on every write.
/// Not resistant to chosen collisions, which a test store need not be.
#[derive(Default)]
struct IdHasher(u64);

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0xf135_7aea_2e62_a9c5);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        let mut word = [0; 8];
        word[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn finish(&self) -> u64 {
        // The multiplication leaves its best bits high; the table indexes
        // by the low ones.
        self.0.rotate_left(26)
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

/// A write's usual answer as a zero-sized future: boxing it allocates
/// nothing.
struct Acked<const CANCEL: bool>;

impl<const CANCEL: bool> Future for Acked<CANCEL> {
    type Output = StoreResult<Ack>;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(Ok(Ack {
            cancel_requested: CANCEL,
        }))
    }
}

/// The answer of a write, boxed without an allocation when it succeeded.
fn acked<'a>(result: StoreResult<Ack>) -> BoxFuture<'a, StoreResult<Ack>> {
    match result {
        Ok(Ack {
            cancel_requested: false,
        }) => Box::pin(Acked::<false>),
        Ok(Ack {
            cancel_requested: true,
        }) => Box::pin(Acked::<true>),
        Err(error) => ready(Err(error)),
    }
}

impl SagaStore for MemoryStore {
    fn describe(&self) -> String {
        "the memory store".to_owned()
    }

    fn put_definition(&self, definition: DefinitionRecord) -> BoxFuture<'_, StoreResult<()>> {
        self.lock()
            .definitions
            .entry(definition.fingerprint.clone())
            .or_insert(definition);
        ready(Ok(()))
    }

    fn definition(
        &self,
        fingerprint: &str,
    ) -> BoxFuture<'_, StoreResult<Option<DefinitionRecord>>> {
        ready(Ok(self.lock().definitions.get(fingerprint).cloned()))
    }

    fn create(
        &self,
        execution: NewExecution,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Created>> {
        if let Err(error) = super::first_events(&self.describe(), &execution) {
            return Box::pin(std::future::ready(Err(error)));
        }
        let mut inner = self.lock();
        if let Some(existing) = inner.executions.get(&execution.id) {
            return ready(Ok(Created::Existing(existing.record.clone())));
        }
        let now = now_ms();
        let record = ExecutionRecord {
            id: execution.id.clone(),
            saga: execution.saga,
            fingerprint: execution.fingerprint,
            status: ExecutionStatus::Running,
            context: execution.context,
            last_seq: execution.events.len() as u64,
            created_at_ms: now,
            updated_at_ms: now,
            owner: Some(owner.to_owned()),
            lease_expires_at_ms: Some(now.saturating_add(ttl_ms(ttl))),
            cancel_requested: false,
        };
        inner.order.push(execution.id.clone());
        inner.executions.insert(
            execution.id,
            Stored {
                record,
                events: Log::new(execution.events, now),
                token: 1,
            },
        );
        drop(inner);
        self.signal_work();
        ready(Ok(Created::New(Lease {
            owner: owner.into(),
            token: 1,
            ttl,
        })))
    }

    fn claim(
        &self,
        id: &ExecutionId,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Option<Lease>>> {
        let mut inner = self.lock();
        let Some(stored) = inner.executions.get_mut(id) else {
            return ready(Err(StoreError::NotFound {
                execution_id: id.clone(),
            }));
        };
        let now = now_ms();
        let free = match (&stored.record.owner, stored.record.lease_expires_at_ms) {
            (None, _) => true,
            // Held, by any owner (this one too: its run goes on), until it
            // expires.
            (Some(_), Some(expires)) => expires <= now,
            (Some(_), None) => true,
        };
        if !free {
            return ready(Ok(None));
        }
        stored.token += 1;
        stored.record.owner = Some(owner.to_owned());
        stored.record.lease_expires_at_ms = Some(now.saturating_add(ttl_ms(ttl)));
        ready(Ok(Some(Lease {
            owner: owner.into(),
            token: stored.token,
            ttl,
        })))
    }

    fn append<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
        events: Vec<Event>,
        status: ExecutionStatus,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        acked(self.fenced(id, lease, |stored, now| {
            for (i, event) in events.iter().enumerate() {
                let expected = stored.record.last_seq + 1 + i as u64;
                if event.seq != expected {
                    return Err(StoreError::BadRecord {
                        store: "the memory store".to_owned(),
                        what: format!("event {} of execution `{id}`", event.seq),
                        detail: format!("expected sequence number {expected}"),
                    });
                }
            }
            stored.record.last_seq += events.len() as u64;
            stored.events.push(events, now);
            stored.record.status = status;
            if status.is_finished() {
                stored.record.owner = None;
                stored.record.lease_expires_at_ms = None;
            } else {
                stored.record.lease_expires_at_ms = Some(now.saturating_add(ttl_ms(lease.ttl)));
            }
            Ok(Ack {
                cancel_requested: stored.record.cancel_requested,
            })
        }))
    }

    fn renew<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        acked(self.fenced(id, lease, |stored, now| {
            stored.record.lease_expires_at_ms = Some(now.saturating_add(ttl_ms(lease.ttl)));
            Ok(Ack {
                cancel_requested: stored.record.cancel_requested,
            })
        }))
    }

    fn release<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<()>> {
        let result = self.fenced(id, lease, |stored, _| {
            stored.record.owner = None;
            stored.record.lease_expires_at_ms = None;
            Ok(())
        });
        if result.is_ok() {
            self.signal_work();
        }
        ready(match result {
            Err(StoreError::LeaseLost { .. }) => Ok(()),
            other => other,
        })
    }

    fn get<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> BoxFuture<'a, StoreResult<Option<ExecutionRecord>>> {
        ready(Ok(self.lock().executions.get(id).map(|s| s.record.clone())))
    }

    fn events<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<Vec<Event>>> {
        ready(Ok(self
            .lock()
            .executions
            .get(id)
            .map(|s| s.events.to_vec())
            .unwrap_or_default()))
    }

    fn events_without_contexts<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> BoxFuture<'a, StoreResult<Vec<Event>>> {
        ready(Ok(self
            .lock()
            .executions
            .get(id)
            .map(|s| s.events.without_contexts())
            .unwrap_or_default()))
    }

    fn latest_context<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> BoxFuture<'a, StoreResult<Option<String>>> {
        ready(Ok(self.lock().executions.get(id).map(|s| {
            s.events
                .latest_context()
                .unwrap_or(&s.record.context)
                .to_owned()
        })))
    }

    fn list(
        &self,
        status: Option<ExecutionStatus>,
    ) -> BoxFuture<'_, StoreResult<Vec<ExecutionRecord>>> {
        let inner = self.lock();
        let records = inner
            .order
            .iter()
            .filter_map(|id| inner.executions.get(id))
            .filter(|s| status.is_none_or(|want| s.record.status == want))
            .map(|s| s.record.clone())
            .collect();
        ready(Ok(records))
    }

    /// Summaries without cloning a single context.
    fn list_summaries(
        &self,
        query: ListQuery,
    ) -> BoxFuture<'_, StoreResult<Vec<ExecutionSummary>>> {
        let inner = self.lock();
        let mut summaries: Vec<ExecutionSummary> = inner
            .order
            .iter()
            .filter_map(|id| inner.executions.get(id))
            .map(|s| &s.record)
            .filter(|r| query.status.is_none_or(|want| r.status == want))
            .map(summary_of)
            .filter(|s| query.is_after(s))
            .collect();
        drop(inner);
        // Creation order is `created_at` order but for ties within a
        // millisecond, which the listing breaks by id.
        summaries.sort_by(|a, b| {
            (a.created_at_ms, a.id.as_str()).cmp(&(b.created_at_ms, b.id.as_str()))
        });
        if let Some(limit) = query.limit {
            summaries.truncate(limit);
        }
        ready(Ok(summaries))
    }

    /// Under one lock: no context is cloned but those of the executions
    /// it claims.
    fn claim_next(&self, request: ClaimRequest) -> BoxFuture<'_, StoreResult<Vec<Claimed>>> {
        let claimed = self.claim_under_lock(&request, false);
        ready(Ok(claimed.into_iter().map(|c| c.claimed).collect()))
    }

    /// [`claim_next`](SagaStore::claim_next)'s claims, each with its log,
    /// copied under the claim's lock.
    fn claim_next_with_log(
        &self,
        request: ClaimRequest,
    ) -> BoxFuture<'_, StoreResult<Vec<ClaimedWithLog>>> {
        ready(Ok(self.claim_under_lock(&request, true)))
    }

    fn resume_requests(&self) -> BoxFuture<'_, StoreResult<Vec<ExecutionSummary>>> {
        let inner = self.lock();
        let requested = inner
            .order
            .iter()
            .filter_map(|id| inner.executions.get(id))
            .filter(|s| {
                s.record.status == ExecutionStatus::Stuck
                    && s.events.last().map(|e| e.kind) == Some(EventKind::ResumeRequested)
            })
            .map(|s| summary_of(&s.record))
            .collect();
        ready(Ok(requested))
    }

    fn work_signal(&self) -> Option<watch::Receiver<u64>> {
        Some(self.work.subscribe())
    }

    fn request_cancel<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<bool>> {
        let mut inner = self.lock();
        let found = inner.executions.get_mut(id).map(|s| {
            s.record.cancel_requested = true;
        });
        ready(Ok(found.is_some()))
    }

    fn purge(&self, before_ms: i64) -> BoxFuture<'_, StoreResult<u64>> {
        let mut inner = self.lock();
        let Inner {
            executions, order, ..
        } = &mut *inner;
        let before = executions.len();
        executions.retain(|_, s| {
            !(super::purgeable(s.record.status) && s.record.updated_at_ms <= before_ms)
        });
        // One pass over the creation order, whatever the number purged.
        order.retain(|id| executions.contains_key(id));
        ready(Ok((before - executions.len()) as u64))
    }
}
