//! On SQLite (Unix), an owner makes its sidecar lock file under
//! `<sidecar>.locking` and renames it into place once locked. A process
//! killed between the two leaves that file, unlocked (the system dropped
//! its lock), and no owner would ever remove it: the sweep of the next
//! process that opens the store to write does.
#![cfg(unix)]

mod support;

use saga_core::store::SqliteStore;
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
