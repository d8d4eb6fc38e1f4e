//! Lease renewal after a stall: the renewal timer skips the ticks it
//! missed rather than firing them all at once (a 4 s stall under a 1 s
//! renewal period used to send four renewals back to back).
//!
//! Time is tokio's paused clock, moved by hand inside a step: the stall is
//! exact and nothing sleeps for real.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use saga_core::store::{
    Ack, Created, DefinitionRecord, Event, ExecutionRecord, Lease, MemoryStore, NewExecution,
    SagaStore, StoreResult,
};
use saga_core::{BoxFuture, ExecutionId, ExecutionStatus, Saga, SagaEngine, Step, StepInfo};

/// A memory store that counts lease renewals.
struct CountingRenewals {
    inner: MemoryStore,
    renewals: Arc<AtomicUsize>,
}

impl SagaStore for CountingRenewals {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn put_definition(&self, d: DefinitionRecord) -> BoxFuture<'_, StoreResult<()>> {
        self.inner.put_definition(d)
    }
    fn definition(&self, f: &str) -> BoxFuture<'_, StoreResult<Option<DefinitionRecord>>> {
        self.inner.definition(f)
    }
    fn create(
        &self,
        e: NewExecution,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Created>> {
        self.inner.create(e, owner, ttl)
    }
    fn claim(
        &self,
        id: &ExecutionId,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Option<Lease>>> {
        self.inner.claim(id, owner, ttl)
    }
    fn append<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
        events: Vec<Event>,
        status: ExecutionStatus,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        self.inner.append(id, lease, events, status)
    }
    fn renew<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        self.renewals.fetch_add(1, Ordering::SeqCst);
        self.inner.renew(id, lease)
    }
    fn release<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.inner.release(id, lease)
    }
    fn get<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> BoxFuture<'a, StoreResult<Option<ExecutionRecord>>> {
        self.inner.get(id)
    }
    fn events<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<Vec<Event>>> {
        self.inner.events(id)
    }
    fn list(&self, s: Option<ExecutionStatus>) -> BoxFuture<'_, StoreResult<Vec<ExecutionRecord>>> {
        self.inner.list(s)
    }
    fn request_cancel<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<bool>> {
        self.inner.request_cancel(id)
    }
    fn purge(&self, before_ms: i64) -> BoxFuture<'_, StoreResult<u64>> {
        self.inner.purge(before_ms)
    }
}

/// A step that stalls its run for `stall` (the clock jumps while the run's
/// task cannot poll its renewal timer), then works for `after`.
fn stalling(stall: Duration, after: Duration) -> Step<(), ()> {
    Step::new_async("stall", move |_: &mut (), _: &StepInfo<'_>| {
        Box::pin(async move {
            tokio::time::advance(stall).await;
            tokio::time::sleep(after).await;
            Ok::<(), saga_core::StepError>(())
        })
    })
}

async fn renewals_during(stall: Duration, after: Duration) -> usize {
    let renewals = Arc::new(AtomicUsize::new(0));
    let store = CountingRenewals {
        inner: MemoryStore::new(),
        renewals: Arc::clone(&renewals),
    };
    // Renewed every second.
    let engine = SagaEngine::new(store).with_lease_ttl(Duration::from_secs(3));
    let saga = Saga::builder("stalling")
        .step(stalling(stall, after))
        .build()
        .unwrap();
    engine.register(saga).await.unwrap();
    let id = engine.start("stalling", ()).await.unwrap();
    let report = engine.wait(&id).await.or_else(ended).unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
    renewals.load(Ordering::SeqCst)
}

#[tokio::test(start_paused = true)]
async fn a_stall_is_followed_by_one_renewal_not_one_per_missed_tick() {
    // Ticks were due at 1, 2, 3 and 4 s: after the stall one renewal is
    // sent, and the next tick is due at 5 s, after the step ended at 4.5 s.
    let count = renewals_during(Duration::from_secs(4), Duration::from_millis(500)).await;
    assert_eq!(count, 1, "renewals after a 4 s stall");
}

#[tokio::test(start_paused = true)]
async fn without_a_stall_the_lease_is_renewed_once_a_period() {
    // No stall: 4.5 s of work, renewals at 1, 2, 3 and 4 s.
    let count = renewals_during(Duration::ZERO, Duration::from_millis(4500)).await;
    assert_eq!(count, 4, "renewals during 4.5 s of work");
}

/// A `wait` that ended and did not complete, as its report.
fn ended(error: saga_core::WaitError) -> Result<saga_core::SagaReport, saga_core::WaitError> {
    match error {
        saga_core::WaitError::Saga(failed) => Ok(failed.report().clone()),
        other => Err(other),
    }
}
