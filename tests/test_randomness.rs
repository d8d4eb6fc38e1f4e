//! Randomness across processes: retry jitter and generated ids come from a
//! per-thread generator seeded from the OS, so workers started together
//! neither retry in lockstep nor share ids. Each check spawns real child
//! processes (this test binary again, running only [`child_process`]).

mod support;

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use saga_core::{ExecutionId, RetryPolicy, Saga};
use support::steps::*;

/// Set in the children's environment: the child prints what it drew.
const CHILD: &str = "SAGA_RANDOMNESS_CHILD";
/// The line a child prints: its first generated id, then its backoff
/// sleeps in nanoseconds.
const TAG: &str = "randomness-child:";

/// A process's first generated id, and the three backoff delays of a step
/// that fails three times under a fully jittered one-second backoff.
fn first_id_and_jitter() -> (ExecutionId, Vec<Duration>) {
    // First: nothing else in a child process generates an id before it.
    let id = ExecutionId::generate();
    let saga = Saga::builder("jitter")
        .step(
            flaky("b", 3, unavailable).retry(
                RetryPolicy::attempts(4)
                    .with_backoff(Duration::from_secs(1))
                    .with_multiplier(1.0)
                    .with_jitter(1.0),
            ),
        )
        .build()
        .unwrap();
    let (clock, options) = virtual_time();
    let mut rec = Rec::default();
    saga.run_blocking_with(&mut rec, options).unwrap();
    (id, clock.sleeps())
}

/// The child's side: run alone (`--exact`) in a process of its own.
#[test]
fn child_process() {
    let (id, sleeps) = first_id_and_jitter();
    assert_eq!(sleeps.len(), 3);
    if std::env::var_os(CHILD).is_some() {
        let nanos: Vec<String> = sleeps.iter().map(|d| d.as_nanos().to_string()).collect();
        println!("{TAG}{id} {}", nanos.join(","));
    }
}

fn spawn_child() -> (String, Vec<u128>) {
    let exe = std::env::current_exe().unwrap();
    let output = Command::new(exe)
        .args([
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "child failed: {stdout}");
    let line = stdout
        .lines()
        // The harness may print the test's name on the same line first.
        .find_map(|line| line.split_once(TAG).map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no `{TAG}` line in the child's output: {stdout}"));
    let (id, sleeps) = line.split_once(' ').unwrap();
    let sleeps = sleeps.split(',').map(|n| n.parse().unwrap()).collect();
    (id.to_owned(), sleeps)
}

#[test]
fn three_processes_draw_different_jitter_and_different_first_ids() {
    let children: Vec<(String, Vec<u128>)> = (0..3).map(|_| spawn_child()).collect();
    let ids: HashSet<&str> = children.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids.len(),
        3,
        "first ids repeat across processes: {children:?}"
    );
    let jitter: HashSet<&Vec<u128>> = children.iter().map(|(_, sleeps)| sleeps).collect();
    assert_eq!(jitter.len(), 3, "processes retry in lockstep: {children:?}");
    for (id, sleeps) in &children {
        // A process's first id is two different halves, not one written twice.
        assert_ne!(id[..16], id[16..], "{id}");
        // Jitter 1.0 picks each delay in 0..=1s.
        assert!(sleeps.iter().all(|&n| n <= 1_000_000_000), "{sleeps:?}");
    }
}

#[test]
fn a_generated_ids_halves_differ() {
    for _ in 0..1000 {
        let id = ExecutionId::generate();
        let text = id.as_str();
        assert_eq!(text.len(), 32, "{id}");
        assert_ne!(text[..16], text[16..], "{id}");
    }
}
