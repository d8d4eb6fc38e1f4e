//! On SQLite a dead owner's executions are taken over at once by every
//! later process, not only by the first that proved it dead: the proof
//! (its sidecar lock, free) is made durable, its leases expired in the
//! database, before the sidecar is removed. Before, the first process to
//! open the store for writing, or to claim one of its executions, removed
//! the sidecar and kept the proof in its memory alone; a restarted worker
//! after it found nothing to prove and waited for the leases to expire
//! (a rolling deploy: a v2-only pod's open swept the killed v1 pod's
//! sidecar, and the v1 pod started next waited a whole ttl).
//!
//! With real processes: the owner holds three executions with minute-long
//! leases, hung mid-step, and is SIGKILLed; another process opens the
//! store (or claims one of them) and exits; then a new process, with no
//! memory of either, must take all three over at once (`recover` reports
//! them resumed, none busy).

#![cfg(unix)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use saga_core::store::{SagaStore, SqliteOptions, SqliteStore};
use saga_core::{ExecutionId, ExecutionStatus, Saga, SagaEngine, Step, StepError, StepInfo};

mod support;

use support::durable::scratch_dir;

/// Every lease here lasts a minute: only a proof of the owner's death
/// lets another process take its executions over within the test.
const MINUTE: Duration = Duration::from_secs(60);

/// The executions the owner holds.
const IDS: [&str; 3] = ["exec-0", "exec-1", "exec-2"];

/// Set in a child process: its part, and the store's directory.
const CHILD_ROLE: &str = "SAGA_DEAD_OWNER_ROLE";
const CHILD_DIR: &str = "SAGA_DEAD_OWNER_DIR";

/// The executions whose step has started, in this process.
static STARTED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// One step, `hold`, that hangs in the `hold` child and returns anywhere
/// else.
fn saga(hang: bool) -> Saga<()> {
    Saga::builder("dead-owner")
        .step(Step::new_async(
            "hold",
            move |_: &mut (), info: &StepInfo<'_>| {
                let id = info.execution_id().to_string();
                Box::pin(async move {
                    STARTED.lock().unwrap().push(id);
                    if hang {
                        std::future::pending::<()>().await;
                    }
                    Ok::<(), StepError>(())
                })
            },
        ))
        .build()
        .unwrap()
}

fn db(dir: &Path) -> PathBuf {
    dir.join("sagas.db")
}

/// This test binary again, running the child test in `role`.
fn child(dir: &Path, role: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "child_plays_its_role",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ROLE, role)
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs a child in `role` to its end (failing after a minute: a hang, not
/// a timing check); its output.
fn run(dir: &Path, role: &str) -> String {
    ended(child(dir, role).spawn().unwrap(), role)
}

fn ended(mut process: Child, role: &str) -> String {
    for _ in 0..600 {
        if process.try_wait().unwrap().is_some() {
            let output = process.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            assert!(
                output.status.success(),
                "{role}: {stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            );
            return stdout;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    process.kill().unwrap();
    panic!("the `{role}` child did not end");
}

/// The owner: a process holding the three executions, hung mid-step,
/// until it is killed.
fn owner(dir: &Path) -> Child {
    let mut process = child(dir, "hold").spawn().unwrap();
    let mut out = BufReader::new(process.stdout.take().unwrap());
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 {
        // After the test harness's `test child_plays_its_role ... `.
        if line.trim_end().ends_with("ready") {
            return process;
        }
        line.clear();
    }
    let output = process.wait_with_output().unwrap();
    panic!(
        "the owner did not start: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn kill(mut process: Child) {
    process.kill().unwrap();
    assert_eq!(process.wait().unwrap().signal(), Some(9));
}

/// The ids after `label` on the line of `stdout` that holds it.
fn listed(stdout: &str, label: &str) -> BTreeSet<String> {
    let line = stdout
        .lines()
        .find_map(|line| line.split_once(label).map(|(_, ids)| ids))
        .unwrap_or_else(|| panic!("no `{label}` line in {stdout}"));
    line.split_whitespace().map(str::to_owned).collect()
}

fn all() -> BTreeSet<String> {
    IDS.iter().map(|id| (*id).to_owned()).collect()
}

/// A new process, with no memory of any other: recovers what it can,
/// carries it to its end, and says what it resumed and what was busy.
fn take(dir: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let stdout = run(dir, "take");
    (listed(&stdout, "resumed:"), listed(&stdout, "busy:"))
}

/// The statuses of the executions, read by this process.
fn statuses(dir: &Path) -> Vec<ExecutionStatus> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open_read_only(db(dir)).unwrap();
        let mut statuses = Vec::new();
        for id in IDS {
            let record = store.get(&ExecutionId::new(id)).await.unwrap().unwrap();
            statuses.push(record.status);
        }
        statuses
    })
}

/// The children's parts: run only by the tests below, in their own
/// processes.
#[test]
#[ignore = "the child process of the other tests"]
fn child_plays_its_role() {
    let role = std::env::var(CHILD_ROLE).expect("run by its parent tests only");
    let dir = PathBuf::from(std::env::var_os(CHILD_DIR).unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        match role.as_str() {
            // Starts the three executions and hangs in their steps.
            "hold" => {
                let store = SqliteStore::open(db(&dir)).unwrap();
                let engine = SagaEngine::new(store).with_lease_ttl(MINUTE);
                engine.register(saga(true)).await.unwrap();
                for id in IDS {
                    engine.start_with_id("dead-owner", id, ()).await.unwrap();
                }
                for _ in 0..600 {
                    if STARTED.lock().unwrap().len() == IDS.len() {
                        println!("ready");
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                panic!("the steps did not start");
            }
            // Opens the store to write and closes it, claiming nothing
            // (a service whose definitions are others').
            "open" => drop(SqliteStore::open(db(&dir)).unwrap()),
            // As `open`, with a short busy timeout: the test holds the
            // write lock meanwhile.
            "open-busy" => {
                let options = SqliteOptions::new().with_busy_timeout(Duration::from_millis(200));
                drop(SqliteStore::open_with(db(&dir), options).unwrap());
            }
            // Claims the first execution (as `saga abandon` does before
            // it writes) and exits holding it.
            "claim-one" => {
                let store = SqliteStore::open(db(&dir)).unwrap();
                let owner = format!("pid{}-claimer", std::process::id());
                let lease = store.claim(&ExecutionId::new(IDS[0]), &owner, MINUTE).await;
                assert!(lease.unwrap().is_some(), "the dead owner's lease stood");
            }
            // A restarted worker: recovers what it can and runs it to its
            // end.
            "take" => {
                let store = SqliteStore::open(db(&dir)).unwrap();
                let engine = SagaEngine::new(store).with_lease_ttl(MINUTE);
                engine.register(saga(false)).await.unwrap();
                let recovery = engine.recover().await.unwrap();
                assert!(recovery.refused.is_empty(), "{recovery:?}");
                for id in &recovery.resumed {
                    let report = engine.wait(id).await.unwrap();
                    assert_eq!(report.status, ExecutionStatus::Completed);
                }
                let ids = |ids: &[ExecutionId]| {
                    ids.iter()
                        .map(ExecutionId::to_string)
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                println!("resumed: {}", ids(&recovery.resumed));
                println!("busy: {}", ids(&recovery.busy));
            }
            other => panic!("unknown role `{other}`"),
        }
    });
}

#[test]
fn a_dead_owner_is_taken_over_at_once_after_another_process_opened_the_store() {
    let dir = scratch_dir("dead_owner_open");
    let holder = owner(&dir);
    // Alive, it keeps every lease, whoever opens the store.
    run(&dir, "open");
    let (resumed, busy) = take(&dir);
    assert!(resumed.is_empty(), "taken from a live owner: {resumed:?}");
    assert_eq!(busy, all());

    kill(holder);
    // A process that claims nothing of it opens the store and exits (the
    // v2-only pod of a rolling deploy); the next one takes all at once.
    run(&dir, "open");
    let (resumed, busy) = take(&dir);
    assert_eq!(resumed, all(), "busy: {busy:?}");
    assert!(busy.is_empty(), "waited for the dead owner: {busy:?}");
    assert_eq!(statuses(&dir), [ExecutionStatus::Completed; 3]);
}

#[test]
fn a_dead_owner_is_taken_over_at_once_after_another_process_claimed_one() {
    let dir = scratch_dir("dead_owner_claim");
    kill(owner(&dir));
    // Its first execution taken over (and the taker gone, too), the next
    // process takes all three at once.
    run(&dir, "claim-one");
    let (resumed, busy) = take(&dir);
    assert_eq!(resumed, all(), "busy: {busy:?}");
    assert!(busy.is_empty(), "waited for the dead owner: {busy:?}");
    assert_eq!(statuses(&dir), [ExecutionStatus::Completed; 3]);
}

#[test]
fn a_process_that_cannot_write_leaves_the_proof_in_place() {
    let dir = scratch_dir("dead_owner_busy");
    kill(owner(&dir));
    // Another connection holds the write lock: the opening process cannot
    // record the death, so it must leave the sidecar for the next one.
    let lock = rusqlite::Connection::open(db(&dir)).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    run(&dir, "open-busy");
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    let (resumed, busy) = take(&dir);
    assert_eq!(resumed, all(), "busy: {busy:?}");
    assert!(busy.is_empty(), "waited for the dead owner: {busy:?}");
}

#[test]
fn racing_restarts_take_a_dead_owner_s_executions_over_once_and_at_once() {
    let dir = scratch_dir("dead_owner_race");
    kill(owner(&dir));
    // Three restarted workers at once, each opening (sweeping) and
    // recovering: together they take all three, each once; what one of
    // them finds busy another (alive then) took.
    let children: Vec<Child> = (0..3)
        .map(|_| child(&dir, "take").spawn().unwrap())
        .collect();
    let mut resumed = Vec::new();
    let mut busy = BTreeSet::new();
    for process in children {
        let stdout = ended(process, "take");
        resumed.extend(listed(&stdout, "resumed:"));
        busy.extend(listed(&stdout, "busy:"));
    }
    resumed.sort();
    assert_eq!(resumed, IDS, "each taken once");
    assert!(busy.is_subset(&all()), "{busy:?}");
    assert_eq!(statuses(&dir), [ExecutionStatus::Completed; 3]);
}
