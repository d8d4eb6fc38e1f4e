//! Panics and timeouts: a panic in a step or a compensation (sync or async)
//! is caught and becomes a failure of unknown outcome; a timed-out async
//! attempt is dropped, its outcome unknown. Neither tears down the caller.

mod support;

use std::time::Duration;

use saga_core::{
    ExecutionStatus, Panicked, RetryPolicy, Saga, SagaError, Step, StepError, StepInfo, Timeout,
};
use support::steps::*;

fn panicking_sync(message: &'static str) -> Step<Rec, String> {
    Step::new(
        "boom",
        move |r: &mut Rec, _: &StepInfo<'_>| -> Result<String, StepError> {
            r.push("try boom");
            panic!("{message}")
        },
    )
    .undo(undo("boom"))
}

#[test]
fn panic_in_a_sync_step_is_caught_and_compensated_as_unknown() {
    let saga = Saga::builder("p")
        .step(compensable("a"))
        .step(panicking_sync("inventory service exploded"))
        .build()
        .unwrap();
    let mut rec = Rec::default();
    let err = saga.run_blocking(&mut rec).unwrap_err();

    assert_eq!(
        rec.effects,
        [
            "do a",
            "try boom",
            "undo boom with none",
            "undo a with a-out"
        ]
    );
    assert!(matches!(err, SagaError::Compensated { ref step, .. } if &**step == "boom"));
    let panicked = user_error::<Panicked>(&err);
    assert_eq!(panicked.message, "inventory service exploded");
    assert_eq!(
        std::error::Error::source(&err).unwrap().to_string(),
        "panicked: inventory service exploded"
    );
    assert_eq!(
        rows(err.report()),
        [
            row("a", "compensated", "applied", 1, 1),
            row("boom", "compensated", "unknown", 1, 1),
        ]
    );
}

#[test]
fn panic_payloads_of_every_kind_are_reported() {
    let run = |step: Step<Rec, ()>| {
        let saga = Saga::builder("p").step(step).build().unwrap();
        let err = saga.run_blocking(&mut Rec::default()).unwrap_err();
        user_error::<Panicked>(&err).message.clone()
    };
    let formatted = run(Step::new(
        "s",
        |_: &mut Rec, _: &StepInfo<'_>| -> Result<(), StepError> { panic!("code {}", 7) },
    ));
    assert_eq!(formatted, "code 7");
    let other = run(Step::new(
        "s",
        |_: &mut Rec, _: &StepInfo<'_>| -> Result<(), StepError> { std::panic::panic_any(42_u8) },
    ));
    assert_eq!(other, "non-string panic payload");
}

#[tokio::test]
async fn panic_while_an_async_step_is_polled_is_caught() {
    let saga = Saga::builder("p")
        .step(compensable("a"))
        .step(
            Step::new_async("boom", |r: &mut Rec, _: &StepInfo<'_>| {
                Box::pin(async move {
                    r.push("try boom");
                    tokio::task::yield_now().await;
                    if r.effects.len() < 100 {
                        panic!("after an await");
                    }
                    Ok::<_, StepError>("never".to_owned())
                })
            })
            .undo(undo("boom")),
        )
        .build()
        .unwrap();
    let mut rec = Rec::default();
    let err = saga.run(&mut rec).await.unwrap_err();

    assert_eq!(
        rec.effects,
        [
            "do a",
            "try boom",
            "undo boom with none",
            "undo a with a-out"
        ]
    );
    assert_eq!(user_error::<Panicked>(&err).message, "after an await");
}

#[tokio::test]
async fn panic_while_an_async_step_builds_its_future_is_caught() {
    let saga = Saga::builder("p")
        .step(compensable("a"))
        .step(
            Step::new_async("boom", |r: &mut Rec, _: &StepInfo<'_>| {
                r.push("try boom");
                if r.effects.len() < 100 {
                    panic!("before the future");
                }
                Box::pin(async move { Ok::<_, StepError>("never".to_owned()) })
            })
            .undo(undo("boom")),
        )
        .build()
        .unwrap();
    let mut rec = Rec::default();
    let err = saga.run(&mut rec).await.unwrap_err();

    assert_eq!(
        rec.effects,
        [
            "do a",
            "try boom",
            "undo boom with none",
            "undo a with a-out"
        ]
    );
    assert_eq!(user_error::<Panicked>(&err).message, "before the future");
}

#[test]
fn a_panic_is_retried_like_any_other_error() {
    // A panic is no permanent error: the policy retries it.
    let saga = Saga::builder("p")
        .step(panicking_sync("x").retry(exact(3)))
        .build()
        .unwrap();
    let (_, options) = virtual_time();
    let mut rec = Rec::default();
    let err = saga.run_blocking_with(&mut rec, options).unwrap_err();
    assert_eq!(err.report().step("boom").unwrap().attempts, 3);

    let saga = Saga::builder("p")
        .step(
            Step::new("boom", |r: &mut Rec, info: &StepInfo<'_>| {
                r.push(format!("try boom#{}", info.attempt()));
                if info.attempt() == 1 {
                    panic!("first attempt");
                }
                Ok::<_, StepError>("boom-out".to_owned())
            })
            .undo(undo("boom"))
            .retry(exact_any(3)),
        )
        .step(failing("next", declined))
        .build()
        .unwrap();
    let (_, options) = virtual_time();
    let mut rec = Rec::default();
    let err = saga.run_blocking_with(&mut rec, options).unwrap_err();
    // The retry succeeded, so the output is known and handed over.
    assert_eq!(
        rec.effects,
        [
            "try boom#1",
            "try boom#2",
            "try next#1",
            "undo boom with boom-out"
        ]
    );
    assert_eq!(
        rows(err.report())[0],
        row("boom", "compensated", "applied", 2, 1)
    );
}

#[test]
fn panic_in_a_sync_compensation_is_caught_retried_then_stuck() {
    let saga = Saga::builder("p")
        .step(compensable("a"))
        .step(
            Step::new("b", |r: &mut Rec, _: &StepInfo<'_>| {
                r.push("do b");
                Ok::<_, StepError>(())
            })
            .undo(
                |r: &mut Rec, _: Option<&()>, info: &StepInfo<'_>| -> Result<(), StepError> {
                    r.push(format!("undo b#{}", info.attempt()));
                    panic!("refund api exploded")
                },
            ),
        )
        .step(failing("c", declined))
        .undo_retry(exact_any(2))
        .build()
        .unwrap();
    let (_, options) = virtual_time();
    let mut rec = Rec::default();
    let err = saga.run_blocking_with(&mut rec, options).unwrap_err();

    assert_eq!(
        rec.effects,
        ["do a", "do b", "try c#1", "undo b#1", "undo b#2"]
    );
    assert!(err.is_stuck());
    assert_eq!(user_error::<Panicked>(&err).message, "refund api exploded");
    assert_eq!(
        rows(err.report())[1],
        row("b", "compensation_failed", "applied", 1, 2)
    );
}

#[tokio::test]
async fn panic_in_an_async_compensation_is_caught_and_retried() {
    let saga = Saga::builder("p")
        .step(
            Step::new("a", |r: &mut Rec, _: &StepInfo<'_>| {
                r.push("do a");
                Ok::<_, StepError>(())
            })
            .undo_async(|r: &mut Rec, _: Option<&()>, info: &StepInfo<'_>| {
                let attempt = info.attempt();
                Box::pin(async move {
                    r.push(format!("undo a#{attempt}"));
                    tokio::task::yield_now().await;
                    if attempt == 1 {
                        panic!("first refund attempt exploded");
                    }
                    Ok::<_, StepError>(())
                })
            }),
        )
        .step(failing("b", declined))
        .undo_retry(exact_any(2))
        .build()
        .unwrap();
    let (_, options) = virtual_time();
    let mut rec = Rec::default();
    let err = saga.run_with(&mut rec, options).await.unwrap_err();

    assert_eq!(rec.effects, ["do a", "try b#1", "undo a#1", "undo a#2"]);
    assert!(matches!(err, SagaError::Compensated { .. }));
}

#[tokio::test]
async fn a_panicking_saga_inside_a_spawned_task_leaves_the_task_alive() {
    let saga = Saga::builder("p")
        .step(panicking_sync("in a task"))
        .build()
        .unwrap();
    let outcome = tokio::spawn(async move {
        let mut rec = Rec::default();
        let err = saga.run(&mut rec).await.unwrap_err();
        (rec.effects, err.report().status)
    })
    .await
    .expect("the task did not panic");
    assert_eq!(
        outcome,
        (
            vec!["try boom".to_owned(), "undo boom with none".to_owned()],
            ExecutionStatus::Compensated
        )
    );
}

/// An async step that never answers.
fn hangs(name: &'static str, timeout: Duration) -> Step<Rec, String> {
    Step::new_async(name, move |r: &mut Rec, info: &StepInfo<'_>| {
        let attempt = info.attempt();
        Box::pin(async move {
            r.push(format!("try {name}#{attempt}"));
            std::future::pending::<()>().await;
            Ok::<_, StepError>(String::new())
        })
    })
    .timeout(timeout)
    .undo(undo(name))
}

#[tokio::test]
async fn timed_out_async_step_is_dropped_and_compensated_as_unknown() {
    let saga = Saga::builder("t")
        .step(compensable("a"))
        .step(hangs("courier", ms(20)))
        .build()
        .unwrap();
    let mut rec = Rec::default();
    let err = unless_hung(saga.run(&mut rec)).await.unwrap_err();

    assert_eq!(
        rec.effects,
        [
            "do a",
            "try courier#1",
            "undo courier with none",
            "undo a with a-out"
        ]
    );
    assert_eq!(user_error::<Timeout>(&err).after, ms(20));
    assert_eq!(
        std::error::Error::source(&err).unwrap().to_string(),
        "attempt timed out after 20ms"
    );
    assert_eq!(
        err.to_string(),
        "saga `t` failed at step `courier` and was rolled back (compensated: courier, a)"
    );
    assert_eq!(
        rows(err.report()),
        [
            row("a", "compensated", "applied", 1, 1),
            row("courier", "compensated", "unknown", 1, 1),
        ]
    );
}

#[tokio::test]
async fn timeouts_are_retryable_and_a_later_success_wins() {
    let saga = Saga::builder("t")
        .step(
            Step::new_async("courier", |r: &mut Rec, info: &StepInfo<'_>| {
                let attempt = info.attempt();
                Box::pin(async move {
                    r.push(format!("try courier#{attempt}"));
                    if attempt == 1 {
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, StepError>("label-1".to_owned())
                })
            })
            .timeout(ms(20))
            .retry(exact(3))
            .undo(undo("courier")),
        )
        .step(failing("next", declined))
        .build()
        .unwrap();
    let (clock, options) = virtual_time();
    let mut rec = Rec::default();
    let err = unless_hung(saga.run_with(&mut rec, options))
        .await
        .unwrap_err();

    assert_eq!(
        rec.effects,
        [
            "try courier#1",
            "try courier#2",
            "try next#1",
            "undo courier with label-1"
        ]
    );
    assert_eq!(clock.sleeps(), [ms(100)]);
    assert_eq!(err.report().step("courier").unwrap().attempts, 2);
}

#[tokio::test]
async fn a_timeout_keeps_the_step_unknown_when_a_later_attempt_fails_cleanly() {
    let saga = Saga::builder("t")
        .step(
            Step::new_async("courier", |r: &mut Rec, info: &StepInfo<'_>| {
                let attempt = info.attempt();
                Box::pin(async move {
                    r.push(format!("try courier#{attempt}"));
                    if attempt == 1 {
                        std::future::pending::<()>().await;
                    }
                    Err::<String, _>(declined())
                })
            })
            .timeout(ms(20))
            .retry(exact(3))
            .undo(undo("courier")),
        )
        .build()
        .unwrap();
    let (_, options) = virtual_time();
    let mut rec = Rec::default();
    let err = unless_hung(saga.run_with(&mut rec, options))
        .await
        .unwrap_err();

    assert_eq!(
        rec.effects,
        ["try courier#1", "try courier#2", "undo courier with none"]
    );
    assert_eq!(
        user_error::<PaymentError>(&err),
        &PaymentError::Declined(51)
    );
    assert_eq!(
        rows(err.report()),
        [row("courier", "compensated", "unknown", 2, 1)]
    );
}

#[test]
fn a_timed_out_step_in_run_blocking_is_compensated_too() {
    // run_blocking drives async steps on its own runtime, timers included.
    let saga = Saga::builder("t")
        .step(compensable("a"))
        .step(hangs("courier", ms(20)).retry(RetryPolicy::none()))
        .build()
        .unwrap();
    let (rec, err) = unless_hung_blocking(move || {
        let mut rec = Rec::default();
        let err = saga.run_blocking(&mut rec).unwrap_err();
        (rec, err)
    });
    assert_eq!(
        rec.effects,
        [
            "do a",
            "try courier#1",
            "undo courier with none",
            "undo a with a-out"
        ]
    );
    assert!(user_error::<Timeout>(&err).after == ms(20));
}

#[test]
fn panic_in_a_retry_predicate_means_no_retry_and_the_rollback_still_runs() {
    let saga = Saga::builder("p")
        .step(compensable("a"))
        .step(
            failing("b", unavailable)
                .retry(exact(3).retry_if(|_: &StepError| panic!("predicate bug"))),
        )
        .build()
        .unwrap();
    let mut rec = Rec::default();
    let err = saga.run_blocking(&mut rec).unwrap_err();

    assert_eq!(rec.effects, ["do a", "try b#1", "undo a with a-out"]);
    assert!(matches!(err, SagaError::Compensated { .. }));
    assert_eq!(user_error::<PaymentError>(&err), &PaymentError::Unavailable);
}
