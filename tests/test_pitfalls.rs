//! One test per defect of the Python original (`seed/PITFALLS.md`) that
//! applies to the in-memory engine, named after it.
//!
//! Not here: 11 (parallel groups: their own issue, tested with them) and
//! 13 ("no tests are shipped": this whole directory).

mod support;

// The README's first command runs this example; the test runs the same code.
#[path = "../examples/order_saga.rs"]
mod order_saga;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga_core::clock::TestClock;
use saga_core::{
    CancellationToken, Context, ContextError, ExecutionStatus, RetryPolicy, RunOptions, Saga,
    SagaError, Step, StepError, StepInfo, StepStatus, StuckPhase,
};
use support::steps::*;

/// Pitfall 1: The README example did not run.
#[test]
fn pitfall_01_readme_example_runs() {
    order_saga::main().expect("the example runs and behaves as it says");
}

/// Pitfall 2: Two failure channels: one error type rolled back, another was
/// swallowed and the saga reported success. Here every way a step can fail
/// goes through the one channel: the rollback, then `Err`.
#[test]
fn pitfall_02_single_failure_channel() {
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

/// Pitfall 3: A step could be compensated twice (by itself, then by the rollback).
/// Here each compensation takes effect once: the failed step is never
/// compensated, an unknown one once, and a compensation retried after a
/// lost answer is absorbed by its idempotency key.
#[test]
fn pitfall_03_never_compensated_twice() {
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
                .compensate(refund("a")),
        )
        .step(
            Step::new("b", |_: &mut Bank, _: &StepInfo<'_>| {
                Err::<(), _>(StepError::new("lost").outcome_unknown())
            })
            .compensate(refund("b")),
        )
        .compensation_retry(exact_any(3))
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

/// Pitfall 4: A failing task without a compensation crashed the framework and
/// nothing was rolled back.
#[test]
fn pitfall_04_failing_step_without_compensation_rolls_back_the_rest() {
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

/// A hand-written error type: no thiserror, no framework trait.
#[derive(Debug)]
struct Handmade {
    code: u16,
}

impl std::fmt::Display for Handmade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "handmade error {}", self.code)
    }
}

impl std::error::Error for Handmade {}

/// Pitfall 5: An error type the framework did not expect skipped the rollback.
/// Here any error type rolls back, and comes back as itself.
#[test]
fn pitfall_05_any_error_type_rolls_back() {
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

/// Pitfall 6: One failing compensation aborted the rest of the rollback, and
/// compensation failures never reached the caller. Here the caller gets a
/// `Stuck` error carrying the compensation's own error and what remains;
/// with `continue_on_compensation_failure` the rest of the rollback runs.
#[test]
fn pitfall_06_failing_compensation_reaches_the_caller() {
    let build = |continue_on_failure: bool| {
        Saga::builder("undo-fails")
            .step(compensable("a"))
            .step(compensable("b").compensate(
                |r: &mut Rec, _: Option<&String>, _: &StepInfo<'_>| {
                    r.push("undo b failed");
                    Err::<(), _>(Handmade { code: 503 })
                },
            ))
            .step(failing("c", declined))
            .compensation_retry(RetryPolicy::none())
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

/// Pitfall 7: A saga object was single-use: running it again compensated earlier
/// runs' steps too. Here one definition runs many times, each run on its
/// own state.
#[test]
fn pitfall_07_definition_reusable() {
    struct Run {
        n: u32,
        effects: Vec<String>,
    }
    let saga = Saga::builder("reuse")
        .step(
            Step::new("a", |r: &mut Run, _: &StepInfo<'_>| {
                r.effects.push(format!("do a{}", r.n));
                Ok::<_, StepError>(r.n)
            })
            .compensate(|r: &mut Run, n: Option<&u32>, _: &StepInfo<'_>| {
                r.effects.push(format!("undo a{}", n.unwrap()));
                Ok::<_, StepError>(())
            }),
        )
        .step(Step::new("b", |r: &mut Run, _: &StepInfo<'_>| {
            if r.n.is_multiple_of(2) {
                Err("even runs fail")
            } else {
                r.effects.push(format!("do b{}", r.n));
                Ok(())
            }
        }))
        .build()
        .unwrap();
    let runs: Vec<Vec<String>> = (1..=4)
        .map(|n| {
            let mut run = Run {
                n,
                effects: Vec::new(),
            };
            let _ = saga.run_blocking(&mut run);
            run.effects
        })
        .collect();
    assert_eq!(
        runs,
        [
            vec!["do a1", "do b1"],
            vec!["do a2", "undo a2"],
            vec!["do a3", "do b3"],
            vec!["do a4", "undo a4"],
        ]
    );
}

/// Pitfall 8: Importing the original replaced the process's log handlers. Here the
/// library never installs a logger nor raises the log level: after runs
/// that log at every level, the process can still install its own. (That
/// the error text is logged is in `test_observer_logging.rs`.)
#[test]
fn pitfall_08_the_library_installs_no_logger() {
    struct Quiet;
    impl log::Log for Quiet {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            false
        }
        fn log(&self, _: &log::Record<'_>) {}
        fn flush(&self) {}
    }
    static QUIET: Quiet = Quiet;

    let saga =
        Saga::builder("no-logger")
            .step(compensable("a").compensate(
                |_: &mut Rec, _: Option<&String>, _: &StepInfo<'_>| Err::<(), _>("refund failed"),
            ))
            .step(failing("b", declined))
            .compensation_retry(RetryPolicy::none())
            .build()
            .unwrap();
    saga.run_blocking(&mut Rec::default()).unwrap_err();

    assert_eq!(log::max_level(), log::LevelFilter::Off);
    assert!(
        log::set_logger(&QUIET).is_ok(),
        "the library installed a logger"
    );
}

/// Pitfall 9: A task name containing `{` turned a failure into a format error with
/// no rollback.
#[test]
fn pitfall_09_braces_in_names() {
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

/// Pitfall 10: A failed task stayed "in progress", there was no "compensated"
/// status, and timing used the wall clock. Here no run ends with a step
/// still running or compensating, every end has its status, and durations
/// come from the run's monotonic clock (here a virtual one: minutes of
/// "work" that take no real time).
#[test]
fn pitfall_10_statuses_and_monotonic_timing() {
    struct Slow {
        clock: TestClock,
    }
    let work = |name: &'static str, fail: bool| {
        Step::new(name, move |s: &mut Slow, _: &StepInfo<'_>| {
            s.clock.advance(Duration::from_secs(60));
            if fail {
                Err(StepError::new("failed"))
            } else {
                Ok(())
            }
        })
        .compensate(|s: &mut Slow, _: Option<&()>, _: &StepInfo<'_>| {
            s.clock.advance(Duration::from_secs(30));
            Ok::<_, StepError>(())
        })
    };
    let saga = Saga::builder("timing")
        .step(work("a", false))
        .step(work("b", true))
        .build()
        .unwrap();
    let clock = TestClock::new();
    let mut slow = Slow {
        clock: clock.clone(),
    };
    let err = saga
        .run_blocking_with(&mut slow, RunOptions::new().with_clock(clock))
        .unwrap_err();
    let report = err.report();
    assert_eq!(
        report.statuses(),
        [("a", StepStatus::Compensated), ("b", StepStatus::Failed)]
    );
    assert_eq!(report.steps[0].duration, Duration::from_secs(60));
    assert_eq!(
        report.steps[0].compensation_duration,
        Duration::from_secs(30)
    );
    assert_eq!(report.steps[1].duration, Duration::from_secs(60));
    assert_eq!(report.duration, Duration::from_secs(150));

    // However a run ends, no step is left running or compensating.
    let ends: Vec<SagaError> =
        vec![
            // Stuck forward.
            Saga::builder("s")
                .pivot(plain("p"))
                .step(Step::new("x", |_: &mut Rec, _: &StepInfo<'_>| {
                    Err::<(), _>(declined())
                }))
                .build()
                .unwrap()
                .run_blocking(&mut Rec::default())
                .unwrap_err(),
            // Stuck in rollback.
            Saga::builder("s")
                .step(compensable("a").compensate(
                    |_: &mut Rec, _: Option<&String>, _: &StepInfo<'_>| Err::<(), _>("no"),
                ))
                .step(failing("x", declined))
                .compensation_retry(RetryPolicy::none())
                .build()
                .unwrap()
                .run_blocking(&mut Rec::default())
                .unwrap_err(),
            // Cancelled.
            {
                let token = CancellationToken::new();
                let cancel = token.clone();
                Saga::builder("s")
                    .step(compensable("a"))
                    .step(Step::new("c", move |_: &mut Rec, _: &StepInfo<'_>| {
                        cancel.cancel();
                        Ok::<_, StepError>(())
                    }))
                    .step(plain("never"))
                    .build()
                    .unwrap()
                    .run_blocking_with(
                        &mut Rec::default(),
                        RunOptions::new().with_cancellation(token),
                    )
                    .unwrap_err()
            },
        ];
    let statuses: Vec<Vec<StepStatus>> = ends
        .iter()
        .map(|e| e.report().steps.iter().map(|s| s.status).collect())
        .collect();
    assert_eq!(
        statuses,
        [
            vec![StepStatus::Succeeded, StepStatus::Failed],
            vec![StepStatus::CompensationFailed, StepStatus::Failed],
            vec![
                StepStatus::Compensated,
                StepStatus::Skipped,
                StepStatus::Pending
            ],
        ]
    );
    assert!(ends.iter().all(|e| e.report().status.is_finished()));
}

/// Pitfall 12: An async task was marked completed without ever running.
#[test]
fn pitfall_12_async_step_really_runs() {
    let polled = Arc::new(Mutex::new(0_u32));
    let saga = {
        let polled = Arc::clone(&polled);
        Saga::builder("async")
            .step(Step::new_async(
                "slow",
                move |r: &mut Rec, _: &StepInfo<'_>| {
                    let polled = Arc::clone(&polled);
                    Box::pin(async move {
                        // Ten suspension points: the step completes only if the
                        // engine drives the future to its end.
                        for _ in 0..10 {
                            tokio::task::yield_now().await;
                            *polled.lock().unwrap() += 1;
                        }
                        r.push("slow step done");
                        Ok::<_, StepError>(())
                    })
                },
            ))
            .step(plain("after"))
            .build()
            .unwrap()
    };
    let mut rec = Rec::default();
    let report = saga.run_blocking(&mut rec).unwrap();
    assert_eq!(rec.effects, ["slow step done", "do after"]);
    assert_eq!(*polled.lock().unwrap(), 10);
    assert_eq!(report.status, ExecutionStatus::Completed);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut rec = Rec::default();
    runtime.block_on(saga.run(&mut rec)).unwrap();
    assert_eq!(rec.effects, ["slow step done", "do after"]);
    assert_eq!(*polled.lock().unwrap(), 20);
}
