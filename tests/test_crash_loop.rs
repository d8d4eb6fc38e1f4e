//! A step that takes its process down every time it runs, with real
//! processes: the `crash_saga` helper is SIGKILLed inside step `s2`, and
//! each restart (a `Worker`, as a service starts one) takes the execution
//! over and runs `s2` again, until the take-over that finds its attempt
//! started three times without an end: that one ends the execution stuck,
//! with a report that names the step, instead of crashing once more.

#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use saga_core::store::{EventKind, SqliteStore, StoreError};
use saga_core::testkit::{DelayedStore, StoreOp};
use saga_core::{
    Context, ExecutionStatus, Parallel, Saga, SagaEngine, SagaReport, Step, StepError, StepInfo,
    Worker,
};

mod support;

use support::durable::{crash_saga, scratch_dir};

/// Runs the helper until it stops dead inside `s2`, and SIGKILLs it.
fn killed_inside_s2(dir: &Path, mode: &str) {
    let mut child = crash_saga(dir, mode, "step:2").spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if line.trim() != "crash-point" {
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        panic!(
            "{mode}: `s2` not reached: {line}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{mode}");
}

/// Runs a worker helper to its end; its stdout. One that stops dead in
/// `s2` instead is killed, and the test fails.
fn run_to_end(dir: &Path) -> String {
    let mut child = crash_saga(dir, "worker", "step:2").spawn().unwrap();
    let mut stdout = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line == "crash-point" {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("`s2` ran again: {stdout}");
        }
        stdout.push_str(&line);
        stdout.push('\n');
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn a_step_that_crashes_its_process_three_times_ends_the_execution_stuck() {
    let dir = scratch_dir("crash-loop");
    // The first run, then two restarts: each dies inside `s2`.
    killed_inside_s2(&dir, "forward");
    killed_inside_s2(&dir, "worker");
    killed_inside_s2(&dir, "worker");
    // The third restart does not run `s2` a fourth time.
    let stdout = run_to_end(&dir);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "error s2: step `s2` was cut off 3 times: its attempt 1 started 3 times and never ended (its process crashed or was shut down before it ended, or lost its lease while it ran); resume it once the cause is fixed",
            "commits=1 effects=0",
            "exec-1 stuck",
        ],
        "{stdout}"
    );
}

#[test]
fn a_resumed_crash_loop_gets_three_more_starts() {
    let dir = scratch_dir("crash-loop-resume");
    killed_inside_s2(&dir, "forward");
    killed_inside_s2(&dir, "worker");
    killed_inside_s2(&dir, "worker");
    assert!(run_to_end(&dir).contains("exec-1 stuck"));
    // An operator resumes it (the cause not fixed yet): the count starts
    // over, so `s2` runs again, and crashes again.
    let store = saga_core::store::SqliteStore::open(dir.join("sagas.db")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let cli = saga_core::SagaEngine::new(store);
        cli.request_resume(&saga_core::ExecutionId::new("exec-1"))
            .await
            .unwrap();
    });
    drop(runtime);
    killed_inside_s2(&dir, "worker");
}

/// An engine on an SQLite store in `dir` whose first four step ends are
/// refused with a full disk's error (and nothing else: no crash).
fn flapping_engine(dir: &Path) -> SagaEngine {
    let refused = Arc::new(AtomicUsize::new(0));
    let store = DelayedStore::new(SqliteStore::open(dir.join("s.db")).unwrap(), Duration::ZERO)
        .before_call(move |call| {
            let an_end = call.op == StoreOp::Append
                && call.events.first() == Some(&EventKind::StepSucceeded);
            if an_end && refused.fetch_add(1, Ordering::SeqCst) < 4 {
                return Err(StoreError::Backend {
                    store: "a flapping disk".to_owned(),
                    what: "committing (appending events)".to_owned(),
                    source: "database or disk is full".into(),
                });
            }
            Ok(())
        });
    SagaEngine::new(store).with_lease_ttl(Duration::from_millis(300))
}

/// Submits saga `flapping` to a worker of `engine`; its report once it
/// has ended.
async fn worked_to_its_end(engine: &SagaEngine) -> SagaReport {
    let worker = Worker::new(engine.clone())
        .with_poll_interval(Duration::from_millis(20))
        .spawn()
        .unwrap();
    let id = engine.submit("flapping", Context::new()).await.unwrap();
    let report = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let report = engine.report(&id).await.unwrap();
            if report.status.is_finished() {
                return report;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the execution did not end");
    worker.shutdown(Duration::from_secs(10)).await;
    report
}

/// A store that refuses a step's end again and again (a disk that fills
/// and frees, a database restarting) stops the run each time, and the
/// worker carries it on once the store takes writes again, running the
/// step again. Those starts were cut off by the store, not by a crash:
/// the execution completes. (It ended stuck as a crash loop, "step
/// `slow` was cut off 3 times", on a full disk with no crash.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_refuses_a_step_s_end_again_and_again_is_no_crash_loop() {
    let engine = flapping_engine(&scratch_dir("store_refusals"));
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    engine
        .register(
            Saga::<Context>::builder("flapping")
                .step(Step::new(
                    "slow",
                    move |_: &mut Context, _: &StepInfo<'_>| {
                        counted.fetch_add(1, Ordering::SeqCst);
                        Ok::<(), StepError>(())
                    },
                ))
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let report = worked_to_its_end(&engine).await;
    assert_eq!(report.status, ExecutionStatus::Completed, "{report:?}");
    // Run once per refusal, then once more.
    assert_eq!(runs.load(Ordering::SeqCst), 5);
    assert_eq!(report.steps[0].attempts, 1, "{report:?}");
}

/// The same with a group: a branch's end refused stops the run while the
/// other branch is still in flight, and both starts were cut off by the
/// store, the refused branch's as much as the last one logged. (The one
/// that ended first counted as a crash each time: the execution ended
/// stuck, "step `fast` was cut off 3 times", with no crash.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_refuses_a_branch_s_end_again_and_again_is_no_crash_loop() {
    // `fast`'s end refused each time, `slow` still running.
    let engine = flapping_engine(&scratch_dir("store_refusals_group"));
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    engine
        .register(
            Saga::<Context>::builder("flapping")
                .parallel(
                    Parallel::new()
                        .step(Step::shared_async(
                            "fast",
                            move |_: &Context, _: &StepInfo<'_>| {
                                counted.fetch_add(1, Ordering::SeqCst);
                                Box::pin(async {
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                    Ok::<(), StepError>(())
                                })
                            },
                        ))
                        .step(Step::shared_async(
                            "slow",
                            |_: &Context, _: &StepInfo<'_>| {
                                Box::pin(async {
                                    tokio::time::sleep(Duration::from_millis(200)).await;
                                    Ok::<(), StepError>(())
                                })
                            },
                        )),
                )
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let report = worked_to_its_end(&engine).await;
    assert_eq!(report.status, ExecutionStatus::Completed, "{report:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 5);
}
