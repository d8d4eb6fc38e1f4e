//! The names 0.2.0 renamed keep working for one release, deprecated, and
//! do what the new names do: `Step::compensate*` (now `Step::undo*`),
//! `Step::compensation_retry` and `SagaBuilder::compensation_retry` (now
//! `undo_retry`), `default_compensation_retry` (now `default_undo_retry`).
#![allow(deprecated)]

use std::sync::{Arc, Mutex};

use saga_core::{
    BoxFuture, Parallel, RetryPolicy, Saga, SagaError, Step, StepError, StepInfo,
    default_compensation_retry, default_undo_retry,
};

type Log = Arc<Mutex<Vec<String>>>;

fn note(log: &Log, what: &str) {
    log.lock().unwrap().push(what.to_owned());
}

#[tokio::test]
async fn the_old_names_set_the_same_compensations() {
    let log: Log = Arc::default();
    let (a, b, c, d) = (log.clone(), log.clone(), log.clone(), log.clone());
    let saga = Saga::<Log>::builder("old")
        .compensation_retry(RetryPolicy::attempts(2))
        .step(
            Step::new("sync", |_: &mut Log, _: &StepInfo<'_>| {
                Ok::<_, StepError>(())
            })
            .compensate(move |_: &mut Log, _: Option<&()>, _: &StepInfo<'_>| {
                note(&a, "undo sync");
                Ok::<_, StepError>(())
            })
            .compensation_retry(RetryPolicy::attempts(4)),
        )
        .step(
            Step::new("async", |_: &mut Log, _: &StepInfo<'_>| {
                Ok::<_, StepError>(())
            })
            .compensate_async(
                move |_: &mut Log,
                      _: Option<&()>,
                      _: &StepInfo<'_>|
                      -> BoxFuture<'_, Result<(), StepError>> {
                    let b = b.clone();
                    Box::pin(async move {
                        note(&b, "undo async");
                        Ok(())
                    })
                },
            ),
        )
        .parallel(
            Parallel::new()
                .step(
                    Step::shared("shared", |_: &Log, _: &StepInfo<'_>| Ok::<_, StepError>(()))
                        .compensate_shared(move |_: &Log, _: Option<&()>, _: &StepInfo<'_>| {
                            note(&c, "undo shared");
                            Ok::<_, StepError>(())
                        }),
                )
                .step(
                    Step::shared("shared_async", |_: &Log, _: &StepInfo<'_>| {
                        Ok::<_, StepError>(())
                    })
                    .compensate_shared_async(
                        move |_: &Log,
                              _: Option<&()>,
                              _: &StepInfo<'_>|
                              -> BoxFuture<'_, Result<(), StepError>> {
                            let d = d.clone();
                            Box::pin(async move {
                                note(&d, "undo shared async");
                                Ok(())
                            })
                        },
                    ),
                ),
        )
        .step(Step::new("fail", |_: &mut Log, _: &StepInfo<'_>| {
            Err::<(), _>("declined")
        }))
        .build()
        .unwrap();
    let mut ctx = log.clone();
    let err = saga.run(&mut ctx).await.unwrap_err();
    assert!(matches!(err, SagaError::Compensated { .. }), "{err}");
    let mut undone = log.lock().unwrap().clone();
    // The group's two compensations run at once: their order is free.
    undone[..2].sort();
    assert_eq!(
        undone,
        [
            "undo shared",
            "undo shared async",
            "undo async",
            "undo sync"
        ]
    );
}

#[test]
fn the_old_default_is_the_new_one() {
    let (old, new) = (default_compensation_retry(), default_undo_retry());
    assert_eq!(old.max_attempts(), new.max_attempts());
    assert_eq!(format!("{old:?}"), format!("{new:?}"));
}
