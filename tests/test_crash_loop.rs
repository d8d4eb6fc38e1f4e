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
