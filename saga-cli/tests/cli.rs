//! The real `saga` binary against real SQLite files written by a real
//! engine; and the same commands embedded (`saga_cli::run`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use saga_core::store::{NewExecution, SagaStore, SqliteStore};
use saga_core::{ExecutionStatus, Saga, SagaEngine, Step, StepError, StepInfo};

/// A fresh directory for one test.
fn dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("saga-cli-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `order`: reserve (compensable), charge (the pivot), ship (retriable),
/// which fails while the courier is not ready.
fn order_saga(courier_ready: &Arc<AtomicBool>) -> Saga<u32> {
    let ready = Arc::clone(courier_ready);
    Saga::builder("order")
        .step(
            Step::new("reserve", |n: &mut u32, _: &StepInfo<'_>| {
                *n += 1;
                Ok::<_, StepError>(())
            })
            .compensate(|n: &mut u32, _: Option<&()>, _: &StepInfo<'_>| {
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
                Err(StepError::new("no courier today"))
            }
        }))
        .build()
        .unwrap()
}

/// `refund`: a step that always fails after one that it compensates.
fn refund_saga() -> Saga<u32> {
    Saga::builder("refund")
        .step(
            Step::new("lock", |_: &mut u32, _: &StepInfo<'_>| {
                Ok::<_, StepError>(())
            })
            .compensate(|_: &mut u32, _: Option<&()>, _: &StepInfo<'_>| Ok::<_, StepError>(())),
        )
        .step(Step::new("pay_back", |_: &mut u32, _: &StepInfo<'_>| {
            Err::<(), _>(StepError::new("bank closed"))
        }))
        .build()
        .unwrap()
}

/// A store with `ok-1` completed, `stuck-1` stuck at `ship`, `refund-1`
/// compensated, written by a real engine that is then dropped.
async fn populated(dir: &Path) -> PathBuf {
    let db = dir.join("sagas.db");
    let ready = Arc::new(AtomicBool::new(true));
    let engine = SagaEngine::new(SqliteStore::open(&db).unwrap());
    engine.register(order_saga(&ready)).await.unwrap();
    engine.register(refund_saga()).await.unwrap();
    let id = engine.start_with_id("order", "ok-1", 0_u32).await.unwrap();
    assert_eq!(
        engine.wait(&id).await.unwrap().status,
        ExecutionStatus::Completed
    );
    ready.store(false, Ordering::SeqCst);
    let id = engine
        .start_with_id("order", "stuck-1", 0_u32)
        .await
        .unwrap();
    assert_eq!(
        engine.wait(&id).await.unwrap().status,
        ExecutionStatus::Stuck
    );
    let id = engine
        .start_with_id("refund", "refund-1", 0_u32)
        .await
        .unwrap();
    assert_eq!(
        engine.wait(&id).await.unwrap().status,
        ExecutionStatus::Compensated
    );
    db
}

fn saga(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_saga"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// Runs the binary on `db` and expects success; returns stdout.
fn ok(db: &Path, args: &[&str]) -> String {
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
fn fails(db: &Path, args: &[&str], code: i32) -> String {
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

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

#[tokio::test]
async fn list_prints_a_table_that_fits_80_columns() {
    let dir = dir("list");
    let db = populated(&dir).await;
    let text = ok(&db, &["list"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    for line in &lines {
        assert!(line.chars().count() <= 80, "too wide: {line:?}");
    }
    assert!(lines[0].starts_with("ID "), "{text}");
    assert!(lines[0].contains("SAGA") && lines[0].contains("STATUS"));
    let row = |id: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("no row {id}: {text}"))
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
    };
    assert_eq!(row("ok-1"), ["ok-1", "order", "completed"]);
    assert_eq!(row("stuck-1"), ["stuck-1", "order", "stuck"]);
    assert_eq!(row("refund-1"), ["refund-1", "refund", "compensated"]);
    assert_eq!(lines[4], "3 executions (1 stuck: `saga show <id>`)");

    let text = ok(&db, &["list", "--status", "stuck", "--no-integrity-check"]);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.contains("stuck-1") && !text.contains("ok-1"), "{text}");

    let rows = json(&ok(&db, &["list", "--saga", "order", "--json"]));
    let ids: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["ok-1", "stuck-1"]);
    assert_eq!(rows[1]["status"], "stuck");
    assert_eq!(rows[1]["fingerprint"].as_str().unwrap().len(), 64);

    let err = fails(&db, &["list", "--status", "wedged"], 2);
    assert!(
        err.contains("expected one of: running, compensating"),
        "{err}"
    );
}

#[tokio::test]
async fn show_prints_steps_attempts_durations_errors_and_the_timeline() {
    let dir = dir("show");
    let db = populated(&dir).await;
    let text = ok(&db, &["show", "stuck-1"]);
    assert!(text.contains("execution  stuck-1\n"), "{text}");
    assert!(text.contains("saga       order\ndefinition "), "{text}");
    assert!(text.contains("status     stuck\n"), "{text}");
    assert!(text.contains("lease      free\n"), "{text}");
    let step = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no step {name}: {text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    // name, kind, status, tries, undos, time.
    let ship = step("ship ");
    assert_eq!(ship[..5], ["ship", "retriable", "failed", "1", "0"]);
    assert!(ship[5].ends_with('s'), "a duration: {ship:?}");
    assert_eq!(
        step("reserve")[..5],
        ["reserve", "compensable", "succeeded", "1", "0"]
    );
    assert_eq!(step("charge")[..3], ["charge", "pivot", "succeeded"]);
    assert!(
        text.contains("error of `ship`: no courier today\n"),
        "{text}"
    );
    assert!(text.contains("TIMELINE"), "{text}");
    let timeline: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("TIMELINE"))
        .skip(1)
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(
        timeline,
        [
            "step_started",
            "step_succeeded",
            "step_started",
            "step_succeeded",
            "step_started",
            "step_failed",
            "finished"
        ]
    );
    assert!(
        text.contains("step_failed             ship #1: no courier today"),
        "{text}"
    );

    let doc = json(&ok(&db, &["show", "refund-1", "--json"]));
    assert_eq!(doc["execution"]["status"], "compensated");
    assert_eq!(doc["steps"][0]["name"], "lock");
    assert_eq!(doc["steps"][0]["status"], "compensated");
    assert_eq!(doc["steps"][0]["compensation_attempts"], 1);
    assert!(
        doc["steps"][0]["compensation_duration_ms"]
            .as_i64()
            .is_some()
    );
    assert_eq!(doc["steps"][1]["status"], "failed");
    assert_eq!(doc["steps"][1]["last_error"], "bank closed");
    assert_eq!(doc["events"][0]["kind"], "step_started");
    assert_eq!(doc["events"][0]["step"], "lock");

    let err = fails(&db, &["show", "nope"], 1);
    assert_eq!(
        err,
        format!(
            "error: no execution `nope` in the SQLite store `{}`; `saga list` shows them\n",
            db.display()
        )
    );
}

#[tokio::test]
async fn diagram_prints_the_stored_shape_by_name_or_fingerprint() {
    let dir = dir("diagram");
    let db = populated(&dir).await;
    let mermaid = ok(&db, &["diagram", "order"]);
    assert!(mermaid.contains("flowchart TD"), "{mermaid}");
    assert!(mermaid.contains("charge (pivot)"), "{mermaid}");
    assert!(mermaid.contains("undo reserve"), "{mermaid}");
    // The very diagram the definition draws of itself.
    let ready = Arc::new(AtomicBool::new(true));
    assert_eq!(
        mermaid.trim_end(),
        order_saga(&ready).to_mermaid().trim_end()
    );
    let dot = ok(&db, &["diagram", "order", "--dot"]);
    assert_eq!(dot.trim_end(), order_saga(&ready).to_dot().trim_end());
    assert!(mermaid.ends_with('\n') && dot.ends_with('\n'));

    let fingerprint = order_saga(&ready).fingerprint();
    let doc = json(&ok(&db, &["diagram", &fingerprint, "--json"]));
    assert_eq!(doc["saga"], "order");
    assert_eq!(doc["format"], "mermaid");
    assert_eq!(
        doc["diagram"].as_str().unwrap(),
        order_saga(&ready).to_mermaid()
    );

    let err = fails(&db, &["diagram", "shipping"], 1);
    assert!(
        err.contains(&format!(
            "no definition `shipping` in the SQLite store `{}`",
            db.display()
        )),
        "{err}"
    );
}

#[tokio::test]
async fn resume_writes_a_request_that_a_worker_carries_out() {
    let dir = dir("resume");
    let db = populated(&dir).await;
    // Without `--yes`: says what it would do, does nothing.
    let err = fails(&db, &["resume", "stuck-1"], 1);
    assert!(
        err.contains("this would resume stuck execution `stuck-1`"),
        "{err}"
    );
    assert!(err.contains("run it again with `--yes`"), "{err}");
    let doc = json(&ok(&db, &["show", "stuck-1", "--json"]));
    assert_eq!(doc["execution"]["resume_requested"], false);

    let err = fails(&db, &["resume", "ok-1", "--yes"], 1);
    assert!(
        err.contains("execution `ok-1` is completed; `resume` applies to stuck executions"),
        "{err}"
    );

    let doc = json(&ok(&db, &["resume", "stuck-1", "--yes", "--json"]));
    assert_eq!(doc["result"], "requested");
    let text = ok(&db, &["show", "stuck-1"]);
    assert!(text.contains("requested  resume"), "{text}");
    assert!(text.contains("status     stuck"), "{text}");

    // A worker (the user's process, with the saga's code) picks it up.
    let ready = Arc::new(AtomicBool::new(true));
    let worker = SagaEngine::new(SqliteStore::open(&db).unwrap());
    worker.register(order_saga(&ready)).await.unwrap();
    worker.register(refund_saga()).await.unwrap();
    let recovery = worker.recover().await.unwrap();
    assert_eq!(recovery.resumed, ["stuck-1".into()]);
    let report = worker.wait(&"stuck-1".into()).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
    assert_eq!(report.step("ship").unwrap().attempts, 1);
    // Carried out once: a second recover finds nothing to do.
    assert!(worker.recover().await.unwrap().resumed.is_empty());
    let doc = json(&ok(&db, &["show", "stuck-1", "--json"]));
    assert_eq!(doc["execution"]["status"], "completed");
    let kinds: Vec<&str> = doc["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds[6..],
        [
            "finished",
            "resume_requested",
            "resumed",
            "step_started",
            "step_succeeded",
            "finished"
        ]
    );
}

#[tokio::test]
async fn a_worker_without_the_definition_leaves_a_resume_request_pending() {
    let dir = dir("resume-elsewhere");
    let db = populated(&dir).await;
    ok(&db, &["resume", "stuck-1", "--yes"]);
    let worker = SagaEngine::new(SqliteStore::open(&db).unwrap());
    worker.register(refund_saga()).await.unwrap();
    let recovery = worker.recover().await.unwrap();
    assert!(recovery.resumed.is_empty());
    assert_eq!(recovery.refused.len(), 1);
    let error = recovery.refused[0].1.to_string();
    assert!(
        error.contains("no saga named `order` is registered"),
        "{error}"
    );
    let doc = json(&ok(&db, &["show", "stuck-1", "--json"]));
    assert_eq!(doc["execution"]["resume_requested"], true);
    assert_eq!(doc["execution"]["status"], "stuck");
}

#[tokio::test]
async fn abandon_is_done_at_once_and_only_with_yes() {
    let dir = dir("abandon");
    let db = populated(&dir).await;
    let err = fails(&db, &["abandon", "stuck-1"], 1);
    assert!(err.contains("nothing is compensated"), "{err}");
    assert!(ok(&db, &["show", "stuck-1"]).contains("status     stuck"));
    let text = ok(&db, &["abandon", "stuck-1", "--yes"]);
    assert_eq!(text, "abandoned `stuck-1`; nothing was compensated\n");
    assert!(ok(&db, &["show", "stuck-1"]).contains("status     abandoned"));
    let err = fails(&db, &["abandon", "refund-1", "--yes"], 1);
    assert!(
        err.contains("is compensated; `abandon` applies to"),
        "{err}"
    );
}

#[tokio::test]
async fn cancel_writes_a_request_that_recovery_carries_out() {
    let dir = dir("cancel");
    let db = populated(&dir).await;
    let err = fails(&db, &["cancel", "ok-1", "--yes"], 1);
    assert!(
        err.contains("`cancel` applies to running or compensating"),
        "{err}"
    );

    // An execution whose owner died before it ran a step: running, its
    // lease expiring at once.
    let ready = Arc::new(AtomicBool::new(true));
    let store = SqliteStore::open(&db).unwrap();
    store
        .create(
            NewExecution {
                id: "orphan-1".into(),
                saga: "order".to_owned(),
                fingerprint: order_saga(&ready).fingerprint(),
                context: "0".to_owned(),
                events: Vec::new(),
            },
            "dead-owner",
            Duration::from_millis(1),
        )
        .await
        .unwrap();
    drop(store);
    let text = ok(&db, &["cancel", "orphan-1", "--yes"]);
    assert!(text.starts_with("cancel of `orphan-1` requested"), "{text}");
    assert!(ok(&db, &["show", "orphan-1"]).contains("requested  cancel"));

    let worker = SagaEngine::new(SqliteStore::open(&db).unwrap());
    worker.register(order_saga(&ready)).await.unwrap();
    let recovery = worker.recover().await.unwrap();
    assert_eq!(recovery.resumed, ["orphan-1".into()]);
    let report = worker.wait(&"orphan-1".into()).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Cancelled);
    assert_eq!(
        report.step("reserve").unwrap().status,
        saga_core::StepStatus::Pending
    );
}

#[test]
fn a_missing_store_is_an_error_and_is_not_created() {
    let dir = dir("missing");
    let db = dir.join("typo.db");
    let err = fails(&db, &["list"], 1);
    assert_eq!(
        err,
        format!(
            "error: `{}` does not exist; the saga CLI never creates a store: give the path of the database your service writes\n",
            db.display()
        )
    );
    assert!(!db.exists());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);

    let err = fails(&dir, &["list"], 1);
    assert!(err.contains("is a directory"), "{err}");
}

#[test]
fn a_file_that_is_not_a_store_is_left_untouched() {
    let dir = dir("garbage");
    let db = dir.join("notes.txt");
    std::fs::write(
        &db,
        "shopping list: eggs, flour, a saga store\n".repeat(200),
    )
    .unwrap();
    let before = std::fs::read(&db).unwrap();
    let err = fails(&db, &["list"], 1);
    assert!(err.contains("is not an SQLite database"), "{err}");
    assert!(err.contains("left untouched"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), before);
}

#[cfg(not(feature = "postgres"))]
#[test]
fn a_postgres_url_without_the_feature_says_how_to_get_it() {
    let out = saga(&["--store", "postgres://saga:pw@localhost/sagas", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .starts_with("error: `postgres://saga:***@localhost/sagas` is a PostgreSQL store"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("no PostgreSQL support; rebuild it with `--features postgres`"),
        "{}",
        stderr(&out)
    );
}

/// The server of the PostgreSQL tests: `SAGA_PG_URL`, else the cluster of
/// `scripts/pg.sh start`, the project's one start-the-server helper (it
/// starts the cluster if none runs and prints its URL last), so the test
/// never skips.
#[cfg(feature = "postgres")]
fn pg_url() -> String {
    if let Some(url) = std::env::var("SAGA_PG_URL").ok().filter(|u| !u.is_empty()) {
        return url;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg.sh");
    let out = Command::new(&script)
        .arg("start")
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

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_store_is_listed_and_shown() {
    use saga_core::store::{PostgresOptions, PostgresStore};
    let url = pg_url();
    let schema = format!("cli_{}", std::process::id());
    let store = PostgresStore::connect_with(&url, PostgresOptions::new().with_schema(&schema))
        .await
        .unwrap();
    let engine = SagaEngine::new(store);
    engine.register(refund_saga()).await.unwrap();
    let id = engine
        .start_with_id("refund", "pg-refund-1", 0_u32)
        .await
        .unwrap();
    assert_eq!(
        engine.wait(&id).await.unwrap().status,
        ExecutionStatus::Compensated
    );
    let cli = |args: &[&str]| {
        let mut all = vec!["--store", url.as_str(), "--pg-schema", schema.as_str()];
        all.extend_from_slice(args);
        saga(&all)
    };
    let out = cli(&["list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = stdout(&out);
    assert!(listed.contains("pg-refund-1"), "{listed}");
    assert!(listed.contains("compensated"), "{listed}");
    let out = cli(&["show", "pg-refund-1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("pay_back"), "{}", stdout(&out));

    // A server that is not there: a clear error naming it, no password.
    let out = saga(&[
        "--store",
        "postgres://saga:secret@127.0.0.1:1/sagas",
        "list",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains("secret"), "{err}");
}

#[test]
fn urls_and_missing_arguments_get_clear_errors() {
    let out = saga(&["--store", "mysql://localhost/sagas", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is not a store this build supports"),
        "{}",
        stderr(&out)
    );
    let out = saga(&["list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no store given; pass `--store <path>`"));
    let out = saga(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("Usage: saga"), "{}", stdout(&out));
    let out = saga(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unrecognized subcommand"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn embedded_resume_runs_the_execution_in_the_users_process() {
    let dir = dir("embedded");
    let db = populated(&dir).await;
    let ready = Arc::new(AtomicBool::new(true));
    let engine = SagaEngine::new(SqliteStore::open(&db).unwrap());
    engine.register(order_saga(&ready)).await.unwrap();

    let err = saga_cli::run(&engine, ["app", "resume", "stuck-1"])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("run it again with `--yes`"),
        "{err}"
    );
    let out = saga_cli::run(&engine, ["app", "resume", "stuck-1", "--yes"])
        .await
        .unwrap();
    assert_eq!(out, "resumed `stuck-1`: it ended completed\n");
    let out = saga_cli::run(&engine, ["app", "list", "--status", "stuck"])
        .await
        .unwrap();
    assert!(out.ends_with("0 executions\n"), "{out}");
    let err = saga_cli::run(&engine, ["app", "--store", "x.db", "list"])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "this binary works on its own store; drop `--store`"
    );
}

#[test]
fn a_password_in_a_store_argument_is_never_echoed() {
    // An unsupported scheme: named, with the password masked.
    let out = saga(&["--store", "mysql://root:hunter2@db.internal/sagas", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(!err.contains("hunter2"), "{err}");
    assert!(
        err.contains("`mysql://root:***@db.internal/sagas`"),
        "{err}"
    );
    // A password in the query string.
    let out = saga(&[
        "--store",
        "mysql://db.internal/sagas?password=hunter2",
        "list",
    ]);
    let err = stderr(&out);
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains("password=***"), "{err}");
    // A PostgreSQL key/value connection string is not a file path.
    let out = saga(&[
        "--store",
        "host=127.0.0.1 port=1 user=saga password='hunter 2' dbname=sagas",
        "list",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(!err.contains("hunter"), "{err}");
    assert!(!err.contains("does not exist"), "{err}");
}

#[tokio::test]
async fn a_store_error_is_printed_with_its_causes() {
    let dir = dir("cause");
    let db = populated(&dir).await;
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE executions SET created_at = 'yesterday' WHERE id = 'ok-1'",
        [],
    )
    .unwrap();
    drop(conn);
    let err = fails(&db, &["list"], 1);
    let line = err.lines().next().unwrap_or_default();
    // The operation, then why: the database's own words, naming the column.
    let (head, why) = line
        .split_once("listing executions failed: ")
        .unwrap_or_else(|| panic!("no cause after the operation: {err}"));
    assert!(head.contains(&db.display().to_string()), "{err}");
    assert!(why.contains("Text"), "{err}");
}

#[tokio::test]
async fn escapes_and_newlines_in_ids_and_errors_are_printed_escaped() {
    let dir = dir("escape");
    let db = dir.join("sagas.db");
    let engine = SagaEngine::new(SqliteStore::open(&db).unwrap());
    let saga = Saga::builder("hostile")
        .step(Step::new("pay", |_: &mut u32, _: &StepInfo<'_>| {
            Err::<(), _>(StepError::new("declined\u{1b}[2J\nerror of `pay`: forged"))
        }))
        .build()
        .unwrap();
    engine.register(saga).await.unwrap();
    let raw_id = "evil\u{1b}[31m\nid";
    let id = engine
        .start_with_id("hostile", raw_id, 0_u32)
        .await
        .unwrap();
    engine.wait(&id).await.unwrap();
    drop(engine);

    let listed = ok(&db, &["list"]);
    assert!(!listed.contains('\u{1b}'), "{listed:?}");
    assert!(listed.contains("evil\\u{1b}[31m\\u{a}id"), "{listed}");
    assert_eq!(listed.lines().count(), 3, "{listed}");

    let shown = ok(&db, &["show", raw_id]);
    assert!(!shown.contains('\u{1b}'), "{shown:?}");
    assert!(
        shown.contains("execution  evil\\u{1b}[31m\\u{a}id\n"),
        "{shown}"
    );
    assert!(
        shown.contains("error of `pay`: declined\\u{1b}[2J\\u{a}error of `pay`: forged\n"),
        "{shown}"
    );
    assert_eq!(
        shown.lines().filter(|l| l.starts_with("error of")).count(),
        1,
        "{shown}"
    );
    // JSON keeps the text as it is: JSON escapes it itself.
    let doc = json(&ok(&db, &["show", raw_id, "--json"]));
    assert_eq!(doc["execution"]["id"], raw_id);

    let err = fails(&db, &["show", "nope\u{1b}[2J"], 1);
    assert!(err.contains("`nope\\u{1b}[2J`"), "{err}");
}

#[tokio::test]
async fn list_prints_full_ids_and_filters_by_status_time_and_count() {
    let dir = dir("list-full");
    let db = populated(&dir).await;
    let long_id = "0193a5f2-7c1e-7d40-9a6b-3f2e1d0c9b8a/retry-of-order-42";
    let ready = Arc::new(AtomicBool::new(true));
    let engine = SagaEngine::new(SqliteStore::open(&db).unwrap());
    engine.register(order_saga(&ready)).await.unwrap();
    let id = engine.start_with_id("order", long_id, 0_u32).await.unwrap();
    engine.wait(&id).await.unwrap();
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
        text.ends_with("2 of 4 executions shown (1 stuck: `saga show <id>`)\n"),
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
    // Neither: the error names both ways.
    let out = Command::new(env!("CARGO_BIN_EXE_saga"))
        .args(["list"])
        .env_remove("SAGA_STORE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("pass `--store <path>` or set `SAGA_STORE`"),
        "{}",
        stderr(&out)
    );
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
    engine.wait(&id).await.unwrap();
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

/// A child's stdout, line by line, read on a thread.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
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
fn until(lines: &std::sync::mpsc::Receiver<String>, wanted: &str) -> Vec<String> {
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
fn gated_saga(gate: &Arc<tokio::sync::Semaphore>) -> Saga<u32> {
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
    engine.wait(&id).await.unwrap();
    let rest = until(&lines, "ended");
    assert_eq!(rest.last().unwrap(), "ended completed", "{rest:#?}");
    assert!(
        rest.iter()
            .any(|l| l.contains("step_succeeded          ship #1"))
    );
    assert!(child.wait().unwrap().success());

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
    engine.wait(&id).await.unwrap();
    until(&lines, "  w-2  gated  completed");
    child.kill().unwrap();
    let _ = child.wait();

    let err = fails(&db, &["watch", "nope"], 1);
    assert!(err.contains("no execution `nope`"), "{err}");
}
