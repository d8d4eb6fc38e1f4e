//! A retry's backoff under the brakes: a cancellation, or a sibling's
//! failure in a parallel group, stops a step's retries even while it waits
//! for the next attempt (no attempt runs after it); and a durable run
//! killed in a backoff is not taken for a crash loop.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use saga_core::store::{MemoryStore, SagaStore};
use saga_core::{
    CancellationToken, ExecutionId, ExecutionStatus, Outcome, Parallel, RetryPolicy, RunOptions,
    Saga, SagaEngine, SagaError, Step, StepError, StepInfo, StepStatus,
};
use support::durable::{Order, in_dying_runtime, short_lease};
use tokio::sync::Notify;

/// A step that fails its first `fails` attempts, each retried after
/// `backoff`; counts its attempts and tells `failing` at each failure.
fn flaky(name: &'static str, fails: u32, backoff: Duration, calls: Arc<Counter>) -> Step<Order> {
    Step::shared_async(name, move |_: &Order, _: &StepInfo<'_>| {
        let calls = Arc::clone(&calls);
        Box::pin(async move {
            let attempt = calls.count.fetch_add(1, Ordering::SeqCst) + 1;
            if attempt <= fails {
                calls.failing.notify_one();
                return Err(StepError::new(format!("{name} busy ({attempt})")));
            }
            Ok(())
        })
    })
    .retry(
        RetryPolicy::attempts(5)
            .with_backoff(backoff)
            .with_jitter(0.0),
    )
}

#[derive(Default)]
struct Counter {
    count: AtomicU32,
    failing: Notify,
}

impl Counter {
    fn get(&self) -> u32 {
        self.count.load(Ordering::SeqCst)
    }
}

#[tokio::test(start_paused = true)]
async fn a_siblings_failure_stops_a_retry_waiting_in_its_backoff() {
    let calls = Arc::new(Counter::default());
    let refuse = Step::shared_async("refuse", |_: &Order, _: &StepInfo<'_>| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Err::<(), _>(StepError::new("refused").permanent())
        })
    });
    let saga = Saga::builder("brakes")
        .parallel(
            Parallel::new()
                .step(flaky("fee", 1, Duration::from_secs(60), Arc::clone(&calls)))
                .step(refuse),
        )
        .build()
        .unwrap();
    let err = saga.run(&mut Order::default()).await.unwrap_err();
    assert!(matches!(err, SagaError::Compensated { .. }), "{err}");
    // The sibling failed after 1 s, in `fee`'s 60 s backoff: no second
    // attempt.
    assert_eq!(calls.get(), 1);
    let fee = err.report().step("fee").unwrap();
    assert_eq!(
        (
            fee.status,
            fee.outcome,
            fee.attempts,
            fee.last_error.as_deref()
        ),
        (
            StepStatus::Failed,
            Outcome::NotApplied,
            1,
            Some("fee busy (1)")
        )
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancellation_stops_a_retry_waiting_in_its_backoff() {
    let calls = Arc::new(Counter::default());
    let saga = Saga::builder("brakes")
        .step(flaky("fee", 1, Duration::from_secs(60), Arc::clone(&calls)))
        .build()
        .unwrap();
    let token = CancellationToken::new();
    let canceller = {
        let token = token.clone();
        let calls = Arc::clone(&calls);
        tokio::spawn(async move {
            calls.failing.notified().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            token.cancel();
        })
    };
    let options = RunOptions::new().with_cancellation(token);
    let err = saga
        .run_with(&mut Order::default(), options)
        .await
        .unwrap_err();
    canceller.await.unwrap();
    assert!(matches!(err, SagaError::Cancelled { .. }), "{err}");
    assert_eq!(calls.get(), 1, "an attempt ran after the cancellation");
    let fee = err.report().step("fee").unwrap();
    assert_eq!(
        (fee.status, fee.attempts, fee.last_error.as_deref()),
        (StepStatus::Failed, 1, Some("fee busy (1)"))
    );
}

#[test]
fn a_cancellation_in_a_blocking_runs_backoff_stops_its_retries() {
    let calls = Arc::new(AtomicU32::new(0));
    let step = {
        let calls = Arc::clone(&calls);
        Step::new("fee", move |_: &mut Order, _: &StepInfo<'_>| {
            let attempt = calls.fetch_add(1, Ordering::SeqCst) + 1;
            Err::<(), _>(StepError::new(format!("fee busy ({attempt})")))
        })
        .retry(
            RetryPolicy::attempts(5)
                .with_backoff(Duration::from_millis(300))
                .with_jitter(0.0),
        )
    };
    let saga = Saga::builder("brakes").step(step).build().unwrap();
    let token = CancellationToken::new();
    let canceller = {
        let token = token.clone();
        let calls = Arc::clone(&calls);
        std::thread::spawn(move || {
            while calls.load(Ordering::SeqCst) == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
            token.cancel();
        })
    };
    let options = RunOptions::new().with_cancellation(token);
    let err = saga
        .run_blocking_with(&mut Order::default(), options)
        .unwrap_err();
    canceller.join().unwrap();
    assert!(matches!(err, SagaError::Cancelled { .. }), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A saga of one step that fails its first `fails` attempts, each retried
/// after a backoff of 1 s, not growing: long enough for a kill to land in
/// it, short enough to wait out (a take-over waits for what is left of a
/// logged backoff).
fn one_flaky(calls: &Arc<Counter>, fails: u32) -> Saga<Order> {
    let backoff = Duration::from_secs(1);
    Saga::builder("backoff-crash")
        .step(
            flaky("fee", fails, backoff, Arc::clone(calls)).retry(
                RetryPolicy::attempts(5)
                    .with_backoff(backoff)
                    .with_multiplier(1.0)
                    .with_jitter(0.0),
            ),
        )
        .build()
        .unwrap()
}

/// `engine` takes `id` over once its lease expired (not ended stuck: a
/// crash loop would be).
async fn take_over(engine: &SagaEngine, id: &ExecutionId) {
    let mut tries = 0;
    while !engine.recover().await.unwrap().resumed.contains(id) {
        tries += 1;
        assert!(tries < 100, "not taken over: {:?}", engine.report(id).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the step's next failure, and a little more for it to be
/// logged: the process is then killed in the step's backoff.
async fn failed(calls: &Counter) {
    tokio::time::timeout(Duration::from_secs(10), calls.failing.notified())
        .await
        .expect("the step was not run again");
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[test]
fn a_process_killed_in_a_backoff_is_not_a_crash_loop() {
    let store: Arc<dyn SagaStore> = Arc::new(MemoryStore::new());
    let calls = Arc::new(Counter::default());
    // Killed in the backoff after the first failure, then after the next
    // three (one per take-over): more kills than the crash-loop limit.
    let id = in_dying_runtime(|| {
        let store = Arc::clone(&store);
        let calls = Arc::clone(&calls);
        async move {
            let engine = short_lease(SagaEngine::with_store(store));
            engine.register(one_flaky(&calls, 4)).await.unwrap();
            let id = engine
                .start("backoff-crash", Order::default())
                .await
                .unwrap();
            failed(&calls).await;
            id
        }
    });
    for _ in 0..3 {
        in_dying_runtime(|| {
            let store = Arc::clone(&store);
            let calls = Arc::clone(&calls);
            let id = id.clone();
            async move {
                let engine = short_lease(SagaEngine::with_store(store));
                engine.register(one_flaky(&calls, 4)).await.unwrap();
                // Taken over once the lease expired; not ended stuck.
                take_over(&engine, &id).await;
                failed(&calls).await;
            }
        });
    }
    let report = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let engine = short_lease(SagaEngine::with_store(Arc::clone(&store)));
        engine.register(one_flaky(&calls, 4)).await.unwrap();
        take_over(&engine, &id).await;
        engine.wait(&id).await.unwrap()
    });
    let fee = report.step("fee").unwrap();
    assert_eq!(
        (report.status, fee.status, fee.attempts, calls.get()),
        (ExecutionStatus::Completed, StepStatus::Succeeded, 5, 5)
    );
}

/// A cancellation from another engine reaches a run at its next write:
/// the start of the next attempt, which does not run. The report keeps
/// the error of the attempt before, whoever reads it.
#[test]
fn a_cancellation_that_stops_a_retry_keeps_the_last_error_in_every_report() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store: Arc<dyn SagaStore> = Arc::new(MemoryStore::new());
        let calls = Arc::new(Counter::default());
        let saga = || {
            Saga::builder("stopped")
                .step(flaky(
                    "fee",
                    5,
                    Duration::from_millis(300),
                    Arc::clone(&calls),
                ))
                .build()
                .unwrap()
        };
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine.register(saga()).await.unwrap();
        let operator = SagaEngine::with_store(Arc::clone(&store));
        operator.register(saga()).await.unwrap();
        let id = engine.start("stopped", Order::default()).await.unwrap();
        calls.failing.notified().await;
        operator.cancel(&id).await.unwrap();
        let own = engine.wait(&id).await.unwrap_err();
        let own = own.report().expect("a cancelled run's report");
        let rebuilt = operator.report(&id).await.unwrap();
        let errors: Vec<_> = [own, &rebuilt]
            .into_iter()
            .map(|report| {
                let fee = report.step("fee").unwrap();
                (
                    report.status,
                    fee.status,
                    fee.attempts,
                    fee.last_error.clone(),
                )
            })
            .collect();
        assert_eq!(errors[0], errors[1], "the run's report and the log's");
        assert_eq!(
            errors[0],
            (
                ExecutionStatus::Cancelled,
                StepStatus::Failed,
                1,
                Some("fee busy (1)".to_owned())
            )
        );
    });
}

/// A process killed in a step's backoff, then a cancellation, then a
/// take-over: the step failed cleanly (its attempt ended in the log, its
/// retry was due), so the rollback neither compensates it nor calls its
/// attempt cut off. The report says what happened: failed, not applied,
/// one attempt, its own error.
#[test]
fn a_cancellation_after_a_kill_in_a_backoff_compensates_nothing_that_failed_cleanly() {
    let store: Arc<dyn SagaStore> = Arc::new(MemoryStore::new());
    let calls = Arc::new(Counter::default());
    let undone = Arc::new(AtomicU32::new(0));
    let saga = {
        let calls = Arc::clone(&calls);
        let undone = Arc::clone(&undone);
        move || {
            let undone = Arc::clone(&undone);
            Saga::builder("backoff-cancel")
                .step(
                    flaky("fee", 5, Duration::from_secs(3600), Arc::clone(&calls)).undo_shared(
                        move |_: &Order, _: Option<&()>, _: &StepInfo<'_>| {
                            undone.fetch_add(1, Ordering::SeqCst);
                            Ok::<_, StepError>(())
                        },
                    ),
                )
                .build()
                .unwrap()
        }
    };
    let id = in_dying_runtime(|| {
        let store = Arc::clone(&store);
        let calls = Arc::clone(&calls);
        let saga = saga.clone();
        async move {
            let engine = short_lease(SagaEngine::with_store(store));
            engine.register(saga()).await.unwrap();
            let id = engine
                .start("backoff-cancel", Order::default())
                .await
                .unwrap();
            failed(&calls).await;
            id
        }
    });
    let report = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let engine = short_lease(SagaEngine::with_store(Arc::clone(&store)));
        engine.register(saga()).await.unwrap();
        engine.cancel(&id).await.unwrap();
        take_over(&engine, &id).await;
        let own = engine.wait(&id).await.unwrap_err();
        let rebuilt = engine.report(&id).await.unwrap();
        (own.report().unwrap().clone(), rebuilt)
    });
    let (own, rebuilt) = report;
    for report in [&own, &rebuilt] {
        let fee = report.step("fee").unwrap();
        assert_eq!(
            (
                report.status,
                fee.status,
                fee.outcome,
                fee.attempts,
                fee.last_error.as_deref()
            ),
            (
                ExecutionStatus::Cancelled,
                StepStatus::Failed,
                Outcome::NotApplied,
                1,
                Some("fee busy (1)")
            )
        );
    }
    assert_eq!(
        undone.load(Ordering::SeqCst),
        0,
        "a clean failure compensated"
    );
    assert_eq!(calls.get(), 1, "an attempt ran after the cancellation");
}
