//! No lease renewal outlives its run: a renewal under way when the run
//! ends is waited for before the end is told, so once `wait` returns no
//! renewal of the execution reaches the store. A renewal of another run's
//! lease, however slow, does not hold that end up.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use saga_core::store::{
    Ack, Created, DefinitionRecord, Event, ExecutionRecord, Lease, MemoryStore, NewExecution,
    SagaStore, StoreResult,
};
use saga_core::{
    BoxFuture, ExecutionId, ExecutionStatus, Saga, SagaEngine, Step, StepError, StepInfo,
};

const TTL: Duration = Duration::from_millis(300);

/// A memory store whose renewals take `slow` each, counted: sent and
/// still under way.
struct SlowRenewals {
    inner: MemoryStore,
    slow: Duration,
    sent: AtomicUsize,
    under_way: AtomicUsize,
}

impl SlowRenewals {
    fn new(slow: Duration) -> Arc<Self> {
        Arc::new(SlowRenewals {
            inner: MemoryStore::new(),
            slow,
            sent: AtomicUsize::new(0),
            under_way: AtomicUsize::new(0),
        })
    }
}

impl SagaStore for SlowRenewals {
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
        self.sent.fetch_add(1, Ordering::SeqCst);
        self.under_way.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(self.slow).await;
            let ack = self.inner.renew(id, lease).await;
            self.under_way.fetch_sub(1, Ordering::SeqCst);
            ack
        })
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

/// One async step that naps for `nap`.
fn napping(name: &'static str, nap: Duration) -> Saga<()> {
    Saga::builder(name)
        .step(Step::new_async(
            "nap",
            move |_: &mut (), _: &StepInfo<'_>| {
                Box::pin(async move {
                    tokio::time::sleep(nap).await;
                    Ok::<(), StepError>(())
                })
            },
        ))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_under_way_at_the_runs_end_ends_before_wait_returns() {
    // The first renewal is sent at a third to a half of the ttl (100 to
    // 150 ms) and takes 600 ms: the run ends at 300 ms, in the middle.
    let store = SlowRenewals::new(Duration::from_millis(600));
    let engine =
        SagaEngine::with_store(Arc::clone(&store) as Arc<dyn SagaStore>).with_lease_ttl(TTL);
    engine
        .register(napping("nap", Duration::from_millis(300)))
        .await
        .unwrap();
    let id = engine.start("nap", ()).await.unwrap();
    let report = engine.wait(&id).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
    assert_eq!(store.sent.load(Ordering::SeqCst), 1, "renewals sent");
    assert_eq!(
        store.under_way.load(Ordering::SeqCst),
        0,
        "a renewal outlived the run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_runs_slow_renewal_does_not_hold_up_a_runs_end() {
    // The long run's renewals take 3 s each.
    let store = SlowRenewals::new(Duration::from_secs(3));
    let engine =
        SagaEngine::with_store(Arc::clone(&store) as Arc<dyn SagaStore>).with_lease_ttl(TTL);
    engine
        .register(napping("long", Duration::from_secs(4)))
        .await
        .unwrap();
    engine
        .register(napping("short", Duration::from_millis(20)))
        .await
        .unwrap();
    let long = engine.start("long", ()).await.unwrap();
    // Until the long run's first renewal is under way.
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.under_way.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no renewal sent");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let began = Instant::now();
    let short = engine.start("short", ()).await.unwrap();
    let report = engine.wait(&short).await.unwrap();
    let took = began.elapsed();
    assert_eq!(report.status, ExecutionStatus::Completed);
    assert!(
        store.under_way.load(Ordering::SeqCst) > 0,
        "the long run's renewal ended first: nothing was shown"
    );
    assert!(
        took < Duration::from_secs(1),
        "the short run's end waited {took:?} for another run's renewal"
    );
    let report = engine.wait(&long).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
}
