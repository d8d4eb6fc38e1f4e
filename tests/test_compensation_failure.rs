//! A failing compensation: retried by its policy, then the run ends stuck;
//! by default the rollback halts there (the remaining compensations are
//! listed and not run), or continues when asked.

mod support;

use saga_core::{
    ExecutionStatus, Failure, RetryPolicy, Saga, SagaError, Step, StepError, StepInfo, StuckPhase,
    default_undo_retry,
};
use support::steps::*;

/// A compensable step whose compensation fails on its first `failures`
/// attempts (recording `undo {name} failed#{attempt}`), then succeeds.
fn undo_fails(name: &'static str, failures: u32) -> Step<Rec, String> {
    Step::new(name, move |r: &mut Rec, _: &StepInfo<'_>| {
        r.push(format!("do {name}"));
        Ok::<_, StepError>(format!("{name}-out"))
    })
    .undo(
        move |r: &mut Rec, out: Option<&String>, info: &StepInfo<'_>| {
            if info.attempt() <= failures {
                r.push(format!("undo {name} failed#{}", info.attempt()));
                return Err(StepError::new(PaymentError::Unavailable));
            }
            r.push(undo_effect(name, out));
            Ok(())
        },
    )
}

fn names(remaining: &[saga_core::Name]) -> Vec<&str> {
    remaining.iter().map(|s| &**s).collect()
}

#[test]
fn failing_compensation_is_retried_then_halts_the_rollback_stuck() {
    let saga = Saga::builder("refund")
        .step(compensable("a"))
        .step(compensable("b"))
        .step(undo_fails("c", u32::MAX))
        .step(failing("d", declined))
        .undo_retry(exact_any(3))
        .build()
        .unwrap();
    let (clock, options) = virtual_time();
    let mut rec = Rec::default();
    let err = saga.run_blocking_with(&mut rec, options).unwrap_err();

    // b and a are left for an operator, in the order they would run.
    assert_eq!(
        rec.effects,
        [
            "do a",
            "do b",
            "do c",
            "try d#1",
            "undo c failed#1",
            "undo c failed#2",
            "undo c failed#3",
        ]
    );
    assert_eq!(clock.sleeps(), [ms(100), ms(200)]);
    let SagaError::Stuck {
        step,
        phase,
        remaining,
        failures,
        ..
    } = &err
    else {
        panic!("expected stuck, got {err:?}");
    };
    assert_eq!((&**step, *phase), ("c", StuckPhase::Rollback));
    assert_eq!(names(remaining), ["c", "b", "a"]);
    assert_eq!(
        failures,
        &[
            Failure {
                step: "d".into(),
                compensation: false,
                attempt: 1,
                message: "card declined (code 51)".into(),
                outcome_unknown: false,
                permanent: true,
            },
            Failure {
                step: "c".into(),
                compensation: true,
                attempt: 3,
                message: "payment gateway unavailable".into(),
                outcome_unknown: false,
                permanent: false,
            },
        ]
    );
    assert_eq!(
        err.to_string(),
        "saga `refund` is stuck at the compensation of step `c`: compensations still to run: c, b, a"
    );
    // The source is the compensation's error, the user's own type.
    assert_eq!(user_error::<PaymentError>(&err), &PaymentError::Unavailable);
    let report = err.report();
    assert_eq!(report.status, ExecutionStatus::Stuck);
    assert_eq!(
        rows(report),
        [
            row("a", "succeeded", "applied", 1, 0),
            row("b", "succeeded", "applied", 1, 0),
            row("c", "compensation_failed", "applied", 1, 3),
            row("d", "failed", "not_applied", 1, 0),
        ]
    );
    assert_eq!(
        report.step("c").unwrap().last_error.as_deref(),
        Some("payment gateway unavailable")
    );
}

#[test]
fn continue_on_compensation_failure_runs_the_remaining_compensations() {
    let saga = Saga::builder("refund")
        .step(compensable("a"))
        .step(compensable("b"))
        .step(undo_fails("c", u32::MAX))
        .step(failing("d", declined))
        .undo_retry(exact_any(2))
        .continue_on_compensation_failure(true)
        .build()
        .unwrap();
    let (_, options) = virtual_time();
    let mut rec = Rec::default();
    let err = saga.run_blocking_with(&mut rec, options).unwrap_err();

    assert_eq!(
        rec.effects,
        [
            "do a",
            "do b",
            "do c",
            "try d#1",
            "undo c failed#1",
            "undo c failed#2",
            "undo b with b-out",
            "undo a with a-out",
        ]
    );
    let SagaError::Stuck {
        step,
        phase,
        remaining,
        ..
    } = &err
    else {
        panic!("expected stuck, got {err:?}");
    };
    assert_eq!((&**step, *phase), ("c", StuckPhase::Rollback));
    assert_eq!(names(remaining), ["c"]);
    assert_eq!(
        err.to_string(),
        "saga `refund` is stuck at the compensation of step `c`: compensations still to run: c"
    );
    assert_eq!(
        rows(err.report()),
        [
            row("a", "compensated", "applied", 1, 1),
            row("b", "compensated", "applied", 1, 1),
            row("c", "compensation_failed", "applied", 1, 2),
            row("d", "failed", "not_applied", 1, 0),
        ]
    );
}

#[test]
fn with_continue_every_failed_compensation_is_listed_in_order() {
    let saga = Saga::builder("refund")
        .step(undo_fails("a", u32::MAX))
        .step(compensable("b"))
        .step(undo_fails("c", u32::MAX))
        .step(failing("d", declined))
        .undo_retry(RetryPolicy::none())
        .continue_on_compensation_failure(true)
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
            "undo c failed#1",
            "undo b with b-out",
            "undo a failed#1",
        ]
    );
    let SagaError::Stuck {
        step,
        remaining,
        failures,
        ..
    } = &err
    else {
        panic!("expected stuck, got {err:?}");
    };
    // The last failure is the one reported; every one is in `failures`.
    assert_eq!(&**step, "a");
    assert_eq!(names(remaining), ["c", "a"]);
    assert_eq!(
        failures
            .iter()
            .map(|f| (&*f.step, f.compensation))
            .collect::<Vec<_>>(),
        [("d", false), ("c", true), ("a", true)]
    );
}

#[test]
fn compensation_that_succeeds_on_retry_completes_the_rollback() {
    let saga = Saga::builder("refund")
        .step(compensable("a"))
        .step(undo_fails("b", 2))
        .step(failing("c", declined))
        .undo_retry(exact_any(3))
        .build()
        .unwrap();
    let (clock, options) = virtual_time();
    let mut rec = Rec::default();
    let err = saga.run_blocking_with(&mut rec, options).unwrap_err();

    assert_eq!(
        rec.effects,
        [
            "do a",
            "do b",
            "try c#1",
            "undo b failed#1",
            "undo b failed#2",
            "undo b with b-out",
            "undo a with a-out",
        ]
    );
    assert_eq!(clock.sleeps(), [ms(100), ms(200)]);
    assert!(matches!(err, SagaError::Compensated { .. }));
    assert_eq!(
        rows(err.report()),
        [
            row("a", "compensated", "applied", 1, 1),
            row("b", "compensated", "applied", 1, 3),
            row("c", "failed", "not_applied", 1, 0),
        ]
    );
}

#[test]
fn a_step_compensation_policy_overrides_the_sagas() {
    let saga = Saga::builder("refund")
        .step(undo_fails("a", 3).undo_retry(exact_any(4)))
        .step(undo_fails("b", 1))
        .step(failing("c", declined))
        .undo_retry(RetryPolicy::none())
        .build()
        .unwrap();
    let (_, options) = virtual_time();
    let mut rec = Rec::default();
    let err = saga.run_blocking_with(&mut rec, options).unwrap_err();

    // b uses the saga's policy (one attempt) and halts the rollback; a
    // would have been retried by its own policy, but is never reached.
    assert_eq!(rec.effects, ["do a", "do b", "try c#1", "undo b failed#1"]);
    assert!(err.is_stuck());

    let saga = Saga::builder("refund")
        .step(undo_fails("a", 3).undo_retry(exact_any(4)))
        .step(failing("c", declined))
        .undo_retry(RetryPolicy::none())
        .build()
        .unwrap();
    let (clock, options) = virtual_time();
    let mut rec = Rec::default();
    let err = saga.run_blocking_with(&mut rec, options).unwrap_err();
    assert!(matches!(err, SagaError::Compensated { .. }));
    assert_eq!(err.report().step("a").unwrap().compensation_attempts, 4);
    assert_eq!(clock.sleeps(), [ms(100), ms(200), ms(400)]);
}

#[test]
fn compensations_are_retried_by_default() {
    let policy = default_undo_retry();
    assert_eq!(policy.max_attempts(), 3);
    // Every error but a permanent one.
    assert!(policy.retries(&unavailable()));
    assert!(!policy.retries(&declined()));

    let saga = Saga::builder("refund")
        .step(undo_fails("a", 2))
        .step(failing("b", declined))
        .build()
        .unwrap();
    let (clock, options) = virtual_time();
    let mut rec = Rec::default();
    let err = saga.run_blocking_with(&mut rec, options).unwrap_err();

    assert!(matches!(err, SagaError::Compensated { .. }));
    assert_eq!(err.report().step("a").unwrap().compensation_attempts, 3);
    // 100 ms then 200 ms, each less up to 20 % jitter.
    let sleeps = clock.sleeps();
    assert_eq!(sleeps.len(), 2);
    assert!(sleeps[0] <= ms(100) && sleeps[0] >= ms(80), "{sleeps:?}");
    assert!(sleeps[1] <= ms(200) && sleeps[1] >= ms(160), "{sleeps:?}");
}

#[test]
fn unknown_outcome_step_whose_compensation_fails_is_stuck_in_rollback() {
    let saga = Saga::builder("refund")
        .step(compensable("a"))
        .step(
            Step::new("b", |r: &mut Rec, _: &StepInfo<'_>| {
                r.push("try b#1");
                Err::<(), _>(declined().outcome_unknown())
            })
            .undo(|r: &mut Rec, out: Option<&()>, _: &StepInfo<'_>| {
                r.push(format!("undo b saw {out:?}"));
                Err::<(), _>("cannot tell whether b happened")
            }),
        )
        .undo_retry(RetryPolicy::none())
        .build()
        .unwrap();
    let mut rec = Rec::default();
    let err = saga.run_blocking(&mut rec).unwrap_err();

    assert_eq!(rec.effects, ["do a", "try b#1", "undo b saw None"]);
    let SagaError::Stuck {
        remaining,
        failures,
        ..
    } = &err
    else {
        panic!("expected stuck, got {err:?}");
    };
    assert_eq!(names(remaining), ["b", "a"]);
    assert!(failures[0].outcome_unknown);
    assert_eq!(
        std::error::Error::source(&err).unwrap().to_string(),
        "cannot tell whether b happened"
    );
}

/// A compensation that fails for good reaches the caller: a `Stuck` error
/// carrying the compensation's own error and what remains; with
/// `continue_on_compensation_failure` the rest of the rollback runs.
#[test]
fn a_failing_compensation_reaches_the_caller() {
    let build = |continue_on_failure: bool| {
        Saga::builder("undo-fails")
            .step(compensable("a"))
            .step(
                compensable("b").undo(|r: &mut Rec, _: Option<&String>, _: &StepInfo<'_>| {
                    r.push("undo b failed");
                    Err::<(), _>(Handmade { code: 503 })
                }),
            )
            .step(failing("c", declined))
            .undo_retry(RetryPolicy::none())
            .continue_on_compensation_failure(continue_on_failure)
            .build()
            .unwrap()
    };

    let mut rec = Rec::default();
    let err = build(false).run_blocking(&mut rec).unwrap_err();
    assert_eq!(rec.effects, ["do a", "do b", "try c#1", "undo b failed"]);
    let SagaError::Stuck {
        phase, remaining, ..
    } = &err
    else {
        panic!("expected stuck, got {err:?}");
    };
    assert_eq!(*phase, StuckPhase::Rollback);
    assert_eq!(
        remaining.iter().map(|s| &**s).collect::<Vec<_>>(),
        ["b", "a"]
    );
    assert_eq!(user_error::<Handmade>(&err).code, 503);

    let mut rec = Rec::default();
    let err = build(true).run_blocking(&mut rec).unwrap_err();
    assert_eq!(
        rec.effects,
        [
            "do a",
            "do b",
            "try c#1",
            "undo b failed",
            "undo a with a-out"
        ]
    );
    assert!(err.is_stuck());
    assert_eq!(user_error::<Handmade>(&err).code, 503);
}
