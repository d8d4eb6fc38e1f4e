//! The retry table of docs/DESIGN.md section 3, one test per row, named
//! after it: a policy retries every error except a permanent one, and
//! where a run goes when it gives up. Backoff runs on a virtual clock.

mod support;

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use saga_core::clock::TestClock;
use saga_core::store::{Event, EventKind, MemoryStore, NewExecution, SagaStore};
use saga_core::{
    ExecutionId, ExecutionStatus, RetryPolicy, Saga, SagaEngine, SagaError, Step, StepError,
    StepInfo, StuckPhase,
};
use serde::{Deserialize, Serialize};
use support::steps::*;

/// A plain user error: no mark of any kind.
#[derive(Debug, thiserror::Error)]
#[error("connection reset")]
struct Reset;

fn reset() -> StepError {
    StepError::new(Reset)
}

/// A step recording `do {name}`, whose compensation records
/// `undo {name}#{attempt}` and fails with `error()` on its first
/// `failures` attempts.
fn undo_failing(
    name: &'static str,
    failures: u32,
    error: impl Fn() -> StepError + Send + Sync + 'static,
) -> Step<Rec, ()> {
    Step::new(name, move |r: &mut Rec, _: &StepInfo<'_>| {
        r.push(format!("do {name}"));
        Ok::<_, StepError>(())
    })
    .undo(move |r: &mut Rec, _: Option<&()>, info: &StepInfo<'_>| {
        r.push(format!("undo {name}#{}", info.attempt()));
        if info.attempt() <= failures {
            return Err(error());
        }
        Ok(())
    })
}

fn stuck_parts(err: &SagaError) -> (&str, StuckPhase, Vec<&str>) {
    match err {
        SagaError::Stuck {
            step,
            phase,
            remaining,
            ..
        } => (step, *phase, remaining.iter().map(|s| &**s).collect()),
        other => panic!("expected stuck, got {other}"),
    }
}

/// Runs `saga` on virtual time, blocking, expecting it to fail: what it
/// did, the clock (its sleeps) and the error.
fn run_failing(saga: &Saga<Rec>) -> (Rec, TestClock, SagaError) {
    let (clock, options) = virtual_time();
    let mut rec = Rec::default();
    let err = saga.run_blocking_with(&mut rec, options).unwrap_err();
    (rec, clock, err)
}

fn compensated_step(err: &SagaError) -> &str {
    match err {
        SagaError::Compensated { step, .. } => step,
        other => panic!("expected compensated, got {other}"),
    }
}

// | any step or compensation with a policy | not permanent, attempts left | retried |
#[test]
fn any_step_or_compensation_with_a_policy_retries_an_error_not_permanent() {
    // A user's own error type, with no mark: retried by the step's policy
    // and by the compensation's.
    let saga = Saga::builder("not-permanent")
        .step(undo_failing("reserve", 1, reset).undo_retry(exact(3)))
        .step(flaky("charge", 2, reset).retry(exact(3)))
        .step(failing("ship", || declined().permanent()))
        .build()
        .unwrap();
    let (rec, clock, err) = run_failing(&saga);

    assert_eq!(
        rec.effects,
        [
            "do reserve",
            "try charge#1",
            "try charge#2",
            "do charge#3",
            "try ship#1",
            "undo charge with charge-out",
            "undo reserve#1",
            "undo reserve#2",
        ]
    );
    assert_eq!(clock.sleeps(), [ms(100), ms(200), ms(100)]);
    assert_eq!(compensated_step(&err), "ship");
}

// | any | `StepError::permanent()` | not retried |
#[test]
fn any_permanent_error_is_not_retried() {
    let saga = Saga::builder("permanent")
        .step(compensable("reserve"))
        .step(failing("charge", || reset().permanent()).retry(exact(5)))
        .build()
        .unwrap();
    let (rec, clock, err) = run_failing(&saga);

    assert_eq!(
        rec.effects,
        [
            "do reserve",
            "try charge#1",
            "undo reserve with reserve-out"
        ]
    );
    assert!(clock.sleeps().is_empty());
    assert_eq!(compensated_step(&err), "charge");
    assert_eq!(err.report().step("charge").unwrap().attempts, 1);
}

// | any | `retry_if` returns `false` | not retried: `retry_if` only narrows |
#[test]
fn any_retry_if_false_is_not_retried_and_retry_if_never_retries_a_permanent_error() {
    let narrowed = Saga::builder("narrowed")
        .step(failing("charge", reset).retry(exact(5).retry_if(|_| false)))
        .build()
        .unwrap();
    let mut rec = Rec::default();
    narrowed.run_blocking(&mut rec).unwrap_err();
    assert_eq!(rec.effects, ["try charge#1"]);

    // A predicate that says "retry" to everything: a permanent error is
    // still not retried, a plain one is.
    let widened = Saga::builder("widened")
        .step(failing("charge", || reset().permanent()).retry(exact(5).retry_if(|_| true)))
        .build()
        .unwrap();
    let mut rec = Rec::default();
    widened.run_blocking(&mut rec).unwrap_err();
    assert_eq!(rec.effects, ["try charge#1"]);

    let plain = Saga::builder("plain")
        .step(failing("charge", reset).retry(exact(3).retry_if(|_| true)))
        .build()
        .unwrap();
    let (_clock, options) = virtual_time();
    let mut rec = Rec::default();
    plain.run_blocking_with(&mut rec, options).unwrap_err();
    assert_eq!(
        rec.effects,
        ["try charge#1", "try charge#2", "try charge#3"]
    );
}

// | any | timeout, panic (outcome unknown) | retried like any other error, same key |
#[tokio::test]
async fn any_timeout_or_panic_is_retried_with_the_same_key() {
    let keys = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&keys);
    let slow = Step::new_async("slow", move |_: &mut Rec, info: &StepInfo<'_>| {
        seen.lock()
            .unwrap()
            .push((info.attempt(), info.idempotency_key()));
        let attempt = info.attempt();
        Box::pin(async move {
            if attempt == 1 {
                // Never answers: the timeout drops it.
                std::future::pending::<()>().await;
            }
            Ok::<_, StepError>(())
        })
    })
    .timeout(ms(20))
    .retry(exact(2));
    let seen = Arc::clone(&keys);
    let panicky = Step::new("panicky", move |_: &mut Rec, info: &StepInfo<'_>| {
        seen.lock()
            .unwrap()
            .push((info.attempt(), info.idempotency_key()));
        if info.attempt() == 1 {
            panic!("lost the connection mid-write");
        }
        Ok::<_, StepError>(())
    })
    .retry(exact(2));
    let saga = Saga::builder("unknown")
        .step(slow)
        .step(panicky)
        .build()
        .unwrap();
    let (_clock, options) = virtual_time();
    let options = options.with_execution_id("e1");
    let mut rec = Rec::default();
    let report = unless_hung(saga.run_with(&mut rec, options)).await.unwrap();

    assert_eq!(report.status, ExecutionStatus::Completed);
    assert_eq!(
        *keys.lock().unwrap(),
        [
            (1, "e1/slow".to_owned()),
            (2, "e1/slow".to_owned()),
            (1, "e1/panicky".to_owned()),
            (2, "e1/panicky".to_owned()),
        ]
    );
    for step in ["slow", "panicky"] {
        let step = report.step(step).unwrap();
        assert_eq!((step.attempts, step.outcome.label()), (2, "applied"));
    }
}

// | before the pivot, no `retry` | any | one attempt, then rollback |
#[test]
fn before_the_pivot_without_retry_one_attempt_then_rollback() {
    let saga = Saga::builder("no-retry")
        .step(compensable("reserve"))
        .step(failing("charge", reset))
        .pivot(compensable_free("ship"))
        .build()
        .unwrap();
    let mut rec = Rec::default();
    let err = saga.run_blocking(&mut rec).unwrap_err();

    assert_eq!(
        rec.effects,
        [
            "do reserve",
            "try charge#1",
            "undo reserve with reserve-out"
        ]
    );
    assert_eq!(compensated_step(&err), "charge");
}

// | before the pivot | attempts exhausted or permanent | rollback (the step
// compensated only if its outcome was ever unknown) |
#[test]
fn before_the_pivot_exhausted_or_permanent_rolls_back_compensating_the_step_only_if_unknown() {
    // Exhausted, the first attempt's outcome unknown: compensated.
    let mut attempt = 0;
    let errors = Mutex::new(move || {
        attempt += 1;
        if attempt == 1 {
            reset().outcome_unknown()
        } else {
            reset()
        }
    });
    let saga = Saga::builder("exhausted")
        .step(compensable("reserve"))
        .step(failing("charge", move || (errors.lock().unwrap())()).retry(exact(3)))
        .build()
        .unwrap();
    let (rec, _, err) = run_failing(&saga);
    assert_eq!(
        rec.effects,
        [
            "do reserve",
            "try charge#1",
            "try charge#2",
            "try charge#3",
            "undo charge with none",
            "undo reserve with reserve-out",
        ]
    );
    assert_eq!(compensated_step(&err), "charge");

    // Permanent and clean: not compensated.
    let saga = Saga::builder("permanent")
        .step(compensable("reserve"))
        .step(failing("charge", || reset().permanent()).retry(exact(3)))
        .build()
        .unwrap();
    let mut rec = Rec::default();
    saga.run_blocking(&mut rec).unwrap_err();
    assert_eq!(
        rec.effects,
        [
            "do reserve",
            "try charge#1",
            "undo reserve with reserve-out"
        ]
    );
}

/// A step with nothing to undo (allowed on and after the pivot).
fn compensable_free(name: &'static str) -> Step<Rec, String> {
    Step::new(name, move |r: &mut Rec, _: &StepInfo<'_>| {
        r.push(format!("do {name}"));
        Ok::<_, StepError>(format!("{name}-out"))
    })
}

/// A step with nothing to undo, failing with `error()` on every attempt.
fn failing_free(
    name: &'static str,
    error: impl Fn() -> StepError + Send + Sync + 'static,
) -> Step<Rec, ()> {
    Step::new(name, move |r: &mut Rec, info: &StepInfo<'_>| {
        r.push(format!("try {name}#{}", info.attempt()));
        Err::<(), _>(error())
    })
}

// | the pivot | clean failure, exhausted or permanent | rollback of the steps before it |
#[test]
fn the_pivot_failing_cleanly_exhausted_or_permanent_rolls_back_the_steps_before_it() {
    for (what, error, expected) in [
        (
            "exhausted",
            reset as fn() -> StepError,
            vec![
                "do reserve",
                "try ship#1",
                "try ship#2",
                "undo reserve with reserve-out",
            ],
        ),
        (
            "permanent",
            (|| reset().permanent()) as fn() -> StepError,
            vec!["do reserve", "try ship#1", "undo reserve with reserve-out"],
        ),
    ] {
        let saga = Saga::builder("pivot-clean")
            .step(compensable("reserve"))
            .pivot(failing_free("ship", error).retry(exact(2)))
            .step(compensable_free("notify"))
            .build()
            .unwrap();
        let (rec, _, err) = run_failing(&saga);
        assert_eq!(rec.effects, expected, "{what}");
        assert_eq!(compensated_step(&err), "ship", "{what}");
    }
}

// | the pivot | outcome unknown | retried up to the limit whatever `retry_if` says; then stuck |
#[test]
fn the_pivot_with_an_unknown_outcome_is_retried_up_to_the_limit_whatever_retry_if_says_then_stuck()
{
    let saga = Saga::builder("pivot-unknown")
        .step(compensable("reserve"))
        .pivot(
            failing_free("ship", || reset().outcome_unknown()).retry(exact(3).retry_if(|_| false)),
        )
        .step(compensable_free("notify"))
        .build()
        .unwrap();
    let (rec, clock, err) = run_failing(&saga);

    assert_eq!(
        rec.effects,
        ["do reserve", "try ship#1", "try ship#2", "try ship#3"]
    );
    assert_eq!(clock.sleeps(), [ms(100), ms(200)]);
    assert_eq!(
        stuck_parts(&err),
        ("ship", StuckPhase::Forward, vec!["ship", "notify"])
    );
}

// | the pivot | outcome unknown and permanent | stuck at once |
#[test]
fn the_pivot_with_an_unknown_outcome_and_permanent_is_stuck_at_once() {
    let saga = Saga::builder("pivot-permanent-unknown")
        .step(compensable("reserve"))
        .pivot(failing_free("ship", || reset().outcome_unknown().permanent()).retry(exact(3)))
        .step(compensable_free("notify"))
        .build()
        .unwrap();
    let (rec, clock, err) = run_failing(&saga);

    assert_eq!(rec.effects, ["do reserve", "try ship#1"]);
    assert!(clock.sleeps().is_empty());
    assert_eq!(
        stuck_parts(&err),
        ("ship", StuckPhase::Forward, vec!["ship", "notify"])
    );
}

// | after the pivot, no `retry` | any | retried forever: `FOREVER_ATTEMPTS`
// attempts, backoff capped at 10 s |
#[test]
fn after_the_pivot_without_retry_a_step_is_retried_forever_up_to_the_ceiling() {
    let saga = Saga::builder("forever")
        .pivot(compensable_free("ship"))
        .step(failing_free("notify", reset))
        .build()
        .unwrap();
    let (rec, clock, err) = run_failing(&saga);

    let attempts = RetryPolicy::FOREVER_ATTEMPTS;
    assert_eq!(attempts, 10_000);
    assert_eq!(err.report().step("notify").unwrap().attempts, attempts);
    assert_eq!(rec.effects.len() as u32, 1 + attempts);
    let sleeps = clock.sleeps();
    assert_eq!(sleeps.len() as u32, attempts - 1);
    // Capped at 10 s, less up to 20% of jitter.
    let cap = Duration::from_secs(10);
    assert!(sleeps.iter().all(|s| *s <= cap));
    assert!(sleeps[sleeps.len() - 1] >= cap * 4 / 5);
    assert_eq!(
        stuck_parts(&err),
        ("notify", StuckPhase::Forward, vec!["notify"])
    );

    // An explicit `RetryPolicy::none()` after the pivot means one attempt.
    let saga = Saga::builder("once")
        .pivot(compensable_free("ship"))
        .step(failing_free("notify", reset).retry(RetryPolicy::none()))
        .build()
        .unwrap();
    let mut rec = Rec::default();
    saga.run_blocking(&mut rec).unwrap_err();
    assert_eq!(rec.effects, ["do ship", "try notify#1"]);
}

/// A policy that does not set its number of attempts keeps its place's
/// default: a backoff or a `retry_if` given to a step after the pivot
/// does not turn "forever" into one attempt (before: stuck after one).
#[test]
fn after_the_pivot_a_policy_without_attempts_still_retries_forever() {
    // Each keeps what it sets: the delays of its backoff and jitter.
    let policies = [
        (
            "backoff",
            RetryPolicy::new().with_backoff(ms(5)).with_jitter(0.0),
            vec![ms(5), ms(10)],
        ),
        (
            "retry_if",
            RetryPolicy::new().retry_if(|_| true).with_jitter(0.0),
            vec![ms(100), ms(200)],
        ),
        (
            "jitter",
            RetryPolicy::new().with_jitter(0.0),
            vec![ms(100), ms(200)],
        ),
    ];
    for (what, policy, sleeps) in policies {
        let saga = Saga::builder("tuned")
            .pivot(compensable_free("ship"))
            .step(flaky_free("notify", 2).retry(policy))
            .build()
            .unwrap();
        let (clock, options) = virtual_time();
        let mut rec = Rec::default();
        let report = saga.run_blocking_with(&mut rec, options).unwrap();
        assert_eq!(
            rec.effects,
            ["do ship", "try notify#1", "try notify#2", "try notify#3"],
            "{what}"
        );
        assert_eq!(report.step("notify").unwrap().attempts, 3, "{what}");
        assert_eq!(clock.sleeps(), sleeps, "{what}");
    }
    // A predicate that retries nothing still retries nothing: stuck at
    // once (it was forever's 10,000 attempts for a moment).
    let saga = Saga::builder("narrowed")
        .pivot(compensable_free("ship"))
        .step(flaky_free("notify", 2).retry(RetryPolicy::new().retry_if(|_| false)))
        .build()
        .unwrap();
    let (rec, _, err) = run_failing(&saga);
    assert_eq!(rec.effects, ["do ship", "try notify#1"]);
    assert_eq!(
        stuck_parts(&err),
        ("notify", StuckPhase::Forward, vec!["notify"])
    );
    // Before the pivot, the same policy still means one attempt.
    let saga = Saga::builder("before")
        .step(flaky_free("notify", 2).retry(RetryPolicy::new().with_backoff(ms(5))))
        .build()
        .unwrap();
    let mut rec = Rec::default();
    saga.run_blocking(&mut rec).unwrap_err();
    assert_eq!(rec.effects, ["try notify#1"]);
}

/// A step with nothing to undo, failing with a plain error on its first
/// `failures` attempts.
fn flaky_free(name: &'static str, failures: u32) -> Step<Rec, ()> {
    Step::new(name, move |r: &mut Rec, info: &StepInfo<'_>| {
        r.push(format!("try {name}#{}", info.attempt()));
        if info.attempt() <= failures {
            return Err(reset());
        }
        Ok(())
    })
}

// | after the pivot | permanent or exhausted | stuck, forward |
#[test]
fn after_the_pivot_permanent_or_exhausted_is_stuck_forward() {
    let saga = Saga::builder("after-permanent")
        .pivot(compensable_free("ship"))
        .step(failing_free("notify", || reset().permanent()))
        .step(compensable_free("archive"))
        .build()
        .unwrap();
    let mut rec = Rec::default();
    let err = saga.run_blocking(&mut rec).unwrap_err();
    assert_eq!(rec.effects, ["do ship", "try notify#1"]);
    assert_eq!(
        stuck_parts(&err),
        ("notify", StuckPhase::Forward, vec!["notify", "archive"])
    );

    let saga = Saga::builder("after-exhausted")
        .pivot(compensable_free("ship"))
        .step(failing_free("notify", reset).retry(exact(2)))
        .build()
        .unwrap();
    let (rec, _, err) = run_failing(&saga);
    assert_eq!(rec.effects, ["do ship", "try notify#1", "try notify#2"]);
    assert_eq!(
        stuck_parts(&err),
        ("notify", StuckPhase::Forward, vec!["notify"])
    );
}

// | compensation, no `undo_retry` | any | `default_undo_retry()`: 3 attempts,
// 100 ms doubling to 5 s |
#[test]
fn a_compensation_without_undo_retry_gets_three_attempts_100ms_doubling() {
    let saga = Saga::builder("undo-default")
        .step(undo_failing("reserve", u32::MAX, reset))
        .step(failing("charge", || reset().permanent()))
        .build()
        .unwrap();
    let (rec, clock, err) = run_failing(&saga);

    assert_eq!(
        rec.effects,
        [
            "do reserve",
            "try charge#1",
            "undo reserve#1",
            "undo reserve#2",
            "undo reserve#3"
        ]
    );
    // Jittered by default (up to 20% shorter).
    let sleeps = clock.sleeps();
    assert_eq!(sleeps.len(), 2);
    assert!(sleeps[0] <= ms(100) && sleeps[0] >= ms(80), "{sleeps:?}");
    assert!(sleeps[1] <= ms(200) && sleeps[1] >= ms(160), "{sleeps:?}");
    assert_eq!(
        stuck_parts(&err),
        ("reserve", StuckPhase::Rollback, vec!["reserve"])
    );
}

/// A compensation's policy that does not set its number of attempts takes
/// the saga's (3 by default), as `undo_retry` in the macros does (before:
/// a backoff alone on the builder meant one attempt).
#[test]
fn a_compensation_policy_without_attempts_takes_the_sagas_number() {
    for (what, per_step) in [("step", true), ("saga", false)] {
        let tuned = RetryPolicy::new().with_backoff(ms(5)).with_jitter(0.0);
        let mut reserve = undo_failing("reserve", 2, reset);
        if per_step {
            reserve = reserve.undo_retry(tuned.clone());
        }
        let mut builder = Saga::builder("undo-tuned")
            .step(reserve)
            .step(failing("charge", || reset().permanent()));
        if !per_step {
            builder = builder.undo_retry(tuned);
        }
        let (rec, clock, err) = run_failing(&builder.build().unwrap());
        assert_eq!(
            rec.effects,
            [
                "do reserve",
                "try charge#1",
                "undo reserve#1",
                "undo reserve#2",
                "undo reserve#3"
            ],
            "{what}"
        );
        assert_eq!(clock.sleeps(), [ms(5), ms(10)], "{what}");
        assert_eq!(compensated_step(&err), "charge", "{what}");
    }
    // A step's policy without attempts takes the saga's number, not a
    // fixed 3: here 4, its own backoff kept.
    let saga = Saga::builder("undo-saga-attempts")
        .undo_retry(RetryPolicy::attempts(4))
        .step(
            undo_failing("reserve", 3, reset)
                .undo_retry(RetryPolicy::new().with_backoff(ms(5)).with_jitter(0.0)),
        )
        .step(failing("charge", || reset().permanent()))
        .build()
        .unwrap();
    let (rec, clock, err) = run_failing(&saga);
    assert_eq!(
        rec.effects,
        [
            "do reserve",
            "try charge#1",
            "undo reserve#1",
            "undo reserve#2",
            "undo reserve#3",
            "undo reserve#4"
        ]
    );
    assert_eq!(clock.sleeps(), [ms(5), ms(10), ms(20)]);
    assert_eq!(compensated_step(&err), "charge");
}

// | compensation | permanent or exhausted | stuck at once |
#[test]
fn a_compensation_permanent_or_exhausted_is_stuck_at_once() {
    let saga = Saga::builder("undo-permanent")
        .step(compensable("reserve"))
        .step(undo_failing("hold", u32::MAX, || reset().permanent()).undo_retry(exact(5)))
        .step(failing("charge", || reset().permanent()))
        .build()
        .unwrap();
    let (rec, clock, err) = run_failing(&saga);

    assert_eq!(
        rec.effects,
        ["do reserve", "do hold", "try charge#1", "undo hold#1"]
    );
    assert!(clock.sleeps().is_empty());
    assert_eq!(
        stuck_parts(&err),
        ("hold", StuckPhase::Rollback, vec!["hold", "reserve"])
    );
}

// | recovery of a logged failure | any | the decision the log records is followed |

/// The durable context of the recovery rows.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Calls {
    done: Vec<String>,
}

/// A durable saga: `reserve` (compensable), `charge` failing with a plain
/// error every attempt (`retry 3`: this build retries it).
fn durable_saga(calls: &Arc<Mutex<Vec<String>>>) -> Saga<Calls> {
    let (a, b, c) = (Arc::clone(calls), Arc::clone(calls), Arc::clone(calls));
    Saga::builder("logged")
        .step(
            Step::new("reserve", move |_: &mut Calls, _: &StepInfo<'_>| {
                a.lock().unwrap().push("do reserve".to_owned());
                Ok::<_, StepError>(())
            })
            .undo(move |_: &mut Calls, _: Option<&()>, _: &StepInfo<'_>| {
                b.lock().unwrap().push("undo reserve".to_owned());
                Ok::<_, StepError>(())
            }),
        )
        .step(
            Step::new("charge", move |_: &mut Calls, info: &StepInfo<'_>| {
                c.lock()
                    .unwrap()
                    .push(format!("try charge#{}", info.attempt()));
                Err::<(), _>(reset())
            })
            .retry(
                RetryPolicy::attempts(3)
                    .with_backoff(Duration::from_millis(1))
                    .with_jitter(0.0),
            ),
        )
        .build()
        .unwrap()
}

fn event(seq: u64, kind: EventKind, step: u32, attempt: u32) -> Event {
    let mut event = Event::new(seq, kind);
    event.step = Some(step);
    event.attempt = attempt;
    event.context = Some("{\"done\":[]}".to_owned());
    event
}

/// A store holding one execution of [`durable_saga`] whose log ends with
/// `charge`'s first attempt failing with a plain error, `will_retry` as
/// logged (followed by the rollback's start if `rollback_logged`), its
/// lease free; and an engine on it with the saga registered.
async fn logged_failure(
    will_retry: bool,
    rollback_logged: bool,
    calls: &Arc<Mutex<Vec<String>>>,
) -> (SagaEngine, ExecutionId) {
    let store: Arc<dyn SagaStore> = Arc::new(MemoryStore::new());
    let engine = SagaEngine::with_store(Arc::clone(&store));
    let fingerprint = engine.register(durable_saga(calls)).await.unwrap();
    let mut failed = event(4, EventKind::StepFailed, 1, 1);
    failed.error = Some("connection reset".to_owned());
    failed.will_retry = will_retry;
    let mut events = vec![
        event(1, EventKind::StepStarted, 0, 1),
        event(2, EventKind::StepSucceeded, 0, 1),
        event(3, EventKind::StepStarted, 1, 1),
        failed,
    ];
    if rollback_logged {
        // What a build that decided "final" writes with it: the rollback.
        let mut rollback = event(5, EventKind::RollbackStarted, 1, 0);
        rollback.error = Some("connection reset".to_owned());
        events.push(rollback);
    }
    let id = ExecutionId::new("logged-1");
    let created = store
        .create(
            NewExecution {
                id: id.clone(),
                saga: "logged".into(),
                fingerprint,
                context: "{\"done\":[]}".into(),
                events,
            },
            "an-old-build",
            Duration::ZERO,
        )
        .await
        .unwrap();
    drop(created);
    (engine, id)
}

#[tokio::test]
async fn recovery_of_a_failure_logged_final_does_not_retry_it() {
    // With the rollback's start logged (what a build writes: the failure
    // is committed with it), and without (a log cut right after it).
    for rollback_logged in [true, false] {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (engine, id) = logged_failure(false, rollback_logged, &calls).await;
        engine.recover().await.unwrap();
        // Ends compensated: `wait` errs with the saga's error.
        let _ = unless_hung(engine.wait(&id)).await;

        // This build would retry a plain error 3 times; the log said final.
        assert_eq!(
            *calls.lock().unwrap(),
            ["undo reserve"],
            "{rollback_logged}"
        );
        let report = engine.report(&id).await.unwrap();
        assert_eq!(report.status, ExecutionStatus::Compensated);
        assert_eq!(report.step("charge").unwrap().attempts, 1);
    }
}

#[tokio::test]
async fn recovery_of_a_failure_logged_will_retry_retries_it() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let (engine, id) = logged_failure(true, false, &calls).await;
    engine.recover().await.unwrap();
    let _ = unless_hung(engine.wait(&id)).await;

    assert_eq!(
        *calls.lock().unwrap(),
        ["try charge#2", "try charge#3", "undo reserve"]
    );
    let report = engine.report(&id).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Compensated);
    assert_eq!(report.step("charge").unwrap().attempts, 3);
}

/// `saga!`'s `backoff` and `#[saga_task]`'s `retry(backoff = ..)` alone
/// keep the "forever" of a step after the pivot (before: one attempt).
mod macros {
    use saga_core::{StepError, StepInfo, saga, saga_task};

    use super::support::steps::Rec;

    #[saga_task]
    fn ship(r: &mut Rec) -> Result<(), StepError> {
        r.push("do ship".to_owned());
        Ok(())
    }

    fn flaky(r: &mut Rec, name: &str, info: &StepInfo<'_>) -> Result<(), StepError> {
        r.push(format!("try {name}#{}", info.attempt()));
        if info.attempt() <= 2 {
            return Err(StepError::new("connection reset"));
        }
        Ok(())
    }

    #[saga_task]
    fn mail(r: &mut Rec, info: &StepInfo<'_>) -> Result<(), StepError> {
        flaky(r, "mail", info)
    }

    #[saga_task(retry(backoff = "1ms"))]
    fn archive(r: &mut Rec, info: &StepInfo<'_>) -> Result<(), StepError> {
        flaky(r, "archive", info)
    }

    #[saga_task]
    fn reserve(r: &mut Rec) -> Result<(), StepError> {
        r.push("do reserve".to_owned());
        Ok(())
    }

    #[saga_task(undo = unhold, undo_retry(backoff = "1ms"))]
    fn hold(r: &mut Rec) -> Result<(), StepError> {
        r.push("do hold".to_owned());
        Ok(())
    }

    #[saga_task]
    fn unhold(r: &mut Rec, _: Option<&()>, info: &StepInfo<'_>) -> Result<(), StepError> {
        r.push(format!("undo hold#{}", info.attempt()));
        if info.attempt() <= 3 {
            return Err(StepError::new("connection reset"));
        }
        Ok(())
    }

    #[saga_task]
    fn charge(r: &mut Rec) -> Result<(), StepError> {
        r.push("try charge".to_owned());
        Err(StepError::new("card declined").permanent())
    }

    /// An attribute's `undo_retry` without a number takes the saga's, as
    /// the builder's `Step::undo_retry` does (before: a fixed 3).
    #[test]
    fn an_attribute_undo_retry_without_a_number_takes_the_sagas() {
        let saga = saga_core::Saga::builder("held")
            .undo_retry(saga_core::RetryPolicy::attempts(4))
            .task(reserve {})
            .task(hold {})
            .task(charge {})
            .build()
            .unwrap();
        let mut rec = Rec::default();
        saga.run_blocking(&mut rec).unwrap_err();
        assert_eq!(
            rec.effects,
            [
                "do reserve",
                "do hold",
                "try charge",
                "undo hold#1",
                "undo hold#2",
                "undo hold#3",
                "undo hold#4"
            ]
        );
    }

    #[test]
    fn a_backoff_alone_after_the_pivot_keeps_forever() {
        let saga = saga! {
            name: "tuned",
            context: Rec,
            pivot ship;
            step mail, backoff 1ms;
            step archive;
        };
        let mut rec = Rec::default();
        saga.run_blocking(&mut rec).unwrap();
        assert_eq!(
            rec.effects,
            [
                "do ship",
                "try mail#1",
                "try mail#2",
                "try mail#3",
                "try archive#1",
                "try archive#2",
                "try archive#3"
            ]
        );
    }
}
