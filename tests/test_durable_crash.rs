//! Crash tests with real processes: the `crash_saga` helper runs a durable
//! five-step saga on an SQLite file and is SIGKILLed at every log point
//! (before and after each commit of its log: each step's and each
//! compensation's start and end, the final record) and just after each
//! effect it applied, on the forward and the rollback path. A new process
//! recovers. The effects ledger, a separate SQLite file written by the
//! steps under their idempotency keys, shows every effect applied once and
//! undone at most once, and counts the re-invocations it absorbed.

#![cfg(unix)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

mod durable_common;

use durable_common::scratch_dir;

fn helper(dir: &Path, mode: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_crash_saga"));
    command
        .arg(dir.join("sagas.db"))
        .arg(dir.join("ledger.db"))
        .arg(mode);
    command
}

/// Runs the helper to the end; its stdout.
fn run_to_end(mut command: Command) -> String {
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "helper failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `commits=C effects=E` of an uninterrupted run.
fn counts(stdout: &str) -> (usize, usize) {
    let line = stdout.lines().find(|l| l.starts_with("commits=")).unwrap();
    let mut numbers = line
        .split(' ')
        .map(|kv| kv.split_once('=').unwrap().1.parse::<usize>().unwrap());
    (numbers.next().unwrap(), numbers.next().unwrap())
}

/// The ledger's effects and how many invocations it absorbed.
fn ledger(dir: &Path) -> (BTreeSet<(String, String)>, i64, i64) {
    let conn = rusqlite::Connection::open(dir.join("ledger.db")).unwrap();
    let mut stmt = conn.prepare("SELECT key, kind FROM effects").unwrap();
    let effects = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let (invocations, absorbed): (i64, i64) = conn
        .query_row(
            "SELECT count(*), coalesce(sum(absorbed), 0) FROM invocations",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    (effects, invocations, absorbed)
}

fn expected_effects(rollback: bool) -> BTreeSet<(String, String)> {
    let mut effects = BTreeSet::new();
    let done = if rollback { 4 } else { 5 };
    for i in 0..done {
        effects.insert((format!("exec-1/s{i}"), "do".to_owned()));
        if rollback {
            effects.insert((format!("exec-1/s{i}"), "undo".to_owned()));
        }
    }
    effects
}

#[test]
fn every_log_point_on_both_paths_survives_a_sigkill_and_recovery() {
    let mut covered = 0;
    let mut absorbed_total = 0;
    for (mode, end) in [("forward", "completed"), ("rollback", "compensated")] {
        let rollback = mode == "rollback";
        // An uninterrupted run: how many commits and effects there are.
        let dry = scratch_dir(&format!("crash-dry-{mode}"));
        let stdout = run_to_end(helper(&dry, mode));
        assert!(stdout.contains(&format!("exec-1 {end}")), "{stdout}");
        let (commits, effects) = counts(&stdout);
        assert_eq!(ledger(&dry).0, expected_effects(rollback));
        // Forward: the creation with the first start, four transitions,
        // the last success with the end. Rollback: the creation, four
        // transitions, the failure with the first compensation's start,
        // three transitions, the last one with the end.
        assert_eq!(commits, if rollback { 10 } else { 6 }, "{mode}");
        assert_eq!(effects, if rollback { 8 } else { 5 }, "{mode}");

        let points = (1..=commits)
            .flat_map(|n| [format!("commit-before:{n}"), format!("commit-after:{n}")])
            .chain((1..=effects).map(|n| format!("effect:{n}")));
        for point in points {
            let dir = scratch_dir("crash");
            let mut child = helper(&dir, mode)
                .arg(&point)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert_eq!(line.trim(), "crash-point", "{mode} {point}: not reached");
            child.kill().unwrap();
            let status = child.wait().unwrap();
            assert_eq!(status.signal(), Some(9), "{mode} {point}");

            let stdout = run_to_end(helper(&dir, "recover"));
            let (applied, invocations, absorbed) = ledger(&dir);
            if point == "commit-before:1" {
                // Killed before the execution existed: it never started,
                // and nothing happened.
                assert!(!stdout.contains("exec-1"), "{mode} {point}: {stdout}");
                assert!(applied.is_empty() && invocations == 0, "{mode} {point}");
                covered += 1;
                continue;
            }
            assert!(
                stdout.contains(&format!("exec-1 {end}")),
                "{mode} {point}: {stdout}"
            );
            assert_eq!(applied, expected_effects(rollback), "{mode} {point}");
            // Each effect once (the ledger's key), each invocation counted.
            assert_eq!(
                invocations - absorbed,
                applied.len() as i64,
                "{mode} {point}"
            );
            if point.starts_with("effect:") {
                // Applied, then killed before its end was logged: recovery
                // ran it again and the key absorbed it.
                assert!(absorbed >= 1, "{mode} {point}: nothing absorbed");
            }
            absorbed_total += absorbed;
            covered += 1;
        }
    }
    println!(
        "crash points covered: {covered}; re-invocations absorbed by the ledger: {absorbed_total}"
    );
    assert_eq!(covered, 2 * (6 + 10) + 5 + 8);
    assert!(absorbed_total > 0);
}
