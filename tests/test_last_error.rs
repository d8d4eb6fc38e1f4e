//! `StepReport::last_error` is "the last error of its action or
//! compensation, if any": an error a retry recovered from is in the
//! report too, whether the run is sync, async, a parallel branch or
//! durable, and whether the action or the compensation recovered.

mod support;

use std::sync::Arc;

use saga_core::store::MemoryStore;
use saga_core::{
    ExecutionStatus, Parallel, Saga, SagaEngine, SagaReport, Step, StepError, StepInfo,
};
use serde::{Deserialize, Serialize};
use support::steps::*;

const RECOVERED: &str = "payment gateway unavailable";

fn last_error<'a>(report: &'a SagaReport, step: &str) -> Option<&'a str> {
    report.step(step).unwrap().last_error.as_deref()
}

#[test]
fn a_sync_run_reports_the_error_a_retry_recovered_from() {
    let saga = Saga::builder("recovered")
        .step(flaky("b", 1, unavailable).retry(exact(3)))
        .step(plain("c"))
        .build()
        .unwrap();
    let (_, options) = virtual_time();
    let report = saga
        .run_blocking_with(&mut Rec::default(), options)
        .unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
    assert_eq!(report.step("b").unwrap().attempts, 2);
    assert_eq!(last_error(&report, "b"), Some(RECOVERED));
    // A step that never failed has none.
    assert_eq!(last_error(&report, "c"), None);
}

#[tokio::test]
async fn an_async_run_reports_the_error_a_retry_recovered_from() {
    let saga = Saga::builder("recovered-async")
        .step(
            Step::new_async("b", |_: &mut Rec, info: &StepInfo<'_>| {
                let attempt = info.attempt();
                Box::pin(async move {
                    if attempt < 3 {
                        Err(StepError::new(format!("attempt {attempt} failed")))
                    } else {
                        Ok(())
                    }
                })
            })
            .retry(exact(3)),
        )
        .build()
        .unwrap();
    let (_, options) = virtual_time();
    let report = saga.run_with(&mut Rec::default(), options).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
    // The last of the two.
    assert_eq!(last_error(&report, "b"), Some("attempt 2 failed"));
}

#[tokio::test]
async fn a_parallel_branch_reports_the_error_a_retry_recovered_from() {
    // Branches share the context: `Step::shared`, on a context of its own.
    let branch = |name: &'static str, failures: u32| {
        Step::shared(name, move |_: &(), info: &StepInfo<'_>| {
            if info.attempt() <= failures {
                Err(unavailable())
            } else {
                Ok(())
            }
        })
        .retry(exact(3))
    };
    let saga = Saga::builder("recovered-parallel")
        .parallel(Parallel::new().step(branch("a", 2)).step(branch("b", 0)))
        .build()
        .unwrap();
    let (_, options) = virtual_time();
    let report = saga.run_with(&mut (), options).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
    assert_eq!(report.step("a").unwrap().attempts, 3);
    assert_eq!(last_error(&report, "a"), Some(RECOVERED));
    assert_eq!(last_error(&report, "b"), None);
}

#[test]
fn a_compensation_reports_the_error_a_retry_recovered_from() {
    let saga = Saga::builder("recovered-undo")
        .step(
            compensable("a")
                .undo(|_: &mut Rec, _: Option<&String>, info: &StepInfo<'_>| {
                    if info.attempt() == 1 {
                        Err(StepError::new("the refund service timed out"))
                    } else {
                        Ok(())
                    }
                })
                .undo_retry(exact(2)),
        )
        .step(Step::new("b", |_: &mut Rec, _: &StepInfo<'_>| {
            Err::<(), _>(StepError::new("declined"))
        }))
        .build()
        .unwrap();
    let (_, options) = virtual_time();
    let error = saga
        .run_blocking_with(&mut Rec::default(), options)
        .unwrap_err();
    let report = error.report();
    assert_eq!(report.status, ExecutionStatus::Compensated);
    assert_eq!(report.step("a").unwrap().compensation_attempts, 2);
    assert_eq!(
        last_error(report, "a"),
        Some("the refund service timed out")
    );
    assert_eq!(last_error(report, "b"), Some("declined"));
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Tries {
    n: u32,
}

#[tokio::test]
async fn a_durable_run_and_its_logged_report_keep_the_error_a_retry_recovered_from() {
    let engine = SagaEngine::with_store(Arc::new(MemoryStore::new()));
    let saga = Saga::<Tries>::builder("recovered-durable")
        .step(
            Step::new("b", |t: &mut Tries, info: &StepInfo<'_>| {
                t.n += 1;
                if info.attempt() == 1 {
                    Err(StepError::new("the ledger is busy"))
                } else {
                    Ok(())
                }
            })
            .retry(exact(2).with_backoff(std::time::Duration::from_millis(1))),
        )
        .build()
        .unwrap();
    engine.register(saga).await.unwrap();
    let id = engine
        .start("recovered-durable", Tries::default())
        .await
        .unwrap();
    let report = engine.wait(&id).await.or_else(support::ended).unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
    assert_eq!(last_error(&report, "b"), Some("the ledger is busy"));
    // The report folded from the log says the same.
    let logged = engine.report(&id).await.unwrap();
    assert_eq!(last_error(&logged, "b"), Some("the ledger is busy"));
}
