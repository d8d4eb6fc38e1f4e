//! `SagaBuilder::classify_errors`: the errors steps and compensations
//! return unmarked (as `?` converts them) are marked in one place, before
//! the retry policy reads them; errors marked by the step are not given
//! to the classifier.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use saga_core::{ExecutionStatus, Outcome, RetryPolicy, Saga, Step, StepError, StepInfo};
use support::steps::{Rec, compensable};

/// A remote service's answer, as a platform's client returns it.
#[derive(Debug, thiserror::Error)]
#[error("provider answered {0}")]
struct Http(u16);

/// 4xx: refused, nothing applied, no retry helps; 5xx: maybe applied.
fn classify(calls: &Arc<AtomicU32>) -> impl Fn(StepError) -> StepError + Send + Sync + 'static {
    let calls = Arc::clone(calls);
    move |error| {
        calls.fetch_add(1, Ordering::SeqCst);
        match error.downcast_ref::<Http>() {
            Some(Http(status)) if *status >= 500 => error.outcome_unknown(),
            Some(Http(_)) => error.permanent(),
            None => error,
        }
    }
}

/// A `charge` that answers `status` at every attempt, through `?`.
fn charge(status: u16) -> Step<Rec, ()> {
    Step::new(
        "charge",
        move |r: &mut Rec, info: &StepInfo<'_>| -> Result<(), StepError> {
            r.push(format!("charge #{}", info.attempt()));
            Err(Http(status))?
        },
    )
    .retry(RetryPolicy::attempts(3))
    .undo(|r: &mut Rec, _: Option<&()>, _: &StepInfo<'_>| {
        r.push("refund");
        Ok::<_, StepError>(())
    })
}

/// `reserve`, then a `charge` answering `status`; with the classifier
/// counting into `calls`, if given.
fn order(status: u16, calls: Option<&Arc<AtomicU32>>) -> Saga<Rec> {
    let mut builder = Saga::builder("order")
        .step(compensable("reserve"))
        .step(charge(status));
    if let Some(calls) = calls {
        builder = builder.classify_errors(classify(calls));
    }
    builder.build().unwrap()
}

fn run(saga: &Saga<Rec>) -> (Vec<String>, saga_core::SagaError) {
    let mut rec = Rec::default();
    let options = saga_core::RunOptions::new().with_clock(saga_core::clock::TestClock::new());
    let err = saga.run_blocking_with(&mut rec, options).unwrap_err();
    (rec.effects, err)
}

#[test]
fn a_refusal_is_made_permanent_and_not_retried_nor_compensated() {
    let calls = Arc::new(AtomicU32::new(0));
    let saga = order(402, Some(&calls));
    let (effects, err) = run(&saga);
    assert_eq!(
        effects,
        ["do reserve", "charge #1", "undo reserve with reserve-out"]
    );
    let charge = err.report().step("charge").unwrap();
    assert_eq!((charge.attempts, charge.outcome), (1, Outcome::NotApplied));
    assert_eq!(err.report().status, ExecutionStatus::Compensated);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn a_server_error_is_made_unknown_so_the_rollback_compensates_it() {
    let calls = Arc::new(AtomicU32::new(0));
    let saga = order(503, Some(&calls));
    let (effects, err) = run(&saga);
    assert_eq!(
        effects,
        [
            "do reserve",
            "charge #1",
            "charge #2",
            "charge #3",
            "refund",
            "undo reserve with reserve-out"
        ]
    );
    let charged = err.report().step("charge").unwrap();
    assert_eq!((charged.attempts, charged.outcome), (3, Outcome::Unknown));
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // Without the classifier, the same answers read as "nothing applied":
    // retried, and never refunded.
    let unclassified = order(503, None);
    let (effects, _) = run(&unclassified);
    assert!(!effects.contains(&"refund".to_owned()), "{effects:?}");
}

#[test]
fn errors_the_step_marked_are_not_given_to_the_classifier() {
    let calls = Arc::new(AtomicU32::new(0));
    let saga = Saga::builder("order")
        .step(Step::new("charge", |_: &mut Rec, _: &StepInfo<'_>| {
            Err::<(), _>(StepError::new(Http(503)).permanent())
        }))
        .classify_errors(classify(&calls))
        .build()
        .unwrap();
    let (_, err) = run(&saga);
    let charge = err.report().step("charge").unwrap();
    assert_eq!((charge.attempts, charge.outcome), (1, Outcome::NotApplied));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[test]
fn a_compensation_error_is_classified_too() {
    let calls = Arc::new(AtomicU32::new(0));
    let saga = Saga::builder("order")
        .step(
            Step::new("reserve", |r: &mut Rec, _: &StepInfo<'_>| {
                r.push("reserve");
                Ok::<_, StepError>(())
            })
            .undo(
                |r: &mut Rec, _: Option<&()>, _: &StepInfo<'_>| -> Result<(), StepError> {
                    r.push("release");
                    Err(Http(409))?
                },
            ),
        )
        .step(Step::new("charge", |_: &mut Rec, _: &StepInfo<'_>| {
            Err::<(), _>(StepError::new("declined").permanent())
        }))
        .classify_errors(classify(&calls))
        .build()
        .unwrap();
    let (effects, err) = run(&saga);
    // A permanent compensation error is not retried: stuck at once (the
    // saga's undo policy would otherwise try 3 times).
    assert_eq!(effects, ["reserve", "release"]);
    assert_eq!(err.report().status, ExecutionStatus::Stuck);
    assert_eq!(
        err.report().step("reserve").unwrap().compensation_attempts,
        1
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A durable run logs the error as classified: a run that takes the
/// execution over reads the same mark from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_run_logs_the_mark_the_classifier_gave() {
    use saga_core::SagaEngine;
    use saga_core::store::{EventKind, MemoryStore, SagaStore};

    let calls = Arc::new(AtomicU32::new(0));
    let saga = Saga::builder("order")
        .step(Step::new(
            "charge",
            |_: &mut u32, _: &StepInfo<'_>| -> Result<(), StepError> { Err(Http(503))? },
        ))
        .classify_errors(classify(&calls))
        .build()
        .unwrap();
    let store = Arc::new(MemoryStore::new());
    let engine = SagaEngine::with_store(store.clone());
    engine.register(saga).await.unwrap();
    let id = engine.start("order", 0_u32).await.unwrap();
    let failed = engine.wait(&id).await.unwrap_err();
    let cause = std::error::Error::source(&failed).map(ToString::to_string);
    assert_eq!(cause.as_deref(), Some("provider answered 503"));
    let events = store.events(&id).await.unwrap();
    let logged: Vec<(EventKind, bool)> = events
        .iter()
        .filter(|e| e.kind == EventKind::StepFailed)
        .map(|e| (e.kind, e.outcome_unknown))
        .collect();
    assert_eq!(logged, [(EventKind::StepFailed, true)]);
    let report = engine.report(&id).await.unwrap();
    assert_eq!(report.step("charge").unwrap().outcome, Outcome::Unknown);
}

/// `charge` as `#[saga_task]` functions: every attempt answers 503
/// through `?`.
#[saga_core::saga_task(undo = refund_charge, retry(attempts = 3))]
fn charge_task(r: &mut Rec, info: &StepInfo<'_>) -> Result<(), StepError> {
    r.push(format!("charge #{}", info.attempt()));
    Err(Http(503))?
}

#[saga_core::saga_task]
fn refund_charge(r: &mut Rec, _: Option<&()>) -> Result<(), StepError> {
    r.push("refund");
    Ok(())
}

/// `saga!`'s `classify_errors:` is the builder's: the same 503s are
/// refunded with it, and read as "nothing applied" without.
#[test]
fn saga_macro_takes_a_classifier_as_a_closure_or_a_path() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let with_closure = saga_core::saga! {
        name: "order",
        context: Rec,
        classify_errors: move |error| {
            counted.fetch_add(1, Ordering::SeqCst);
            match error.downcast_ref::<Http>() {
                Some(Http(status)) if *status >= 500 => error.outcome_unknown(),
                _ => error,
            }
        },
        step charge_task;
    };
    let (effects, err) = run(&with_closure);
    assert_eq!(effects, ["charge #1", "charge #2", "charge #3", "refund"]);
    let charged = err.report().step("charge_task").unwrap();
    assert_eq!((charged.attempts, charged.outcome), (3, Outcome::Unknown));
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    fn unknown_on_5xx(error: StepError) -> StepError {
        match error.downcast_ref::<Http>() {
            Some(Http(status)) if *status >= 500 => error.outcome_unknown(),
            _ => error,
        }
    }
    let with_path = saga_core::saga! {
        name: "order",
        context: Rec,
        classify_errors: unknown_on_5xx,
        step charge_task;
    };
    let (effects, _) = run(&with_path);
    assert_eq!(effects, ["charge #1", "charge #2", "charge #3", "refund"]);

    let without = saga_core::saga! {
        name: "order",
        context: Rec,
        step charge_task;
    };
    let (effects, _) = run(&without);
    assert_eq!(effects, ["charge #1", "charge #2", "charge #3"]);
}
