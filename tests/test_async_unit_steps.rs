//! Async builder steps whose output is `()` and whose error a `StepError`
//! are kept as the user wrote them (one future per attempt, the output
//! erased as the executor polls): they behave as every other async step.
//! Each case runs beside the same step with another error type, which
//! takes the general path.

use std::time::Duration;

use saga_core::{ExecutionStatus, Panicked, Saga, SagaError, Step, StepError, StepInfo, Timeout};

/// What the steps did, in order.
type Log = Vec<String>;

/// How a step's future ends.
#[derive(Clone, Copy)]
enum End {
    Ok,
    Fail,
    Panic,
    Hang,
}

/// An error type of the user's own, converted by the step (`StepError`
/// takes any error).
#[derive(Debug, thiserror::Error)]
#[error("declined by {0}")]
struct Declined(&'static str);

async fn act(log: &mut Log, name: &'static str, end: End) {
    log.push(format!("do {name}"));
    tokio::task::yield_now().await;
    match end {
        End::Ok | End::Fail => {}
        End::Panic => panic!("{name} exploded"),
        End::Hang => std::future::pending::<()>().await,
    }
}

/// A step with `()` output and a `StepError`: the one-future path.
fn unit_step(name: &'static str, end: End) -> Step<Log> {
    Step::new_async(name, move |log: &mut Log, _: &StepInfo<'_>| {
        Box::pin(async move {
            act(log, name, end).await;
            match end {
                End::Fail => Err(StepError::new(Declined(name))),
                _ => Ok(()),
            }
        })
    })
    .undo_async(move |log: &mut Log, out: Option<&()>, _: &StepInfo<'_>| {
        let seen = if out.is_some() { "()" } else { "none" };
        Box::pin(async move {
            log.push(format!("undo {name} with {seen}"));
            Ok::<_, StepError>(())
        })
    })
}

/// The same step with the user's own error type: the general path.
fn converted_step(name: &'static str, end: End) -> Step<Log> {
    Step::new_async(name, move |log: &mut Log, _: &StepInfo<'_>| {
        Box::pin(async move {
            act(log, name, end).await;
            match end {
                End::Fail => Err(Declined(name)),
                _ => Ok(()),
            }
        })
    })
    .undo_async(move |log: &mut Log, out: Option<&()>, _: &StepInfo<'_>| {
        let seen = if out.is_some() { "()" } else { "none" };
        Box::pin(async move {
            log.push(format!("undo {name} with {seen}"));
            Ok::<_, Declined>(())
        })
    })
}

fn saga(step: fn(&'static str, End) -> Step<Log>, last: End, timeout: bool) -> Saga<Log> {
    let mut last = step("b", last);
    if timeout {
        last = last.timeout(Duration::from_millis(20));
    }
    match Saga::builder("unit")
        .step(step("a", End::Ok))
        .step(last)
        .build()
    {
        Ok(saga) => saga,
        Err(e) => panic!("the saga is valid: {e}"),
    }
}

fn both() -> [fn(&'static str, End) -> Step<Log>; 2] {
    [unit_step, converted_step]
}

#[tokio::test]
async fn a_unit_async_step_succeeds_and_its_report_says_so() {
    for step in both() {
        let mut log = Log::new();
        let report = saga(step, End::Ok, false).run(&mut log).await.unwrap();
        assert_eq!(log, ["do a", "do b"]);
        assert_eq!(report.status, ExecutionStatus::Completed);
        assert!(report.steps.iter().all(|s| s.attempts == 1));
    }
}

#[tokio::test]
async fn a_failed_unit_async_step_rolls_back_with_the_outputs_given() {
    for step in both() {
        let mut log = Log::new();
        let err = saga(step, End::Fail, false)
            .run(&mut log)
            .await
            .unwrap_err();
        assert_eq!(log, ["do a", "do b", "undo a with ()"]);
        assert!(matches!(err, SagaError::Compensated { ref step, .. } if &**step == "b"));
        assert_eq!(
            std::error::Error::source(&err).unwrap().to_string(),
            "declined by b"
        );
    }
}

#[tokio::test]
async fn a_panic_after_an_await_in_a_unit_async_step_is_an_unknown_outcome() {
    for step in both() {
        let mut log = Log::new();
        let err = saga(step, End::Panic, false)
            .run(&mut log)
            .await
            .unwrap_err();
        assert_eq!(log, ["do a", "do b", "undo b with none", "undo a with ()"]);
        let cause = std::error::Error::source(&err).unwrap();
        assert_eq!(
            cause.downcast_ref::<Panicked>().unwrap().message,
            "b exploded"
        );
    }
}

#[tokio::test]
async fn a_timed_out_unit_async_step_is_dropped_as_an_unknown_outcome() {
    for step in both() {
        let mut log = Log::new();
        let err = saga(step, End::Hang, true).run(&mut log).await.unwrap_err();
        assert_eq!(log, ["do a", "do b", "undo b with none", "undo a with ()"]);
        let cause = std::error::Error::source(&err).unwrap();
        assert_eq!(
            cause.downcast_ref::<Timeout>().unwrap().after,
            Duration::from_millis(20)
        );
        assert!(
            err.report()
                .steps
                .iter()
                .all(|s| s.status == saga_core::StepStatus::Compensated)
        );
    }
}

#[test]
fn a_unit_async_step_runs_blocking() {
    for step in both() {
        let mut log = Log::new();
        let err = saga(step, End::Fail, false)
            .run_blocking(&mut log)
            .unwrap_err();
        assert_eq!(log, ["do a", "do b", "undo a with ()"]);
        assert_eq!(err.report().status, ExecutionStatus::Compensated);
    }
}
