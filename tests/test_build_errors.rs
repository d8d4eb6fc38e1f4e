//! Invalid definitions are a `BuildError` from `build()`, never a panic;
//! one test per variant, with its message.

use std::time::Duration;

use saga_core::{
    BoxFuture, BuildError, Parallel, RetryPolicy, Saga, SagaBuilder, Step, StepError, StepInfo,
    Task, TaskFn, TaskFuture, UndoFn,
};

fn ok(name: &'static str) -> Step<(), ()> {
    Step::new(name, |_: &mut (), _: &StepInfo<'_>| Ok::<_, StepError>(()))
}

fn undoable(name: &'static str) -> Step<(), ()> {
    ok(name).undo(|_: &mut (), _: Option<&()>, _: &StepInfo<'_>| Ok::<_, StepError>(()))
}

fn async_ok(name: &'static str) -> Step<(), ()> {
    Step::new_async(
        name,
        |_: &mut (), _: &StepInfo<'_>| -> BoxFuture<'_, Result<(), StepError>> {
            Box::pin(async { Ok(()) })
        },
    )
}

fn build(builder: SagaBuilder<()>) -> BuildError {
    builder.build().expect_err("the definition is invalid")
}

#[test]
fn no_steps() {
    let err = build(Saga::builder("empty"));
    assert_eq!(
        err,
        BuildError::NoSteps {
            saga: "empty".into()
        }
    );
    assert_eq!(err.to_string(), "saga `empty` has no steps");
}

#[test]
fn empty_saga_name() {
    let err = build(Saga::builder("").step(ok("a")));
    assert_eq!(err, BuildError::EmptySagaName);
    assert_eq!(
        err.to_string(),
        "a saga needs a name: `Saga::builder` was given an empty one"
    );
}

#[test]
fn empty_step_name() {
    let err = build(Saga::builder("s").step(ok("a")).step(ok("")));
    assert_eq!(err, BuildError::EmptyName { saga: "s".into() });
    assert_eq!(err.to_string(), "saga `s` has a step with an empty name");
}

#[test]
fn duplicate_step_name() {
    let err = build(
        Saga::builder("s")
            .step(ok("reserve"))
            .step(ok("charge"))
            .step(undoable("reserve")),
    );
    assert_eq!(
        err,
        BuildError::DuplicateStep {
            saga: "s".into(),
            step: "reserve".into()
        }
    );
    assert_eq!(err.to_string(), "saga `s` has two steps named `reserve`");
}

#[test]
fn second_pivot() {
    let err = build(Saga::builder("s").pivot(ok("pay")).pivot(ok("ship")));
    assert_eq!(
        err,
        BuildError::SecondPivot {
            saga: "s".into(),
            first: "pay".into(),
            second: "ship".into()
        }
    );
    assert_eq!(err.to_string(), "saga `s` has two pivots: `pay` and `ship`");
}

#[test]
fn compensation_on_the_pivot() {
    let err = build(
        Saga::builder("s")
            .step(undoable("a"))
            .pivot(undoable("pay")),
    );
    assert_eq!(
        err,
        BuildError::CompensationAfterPivot {
            saga: "s".into(),
            step: "pay".into(),
            pivot: "pay".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "step `pay` of saga `s` has a compensation but is on or after the pivot `pay`"
    );
}

#[test]
fn compensation_after_the_pivot() {
    let err = build(
        Saga::builder("s")
            .pivot(ok("pay"))
            .step(ok("ship"))
            .step(undoable("notify")),
    );
    assert_eq!(
        err.to_string(),
        "step `notify` of saga `s` has a compensation but is on or after the pivot `pay`"
    );
}

#[test]
fn compensation_after_the_pivot_from_a_task() {
    struct Refund;
    impl Task<()> for Refund {
        type Output = ();
        const NAME: &'static str = "refund";
        const ACTION: TaskFn<(), (), ()> = TaskFn::Exclusive(|_, _| Ok(()));
        const UNDO: Option<UndoFn<(), (), ()>> = Some(UndoFn::Exclusive(|_, _, _| Ok(())));
    }
    let err = build(Saga::builder("s").pivot(ok("pay")).task(Refund));
    assert!(matches!(err, BuildError::CompensationAfterPivot { ref step, .. } if step == "refund"));
}

#[test]
fn timeout_on_a_sync_step() {
    let err = build(Saga::builder("s").step(ok("a").timeout(Duration::from_secs(1))));
    assert_eq!(
        err,
        BuildError::TimeoutOnSyncStep {
            saga: "s".into(),
            step: "a".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "step `a` of saga `s` is sync and has a timeout; a sync step cannot be pre-empted, make it async"
    );
}

#[test]
fn zero_timeout() {
    let err = build(Saga::builder("s").step(async_ok("a").timeout(Duration::ZERO)));
    assert_eq!(
        err,
        BuildError::ZeroTimeout {
            saga: "s".into(),
            step: "a".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "step `a` of saga `s` has a timeout of zero, which would fail every attempt before it starts; give a positive duration or none"
    );
}

#[test]
fn slash_in_step_name() {
    let err = build(Saga::builder("s").step(ok("a")).step(ok("refund/7")));
    assert_eq!(
        err,
        BuildError::SlashInStepName {
            saga: "s".into(),
            step: "refund/7".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "step `refund/7` of saga `s` has a `/` in its name, which would make idempotency keys (`{execution_id}/{step}`) ambiguous; rename the step, and if an older build ran this saga, finish its in-flight executions with that build first (a renamed step gets new keys)"
    );
}

#[test]
fn zero_attempts_on_a_step() {
    let err = build(Saga::builder("s").step(ok("a").retry(RetryPolicy::attempts(0))));
    assert_eq!(
        err,
        BuildError::ZeroAttempts {
            saga: "s".into(),
            step: "a".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "step `a` of saga `s` has a retry policy of zero attempts; use at least 1"
    );
}

#[test]
fn zero_attempts_on_a_steps_compensation() {
    let err = build(Saga::builder("s").step(undoable("a").undo_retry(RetryPolicy::attempts(0))));
    assert!(matches!(err, BuildError::ZeroAttempts { ref step, .. } if step == "a"));
}

#[test]
fn zero_attempts_on_the_sagas_compensation_policy() {
    let err = build(
        Saga::builder("s")
            .step(undoable("a"))
            .undo_retry(RetryPolicy::attempts(0)),
    );
    assert_eq!(
        err.to_string(),
        "step `(compensation default)` of saga `s` has a retry policy of zero attempts; use at least 1"
    );
}

#[test]
fn valid_definitions_build() {
    // Every rule above has its legal counterpart.
    let saga = Saga::builder("s")
        .step(undoable("a"))
        .step(async_ok("b").timeout(Duration::from_secs(1)))
        .pivot(ok("pay"))
        .step(ok("ship").retry(RetryPolicy::attempts(3)))
        .build()
        .unwrap();
    assert_eq!(saga.name(), "s");
    assert_eq!(saga.shape().len(), 4);
    // A build error is its own type, with no run and no report.
    fn is_std_error<E: std::error::Error + Send + Sync + 'static>(_: &E) {}
    is_std_error(&BuildError::NoSteps { saga: "x".into() });
}

/// Tasks written by hand, each breaking one rule that `build` checks.
mod tasks {
    use super::*;

    pub struct Charge;
    impl Task<()> for Charge {
        type Output = ();
        const NAME: &'static str = "charge";
        const ACTION: TaskFn<(), (), ()> = TaskFn::Exclusive(|_, _| Ok(()));
    }

    /// Another type with the same name.
    pub struct ChargeAgain;
    impl Task<()> for ChargeAgain {
        type Output = ();
        const NAME: &'static str = "charge";
        const ACTION: TaskFn<(), (), ()> = TaskFn::Exclusive(|_, _| Ok(()));
    }

    /// The pivot, with an undo.
    pub struct UndoablePivot;
    impl Task<()> for UndoablePivot {
        type Output = ();
        const NAME: &'static str = "ship";
        const PIVOT: bool = true;
        const ACTION: TaskFn<(), (), ()> = TaskFn::Exclusive(|_, _| Ok(()));
        const UNDO: Option<UndoFn<(), (), ()>> = Some(UndoFn::Exclusive(|_, _, _| Ok(())));
    }

    /// A sync action with a timeout.
    pub struct SyncTimeout;
    impl Task<()> for SyncTimeout {
        type Output = ();
        const NAME: &'static str = "wait";
        const TIMEOUT: Option<Duration> = Some(Duration::from_secs(1));
        const ACTION: TaskFn<(), (), ()> = TaskFn::Exclusive(|_, _| Ok(()));
    }

    /// Takes the context as `&mut C`.
    pub struct Exclusive;
    impl Task<()> for Exclusive {
        type Output = ();
        const NAME: &'static str = "book";
        const ACTION: TaskFn<(), (), ()> =
            TaskFn::ExclusiveAsync(|_, _| TaskFuture::new(async { Ok(()) }));
    }

    /// Takes the context shared, and its undo exclusively.
    pub struct ExclusiveUndo;
    impl Task<()> for ExclusiveUndo {
        type Output = ();
        const NAME: &'static str = "hotel";
        const ACTION: TaskFn<(), (), ()> = TaskFn::Shared(|_, _| Ok(()));
        const UNDO: Option<UndoFn<(), (), ()>> = Some(UndoFn::Exclusive(|_, _, _| Ok(())));
    }

    /// The pivot, taking the context shared (as a branch may).
    pub struct SharedPivot;
    impl Task<()> for SharedPivot {
        type Output = ();
        const NAME: &'static str = "charge";
        const ACTION: TaskFn<(), (), ()> = TaskFn::Shared(|_, _| Ok(()));
        const PIVOT: bool = true;
    }
}

#[test]
fn a_task_is_checked_as_any_step() {
    use tasks::*;
    let err = build(Saga::builder("s").task(Charge).task(ChargeAgain));
    assert_eq!(
        err,
        BuildError::DuplicateStep {
            saga: "s".into(),
            step: "charge".into()
        }
    );
    let err = build(Saga::builder("s").task(UndoablePivot));
    assert!(
        matches!(err, BuildError::CompensationAfterPivot { ref step, ref pivot, .. } if step == "ship" && pivot == "ship"),
        "{err}"
    );
    let err = build(Saga::builder("s").task(SyncTimeout));
    assert!(
        matches!(err, BuildError::TimeoutOnSyncStep { ref step, .. } if step == "wait"),
        "{err}"
    );
    for (group, step) in [
        (Parallel::new().task(Exclusive), "book"),
        (Parallel::new().task(ExclusiveUndo), "hotel"),
    ] {
        let err = build(Saga::builder("s").parallel(group));
        assert_eq!(
            err,
            BuildError::ExclusiveContextInGroup {
                saga: "s".into(),
                step: step.into()
            }
        );
    }
    // The pivot is one step run alone: a group holding it is refused (a
    // group's rollback would undo its siblings past it).
    let group = Parallel::new()
        .task(SharedPivot)
        .step(Step::shared("hotel", |_: &(), _: &StepInfo<'_>| {
            Ok::<_, StepError>(())
        }));
    let err = build(Saga::builder("s").parallel(group));
    assert_eq!(
        err,
        BuildError::PivotInGroup {
            saga: "s".into(),
            step: "charge".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "step `charge` of saga `s` is the pivot but is in a parallel group; make it a step of its own, before or after the group"
    );
}
