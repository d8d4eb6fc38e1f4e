//! A store written by an earlier build hands the steps it re-runs the same
//! idempotency keys, `{execution_id}/{step}` byte for byte: keys are
//! computed, not logged, so a new format would double the effects of every
//! execution in flight across an upgrade.
//!
//! The store is a fixture, `tests/fixtures/stopped-mid-step/` (its README
//! says how it was made and from which commit): three executions of the
//! `crash_saga` helper's sagas, each killed with steps started and not
//! ended, and the ledger of effects they had applied. This build's helper
//! recovers a copy, and the ledger shows each invocation's key.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use rusqlite::{Connection, OpenFlags};
use support::durable::scratch_dir;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/stopped-mid-step"
);

/// The helper's step names by index: `crashy` runs `s0`..`s4`,
/// `crashy-group` runs `s0`, the group `b1`..`b3`, then `s4`.
fn step_name(saga: &str, index: i64) -> String {
    match (saga, index) {
        ("crashy-group", 1..=3) => format!("b{index}"),
        _ => format!("s{index}"),
    }
}

/// Per execution, the steps and compensations whose last event in the log
/// is their start: `(execution, step, "do" or "undo")`.
fn in_flight(store: &Path) -> BTreeSet<(String, String, &'static str)> {
    let conn = Connection::open_with_flags(store, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut statement = conn
        .prepare(
            "SELECT e.execution_id, x.saga, e.step, e.kind FROM events e
             JOIN executions x ON x.id = e.execution_id
             WHERE e.step IS NOT NULL
               AND e.seq = (SELECT MAX(seq) FROM events l
                            WHERE l.execution_id = e.execution_id AND l.step = e.step)",
        )
        .unwrap();
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, String>(3)?,
            ))
        })
        .unwrap();
    let mut started = BTreeSet::new();
    for row in rows {
        let (id, saga, step, kind) = row.unwrap();
        let what = match kind.as_str() {
            "step_started" => "do",
            "compensation_started" => "undo",
            _ => continue,
        };
        started.insert((id, step_name(&saga, step), what));
    }
    started
}

/// The ledger's invocations after the first `skip`: `(key, kind, absorbed)`.
fn invocations(ledger: &Path, skip: usize) -> Vec<(String, String, bool)> {
    let conn = Connection::open(ledger).unwrap();
    let mut statement = conn
        .prepare("SELECT key, kind, absorbed FROM invocations ORDER BY rowid")
        .unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .skip(skip)
        .map(Result::unwrap)
        .collect()
}

#[test]
fn steps_cut_off_in_a_store_of_an_earlier_build_run_again_with_the_same_keys() {
    let dir = scratch_dir("stored-keys");
    let (store, ledger) = (dir.join("store.db"), dir.join("ledger.db"));
    std::fs::copy(Path::new(FIXTURE).join("store.db"), &store).unwrap();
    std::fs::copy(Path::new(FIXTURE).join("ledger.db"), &ledger).unwrap();

    // What the fixture holds: a step, a compensation and three branches
    // of a group started, none ended.
    let started = in_flight(&store);
    let expected: BTreeSet<_> = [
        ("back", "s3", "undo"),
        ("fwd", "s1", "do"),
        ("group", "b1", "do"),
        ("group", "b2", "do"),
        ("group", "b3", "do"),
    ]
    .into_iter()
    .map(|(id, step, what)| (id.to_owned(), step.to_owned(), what))
    .collect();
    assert_eq!(started, expected);
    let before = invocations(&ledger, 0).len();

    let output = Command::new(env!("CARGO_BIN_EXE_crash_saga"))
        .arg(&store)
        .arg(&ledger)
        .arg("recover")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "recovery failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in ["fwd completed", "back compensated", "group completed"] {
        assert!(stdout.lines().any(|l| l == line), "{line}?\n{stdout}");
    }

    let after = invocations(&ledger, before);
    // Every step re-run got `{execution_id}/{step}`.
    for (id, step, what) in &started {
        let key = format!("{id}/{step}");
        assert!(
            after.iter().any(|(k, kind, _)| *k == key && kind == what),
            "no `{what}` with key `{key}` on recovery: {after:?}"
        );
    }
    // The branches whose effect the killed run had applied were absorbed
    // by their key: the earlier build's key and this one's are the same.
    for key in ["group/b1", "group/b2"] {
        assert!(
            after
                .iter()
                .any(|(k, kind, absorbed)| k == key && kind == "do" && *absorbed),
            "`{key}` was not absorbed: {after:?}"
        );
    }
    // And nothing was invoked under any other key.
    let keys: BTreeSet<&str> = after.iter().map(|(k, _, _)| k.as_str()).collect();
    let expected: BTreeSet<&str> = [
        "back/s0", "back/s1", "back/s2", "back/s3", "fwd/s1", "fwd/s2", "fwd/s3", "fwd/s4",
        "group/b1", "group/b2", "group/b3", "group/s4",
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, expected);
    let _ = std::fs::remove_dir_all(&dir);
}
