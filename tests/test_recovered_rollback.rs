//! A rollback that a recovery started, cut off by a second crash: the
//! steps the first crash cut off may have taken effect, and the second
//! recovery still compensates them. On every store: the run's own report
//! (`wait`) and the one rebuilt from the log agree, step by step.

mod support;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use saga_core::store::{EventKind, SagaStore};
use saga_core::{
    ExecutionStatus, Outcome, Parallel, Saga, SagaEngine, SagaReport, Step, StepError, StepInfo,
    StepStatus,
};
use support::durable::{Order, in_dying_runtime, recover_and_wait, short_lease};
use support::stores::every_store as stores;
use tokio::sync::Notify;

/// What the steps did, and where they hang.
#[derive(Default)]
struct Script {
    effects: Mutex<Vec<String>>,
    /// `slow`'s action hangs once it took effect.
    hang_action: AtomicBool,
    /// `slow`'s compensation hangs before it undoes anything.
    hang_undo: AtomicBool,
    hung: Notify,
}

impl Script {
    fn push(&self, what: impl Into<String>) {
        self.effects.lock().unwrap().push(what.into());
    }

    fn effects(&self) -> Vec<String> {
        self.effects.lock().unwrap().clone()
    }
}

/// `first`, then a group of `slow` (takes effect, then may hang) and
/// `quick`; each undoable.
fn saga(script: &Arc<Script>) -> Saga<Order> {
    let s = Arc::clone(script);
    let first = Step::new("first", |_: &mut Order, _: &StepInfo<'_>| {
        Ok::<_, StepError>(())
    })
    .undo({
        let s = Arc::clone(script);
        move |_: &mut Order, _: Option<&()>, _: &StepInfo<'_>| {
            s.push("undo first");
            Ok::<_, StepError>(())
        }
    });
    let slow = Step::shared_async("slow", move |_: &Order, _: &StepInfo<'_>| {
        let s = Arc::clone(&s);
        Box::pin(async move {
            s.push("slow applied");
            if s.hang_action.load(Ordering::SeqCst) {
                s.hung.notify_one();
                std::future::pending::<()>().await;
            }
            Ok::<_, StepError>(())
        })
    })
    .undo_shared_async({
        let s = Arc::clone(script);
        move |_: &Order, _: Option<&()>, _: &StepInfo<'_>| {
            let s = Arc::clone(&s);
            Box::pin(async move {
                if s.hang_undo.load(Ordering::SeqCst) {
                    s.hung.notify_one();
                    std::future::pending::<()>().await;
                }
                s.push("undo slow");
                Ok::<_, StepError>(())
            })
        }
    });
    let quick = Step::shared(
        "quick",
        |_: &Order, _: &StepInfo<'_>| Ok::<_, StepError>(()),
    )
    .undo_shared({
        let s = Arc::clone(script);
        move |_: &Order, _: Option<&()>, _: &StepInfo<'_>| {
            s.push("undo quick");
            Ok::<_, StepError>(())
        }
    });
    Saga::builder("recovered-rollback")
        .step(first)
        .parallel(Parallel::new().step(slow).step(quick))
        .build()
        .unwrap()
}

/// One step of a report: name, status, outcome, attempts, compensation
/// attempts, whether it has a last error.
type Row = (String, StepStatus, Outcome, u32, u32, bool);

fn rows(report: &SagaReport) -> Vec<Row> {
    report
        .steps
        .iter()
        .map(|s| {
            (
                s.name.to_string(),
                s.status,
                s.outcome,
                s.attempts,
                s.compensation_attempts,
                s.last_error.is_some(),
            )
        })
        .collect()
}

#[test]
fn a_second_crash_mid_rollback_still_compensates_what_the_first_cut_off() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (name, store) in rt.block_on(stores("recovered_rollback")) {
        let script = Arc::new(Script::default());
        script.hang_action.store(true, Ordering::SeqCst);
        // The owner crashes with `slow` in flight (it took effect) and a
        // cancellation on file.
        let id = in_dying_runtime(|| {
            let store = Arc::clone(&store);
            let script = Arc::clone(&script);
            async move {
                let engine = short_lease(SagaEngine::with_store(store));
                engine.register(saga(&script)).await.unwrap();
                let id = engine
                    .start("recovered-rollback", Order::default())
                    .await
                    .unwrap();
                script.hung.notified().await;
                // `quick`'s end is committed at once (a sibling still
                // runs), but after `slow` hung: wait for it, so the crash
                // cuts off `slow` alone.
                let store = engine.store();
                for _ in 0..1000 {
                    let events = store.events(&id).await.unwrap();
                    if events
                        .iter()
                        .any(|e| e.kind == EventKind::StepSucceeded && e.step == Some(2))
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                engine.cancel(&id).await.unwrap();
                id
            }
        });
        // A recovery rolls back and crashes in `slow`'s compensation.
        script.hang_action.store(false, Ordering::SeqCst);
        script.hang_undo.store(true, Ordering::SeqCst);
        in_dying_runtime(|| {
            let store = Arc::clone(&store);
            let script = Arc::clone(&script);
            let id = id.clone();
            async move {
                let engine = short_lease(SagaEngine::with_store(store));
                engine.register(saga(&script)).await.unwrap();
                loop {
                    if engine.recover().await.unwrap().resumed.contains(&id) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                script.hung.notified().await;
            }
        });
        // A second recovery finishes the rollback.
        script.hang_undo.store(false, Ordering::SeqCst);
        let report = recover_and_wait(&store, saga(&script), &id);
        let label = format!("{name}: {:?}", script.effects());
        assert_eq!(report.status, ExecutionStatus::Cancelled, "{label}");
        assert!(
            script.effects().iter().any(|e| e == "undo slow"),
            "{label}: `slow` took effect and was never compensated"
        );
        let expected = vec![
            row("first", StepStatus::Compensated, Outcome::Applied, 1, 1),
            // Its attempt ended in the log by the first recovery: cut off.
            (
                "slow".to_owned(),
                StepStatus::Compensated,
                Outcome::Unknown,
                1,
                1,
                true,
            ),
            row("quick", StepStatus::Compensated, Outcome::Applied, 1, 1),
        ];
        assert_eq!(rows(&report), expected, "{label}: the run's own report");
        let rebuilt = rt.block_on(report_of(&store, &script, &id));
        assert_eq!(rows(&rebuilt), expected, "{label}: the rebuilt report");
    }
}

fn row(name: &str, status: StepStatus, outcome: Outcome, attempts: u32, comp: u32) -> Row {
    (name.to_owned(), status, outcome, attempts, comp, false)
}

async fn report_of(
    store: &Arc<dyn SagaStore>,
    script: &Arc<Script>,
    id: &saga_core::ExecutionId,
) -> SagaReport {
    let engine = SagaEngine::with_store(Arc::clone(store));
    engine.register(saga(script)).await.unwrap();
    engine.report(id).await.unwrap()
}
