//! A durable execution's report, rebuilt from its log, agrees with what
//! the run that ended it reported: for runs cut off before and after each
//! of their commits and taken over by a second engine (with a cancel
//! requested at an earlier commit or while the owner was gone, an operator
//! resuming a stuck end, a crash loop ended stuck), `wait`'s
//! report (the recovering run's own for a completed one) and `report(id)`
//! read back from the store by another engine are equal, whole: statuses,
//! outcomes, attempts, errors, `cancel_ignored`, and durations to the
//! log's millisecond.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use saga_core::store::{MemoryStore, SagaStore, StoreError};
use saga_core::testkit::{DelayedStore, StoreOp};
use saga_core::{
    ExecutionId, ExecutionStatus, Outcome, Parallel, RetryPolicy, Saga, SagaEngine, SagaError,
    SagaReport, Step, StepError, StepInfo, StepKind, StepStatus, StuckPhase, WaitError,
};
use serde::{Deserialize, Serialize};
use support::steps::unless_hung;

/// The context: where the case fails.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Plan {
    /// The step whose action fails for good (a permanent error).
    fail: Option<String>,
    /// The step whose action fails with an unknown outcome, for good.
    lost: Option<String>,
    /// Steps whose first attempt fails (a plain error, retried).
    flaky: Vec<String>,
    /// The step whose compensation fails for good.
    fail_undo: Option<String>,
    /// Steps whose action takes 100 ms.
    slow: Vec<String>,
}

fn act(p: &Plan, name: &str, attempt: u32) -> Result<(), StepError> {
    if p.slow.iter().any(|s| s == name) {
        std::thread::sleep(Duration::from_millis(100));
    }
    if p.fail.as_deref() == Some(name) {
        return Err(StepError::new(format!("{name} refused")).permanent());
    }
    if p.lost.as_deref() == Some(name) {
        return Err(StepError::new(format!("{name} timed out"))
            .permanent()
            .outcome_unknown());
    }
    if attempt == 1 && p.flaky.iter().any(|f| f == name) {
        return Err(StepError::new(format!("{name} busy")));
    }
    Ok(())
}

fn undo(p: &Plan, name: &str) -> Result<(), StepError> {
    if p.fail_undo.as_deref() == Some(name) {
        return Err(StepError::new(format!("undo of {name} refused")).permanent());
    }
    Ok(())
}

fn retry() -> RetryPolicy {
    RetryPolicy::attempts(3).with_backoff(Duration::from_millis(1))
}

fn step(name: &'static str) -> Step<Plan, ()> {
    Step::new(name, move |p: &mut Plan, info: &StepInfo<'_>| {
        act(p, name, info.attempt())
    })
    .retry(retry())
}

fn compensable(name: &'static str) -> Step<Plan, ()> {
    step(name).undo(move |p: &mut Plan, _: Option<&()>, _: &StepInfo<'_>| undo(p, name))
}

fn branch(name: &'static str) -> Step<Plan, ()> {
    Step::shared_async(name, move |p: &Plan, info: &StepInfo<'_>| {
        let result = act(p, name, info.attempt());
        Box::pin(async move { result })
    })
    .retry(retry())
    .undo_shared(move |p: &Plan, _: Option<&()>, _: &StepInfo<'_>| undo(p, name))
}

/// `reserve` (compensable), `check` (nothing to undo), a group of `left`
/// and `right`, `charge` (the pivot), `ship` (after it).
fn saga() -> Saga<Plan> {
    Saga::builder("replay")
        .step(compensable("reserve"))
        .step(step("check"))
        .parallel(Parallel::new().step(branch("left")).step(branch("right")))
        .pivot(step("charge"))
        .step(step("ship"))
        .undo_retry(RetryPolicy::none())
        .build()
        .unwrap()
}

fn cases() -> Vec<(String, Plan)> {
    let names = ["reserve", "check", "left", "right", "charge", "ship"];
    let mut cases = vec![
        ("undisturbed".to_owned(), Plan::default()),
        (
            "every first attempt fails".to_owned(),
            Plan {
                flaky: names.iter().map(|n| n.to_string()).collect(),
                ..Plan::default()
            },
        ),
    ];
    for name in names {
        cases.push((
            format!("{name} fails"),
            Plan {
                fail: Some(name.to_owned()),
                ..Plan::default()
            },
        ));
    }
    for name in ["check", "charge"] {
        cases.push((
            format!("{name} fails, outcome unknown"),
            Plan {
                lost: Some(name.to_owned()),
                ..Plan::default()
            },
        ));
    }
    cases.push((
        "charge fails, the undo of left fails".to_owned(),
        Plan {
            fail: Some("charge".to_owned()),
            fail_undo: Some("left".to_owned()),
            ..Plan::default()
        },
    ));
    cases.push((
        "charge fails, the undo of reserve fails".to_owned(),
        Plan {
            fail: Some("charge".to_owned()),
            fail_undo: Some("reserve".to_owned()),
            flaky: vec!["reserve".to_owned()],
            ..Plan::default()
        },
    ));
    cases
}

/// A report as the tests compare it: whole, durations left out.
fn rows(report: &SagaReport) -> String {
    let steps: Vec<String> = report
        .steps
        .iter()
        .map(|s| {
            format!(
                "{} {} {} {} attempts={} undo_attempts={} error={:?}",
                s.name,
                s.kind,
                s.status,
                s.outcome.label(),
                s.attempts,
                s.compensation_attempts,
                s.last_error
            )
        })
        .collect();
    format!(
        "{} {} {} cancel_ignored={}\n  {}",
        report.saga,
        report.execution_id,
        report.status,
        report.cancel_ignored,
        steps.join("\n  ")
    )
}

/// `store`, dying at commit `crash` (from 1; after writing it or before):
/// from then on every write fails, as if its process had been killed.
fn crashing(
    store: &Arc<dyn SagaStore>,
    crash: Option<(usize, bool)>,
    cancel_at: Option<usize>,
) -> DelayedStore {
    let inner = Arc::clone(store);
    let crashed = Arc::new(AtomicBool::new(false));
    let (before, after) = (Arc::clone(&crashed), crashed);
    let dead = || StoreError::Closed {
        store: "crashed by the test".to_owned(),
    };
    DelayedStore::shared(Arc::clone(store), Duration::ZERO)
        .before_call(move |call| {
            if call.commit.is_some() && call.commit == cancel_at {
                // The commit's answer brings the request (the memory store
                // records it at the call).
                drop(inner.request_cancel(&ExecutionId::from("case")));
            }
            let writes = call.commit.is_some() || call.op == StoreOp::Renew;
            if writes && before.load(Ordering::SeqCst) {
                return Err(dead());
            }
            if call.commit.is_some_and(|n| crash == Some((n, false))) {
                before.store(true, Ordering::SeqCst);
                return Err(dead());
            }
            Ok(())
        })
        .after_call(move |call, _| {
            if call.commit.is_some_and(|n| crash == Some((n, true))) {
                after.store(true, Ordering::SeqCst);
                return Err(dead());
            }
            Ok(())
        })
}

/// What happens around a run besides its crash.
#[derive(Debug, Clone, Copy, Default)]
struct Extras {
    /// A cancel is requested while the crashed owner is gone.
    cancel: bool,
    /// A run that ended stuck is resumed by an operator.
    resume: bool,
    /// A cancel is requested as the first engine makes this commit.
    cancel_at: Option<usize>,
}

/// One run of `plan`, cut off at `crash` and taken over by a second
/// engine: the report `wait` gave, the one `report(id)` rebuilds, and how
/// many commits the first engine made.
async fn run_with(
    plan: &Plan,
    crash: Option<(usize, bool)>,
    extras: Extras,
) -> (SagaReport, SagaReport, usize) {
    let store: Arc<dyn SagaStore> = Arc::new(MemoryStore::new());
    let cut = crashing(&store, crash, extras.cancel_at);
    let first = SagaEngine::new(cut.clone());
    first.register(saga()).await.unwrap();
    let id = ExecutionId::from("case");
    let started = first
        .start_with_id("replay", id.clone(), plan.clone())
        .await;
    let waited = match started {
        Ok(_) => unless_hung(first.wait(&id)).await.or_else(support::ended),
        Err(e) => Err(e.into()),
    };
    let commits = cut.commits();
    let mut waited = match (crash, waited) {
        (None, waited) => waited.unwrap(),
        (Some(_), _) => {
            drop(first);
            if extras.cancel {
                // Nothing if its creation was cut off.
                let _ = store.request_cancel(&id).await;
            }
            let second = SagaEngine::with_store(Arc::clone(&store));
            second.register(saga()).await.unwrap();
            let recovery = second.recover().await.unwrap();
            assert!(recovery.refused.is_empty(), "{:?}", recovery.refused);
            if !recovery.resumed.contains(&id) {
                // Its creation was cut off: the caller starts it again.
                second
                    .start_with_id("replay", id.clone(), plan.clone())
                    .await
                    .unwrap();
            }
            unless_hung(second.wait(&id))
                .await
                .or_else(support::ended)
                .unwrap()
        }
    };
    if extras.resume && waited.status == ExecutionStatus::Stuck {
        let operator = SagaEngine::with_store(Arc::clone(&store));
        operator.register(saga()).await.unwrap();
        operator.resume(&id).await.unwrap();
        waited = unless_hung(operator.wait(&id))
            .await
            .or_else(support::ended)
            .unwrap();
    }
    let reader = SagaEngine::with_store(Arc::clone(&store));
    reader.register(saga()).await.unwrap();
    let read = reader.report(&id).await.unwrap();
    (waited, read, commits)
}

#[tokio::test]
async fn a_report_read_back_from_the_log_is_the_one_wait_gave_after_a_crash_at_any_commit() {
    compare_at_every_commit(Extras::default()).await;
}

#[tokio::test]
async fn and_with_a_cancel_requested_while_the_owner_was_gone() {
    compare_at_every_commit(Extras {
        cancel: true,
        ..Extras::default()
    })
    .await;
}

#[tokio::test]
async fn and_with_an_operator_resuming_a_stuck_end() {
    compare_at_every_commit(Extras {
        resume: true,
        ..Extras::default()
    })
    .await;
}

#[tokio::test]
async fn and_with_a_cancel_requested_at_any_commit_before_the_cut() {
    let mut problems = Vec::new();
    for (case, plan) in cases() {
        let (_, _, commits) = run_with(&plan, None, Extras::default()).await;
        for cancel in 1..=commits {
            let extras = Extras {
                cancel_at: Some(cancel),
                ..Extras::default()
            };
            let (baseline, read, cancelled_commits) = run_with(&plan, None, extras).await;
            if rows(&baseline) != rows(&read) {
                problems.push(format!(
                    "{case}, cancel at {cancel}, uncut: wait gave\n{}\nreport(id) gave\n{}",
                    rows(&baseline),
                    rows(&read)
                ));
            }
            for commit in cancel..=cancelled_commits {
                for after in [false, true] {
                    let when = if after { "after" } else { "before" };
                    let (waited, read, _) = run_with(&plan, Some((commit, after)), extras).await;
                    if rows(&waited) != rows(&read) {
                        problems.push(format!(
                            "{case}, cancel at {cancel}, cut {when} commit {commit}: wait gave\n{}\nreport(id) gave\n{}",
                            rows(&waited),
                            rows(&read)
                        ));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

async fn compare_at_every_commit(extras: Extras) {
    let mut problems = Vec::new();
    for (case, plan) in cases() {
        let (baseline, read, commits) = run_with(&plan, None, extras).await;
        if rows(&baseline) != rows(&read) {
            problems.push(format!(
                "{case}, uncut: wait gave\n{}\nreport(id) gave\n{}",
                rows(&baseline),
                rows(&read)
            ));
        }
        for commit in 1..=commits {
            for after in [false, true] {
                let when = if after { "after" } else { "before" };
                let (waited, read, _) = run_with(&plan, Some((commit, after)), extras).await;
                if rows(&waited) != rows(&read) {
                    problems.push(format!(
                        "{case}, cut {when} commit {commit}: wait gave\n{}\nreport(id) gave\n{}",
                        rows(&waited),
                        rows(&read)
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// Where two reports' durations differ by more than the log's
/// millisecond rounding allows.
fn duration_gaps(waited: &SagaReport, read: &SagaReport) -> Vec<String> {
    let near = |a: Duration, b: Duration| a.abs_diff(b) <= Duration::from_millis(10);
    let mut gaps = Vec::new();
    if !near(waited.duration, read.duration) {
        gaps.push(format!(
            "the execution took {:?} by wait, {:?} by report(id)",
            waited.duration, read.duration
        ));
    }
    for (a, b) in waited.steps.iter().zip(&read.steps) {
        if !near(a.duration, b.duration) {
            gaps.push(format!(
                "`{}` took {:?} by wait, {:?} by report(id)",
                a.name, a.duration, b.duration
            ));
        }
        if !near(a.compensation_duration, b.compensation_duration) {
            gaps.push(format!(
                "the compensation of `{}` took {:?} by wait, {:?} by report(id)",
                a.name, a.compensation_duration, b.compensation_duration
            ));
        }
    }
    gaps
}

/// A run taken over counts the time its log shows before the take-over:
/// a step that took 100 ms before the crash took 100 ms in `wait`'s
/// report too, not nothing, as in `report(id)` and in the uncut run's.
#[tokio::test]
async fn a_run_taken_over_reports_the_durations_its_log_shows() {
    let slow = Plan {
        slow: vec!["reserve".to_owned(), "right".to_owned()],
        ..Plan::default()
    };
    let failing = Plan {
        slow: vec!["reserve".to_owned(), "ship".to_owned()],
        fail: Some("ship".to_owned()),
        ..Plan::default()
    };
    let rollback = Plan {
        slow: vec!["reserve".to_owned()],
        fail: Some("charge".to_owned()),
        ..Plan::default()
    };
    let mut problems = Vec::new();
    for (case, plan, extras) in [
        ("slow steps", &slow, Extras::default()),
        (
            "ship fails, resumed",
            &failing,
            Extras {
                resume: true,
                ..Extras::default()
            },
        ),
        ("charge fails", &rollback, Extras::default()),
    ] {
        let (baseline, read, commits) = run_with(plan, None, extras).await;
        for gap in duration_gaps(&baseline, &read) {
            problems.push(format!("{case}, uncut: {gap}"));
        }
        for commit in 1..=commits {
            for after in [false, true] {
                let when = if after { "after" } else { "before" };
                let (waited, read, _) = run_with(plan, Some((commit, after)), extras).await;
                for gap in duration_gaps(&waited, &read) {
                    problems.push(format!("{case}, cut {when} commit {commit}: {gap}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A run cut off `times` times at the same start (the first engine after
/// its commit `commit`, each next one after its first commit, the start
/// logged again), then taken over by an engine that finds the crash loop:
/// what `wait` gave it, what `report(id)` reads back, and the error.
async fn crash_loop(
    plan: &Plan,
    commit: usize,
    times: usize,
) -> (SagaReport, SagaReport, Option<SagaError>) {
    let store: Arc<dyn SagaStore> = Arc::new(MemoryStore::new());
    let id = ExecutionId::from("case");
    for n in 0..times {
        let cut = crashing(
            &store,
            Some(if n == 0 { (commit, true) } else { (1, true) }),
            None,
        );
        let engine = SagaEngine::new(cut);
        engine.register(saga()).await.unwrap();
        if n == 0 {
            // Its creation may be the commit cut off after.
            let _ = engine
                .start_with_id("replay", id.clone(), plan.clone())
                .await;
        } else {
            let recovery = engine.recover().await.unwrap();
            if !recovery.resumed.contains(&id) {
                // It ended before this cut.
                break;
            }
        }
        // Until the crash: a run whose log was cut off is waited for
        // until another engine carries it on.
        let _ = tokio::time::timeout(Duration::from_millis(200), engine.wait(&id)).await;
    }
    let last = SagaEngine::with_store(Arc::clone(&store));
    last.register(saga()).await.unwrap();
    let recovery = last.recover().await.unwrap();
    assert!(recovery.refused.is_empty(), "{:?}", recovery.refused);
    let (waited, error) = match unless_hung(last.wait(&id)).await {
        Ok(report) => (report, None),
        Err(WaitError::Saga(error)) => (error.report().clone(), Some(error)),
        Err(other) => panic!("the take-over did not end: {other}"),
    };
    let reader = SagaEngine::with_store(Arc::clone(&store));
    reader.register(saga()).await.unwrap();
    let read = reader.report(&id).await.unwrap();
    (waited, read, error)
}

/// A take-over that ends a crash loop stuck (at each step's start in
/// turn) tells `wait` the report `report(id)` reads back, and a stuck end.
#[tokio::test]
async fn a_crash_loop_ended_stuck_reports_as_its_log_reads() {
    let mut problems = Vec::new();
    for commit in 1..=6 {
        let (waited, read, error) = crash_loop(&Plan::default(), commit, 3).await;
        if rows(&waited) != rows(&read) {
            problems.push(format!(
                "cut off after commit {commit}: wait gave\n{}\nreport(id) gave\n{}",
                rows(&waited),
                rows(&read)
            ));
        }
        if waited.status == ExecutionStatus::Stuck && error.is_none() {
            problems.push(format!(
                "cut off after commit {commit}: stuck, with no error"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// A crash loop in a compensation ends the rollback stuck with the error a
/// compensation failing for good gives: the failure that started the
/// rollback first among the failures, and every compensation still owed
/// in `remaining`, not only the one that looped (an operator reads there
/// what is left to undo).
#[tokio::test]
async fn a_crash_loop_in_a_compensation_names_every_compensation_still_owed() {
    let plan = Plan {
        fail: Some("charge".to_owned()),
        ..Plan::default()
    };
    let mut seen = 0;
    let mut problems = Vec::new();
    for commit in 1..=12 {
        let (_, read, error) = crash_loop(&plan, commit, 3).await;
        let Some(SagaError::Stuck {
            step,
            phase: StuckPhase::Rollback,
            failures,
            remaining,
            ..
        }) = error
        else {
            continue;
        };
        seen += 1;
        // Owed: a step that took effect (or may have), with an undo that
        // has not succeeded.
        let owed: Vec<String> = read
            .steps
            .iter()
            .rev()
            .filter(|s| {
                s.kind == StepKind::Compensable
                    && matches!(s.outcome, Outcome::Applied | Outcome::Unknown)
                    && s.status != StepStatus::Compensated
            })
            .map(|s| s.name.to_string())
            .collect();
        let mut remaining: Vec<String> = remaining.iter().map(|s| s.to_string()).collect();
        if remaining.first() != Some(&step.to_string()) {
            problems.push(format!(
                "cut after commit {commit}: remaining {remaining:?} does not start with `{step}`"
            ));
        }
        remaining.sort();
        let mut expected = owed.clone();
        expected.sort();
        if remaining != expected {
            problems.push(format!(
                "cut after commit {commit}: remaining {remaining:?}, owed {owed:?}"
            ));
        }
        let failed: Vec<(String, bool)> = failures
            .iter()
            .map(|f| (f.step.to_string(), f.compensation))
            .collect();
        if failed.first() != Some(&("charge".to_owned(), false))
            || failed.last() != Some(&(step.to_string(), true))
        {
            problems.push(format!(
                "cut after commit {commit}: failures {failed:?}, not `charge` then `{step}`"
            ));
        }
    }
    assert!(seen > 0, "no crash loop ended a rollback stuck");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
