//! [`MemoryStore`]: the store for tests; nothing survives the process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{
    Ack, Created, DefinitionRecord, Event, ExecutionRecord, Lease, NewExecution, SagaStore,
    StoreError, StoreResult, now_ms, ttl_ms,
};
use crate::id::ExecutionId;
use crate::report::ExecutionStatus;
use crate::step::BoxFuture;

/// A store in memory, for tests: the same contract as [`SqliteStore`]
/// (leases, fencing, sequence numbers), no persistence. Clones share the
/// same data, so two engines on one `MemoryStore` behave like two
/// processes on one database.
///
/// [`SqliteStore`]: super::SqliteStore
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    definitions: HashMap<String, DefinitionRecord>,
    executions: HashMap<ExecutionId, Stored>,
    /// Creation order, for `list`.
    order: Vec<ExecutionId>,
}

#[derive(Debug)]
struct Stored {
    record: ExecutionRecord,
    events: Vec<Event>,
    token: i64,
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

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
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
                events: execution
                    .events
                    .into_iter()
                    .map(|mut e| {
                        e.at_ms = now;
                        e
                    })
                    .collect(),
                token: 1,
            },
        );
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
        ready(self.fenced(id, lease, |stored, now| {
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
            stored.events.extend(events.into_iter().map(|mut e| {
                e.at_ms = now;
                e
            }));
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
        ready(self.fenced(id, lease, |stored, now| {
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
            .map(|s| s.events.clone())
            .unwrap_or_default()))
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

    fn request_cancel<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<bool>> {
        let mut inner = self.lock();
        let found = inner.executions.get_mut(id).map(|s| {
            s.record.cancel_requested = true;
        });
        ready(Ok(found.is_some()))
    }

    fn purge(&self, before_ms: i64) -> BoxFuture<'_, StoreResult<u64>> {
        let mut inner = self.lock();
        let doomed: Vec<ExecutionId> = inner
            .executions
            .values()
            .filter(|s| super::purgeable(s.record.status) && s.record.updated_at_ms <= before_ms)
            .map(|s| s.record.id.clone())
            .collect();
        for id in &doomed {
            inner.executions.remove(id);
        }
        inner.order.retain(|id| !doomed.contains(id));
        ready(Ok(doomed.len() as u64))
    }
}
