//! On SQLite a clean exit is taken over at least as fast as a crash: a
//! process that returns from `main` (or a store dropped in process) with
//! a run mid-step leaves its owner's lock released and its sidecar in
//! place, as a killed process does, so the next owner proves it gone and
//! takes the execution over at once, not after the lease's time to live.
//! An owner that another open store of its process still uses lives on.
//!
//! Every lease here lasts an hour: only a proof of the owner's end lets
//! another owner take its execution over.

#![cfg(unix)]

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use saga_core::store::{Created, NewExecution, SagaStore, SqliteStore};
use saga_core::{ExecutionId, ExecutionStatus, Saga, SagaEngine, Step, StepError, StepInfo};

mod support;

use support::durable::scratch_dir;

const HOUR: Duration = Duration::from_secs(3600);

/// Set in the child process: its store's directory.
const CHILD_DIR: &str = "SAGA_CLEAN_EXIT_DIR";

/// The executions whose `hold` hangs (in their first owner), and those
/// whose `hold` has started, in this process.
static HANG: Mutex<Vec<String>> = Mutex::new(Vec::new());
static STARTED: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn listed(list: &Mutex<Vec<String>>, id: &ExecutionId) -> bool {
    list.lock().unwrap().iter().any(|x| x == id.as_str())
}

/// One step, `hold`, that hangs in the first owner and returns in the
/// next.
fn saga() -> Saga<()> {
    Saga::builder("clean-exit")
        .step(Step::new_async(
            "hold",
            |_: &mut (), info: &StepInfo<'_>| {
                let id = info.execution_id().clone();
                Box::pin(async move {
                    STARTED.lock().unwrap().push(id.to_string());
                    if listed(&HANG, &id) {
                        std::future::pending::<()>().await;
                    }
                    Ok::<(), StepError>(())
                })
            },
        ))
        .build()
        .unwrap()
}

/// Starts `id` on the store at `db` with an hour-long lease and returns
/// once its step has started, hanging: dropping the runtime then drops
/// the run, the engine and the store.
fn start_and_leave(db: &std::path::Path, id: &str) -> tokio::runtime::Runtime {
    let id = ExecutionId::new(id);
    HANG.lock().unwrap().push(id.to_string());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let engine = SagaEngine::new(SqliteStore::open(db).unwrap()).with_lease_ttl(HOUR);
        engine.register(saga()).await.unwrap();
        engine
            .start_with_id("clean-exit", id.clone(), ())
            .await
            .unwrap();
        for _ in 0..600 {
            if listed(&STARTED, &id) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("`hold` did not start");
    });
    runtime
}

/// A new owner on `db` (an hour-long lease) takes `id` over at once and
/// carries it to its end.
fn taken_over_at_once(db: &std::path::Path, id: &str) {
    let id = ExecutionId::new(id);
    HANG.lock().unwrap().retain(|x| x != id.as_str());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let engine = SagaEngine::new(SqliteStore::open(db).unwrap()).with_lease_ttl(HOUR);
        engine.register(saga()).await.unwrap();
        let recovery = engine.recover().await.unwrap();
        assert_eq!(recovery.resumed, std::slice::from_ref(&id), "{recovery:?}");
        let report = engine.wait(&id).await.unwrap();
        assert_eq!(report.status, ExecutionStatus::Completed);
    });
}

/// The child's part of `a_process_that_returns_from_main_is_taken_over_at_once`:
/// run only by it, in its own process.
#[test]
#[ignore = "the child process of another test"]
fn child_starts_a_run_and_returns() {
    let dir = std::env::var_os(CHILD_DIR).expect("run by its parent test only");
    let runtime = start_and_leave(&std::path::Path::new(&dir).join("sagas.db"), "exec-process");
    println!("leaving");
    // Returns: the runtime, the run, the engine and the store are dropped
    // as at the end of a service's `main`, and the process exits cleanly.
    drop(runtime);
}

#[test]
fn a_process_that_returns_from_main_is_taken_over_at_once() {
    let dir = scratch_dir("clean_exit_process");
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_starts_a_run_and_returns",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, &dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("leaving"),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    taken_over_at_once(&dir.join("sagas.db"), "exec-process");
}

#[test]
fn a_store_dropped_in_process_is_taken_over_at_once() {
    let db = scratch_dir("clean_exit_in_process").join("sagas.db");
    drop(start_and_leave(&db, "exec-in-process"));
    taken_over_at_once(&db, "exec-in-process");
}

fn execution(id: &str) -> NewExecution {
    NewExecution {
        id: ExecutionId::new(id),
        saga: "clean-exit".into(),
        fingerprint: "f".into(),
        context: "null".into(),
        events: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_lives_while_another_open_store_of_its_process_uses_it() {
    let db = scratch_dir("clean_exit_shared").join("sagas.db");
    let first = SqliteStore::open(&db).unwrap();
    let second = SqliteStore::open(&db).unwrap();
    let claimer = SqliteStore::open(&db).unwrap();
    let owner = format!("pid{}-shared", std::process::id());
    let created = first.create(execution("one"), &owner, HOUR).await.unwrap();
    assert!(matches!(created, Created::New(_)), "{created:?}");
    let created = second.create(execution("two"), &owner, HOUR).await.unwrap();
    assert!(matches!(created, Created::New(_)), "{created:?}");

    // One of its stores closed, the owner still runs behind the other:
    // its leases stand.
    drop(first);
    for id in ["one", "two"] {
        let claim = claimer.claim(&ExecutionId::new(id), "other", HOUR).await;
        assert_eq!(claim.unwrap(), None, "{id} taken from a live owner");
    }
    // Both closed, it is gone: its leases are claimable at once.
    drop(second);
    for id in ["one", "two"] {
        let claim = claimer.claim(&ExecutionId::new(id), "other", HOUR).await;
        assert!(claim.unwrap().is_some(), "{id} not taken over");
    }
}
