//! Parallel groups: branches run at once on a shared context, and roll
//! back together.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga_core::{
    BuildError, CancellationToken, ExecutionStatus, Outcome, Parallel, RetryOn, RetryPolicy,
    RunOptions, Saga, SagaError, Step, StepError, StepInfo, StepStatus,
};
use tokio::sync::Barrier;

// A fan-out declared with `saga!`; the test runs the same code.
#[path = "../examples/parallel_order.rs"]
mod parallel_order;

#[test]
fn the_parallel_example_runs_and_rolls_back_its_group() {
    parallel_order::main().expect("the example runs and behaves as it says");
}

/// The effects of a run, in the order they happened.
#[derive(Default)]
struct Trip {
    effects: Mutex<Vec<String>>,
    barrier: Option<Arc<Barrier>>,
}

impl Trip {
    fn push(&self, effect: impl Into<String>) {
        self.effects.lock().unwrap().push(effect.into());
    }

    fn effects(&self) -> Vec<String> {
        self.effects.lock().unwrap().clone()
    }
}

fn seq_step(name: &'static str) -> Step<Trip> {
    Step::new(name, move |t: &mut Trip, _: &StepInfo<'_>| {
        t.push(name);
        Ok::<_, StepError>(())
    })
    .undo(move |t: &mut Trip, _: Option<&()>, _: &StepInfo<'_>| {
        t.push(format!("undo {name}"));
        Ok::<_, StepError>(())
    })
}

/// An async branch that succeeds, with an output its compensation checks.
fn branch_ok(name: &'static str) -> Step<Trip, String> {
    Step::shared_async(name, move |t: &Trip, _: &StepInfo<'_>| {
        Box::pin(async move {
            tokio::task::yield_now().await;
            t.push(name);
            Ok::<_, StepError>(format!("{name}-booking"))
        })
    })
    .undo_shared(move |t: &Trip, out: Option<&String>, _: &StepInfo<'_>| {
        t.push(format!("undo {name} {}", out.map_or("?", |s| s.as_str())));
        Ok::<_, StepError>(())
    })
}

#[tokio::test(flavor = "current_thread")]
async fn branches_run_concurrently() {
    // Both branches wait at a barrier of two: run one after the other, the
    // first would wait forever and the test time out.
    let meet = |name: &'static str| {
        Step::shared_async(name, move |t: &Trip, _: &StepInfo<'_>| {
            Box::pin(async move {
                let barrier = t.barrier.clone().ok_or("no barrier")?;
                barrier.wait().await;
                t.push(name);
                Ok::<_, StepError>(())
            })
        })
    };
    let saga = Saga::builder("meet")
        .parallel(Parallel::new().step(meet("a")).step(meet("b")))
        .build()
        .unwrap();
    let mut trip = Trip {
        barrier: Some(Arc::new(Barrier::new(2))),
        ..Trip::default()
    };
    let report = tokio::time::timeout(Duration::from_secs(10), saga.run(&mut trip))
        .await
        .expect("the branches did not run concurrently")
        .unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
    let mut effects = trip.effects();
    effects.sort();
    assert_eq!(effects, ["a", "b"]);
}

#[tokio::test(flavor = "current_thread")]
async fn failing_branch_rolls_back_siblings_then_earlier_steps() {
    // Siblings: one succeeded, one failed cleanly (not compensated), one
    // still running when the failure happens (let finish, compensated), and
    // one retrying (its retries stop).
    let fail_at_once = Step::shared_async("payment", |t: &Trip, _: &StepInfo<'_>| {
        Box::pin(async move {
            t.push("payment tried");
            Err::<(), _>(StepError::new("card declined"))
        })
    })
    .undo_shared(|t: &Trip, _: Option<&()>, _: &StepInfo<'_>| {
        t.push("undo payment");
        Ok::<_, StepError>(())
    });
    let slow = Step::shared_async("courier", |t: &Trip, _: &StepInfo<'_>| {
        Box::pin(async move {
            for _ in 0..5 {
                tokio::task::yield_now().await;
            }
            t.push("courier");
            Ok::<_, StepError>(7_u32)
        })
    })
    .undo_shared(|t: &Trip, out: Option<&u32>, _: &StepInfo<'_>| {
        t.push(format!("undo courier {out:?}"));
        Ok::<_, StepError>(())
    });
    let retrying = Step::shared_async("stock", |t: &Trip, info: &StepInfo<'_>| {
        let attempt = info.attempt();
        Box::pin(async move {
            t.push(format!("stock attempt {attempt}"));
            tokio::task::yield_now().await;
            Err::<(), _>(StepError::new("busy"))
        })
    })
    .retry(RetryPolicy::attempts(100).with_backoff(Duration::from_millis(1)));
    let saga = Saga::builder("trip")
        .step(seq_step("order"))
        .parallel(
            Parallel::new()
                .step(branch_ok("hotel"))
                .step(fail_at_once)
                .step(slow)
                .step(retrying),
        )
        .step(seq_step("never"))
        .build()
        .unwrap();
    let mut trip = Trip::default();
    let err = saga.run(&mut trip).await.unwrap_err();
    let SagaError::Compensated {
        step,
        error,
        report,
        ..
    } = &err
    else {
        panic!("expected a compensated run, got {err:?}");
    };
    assert_eq!(&**step, "payment");
    assert_eq!(error.to_string(), "card declined");
    let effects = trip.effects();
    // Each compensation once, the failed branch's never, the group's before
    // the earlier step's.
    let count = |e: &str| effects.iter().filter(|x| *x == e).count();
    assert_eq!(count("undo hotel hotel-booking"), 1, "{effects:?}");
    assert_eq!(count("undo courier Some(7)"), 1, "{effects:?}");
    assert_eq!(count("undo payment"), 0, "{effects:?}");
    assert_eq!(count("undo never"), 0, "{effects:?}");
    assert_eq!(effects.last().map(String::as_str), Some("undo order"));
    assert!(
        effects.contains(&"courier".to_owned()),
        "a running sibling is let finish"
    );
    let stock_attempts = report.step("stock").unwrap().attempts;
    assert!(
        stock_attempts < 100,
        "retries stop when a sibling fails: {stock_attempts}"
    );
    let statuses = report.statuses();
    assert_eq!(
        statuses,
        [
            ("order", StepStatus::Compensated),
            ("hotel", StepStatus::Compensated),
            ("payment", StepStatus::Failed),
            ("courier", StepStatus::Compensated),
            ("stock", StepStatus::Failed),
            ("never", StepStatus::Pending),
        ]
    );
    assert_eq!(report.step("never").unwrap().outcome, Outcome::NotStarted);
}

#[tokio::test(flavor = "current_thread")]
async fn cancel_safe_sibling_is_dropped_and_compensated() {
    let hang = Step::shared_async("hang", |t: &Trip, _: &StepInfo<'_>| {
        Box::pin(async move {
            t.push("hang started");
            std::future::pending::<()>().await;
            Ok::<_, StepError>(())
        })
    })
    .cancel_safe()
    .undo_shared(|t: &Trip, out: Option<&()>, _: &StepInfo<'_>| {
        t.push(format!("undo hang {out:?}"));
        Ok::<_, StepError>(())
    });
    let fail = Step::shared_async("fail", |_: &Trip, _: &StepInfo<'_>| {
        Box::pin(async move {
            tokio::task::yield_now().await;
            Err::<(), _>("no")
        })
    });
    let saga = Saga::builder("drop")
        .parallel(Parallel::new().step(hang).step(fail))
        .build()
        .unwrap();
    let mut trip = Trip::default();
    let err = tokio::time::timeout(Duration::from_secs(10), saga.run(&mut trip))
        .await
        .expect("the cancel-safe sibling was not dropped")
        .unwrap_err();
    let report = err.report();
    assert_eq!(report.status, ExecutionStatus::Compensated);
    assert_eq!(report.step("hang").unwrap().outcome, Outcome::Unknown);
    assert_eq!(trip.effects(), ["hang started", "undo hang None"]);
}

#[test]
fn panic_in_a_branch_is_an_unknown_outcome() {
    let boom = Step::shared(
        "boom",
        |_: &Trip, _: &StepInfo<'_>| -> Result<(), StepError> { panic!("branch exploded") },
    )
    .undo_shared(|t: &Trip, out: Option<&()>, _: &StepInfo<'_>| {
        t.push(format!("undo boom {out:?}"));
        Ok::<_, StepError>(())
    });
    let ok = Step::shared("ok", |t: &Trip, _: &StepInfo<'_>| {
        t.push("ok");
        Ok::<_, StepError>(())
    })
    .undo_shared(|t: &Trip, _: Option<&()>, _: &StepInfo<'_>| {
        t.push("undo ok");
        Ok::<_, StepError>(())
    });
    let saga = Saga::builder("panics")
        .parallel(Parallel::new().step(ok).step(boom))
        .build()
        .unwrap();
    let mut trip = Trip::default();
    let err = saga.run_blocking(&mut trip).unwrap_err();
    assert!(matches!(err, SagaError::Compensated { .. }), "{err}");
    let boom = err.report().step("boom").unwrap();
    assert_eq!(boom.outcome, Outcome::Unknown);
    assert_eq!(boom.status, StepStatus::Compensated);
    let mut effects = trip.effects();
    effects.sort();
    assert_eq!(effects, ["ok", "undo boom None", "undo ok"]);
}

#[test]
fn sync_branches_run_one_after_another_under_run_blocking() {
    let saga = Saga::builder("sync")
        .parallel(
            Parallel::new()
                .step(Step::shared("a", |t: &Trip, _: &StepInfo<'_>| {
                    t.push("a");
                    Ok::<_, StepError>(())
                }))
                .step(Step::shared("b", |t: &Trip, _: &StepInfo<'_>| {
                    t.push("b");
                    Ok::<_, StepError>(())
                })),
        )
        .build()
        .unwrap();
    let mut trip = Trip::default();
    let report = saga.run_blocking(&mut trip).unwrap();
    assert_eq!(trip.effects(), ["a", "b"]);
    assert_eq!(
        report.statuses(),
        [("a", StepStatus::Succeeded), ("b", StepStatus::Succeeded)]
    );
}

#[test]
fn a_branch_taking_the_context_exclusively_is_a_build_error() {
    let err = Saga::builder("bad")
        .parallel(Parallel::new().step(seq_step("exclusive")))
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        BuildError::ExclusiveContextInGroup {
            saga: "bad".into(),
            step: "exclusive".into()
        }
    );
    assert!(err.to_string().contains("`Step::shared`"), "{err}");
    let err = Saga::<Trip>::builder("empty")
        .parallel(Parallel::new())
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        BuildError::EmptyGroup {
            saga: "empty".into()
        }
    );
}

#[test]
fn failed_compensation_in_a_group_leaves_the_run_stuck_and_halts() {
    let bad_undo = Step::shared("flaky", |t: &Trip, _: &StepInfo<'_>| {
        t.push("flaky");
        Ok::<_, StepError>(())
    })
    .undo_shared(|t: &Trip, _: Option<&()>, _: &StepInfo<'_>| {
        t.push("undo flaky failed");
        Err::<(), _>("refund service down")
    })
    .undo_retry(
        RetryPolicy::attempts(2)
            .with_backoff(Duration::ZERO)
            .retry_on(RetryOn::Any),
    );
    let fail = Step::shared("fail", |_: &Trip, _: &StepInfo<'_>| Err::<(), _>("no"));
    let saga = Saga::builder("stuck")
        .step(seq_step("first"))
        .parallel(Parallel::new().step(bad_undo).step(fail))
        .build()
        .unwrap();
    let mut trip = Trip::default();
    let err = saga.run_blocking(&mut trip).unwrap_err();
    let SagaError::Stuck {
        remaining,
        failures,
        ..
    } = &err
    else {
        panic!("expected stuck, got {err}");
    };
    let remaining: Vec<&str> = remaining.iter().map(|s| &**s).collect();
    assert_eq!(remaining, ["flaky", "first"]);
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert_eq!(
        trip.effects(),
        ["first", "flaky", "undo flaky failed", "undo flaky failed"]
    );
    assert_eq!(
        err.report().step("first").unwrap().status,
        StepStatus::Succeeded
    );
}

#[tokio::test(flavor = "current_thread")]
async fn each_compensation_runs_once_and_none_for_branches_that_never_started() {
    // Two groups around a failing step: the first group's branches are
    // compensated once each; the second group never starts, so none of its
    // branches is compensated, nor is the step that failed.
    let refuse = Step::new("charge", |t: &mut Trip, _: &StepInfo<'_>| {
        t.push("charge tried");
        Err::<(), _>(StepError::new("card declined"))
    })
    .undo(|t: &mut Trip, _: Option<&()>, _: &StepInfo<'_>| {
        t.push("undo charge");
        Ok::<_, StepError>(())
    });
    let saga = Saga::builder("twice")
        .step(seq_step("order"))
        .parallel(
            Parallel::new()
                .step(branch_ok("hotel"))
                .step(branch_ok("flight"))
                .step(branch_ok("car")),
        )
        .step(refuse)
        .parallel(
            Parallel::new()
                .step(branch_ok("museum"))
                .step(branch_ok("dinner")),
        )
        .build()
        .unwrap();
    let mut trip = Trip::default();
    let err = saga.run(&mut trip).await.unwrap_err();
    assert!(matches!(err, SagaError::Compensated { .. }), "{err}");
    let effects = trip.effects();
    let count = |e: &str| effects.iter().filter(|x| *x == e).count();
    for branch in ["hotel", "flight", "car"] {
        assert_eq!(count(branch), 1, "{effects:?}");
        assert_eq!(
            count(&format!("undo {branch} {branch}-booking")),
            1,
            "{effects:?}"
        );
    }
    assert_eq!(count("undo order"), 1, "{effects:?}");
    assert_eq!(effects.last().map(String::as_str), Some("undo order"));
    for never in ["museum", "dinner", "undo charge"] {
        assert!(
            !effects.iter().any(|e| e.starts_with(never)),
            "{never}: {effects:?}"
        );
    }
    // Nine effects: order, three branches, the refusal, three undos of
    // the branches, the undo of order; nothing else ran.
    assert_eq!(effects.len(), 9, "{effects:?}");
    let report = err.report();
    for never in ["museum", "dinner"] {
        let step = report.step(never).unwrap();
        assert_eq!(
            (step.status, step.outcome, step.compensation_attempts),
            (StepStatus::Pending, Outcome::NotStarted, 0),
            "{never}"
        );
    }
    for branch in ["hotel", "flight", "car"] {
        let step = report.step(branch).unwrap();
        assert_eq!(
            (step.status, step.compensation_attempts),
            (StepStatus::Compensated, 1),
            "{branch}"
        );
    }
    assert_eq!(report.step("charge").unwrap().status, StepStatus::Failed);
}

/// After the pivot nothing rolls back: branches there have no compensation.
fn invoice() -> Step<Trip> {
    Step::shared("invoice", |t: &Trip, _: &StepInfo<'_>| {
        t.push("invoice");
        Ok::<_, StepError>(())
    })
}

#[tokio::test(flavor = "current_thread")]
async fn a_group_after_the_pivot_goes_forward_or_sticks() {
    let flaky_calls = Arc::new(AtomicU32::new(0));
    let calls = Arc::clone(&flaky_calls);
    let flaky = Step::shared_async("notify", move |_: &Trip, _: &StepInfo<'_>| {
        let calls = Arc::clone(&calls);
        Box::pin(async move {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err::<(), _>(StepError::new("mail server busy"))
            } else {
                Ok(())
            }
        })
    })
    .retry(RetryPolicy::attempts(3).with_backoff(Duration::from_millis(1)));
    let saga = Saga::builder("after")
        .pivot(Step::new("ship", |t: &mut Trip, _: &StepInfo<'_>| {
            t.push("ship");
            Ok::<_, StepError>(())
        }))
        .parallel(Parallel::new().step(flaky).step(invoice()))
        .build()
        .unwrap();
    let report = saga.run(&mut Trip::default()).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
    assert_eq!(report.step("notify").unwrap().attempts, 2);

    let never = Step::shared("never", |_: &Trip, _: &StepInfo<'_>| {
        Err::<(), _>(StepError::new("gone").permanent())
    });
    let saga = Saga::builder("after")
        .pivot(Step::new("ship", |_: &mut Trip, _: &StepInfo<'_>| {
            Ok::<_, StepError>(())
        }))
        .parallel(Parallel::new().step(never).step(invoice()))
        .build()
        .unwrap();
    let err = saga.run(&mut Trip::default()).await.unwrap_err();
    let SagaError::Stuck { remaining, .. } = &err else {
        panic!("expected stuck, got {err}");
    };
    assert_eq!(
        remaining.iter().map(|s| &**s).collect::<Vec<_>>(),
        ["never"]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn run_cancellation_drops_cancel_safe_branches() {
    let token = CancellationToken::new();
    let started = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&started);
    let waiting = Step::shared_async("waiting", move |_: &Trip, _: &StepInfo<'_>| {
        let flag = Arc::clone(&flag);
        Box::pin(async move {
            flag.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
            Ok::<_, StepError>(())
        })
    })
    .cancel_safe()
    .undo_shared(|t: &Trip, _: Option<&()>, _: &StepInfo<'_>| {
        t.push("undo waiting");
        Ok::<_, StepError>(())
    });
    let saga = Saga::builder("cancel")
        .parallel(Parallel::new().step(waiting).step(branch_ok("hotel")))
        .build()
        .unwrap();
    let mut trip = Trip::default();
    let canceller = {
        let token = token.clone();
        async move {
            while !started.load(Ordering::SeqCst) {
                tokio::task::yield_now().await;
            }
            token.cancel();
        }
    };
    let run = saga.run_with(
        &mut trip,
        RunOptions::new().with_cancellation(token.clone()),
    );
    let (result, ()) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(run, canceller)
    })
    .await
    .expect("cancellation did not drop the cancel-safe branch");
    let err = result.unwrap_err();
    assert!(matches!(err, SagaError::Cancelled { .. }), "{err}");
    let mut effects = trip.effects();
    effects.sort();
    assert_eq!(
        effects,
        ["hotel", "undo hotel hotel-booking", "undo waiting"]
    );
}

#[test]
fn diagram_shows_fork_and_join() {
    let saga = Saga::builder("trip")
        .step(seq_step("order"))
        .parallel(
            Parallel::new()
                .step(branch_ok("hotel"))
                .step(branch_ok("flight")),
        )
        .step(seq_step("confirm"))
        .build()
        .unwrap();
    let mermaid = saga.to_mermaid();
    assert!(mermaid.contains("fork0"), "{mermaid}");
    assert!(mermaid.contains("join0"), "{mermaid}");
    let dot = saga.to_dot();
    assert!(dot.contains("fork0"), "{dot}");
    assert!(dot.contains("join0"), "{dot}");
}

/// A run future must stay `Send` for contexts that are `Send` but not
/// `Sync`: groups require `Sync` only where they are built.
#[test]
fn run_future_is_send_without_sync_context() {
    fn assert_send<T: Send>(_: &T) {}
    struct NotSync(std::cell::Cell<u32>);
    let saga = Saga::builder("cell")
        .step(Step::new("bump", |c: &mut NotSync, _: &StepInfo<'_>| {
            c.0.set(c.0.get() + 1);
            Ok::<_, StepError>(())
        }))
        .build()
        .unwrap();
    let mut ctx = NotSync(std::cell::Cell::new(0));
    let future = saga.run(&mut ctx);
    assert_send(&future);
    drop(future);
}
