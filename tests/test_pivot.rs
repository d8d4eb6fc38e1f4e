//! The pivot, the point of no return: a clean failure rolls back, an
//! unknown outcome is retried then stuck; after it nothing rolls back, a
//! failure is retried by policy and then the run is stuck, forward.

mod support;

use saga_core::{
    ExecutionStatus, Failure, RetryPolicy, Saga, SagaError, Step, StepError, StepInfo, StepKind,
    StuckPhase,
};
use support::steps::*;

fn ship_order(pivot: Step<Rec, String>, after: Step<Rec, String>) -> Saga<Rec> {
    Saga::builder("ship")
        .step(compensable("reserve"))
        .pivot(pivot)
        .step(after)
        .step(compensable_free("notify"))
        .build()
        .unwrap()
}

/// A step after the pivot: no compensation.
fn compensable_free(name: &'static str) -> Step<Rec, String> {
    Step::new(name, move |r: &mut Rec, _: &StepInfo<'_>| {
        r.push(format!("do {name}"));
        Ok::<_, StepError>(String::new())
    })
}

fn pivot_step(
    failures: u32,
    error: impl Fn() -> StepError + Send + Sync + 'static,
) -> Step<Rec, String> {
    Step::new("charge", move |r: &mut Rec, info: &StepInfo<'_>| {
        r.push(format!(
            "charge#{} key={}",
            info.attempt(),
            info.idempotency_key()
        ));
        if info.attempt() <= failures {
            Err(error())
        } else {
            Ok(String::new())
        }
    })
}

#[test]
fn clean_failure_of_the_pivot_rolls_back_the_steps_before_it() {
    let saga = ship_order(pivot_step(1, declined), compensable_free("ship"));
    let options = saga_core::RunOptions::new().with_execution_id("x0");
    let mut rec = Rec::default();
    let err = saga.run_blocking_with(&mut rec, options).unwrap_err();

    assert_eq!(
        rec.effects,
        [
            "do reserve",
            "charge#1 key=x0/charge",
            "undo reserve with reserve-out"
        ]
    );
    assert!(matches!(err, SagaError::Compensated { ref step, .. } if &**step == "charge"));
    assert_eq!(
        rows(err.report()),
        [
            row("reserve", "compensated", "applied", 1, 1),
            row("charge", "failed", "not_applied", 1, 0),
            row("ship", "pending", "not_started", 0, 0),
            row("notify", "pending", "not_started", 0, 0),
        ]
    );
}

#[test]
fn unknown_outcome_of_the_pivot_is_retried_with_the_same_key_then_stuck_forward() {
    // The pivot's predicate says no retry: the pivot retries an unknown
    // outcome anyway, since giving up means stuck.
    let saga = ship_order(
        pivot_step(u32::MAX, || {
            StepError::new(PaymentError::Declined(51)).outcome_unknown()
        })
        .retry(exact(3).retry_if(|_| false)),
        compensable_free("ship"),
    );
    let (clock, options) = virtual_time();
    let mut rec = Rec::default();
    let err = saga
        .run_blocking_with(&mut rec, options.with_execution_id("x1"))
        .unwrap_err();

    assert_eq!(
        rec.effects,
        [
            "do reserve",
            "charge#1 key=x1/charge",
            "charge#2 key=x1/charge",
            "charge#3 key=x1/charge",
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
    assert_eq!(&**step, "charge");
    assert_eq!(*phase, StuckPhase::Forward);
    assert_eq!(
        remaining.iter().map(|s| &**s).collect::<Vec<_>>(),
        ["charge", "ship", "notify"]
    );
    assert_eq!(
        failures,
        &[Failure {
            step: "charge".into(),
            compensation: false,
            attempt: 3,
            message: "card declined (code 51)".into(),
            outcome_unknown: true,
            permanent: false,
        }]
    );
    assert_eq!(
        err.to_string(),
        "saga `ship` is stuck at the action of step `charge`, whose outcome is unknown (an attempt may have taken effect): steps still to run: charge, ship, notify"
    );
    assert_eq!(
        user_error::<PaymentError>(&err),
        &PaymentError::Declined(51)
    );
    assert_eq!(err.report().status, ExecutionStatus::Stuck);
    assert!(err.is_stuck());
    // Nothing was rolled back: "reserve" still holds.
    assert_eq!(
        rows(err.report()),
        [
            row("reserve", "succeeded", "applied", 1, 0),
            row("charge", "failed", "unknown", 3, 0),
            row("ship", "pending", "not_started", 0, 0),
            row("notify", "pending", "not_started", 0, 0),
        ]
    );
}

#[test]
fn unknown_outcome_of_the_pivot_with_one_attempt_is_stuck_at_once() {
    let saga = ship_order(
        pivot_step(u32::MAX, || declined().outcome_unknown()),
        compensable_free("ship"),
    );
    let mut rec = Rec::default();
    let err = saga.run_blocking(&mut rec).unwrap_err();
    assert!(matches!(
        err,
        SagaError::Stuck {
            phase: StuckPhase::Forward,
            ..
        }
    ));
    assert_eq!(rec.effects.len(), 2);
    assert_eq!(err.report().step("charge").unwrap().attempts, 1);
}

/// A pivot whose first attempt may have taken effect and whose retry then
/// fails for good is stuck, and its message says the outcome is unknown:
/// the last error alone ("declined") reads as if nothing was charged.
#[test]
fn unknown_then_permanent_failure_of_the_pivot_says_the_outcome_is_unknown() {
    let saga = ship_order(
        Step::new("charge", |r: &mut Rec, info: &StepInfo<'_>| {
            r.push(format!("charge#{}", info.attempt()));
            if info.attempt() == 1 {
                Err::<String, _>(unavailable().outcome_unknown())
            } else {
                Err(declined())
            }
        })
        .retry(exact(3)),
        compensable_free("ship"),
    );
    let (_, options) = virtual_time();
    let mut rec = Rec::default();
    let err = saga.run_blocking_with(&mut rec, options).unwrap_err();
    assert_eq!(rec.effects, ["do reserve", "charge#1", "charge#2"]);
    assert_eq!(
        err.to_string(),
        "saga `ship` is stuck at the action of step `charge`, whose outcome is unknown (an attempt may have taken effect): steps still to run: charge, ship, notify"
    );
    assert_eq!(
        rows(err.report()),
        [
            row("reserve", "succeeded", "applied", 1, 0),
            row("charge", "failed", "unknown", 2, 0),
            row("ship", "pending", "not_started", 0, 0),
            row("notify", "pending", "not_started", 0, 0),
        ]
    );
}

#[test]
fn unknown_outcome_of_the_pivot_then_success_goes_forward() {
    let saga = ship_order(
        pivot_step(2, || unavailable().outcome_unknown()).retry(exact(3)),
        compensable_free("ship"),
    );
    let (_, options) = virtual_time();
    let mut rec = Rec::default();
    let report = saga
        .run_blocking_with(&mut rec, options.with_execution_id("x2"))
        .unwrap();

    assert_eq!(
        rec.effects,
        [
            "do reserve",
            "charge#1 key=x2/charge",
            "charge#2 key=x2/charge",
            "charge#3 key=x2/charge",
            "do ship",
            "do notify",
        ]
    );
    assert_eq!(report.status, ExecutionStatus::Completed);
}

#[test]
fn after_the_pivot_a_retryable_failure_is_retried_and_can_succeed() {
    let saga = ship_order(
        pivot_step(0, declined),
        Step::new("ship", |r: &mut Rec, info: &StepInfo<'_>| {
            r.push(format!("ship#{}", info.attempt()));
            if info.attempt() < 3 {
                Err(unavailable())
            } else {
                Ok(String::new())
            }
        })
        .retry(exact(4)),
    );
    let (clock, options) = virtual_time();
    let mut rec = Rec::default();
    let report = saga
        .run_blocking_with(&mut rec, options.with_execution_id("x3"))
        .unwrap();

    assert_eq!(
        rec.effects,
        [
            "do reserve",
            "charge#1 key=x3/charge",
            "ship#1",
            "ship#2",
            "ship#3",
            "do notify",
        ]
    );
    assert_eq!(clock.sleeps(), [ms(100), ms(200)]);
    assert_eq!(
        report.steps.iter().map(|s| s.kind).collect::<Vec<_>>(),
        [
            StepKind::Compensable,
            StepKind::Pivot,
            StepKind::Retriable,
            StepKind::Retriable
        ]
    );
}

#[test]
fn after_the_pivot_exhausted_retries_leave_the_run_stuck_forward_with_nothing_undone() {
    let saga = ship_order(
        pivot_step(0, declined),
        Step::new("ship", |r: &mut Rec, info: &StepInfo<'_>| {
            r.push(format!("ship#{}", info.attempt()));
            Err::<String, _>(unavailable())
        })
        .retry(exact(3)),
    );
    let (clock, options) = virtual_time();
    let mut rec = Rec::default();
    let err = saga
        .run_blocking_with(&mut rec, options.with_execution_id("x4"))
        .unwrap_err();

    assert_eq!(
        rec.effects,
        [
            "do reserve",
            "charge#1 key=x4/charge",
            "ship#1",
            "ship#2",
            "ship#3"
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
    assert_eq!((&**step, *phase), ("ship", StuckPhase::Forward));
    assert_eq!(
        remaining.iter().map(|s| &**s).collect::<Vec<_>>(),
        ["ship", "notify"]
    );
    assert_eq!(failures.len(), 1);
    assert_eq!((failures[0].attempt, failures[0].compensation), (3, false));
    assert_eq!(
        err.to_string(),
        "saga `ship` is stuck at the action of step `ship`: steps still to run: ship, notify"
    );
    assert_eq!(user_error::<PaymentError>(&err), &PaymentError::Unavailable);
    assert_eq!(
        rows(err.report()),
        [
            row("reserve", "succeeded", "applied", 1, 0),
            row("charge", "succeeded", "applied", 1, 0),
            row("ship", "failed", "not_applied", 3, 0),
            row("notify", "pending", "not_started", 0, 0),
        ]
    );
}

#[test]
fn after_the_pivot_a_non_retryable_failure_is_stuck_without_retry() {
    let saga = ship_order(
        pivot_step(0, declined),
        Step::new("ship", |r: &mut Rec, info: &StepInfo<'_>| {
            r.push(format!("ship#{}", info.attempt()));
            Err::<String, _>(declined())
        })
        .retry(exact(5)),
    );
    let (clock, options) = virtual_time();
    let mut rec = Rec::default();
    let err = saga.run_blocking_with(&mut rec, options).unwrap_err();

    assert_eq!(rec.effects.last().unwrap(), "ship#1");
    assert_eq!(clock.sleeps(), []);
    assert!(matches!(
        err,
        SagaError::Stuck {
            phase: StuckPhase::Forward,
            ..
        }
    ));
    assert_eq!(err.report().step("ship").unwrap().attempts, 1);
}

#[test]
fn after_the_pivot_a_panic_is_stuck_not_rolled_back() {
    let saga = ship_order(
        pivot_step(0, declined),
        Step::new(
            "ship",
            |_: &mut Rec, _: &StepInfo<'_>| -> Result<String, StepError> {
                panic!("courier api exploded")
            },
        )
        // One attempt: without a policy a step after the pivot is retried
        // forever.
        .retry(RetryPolicy::none()),
    );
    let mut rec = Rec::default();
    let err = saga.run_blocking(&mut rec).unwrap_err();

    assert!(err.is_stuck());
    assert!(!rec.effects.iter().any(|e| e.starts_with("undo")));
    assert_eq!(
        std::error::Error::source(&err).unwrap().to_string(),
        "panicked: courier api exploded"
    );
    assert_eq!(
        rows(err.report())[2],
        row("ship", "failed", "unknown", 1, 0)
    );
}

#[test]
fn a_saga_whose_first_step_is_the_pivot_is_stuck_when_the_next_fails() {
    let saga = Saga::builder("pivot-first")
        .pivot(pivot_step(0, declined))
        .step(Step::new("after", |_: &mut Rec, _: &StepInfo<'_>| {
            Err::<(), _>(StepError::new("nope").permanent())
        }))
        .build()
        .unwrap();
    let mut rec = Rec::default();
    let err = saga.run_blocking(&mut rec).unwrap_err();
    assert_eq!(
        err.to_string(),
        "saga `pivot-first` is stuck at the action of step `after`: steps still to run: after"
    );
}
