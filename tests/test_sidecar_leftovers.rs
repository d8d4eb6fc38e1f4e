//! On SQLite (Unix), an owner makes its sidecar lock file under
//! `<sidecar>.locking` and renames it into place once locked. A process
//! killed between the two leaves that file, unlocked (the system dropped
//! its lock), and no owner would ever remove it: the sweep of the next
//! process that opens the store to write does.
//!
//! Nothing else of an owner's is left beside the store: a killed owner's
//! sidecar goes with the next open's sweep, and no journal of it stays
//! (its lock kept one, `<sidecar>.locking-journal`, which nothing
//! removed: one file more per crash).
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use saga_core::ExecutionId;
use saga_core::store::{SagaStore, SqliteStore};

mod support;

use support::durable::scratch_dir;

#[test]
fn opening_a_store_to_write_removes_a_sidecar_left_in_the_making() {
    let dir = scratch_dir("leftover");
    let db = dir.join("sagas.db");
    drop(SqliteStore::open(&db).unwrap());
    // What the killed process left: the empty file SQLite made, its lock
    // gone with the process.
    let left = dir.join("sagas.db-owner-pid1-killed.locking");
    made_long_ago(&left);
    // Not this store's: another store's sidecar in the making stays.
    let other = dir.join("other.db-owner-pid1-killed.locking");
    made_long_ago(&other);

    drop(SqliteStore::open(&db).unwrap());
    assert!(!left.exists(), "a sidecar left in the making stays");
    assert!(other.exists(), "another store's file was removed");
    // A store opened to read sweeps nothing.
    made_long_ago(&left);
    drop(SqliteStore::open_read_only(&db).unwrap());
    assert!(left.exists(), "a read-only store removed a file");
    // One made a moment ago may be a live owner's, about to be locked.
    let young = dir.join("sagas.db-owner-pid2-young.locking");
    std::fs::write(&young, b"").unwrap();
    drop(SqliteStore::open(&db).unwrap());
    assert!(young.exists(), "a sidecar just made was removed");
}

/// Makes the empty file `path`, dated two minutes back (a sweep leaves
/// younger ones alone).
fn made_long_ago(path: &std::path::Path) {
    let file = std::fs::File::create(path).unwrap();
    let then = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
    file.set_modified(then).unwrap();
}

/// The `crash_saga` helper on the store in `dir`, running execution `id`
/// with a ledger of its own, an hour-long lease (only a proof of its
/// death ends it), stopped dead inside a step: it lives, holding its
/// owner's lock, until killed (at the latest when the test ends).
fn owner_stopped_in_a_step(dir: &Path, id: &str) -> Owner {
    let mut owner = Command::new(env!("CARGO_BIN_EXE_crash_saga"))
        .arg(dir.join("sagas.db"))
        .arg(dir.join(format!("{id}.ledger")))
        .args(["forward", "effect:3"])
        .env("CRASH_SAGA_ID", id)
        .env("CRASH_SAGA_LEASE_MS", "3600000")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Bounded: the helper prints its line or ends (closing its stdout).
    let mut line = String::new();
    BufReader::new(owner.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let owner = Owner(owner);
    assert_eq!(
        line.trim(),
        "crash-point",
        "the helper did not stop in its step"
    );
    owner
}

/// A helper process, killed when dropped (a failed test leaves none).
struct Owner(Child);

impl Owner {
    /// SIGKILLs it, and waits for its end: killed.
    fn kill(&mut self) {
        self.0.kill().unwrap();
        assert_eq!(self.0.wait().unwrap().signal(), Some(9));
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The files beside the store in `dir` that its owners' liveness made
/// (`sagas.db-owner-...`), sorted.
fn owners_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("sagas.db-owner-"))
        .collect();
    files.sort();
    files
}

#[test]
fn a_killed_owner_leaves_nothing_beside_the_store_once_swept() {
    let dir = scratch_dir("killed-owner");
    let db = dir.join("sagas.db");
    drop(SqliteStore::open(&db).unwrap());

    // An owner killed while it held its lock (what SIGKILL, an abort or
    // a power cut do to a service in the middle of a saga).
    let mut killed = owner_stopped_in_a_step(&dir, "exec-1");
    let killed_files = owners_files(&dir);
    killed.kill();
    // An owner alive in another process, whose files must stay.
    let mut live = owner_stopped_in_a_step(&dir, "exec-2");
    let live_files: Vec<String> = owners_files(&dir)
        .into_iter()
        .filter(|name| !killed_files.contains(name))
        .collect();

    // A restarted service's open sweeps the dead owner's files.
    drop(SqliteStore::open(&db).unwrap());
    let after_restart = owners_files(&dir);
    // The live owner is untouched, and still proved alive: its lease
    // stands.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = SqliteStore::open(&db).unwrap();
    let hour = Duration::from_secs(3600);
    let claimed = runtime
        .block_on(store.claim(&ExecutionId::new("exec-2"), "probe", hour))
        .unwrap();
    drop(store);
    live.kill();
    assert_eq!(
        after_restart, live_files,
        "beside the store, once the killed owner was swept (it had {killed_files:?})"
    );
    assert_eq!(claimed, None, "a live owner's lease was claimed");

    // Killed in turn, the other owner's files go with the next open.
    drop(SqliteStore::open(&db).unwrap());
    assert_eq!(owners_files(&dir), Vec::<String>::new());
    // Each owner had its sidecar alone beside the store.
    assert_eq!(killed_files.len(), 1, "{killed_files:?}");
    assert_eq!(live_files.len(), 1, "{live_files:?}");
}
