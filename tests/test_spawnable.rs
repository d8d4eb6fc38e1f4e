//! Every engine future a service hands to `tokio::spawn` is `Send` when
//! the context is `Send`: a context need not be `Sync` (a `Cell` in it is
//! fine), nor known to generic code that calls the engine.

use std::cell::Cell;
use std::future::Future;

use saga_core::store::MemoryStore;
use saga_core::{ExecutionStatus, Saga, SagaEngine, Step, StepInfo};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

fn spawnable<F: Future + Send>(_: F) {}

/// Generic code of a platform crate: compiles only if each future is
/// `Send` for any `C: Send`.
#[allow(dead_code)]
fn futures_of_generic_callers<C>(engine: &SagaEngine, ctx: impl Fn() -> C)
where
    C: Serialize + DeserializeOwned + Send + 'static,
{
    spawnable(engine.start("order", ctx()));
    spawnable(engine.start_with_id("order", "order-1", ctx()));
    spawnable(engine.submit("order", ctx()));
    spawnable(engine.submit_with_id("order", "order-2", ctx()));
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Tally {
    /// Not `Sync`.
    seen: Cell<u32>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_that_is_not_sync_is_submitted_from_a_spawned_task() {
    let engine = SagaEngine::new(MemoryStore::new());
    let saga = Saga::<Tally>::builder("tally")
        .step(Step::new("count", |t: &mut Tally, _: &StepInfo<'_>| {
            t.seen.set(t.seen.get() + 1);
            Ok::<_, saga_core::StepError>(())
        }))
        .build()
        .unwrap();
    engine.register(saga).await.unwrap();
    let id = tokio::spawn({
        let engine = engine.clone();
        async move { engine.submit("tally", Tally::default()).await }
    })
    .await
    .unwrap()
    .unwrap();
    let report = engine.recover().await.unwrap();
    assert_eq!(report.resumed, std::slice::from_ref(&id), "{report:?}");
    let ended = engine.wait(&id).await.unwrap();
    assert_eq!(ended.status, ExecutionStatus::Completed);
    let tally: Tally = engine.context(&id).await.unwrap();
    assert_eq!(tally.seen.get(), 1);
}
