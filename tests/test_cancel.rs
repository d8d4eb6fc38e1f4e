//! Cancellation: the token is checked between steps; an in-flight async
//! step is dropped only if cancel-safe (its outcome is then unknown and it
//! is compensated); before the pivot the run compensates and ends
//! cancelled, after it the cancel is recorded and ignored.

mod support;

use std::sync::{Arc, Mutex};

use saga_core::{
    CancellationToken, ExecutionStatus, RetryPolicy, RunInfo, RunOptions, Saga, SagaError,
    SagaEvent, SagaObserver, Step, StepError, StepInfo, StuckPhase,
};
use support::steps::{PaymentError, exact, unavailable, undo_effect, unless_hung};
use tokio::sync::Notify;

/// A context that can reach the run's token, so a step can cancel its own
/// run at a precise point.
#[derive(Default)]
struct Ctl {
    effects: Vec<String>,
    token: CancellationToken,
}

fn step(name: &'static str) -> Step<Ctl, String> {
    Step::new(name, move |c: &mut Ctl, _: &StepInfo<'_>| {
        c.effects.push(format!("do {name}"));
        Ok::<_, StepError>(format!("{name}-out"))
    })
    .undo(move |c: &mut Ctl, out: Option<&String>, _: &StepInfo<'_>| {
        c.effects.push(undo_effect(name, out));
        Ok::<_, StepError>(())
    })
}

/// A step that cancels the run's token and then succeeds.
fn cancels(name: &'static str) -> Step<Ctl, String> {
    Step::new(name, move |c: &mut Ctl, _: &StepInfo<'_>| {
        c.effects.push(format!("do {name}, cancel"));
        c.token.cancel();
        Ok::<_, StepError>(format!("{name}-out"))
    })
}

/// Runs `saga` on `ctl`, cancellable by its token, on a virtual clock (a
/// retry's backoff takes no time).
fn run(saga: &Saga<Ctl>, ctl: &mut Ctl) -> Result<saga_core::SagaReport, SagaError> {
    let options = RunOptions::new()
        .with_cancellation(ctl.token.clone())
        .with_clock(saga_core::clock::TestClock::new());
    saga.run_blocking_with(ctl, options)
}

#[test]
fn cancelled_before_the_start_runs_nothing() {
    let saga = Saga::builder("c").step(step("a")).build().unwrap();
    let mut ctl = Ctl::default();
    ctl.token.cancel();
    let err = run(&saga, &mut ctl).unwrap_err();

    assert!(ctl.effects.is_empty());
    assert!(matches!(err, SagaError::Cancelled { .. }));
    assert_eq!(
        err.to_string(),
        "saga `c` was cancelled and rolled back (nothing to compensate)"
    );
    assert_eq!(err.report().status, ExecutionStatus::Cancelled);
    assert!(std::error::Error::source(&err).is_none());
}

#[test]
fn cancel_between_steps_compensates_what_took_effect() {
    let saga = Saga::builder("c")
        .step(step("a"))
        .step(
            cancels("b").undo(|c: &mut Ctl, out: Option<&String>, _: &StepInfo<'_>| {
                c.effects.push(undo_effect("b", out));
                Ok::<_, StepError>(())
            }),
        )
        .step(step("c"))
        .pivot(step_plain("pay"))
        .build()
        .unwrap();
    let mut ctl = Ctl::default();
    let err = run(&saga, &mut ctl).unwrap_err();

    assert_eq!(
        ctl.effects,
        [
            "do a",
            "do b, cancel",
            "undo b with b-out",
            "undo a with a-out"
        ]
    );
    assert_eq!(
        err.to_string(),
        "saga `c` was cancelled and rolled back (compensated: b, a)"
    );
    let report = err.report();
    assert_eq!(report.status, ExecutionStatus::Cancelled);
    assert_eq!(
        report
            .statuses()
            .iter()
            .map(|(n, s)| format!("{n}={s}"))
            .collect::<Vec<_>>(),
        ["a=compensated", "b=compensated", "c=pending", "pay=pending"]
    );
    assert!(!report.cancel_ignored);
}

fn step_plain(name: &'static str) -> Step<Ctl, ()> {
    Step::new(name, move |c: &mut Ctl, _: &StepInfo<'_>| {
        c.effects.push(format!("do {name}"));
        Ok::<_, StepError>(())
    })
}

#[tokio::test]
async fn an_in_flight_step_not_marked_cancel_safe_is_let_finish() {
    let saga = Saga::builder("c")
        .step(
            Step::new_async("b", |c: &mut Ctl, _: &StepInfo<'_>| {
                Box::pin(async move {
                    c.effects.push("b started, cancel".to_owned());
                    c.token.cancel();
                    tokio::task::yield_now().await;
                    c.effects.push("b finished".to_owned());
                    Ok::<_, StepError>("b-out".to_owned())
                })
            })
            .undo(|c: &mut Ctl, out: Option<&String>, _: &StepInfo<'_>| {
                c.effects.push(undo_effect("b", out));
                Ok::<_, StepError>(())
            }),
        )
        .step(step("c"))
        .build()
        .unwrap();
    let mut ctl = Ctl::default();
    let options = RunOptions::new().with_cancellation(ctl.token.clone());
    let err = saga.run_with(&mut ctl, options).await.unwrap_err();

    assert_eq!(
        ctl.effects,
        ["b started, cancel", "b finished", "undo b with b-out"]
    );
    assert!(matches!(err, SagaError::Cancelled { .. }));
    assert_eq!(
        support::steps::rows(err.report())[0],
        support::steps::row("b", "compensated", "applied", 1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_cancel_safe_step_is_dropped_and_compensated_as_unknown() {
    let started = Arc::new(Notify::new());
    let saga = {
        let started = Arc::clone(&started);
        Saga::builder("c")
            .step(step("a"))
            .step(
                Step::new_async("b", move |c: &mut Ctl, _: &StepInfo<'_>| {
                    let started = Arc::clone(&started);
                    Box::pin(async move {
                        c.effects.push("b started".to_owned());
                        started.notify_one();
                        // Waits for an answer that never comes.
                        std::future::pending::<()>().await;
                        c.effects.push("b finished".to_owned());
                        Ok::<_, StepError>("b-out".to_owned())
                    })
                })
                .cancel_safe()
                .undo(|c: &mut Ctl, out: Option<&String>, _: &StepInfo<'_>| {
                    c.effects.push(undo_effect("b", out));
                    Ok::<_, StepError>(())
                }),
            )
            .step(step("c"))
            .build()
            .unwrap()
    };
    // The cancel comes from another task, as an operator's would.
    let token = CancellationToken::new();
    let canceller = {
        let token = token.clone();
        tokio::spawn(async move {
            started.notified().await;
            token.cancel();
        })
    };
    let mut ctl = Ctl {
        token: token.clone(),
        ..Ctl::default()
    };
    let options = RunOptions::new().with_cancellation(token);
    let err = unless_hung(saga.run_with(&mut ctl, options))
        .await
        .unwrap_err();
    unless_hung(canceller).await.unwrap();

    assert_eq!(
        ctl.effects,
        ["do a", "b started", "undo b with none", "undo a with a-out"]
    );
    assert!(matches!(err, SagaError::Cancelled { .. }));
    assert_eq!(
        err.to_string(),
        "saga `c` was cancelled and rolled back (compensated: b, a)"
    );
    let b = err.report().step("b").unwrap();
    assert_eq!(
        (b.status.label(), b.outcome.label(), b.last_error.as_deref()),
        (
            "compensated",
            "unknown",
            Some("interrupted by cancellation")
        )
    );
}

#[derive(Default)]
struct Events(Mutex<Vec<String>>);

impl SagaObserver for Events {
    fn on_event(&self, _: &RunInfo<'_>, event: &SagaEvent<'_>) {
        let line = match event {
            SagaEvent::CancelIgnored { step } => format!("cancel ignored at {step}"),
            SagaEvent::CancelHonoured { step } => format!("cancel honoured at {step}"),
            SagaEvent::CompensationSucceeded { step, .. } => format!("compensated {step}"),
            _ => return,
        };
        self.0.lock().unwrap().push(line);
    }
}

#[test]
fn cancel_after_the_pivot_is_recorded_and_ignored() {
    let events = Arc::new(Events::default());
    let saga = Saga::builder("c")
        .step(step("a"))
        .pivot(cancels("pay"))
        .step(step_plain("ship"))
        .step(step_plain("notify"))
        .observer(events.clone())
        .build()
        .unwrap();
    let mut ctl = Ctl::default();
    let report = run(&saga, &mut ctl).unwrap();

    assert_eq!(
        ctl.effects,
        ["do a", "do pay, cancel", "do ship", "do notify"]
    );
    assert_eq!(report.status, ExecutionStatus::Completed);
    assert!(report.cancel_ignored);
    // Recorded once, at the first step it could have stopped.
    assert_eq!(*events.0.lock().unwrap(), ["cancel ignored at ship"]);
}

/// A cancel that arrives during the last step finds nothing left to
/// stop: the run completes, and its report and its observers say the
/// cancel was ignored.
#[test]
fn cancel_during_the_last_step_is_ignored_and_reported() {
    let events = Arc::new(Events::default());
    let saga = Saga::builder("c")
        .step(step("a"))
        .step(cancels("last"))
        .observer(events.clone())
        .build()
        .unwrap();
    let mut ctl = Ctl::default();
    let report = run(&saga, &mut ctl).unwrap();
    assert_eq!(ctl.effects, ["do a", "do last, cancel"]);
    assert_eq!(report.status, ExecutionStatus::Completed);
    assert!(report.cancel_ignored);
    assert_eq!(*events.0.lock().unwrap(), ["cancel ignored at last"]);
}

#[tokio::test]
async fn cancel_safe_steps_on_and_after_the_pivot_are_never_dropped() {
    let finishing = |name: &'static str| {
        Step::new_async(name, move |c: &mut Ctl, _: &StepInfo<'_>| {
            Box::pin(async move {
                c.effects.push(format!("{name} started, cancel"));
                c.token.cancel();
                tokio::task::yield_now().await;
                c.effects.push(format!("{name} finished"));
                Ok::<_, StepError>(())
            })
        })
        .cancel_safe()
    };
    let saga = Saga::builder("c")
        .pivot(finishing("pay"))
        .step(finishing("ship"))
        .step(step_plain("notify"))
        .build()
        .unwrap();
    let mut ctl = Ctl::default();
    let options = RunOptions::new().with_cancellation(ctl.token.clone());
    let report = saga.run_with(&mut ctl, options).await.unwrap();

    assert_eq!(
        ctl.effects,
        [
            "pay started, cancel",
            "pay finished",
            "ship started, cancel",
            "ship finished",
            "do notify"
        ]
    );
    assert!(report.cancel_ignored);
}

#[test]
fn cancel_stops_the_retries_of_a_step_before_the_pivot() {
    // The token is checked between retries too: a step retrying (for up to
    // "forever") does not hold a cancelled run back.
    let saga = Saga::builder("c")
        .step(step("a"))
        .step(
            Step::new("b", |c: &mut Ctl, info: &StepInfo<'_>| {
                c.effects.push(format!("try b#{}", info.attempt()));
                c.token.cancel();
                Err::<(), _>(unavailable())
            })
            .retry(exact(5)),
        )
        .build()
        .unwrap();
    let mut ctl = Ctl::default();
    let clock = saga_core::clock::TestClock::new();
    let options = RunOptions::new()
        .with_cancellation(ctl.token.clone())
        .with_clock(clock.clone());
    let err = saga.run_blocking_with(&mut ctl, options).unwrap_err();

    assert_eq!(ctl.effects, ["do a", "try b#1", "undo a with a-out"]);
    assert_eq!(clock.sleeps(), []);
    assert!(matches!(err, SagaError::Cancelled { .. }), "{err:?}");
    let b = err.report().step("b").unwrap();
    assert_eq!((b.status.label(), b.attempts), ("failed", 1));
    assert_eq!(b.last_error.as_deref(), Some("payment gateway unavailable"));
}

#[test]
fn cancel_does_not_stop_the_retries_of_a_step_after_the_pivot() {
    let saga = Saga::builder("c")
        .pivot(step_plain("pay"))
        .step(
            Step::new("ship", |c: &mut Ctl, info: &StepInfo<'_>| {
                c.effects.push(format!("try ship#{}", info.attempt()));
                c.token.cancel();
                if info.attempt() < 3 {
                    Err(unavailable())
                } else {
                    Ok(())
                }
            })
            .retry(exact(3)),
        )
        .step(step_plain("notify"))
        .build()
        .unwrap();
    let mut ctl = Ctl::default();
    let report = run(&saga, &mut ctl).unwrap();

    assert_eq!(
        ctl.effects,
        [
            "do pay",
            "try ship#1",
            "try ship#2",
            "try ship#3",
            "do notify"
        ]
    );
    assert!(report.cancel_ignored);
}

/// A pivot that records each attempt, cancels the run's token and fails
/// with `error`'s outcome until its third attempt.
fn cancelling_pivot(error: fn() -> StepError) -> Step<Ctl, ()> {
    Step::new("pay", move |c: &mut Ctl, info: &StepInfo<'_>| {
        c.effects.push(format!("try pay#{}", info.attempt()));
        c.token.cancel();
        if info.attempt() < 3 {
            Err(error())
        } else {
            Ok(())
        }
    })
    .retry(exact(3))
}

#[test]
fn cancel_stops_the_retries_of_a_pivot_whose_attempts_took_no_effect() {
    // Its first attempt failed clean: the point of no return is not
    // passed, so the run rolls back as before any other step.
    let events = Arc::new(Events::default());
    let saga = Saga::builder("c")
        .step(step("a"))
        .pivot(cancelling_pivot(unavailable))
        .step(step_plain("ship"))
        .observer(events.clone())
        .build()
        .unwrap();
    let mut ctl = Ctl::default();
    let err = run(&saga, &mut ctl).unwrap_err();

    assert_eq!(ctl.effects, ["do a", "try pay#1", "undo a with a-out"]);
    assert!(matches!(err, SagaError::Cancelled { .. }), "{err:?}");
    let pay = err.report().step("pay").unwrap();
    assert_eq!((pay.status.label(), pay.attempts), ("failed", 1));
    assert!(!err.report().cancel_ignored);
    // Told before the rollback it starts.
    assert_eq!(
        *events.0.lock().unwrap(),
        ["cancel honoured at pay", "compensated a"]
    );
}

#[test]
fn cancel_does_not_stop_the_retries_of_a_pivot_that_may_have_taken_effect() {
    let saga = Saga::builder("c")
        .step(step("a"))
        .pivot(cancelling_pivot(|| unavailable().outcome_unknown()))
        .step(step_plain("ship"))
        .build()
        .unwrap();
    let mut ctl = Ctl::default();
    let report = run(&saga, &mut ctl).unwrap();

    assert_eq!(
        ctl.effects,
        ["do a", "try pay#1", "try pay#2", "try pay#3", "do ship"]
    );
    assert_eq!(report.status, ExecutionStatus::Completed);
    assert!(report.cancel_ignored);
}

#[test]
fn cancel_whose_rollback_fails_ends_stuck() {
    let saga = Saga::builder("c")
        .step(step("a"))
        .step(
            cancels("b").undo(|c: &mut Ctl, _: Option<&String>, _: &StepInfo<'_>| {
                c.effects.push("undo b failed".to_owned());
                Err::<(), _>(PaymentError::Unavailable)
            }),
        )
        .step(step("c"))
        .undo_retry(RetryPolicy::none())
        .build()
        .unwrap();
    let mut ctl = Ctl::default();
    let err = run(&saga, &mut ctl).unwrap_err();

    assert_eq!(ctl.effects, ["do a", "do b, cancel", "undo b failed"]);
    let SagaError::Stuck {
        phase,
        remaining,
        failures,
        ..
    } = &err
    else {
        panic!("expected stuck, got {err:?}");
    };
    assert_eq!(*phase, StuckPhase::Rollback);
    assert_eq!(
        remaining.iter().map(|s| &**s).collect::<Vec<_>>(),
        ["b", "a"]
    );
    assert_eq!(failures.len(), 1);
    assert_eq!(err.report().status, ExecutionStatus::Stuck);
    assert_eq!(
        support::steps::user_error::<PaymentError>(&err),
        &PaymentError::Unavailable
    );
}
