//! Retries: which errors are retried, per-step counters, exponential
//! backoff with a cap and jitter, all timed by a virtual clock (no test
//! here sleeps).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga_core::{
    ExecutionStatus, RetryOn, RetryPolicy, Saga, SagaError, Step, StepError, StepInfo,
};
use support::steps::*;

#[test]
fn retryable_error_is_retried_with_exponential_backoff_until_success() {
    let saga = Saga::builder("retry")
        .step(compensable("a"))
        .step(flaky("b", 3, unavailable).retry(exact(5)))
        .build()
        .unwrap();
    let (clock, options) = virtual_time();
    let mut rec = Rec::default();
    let report = saga.run_blocking_with(&mut rec, options).unwrap();

    assert_eq!(
        rec.effects,
        ["do a", "try b#1", "try b#2", "try b#3", "do b#4"]
    );
    assert_eq!(clock.sleeps(), [ms(100), ms(200), ms(400)]);
    assert_eq!(report.status, ExecutionStatus::Completed);
    assert_eq!(
        rows(&report),
        [
            row("a", "succeeded", "applied", 1, 0),
            row("b", "succeeded", "applied", 4, 0),
        ]
    );
    // The step's time includes its backoff, read from the same clock.
    assert_eq!(report.step("b").unwrap().duration, ms(700));
}

#[tokio::test]
async fn async_runs_sleep_through_the_injected_clock_too() {
    let saga = Saga::builder("retry-async")
        .step(
            Step::new_async("b", |r: &mut Rec, info: &StepInfo<'_>| {
                let attempt = info.attempt();
                Box::pin(async move {
                    r.push(format!("b#{attempt}"));
                    if attempt < 3 {
                        Err(unavailable())
                    } else {
                        Ok(())
                    }
                })
            })
            .retry(exact(3)),
        )
        .build()
        .unwrap();
    let (clock, options) = virtual_time();
    let mut rec = Rec::default();
    saga.run_with(&mut rec, options).await.unwrap();

    assert_eq!(rec.effects, ["b#1", "b#2", "b#3"]);
    assert_eq!(clock.sleeps(), [ms(100), ms(200)]);
}

#[test]
fn unmarked_error_is_not_retried_by_the_default_predicate() {
    let saga = Saga::builder("marked")
        .step(failing("b", declined).retry(exact(5)))
        .build()
        .unwrap();
    let (clock, options) = virtual_time();
    let mut rec = Rec::default();
    let err = saga.run_blocking_with(&mut rec, options).unwrap_err();

    assert_eq!(rec.effects, ["try b#1"]);
    assert_eq!(clock.sleeps(), []);
    assert_eq!(
        rows(err.report()),
        [row("b", "failed", "not_applied", 1, 0)]
    );
}

#[test]
fn retry_on_any_retries_errors_not_marked_permanent() {
    let saga = Saga::builder("any")
        .step(flaky("b", 2, unavailable).retry(exact_any(3)))
        .build()
        .unwrap();
    let (clock, options) = virtual_time();
    let mut rec = Rec::default();
    saga.run_blocking_with(&mut rec, options).unwrap();

    assert_eq!(rec.effects, ["try b#1", "try b#2", "do b#3"]);
    assert_eq!(clock.sleeps(), [ms(100), ms(200)]);
}

#[test]
fn retry_if_predicate_chooses_by_the_users_error_type() {
    // Retry an unavailable gateway, never a declined card.
    let only_unavailable = || {
        exact(5).retry_if(|e: &StepError| {
            e.downcast_ref::<PaymentError>() == Some(&PaymentError::Unavailable)
        })
    };
    let saga = Saga::builder("predicate")
        .step(
            Step::new("charge", |r: &mut Rec, info: &StepInfo<'_>| {
                r.push(format!("try charge#{}", info.attempt()));
                Err::<(), _>(if info.attempt() < 3 {
                    PaymentError::Unavailable
                } else {
                    PaymentError::Declined(5)
                })
            })
            .retry(only_unavailable()),
        )
        .build()
        .unwrap();
    let (clock, options) = virtual_time();
    let mut rec = Rec::default();
    let err = saga.run_blocking_with(&mut rec, options).unwrap_err();

    assert_eq!(
        rec.effects,
        ["try charge#1", "try charge#2", "try charge#3"]
    );
    assert_eq!(clock.sleeps(), [ms(100), ms(200)]);
    assert_eq!(user_error::<PaymentError>(&err), &PaymentError::Declined(5));
}

#[test]
fn exhausted_retries_roll_back_with_the_last_error() {
    let saga = Saga::builder("exhausted")
        .step(compensable("a"))
        .step(
            Step::new("b", |r: &mut Rec, info: &StepInfo<'_>| {
                r.push(format!("try b#{}", info.attempt()));
                Err::<(), _>(StepError::new(format!("busy, attempt {}", info.attempt())))
            })
            .retry(exact(3)),
        )
        .build()
        .unwrap();
    let (clock, options) = virtual_time();
    let mut rec = Rec::default();
    let err = saga.run_blocking_with(&mut rec, options).unwrap_err();

    assert_eq!(
        rec.effects,
        ["do a", "try b#1", "try b#2", "try b#3", "undo a with a-out"]
    );
    assert_eq!(clock.sleeps(), [ms(100), ms(200)]);
    assert!(matches!(err, SagaError::Compensated { .. }));
    assert_eq!(
        std::error::Error::source(&err).unwrap().to_string(),
        "busy, attempt 3"
    );
    let b = err.report().step("b").unwrap();
    assert_eq!(
        (b.attempts, b.last_error.as_deref()),
        (3, Some("busy, attempt 3"))
    );
}

#[test]
fn each_step_has_its_own_counter_and_backoff() {
    let saga = Saga::builder("counters")
        .step(
            flaky("a", 2, unavailable).retry(
                RetryPolicy::attempts(3)
                    .with_backoff(ms(10))
                    .with_jitter(0.0),
            ),
        )
        .step(
            flaky("b", 1, unavailable).retry(
                RetryPolicy::attempts(2)
                    .with_backoff(Duration::from_secs(1))
                    .with_jitter(0.0),
            ),
        )
        .step(flaky("c", 2, unavailable).retry(exact(3)))
        .build()
        .unwrap();
    let (clock, options) = virtual_time();
    let mut rec = Rec::default();
    let report = saga.run_blocking_with(&mut rec, options).unwrap();

    assert_eq!(
        rec.effects,
        [
            "try a#1", "try a#2", "do a#3", "try b#1", "do b#2", "try c#1", "try c#2", "do c#3",
        ]
    );
    // b starts again from its own initial backoff and c from its own: no
    // counter carries over from the step before.
    assert_eq!(clock.sleeps(), [ms(10), ms(20), ms(1000), ms(100), ms(200)]);
    assert_eq!(
        rows(&report),
        [
            row("a", "succeeded", "applied", 3, 0),
            row("b", "succeeded", "applied", 2, 0),
            row("c", "succeeded", "applied", 3, 0),
        ]
    );
}

#[test]
fn counters_start_afresh_on_every_run_of_one_definition() {
    let calls = Arc::new(Mutex::new(0_u32));
    let seen = Arc::clone(&calls);
    let saga = Saga::builder("fresh")
        .step(
            Step::new("b", move |r: &mut Rec, info: &StepInfo<'_>| {
                *seen.lock().unwrap() += 1;
                r.push(format!("b#{}", info.attempt()));
                if info.attempt() < 2 {
                    Err(unavailable())
                } else {
                    Ok(())
                }
            })
            .retry(exact(2)),
        )
        .build()
        .unwrap();
    for _ in 0..3 {
        let (clock, options) = virtual_time();
        let mut rec = Rec::default();
        saga.run_blocking_with(&mut rec, options).unwrap();
        assert_eq!(rec.effects, ["b#1", "b#2"]);
        assert_eq!(clock.sleeps(), [ms(100)]);
    }
    assert_eq!(*calls.lock().unwrap(), 6);
}

#[test]
fn backoff_is_capped_and_follows_the_multiplier() {
    let saga = Saga::builder("cap")
        .step(
            flaky("b", 5, unavailable).retry(
                RetryPolicy::attempts(6)
                    .with_backoff(ms(100))
                    .with_multiplier(3.0)
                    .with_max_backoff(ms(1000))
                    .with_jitter(0.0),
            ),
        )
        .build()
        .unwrap();
    let (clock, options) = virtual_time();
    let mut rec = Rec::default();
    saga.run_blocking_with(&mut rec, options).unwrap();

    assert_eq!(
        clock.sleeps(),
        [ms(100), ms(300), ms(900), ms(1000), ms(1000)]
    );
}

#[test]
fn jitter_keeps_every_delay_within_its_bounds() {
    // Jitter 0.5: a delay `d` becomes a pick in `d/2 ..= d`.
    let policy = RetryPolicy::attempts(40)
        .with_backoff(ms(100))
        .with_max_backoff(ms(800))
        .with_jitter(0.5);
    let saga = Saga::builder("jitter")
        .step(flaky("b", 39, unavailable).retry(policy))
        .build()
        .unwrap();
    let (clock, options) = virtual_time();
    let mut rec = Rec::default();
    saga.run_blocking_with(&mut rec, options).unwrap();

    let sleeps = clock.sleeps();
    assert_eq!(sleeps.len(), 39);
    for (i, delay) in sleeps.iter().enumerate() {
        let full = ms(100 * 2_u64.pow(i as u32).min(8));
        assert!(
            *delay <= full && *delay >= full / 2,
            "delay {i} is {delay:?}, outside {:?}..={full:?}",
            full / 2
        );
    }
    // The delays at the cap are picks, not one fixed value.
    let capped: std::collections::HashSet<_> = sleeps[3..].iter().collect();
    assert!(capped.len() > 1, "jitter had no effect: {sleeps:?}");
}

#[test]
fn jitter_out_of_range_is_clamped() {
    let policy = RetryPolicy::attempts(2)
        .with_backoff(ms(100))
        .with_jitter(7.0);
    // Jitter 1.0 at most: a delay stays within 0 ..= 100 ms.
    assert_eq!(
        policy.delay_before(2, 0.999_999),
        ms(100).mul_f64(1.0 - 0.999_999)
    );
    let none = RetryPolicy::attempts(2)
        .with_backoff(ms(100))
        .with_jitter(f64::NAN);
    assert_eq!(none.delay_before(2, 0.7), ms(100));
}

#[test]
fn forever_is_capped_by_a_documented_ceiling() {
    let policy = RetryPolicy::forever();
    assert_eq!(policy.max_attempts(), RetryPolicy::FOREVER_ATTEMPTS);
    assert_eq!(RetryPolicy::FOREVER_ATTEMPTS, 10_000);

    let saga = Saga::builder("forever")
        .step(flaky("b", 60, unavailable).retry(RetryPolicy::forever().with_jitter(0.0)))
        .build()
        .unwrap();
    let (clock, options) = virtual_time();
    let mut rec = Rec::default();
    let report = saga.run_blocking_with(&mut rec, options).unwrap();
    assert_eq!(report.step("b").unwrap().attempts, 61);
    // The default 10 s cap bounds every delay.
    assert_eq!(clock.sleeps().iter().max(), Some(&Duration::from_secs(10)));
}

#[test]
fn attempts_and_idempotency_key_seen_by_the_step() {
    let saga = Saga::builder("keys")
        .step(
            Step::new("charge", |r: &mut Rec, info: &StepInfo<'_>| {
                r.push(format!("{} #{}", info.idempotency_key(), info.attempt()));
                if info.attempt() < 3 {
                    Err(unavailable())
                } else {
                    Ok(())
                }
            })
            .retry(exact(3)),
        )
        .build()
        .unwrap();
    let (_, options) = virtual_time();
    let mut rec = Rec::default();
    saga.run_blocking_with(&mut rec, options.with_execution_id("order-7"))
        .unwrap();

    assert_eq!(
        rec.effects,
        [
            "order-7/charge #1",
            "order-7/charge #2",
            "order-7/charge #3"
        ]
    );
}

#[test]
fn every_error_but_a_permanent_one_is_retried_by_default() {
    let policy = RetryPolicy::attempts(3);
    assert!(policy.retries(&unavailable()));
    assert!(!policy.retries(&declined()));
    // `Any` is the default, and no predicate retries a permanent error.
    assert!(
        !RetryPolicy::attempts(3)
            .retry_on(RetryOn::Any)
            .retries(&declined())
    );
    assert!(
        !RetryPolicy::attempts(3)
            .retry_if(|_| true)
            .retries(&declined())
    );
    #[allow(deprecated)]
    let marked = RetryPolicy::attempts(3).retry_on(RetryOn::Marked);
    assert!(marked.retries(&unavailable()));
    // `retryable()` has no effect.
    #[allow(deprecated)]
    let marked_error = declined().retryable();
    assert!(marked_error.is_permanent());
    assert_eq!(RetryPolicy::new().max_attempts(), 1);
    assert_eq!(RetryPolicy::none().max_attempts(), 1);
}
