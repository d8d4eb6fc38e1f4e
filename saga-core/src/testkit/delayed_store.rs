//! A store in front of another, answering late.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::id::ExecutionId;
use crate::report::ExecutionStatus;
use crate::step::BoxFuture;
use crate::store::{
    Ack, ClaimRequest, Claimed, Created, DefinitionRecord, Event, ExecutionRecord, Lease,
    NewExecution, SagaStore, StoreResult,
};

/// A store that answers late: every operation goes to the inner store and
/// its answer comes back `delay` later, as a store across a network does.
/// For racing your own code (two callers of one operation, a
/// [`Worker`](crate::Worker) next to operator commands) with the latency
/// that makes races show: a race that needs 1 ms to show is still a race.
///
/// Every [`SagaStore`] method is passed on, including
/// [`claim_next`](SagaStore::claim_next) (the inner store's own, so a
/// PostgreSQL store keeps its one-statement claim) and
/// [`work_signal`](SagaStore::work_signal) (not delayed: it is a signal,
/// not an answer).
///
/// ```
/// use std::time::Duration;
/// use saga_core::SagaEngine;
/// use saga_core::store::MemoryStore;
/// use saga_core::testkit::DelayedStore;
///
/// let store = DelayedStore::new(MemoryStore::new(), Duration::from_millis(1));
/// let engine = SagaEngine::new(store);
/// # let _ = engine;
/// ```
#[derive(Clone)]
pub struct DelayedStore {
    inner: Arc<dyn SagaStore>,
    delay: Duration,
}

impl fmt::Debug for DelayedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelayedStore")
            .field("inner", &self.inner.describe())
            .field("delay", &self.delay)
            .finish()
    }
}

impl DelayedStore {
    /// `inner`, answering `delay` after it does (zero: at once, through
    /// the wrapper all the same).
    pub fn new(inner: impl SagaStore, delay: Duration) -> Self {
        Self::shared(Arc::new(inner), delay)
    }

    /// A shared `inner`, answering `delay` after it does.
    pub fn shared(inner: Arc<dyn SagaStore>, delay: Duration) -> Self {
        DelayedStore { inner, delay }
    }

    /// The store it wraps.
    pub fn inner(&self) -> &Arc<dyn SagaStore> {
        &self.inner
    }

    /// How late it answers.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// `answer`, awaited, then held back by the delay.
    fn late<'a, T: Send + 'a>(
        &self,
        answer: BoxFuture<'a, StoreResult<T>>,
    ) -> BoxFuture<'a, StoreResult<T>> {
        let delay = self.delay;
        Box::pin(async move {
            let answer = answer.await;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            answer
        })
    }
}

impl SagaStore for DelayedStore {
    fn describe(&self) -> String {
        format!(
            "{} (answering {:?} late)",
            self.inner.describe(),
            self.delay
        )
    }

    fn put_definition(&self, definition: DefinitionRecord) -> BoxFuture<'_, StoreResult<()>> {
        self.late(self.inner.put_definition(definition))
    }

    fn definition(
        &self,
        fingerprint: &str,
    ) -> BoxFuture<'_, StoreResult<Option<DefinitionRecord>>> {
        self.late(self.inner.definition(fingerprint))
    }

    fn create(
        &self,
        execution: NewExecution,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Created>> {
        self.late(self.inner.create(execution, owner, ttl))
    }

    fn claim(
        &self,
        id: &ExecutionId,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Option<Lease>>> {
        self.late(self.inner.claim(id, owner, ttl))
    }

    fn append<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
        events: Vec<Event>,
        status: ExecutionStatus,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        self.late(self.inner.append(id, lease, events, status))
    }

    fn renew<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        self.late(self.inner.renew(id, lease))
    }

    fn release<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.late(self.inner.release(id, lease))
    }

    fn get<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> BoxFuture<'a, StoreResult<Option<ExecutionRecord>>> {
        self.late(self.inner.get(id))
    }

    fn events<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<Vec<Event>>> {
        self.late(self.inner.events(id))
    }

    fn list(
        &self,
        status: Option<ExecutionStatus>,
    ) -> BoxFuture<'_, StoreResult<Vec<ExecutionRecord>>> {
        self.late(self.inner.list(status))
    }

    fn request_cancel<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<bool>> {
        self.late(self.inner.request_cancel(id))
    }

    fn claim_next(&self, request: ClaimRequest) -> BoxFuture<'_, StoreResult<Vec<Claimed>>> {
        self.late(self.inner.claim_next(request))
    }

    fn work_signal(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.work_signal()
    }

    fn purge(&self, before_ms: i64) -> BoxFuture<'_, StoreResult<u64>> {
        self.late(self.inner.purge(before_ms))
    }
}
