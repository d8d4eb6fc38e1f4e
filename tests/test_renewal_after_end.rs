//! A renewal that meets the run's own end: the run's last write releases
//! its lease, and a renewal under way at that moment finds it gone. That
//! is no lease lost to another owner, and nothing is logged as one.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use log::LevelFilter;
use saga_core::store::{
    Ack, Created, DefinitionRecord, Event, EventKind, ExecutionRecord, Lease, MemoryStore,
    NewExecution, SagaStore, StoreResult,
};
use saga_core::{
    BoxFuture, ExecutionId, ExecutionStatus, Saga, SagaEngine, Step, StepError, StepInfo,
};
use support::durable::Order;
use support::logs::{entries_where, install_logger};

/// A memory store whose renewals reach it only once an execution's end
/// was written.
struct LateRenewals {
    inner: MemoryStore,
    finished: AtomicBool,
}

impl SagaStore for LateRenewals {
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
        let ends = events.iter().any(|e| e.kind == EventKind::Finished);
        Box::pin(async move {
            let ack = self.inner.append(id, lease, events, status).await;
            if ends {
                self.finished.store(true, Ordering::SeqCst);
            }
            ack
        })
    }
    fn renew<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        Box::pin(async move {
            while !self.finished.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            self.inner.renew(id, lease).await
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_that_meets_the_runs_own_end_warns_of_nothing() {
    install_logger(LevelFilter::Debug);
    let store = LateRenewals {
        inner: MemoryStore::new(),
        finished: AtomicBool::new(false),
    };
    let engine = SagaEngine::new(store).with_lease_ttl(Duration::from_millis(300));
    let saga = Saga::builder("renewal-meets-end")
        .step(Step::new_async("nap", |_: &mut Order, _: &StepInfo<'_>| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(400)).await;
                Ok::<_, StepError>(())
            })
        }))
        .build()
        .unwrap();
    engine.register(saga).await.unwrap();
    let id = engine
        .start("renewal-meets-end", Order::default())
        .await
        .unwrap();
    let report = engine.wait(&id).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
    let warnings: Vec<String> = entries_where("execution", id.as_str())
        .into_iter()
        .filter(|e| e.level <= log::Level::Warn)
        .map(|e| e.message)
        .collect();
    assert_eq!(warnings, Vec::<String>::new());
}
