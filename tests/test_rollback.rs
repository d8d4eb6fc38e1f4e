//! Rollback: a failed step is not compensated, the steps that took effect
//! (or may have) are, in reverse order; steps with nothing to undo are
//! skipped; an unknown outcome is compensated with `None` and is sticky.

mod support;

use std::collections::HashSet;

use saga_core::{
    Context, ContextError, ExecutionStatus, Saga, SagaError, Step, StepError, StepInfo,
};
use support::steps::*;

#[test]
fn failed_step_is_not_compensated_and_earlier_steps_are_undone_in_reverse() {
    let saga = Saga::builder("order")
        .step(compensable("a"))
        .step(compensable("b"))
        .step(compensable("c"))
        .step(failing("d", declined))
        .step(compensable("e"))
        .build()
        .unwrap();
    let mut rec = Rec::default();
    let err = saga.run_blocking(&mut rec).unwrap_err();

    assert_eq!(
        rec.effects,
        [
            "do a",
            "do b",
            "do c",
            "try d#1",
            "undo c with c-out",
            "undo b with b-out",
            "undo a with a-out",
        ]
    );
    let SagaError::Compensated {
        saga: name, step, ..
    } = &err
    else {
        panic!("expected compensated, got {err:?}");
    };
    assert_eq!((&**name, &**step), ("order", "d"));
    assert_eq!(
        err.to_string(),
        "saga `order` failed at step `d` and was rolled back (compensated: c, b, a)"
    );
    assert_eq!(
        user_error::<PaymentError>(&err),
        &PaymentError::Declined(51)
    );
    let report = err.report();
    assert_eq!(report.status, ExecutionStatus::Compensated);
    assert_eq!(
        rows(report),
        [
            row("a", "compensated", "applied", 1, 1),
            row("b", "compensated", "applied", 1, 1),
            row("c", "compensated", "applied", 1, 1),
            row("d", "failed", "not_applied", 1, 0),
            row("e", "pending", "not_started", 0, 0),
        ]
    );
    assert_eq!(
        report.step("d").unwrap().last_error.as_deref(),
        Some("card declined (code 51)")
    );
    assert_eq!(
        report.compensated_steps().collect::<Vec<_>>(),
        ["c", "b", "a"]
    );
}

#[test]
fn steps_with_nothing_to_undo_are_skipped_on_rollback() {
    let saga = Saga::builder("skip")
        .step(compensable("reserve"))
        .step(plain("validate"))
        .step(compensable("hold"))
        .step(failing("charge", declined))
        .build()
        .unwrap();
    let mut rec = Rec::default();
    let err = saga.run_blocking(&mut rec).unwrap_err();

    assert_eq!(
        rec.effects,
        [
            "do reserve",
            "do validate",
            "do hold",
            "try charge#1",
            "undo hold with hold-out",
            "undo reserve with reserve-out",
        ]
    );
    assert_eq!(
        rows(err.report()),
        [
            row("reserve", "compensated", "applied", 1, 1),
            row("validate", "skipped", "applied", 1, 0),
            row("hold", "compensated", "applied", 1, 1),
            row("charge", "failed", "not_applied", 1, 0),
        ]
    );
}

#[test]
fn failure_of_the_first_step_has_nothing_to_compensate() {
    let saga = Saga::builder("first")
        .step(failing("a", declined))
        .step(compensable("b"))
        .build()
        .unwrap();
    let mut rec = Rec::default();
    let err = saga.run_blocking(&mut rec).unwrap_err();

    assert_eq!(rec.effects, ["try a#1"]);
    assert!(matches!(err, SagaError::Compensated { .. }));
    assert_eq!(
        err.to_string(),
        "saga `first` failed at step `a` and was rolled back (nothing to compensate)"
    );
    assert_eq!(err.report().status, ExecutionStatus::Compensated);
}

#[test]
fn error_marked_outcome_unknown_is_compensated_with_none_output() {
    let saga = Saga::builder("unknown")
        .step(compensable("a"))
        .step(failing("b", || declined().outcome_unknown()))
        .build()
        .unwrap();
    let mut rec = Rec::default();
    let err = saga.run_blocking(&mut rec).unwrap_err();

    assert_eq!(
        rec.effects,
        ["do a", "try b#1", "undo b with none", "undo a with a-out"]
    );
    assert_eq!(
        err.to_string(),
        "saga `unknown` failed at step `b` and was rolled back (compensated: b, a)"
    );
    assert_eq!(
        user_error::<PaymentError>(&err),
        &PaymentError::Declined(51)
    );
    assert_eq!(
        rows(err.report()),
        [
            row("a", "compensated", "applied", 1, 1),
            row("b", "compensated", "unknown", 1, 1),
        ]
    );
}

#[test]
fn unknown_outcome_is_sticky_across_later_clean_failures() {
    // Attempt 1 may have taken effect; attempts 2 and 3 fail cleanly. The
    // step is still compensated, with no output to go by.
    let saga = Saga::builder("sticky")
        .step(compensable("a"))
        .step(
            Step::new("b", |r: &mut Rec, info: &StepInfo<'_>| {
                r.push(format!("try b#{}", info.attempt()));
                let error = unavailable();
                Err::<String, _>(if info.attempt() == 1 {
                    error.outcome_unknown()
                } else {
                    error
                })
            })
            .undo(undo("b"))
            .retry(exact(3)),
        )
        .build()
        .unwrap();
    let (_, options) = virtual_time();
    let mut rec = Rec::default();
    let err = saga.run_blocking_with(&mut rec, options).unwrap_err();

    assert_eq!(
        rec.effects,
        [
            "do a",
            "try b#1",
            "try b#2",
            "try b#3",
            "undo b with none",
            "undo a with a-out"
        ]
    );
    assert_eq!(
        rows(err.report()),
        [
            row("a", "compensated", "applied", 1, 1),
            row("b", "compensated", "unknown", 3, 1),
        ]
    );
}

#[test]
fn clean_failures_alone_leave_the_failed_step_uncompensated_after_retries() {
    // The counterpart of the sticky test: without an unknown attempt, the
    // retried step is never compensated.
    let saga = Saga::builder("clean")
        .step(compensable("a"))
        .step(failing("b", unavailable).retry(exact(3)))
        .build()
        .unwrap();
    let (_, options) = virtual_time();
    let mut rec = Rec::default();
    let err = saga.run_blocking_with(&mut rec, options).unwrap_err();

    assert_eq!(
        rec.effects,
        ["do a", "try b#1", "try b#2", "try b#3", "undo a with a-out"]
    );
    assert_eq!(
        rows(err.report()),
        [
            row("a", "compensated", "applied", 1, 1),
            row("b", "failed", "not_applied", 3, 0),
        ]
    );
}

#[test]
fn compensations_see_the_context_as_the_failed_attempt_left_it() {
    let saga = Saga::builder("context")
        .step(
            Step::new("a", |r: &mut Rec, _: &StepInfo<'_>| {
                r.push("do a");
                Ok::<_, StepError>(())
            })
            .undo(|r: &mut Rec, _: Option<&()>, _: &StepInfo<'_>| {
                let seen = r.effects.join("|");
                r.push(format!("undo a saw [{seen}]"));
                Ok::<_, StepError>(())
            }),
        )
        .step(Step::new("b", |r: &mut Rec, _: &StepInfo<'_>| {
            r.push("b wrote this before failing");
            Err::<(), _>(declined())
        }))
        .build()
        .unwrap();
    let mut rec = Rec::default();
    saga.run_blocking(&mut rec).unwrap_err();

    assert_eq!(
        rec.effects.last().unwrap(),
        "undo a saw [do a|b wrote this before failing]"
    );
}

#[tokio::test]
async fn async_compensations_run_in_reverse_order_with_sync_ones() {
    let saga = Saga::builder("mixed-undo")
        .step(compensable("a"))
        .step(
            Step::new_async("b", |r: &mut Rec, _: &StepInfo<'_>| {
                Box::pin(async move {
                    tokio::task::yield_now().await;
                    r.push("do b");
                    Ok::<_, StepError>("b-out".to_owned())
                })
            })
            .undo_async(|r: &mut Rec, out: Option<&String>, _: &StepInfo<'_>| {
                Box::pin(async move {
                    tokio::task::yield_now().await;
                    r.push(undo_effect("b (async)", out));
                    Ok::<_, StepError>(())
                })
            }),
        )
        .step(compensable("c"))
        .step(failing("d", declined))
        .build()
        .unwrap();
    let mut rec = Rec::default();
    let err = saga.run(&mut rec).await.unwrap_err();

    assert_eq!(
        rec.effects,
        [
            "do a",
            "do b",
            "do c",
            "try d#1",
            "undo c with c-out",
            "undo b (async) with b-out",
            "undo a with a-out",
        ]
    );
    assert_eq!(err.report().status, ExecutionStatus::Compensated);
}

#[test]
fn the_output_of_each_step_reaches_its_own_compensation() {
    // Two steps with different output types: each compensation receives
    // its own step's value.
    #[derive(Default)]
    struct Shop {
        log: Vec<String>,
    }
    let saga = Saga::builder("outputs")
        .step(
            Step::new("reserve", |_: &mut Shop, _: &StepInfo<'_>| {
                Ok::<_, StepError>(vec![3_u32, 4])
            })
            .undo(|s: &mut Shop, items: Option<&Vec<u32>>, _: &StepInfo<'_>| {
                s.log.push(format!("release {items:?}"));
                Ok::<_, StepError>(())
            }),
        )
        .step(
            Step::new("charge", |_: &mut Shop, _: &StepInfo<'_>| {
                Ok::<_, StepError>(("ch_1", 990_u64))
            })
            .undo(
                |s: &mut Shop, charge: Option<&(&str, u64)>, _: &StepInfo<'_>| {
                    s.log.push(format!("refund {charge:?}"));
                    Ok::<_, StepError>(())
                },
            ),
        )
        .step(Step::new("ship", |_: &mut Shop, _: &StepInfo<'_>| {
            Err::<(), _>("no courier")
        }))
        .build()
        .unwrap();
    let mut shop = Shop::default();
    let err = saga.run_blocking(&mut shop).unwrap_err();

    assert_eq!(
        shop.log,
        [r#"refund Some(("ch_1", 990))"#, "release Some([3, 4])"]
    );
    assert_eq!(
        std::error::Error::source(&err).unwrap().to_string(),
        "no courier"
    );
}

/// Every way a step can fail goes through one channel: the rollback, then
/// `Err`; no kind of failure is swallowed into a reported success.
#[test]
fn every_way_a_step_fails_rolls_back_through_one_channel() {
    type Fails = Box<dyn Fn() -> Step<Rec, ()>>;
    let ways: Vec<(&str, Fails)> = vec![
        (
            "a plain step error",
            Box::new(|| {
                Step::new("b", |_: &mut Rec, _: &StepInfo<'_>| {
                    Err::<(), _>(StepError::new("no"))
                })
            }),
        ),
        (
            "a retryable error, retries exhausted",
            Box::new(|| {
                Step::new("b", |_: &mut Rec, _: &StepInfo<'_>| {
                    Err::<(), _>(unavailable())
                })
                .retry(exact(2))
            }),
        ),
        (
            "an error of unknown outcome",
            Box::new(|| {
                Step::new("b", |_: &mut Rec, _: &StepInfo<'_>| {
                    Err::<(), _>(declined().outcome_unknown())
                })
            }),
        ),
        (
            "a user enum",
            Box::new(|| {
                Step::new("b", |_: &mut Rec, _: &StepInfo<'_>| {
                    Err::<(), _>(PaymentError::Declined(1))
                })
            }),
        ),
        (
            "a context lookup",
            Box::new(|| {
                Step::new("b", |_: &mut Rec, _: &StepInfo<'_>| {
                    Context::new().get::<u8>("k")?;
                    Ok::<_, StepError>(())
                })
            }),
        ),
        (
            "a panic",
            Box::new(|| {
                Step::new(
                    "b",
                    |_: &mut Rec, _: &StepInfo<'_>| -> Result<(), StepError> { panic!("boom") },
                )
            }),
        ),
    ];
    for (way, fails) in ways {
        let saga = Saga::builder("channel")
            .step(compensable("a"))
            .step(fails())
            .step(compensable("c"))
            .build()
            .unwrap();
        let (_, options) = virtual_time();
        let mut rec = Rec::default();
        let result = saga.run_blocking_with(&mut rec, options);
        let err = result.expect_err(way);
        assert!(matches!(err, SagaError::Compensated { .. }), "{way}: {err}");
        assert_eq!(rec.effects, ["do a", "undo a with a-out"], "{way}");
        assert_eq!(err.report().status, ExecutionStatus::Compensated, "{way}");
    }
}

/// Each compensation takes effect once: the failed step is never
/// compensated, an unknown one once, and a compensation retried after a
/// lost answer is absorbed by its idempotency key.
#[test]
fn each_compensation_takes_effect_once() {
    #[derive(Default)]
    struct Bank {
        /// Every call of a compensation, by step.
        calls: Vec<String>,
        /// Refunds applied, by idempotency key: the effect that must happen
        /// once.
        refunded: HashSet<String>,
    }
    let refund = |name: &'static str| {
        move |b: &mut Bank, _: Option<&()>, info: &StepInfo<'_>| {
            b.calls.push(name.to_owned());
            let first = b.refunded.insert(info.idempotency_key());
            // The first refund of "a" takes effect but its answer is lost:
            // the engine calls again, and the key absorbs the repeat.
            if name == "a" && first {
                return Err(StepError::new("answer lost"));
            }
            Ok::<_, StepError>(())
        }
    };
    let saga = Saga::builder("twice")
        .step(
            Step::new("a", |_: &mut Bank, _: &StepInfo<'_>| Ok::<_, StepError>(()))
                .undo(refund("a")),
        )
        .step(
            Step::new("b", |_: &mut Bank, _: &StepInfo<'_>| {
                Err::<(), _>(StepError::new("lost").outcome_unknown())
            })
            .undo(refund("b")),
        )
        .undo_retry(exact_any(3))
        .build()
        .unwrap();
    let (_, options) = virtual_time();
    let mut bank = Bank::default();
    let err = saga
        .run_blocking_with(&mut bank, options.with_execution_id("e"))
        .unwrap_err();

    // "a" was called twice (the re-invocation happened), b once.
    assert_eq!(bank.calls, ["b", "a", "a"]);
    // Each refund took effect once.
    assert_eq!(
        bank.refunded,
        HashSet::from(["e/a".to_owned(), "e/b".to_owned()])
    );
    assert_eq!(
        rows(err.report())[0],
        row("a", "compensated", "applied", 1, 2)
    );

    // And a step that failed cleanly is not compensated at all.
    let saga = Saga::builder("twice")
        .step(compensable("a"))
        .step(failing("b", declined))
        .build()
        .unwrap();
    let mut rec = Rec::default();
    saga.run_blocking(&mut rec).unwrap_err();
    assert_eq!(
        rec.effects.iter().filter(|e| e.starts_with("undo")).count(),
        1
    );
    assert!(!rec.effects.iter().any(|e| e.starts_with("undo b")));
}

/// A failing step without a compensation rolls the earlier steps back.
#[test]
fn a_failing_step_without_a_compensation_rolls_back_the_rest() {
    let saga = Saga::builder("no-undo")
        .step(compensable("a"))
        .step(compensable("b"))
        .step(Step::new("c", |r: &mut Rec, _: &StepInfo<'_>| {
            r.push("try c");
            Err::<(), _>(declined())
        }))
        .build()
        .unwrap();
    let mut rec = Rec::default();
    let err = saga.run_blocking(&mut rec).unwrap_err();

    assert_eq!(
        rec.effects,
        [
            "do a",
            "do b",
            "try c",
            "undo b with b-out",
            "undo a with a-out"
        ]
    );
    assert!(matches!(err, SagaError::Compensated { ref step, .. } if &**step == "c"));
}

/// Any error type rolls back, and comes back to the caller as itself.
#[test]
fn any_error_type_rolls_back_and_comes_back_as_itself() {
    fn run(fail: impl Fn() -> StepError + Send + Sync + 'static) -> (Vec<String>, SagaError) {
        let saga = Saga::builder("types")
            .step(compensable("a"))
            .step(failing("b", fail))
            .build()
            .unwrap();
        let mut rec = Rec::default();
        let err = saga.run_blocking(&mut rec).unwrap_err();
        (rec.effects, err)
    }
    let rolled_back = ["do a", "try b#1", "undo a with a-out"];

    let (effects, err) = run(|| std::io::Error::other("disk full").into());
    assert_eq!(effects, rolled_back);
    assert_eq!(user_error::<std::io::Error>(&err).to_string(), "disk full");

    let (effects, err) = run(|| Handmade { code: 7 }.into());
    assert_eq!(effects, rolled_back);
    assert_eq!(user_error::<Handmade>(&err).code, 7);

    let (effects, err) = run(|| "a string slice".into());
    assert_eq!(effects, rolled_back);
    assert_eq!(
        std::error::Error::source(&err).unwrap().to_string(),
        "a string slice"
    );

    let (effects, err) = run(|| format!("a string {}", 1).into());
    assert_eq!(effects, rolled_back);
    assert_eq!(
        std::error::Error::source(&err).unwrap().to_string(),
        "a string 1"
    );

    let (effects, err) = run(|| {
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(Handmade { code: 9 });
        boxed.into()
    });
    assert_eq!(effects, rolled_back);
    assert_eq!(user_error::<Handmade>(&err).code, 9);

    let (effects, err) = run(|| StepError::new(ContextError::Missing { key: "k".into() }));
    assert_eq!(effects, rolled_back);
    assert!(matches!(
        user_error::<ContextError>(&err),
        ContextError::Missing { .. }
    ));
}

/// Braces in step names are text: a failure still rolls back, and the
/// names print as written.
#[test]
fn braces_in_step_names_are_text_and_the_rollback_runs() {
    let saga = Saga::builder("{saga} {}")
        .step(compensable("{0}"))
        .step(failing("{b} {{", || StepError::new("bad {x} {}")))
        .build()
        .unwrap();
    let mut rec = Rec::default();
    let err = saga.run_blocking(&mut rec).unwrap_err();

    assert_eq!(
        rec.effects,
        ["do {0}", "try {b} {{#1", "undo {0} with {0}-out"]
    );
    assert_eq!(
        err.to_string(),
        "saga `{saga} {}` failed at step `{b} {{` and was rolled back (compensated: {0})"
    );
    assert_eq!(
        std::error::Error::source(&err).unwrap().to_string(),
        "bad {x} {}"
    );
    assert!(saga.to_mermaid().contains(r#"s1["{b} {{"]"#));
}
