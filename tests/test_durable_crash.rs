//! Crash tests with real processes: the `crash_saga` helper runs a durable
//! five-step saga on an SQLite file and is SIGKILLed at every log point
//! (before and after each commit of its log: each step's and each
//! compensation's start and end, the final record) and just after each
//! effect it applied, on the forward and the rollback path. A new process
//! recovers. The effects ledger, a separate SQLite file written by the
//! steps under their idempotency keys, shows every effect applied once and
//! undone at most once, and counts the re-invocations it absorbed.
//!
//! The same for a saga with a parallel group of three async branches
//! between two steps: killed at every commit and after every effect on the
//! forward path, when a branch fails (its siblings are compensated at
//! once), and when the step after the group fails (the whole group is);
//! the log must show each branch's start and end, and each compensation's.

#![cfg(unix)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

mod support;

use support::durable::scratch_dir;

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

/// Every crash point of a run with `commits` commits and `effects`
/// effects: before and after each commit, after each effect.
fn crash_points(commits: usize, effects: usize) -> impl Iterator<Item = String> {
    (1..=commits)
        .flat_map(|n| [format!("commit-before:{n}"), format!("commit-after:{n}")])
        .chain((1..=effects).map(|n| format!("effect:{n}")))
}

/// Runs the helper in `mode` until it reaches `point`, and SIGKILLs it.
fn crash_at(dir: &Path, mode: &str, point: &str) {
    let mut child = helper(dir, mode)
        .arg(point)
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

        for point in crash_points(commits, effects) {
            let dir = scratch_dir("crash");
            crash_at(&dir, mode, &point);
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

/// The effects a group mode ends with: `s0`, `b1`..`b3`, `s4` applied, or
/// applied and undone.
fn expected_group_effects(mode: &str) -> BTreeSet<(String, String)> {
    let (done, undone): (&[&str], bool) = match mode {
        "group-forward" => (&["s0", "b1", "b2", "b3", "s4"], false),
        // `b2` refused: it never took effect; its siblings and `s0` are undone.
        "group-rollback" => (&["s0", "b1", "b3"], true),
        // `s4` refused: the whole group and `s0` are undone.
        "group-late-rollback" => (&["s0", "b1", "b2", "b3"], true),
        other => panic!("unknown mode {other}"),
    };
    let mut effects = BTreeSet::new();
    for step in done {
        effects.insert((format!("exec-1/{step}"), "do".to_owned()));
        if undone {
            effects.insert((format!("exec-1/{step}"), "undo".to_owned()));
        }
    }
    effects
}

/// How many attempts the log ends as cut off by a crash and not run again.
fn cut_off(dir: &Path) -> i64 {
    let conn = rusqlite::Connection::open(dir.join("sagas.db")).unwrap();
    conn.query_row(
        "SELECT count(*) FROM events WHERE execution_id = 'exec-1' \
         AND kind = 'step_failed' AND error LIKE 'its attempt was cut off%'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

/// Whether the log holds a failure that is no cut-off before its first
/// cut-off attempt: a recovery rolls back (and so ends attempts as cut
/// off) only for a failure it read in the log.
fn failure_before_cut_off(dir: &Path) -> bool {
    let conn = rusqlite::Connection::open(dir.join("sagas.db")).unwrap();
    let first = |cut_off: bool| -> Option<i64> {
        conn.query_row(
            "SELECT min(seq) FROM events WHERE execution_id = 'exec-1' \
             AND kind = 'step_failed' \
             AND (error LIKE 'its attempt was cut off%') = ?1",
            [cut_off],
            |r| r.get(0),
        )
        .unwrap()
    };
    match (first(false), first(true)) {
        (Some(failure), Some(cut_off)) => failure < cut_off,
        _ => false,
    }
}

/// The saga's log as `(kind, step)`, in order.
fn log(dir: &Path) -> Vec<(String, Option<i64>)> {
    let conn = rusqlite::Connection::open(dir.join("sagas.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT kind, step FROM events WHERE execution_id = 'exec-1' ORDER BY seq")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Checks that in the log every start of a step or a compensation is
/// followed by its end (a branch run again after a crash logs a new start
/// and must end it), that each branch of the group (steps 1 to 3) started
/// and ended, and that exactly the branches `undone` were compensated
/// last. Returns the steps whose log has more than one start (run again).
fn check_group_log(dir: &Path, undone: &[i64], context: &str) -> usize {
    let log = log(dir);
    let mut open_steps = BTreeSet::new();
    let mut open_undos = BTreeSet::new();
    let mut starts = std::collections::BTreeMap::<i64, usize>::new();
    let mut ended = BTreeSet::new();
    let mut compensated = BTreeSet::new();
    for (kind, step) in &log {
        match (kind.as_str(), *step) {
            ("step_started", Some(s)) => {
                open_steps.insert(s);
                *starts.entry(s).or_default() += 1;
            }
            ("step_succeeded" | "step_failed", Some(s)) => {
                assert!(
                    open_steps.remove(&s),
                    "{context}: {s} ended unstarted: {log:?}"
                );
                ended.insert(s);
            }
            ("compensation_started", Some(s)) => {
                open_undos.insert(s);
            }
            ("compensation_succeeded", Some(s)) => {
                assert!(
                    open_undos.remove(&s),
                    "{context}: {s} undone unstarted: {log:?}"
                );
                compensated.insert(s);
            }
            _ => {}
        }
    }
    assert!(open_steps.is_empty(), "{context}: unended starts: {log:?}");
    assert!(open_undos.is_empty(), "{context}: unended undos: {log:?}");
    assert_eq!(
        log.last().map(|e| e.0.as_str()),
        Some("finished"),
        "{context}"
    );
    for branch in 1..=3 {
        assert!(ended.contains(&branch), "{context}: b{branch}: {log:?}");
    }
    let branches_undone: Vec<i64> = compensated
        .into_iter()
        .filter(|s| (1..=3).contains(s))
        .collect();
    // `b2`, cut off between its start and its refusal, may have an
    // unknown outcome and be compensated too (nothing to undo: the ledger
    // absorbs it); no other branch may be compensated beyond `undone`.
    let extra: Vec<&i64> = branches_undone
        .iter()
        .filter(|s| !undone.contains(s))
        .collect();
    assert!(
        extra.is_empty() || extra == [&2],
        "{context}: compensated {branches_undone:?}: {log:?}"
    );
    for s in undone {
        assert!(
            branches_undone.contains(s),
            "{context}: b{s} not compensated: {log:?}"
        );
    }
    starts.values().filter(|n| **n > 1).count()
}

#[test]
fn every_log_point_of_a_parallel_group_survives_a_sigkill_and_recovery() {
    let mut covered = 0;
    let mut absorbed_total = 0;
    let mut rerun_total = 0;
    let mut cut_offs = 0;
    let modes = [
        ("group-forward", "completed", &[][..]),
        ("group-rollback", "compensated", &[1, 3][..]),
        ("group-late-rollback", "compensated", &[1, 2, 3][..]),
    ];
    for (mode, end, undone) in modes {
        let dry = scratch_dir(&format!("crash-dry-{mode}"));
        let stdout = run_to_end(helper(&dry, mode));
        assert!(stdout.contains(&format!("exec-1 {end}")), "{stdout}");
        let (commits, effects) = counts(&stdout);
        let (applied, invocations, absorbed) = ledger(&dry);
        assert_eq!(applied, expected_group_effects(mode), "{mode}");
        // Uninterrupted: each step and compensation invoked once, none
        // for `b2` that refused, nothing absorbed.
        assert_eq!((invocations, absorbed), (applied.len() as i64, 0), "{mode}");
        assert_eq!(check_group_log(&dry, undone, mode), 0, "{mode}");
        // A commit per start (five steps, or four when `b2` refuses and
        // `s4` never starts), per compensation start, and the end; and
        // one per branch (or branch's compensation) that ends while a
        // sibling still runs: two of the three branches, one of the two
        // compensated when `b2` refused, two of the three when `s4` did.
        let expected = match mode {
            "group-forward" => 5 + 1 + 2,
            "group-rollback" => 4 + 3 + 1 + 2 + 1,
            _ => 5 + 4 + 1 + 2 + 2,
        };
        assert_eq!(commits, expected, "{mode}");
        assert_eq!(effects, applied.len(), "{mode}");

        for point in crash_points(commits, effects) {
            let context = format!("{mode} {point}");
            let dir = scratch_dir("crash-group");
            crash_at(&dir, mode, &point);
            let stdout = run_to_end(helper(&dir, "recover"));
            let (applied, invocations, absorbed) = ledger(&dir);
            covered += 1;
            if !stdout.contains("exec-1") {
                // Killed before the execution was created (the first
                // commit when creation is one): nothing happened.
                assert_eq!(point, "commit-before:1", "{context}: {stdout}");
                assert!(applied.is_empty() && invocations == 0, "{context}");
                continue;
            }
            assert!(
                stdout.contains(&format!("exec-1 {end}")),
                "{context}: {stdout}"
            );
            assert_eq!(applied, expected_group_effects(mode), "{context}");
            assert_eq!(invocations - absorbed, applied.len() as i64, "{context}");
            // Killed just after an effect: its step runs again (the ledger
            // absorbs the repeat), unless the group's failure was logged
            // already, and the recovery rolls back instead: the cut-off
            // attempt is ended in the log, and compensated.
            if cut_off(&dir) == 0 {
                if point.starts_with("effect:") {
                    assert!(absorbed >= 1, "{context}: nothing absorbed");
                }
            } else {
                // Only a rollback ends an attempt as cut off, and only
                // for a failure logged before the kill.
                assert_ne!(mode, "group-forward", "{context}: {:?}", log(&dir));
                assert!(
                    failure_before_cut_off(&dir),
                    "{context}: cut off with no failure logged before: {:?}",
                    log(&dir)
                );
                cut_offs += 1;
            }
            rerun_total += check_group_log(&dir, undone, &context);
            absorbed_total += absorbed;
        }
    }
    println!(
        "parallel group crash points covered: {covered}; re-invocations absorbed by the ledger: {absorbed_total}; steps run again after recovery: {rerun_total}; attempts ended as cut off: {cut_offs}"
    );
    assert_eq!(covered, 2 * (8 + 11 + 14) + 5 + 6 + 8);
    assert!(absorbed_total > 0);
    assert!(rerun_total > 0);
    // Kills after a branch's effect once the group's failure was logged.
    assert!(cut_offs > 0);
}
