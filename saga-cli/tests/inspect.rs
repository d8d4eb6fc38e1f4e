//! Inspecting a store as an operator does: whole ids and filters in
//! `list`, the store from `SAGA_STORE`, sizes and (on request) contexts in
//! `show`, and `watch` following an execution or the store.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use saga_core::store::{EventKind, SqliteStore};
use saga_core::{ExecutionStatus, Saga, SagaEngine, Step, StepError, StepInfo};
use support::*;

#[tokio::test]
async fn list_prints_full_ids_and_filters_by_status_time_and_count() {
    let dir = dir("list-full");
    let db = populated(&dir).await;
    let long_id = "0193a5f2-7c1e-7d40-9a6b-3f2e1d0c9b8a/retry-of-order-42";
    let ready = Arc::new(AtomicBool::new(true));
    let engine = SagaEngine::new(SqliteStore::open(&db).unwrap());
    engine.register(order_saga(&ready)).await.unwrap();
    let id = engine.start_with_id("order", long_id, 0_u32).await.unwrap();
    engine.wait(&id).await.or_else(support::ended).unwrap();
    drop(engine);

    let text = ok(&db, &["list"]);
    let row = text
        .lines()
        .find(|l| l.starts_with(long_id))
        .unwrap_or_else(|| panic!("the id is not whole: {text}"));
    assert_eq!(row.split_whitespace().nth(1), Some("order"), "{text}");
    // Columns line up under their headers.
    let header = text.lines().next().unwrap();
    assert_eq!(
        header.find("SAGA"),
        row.find("  order").map(|at| at + 2),
        "{text}"
    );

    let text = ok(&db, &["list", "--limit", "2"]);
    let ids: Vec<&str> = text
        .lines()
        .skip(1)
        .take(2)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(ids, ["ok-1", "stuck-1"], "{text}");
    assert!(
        text.ends_with("2 executions shown, more match (1 stuck: `saga show <id>`)\n"),
        "{text}"
    );
    let rows = json(&ok(&db, &["list", "--limit", "1", "--json"]));
    assert_eq!(rows.as_array().unwrap().len(), 1);

    let text = ok(&db, &["list", "--since", "1h", "--status", "completed"]);
    assert!(text.contains("ok-1") && text.contains(long_id), "{text}");
    assert!(!text.contains("stuck-1"), "{text}");
    let text = ok(&db, &["list", "--since", "2999-01-01"]);
    assert!(text.ends_with("0 executions\n"), "{text}");
    let text = ok(&db, &["list", "--since", "2000-01-01 00:00"]);
    assert!(text.contains("4 executions"), "{text}");
    let err = fails(&db, &["list", "--since", "last tuesday"], 2);
    assert!(
        err.contains("give a time ago (`90s`, `15m`, `2h`, `7d`) or a UTC date"),
        "{err}"
    );
}

#[tokio::test]
async fn the_store_comes_from_saga_store_unless_store_is_given() {
    let dir = dir("env");
    let db = populated(&dir).await;
    let out = Command::new(env!("CARGO_BIN_EXE_saga"))
        .args(["list"])
        .env("SAGA_STORE", &db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("stuck-1"), "{}", stdout(&out));
    // `--store` wins.
    let other = dir.join("other.db");
    let out = Command::new(env!("CARGO_BIN_EXE_saga"))
        .args(["--store", other.to_str().unwrap(), "list"])
        .env("SAGA_STORE", &db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("other.db"), "{}", stderr(&out));
    // Neither: the error names both ways (bad arguments: code 2).
    let out = Command::new(env!("CARGO_BIN_EXE_saga"))
        .args(["list"])
        .env_remove("SAGA_STORE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("pass `--store <path>` or set `SAGA_STORE`"),
        "{}",
        stderr(&out)
    );
}

/// A card refusal with its cause, as a payment client reports it.
#[derive(Debug)]
struct Declined(std::io::Error);

impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("card declined")
    }
}

impl std::error::Error for Declined {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// `show` prints each error with its cause chain and permanent mark, as
/// the log keeps them, in the timeline and in `--json`.
#[tokio::test]
async fn show_prints_each_error_with_its_cause_chain() {
    let dir = dir("show-causes");
    let db = dir.join("sagas.db");
    let engine = SagaEngine::new(SqliteStore::open(&db).unwrap());
    let saga = Saga::builder("pay")
        .step(Step::new("charge", |_: &mut u32, _: &StepInfo<'_>| {
            let cause = std::io::Error::other("gateway said 402\u{1b}[2J");
            Err::<(), _>(StepError::new(Declined(cause)).permanent())
        }))
        .build()
        .unwrap();
    engine.register(saga).await.unwrap();
    let id = engine.start_with_id("pay", "c-1", 0_u32).await.unwrap();
    engine.wait(&id).await.or_else(support::ended).unwrap();
    drop(engine);

    let text = ok(&db, &["show", "c-1"]);
    let line = text
        .lines()
        .find(|l| l.contains("step_failed"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.ends_with("charge #1: card declined: gateway said 402\\u{1b}[2J (permanent)"),
        "{line}"
    );
    let doc = json(&ok(&db, &["show", "c-1", "--json"]));
    let failed = doc["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "step_failed")
        .unwrap();
    assert_eq!(failed["error"], "card declined");
    assert_eq!(
        failed["causes"],
        serde_json::json!(["gateway said 402\u{1b}[2J"])
    );
    assert_eq!(failed["permanent"], true);
}

#[tokio::test]
async fn show_gives_sizes_and_prints_contexts_and_outputs_only_when_asked() {
    let dir = dir("show-context");
    let db = dir.join("sagas.db");
    let engine = SagaEngine::new(SqliteStore::open(&db).unwrap());
    let saga = Saga::builder("profile")
        .step(
            Step::new("lookup", |name: &mut String, _: &StepInfo<'_>| {
                name.push_str("\u{1b}[31m");
                Ok::<_, StepError>("card 4242".to_owned())
            })
            .durable(),
        )
        .build()
        .unwrap();
    engine.register(saga).await.unwrap();
    let id = engine
        .start_with_id("profile", "p-1", "Ada Lovelace".to_owned())
        .await
        .unwrap();
    engine.wait(&id).await.or_else(support::ended).unwrap();
    drop(engine);

    let text = ok(&db, &["show", "p-1"]);
    assert!(!text.contains("Ada") && !text.contains("4242"), "{text}");
    // "Ada Lovelace\u001b[31m" as JSON: 24 bytes; "card 4242": 11.
    assert!(
        text.contains("context    24 B (`--context` prints it and the outputs)\n"),
        "{text}"
    );
    let lookup: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("lookup"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(lookup[lookup.len() - 2..], ["11", "B"], "{text}");

    let text = ok(&db, &["show", "p-1", "--context"]);
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(
        text.contains("CONTEXT (JSON)\n\"Ada Lovelace\\u001b[31m\"\n"),
        "{text}"
    );
    assert!(
        text.contains("output of `lookup`: \"card 4242\"\n"),
        "{text}"
    );

    let doc = json(&ok(&db, &["show", "p-1", "--json"]));
    assert_eq!(doc["context"], serde_json::Value::Null);
    assert_eq!(doc["outputs"], serde_json::Value::Null);
    assert_eq!(doc["context_bytes"], 24);
    assert_eq!(doc["steps"][0]["output_bytes"], 11);
    assert_eq!(doc["execution"]["id"], "p-1");
    let doc = json(&ok(&db, &["show", "p-1", "--json", "--context"]));
    assert_eq!(doc["context"], "Ada Lovelace\u{1b}[31m");
    assert_eq!(doc["outputs"]["lookup"], "card 4242");
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_follows_an_execution_until_it_ends_and_the_store_until_stopped() {
    let dir = dir("watch");
    let db = dir.join("sagas.db");
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let engine = SagaEngine::new(SqliteStore::open(&db).unwrap());
    engine.register(gated_saga(&gate)).await.unwrap();
    let id = engine.start_with_id("gated", "w-1", 0_u32).await.unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_saga"))
        .args([
            "--store",
            db.to_str().unwrap(),
            "watch",
            "w-1",
            "--interval",
            "20",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut child);
    let first = until(&lines, "step_started            ship #1");
    assert!(
        first[0].starts_with("watching execution `w-1` of saga `gated`"),
        "{first:#?}"
    );
    assert!(
        first
            .iter()
            .any(|l| l.contains("step_succeeded          pack"))
    );
    // Still running: the watcher is still there, waiting.
    gate.add_permits(1);
    engine.wait(&id).await.or_else(support::ended).unwrap();
    let rest = until(&lines, "ended");
    assert_eq!(rest.last().unwrap(), "ended completed", "{rest:#?}");
    assert!(
        rest.iter()
            .any(|l| l.contains("step_succeeded          ship #1"))
    );
    assert!(child.wait().unwrap().success());
    // An ended execution, for scripts: its log as JSON lines, then the end.
    let text = ok(&db, &["watch", "w-1", "--json"]);
    let docs: Vec<serde_json::Value> = text.lines().map(json).collect();
    assert_eq!(docs[0]["kind"], "step_started");
    assert_eq!(docs[0]["step"], "pack");
    assert_eq!(docs.len(), 6, "{text}");
    assert_eq!(docs[5], serde_json::json!({ "ended": "completed" }));

    // The whole store: a new execution shows up with its statuses.
    let mut child = Command::new(env!("CARGO_BIN_EXE_saga"))
        .args(["--store", db.to_str().unwrap(), "watch", "--interval", "20"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut child);
    let first = until(&lines, "watching the store");
    assert_eq!(
        first,
        ["watching the store: 1 execution, 0 unfinished; Ctrl-C stops"]
    );
    let id = engine.start_with_id("gated", "w-2", 0_u32).await.unwrap();
    until(&lines, "  w-2  gated  running");
    gate.add_permits(1);
    engine.wait(&id).await.or_else(support::ended).unwrap();
    until(&lines, "  w-2  gated  completed");
    child.kill().unwrap();
    let _ = child.wait();

    let err = fails(&db, &["watch", "nope"], 1);
    assert!(err.contains("no execution `nope`"), "{err}");
}

/// A cancel request shows in an execution's watch when it is made (it is a
/// mark on the execution, not an event of its log), once.
#[tokio::test(flavor = "multi_thread")]
async fn watch_shows_a_cancel_request_when_it_is_made() {
    let dir = dir("watch-cancel");
    let db = dir.join("sagas.db");
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let engine = SagaEngine::new(SqliteStore::open(&db).unwrap());
    engine.register(gated_saga(&gate)).await.unwrap();
    let id = engine.start_with_id("gated", "c-1", 0_u32).await.unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_saga"))
        .args([
            "--store",
            db.to_str().unwrap(),
            "watch",
            "c-1",
            "--interval",
            "20",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut child);
    until(&lines, "step_started            ship #1");
    engine.cancel(&id).await.unwrap();
    let told = until(&lines, "cancel_requested");
    assert!(
        told.last()
            .unwrap()
            .ends_with("cancel_requested (seen by this watch)"),
        "{told:#?}"
    );
    // The last step was under way: the run completes, the request ignored.
    gate.add_permits(1);
    engine.wait(&id).await.or_else(support::ended).unwrap();
    let rest = until(&lines, "ended");
    assert_eq!(rest.last().unwrap(), "ended completed", "{rest:#?}");
    assert!(
        rest.iter()
            .any(|l| l.contains("cancel_ignored          ship")),
        "{rest:#?}"
    );
    assert!(
        !rest.iter().any(|l| l.contains("cancel_requested")),
        "told once: {rest:#?}"
    );
    assert!(child.wait().unwrap().success());

    // Once it has ended, its log says what came of the request.
    let text = ok(&db, &["watch", "c-1", "--json"]);
    let kinds: Vec<serde_json::Value> = text.lines().map(|l| json(l)["kind"].clone()).collect();
    assert!(!kinds.contains(&"cancel_requested".into()), "{text}");
    assert!(kinds.contains(&"cancel_ignored".into()), "{text}");
}

/// `list`, `show` and `diagram` open the store read-only: a user who may
/// read the file but write neither it nor its directory inspects it, and
/// no byte of it changes. Tests run as root, which ignores permission
/// bits, so the commands run as `nobody` (via `runuser`).
#[tokio::test]
async fn inspecting_needs_no_write_access_and_changes_no_byte() {
    use std::os::unix::fs::PermissionsExt;
    const NOBODY: u32 = 65534;
    let dir = dir("read-only-inspect");
    let db = populated(&dir).await;
    let fingerprint = {
        let engine = SagaEngine::new(SqliteStore::open(&db).unwrap());
        let view = engine.get(&"ok-1".into()).await.unwrap().unwrap();
        view.record.fingerprint.clone()
    };
    for path in [&db, &dir] {
        std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o400)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let before = std::fs::read(&db).unwrap();

    let as_nobody = |args: &[&str]| {
        let out = Command::new("runuser")
            .args(["-u", "nobody", "--", env!("CARGO_BIN_EXE_saga"), "--store"])
            .arg(&db)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "saga {args:?} as nobody failed: {}{}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    };
    let listed = as_nobody(&["list"]);
    assert!(
        listed.contains("ok-1") && listed.contains("stuck-1"),
        "{listed}"
    );
    let shown = as_nobody(&["show", "stuck-1"]);
    assert!(shown.contains("stuck"), "{shown}");
    let drawn = as_nobody(&["diagram", &fingerprint]);
    assert!(drawn.contains("ship"), "{drawn}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "a byte changed");

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A run cut off inside a step (its process gone: here its runtime shut
/// down, so its lease is no longer renewed) and taken over by another
/// engine: `show` marks the start the new owner wrote again.
#[test]
fn show_marks_a_step_started_again_by_a_take_over() {
    let dir = dir("show-takeover");
    let db = dir.join("sagas.db");
    let ttl = Duration::from_millis(300);
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let first = tokio::runtime::Runtime::new().unwrap();
    let id = first.block_on(async {
        let engine = SagaEngine::new(SqliteStore::open(&db).unwrap()).with_lease_ttl(ttl);
        engine.register(gated_saga(&gate)).await.unwrap();
        let id = engine.start("gated", 0_u32).await.unwrap();
        // `ship` is under way, waiting at the gate.
        let started = std::time::Instant::now();
        loop {
            let events = engine.store().events(&id).await.unwrap();
            if events
                .iter()
                .filter(|e| e.kind == EventKind::StepStarted)
                .count()
                == 2
            {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "{events:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        id
    });
    first.shutdown_background();
    let second = tokio::runtime::Runtime::new().unwrap();
    second.block_on(async {
        let engine = SagaEngine::new(SqliteStore::open(&db).unwrap()).with_lease_ttl(ttl);
        engine.register(gated_saga(&gate)).await.unwrap();
        tokio::time::sleep(ttl * 2).await;
        let recovery = engine.recover().await.unwrap();
        assert_eq!(recovery.resumed, std::slice::from_ref(&id), "{recovery:?}");
        gate.add_permits(1);
        engine.wait(&id).await.unwrap();
    });

    let text = ok(&db, &["show", id.as_str()]);
    let marked: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("(again: taken over"))
        .collect();
    assert_eq!(marked.len(), 1, "{text}");
    assert!(
        marked[0].contains("step_started") && marked[0].contains("ship #1"),
        "{text}"
    );
    // Only the second start of `ship` is marked.
    let starts = text.lines().filter(|l| l.contains("step_started")).count();
    assert_eq!(starts, 3, "{text}");
}

/// Runs `saga` once on a new SQLite store at `db` and returns how it
/// ended and what `saga show` prints of it.
async fn shown(db: &std::path::Path, saga: Saga<u32>) -> (ExecutionStatus, String) {
    let name = saga.name().to_string();
    let engine = SagaEngine::new(SqliteStore::open(db).unwrap());
    engine.register(saga).await.unwrap();
    let id = engine.start(&name, 0_u32).await.unwrap();
    let report = engine.wait(&id).await.or_else(ended).unwrap();
    drop(engine);
    (report.status, ok(db, &["show", id.as_str()]))
}

/// A step whose first attempt failed and whose retry succeeded keeps that
/// error in its report: `show` says a retry recovered from it, so a
/// completed execution does not read as failed.
#[tokio::test]
async fn show_says_when_a_retry_recovered_from_a_step_error() {
    let dir = dir("show-recovered");
    let db = dir.join("sagas.db");
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = Arc::clone(&calls);
    let saga = Saga::builder("flaky")
        .step(
            Step::new("charge", move |_: &mut u32, _: &StepInfo<'_>| {
                if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    return Err(StepError::new("provider busy"));
                }
                Ok(())
            })
            .retry(
                saga_core::RetryPolicy::attempts(2)
                    .with_backoff(Duration::from_millis(1))
                    .with_jitter(0.0),
            ),
        )
        .build()
        .unwrap();
    let (status, text) = shown(&db, saga).await;
    assert_eq!(status, ExecutionStatus::Completed);
    assert!(text.contains("status     completed\n"), "{text}");
    assert!(
        text.contains("error of `charge` (recovered: a later attempt succeeded): provider busy\n"),
        "{text}"
    );
}

/// A step whose attempt may have taken effect (its outcome unknown) and
/// that was then compensated had no attempt succeed: `show` must not say
/// a retry recovered from its error.
#[tokio::test]
async fn show_does_not_say_recovered_of_a_step_of_unknown_outcome() {
    let dir = dir("show-unknown");
    let db = dir.join("sagas.db");
    let saga = Saga::builder("lost")
        .step(
            Step::new("charge", |_: &mut u32, _: &StepInfo<'_>| {
                Err::<(), _>(StepError::new("provider timed out").outcome_unknown())
            })
            .undo(|_: &mut u32, _: Option<&()>, _: &StepInfo<'_>| Ok::<(), StepError>(())),
        )
        .build()
        .unwrap();
    let (status, text) = shown(&db, saga).await;
    assert_eq!(status, ExecutionStatus::Compensated);
    assert!(
        text.contains("error of `charge` (outcome unknown, compensated): provider timed out\n"),
        "{text}"
    );
}

/// A charge whose first attempt may have taken effect, declined for good
/// on its retry, then refunded on the second try: `show` names the
/// decline as the charge's error, and the refund's error a retry
/// recovered from apart (the report's `last_error`, the last of either,
/// is the refund's, which hid why the saga rolled back).
#[tokio::test]
async fn show_names_the_actions_error_apart_from_its_compensations() {
    let dir = dir("show-undo-error");
    let db = dir.join("sagas.db");
    let (charges, refunds) = (
        Arc::new(std::sync::atomic::AtomicU32::new(0)),
        Arc::new(std::sync::atomic::AtomicU32::new(0)),
    );
    let retry = || {
        saga_core::RetryPolicy::attempts(2)
            .with_backoff(Duration::from_millis(1))
            .with_jitter(0.0)
    };
    let saga = Saga::builder("declined")
        .step(
            Step::new("charge", move |_: &mut u32, _: &StepInfo<'_>| {
                if charges.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    return Err::<(), _>(StepError::new("answered 500").outcome_unknown());
                }
                Err(StepError::new("card declined").permanent())
            })
            .retry(retry())
            .undo(move |_: &mut u32, _: Option<&()>, _: &StepInfo<'_>| {
                if refunds.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    return Err(StepError::new("refund answered 500"));
                }
                Ok::<(), StepError>(())
            })
            .undo_retry(retry()),
        )
        .build()
        .unwrap();
    let (status, text) = shown(&db, saga).await;
    assert_eq!(status, ExecutionStatus::Compensated);
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error of")).collect();
    assert_eq!(
        errors,
        [
            "error of `charge` (outcome unknown, compensated): card declined",
            "error of the compensation of `charge` (recovered: a later attempt succeeded): refund answered 500",
        ],
        "{text}"
    );
}

/// A pivot whose first attempt may have taken effect, declined for good
/// on its retry, is stuck: `show` says its outcome is unknown, which the
/// decline alone does not.
#[tokio::test]
async fn show_says_a_failed_step_of_unknown_outcome_may_have_taken_effect() {
    let dir = dir("show-unknown-pivot");
    let db = dir.join("sagas.db");
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = Arc::clone(&calls);
    let saga = Saga::builder("ship")
        .pivot(
            Step::new("ship", move |_: &mut u32, _: &StepInfo<'_>| {
                if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    return Err::<(), _>(StepError::new("courier timed out").outcome_unknown());
                }
                Err(StepError::new("courier refused").permanent())
            })
            .retry(
                saga_core::RetryPolicy::attempts(2)
                    .with_backoff(Duration::from_millis(1))
                    .with_jitter(0.0),
            ),
        )
        .build()
        .unwrap();
    let (status, text) = shown(&db, saga).await;
    assert_eq!(status, ExecutionStatus::Stuck);
    assert!(
        text.contains(
            "error of `ship` (outcome unknown: an attempt may have taken effect): courier refused\n"
        ),
        "{text}"
    );
}

/// Before: an owner's lease that had expired (its process gone) read as
/// held: `lease dead-owner, until <a time past>`.
#[tokio::test]
async fn show_says_a_lease_expired() {
    use saga_core::store::{NewExecution, SagaStore};
    let dir = dir("lease-expired");
    let db = populated(&dir).await;
    let ready = Arc::new(AtomicBool::new(true));
    let store = SqliteStore::open(&db).unwrap();
    for (id, ttl) in [
        ("orphan-1", Duration::from_millis(1)),
        ("held-1", Duration::from_secs(3600)),
    ] {
        store
            .create(
                NewExecution {
                    id: id.into(),
                    saga: "order".to_owned(),
                    fingerprint: order_saga(&ready).fingerprint(),
                    context: "0".to_owned(),
                    events: Vec::new(),
                },
                "dead-owner",
                ttl,
            )
            .await
            .unwrap();
    }
    drop(store);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let text = ok(&db, &["show", "orphan-1"]);
    let lease = text.lines().find(|l| l.starts_with("lease ")).unwrap();
    assert!(
        lease.starts_with("lease      dead-owner, expired at ")
            && lease.ends_with(" (a worker with this definition takes it over)"),
        "{text}"
    );
    let text = ok(&db, &["show", "held-1"]);
    let lease = text.lines().find(|l| l.starts_with("lease ")).unwrap();
    assert!(lease.starts_with("lease      dead-owner, until "), "{text}");
}

/// A definition's declared version shows beside its fingerprint in `show`
/// and in `diagram --json`; an undeclared one shows nothing more.
#[tokio::test]
async fn show_and_diagram_name_a_declared_version() {
    let dir = dir("version");
    let db = populated(&dir).await;
    let engine = SagaEngine::new(SqliteStore::open(&db).unwrap());
    let saga = Saga::<u32>::builder("versioned")
        .version("2")
        .step(Step::new("one", |n: &mut u32, _: &StepInfo<'_>| {
            *n += 1;
            Ok::<(), StepError>(())
        }))
        .build()
        .unwrap();
    let fingerprint = engine.register(saga).await.unwrap();
    let id = engine
        .start_with_id("versioned", "v-1", 0_u32)
        .await
        .unwrap();
    engine.wait(&id).await.unwrap();
    drop(engine);
    let text = ok(&db, &["show", "v-1"]);
    assert!(
        text.contains(&format!("definition {fingerprint} (version 2)\n")),
        "{text}"
    );
    let doc = json(&ok(&db, &["diagram", &fingerprint, "--json"]));
    assert_eq!(doc["version"], "2", "{doc}");
    let doc = json(&ok(&db, &["show", "v-1", "--json"]));
    assert_eq!(doc["version"], "2", "{doc}");
    let doc = json(&ok(&db, &["show", "ok-1", "--json"]));
    assert!(doc.get("version").is_none(), "{doc}");
    let text = ok(&db, &["show", "ok-1"]);
    assert!(!text.contains("(version"), "{text}");

    // Two versions listed: the column gives the declared one first.
    let engine = SagaEngine::new(SqliteStore::open(&db).unwrap());
    let unversioned = Saga::<u32>::builder("versioned")
        .step(Step::new("one", |_: &mut u32, _: &StepInfo<'_>| {
            Ok::<(), StepError>(())
        }))
        .build()
        .unwrap();
    let plain = engine.register(unversioned).await.unwrap();
    let id = engine
        .start_with_id("versioned", "v-0", 0_u32)
        .await
        .unwrap();
    engine.wait(&id).await.unwrap();
    drop(engine);
    let text = ok(&db, &["list", "--saga", "versioned"]);
    let row = |id: &str| {
        let line = text.lines().find(|l| l.starts_with(id)).unwrap();
        line.split("  ")
            .filter(|c| !c.is_empty())
            .nth(2)
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(row("v-1"), format!("2 ({})", &fingerprint[..8]), "{text}");
    assert_eq!(row("v-0"), plain[..8], "{text}");

    // `list --json` gives each row its declared version, none without.
    let rows = json(&ok(&db, &["list", "--saga", "versioned", "--json"]));
    let listed = |id: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(listed("v-1")["version"], "2", "{rows}");
    assert_eq!(listed("v-1")["fingerprint"], *fingerprint, "{rows}");
    assert!(listed("v-0").get("version").is_none(), "{rows}");
}

/// A rollback logged a second time (a run that took the execution over
/// mid-rollback logs it again) is marked in the timeline, as a step
/// started again is. Before: two `rollback_started` lines, unmarked.
#[tokio::test]
async fn show_marks_a_rollback_logged_again() {
    use saga_core::store::{Created, Event, NewExecution};
    let dir = dir("show-rollback-again");
    let db = dir.join("sagas.db");
    let engine = SagaEngine::new(SqliteStore::open(&db).unwrap());
    let saga = Saga::<u32>::builder("undone")
        .step(
            Step::new("reserve", |_: &mut u32, _: &StepInfo<'_>| {
                Ok::<(), StepError>(())
            })
            .undo(|_: &mut u32, _: Option<&()>, _: &StepInfo<'_>| Ok::<(), StepError>(())),
        )
        .step(Step::new("pay", |_: &mut u32, _: &StepInfo<'_>| {
            Err::<(), _>(StepError::new("declined").permanent())
        }))
        .build()
        .unwrap();
    let fingerprint = engine.register(saga).await.unwrap();
    let store = engine.store();
    let event = |seq: u64, kind: EventKind, step: Option<u32>| {
        let mut event = Event::new(seq, kind);
        event.step = step;
        event.attempt = u32::from(step.is_some() && kind != EventKind::RollbackStarted);
        event
    };
    let created = store
        .create(
            NewExecution {
                id: "again-1".into(),
                saga: "undone".to_owned(),
                fingerprint,
                context: "0".to_owned(),
                events: vec![event(1, EventKind::StepStarted, Some(0))],
            },
            "first",
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let Created::New(lease) = created else {
        panic!("not created")
    };
    let id = saga_core::ExecutionId::new("again-1");
    let mut failed = event(4, EventKind::StepFailed, Some(1));
    failed.error = Some("declined".to_owned());
    let log = vec![
        event(2, EventKind::StepSucceeded, Some(0)),
        event(3, EventKind::StepStarted, Some(1)),
        failed,
        event(5, EventKind::RollbackStarted, Some(1)),
        event(6, EventKind::CompensationStarted, Some(0)),
        // The process died here; the next owner logs the rollback again.
        event(7, EventKind::RollbackStarted, Some(1)),
    ];
    store
        .append(&id, &lease, log, ExecutionStatus::Compensating)
        .await
        .unwrap();
    drop(engine);
    let text = ok(&db, &["show", "again-1"]);
    let rollbacks: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("rollback_started"))
        .collect();
    assert_eq!(rollbacks.len(), 2, "{text}");
    assert!(!rollbacks[0].contains("(again"), "{text}");
    assert!(
        rollbacks[1].ends_with("(again: a later run goes on with the rollback)"),
        "{text}"
    );
}
