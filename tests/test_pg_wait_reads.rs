//! A `wait` on an execution another process runs reads its record when
//! the store signals a change (at most every 50 ms), or once a second,
//! not every 50 ms for as long as it runs: many waits at once (a status
//! endpoint) would otherwise each read the PostgreSQL store 20 times a
//! second.
#![cfg(feature = "postgres")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use saga_core::store::{PostgresOptions, PostgresStore, SagaStore};
use saga_core::testkit::{DelayedStore, StoreOp};
use saga_core::{Context, ExecutionStatus, Saga, SagaEngine, Step, StepError, StepInfo};
use support::pg::{fresh_schema, pg_url};

fn slow() -> Saga<Context> {
    Saga::<Context>::builder("slow")
        .step(Step::new_async(
            "sleep",
            |_: &mut Context, _: &StepInfo<'_>| {
                Box::pin(async {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    Ok::<(), StepError>(())
                })
            },
        ))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_on_another_processes_run_reads_on_changes_not_every_50ms() {
    let url = pg_url();
    let options = || PostgresOptions::new().with_schema(fresh_schema("wait_reads"));
    let options = options();
    // Two stores on one schema: two processes, as far as PostgreSQL knows.
    let runner = SagaEngine::new(
        PostgresStore::connect_with(&url, options.clone())
            .await
            .unwrap(),
    );
    runner.register(slow()).await.unwrap();
    let reads = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&reads);
    let other: Arc<dyn SagaStore> =
        Arc::new(PostgresStore::connect_with(&url, options).await.unwrap());
    let waiter = SagaEngine::with_store(Arc::new(
        DelayedStore::shared(other, Duration::ZERO).before_call(move |call| {
            if call.op == StoreOp::Get {
                counted.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }),
    ));
    waiter.register(slow()).await.unwrap();

    let id = runner.start("slow", Context::new()).await.unwrap();
    let report = tokio::time::timeout(Duration::from_secs(30), waiter.wait(&id))
        .await
        .expect("the wait ended")
        .unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
    // About one read a second while it runs (3 s), and one after its end
    // is signalled; every 50 ms would be about 60.
    let reads = reads.load(Ordering::SeqCst);
    assert!(reads <= 10, "{reads} reads of the record in a 3 s wait");
}
