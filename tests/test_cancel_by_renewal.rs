//! A cancel requested from another engine reaches a run that writes
//! nothing: its lease renewal's answer tells of it. A run waiting in a
//! cancel-safe step that never ends is stopped, its step compensated, and
//! the execution ends cancelled, within a few renewals.

use std::sync::Arc;
use std::time::Duration;

use saga_core::store::{MemoryStore, SagaStore};
use saga_core::{ExecutionStatus, Saga, SagaEngine, Step, StepError, StepInfo, WaitError};

const TTL: Duration = Duration::from_millis(300);

/// `a`, then `wait`: cancel-safe, waiting for an answer that never comes.
fn saga(entered: &Arc<tokio::sync::Notify>) -> Saga<Vec<String>> {
    let entered = Arc::clone(entered);
    Saga::builder("waits")
        .step(
            Step::new("a", |done: &mut Vec<String>, _: &StepInfo<'_>| {
                done.push("a".to_owned());
                Ok::<(), StepError>(())
            })
            .undo(|done: &mut Vec<String>, _: Option<&()>, _: &StepInfo<'_>| {
                done.push("undo a".to_owned());
                Ok::<(), StepError>(())
            }),
        )
        .step(
            Step::new_async("wait", move |_: &mut Vec<String>, _: &StepInfo<'_>| {
                let entered = Arc::clone(&entered);
                Box::pin(async move {
                    entered.notify_one();
                    std::future::pending::<()>().await;
                    Ok::<(), StepError>(())
                })
            })
            .cancel_safe(),
        )
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_from_another_engine_reaches_a_waiting_run_by_its_renewal() {
    let store: Arc<dyn SagaStore> = Arc::new(MemoryStore::new());
    let entered = Arc::new(tokio::sync::Notify::new());
    let owner = SagaEngine::with_store(Arc::clone(&store)).with_lease_ttl(TTL);
    let operator = SagaEngine::with_store(Arc::clone(&store)).with_lease_ttl(TTL);
    owner.register(saga(&entered)).await.unwrap();
    operator.register(saga(&entered)).await.unwrap();

    let inside = entered.notified();
    let id = owner.start("waits", Vec::<String>::new()).await.unwrap();
    inside.await;
    operator.cancel(&id).await.unwrap();
    // Renewed every third of the ttl: many renewals fit in 10 s.
    let outcome = tokio::time::timeout(Duration::from_secs(10), owner.wait(&id))
        .await
        .expect("the run learns of the cancel from a renewal");
    let Err(WaitError::Saga(error)) = outcome else {
        panic!("not cancelled: {outcome:?}");
    };
    assert_eq!(error.report().status, ExecutionStatus::Cancelled);
    let context: Vec<String> = owner.context(&id).await.unwrap();
    assert_eq!(context, ["a", "undo a"]);
}
