//! On SQLite, an owner's liveness is proved by an OS file lock, so a
//! restarted service takes a killed process's executions over at once
//! instead of after their lease expires. With real processes: the
//! `crash_saga` helper holds an hour-long lease and stops dead inside a
//! step; while it lives, its lease stands; once SIGKILLed, the lease is
//! claimable at once, and a `Worker` in a new process (same hour-long
//! lease) carries the execution to its end.

#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use saga_core::ExecutionId;
use saga_core::store::{SagaStore, SqliteStore};

mod support;

use support::durable::{crash_saga, scratch_dir};

const HOUR_MS: &str = "3600000";

/// The helper with an hour-long lease: only a proof of its death lets
/// another process take its execution over.
fn helper(dir: &Path, mode: &str, point: &str) -> Command {
    let mut command = crash_saga(dir, mode, point);
    command.env("CRASH_SAGA_LEASE_MS", HOUR_MS);
    command
}

/// Waits for a helper to end, killing it (and failing) after a minute: a
/// hang, not a timing check.
fn ended(mut child: Child) -> String {
    for _ in 0..600 {
        if child.try_wait().unwrap().is_some() {
            let output = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            assert!(
                output.status.success(),
                "{stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            );
            return stdout;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    panic!("the helper did not end: it waited for the dead owner's lease");
}

#[test]
fn a_killed_owner_s_lease_is_claimable_at_once_and_a_live_one_s_is_not() {
    let dir = scratch_dir("liveness");
    // Stops dead just after the third effect (inside `s2`), alive.
    let mut owner = helper(&dir, "forward", "effect:3").spawn().unwrap();
    let mut line = String::new();
    BufReader::new(owner.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "crash-point");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = SqliteStore::open(dir.join("sagas.db")).unwrap();
    let id = ExecutionId::new("exec-1");
    let hour = Duration::from_secs(3600);
    runtime.block_on(async {
        // Alive: its lease stands, though a probe tried its lock.
        assert_eq!(store.claim(&id, "probe", hour).await.unwrap(), None);
    });

    owner.kill().unwrap();
    assert_eq!(owner.wait().unwrap().signal(), Some(9));
    runtime.block_on(async {
        // Dead: its lease, 59 minutes from expiring, is claimable now.
        let lease = store
            .claim(&id, "probe", hour)
            .await
            .unwrap()
            .expect("the dead owner's lease was not claimable");
        store.release(&id, &lease).await.unwrap();
    });
    drop(store);
    drop(runtime);

    // A restarted service (a Worker, an hour-long lease of its own)
    // carries it on at once.
    let stdout = ended(helper(&dir, "worker", "effect:99").spawn().unwrap());
    assert!(stdout.ends_with("exec-1 completed\n"), "{stdout}");
}
