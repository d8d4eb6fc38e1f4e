//! The report every run returns (inside every error too): the execution's
//! status, per step its status, attempts, outcome and durations on the
//! run's monotonic clock.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use saga_core::clock::{Clock, TestClock};
use saga_core::{
    CancellationToken, ExecutionStatus, Outcome, RetryPolicy, RunOptions, Saga, SagaError, Step,
    StepError, StepInfo, StepKind, StepStatus,
};
use support::steps::*;

/// A context that holds the run's virtual clock, so steps "take time".
struct Timed {
    clock: TestClock,
}

fn takes(name: &'static str, time: Duration) -> Step<Timed, ()> {
    Step::new(name, move |t: &mut Timed, _: &StepInfo<'_>| {
        t.clock.advance(time);
        Ok::<_, StepError>(())
    })
}

#[test]
fn durations_come_from_the_runs_monotonic_clock() {
    let saga = Saga::builder("timed")
        .step(takes("a", Duration::from_secs(3)).undo(
            |t: &mut Timed, _: Option<&()>, _: &StepInfo<'_>| {
                t.clock.advance(ms(50));
                Ok::<_, StepError>(())
            },
        ))
        .step(
            Step::new("b", |t: &mut Timed, info: &StepInfo<'_>| {
                t.clock.advance(Duration::from_secs(1));
                if info.attempt() == 1 {
                    Err(unavailable())
                } else {
                    Ok(())
                }
            })
            .retry(exact(2))
            .undo(|t: &mut Timed, _: Option<&()>, _: &StepInfo<'_>| {
                t.clock.advance(ms(250));
                Ok::<_, StepError>(())
            }),
        )
        .step(Step::new("c", |t: &mut Timed, _: &StepInfo<'_>| {
            t.clock.advance(ms(500));
            Err::<(), _>(declined())
        }))
        .build()
        .unwrap();
    let clock = TestClock::new();
    let start = clock.now();
    let mut timed = Timed {
        clock: clock.clone(),
    };
    let err = saga
        .run_blocking_with(&mut timed, RunOptions::new().with_clock(clock.clone()))
        .unwrap_err();

    let report = err.report();
    let durations: Vec<(Duration, Duration)> = report
        .steps
        .iter()
        .map(|s| (s.duration, s.compensation_duration))
        .collect();
    assert_eq!(
        durations,
        [
            (Duration::from_secs(3), ms(50)),
            // Two attempts of 1 s and the 100 ms backoff between them.
            (ms(2100), ms(250)),
            (ms(500), Duration::ZERO),
        ]
    );
    assert_eq!(report.duration, ms(5900));
    assert_eq!(clock.now() - start, ms(5900));
}

/// Reports compare whole: two runs of one saga on one virtual clock (a
/// shared `Arc<dyn Clock>`, as a service keeps one) under one execution id
/// give equal reports; a run that fails differently gives another.
#[test]
fn reports_compare_whole_and_a_shared_clock_is_a_clock() {
    let saga = Saga::builder("timed")
        .step(takes("a", Duration::from_secs(3)))
        .step(takes("b", ms(500)))
        .build()
        .unwrap();
    let clock = TestClock::new();
    let shared: std::sync::Arc<dyn Clock> = std::sync::Arc::new(clock.clone());
    let run = || {
        let options = RunOptions::new()
            .with_clock(std::sync::Arc::clone(&shared))
            .with_execution_id("report-1");
        let mut timed = Timed {
            clock: clock.clone(),
        };
        saga.run_blocking_with(&mut timed, options).unwrap()
    };
    let (first, second) = (run(), run());
    assert_eq!(first, second);
    assert_eq!(first.duration, ms(3500));

    let mut other = second.clone();
    other.steps[1].attempts = 2;
    assert_ne!(first, other);
}

#[test]
fn a_completed_run_reports_every_step() {
    let saga = Saga::builder("shop")
        .step(compensable("reserve"))
        .step(plain("validate"))
        .pivot(plain("charge"))
        .step(plain("ship"))
        .build()
        .unwrap();
    let mut rec = Rec::default();
    let report = saga
        .run_blocking_with(&mut rec, RunOptions::new().with_execution_id("run-1"))
        .unwrap();

    assert_eq!(&*report.saga, "shop");
    assert_eq!(report.execution_id.as_str(), "run-1");
    assert_eq!(report.status, ExecutionStatus::Completed);
    assert!(!report.cancel_ignored);
    assert_eq!(
        rows(&report),
        [
            row("reserve", "succeeded", "applied", 1, 0),
            row("validate", "succeeded", "applied", 1, 0),
            row("charge", "succeeded", "applied", 1, 0),
            row("ship", "succeeded", "applied", 1, 0),
        ]
    );
    assert_eq!(
        report.steps.iter().map(|s| s.kind).collect::<Vec<_>>(),
        [
            StepKind::Compensable,
            StepKind::NoUndo,
            StepKind::Pivot,
            StepKind::Retriable
        ]
    );
    assert_eq!(
        report.statuses(),
        [
            ("reserve", StepStatus::Succeeded),
            ("validate", StepStatus::Succeeded),
            ("charge", StepStatus::Succeeded),
            ("ship", StepStatus::Succeeded),
        ]
    );
    assert!(report.step("nope").is_none());
    assert_eq!(report.compensated_steps().count(), 0);
    assert!(report.steps.iter().all(|s| s.last_error.is_none()));
}

#[test]
fn every_error_variant_carries_the_report() {
    let compensated = Saga::builder("s")
        .step(compensable("a"))
        .step(failing("b", declined))
        .build()
        .unwrap()
        .run_blocking(&mut Rec::default())
        .unwrap_err();
    assert!(matches!(compensated, SagaError::Compensated { .. }));
    assert_eq!(compensated.report().status, ExecutionStatus::Compensated);
    assert!(!compensated.is_stuck());

    let stuck = Saga::builder("s")
        .pivot(plain("a"))
        .step(failing_plain("b"))
        .build()
        .unwrap()
        .run_blocking(&mut Rec::default())
        .unwrap_err();
    assert!(stuck.is_stuck());
    assert_eq!(stuck.report().status, ExecutionStatus::Stuck);

    let token = saga_core::CancellationToken::new();
    token.cancel();
    let cancelled = Saga::builder("s")
        .step(compensable("a"))
        .build()
        .unwrap()
        .run_blocking_with(
            &mut Rec::default(),
            RunOptions::new().with_cancellation(token),
        )
        .unwrap_err();
    assert!(matches!(cancelled, SagaError::Cancelled { .. }));
    assert_eq!(cancelled.report().status, ExecutionStatus::Cancelled);
    assert_eq!(cancelled.report().steps[0].status, StepStatus::Pending);
}

fn failing_plain(name: &'static str) -> Step<Rec, ()> {
    Step::new(name, move |_: &mut Rec, _: &StepInfo<'_>| {
        Err::<(), _>(declined())
    })
}

#[test]
fn generated_execution_ids_are_distinct_hex() {
    let saga = Saga::builder("ids").step(plain("a")).build().unwrap();
    let mut ids = HashSet::new();
    for _ in 0..1000 {
        let report = saga.run_blocking(&mut Rec::default()).unwrap();
        let id = report.execution_id.to_string();
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        ids.insert(id);
    }
    assert_eq!(ids.len(), 1000);
}

#[test]
fn labels_are_snake_case() {
    use ExecutionStatus as E;
    assert_eq!(
        [
            E::Running,
            E::Compensating,
            E::Completed,
            E::Compensated,
            E::Cancelled,
            E::Stuck,
            E::Abandoned
        ]
        .map(|s| (s.to_string(), s.is_finished())),
        [
            ("running".to_owned(), false),
            ("compensating".to_owned(), false),
            ("completed".to_owned(), true),
            ("compensated".to_owned(), true),
            ("cancelled".to_owned(), true),
            ("stuck".to_owned(), true),
            ("abandoned".to_owned(), true),
        ]
    );
    use StepStatus as S;
    assert_eq!(
        [
            S::Pending,
            S::Running,
            S::Succeeded,
            S::Failed,
            S::Compensating,
            S::Compensated,
            S::CompensationFailed,
            S::Skipped
        ]
        .map(|s| s.to_string()),
        [
            "pending",
            "running",
            "succeeded",
            "failed",
            "compensating",
            "compensated",
            "compensation_failed",
            "skipped"
        ]
    );
    assert_eq!(
        [
            Outcome::NotStarted,
            Outcome::Applied,
            Outcome::NotApplied,
            Outcome::Unknown
        ]
        .map(|o| (o.label(), o.needs_compensation())),
        [
            ("not_started", false),
            ("applied", true),
            ("not_applied", false),
            ("unknown", true)
        ]
    );
    assert_eq!(
        [
            StepKind::Compensable,
            StepKind::NoUndo,
            StepKind::Pivot,
            StepKind::Retriable
        ]
        .map(StepKind::label),
        ["compensable", "no_undo", "pivot", "retriable"]
    );
}

/// No run ends with a step still running or compensating, every end has
/// its status (compensated included), and durations come from the run's
/// monotonic clock, never the wall clock (here a virtual one: minutes of
/// "work" that take no real time).
#[test]
fn every_step_ends_in_a_status_and_durations_come_from_the_run_clock() {
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
        .undo(|s: &mut Slow, _: Option<&()>, _: &StepInfo<'_>| {
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
    let ends: Vec<SagaError> = vec![
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
            .step(
                compensable("a")
                    .undo(|_: &mut Rec, _: Option<&String>, _: &StepInfo<'_>| Err::<(), _>("no")),
            )
            .step(failing("x", declined))
            .undo_retry(RetryPolicy::none())
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

/// An async run reports the same durations: each step's and each
/// compensation's from its first attempt to its last, backoff included,
/// though an in-memory run makes a first attempt apart from its retries.
#[tokio::test]
async fn an_async_run_counts_durations_from_the_first_attempt() {
    let saga = Saga::builder("timed")
        .step(
            Step::new_async("a", |t: &mut Timed, _: &StepInfo<'_>| {
                Box::pin(async move {
                    t.clock.advance(Duration::from_secs(3));
                    Ok::<_, StepError>(())
                })
            })
            .undo_async(|t: &mut Timed, _: Option<&()>, info: &StepInfo<'_>| {
                let attempt = info.attempt();
                Box::pin(async move {
                    t.clock.advance(ms(50));
                    if attempt == 1 {
                        Err(unavailable())
                    } else {
                        Ok(())
                    }
                })
            })
            .undo_retry(exact(2)),
        )
        .step(
            Step::new_async("b", |t: &mut Timed, info: &StepInfo<'_>| {
                let attempt = info.attempt();
                Box::pin(async move {
                    t.clock.advance(Duration::from_secs(1));
                    if attempt == 1 {
                        Err(unavailable())
                    } else {
                        Ok(())
                    }
                })
            })
            .retry(exact(2)),
        )
        .step(Step::new_async("c", |t: &mut Timed, _: &StepInfo<'_>| {
            Box::pin(async move {
                t.clock.advance(ms(500));
                Err::<(), _>(declined())
            })
        }))
        .build()
        .unwrap();
    let clock = TestClock::new();
    let start = clock.now();
    let mut timed = Timed {
        clock: clock.clone(),
    };
    let err = saga
        .run_with(&mut timed, RunOptions::new().with_clock(clock.clone()))
        .await
        .unwrap_err();

    let report = err.report();
    let attempts: Vec<(u32, u32)> = report
        .steps
        .iter()
        .map(|s| (s.attempts, s.compensation_attempts))
        .collect();
    assert_eq!(attempts, [(1, 2), (2, 0), (1, 0)]);
    let durations: Vec<(Duration, Duration)> = report
        .steps
        .iter()
        .map(|s| (s.duration, s.compensation_duration))
        .collect();
    assert_eq!(
        durations,
        [
            // Two attempts of 50 ms and the 100 ms backoff between them.
            (Duration::from_secs(3), ms(200)),
            (ms(2100), Duration::ZERO),
            (ms(500), Duration::ZERO),
        ]
    );
    assert_eq!(report.duration, ms(5800));
    assert_eq!(clock.now() - start, ms(5800));
}
