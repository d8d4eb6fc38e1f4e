//! Helpers of the saga-cli tests: stores written by a real engine, the
//! real `saga` binary run on them, and its output read back.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use saga_core::store::SqliteStore;
use saga_core::{ExecutionStatus, Saga, SagaEngine, Step, StepError, StepInfo};

/// A fresh directory for one test.
pub fn dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("saga-cli-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `order`: reserve (compensable), charge (the pivot), ship (retriable),
/// which fails while the courier is not ready.
pub fn order_saga(courier_ready: &Arc<AtomicBool>) -> Saga<u32> {
    let ready = Arc::clone(courier_ready);
    Saga::builder("order")
        .step(
            Step::new("reserve", |n: &mut u32, _: &StepInfo<'_>| {
                *n += 1;
                Ok::<_, StepError>(())
            })
            .undo(|n: &mut u32, _: Option<&()>, _: &StepInfo<'_>| {
                *n -= 1;
                Ok::<_, StepError>(())
            }),
        )
        .pivot(Step::new("charge", |_: &mut u32, _: &StepInfo<'_>| {
            Ok::<_, StepError>(())
        }))
        .step(Step::new("ship", move |_: &mut u32, _: &StepInfo<'_>| {
            if ready.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(StepError::new("no courier today").permanent())
            }
        }))
        .build()
        .unwrap()
}

/// `refund`: a step that always fails after one that it compensates.
pub fn refund_saga() -> Saga<u32> {
    Saga::builder("refund")
        .step(
            Step::new("lock", |_: &mut u32, _: &StepInfo<'_>| {
                Ok::<_, StepError>(())
            })
            .undo(|_: &mut u32, _: Option<&()>, _: &StepInfo<'_>| Ok::<_, StepError>(())),
        )
        .step(Step::new("pay_back", |_: &mut u32, _: &StepInfo<'_>| {
            Err::<(), _>(StepError::new("bank closed"))
        }))
        .build()
        .unwrap()
}

/// A store with `ok-1` completed, `stuck-1` stuck at `ship`, `refund-1`
/// compensated, written by a real engine that is then dropped.
pub async fn populated(dir: &Path) -> PathBuf {
    let db = dir.join("sagas.db");
    let ready = Arc::new(AtomicBool::new(true));
    let engine = SagaEngine::new(SqliteStore::open(&db).unwrap());
    engine.register(order_saga(&ready)).await.unwrap();
    engine.register(refund_saga()).await.unwrap();
    let id = engine.start_with_id("order", "ok-1", 0_u32).await.unwrap();
    assert_eq!(
        engine.wait(&id).await.or_else(ended).unwrap().status,
        ExecutionStatus::Completed
    );
    ready.store(false, Ordering::SeqCst);
    let id = engine
        .start_with_id("order", "stuck-1", 0_u32)
        .await
        .unwrap();
    assert_eq!(
        engine.wait(&id).await.or_else(ended).unwrap().status,
        ExecutionStatus::Stuck
    );
    let id = engine
        .start_with_id("refund", "refund-1", 0_u32)
        .await
        .unwrap();
    assert_eq!(
        engine.wait(&id).await.or_else(ended).unwrap().status,
        ExecutionStatus::Compensated
    );
    db
}

pub fn saga(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_saga"))
        .args(args)
        .output()
        .unwrap()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// Runs the binary on `db` and expects success; returns stdout.
pub fn ok(db: &Path, args: &[&str]) -> String {
    let mut all = vec!["--store", db.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = saga(&all);
    assert!(
        out.status.success(),
        "saga {all:?} failed: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Runs the binary on `db` and expects exit code `code`; returns stderr.
pub fn fails(db: &Path, args: &[&str], code: i32) -> String {
    let mut all = vec!["--store", db.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = saga(&all);
    assert_eq!(
        out.status.code(),
        Some(code),
        "saga {all:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(stdout(&out), "", "nothing on stdout when it fails");
    stderr(&out)
}

pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

/// A child's stdout, line by line, read on a thread.
pub fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line containing `wanted` (bounded, so a hang fails the
/// test rather than blocking it); returns the lines read until then.
pub fn until(lines: &std::sync::mpsc::Receiver<String>, wanted: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                let found = line.contains(wanted);
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(e) => panic!("no line with {wanted:?} ({e}); read: {seen:#?}"),
        }
    }
}

/// `gated`: `pack`, then `ship`, which waits for a permit of `gate`.
pub fn gated_saga(gate: &Arc<tokio::sync::Semaphore>) -> Saga<u32> {
    let gate = Arc::clone(gate);
    Saga::builder("gated")
        .step(Step::new("pack", |_: &mut u32, _: &StepInfo<'_>| {
            Ok::<_, StepError>(())
        }))
        .step(Step::new_async(
            "ship",
            move |_: &mut u32, _: &StepInfo<'_>| {
                let gate = Arc::clone(&gate);
                Box::pin(async move {
                    gate.acquire().await.unwrap().forget();
                    Ok::<_, StepError>(())
                })
            },
        ))
        .build()
        .unwrap()
}

/// A `wait` that ended and did not complete (compensated, stuck,
/// cancelled, abandoned) as its report: `.or_else(support::ended)` for
/// tests that check the status themselves.
pub fn ended(error: saga_core::WaitError) -> Result<saga_core::SagaReport, saga_core::WaitError> {
    match error {
        saga_core::WaitError::Saga(failed) => Ok(failed.report().clone()),
        other => Err(other),
    }
}

/// The server of the PostgreSQL tests: `SAGA_PG_URL`, else the cluster of
/// `scripts/pg.sh start`, the project's one start-the-server helper (it
/// starts the cluster if none runs and prints its URL last), so the test
/// never skips. A cluster it starts is the tests': it stops once no test
/// process has been alive for 10 s (`SAGA_PG_USER_PID`, see the script).
#[cfg(feature = "postgres")]
pub fn pg_url() -> String {
    if let Some(url) = std::env::var("SAGA_PG_URL").ok().filter(|u| !u.is_empty()) {
        return url;
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg.sh");
    let out = std::process::Command::new(&script)
        .arg("start")
        .env("SAGA_PG_USER_PID", std::process::id().to_string())
        .output()
        .expect("running scripts/pg.sh start");
    assert!(
        out.status.success(),
        "scripts/pg.sh start: {}",
        stderr(&out)
    );
    stdout(&out)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned()
}
