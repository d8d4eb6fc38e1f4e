//! Observability: a `SagaObserver` receives every lifecycle event in order
//! (the original's before/after hooks are two of them); log records go
//! through `log`, target `saga`, at the levels of DESIGN section 4, with
//! user text as data, never as a format string.
//!
//! This binary installs its own test logger, once; each test filters the
//! records of its own saga by name, since tests run in parallel.

mod support;

use std::sync::{Arc, Mutex};

use log::{Level, LevelFilter};
use saga_core::{
    CancellationToken, RunInfo, RunOptions, Saga, SagaEvent, SagaObserver, Step, StepError,
    StepInfo,
};
use support::logs::{self, Entry};
use support::steps::*;

// ---------------------------------------------------------------- observer

/// Records every event as a line of text.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Recorder {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl SagaObserver for Recorder {
    fn on_event(&self, run: &RunInfo<'_>, event: &SagaEvent<'_>) {
        let line = match event {
            SagaEvent::SagaStarted => format!("saga started {} {}", run.saga, run.execution_id),
            SagaEvent::StepStarted { step, attempt } => format!("before {step}#{attempt}"),
            SagaEvent::StepSucceeded {
                step,
                attempt,
                elapsed,
            } => format!("after {step}#{attempt} ok in {elapsed:?}"),
            SagaEvent::StepFailed {
                step,
                attempt,
                error,
                retry_in,
            } => format!("after {step}#{attempt} failed: {error}, retry in {retry_in:?}"),
            SagaEvent::CompensationStarted { step, attempt } => {
                format!("undo {step}#{attempt}")
            }
            SagaEvent::CompensationSucceeded {
                step,
                attempt,
                elapsed,
            } => format!("undone {step}#{attempt} in {elapsed:?}"),
            SagaEvent::CompensationFailed {
                step,
                attempt,
                error,
                retry_in,
            } => format!("undo {step}#{attempt} failed: {error}, retry in {retry_in:?}"),
            SagaEvent::CancelIgnored { step } => format!("cancel ignored at {step}"),
            SagaEvent::CancelHonoured { step } => format!("cancel honoured at {step}"),
            SagaEvent::SagaFinished { status, elapsed } => {
                format!("saga finished {status} in {elapsed:?}")
            }
            other => format!("unexpected {other:?}"),
        };
        self.0.lock().unwrap().push(line);
    }
}

/// A compensable step whose compensation fails on its first attempt.
fn undo_fails_once(name: &'static str) -> Step<Rec, String> {
    Step::new(name, move |r: &mut Rec, _: &StepInfo<'_>| {
        r.push(format!("do {name}"));
        Ok::<_, StepError>(String::new())
    })
    .undo(
        move |r: &mut Rec, _: Option<&String>, info: &StepInfo<'_>| {
            if info.attempt() == 1 {
                return Err(StepError::new("refund service busy"));
            }
            r.push(format!("undo {name}"));
            Ok(())
        },
    )
}

#[test]
fn observer_receives_every_event_in_order() {
    let on_saga = Arc::new(Recorder::default());
    let on_run = Arc::new(Recorder::default());
    let saga = Saga::builder("observed")
        .step(undo_fails_once("a"))
        .step(flaky("b", 1, unavailable).retry(exact(2)))
        .step(failing("c", declined))
        .undo_retry(exact_any(2))
        .observer(on_saga.clone())
        .build()
        .unwrap();
    let (_, options) = virtual_time();
    let options = options
        .with_execution_id("e1")
        .with_observer(on_run.clone());
    let mut rec = Rec::default();
    saga.run_blocking_with(&mut rec, options).unwrap_err();

    let expected = [
        "saga started observed e1",
        "before a#1",
        "after a#1 ok in 0ns",
        "before b#1",
        "after b#1 failed: payment gateway unavailable, retry in Some(100ms)",
        "before b#2",
        "after b#2 ok in 100ms",
        "before c#1",
        "after c#1 failed: card declined (code 51), retry in None",
        "undo b#1",
        "undone b#1 in 0ns",
        "undo a#1",
        "undo a#1 failed: refund service busy, retry in Some(100ms)",
        "undo a#2",
        "undone a#2 in 100ms",
        "saga finished compensated in 200ms",
    ];
    assert_eq!(on_saga.lines(), expected);
    // An observer attached to one run sees the same events.
    assert_eq!(on_run.lines(), expected);
    // The events match what the steps did.
    assert_eq!(
        rec.effects,
        [
            "do a",
            "try b#1",
            "do b#2",
            "try c#1",
            "undo b with b-out",
            "undo a"
        ]
    );
}

#[test]
fn a_run_observer_is_for_that_run_only() {
    let saga = Saga::builder("once").step(plain("a")).build().unwrap();
    let observer = Arc::new(Recorder::default());
    saga.run_blocking_with(
        &mut Rec::default(),
        RunOptions::new().with_observer(observer.clone()),
    )
    .unwrap();
    saga.run_blocking(&mut Rec::default()).unwrap();
    assert_eq!(observer.lines().len(), 4);
}

#[test]
fn a_panicking_observer_does_not_tear_down_the_run() {
    install_logger();
    struct Panics;
    impl SagaObserver for Panics {
        fn on_event(&self, _: &RunInfo<'_>, event: &SagaEvent<'_>) {
            if matches!(event, SagaEvent::StepStarted { .. }) {
                panic!("metrics sink exploded");
            }
        }
    }
    let recorder = Arc::new(Recorder::default());
    let saga = Saga::builder("panicking-observer")
        .step(compensable("a"))
        .step(failing("b", declined))
        .observer(Arc::new(Panics))
        .observer(recorder.clone())
        .build()
        .unwrap();
    let mut rec = Rec::default();
    let err = saga.run_blocking(&mut rec).unwrap_err();

    assert_eq!(rec.effects, ["do a", "try b#1", "undo a with a-out"]);
    assert_eq!(err.report().status, saga_core::ExecutionStatus::Compensated);
    // The other observers still see every event.
    assert_eq!(recorder.lines().len(), 8);
    // Each panic is logged as an error.
    let panics: Vec<_> = records_of("panicking-observer")
        .into_iter()
        .filter(|e| e.message == "observer panicked, event dropped for it")
        .map(|e| e.level)
        .collect();
    assert_eq!(panics, [Level::Error, Level::Error]);
}

// ----------------------------------------------------------------- logging

fn install_logger() {
    logs::install_logger(LevelFilter::Trace);
}

/// The records of the saga named `saga` (tests run in parallel).
fn records_of(saga: &str) -> Vec<Entry> {
    logs::entries_where("saga", saga)
}

/// A record as the test expects it: level, message, key-values.
fn record(
    level: Level,
    message: &str,
    fields: &[(&str, &str)],
) -> (Level, String, Vec<(String, String)>) {
    (
        level,
        message.to_owned(),
        fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

#[test]
fn records_name_saga_execution_step_attempt_and_elapsed_at_design_levels() {
    install_logger();
    let saga = Saga::builder("logs-stuck")
        .step(
            compensable("a").undo(|_: &mut Rec, _: Option<&String>, _: &StepInfo<'_>| {
                Err::<(), _>(PaymentError::Unavailable)
            }),
        )
        .step(failing("b", declined))
        .undo_retry(exact_any(2))
        .build()
        .unwrap();
    let (_, options) = virtual_time();
    saga.run_blocking_with(&mut Rec::default(), options.with_execution_id("e1"))
        .unwrap_err();

    let records = records_of("logs-stuck");
    assert!(records.iter().all(|e| e.target == "saga"));
    let got: Vec<_> = records
        .into_iter()
        .map(|e| (e.level, e.message, e.fields))
        .collect();
    let s = [("saga", "logs-stuck"), ("execution", "e1")];
    let with = |more: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        s.iter().chain(more).copied().collect()
    };
    let expected = [
        record(Level::Info, "saga started", &with(&[("elapsed", "0ns")])),
        record(
            Level::Debug,
            "step started",
            &with(&[("step", "a"), ("attempt", "1"), ("elapsed", "0ns")]),
        ),
        record(
            Level::Debug,
            "step succeeded",
            &with(&[
                ("step", "a"),
                ("attempt", "1"),
                ("took", "0ns"),
                ("elapsed", "0ns"),
            ]),
        ),
        record(
            Level::Debug,
            "step started",
            &with(&[("step", "b"), ("attempt", "1"), ("elapsed", "0ns")]),
        ),
        record(
            Level::Warn,
            "step failed",
            &with(&[
                ("step", "b"),
                ("attempt", "1"),
                ("outcome_unknown", "false"),
                ("permanent", "true"),
                ("error", "card declined (code 51)"),
                ("elapsed", "0ns"),
            ]),
        ),
        record(
            Level::Warn,
            "compensation started",
            &with(&[("step", "a"), ("attempt", "1"), ("elapsed", "0ns")]),
        ),
        record(
            Level::Warn,
            "compensation failed, retrying",
            &with(&[
                ("step", "a"),
                ("attempt", "1"),
                ("retry_in", "100ms"),
                ("error", "payment gateway unavailable"),
                ("elapsed", "0ns"),
            ]),
        ),
        record(
            Level::Warn,
            "compensation started",
            &with(&[("step", "a"), ("attempt", "2"), ("elapsed", "100ms")]),
        ),
        record(
            Level::Error,
            "compensation failed",
            &with(&[
                ("step", "a"),
                ("attempt", "2"),
                ("error", "payment gateway unavailable"),
                ("elapsed", "100ms"),
            ]),
        ),
        record(
            Level::Error,
            "saga finished",
            &with(&[("status", "stuck"), ("elapsed", "100ms")]),
        ),
    ];
    assert_eq!(got, expected);
}

/// A retried step's record: fixed text, the delay as a key-value.
#[test]
fn a_retried_step_logs_its_delay_as_a_field() {
    install_logger();
    let saga = Saga::builder("logs-retry")
        .step(flaky("b", 1, unavailable).retry(exact(2)))
        .build()
        .unwrap();
    let (_, options) = virtual_time();
    saga.run_blocking_with(&mut Rec::default(), options.with_execution_id("r1"))
        .unwrap();
    let retried: Vec<_> = records_of("logs-retry")
        .into_iter()
        .filter(|e| e.message == "step failed, retrying")
        .map(|e| (e.level, e.fields))
        .collect();
    assert_eq!(
        retried,
        [record(
            Level::Warn,
            "",
            &[
                ("saga", "logs-retry"),
                ("execution", "r1"),
                ("step", "b"),
                ("attempt", "1"),
                ("retry_in", "100ms"),
                ("error", "payment gateway unavailable"),
                ("elapsed", "0ns"),
            ]
        )]
        .map(|(l, _, f)| (l, f))
    );
}

/// A cancellation that stops a run is told as it is seen, before the
/// rollback it starts, so the log does not read as a failure's rollback.
#[test]
fn an_honoured_cancel_is_logged_before_its_rollback() {
    install_logger();
    let token = CancellationToken::new();
    let cancel = token.clone();
    let saga = Saga::builder("logs-cancel")
        .step(compensable("a"))
        .step(Step::new("b", move |_: &mut Rec, _: &StepInfo<'_>| {
            cancel.cancel();
            Ok::<_, StepError>(())
        }))
        .step(plain("c"))
        .build()
        .unwrap();
    let (_, options) = virtual_time();
    saga.run_blocking_with(&mut Rec::default(), options.with_cancellation(token))
        .unwrap_err();

    let got: Vec<(Level, String, Option<String>)> = records_of("logs-cancel")
        .into_iter()
        .map(|e| {
            let step = e.field("step").map(str::to_owned);
            (e.level, e.message, step)
        })
        .collect();
    let step = |s: &str| Some(s.to_owned());
    let expected = [
        (Level::Info, "saga started", None),
        (Level::Debug, "step started", step("a")),
        (Level::Debug, "step succeeded", step("a")),
        (Level::Debug, "step started", step("b")),
        (Level::Debug, "step succeeded", step("b")),
        (
            Level::Warn,
            "cancellation honoured: rolling back",
            step("c"),
        ),
        (Level::Warn, "compensation started", step("a")),
        (Level::Info, "compensation succeeded", step("a")),
        (Level::Info, "saga finished", None),
    ]
    .map(|(l, m, s)| (l, m.to_owned(), s));
    assert_eq!(got, expected);
}

#[test]
fn retries_successes_and_ignored_cancels_have_their_levels() {
    install_logger();
    let token = CancellationToken::new();
    let cancel = token.clone();
    let saga = Saga::builder("logs-levels")
        .step(compensable("a"))
        .step(flaky("b", 1, unavailable).retry(exact(2)))
        .pivot(Step::new("p", move |_: &mut Rec, _: &StepInfo<'_>| {
            cancel.cancel();
            Ok::<_, StepError>(())
        }))
        .step(plain("after"))
        .build()
        .unwrap();
    let (_, options) = virtual_time();
    saga.run_blocking_with(&mut Rec::default(), options.with_cancellation(token))
        .unwrap();

    let got: Vec<(Level, String)> = records_of("logs-levels")
        .into_iter()
        .map(|e| (e.level, e.message))
        .collect();
    let expected = [
        (Level::Info, "saga started"),
        (Level::Debug, "step started"),
        (Level::Debug, "step succeeded"),
        (Level::Debug, "step started"),
        (Level::Warn, "step failed, retrying"),
        (Level::Debug, "step started"),
        (Level::Debug, "step succeeded"),
        (Level::Debug, "step started"),
        (Level::Debug, "step succeeded"),
        (
            Level::Warn,
            "cancellation ignored: past the pivot, or during the last step",
        ),
        (Level::Debug, "step started"),
        (Level::Debug, "step succeeded"),
        (Level::Info, "saga finished"),
    ]
    .map(|(l, m)| (l, m.to_owned()));
    assert_eq!(got, expected);
}

#[test]
fn a_rollback_logs_compensations_and_its_end_at_info() {
    install_logger();
    let saga = Saga::builder("logs-rollback")
        .step(compensable("a"))
        .step(failing("b", declined))
        .build()
        .unwrap();
    saga.run_blocking(&mut Rec::default()).unwrap_err();

    let got: Vec<(Level, String)> = records_of("logs-rollback")
        .into_iter()
        .map(|e| (e.level, e.message))
        .collect();
    assert_eq!(
        got,
        [
            (Level::Info, "saga started"),
            (Level::Debug, "step started"),
            (Level::Debug, "step succeeded"),
            (Level::Debug, "step started"),
            (Level::Warn, "step failed"),
            (Level::Warn, "compensation started"),
            (Level::Info, "compensation succeeded"),
            (Level::Info, "saga finished"),
        ]
        .map(|(l, m)| (l, m.to_owned()))
    );
    assert_eq!(
        records_of("logs-rollback")[7].field("status"),
        Some("compensated")
    );
}

#[test]
fn user_text_with_braces_is_data_not_a_format_string() {
    install_logger();
    let saga = Saga::builder("logs {0} {}")
        .step(compensable("reserve {item}"))
        .step(Step::new(
            "charge {card} {}",
            |_: &mut Rec, _: &StepInfo<'_>| Err::<(), _>("declined {reason} {:?}"),
        ))
        .build()
        .unwrap();
    let mut rec = Rec::default();
    let err = saga.run_blocking(&mut rec).unwrap_err();

    // The rollback happened as for any other name.
    assert_eq!(
        rec.effects,
        [
            "do reserve {item}",
            "undo reserve {item} with reserve {item}-out"
        ]
    );
    assert_eq!(
        err.to_string(),
        "saga `logs {0} {}` failed at step `charge {card} {}` and was rolled back (compensated: reserve {item})"
    );
    let records = records_of("logs {0} {}");
    assert_eq!(records.len(), 8);
    assert!(records.iter().any(|e| e.level == Level::Warn
        && e.message == "step failed"
        && e.field("step") == Some("charge {card} {}")
        && e.field("attempt") == Some("1")
        && e.field("permanent") == Some("false")
        && e.field("error") == Some("declined {reason} {:?}")));
}

/// A step error and an execution id carrying ESC and a newline reach the
/// log escaped: one line per record, no terminal escape acted on.
#[test]
fn control_characters_in_user_text_are_escaped_in_records() {
    install_logger();
    let saga = Saga::builder("logs-escape")
        .step(Step::new("charge", |_: &mut Rec, _: &StepInfo<'_>| {
            Err::<(), _>("declined\n\u{1b}[2Jcleared")
        }))
        .build()
        .unwrap();
    let options = RunOptions::new().with_execution_id("e-\u{1b}[31m\nred");
    saga.run_blocking_with(&mut Rec::default(), options)
        .unwrap_err();

    let records = records_of("logs-escape");
    assert!(!records.is_empty());
    for entry in &records {
        for (key, value) in &entry.fields {
            assert!(
                !value.contains('\u{1b}') && !value.contains('\n'),
                "raw control text in {key}={value:?}"
            );
        }
        assert_eq!(
            entry.field("execution"),
            Some(r"e-\u{1b}[31m\u{a}red"),
            "{entry:?}"
        );
    }
    assert!(
        records.iter().any(|e| e.level == Level::Warn
            && e.field("error") == Some(r"declined\u{a}\u{1b}[2Jcleared"))
    );
}

/// A durable run has finished once its end is in the log: observers hear
/// of the finish then, once, and not at all when that write fails (the
/// execution is still running in the store, and whoever takes it over
/// finishes it).
#[tokio::test]
async fn a_durable_run_tells_its_finish_only_once_its_end_is_logged() {
    use saga_core::store::{EventKind, MemoryStore, StoreError};
    use saga_core::testkit::DelayedStore;
    use saga_core::{ExecutionStatus, SagaEngine};
    use support::durable::Order;

    let saga = |observer: &Arc<Recorder>| {
        Saga::builder("end-logged")
            .observer(observer.clone())
            .step(Step::new("a", |_: &mut Order, _: &StepInfo<'_>| {
                Ok::<_, StepError>(())
            }))
            .build()
            .unwrap()
    };
    for end_written in [true, false] {
        let observer = Arc::new(Recorder::default());
        let store = DelayedStore::new(MemoryStore::new(), std::time::Duration::ZERO).before_call(
            move |call| {
                if !end_written && call.events.contains(&EventKind::Finished) {
                    return Err(StoreError::Closed {
                        store: "the test's store".into(),
                    });
                }
                Ok(())
            },
        );
        let engine = SagaEngine::new(store);
        engine.register(saga(&observer)).await.unwrap();
        let id = engine.start("end-logged", Order::default()).await.unwrap();
        let waited = engine.wait(&id).await;
        let finishes: Vec<String> = observer
            .lines()
            .into_iter()
            .filter(|line| line.starts_with("saga finished"))
            .map(|line| line.split(" in ").next().unwrap().to_owned())
            .collect();
        if end_written {
            assert_eq!(waited.unwrap().status, ExecutionStatus::Completed);
            assert_eq!(finishes, ["saga finished completed"]);
        } else {
            assert!(waited.is_err());
            assert_eq!(
                finishes,
                Vec::<String>::new(),
                "a finish told but not logged"
            );
        }
    }
}

/// A durable run that stops because its log cannot be written (here, its
/// context no longer encodes) says so in an error record naming the
/// execution and the cause: the operator learns why it is still running.
#[tokio::test]
async fn a_durable_run_stopped_by_its_log_logs_why() {
    use saga_core::SagaEngine;
    use saga_core::store::MemoryStore;
    use serde::{Deserialize, Serialize, Serializer};

    install_logger();
    /// A context that refuses to encode once a step set `broken`.
    #[derive(Default, Deserialize)]
    struct Fussy {
        broken: bool,
    }
    impl Serialize for Fussy {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            if self.broken {
                return Err(serde::ser::Error::custom("Fussy refuses to serialize"));
            }
            serializer.serialize_str("ok")
        }
    }
    let saga = Saga::builder("log-refused")
        .step(Step::new("break", |ctx: &mut Fussy, _: &StepInfo<'_>| {
            ctx.broken = true;
            Ok::<_, StepError>(())
        }))
        .build()
        .unwrap();
    let engine = SagaEngine::new(MemoryStore::new());
    engine.register(saga).await.unwrap();
    let id = engine.start("log-refused", Fussy::default()).await.unwrap();
    let _ = engine.wait(&id).await;
    let stopped: Vec<String> = logs::entries_where("execution", id.as_str())
        .into_iter()
        .filter(|e| e.level == Level::Error)
        .map(|e| format!("{} {:?}", e.message, e.field("error")))
        .collect();
    assert!(
        stopped
            .iter()
            .any(|line| line.starts_with("run stopped") && line.contains("Fussy refuses")),
        "{stopped:?}"
    );
}
