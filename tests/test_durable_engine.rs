//! The durable engine on both stores: the log contract, recovery forward
//! and back, fingerprints, and the operator's commands.

mod support;

use std::sync::Arc;
use std::time::Duration;

use saga_core::store::{Event, EventKind, MemoryStore, SagaStore, SqliteStore, StoreError};
use saga_core::testkit::{DelayedStore, StoreOp};
use saga_core::{
    EngineError, ExecutionId, ExecutionStatus, Outcome, RetryPolicy, Saga, SagaEngine, Step,
    StepError, StepInfo, StepStatus,
};
use support::durable::{
    Order, Point, STEPS, Script, recover_and_wait, saga, scratch_dir, start_and_crash,
};

/// Both stores, fresh.
fn stores(test: &str) -> Vec<(&'static str, Arc<dyn SagaStore>)> {
    let dir = scratch_dir(test);
    vec![
        ("memory", Arc::new(MemoryStore::new()) as Arc<dyn SagaStore>),
        (
            "sqlite",
            Arc::new(SqliteStore::open(dir.join("sagas.db")).unwrap()) as Arc<dyn SagaStore>,
        ),
    ]
}

fn kinds(events: &[Event]) -> Vec<(EventKind, Option<u32>)> {
    events.iter().map(|e| (e.kind, e.step)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_run_logs_every_step_in_order_with_outputs_and_context() {
    for (name, store) in stores("complete") {
        let script = Arc::new(Script::default());
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine.register(saga(&script)).await.unwrap();
        let id = engine.start("order", Order::default()).await.unwrap();
        let report = engine.wait(&id).await.or_else(support::ended).unwrap();
        assert_eq!(report.status, ExecutionStatus::Completed, "{name}");
        let events = store.events(&id).await.unwrap();
        let mut expected = Vec::new();
        for i in 0..STEPS as u32 {
            expected.push((EventKind::StepStarted, Some(i)));
            expected.push((EventKind::StepSucceeded, Some(i)));
        }
        expected.push((EventKind::Finished, None));
        assert_eq!(kinds(&events), expected, "{name}");
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (1..=events.len() as u64).collect::<Vec<_>>(),
            "{name}"
        );
        let third = &events[5];
        assert_eq!(third.output.as_deref(), Some("20"), "{name}");
        assert_eq!(
            third.context.as_deref(),
            Some(r#"{"done":["s0","s1","s2"]}"#),
            "{name}"
        );
        let record = store.get(&id).await.unwrap().unwrap();
        assert_eq!(record.status, ExecutionStatus::Completed);
        assert_eq!(record.fingerprint, saga(&script).fingerprint());
        assert_eq!(record.last_seq, events.len() as u64);
        // The final write released the lease.
        assert_eq!(record.owner, None, "{name}");
    }
}

/// The kinds of events of each append, in order.
type Batches = Arc<std::sync::Mutex<Vec<Vec<EventKind>>>>;

/// `memory` behind the test kit's delegating store, remembering the kinds
/// of events of each append, and failing the one numbered `fail_at` (from
/// 1; 0: none) before it reaches the store.
fn commits(memory: &MemoryStore, fail_at: usize) -> (DelayedStore, Batches) {
    let batches = Batches::default();
    let seen = Arc::clone(&batches);
    let store = DelayedStore::new(memory.clone(), Duration::ZERO).before_call(move |call| {
        if call.op != StoreOp::Append {
            return Ok(());
        }
        let mut batches = seen.lock().unwrap();
        batches.push(call.events.clone());
        if batches.len() == fail_at {
            return Err(StoreError::Backend {
                store: "the test store".into(),
                what: "appending events".into(),
                source: "disk full".into(),
            });
        }
        Ok(())
    });
    (store, batches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_commit_is_a_step_transition_and_a_start_is_durable_before_its_action() {
    let memory = MemoryStore::new();
    let (store, batches) = commits(&memory, 0);
    // The step reads the log while it runs: its own start must be there.
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut builder = Saga::<Order>::builder("peek");
    for i in 0..3 {
        let memory = memory.clone();
        let seen = Arc::clone(&seen);
        builder = builder.step(Step::new_async(
            format!("p{i}"),
            move |_: &mut Order, info: &StepInfo<'_>| {
                let memory = memory.clone();
                let seen = Arc::clone(&seen);
                let id = info.execution_id().clone();
                Box::pin(async move {
                    let events = memory.events(&id).await.unwrap();
                    let last = events.last().map(|e| (e.kind, e.step));
                    seen.lock().unwrap().push(last);
                    Ok::<_, StepError>(())
                })
            },
        ));
    }
    let engine = SagaEngine::new(store);
    engine.register(builder.build().unwrap()).await.unwrap();
    let id = engine.start("peek", Order::default()).await.unwrap();
    engine.wait(&id).await.or_else(support::ended).unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            Some((EventKind::StepStarted, Some(0))),
            Some((EventKind::StepStarted, Some(1))),
            Some((EventKind::StepStarted, Some(2))),
        ]
    );
    use EventKind::*;
    assert_eq!(
        *batches.lock().unwrap(),
        // The first start was committed with the execution itself.
        vec![
            vec![StepSucceeded, StepStarted],
            vec![StepSucceeded, StepStarted],
            vec![StepSucceeded, Finished],
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_logs_the_failure_with_its_context_and_every_compensation() {
    for (name, store) in stores("rollback") {
        let script = Arc::new(Script::default());
        *script.fail.lock().unwrap() = Some(3);
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine.register(saga(&script)).await.unwrap();
        let id = engine.start("order", Order::default()).await.unwrap();
        let report = engine.wait(&id).await.or_else(support::ended).unwrap();
        assert_eq!(report.status, ExecutionStatus::Compensated, "{name}");
        let events = store.events(&id).await.unwrap();
        let failed = events
            .iter()
            .find(|e| e.kind == EventKind::StepFailed)
            .unwrap();
        assert_eq!(failed.step, Some(3));
        assert_eq!(failed.error.as_deref(), Some("s3 refused"));
        assert_eq!(
            failed.context.as_deref(),
            Some(r#"{"done":["s0","s1","s2"]}"#)
        );
        let undone: Vec<Option<u32>> = events
            .iter()
            .filter(|e| e.kind == EventKind::CompensationSucceeded)
            .map(|e| e.step)
            .collect();
        assert_eq!(undone, vec![Some(2), Some(1), Some(0)], "{name}");
        // Compensations got the logged outputs.
        let calls = script.calls();
        assert!(
            calls.iter().any(|(what, _)| what == "undo s2 Some(20)"),
            "{calls:?}"
        );
        // A report rebuilt from the log by another engine agrees.
        let other = SagaEngine::with_store(Arc::clone(&store));
        let rebuilt = other.wait(&id).await.or_else(support::ended).unwrap();
        assert_eq!(rebuilt.status, ExecutionStatus::Compensated);
        assert_eq!(rebuilt.statuses(), report.statuses(), "{name}");
    }
}

/// Runs the saga until it hangs at `point`, then "crashes" (drops the
/// runtime: the step is cut off and the lease is not released); a second
/// engine recovers it. Returns the script of the second run and the
/// report.
fn crash_and_recover(
    store: Arc<dyn SagaStore>,
    fail: Option<usize>,
    point: Point,
) -> (Arc<Script>, Arc<Script>, saga_core::SagaReport) {
    let first = Arc::new(Script::default());
    *first.fail.lock().unwrap() = fail;
    *first.hang.lock().unwrap() = Some(point);
    let id = start_and_crash(&store, saga(&first), &first);
    let second = Arc::new(Script::default());
    *second.fail.lock().unwrap() = fail;
    let report = recover_and_wait(&store, saga(&second), &id);
    (first, second, report)
}

#[test]
fn a_step_cut_off_by_a_crash_runs_again_with_the_same_key_and_the_run_completes() {
    for (name, store) in stores("recover-forward") {
        let (first, second, report) = crash_and_recover(Arc::clone(&store), None, Point::Step(2));
        assert_eq!(report.status, ExecutionStatus::Completed, "{name}");
        let before: Vec<String> = first.calls().into_iter().map(|c| c.0).collect();
        assert_eq!(before, ["do s0", "do s1", "do s2"], "{name}");
        let after = second.calls();
        let names: Vec<&str> = after.iter().map(|c| c.0.as_str()).collect();
        // s0 and s1 are not run again; s2 is, with the same key.
        assert_eq!(names, ["do s2", "do s3", "do s4"], "{name}");
        assert_eq!(after[0].1, first.calls()[2].1, "{name}");
        // The same attempt, run again: the log shows its start twice.
        let events = store.events(&report.execution_id).await_blocking();
        let starts: Vec<u32> = events
            .iter()
            .filter(|e| e.kind == EventKind::StepStarted && e.step == Some(2))
            .map(|e| e.attempt)
            .collect();
        assert_eq!(starts, [1, 1], "{name}");
        assert_eq!(report.step("s2").unwrap().status, StepStatus::Succeeded);
    }
}

#[test]
fn a_compensation_cut_off_by_a_crash_runs_again_and_the_rollback_finishes_with_the_same_outputs() {
    for (name, store) in stores("recover-back") {
        let (first, second, report) =
            crash_and_recover(Arc::clone(&store), Some(3), Point::Compensation(1));
        assert_eq!(report.status, ExecutionStatus::Compensated, "{name}");
        let before: Vec<String> = first.calls().into_iter().map(|c| c.0).collect();
        assert_eq!(
            before,
            [
                "do s0",
                "do s1",
                "do s2",
                "do s3",
                "undo s2 Some(20)",
                "undo s1 Some(10)"
            ],
            "{name}"
        );
        let after: Vec<String> = second.calls().into_iter().map(|c| c.0).collect();
        // Recovery hands the compensations the outputs from the log.
        assert_eq!(after, ["undo s1 Some(10)", "undo s0 Some(0)"], "{name}");
        let rebuilt = SagaEngine::with_store(Arc::clone(&store));
        let rt = tokio::runtime::Runtime::new().unwrap();
        let view = rt
            .block_on(rebuilt.get(&report.execution_id))
            .unwrap()
            .unwrap();
        let context = view.events.last().unwrap().context.clone().unwrap();
        // The recovered rollback saw the context the first run left.
        assert_eq!(
            context, r#"{"done":["s0","s1","s2","undo s2","undo s1","undo s0"]}"#,
            "{name}"
        );
    }
}

trait Blocking<T> {
    fn await_blocking(self) -> T;
}

impl<'a, T> Blocking<T> for saga_core::BoxFuture<'a, saga_core::store::StoreResult<T>> {
    fn await_blocking(self) -> T {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(self)
            .unwrap()
    }
}

#[test]
fn recovery_refuses_a_changed_definition_and_leaves_the_record_untouched() {
    for (name, store) in stores("fingerprint") {
        let first = Arc::new(Script::default());
        *first.hang.lock().unwrap() = Some(Point::Step(1));
        let id = start_and_crash(&store, saga(&first), &first);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            std::thread::sleep(Duration::from_millis(150));
            let before = (
                store.get(&id).await.unwrap(),
                store.events(&id).await.unwrap(),
            );
            // Version 2 of `order` has one more step.
            let v2 = Saga::<Order>::builder("order")
                .step(Step::new("s0", |_: &mut Order, _: &StepInfo<'_>| {
                    Ok::<_, StepError>(())
                }))
                .step(Step::new("extra", |_: &mut Order, _: &StepInfo<'_>| {
                    Ok::<_, StepError>(())
                }))
                .build()
                .unwrap();
            let engine = SagaEngine::with_store(Arc::clone(&store));
            let v2_fingerprint = engine.register(v2).await.unwrap();
            let recovery = engine.recover().await.unwrap();
            assert!(recovery.resumed.is_empty(), "{name}");
            let (refused_id, error) = &recovery.refused[0];
            assert_eq!(refused_id, &id);
            let message = error.to_string();
            assert!(
                matches!(error, EngineError::UnknownDefinition { .. }),
                "{message}"
            );
            assert!(message.contains(&v2_fingerprint), "{message}");
            assert!(message.contains("left untouched"), "{message}");
            let after = (
                store.get(&id).await.unwrap(),
                store.events(&id).await.unwrap(),
            );
            assert_eq!(before, after, "{name}");

            // An engine that knows no `order` at all says so.
            let bare = SagaEngine::with_store(Arc::clone(&store));
            let recovery = bare.recover().await.unwrap();
            let message = recovery.refused[0].1.to_string();
            assert!(
                message.starts_with("no saga named `order` is registered"),
                "{message}"
            );

            // Registering the old version again lets it finish.
            let script = Arc::new(Script::default());
            engine.register(saga(&script)).await.unwrap();
            let recovery = engine.recover().await.unwrap();
            assert_eq!(recovery.resumed, vec![id.clone()], "{name}");
            let report = engine.wait(&id).await.or_else(support::ended).unwrap();
            assert_eq!(report.status, ExecutionStatus::Completed);
        });
    }
}

/// The same saga with a context whose field changed type.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct OrderV2 {
    done: u64,
}

#[test]
fn a_context_that_no_longer_decodes_is_refused_and_left_untouched() {
    for (name, store) in stores("context") {
        let first = Arc::new(Script::default());
        *first.hang.lock().unwrap() = Some(Point::Step(1));
        let id = start_and_crash(&store, saga(&first), &first);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            std::thread::sleep(Duration::from_millis(150));
            let before = (
                store.get(&id).await.unwrap(),
                store.events(&id).await.unwrap(),
            );
            let mut builder = Saga::<OrderV2>::builder("order");
            for i in 0..STEPS {
                builder = builder.step(
                    Step::new(format!("s{i}"), |_: &mut OrderV2, _: &StepInfo<'_>| {
                        Ok::<_, StepError>(0_u32)
                    })
                    .durable()
                    .undo(|_: &mut OrderV2, _: Option<&u32>, _: &StepInfo<'_>| {
                        Ok::<_, StepError>(())
                    }),
                );
            }
            let engine = SagaEngine::with_store(Arc::clone(&store));
            engine.register(builder.build().unwrap()).await.unwrap();
            let recovery = engine.recover().await.unwrap();
            let message = recovery.refused[0].1.to_string();
            assert!(
                message.starts_with(&format!(
                    "the context (a `test_durable_engine::OrderV2`) of execution `{id}` no longer decodes"
                )),
                "{name}: {message}"
            );
            assert!(message.contains("left untouched"), "{message}");
            let after = (
                store.get(&id).await.unwrap(),
                store.events(&id).await.unwrap(),
            );
            assert_eq!(before, after, "{name}");
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_with_the_same_id_is_idempotent_and_another_sagas_id_is_refused() {
    for (name, store) in stores("idempotent") {
        let script = Arc::new(Script::default());
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine.register(saga(&script)).await.unwrap();
        let id = engine
            .start_with_id("order", "order-42", Order::default())
            .await
            .unwrap();
        engine.wait(&id).await.or_else(support::ended).unwrap();
        let again = engine
            .start_with_id("order", "order-42", Order::default())
            .await
            .unwrap();
        assert_eq!(again, id);
        engine.wait(&id).await.or_else(support::ended).unwrap();
        let runs = script.calls().iter().filter(|c| c.0 == "do s0").count();
        assert_eq!(runs, 1, "{name}");

        let other = Saga::<Order>::builder("other")
            .step(Step::new("x", |_: &mut Order, _: &StepInfo<'_>| {
                Ok::<_, StepError>(())
            }))
            .build()
            .unwrap();
        engine.register(other).await.unwrap();
        let err = engine
            .start_with_id("other", "order-42", Order::default())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "execution `order-42` exists already, of saga `order`, not `other`; choose another id"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_rejects_an_output_without_a_codec_and_start_an_unknown_name() {
    let engine = SagaEngine::new(MemoryStore::new());
    let saga = Saga::<Order>::builder("loose")
        .step(Step::new("charge", |_: &mut Order, _: &StepInfo<'_>| {
            Ok::<_, StepError>(17_u32)
        }))
        .build()
        .unwrap();
    let err = engine.register(saga).await.unwrap_err();
    assert!(
        err.to_string().starts_with(
            "step `charge` of saga `loose` returns a `u32` and has no codec to log it, which a durable saga needs: a `#[saga_task]` step gets one by itself when its output implements `serde::Serialize` and `serde::Deserialize`; a `Step` built by hand from `.durable()`; a hand-written `Task` from `.step(Step::from_task(task).durable())` in place of `.task(task)` or `saga!`; or return `()` and keep the value in the context"
        ),
        "{err}"
    );
    let err = engine.start("loose", Order::default()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "no saga named `loose` is registered (registered: none); register it with `engine.register(saga)` first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_run_can_be_resumed_or_abandoned_and_finished_runs_are_purged() {
    for (name, store) in stores("operator") {
        // A compensation that fails until the operator fixes its cause.
        let broken = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = Arc::clone(&broken);
        let build = move || {
            let flag = Arc::clone(&flag);
            Saga::<Order>::builder("fragile")
                .undo_retry(saga_core::RetryPolicy::attempts(1))
                .step(
                    Step::new("a", |o: &mut Order, _: &StepInfo<'_>| {
                        o.done.push("a".into());
                        Ok::<_, StepError>(())
                    })
                    .undo(
                        move |o: &mut Order, _: Option<&()>, _: &StepInfo<'_>| {
                            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                                return Err(StepError::new("undo service down"));
                            }
                            o.done.push("undo a".into());
                            Ok(())
                        },
                    ),
                )
                .step(Step::new("b", |_: &mut Order, _: &StepInfo<'_>| {
                    Err::<(), _>("b refused")
                }))
                .build()
                .unwrap()
        };
        let engine = SagaEngine::with_store(Arc::clone(&store)).with_retention(Duration::ZERO);
        engine.register(build()).await.unwrap();
        let first = engine.start("fragile", Order::default()).await.unwrap();
        let second = engine.start("fragile", Order::default()).await.unwrap();
        for id in [&first, &second] {
            assert_eq!(
                engine
                    .wait(id)
                    .await
                    .or_else(support::ended)
                    .unwrap()
                    .status,
                ExecutionStatus::Stuck,
                "{name}"
            );
        }
        let stuck = engine.list(Some(ExecutionStatus::Stuck)).await.unwrap();
        assert_eq!(stuck.len(), 2, "{name}");
        // Stuck runs are never purged.
        assert_eq!(engine.purge().await.unwrap(), 0, "{name}");

        broken.store(false, std::sync::atomic::Ordering::SeqCst);
        engine.resume(&first).await.unwrap();
        let report = engine.wait(&first).await.or_else(support::ended).unwrap();
        assert_eq!(report.status, ExecutionStatus::Compensated, "{name}");
        let view = engine.get(&first).await.unwrap().unwrap();
        assert!(view.events.iter().any(|e| e.kind == EventKind::Resumed));

        engine.abandon(&second).await.unwrap();
        let record = store.get(&second).await.unwrap().unwrap();
        assert_eq!(record.status, ExecutionStatus::Abandoned);
        let err = engine.resume(&second).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("execution `{second}` is abandoned; `resume` applies to stuck executions")
        );

        // Retention zero: both finished runs go.
        assert_eq!(engine.purge().await.unwrap(), 2, "{name}");
        assert!(engine.get(&first).await.unwrap().is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_rolls_a_durable_run_back() {
    for (name, store) in stores("cancel") {
        let script = Arc::new(Script::default());
        *script.hang.lock().unwrap() = Some(Point::Step(2));
        let mut builder = Saga::<Order>::builder("order");
        for i in 0..3 {
            let script = Arc::clone(&script);
            builder = builder.step(
                Step::new_async(format!("s{i}"), move |o: &mut Order, _: &StepInfo<'_>| {
                    let script = Arc::clone(&script);
                    Box::pin(async move {
                        if i == 2 {
                            script.hung.notify_one();
                            std::future::pending::<()>().await;
                        }
                        o.done.push(format!("s{i}"));
                        Ok::<_, StepError>(())
                    })
                })
                .cancel_safe()
                .undo(move |o: &mut Order, _: Option<&()>, _: &StepInfo<'_>| {
                    o.done.push(format!("undo s{i}"));
                    Ok::<_, StepError>(())
                }),
            );
        }
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine.register(builder.build().unwrap()).await.unwrap();
        let hung = script.hung.notified();
        let id = engine.start("order", Order::default()).await.unwrap();
        hung.await;
        engine.cancel(&id).await.unwrap();
        let report = engine.wait(&id).await.or_else(support::ended).unwrap();
        assert_eq!(report.status, ExecutionStatus::Cancelled, "{name}");
        let record = store.get(&id).await.unwrap().unwrap();
        assert!(record.cancel_requested);
        assert_eq!(record.status, ExecutionStatus::Cancelled);
        // Ended: a second request is refused, as the CLI refuses it.
        let again = engine.cancel(&id).await.unwrap_err();
        assert_eq!(
            again.to_string(),
            format!(
                "execution `{id}` is cancelled; `cancel` applies to running or compensating executions"
            ),
            "{name}"
        );
    }
}

/// A cancel that comes while the pivot waits to retry an attempt that
/// failed clean stops the wait and rolls back, as one before any other
/// step does, and as a worker taking the execution over would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_the_pivots_backoff_after_a_clean_failure_rolls_back() {
    for (name, store) in stores("cancel-pivot-backoff") {
        let failed = Arc::new(tokio::sync::Notify::new());
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine
            .register(clean_failing_pivot(Some(Arc::clone(&failed))))
            .await
            .unwrap();
        let charged = failed.notified();
        let id = engine.start("order", Order::default()).await.unwrap();
        charged.await;
        cancel_and_expect_rollback(&engine, &id, name).await;
    }
}

/// `reserve` (compensable), then the pivot `charge`, whose every attempt
/// fails clean ("nothing charged") and is retried after a backoff no test
/// waits out (600 s, capped at 600 s): only a cancel ends it. `failed`
/// hears of each failing attempt.
fn clean_failing_pivot(failed: Option<Arc<tokio::sync::Notify>>) -> Saga<Order> {
    Saga::builder("order")
        .step(
            Step::new("reserve", |o: &mut Order, _: &StepInfo<'_>| {
                o.done.push("reserve".into());
                Ok::<_, StepError>(())
            })
            .undo(|o: &mut Order, _: Option<&()>, _: &StepInfo<'_>| {
                o.done.push("undo reserve".into());
                Ok::<_, StepError>(())
            }),
        )
        .pivot(
            Step::new("charge", move |o: &mut Order, info: &StepInfo<'_>| {
                o.done.push(format!("charge#{}", info.attempt()));
                if let Some(failed) = &failed {
                    failed.notify_one();
                }
                Err::<(), _>(StepError::new("nothing charged: try later"))
            })
            .retry(
                RetryPolicy::attempts(2)
                    .with_backoff(Duration::from_secs(600))
                    .with_max_backoff(Duration::from_secs(600)),
            ),
        )
        .build()
        .unwrap()
}

/// Cancels `id` (of [`clean_failing_pivot`], in its backoff) and expects
/// the rollback within a minute: cancelled, the pivot tried once, the
/// reservation undone.
async fn cancel_and_expect_rollback(engine: &SagaEngine, id: &ExecutionId, name: &str) {
    engine.cancel(id).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(60), engine.wait(id))
        .await
        .unwrap_or_else(|_| panic!("{name}: the cancel did not stop the pivot's backoff"));
    let report = ended.or_else(support::ended).unwrap();
    assert_eq!(report.status, ExecutionStatus::Cancelled, "{name}");
    let charge = report.step("charge").unwrap();
    assert_eq!(
        (charge.status, charge.attempts),
        (StepStatus::Failed, 1),
        "{name}"
    );
    let order: Order = engine.context(id).await.unwrap();
    assert_eq!(
        order.done,
        ["reserve", "charge#1", "undo reserve"],
        "{name}"
    );
}

/// The same, for a run that took the execution over while the pivot's
/// retry was due: the cancel stops the rest of the backoff it waits out.
#[test]
fn a_cancel_during_a_taken_over_pivots_backoff_rolls_back() {
    for (name, store) in stores("cancel-pivot-backoff-takeover") {
        // The first owner logs the clean failure and its backoff, and dies.
        let id = support::durable::in_dying_runtime(|| {
            let store = Arc::clone(&store);
            async move {
                let engine =
                    support::durable::short_lease(SagaEngine::with_store(Arc::clone(&store)));
                engine.register(clean_failing_pivot(None)).await.unwrap();
                let id = engine.start("order", Order::default()).await.unwrap();
                for _ in 0..1000 {
                    let events = store.events(&id).await.unwrap();
                    if events.iter().any(|e| e.kind == EventKind::StepFailed) {
                        return id;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("{name}: the pivot's failure was never logged");
            }
        });
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let engine = SagaEngine::with_store(Arc::clone(&store));
            engine.register(clean_failing_pivot(None)).await.unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while !engine.recover().await.unwrap().resumed.contains(&id) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{name}: not taken over"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            cancel_and_expect_rollback(&engine, &id, name).await;
        });
    }
}

/// A cancel of an execution that completed is refused and records nothing.
#[tokio::test]
async fn a_cancel_of_a_completed_execution_is_refused_and_records_nothing() {
    for (name, store) in stores("cancel-completed") {
        let script = Arc::new(Script::default());
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine.register(saga(&script)).await.unwrap();
        let id = engine.start("order", Order::default()).await.unwrap();
        engine.wait(&id).await.or_else(support::ended).unwrap();
        let err = engine.cancel(&id).await.unwrap_err();
        assert!(
            matches!(
                err,
                EngineError::WrongStatus {
                    status: ExecutionStatus::Completed,
                    operation: "cancel",
                    ..
                }
            ),
            "{name}: {err:?}"
        );
        let record = store.get(&id).await.unwrap().unwrap();
        assert!(!record.cancel_requested, "{name}");
        let unknown = engine.cancel(&ExecutionId::new("nope")).await.unwrap_err();
        assert!(
            matches!(unknown, EngineError::NotFound { .. }),
            "{name}: {unknown:?}"
        );
    }
}

#[test]
fn a_parallel_group_cut_off_by_a_crash_is_carried_on_without_rerunning_earlier_steps() {
    for (name, store) in stores("group") {
        let build = |script: &Arc<Script>| {
            let calls = |script: &Arc<Script>, what: &'static str, hang: bool| {
                let script = Arc::clone(script);
                Step::shared_async(what, move |_: &Order, info: &StepInfo<'_>| {
                    let script = Arc::clone(&script);
                    let key = info.idempotency_key();
                    Box::pin(async move {
                        script.record(format!("do {what}"), key);
                        if hang && script.hang.lock().unwrap().is_some() {
                            script.hung.notify_one();
                            std::future::pending::<()>().await;
                        }
                        Ok::<_, StepError>(())
                    })
                })
            };
            Saga::<Order>::builder("trip")
                .step(calls(script, "pay", false))
                .parallel(
                    saga_core::Parallel::new()
                        .step(calls(script, "hotel", false))
                        .step(calls(script, "flight", true)),
                )
                .step(calls(script, "mail", false))
                .build()
                .unwrap()
        };
        let first = Arc::new(Script::default());
        *first.hang.lock().unwrap() = Some(Point::Step(2));
        let id = start_and_crash(&store, build(&first), &first);
        let second = Arc::new(Script::default());
        let report = recover_and_wait(&store, build(&second), &id);
        assert_eq!(report.status, ExecutionStatus::Completed, "{name}");
        let after: Vec<String> = second.calls().into_iter().map(|c| c.0).collect();
        // `pay` is not run again; the cut-off branch is, with its key;
        // `hotel` may be (its success may not have been committed yet).
        assert!(!after.contains(&"do pay".to_owned()), "{name}: {after:?}");
        assert!(after.contains(&"do flight".to_owned()), "{name}: {after:?}");
        assert_eq!(after.last().map(String::as_str), Some("do mail"), "{name}");
        let flight_keys: Vec<String> = first
            .calls()
            .into_iter()
            .chain(second.calls())
            .filter(|c| c.0 == "do flight")
            .map(|c| c.1)
            .collect();
        assert_eq!(flight_keys, vec![format!("{id}/flight"); 2], "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_cannot_be_written_stops_the_run_and_recovery_finishes_it() {
    let memory = MemoryStore::new();
    // The second append (s1 succeeded + s2 started) fails.
    let (store, _) = commits(&memory, 2);
    let script = Arc::new(Script::default());
    let engine = SagaEngine::new(store);
    engine.register(saga(&script)).await.unwrap();
    let id = engine.start("order", Order::default()).await.unwrap();
    let err = engine.wait(&id).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("execution `{id}` stopped: the test store: appending events failed: disk full")
    );
    // Not one step after the failed write: s2's start was never logged,
    // so s2 did not run.
    let calls: Vec<String> = script.calls().into_iter().map(|c| c.0).collect();
    assert_eq!(calls, ["do s0", "do s1"]);
    let record = memory.get(&id).await.unwrap().unwrap();
    assert_eq!(record.status, ExecutionStatus::Running);
    // Asked again, the engine still knows why; another engine (another
    // process) waits for someone to carry it on.
    let again = engine.wait(&id).await.unwrap_err();
    assert_eq!(again.to_string(), err.to_string());
    let other = SagaEngine::new(memory.clone());
    let waiting = tokio::spawn({
        let id = id.clone();
        async move { other.wait(&id).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "no one carries it on yet");

    // Once the store works, recovery carries it on: s1 again (its success
    // was in the lost commit), then the rest; the other engine's wait
    // ends with it.
    let healthy = SagaEngine::new(memory.clone());
    let script = Arc::new(Script::default());
    healthy.register(saga(&script)).await.unwrap();
    assert_eq!(healthy.recover().await.unwrap().resumed, vec![id.clone()]);
    let report = healthy.wait(&id).await.or_else(support::ended).unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
    let seen = waiting.await.unwrap().unwrap();
    assert_eq!(seen.status, ExecutionStatus::Completed);
    let calls: Vec<String> = script.calls().into_iter().map(|c| c.0).collect();
    assert_eq!(calls, ["do s1", "do s2", "do s3", "do s4"]);
}

/// A saga whose second step waits until the test opens its gate; its
/// third step is the pivot if `pivot`.
fn gated(
    gate: &Arc<tokio::sync::Semaphore>,
    entered: &Arc<tokio::sync::Notify>,
    pivot: bool,
) -> Saga<Order> {
    let gate = Arc::clone(gate);
    let entered = Arc::clone(entered);
    let c = Step::new("c", |o: &mut Order, _: &StepInfo<'_>| {
        o.done.push("c".into());
        Ok::<_, StepError>(())
    });
    let builder = Saga::<Order>::builder("gated")
        .step(
            Step::new("a", |o: &mut Order, _: &StepInfo<'_>| {
                o.done.push("a".into());
                Ok::<_, StepError>(())
            })
            .undo(|o: &mut Order, _: Option<&()>, _: &StepInfo<'_>| {
                o.done.push("undo a".into());
                Ok::<_, StepError>(())
            }),
        )
        .step(Step::new_async(
            "b",
            move |o: &mut Order, _: &StepInfo<'_>| {
                let gate = Arc::clone(&gate);
                let entered = Arc::clone(&entered);
                Box::pin(async move {
                    entered.notify_one();
                    let _permit = gate.acquire().await.map_err(StepError::new)?;
                    o.done.push("b".into());
                    Ok::<_, StepError>(())
                })
            },
        ));
    let builder = if pivot {
        builder.pivot(c)
    } else {
        builder.step(c)
    };
    builder.build().unwrap()
}

/// Run twice, with `c` a plain step and with `c` the pivot: in both, the
/// cancel request arrives with `c`'s start commit and stops `c` before it
/// runs (a pivot that has not run is stopped too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_owner_neither_recovers_a_live_run_nor_abandons_it_but_can_cancel_it() {
    for ((name, store), pivot) in stores("second-owner")
        .into_iter()
        .map(|store| (store, false))
        .chain(
            stores("second-owner-pivot")
                .into_iter()
                .map(|store| (store, true)),
        )
    {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let entered = Arc::new(tokio::sync::Notify::new());
        let first = SagaEngine::with_store(Arc::clone(&store));
        first.register(gated(&gate, &entered, pivot)).await.unwrap();
        let second = SagaEngine::with_store(Arc::clone(&store));
        second
            .register(gated(&gate, &entered, pivot))
            .await
            .unwrap();
        let name = format!("{name}, pivot {pivot}");

        let inside = entered.notified();
        let id = first.start("gated", Order::default()).await.unwrap();
        inside.await;
        // `b` runs in the first engine: the second one must keep off.
        let recovery = second.recover().await.unwrap();
        assert_eq!(recovery.busy, vec![id.clone()], "{name}");
        assert!(recovery.resumed.is_empty(), "{name}");
        let err = second.abandon(&id).await.unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "execution `{id}` is being run by `{}`",
                first.owner()
            )),
            "{name}: {err}"
        );
        // A cancel from the second engine reaches the owner at its next
        // write: `b` finishes (it is not cancel-safe), `c` never runs.
        second.cancel(&id).await.unwrap();
        gate.add_permits(1);
        let report = second.wait(&id).await.or_else(support::ended).unwrap();
        assert_eq!(report.status, ExecutionStatus::Cancelled, "{name}");
        let events = store.events(&id).await.unwrap();
        let last = events.last().unwrap().context.clone().unwrap();
        assert_eq!(last, r#"{"done":["a","b","undo a"]}"#, "{name}");
        // The request came with `c`'s start: `c` never ran, and the report
        // rebuilt from the log (the second engine did not run it) says so.
        assert!(
            !events
                .iter()
                .any(|e| e.kind == EventKind::StepSucceeded && e.step == Some(2)),
            "{name}"
        );
        assert_eq!(
            report.step("c").unwrap().status,
            StepStatus::Pending,
            "{name}"
        );
        assert_eq!(
            report.step("b").unwrap().status,
            StepStatus::Skipped,
            "{name}"
        );
        assert_eq!(
            report.step("a").unwrap().status,
            StepStatus::Compensated,
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stuck_after_the_pivot_goes_forward_when_resumed() {
    for (name, store) in stores("resume-forward") {
        let courier_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let up = Arc::clone(&courier_up);
        let saga = Saga::<Order>::builder("ship")
            .pivot(Step::new("charge", |o: &mut Order, _: &StepInfo<'_>| {
                o.done.push("charge".into());
                Ok::<_, StepError>(())
            }))
            .step(Step::new("ship", move |o: &mut Order, _: &StepInfo<'_>| {
                if !up.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(StepError::new("no courier").permanent());
                }
                o.done.push("ship".into());
                Ok(())
            }))
            .build()
            .unwrap();
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine.register(saga).await.unwrap();
        let id = engine.start("ship", Order::default()).await.unwrap();
        let report = engine.wait(&id).await.or_else(support::ended).unwrap();
        assert_eq!(report.status, ExecutionStatus::Stuck, "{name}");
        assert_eq!(
            report.step("ship").unwrap().last_error.as_deref(),
            Some("no courier")
        );
        courier_up.store(true, std::sync::atomic::Ordering::SeqCst);
        engine.resume(&id).await.unwrap();
        let report = engine.wait(&id).await.or_else(support::ended).unwrap();
        assert_eq!(report.status, ExecutionStatus::Completed, "{name}");
        let events = store.events(&id).await.unwrap();
        let context = events.last().unwrap().context.clone().unwrap();
        // The pivot is not run again.
        assert_eq!(context, r#"{"done":["charge","ship"]}"#, "{name}");
    }
}

/// A cancel requested after the pivot is recorded and ignored, and stays
/// ignored when the execution, stuck after the pivot, is resumed: the run
/// goes forward from its log and never compensates what came before the
/// pivot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_ignored_after_the_pivot_stays_ignored_when_resumed() {
    for (name, store) in stores("cancel-after-pivot-resumed") {
        let courier_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let entered = Arc::new(tokio::sync::Notify::new());
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (up, inside, open) = (
            Arc::clone(&courier_up),
            Arc::clone(&entered),
            Arc::clone(&gate),
        );
        let saga = Saga::<Order>::builder("ship")
            .step(
                Step::new("reserve", |o: &mut Order, _: &StepInfo<'_>| {
                    o.done.push("reserve".into());
                    Ok::<_, StepError>(())
                })
                .undo(|o: &mut Order, _: Option<&()>, _: &StepInfo<'_>| {
                    o.done.push("undo reserve".into());
                    Ok::<_, StepError>(())
                }),
            )
            .pivot(Step::new("charge", |o: &mut Order, _: &StepInfo<'_>| {
                o.done.push("charge".into());
                Ok::<_, StepError>(())
            }))
            .step(Step::new_async(
                "ship",
                move |o: &mut Order, _: &StepInfo<'_>| {
                    let (up, inside, open) =
                        (Arc::clone(&up), Arc::clone(&inside), Arc::clone(&open));
                    Box::pin(async move {
                        if !up.load(std::sync::atomic::Ordering::SeqCst) {
                            inside.notify_one();
                            if let Ok(permit) = open.acquire().await {
                                // Only the first run waits for the cancel.
                                permit.forget();
                                open.add_permits(1);
                            }
                            return Err(StepError::new("no courier").permanent());
                        }
                        o.done.push("ship".into());
                        Ok(())
                    })
                },
            ))
            .build()
            .unwrap();
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine.register(saga).await.unwrap();
        let shipping = entered.notified();
        let id = engine.start("ship", Order::default()).await.unwrap();
        shipping.await;
        engine.cancel(&id).await.unwrap();
        gate.add_permits(1);
        let report = engine.wait(&id).await.or_else(support::ended).unwrap();
        assert_eq!(report.status, ExecutionStatus::Stuck, "{name}");
        assert!(store.get(&id).await.unwrap().unwrap().cancel_requested);
        // Resumed with the courier still down: stuck again, the cancel
        // ignored (and logged as ignored) once.
        engine.resume(&id).await.unwrap();
        let report = engine.wait(&id).await.or_else(support::ended).unwrap();
        assert_eq!(report.status, ExecutionStatus::Stuck, "{name}");
        courier_up.store(true, std::sync::atomic::Ordering::SeqCst);
        engine.resume(&id).await.unwrap();
        let report = engine.wait(&id).await.or_else(support::ended).unwrap();
        assert_eq!(report.status, ExecutionStatus::Completed, "{name}");
        assert!(report.cancel_ignored, "{name}");
        let events = store.events(&id).await.unwrap();
        let context = events.last().unwrap().context.clone().unwrap();
        assert_eq!(context, r#"{"done":["reserve","charge","ship"]}"#, "{name}");
        let ignored = events
            .iter()
            .filter(|e| e.kind == EventKind::CancelIgnored)
            .count();
        assert_eq!(ignored, 1, "{name}: logged as ignored once, not per resume");
    }
}

/// A cancel request made while the last step runs (by the engine running
/// it, or by another) finds nothing left to stop: the execution completes,
/// and both the run's report and one rebuilt from the log say the cancel
/// was ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_the_last_step_is_ignored_and_reported() {
    for elsewhere in [false, true] {
        for (name, store) in stores(&format!("cancel-last-step-{elsewhere}")) {
            let name = format!("{name}, from another engine: {elsewhere}");
            let entered = Arc::new(tokio::sync::Notify::new());
            let gate = Arc::new(tokio::sync::Semaphore::new(0));
            let (inside, open) = (Arc::clone(&entered), Arc::clone(&gate));
            let saga = Saga::<Order>::builder("last")
                .step(Step::new("a", |o: &mut Order, _: &StepInfo<'_>| {
                    o.done.push("a".into());
                    Ok::<_, StepError>(())
                }))
                .step(Step::new_async(
                    "last",
                    move |o: &mut Order, _: &StepInfo<'_>| {
                        let (inside, open) = (Arc::clone(&inside), Arc::clone(&open));
                        Box::pin(async move {
                            inside.notify_one();
                            let _permit = open.acquire().await.map_err(StepError::new)?;
                            o.done.push("last".into());
                            Ok::<_, StepError>(())
                        })
                    },
                ))
                .build()
                .unwrap();
            let running = SagaEngine::with_store(Arc::clone(&store));
            running.register(saga).await.unwrap();
            let other = SagaEngine::with_store(Arc::clone(&store));
            let last = entered.notified();
            let id = running.start("last", Order::default()).await.unwrap();
            last.await;
            if elsewhere {
                other.cancel(&id).await.unwrap();
            } else {
                running.cancel(&id).await.unwrap();
            }
            gate.add_permits(1);
            let report = running.wait(&id).await.unwrap();
            let rebuilt = other.report(&id).await.unwrap();
            for report in [&report, &rebuilt] {
                assert_eq!(report.status, ExecutionStatus::Completed, "{name}");
                assert!(report.cancel_ignored, "{name}");
            }
        }
    }
}

/// A cancel request that arrives while the pivot's first attempt runs
/// stops its retry if the attempt failed clean (the point of no return is
/// not passed: the run rolls back, as an in-memory run does), and does not
/// if its outcome is unknown (the pivot may have taken effect: the run
/// completes and the cancel is ignored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_the_pivots_first_attempt_stops_its_retry_unless_unknown() {
    for unknown in [false, true] {
        for (name, store) in stores(&format!("cancel-pivot-retry-{unknown}")) {
            let entered = Arc::new(tokio::sync::Notify::new());
            let gate = Arc::new(tokio::sync::Semaphore::new(0));
            let (inside, open) = (Arc::clone(&entered), Arc::clone(&gate));
            let saga = Saga::<Order>::builder("charge")
                .pivot(
                    Step::new_async("charge", move |o: &mut Order, info: &StepInfo<'_>| {
                        let first = info.attempt() == 1;
                        let (inside, open) = (Arc::clone(&inside), Arc::clone(&open));
                        Box::pin(async move {
                            if first {
                                inside.notify_one();
                                let _permit = open.acquire().await.map_err(StepError::new)?;
                                let error = StepError::new("gateway timeout");
                                return Err(if unknown {
                                    error.outcome_unknown()
                                } else {
                                    error
                                });
                            }
                            o.done.push("charge".into());
                            Ok(())
                        })
                    })
                    .retry(RetryPolicy::attempts(2).with_backoff(Duration::from_millis(1))),
                )
                .build()
                .unwrap();
            let engine = SagaEngine::with_store(Arc::clone(&store));
            engine.register(saga).await.unwrap();
            let charging = entered.notified();
            let id = engine.start("charge", Order::default()).await.unwrap();
            charging.await;
            engine.cancel(&id).await.unwrap();
            gate.add_permits(1);
            let report = engine.wait(&id).await.or_else(support::ended).unwrap();
            let name = format!("{name}, unknown {unknown}");
            let charge = report.step("charge").unwrap();
            if unknown {
                assert_eq!(report.status, ExecutionStatus::Completed, "{name}");
                assert_eq!(charge.attempts, 2, "{name}");
                assert!(report.cancel_ignored, "{name}");
            } else {
                assert_eq!(report.status, ExecutionStatus::Cancelled, "{name}");
                assert_eq!(
                    (charge.status, charge.attempts),
                    (StepStatus::Failed, 1),
                    "{name}"
                );
                assert!(!report.cancel_ignored, "{name}");
            }
        }
    }
}

/// A pivot whose attempt a crash cut off may have taken effect: its
/// recovery runs it again, whatever cancel request is on file (made during
/// the cut-off attempt, after its start was logged). If the attempt run
/// again succeeds, the execution completes; if it fails cleanly, the
/// execution ends stuck, the pivot's outcome unknown (the cut-off attempt
/// may have charged), in the run's report and in one rebuilt from the log.
#[test]
fn a_pivot_cut_off_by_a_crash_runs_again_despite_a_cancel_request() {
    for again_fails in [false, true] {
        for (name, store) in stores(&format!("cancel-pivot-crash-{again_fails}")) {
            let name = format!("{name}, the attempt run again fails: {again_fails}");
            let crashed = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let entered = Arc::new(tokio::sync::Notify::new());
            let saga = {
                let (crashed, entered) = (Arc::clone(&crashed), Arc::clone(&entered));
                move || {
                    let (crashed, entered) = (Arc::clone(&crashed), Arc::clone(&entered));
                    Saga::<Order>::builder("charge")
                        .pivot(Step::new_async(
                            "charge",
                            move |o: &mut Order, _: &StepInfo<'_>| {
                                let (crashed, entered) =
                                    (Arc::clone(&crashed), Arc::clone(&entered));
                                Box::pin(async move {
                                    if !crashed.load(std::sync::atomic::Ordering::SeqCst) {
                                        entered.notify_one();
                                        std::future::pending::<()>().await;
                                    }
                                    if again_fails {
                                        return Err(StepError::new("card declined").permanent());
                                    }
                                    o.done.push("charge".into());
                                    Ok::<_, StepError>(())
                                })
                            },
                        ))
                        .build()
                        .unwrap()
                }
            };
            // The first owner dies (its runtime is dropped) inside the pivot.
            let ttl = Duration::from_millis(100);
            let dying = tokio::runtime::Runtime::new().unwrap();
            let id = dying.block_on(async {
                let engine = SagaEngine::with_store(Arc::clone(&store)).with_lease_ttl(ttl);
                engine.register(saga()).await.unwrap();
                let charging = entered.notified();
                let id = engine.start("charge", Order::default()).await.unwrap();
                charging.await;
                engine.cancel(&id).await.unwrap();
                id
            });
            drop(dying);
            crashed.store(true, std::sync::atomic::Ordering::SeqCst);
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let engine = SagaEngine::with_store(Arc::clone(&store));
                engine.register(saga()).await.unwrap();
                tokio::time::sleep(ttl * 2).await;
                let recovery = engine.recover().await.unwrap();
                assert_eq!(recovery.resumed, vec![id.clone()], "{name}");
                let report = engine.wait(&id).await.or_else(support::ended).unwrap();
                let rebuilt = engine.report(&id).await.unwrap();
                for report in [&report, &rebuilt] {
                    let charge = report.step("charge").unwrap();
                    if again_fails {
                        assert_eq!(report.status, ExecutionStatus::Stuck, "{name}");
                        assert_eq!(charge.outcome, Outcome::Unknown, "{name}");
                    } else {
                        assert_eq!(report.status, ExecutionStatus::Completed, "{name}");
                        assert_eq!(charge.outcome, Outcome::Applied, "{name}");
                    }
                }
            });
        }
    }
}

/// A cancel request on file when a worker takes over an execution past
/// its pivot is ignored at the step about to run, not at the first step of
/// the saga (done long before): the log's `cancel_ignored` names `ship`.
#[test]
fn a_cancel_ignored_after_a_take_over_names_the_step_about_to_run() {
    for (name, store) in stores("cancel-ignored-takeover") {
        let crashed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let entered = Arc::new(tokio::sync::Notify::new());
        let saga = {
            let (crashed, entered) = (Arc::clone(&crashed), Arc::clone(&entered));
            move || {
                let (crashed, entered) = (Arc::clone(&crashed), Arc::clone(&entered));
                let plain = |step: &'static str| {
                    Step::new(step, move |o: &mut Order, _: &StepInfo<'_>| {
                        o.done.push(step.into());
                        Ok::<_, StepError>(())
                    })
                };
                Saga::<Order>::builder("order")
                    .step(plain("reserve"))
                    .pivot(plain("charge"))
                    .step(Step::new_async(
                        "ship",
                        move |o: &mut Order, _: &StepInfo<'_>| {
                            let (crashed, entered) = (Arc::clone(&crashed), Arc::clone(&entered));
                            Box::pin(async move {
                                if !crashed.load(std::sync::atomic::Ordering::SeqCst) {
                                    entered.notify_one();
                                    std::future::pending::<()>().await;
                                }
                                o.done.push("ship".into());
                                Ok::<_, StepError>(())
                            })
                        },
                    ))
                    .build()
                    .unwrap()
            }
        };
        let id = support::durable::in_dying_runtime(|| {
            let (store, entered, saga) = (Arc::clone(&store), Arc::clone(&entered), saga.clone());
            async move {
                let engine = support::durable::short_lease(SagaEngine::with_store(store));
                engine.register(saga()).await.unwrap();
                let shipping = entered.notified();
                let id = engine.start("order", Order::default()).await.unwrap();
                shipping.await;
                engine.cancel(&id).await.unwrap();
                id
            }
        });
        crashed.store(true, std::sync::atomic::Ordering::SeqCst);
        let report = recover_and_wait(&store, saga(), &id);
        assert_eq!(report.status, ExecutionStatus::Completed, "{name}");
        assert!(report.cancel_ignored, "{name}");
        let events = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(store.events(&id))
            .unwrap();
        let ignored: Vec<_> = events
            .iter()
            .filter(|e| e.kind == EventKind::CancelIgnored)
            .map(|e| e.step)
            .collect();
        assert_eq!(
            ignored,
            [Some(2)],
            "{name}: the step about to run is `ship`"
        );
    }
}

/// A saga whose `slow` step takes at least 40 ms, whose compensation takes
/// at least 40 ms, and whose last step fails.
fn slow_then_failing() -> Saga<Order> {
    Saga::builder("slow")
        .step(
            Step::new("slow", |_: &mut Order, _: &StepInfo<'_>| {
                std::thread::sleep(Duration::from_millis(40));
                Ok::<_, StepError>(())
            })
            .undo(|_: &mut Order, _: Option<&()>, _: &StepInfo<'_>| {
                std::thread::sleep(Duration::from_millis(40));
                Ok::<_, StepError>(())
            }),
        )
        .step(Step::new("never", |_: &mut Order, _: &StepInfo<'_>| {
            Err::<(), _>(StepError::new("refused"))
        }))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_rebuilt_from_the_log_has_the_durations_its_timestamps_give() {
    for (name, store) in stores("logged-durations") {
        let engine = SagaEngine::with_store(Arc::clone(&store));
        engine.register(slow_then_failing()).await.unwrap();
        let id = engine.start("slow", Order::default()).await.unwrap();
        let live = engine.wait(&id).await.or_else(support::ended).unwrap();
        assert_eq!(live.status, ExecutionStatus::Compensated, "{name}");

        let rebuilt = SagaEngine::with_store(Arc::clone(&store))
            .report(&id)
            .await
            .unwrap();
        assert_eq!(rebuilt.statuses(), live.statuses(), "{name}");
        // Sleeps of 40 ms between two timestamps in whole milliseconds: at
        // least 39 (a slower machine only makes them longer).
        let slow = &rebuilt.steps[0];
        assert!(
            slow.duration >= Duration::from_millis(39),
            "{name}: {slow:?}"
        );
        assert!(
            slow.compensation_duration >= Duration::from_millis(39),
            "{name}: {slow:?}"
        );
        assert!(
            rebuilt.duration >= slow.duration + slow.compensation_duration,
            "{name}: {rebuilt:?}"
        );
        // A step with no compensation has none to time.
        assert_eq!(rebuilt.steps[1].compensation_duration, Duration::ZERO);
    }
}
