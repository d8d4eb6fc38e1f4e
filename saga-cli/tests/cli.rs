//! The real `saga` binary against real SQLite files written by a real
//! engine; and the same commands embedded (`saga_cli::run`).

mod support;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use saga_core::store::{NewExecution, SagaStore, SqliteStore};
use saga_core::{ExecutionStatus, SagaEngine};
use support::*;

/// A rolling deploy leaves executions of two versions of one saga: the
/// table then shows which version each is (a fingerprint's first eight
/// characters); with one version per saga it has no such column.
#[tokio::test]
async fn list_shows_versions_when_a_saga_has_two() {
    let dir = dir("list_versions");
    let db = populated(&dir).await;
    let text = ok(&db, &["list"]);
    assert!(!text.contains("VERSION"), "{text}");
    let ready = Arc::new(AtomicBool::new(true));
    let v1 = order_saga(&ready).fingerprint();
    let v2 = "f".repeat(64);
    let store = SqliteStore::open(&db).unwrap();
    let execution = NewExecution {
        id: "v2-1".into(),
        saga: "order".to_owned(),
        fingerprint: v2,
        context: "0".to_owned(),
        events: Vec::new(),
    };
    store
        .create(execution, "dead-owner", Duration::from_secs(60))
        .await
        .unwrap();
    drop(store);
    let text = ok(&db, &["list", "--saga", "order"]);
    let lines: Vec<&str> = text.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "SAGA", "VERSION", "STATUS", "UPDATED", "(UTC)"]
    );
    let version = |id: &str| {
        let row = lines.iter().find(|l| l.starts_with(id)).unwrap();
        row.split_whitespace().nth(2).unwrap().to_owned()
    };
    assert_eq!(version("ok-1"), v1[..8]);
    assert_eq!(version("v2-1"), "ffffffff");
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

/// A `--saga` no execution has gets a hint on stderr naming the sagas
/// that have some (a typo must not look like a quiet store); the answer
/// and the exit code stay those of an empty listing.
#[tokio::test]
async fn list_of_a_saga_no_execution_has_hints_at_the_names() {
    let dir = dir("list-nosuch");
    let db = populated(&dir).await;
    let out = saga(&[
        "--store",
        db.to_str().unwrap(),
        "list",
        "--saga",
        "ordr",
        "--status",
        "stuck",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().last(), Some("0 executions"));
    assert_eq!(
        stderr(&out),
        "hint: no execution in the store has saga `ordr`; sagas with executions: `order`, `refund`\n"
    );
    let out = saga(&[
        "--store",
        db.to_str().unwrap(),
        "list",
        "--saga",
        "ordr",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&stdout(&out)), serde_json::json!([]));
    assert!(stderr(&out).starts_with("hint: no execution in the store has saga `ordr`"));

    // A saga with executions, none of them stuck: an empty answer, no hint.
    let out = saga(&[
        "--store",
        db.to_str().unwrap(),
        "list",
        "--saga",
        "refund",
        "--status",
        "stuck",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().last(), Some("0 executions"));
    assert_eq!(stderr(&out), "");
}

#[tokio::test]
async fn show_prints_steps_attempts_durations_errors_and_the_timeline() {
    let dir = dir("show");
    let db = populated(&dir).await;
    let text = ok(&db, &["show", "stuck-1"]);
    assert!(text.contains("execution  stuck-1\n"), "{text}");
    assert!(text.contains("saga       order\ndefinition "), "{text}");
    assert!(text.contains("status     stuck\n"), "{text}");
    assert!(
        text.contains("context    1 B (`--context` prints it and the outputs)\nlease      free\n"),
        "{text}"
    );
    // The table's header, as docs/OPERATIONS.md shows it.
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["STEP", "KIND", "STATUS", "TRIES", "UNDOS", "TIME", "OUTPUT"]),
        "{text}"
    );
    let step = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no step {name}: {text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    // name, kind, status, tries, undos, time, output size.
    let ship = step("ship ");
    assert_eq!(ship[..5], ["ship", "retriable", "failed", "1", "0"]);
    assert!(ship[5].ends_with('s'), "a duration: {ship:?}");
    assert_eq!(ship[6..], ["-"], "no output: {ship:?}");
    let reserve = step("reserve");
    assert_eq!(
        reserve[..5],
        ["reserve", "compensable", "succeeded", "1", "0"]
    );
    assert_eq!(reserve[6..], ["4", "B"], "its output `null`: {reserve:?}");
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
        text.contains("step_failed             ship #1: no courier today (permanent)\n"),
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

    // The start of a fingerprint, as the logs and `list` shorten it.
    let short = ok(&db, &["diagram", &fingerprint[..8]]);
    assert_eq!(short, mermaid);
    let err = fails(&db, &["diagram", "00000000"], 1);
    assert!(err.contains("no definition `00000000`"), "{err}");

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
    // Without `--yes`: a dry run, not an error: says what it would do,
    // as a notice (exit code 1: nothing was done).
    let err = fails(&db, &["resume", "stuck-1"], 1);
    assert!(
        err.starts_with("this would resume stuck execution `stuck-1`"),
        "{err}"
    );
    assert!(
        err.ends_with("run it again with `--yes` to do it\n"),
        "{err}"
    );
    assert!(!err.contains("error"), "{err}");
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
    // Its attempt before the resume and the one after.
    assert_eq!(report.step("ship").unwrap().attempts, 2);
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
    assert!(
        err.starts_with("this would abandon stuck execution `stuck-1` of saga `order` for good"),
        "{err}"
    );
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
    // A dry run: a notice, not an error; nothing requested.
    let err = fails(&db, &["cancel", "orphan-1", "--json"], 1);
    assert!(
        err.starts_with("this would cancel running execution `orphan-1` of saga `order`"),
        "{err}"
    );
    assert!(!ok(&db, &["show", "orphan-1"]).contains("requested  cancel"));
    let text = ok(&db, &["cancel", "orphan-1", "--yes"]);
    assert!(text.starts_with("cancel of `orphan-1` requested"), "{text}");
    assert!(ok(&db, &["show", "orphan-1"]).contains("requested  cancel"));

    let worker = SagaEngine::new(SqliteStore::open(&db).unwrap());
    worker.register(order_saga(&ready)).await.unwrap();
    let recovery = worker.recover().await.unwrap();
    assert_eq!(recovery.resumed, ["orphan-1".into()]);
    let report = worker
        .wait(&"orphan-1".into())
        .await
        .or_else(support::ended)
        .unwrap();
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

/// `scripts/pg.sh` makes the role `saga_password` give a password; the
/// server refuses a wrong one (whether or not the role exists).
#[cfg(feature = "postgres")]
#[test]
fn a_wrong_postgres_password_says_authentication_failed() {
    let url = pg_url();
    let (_, host) = url.split_once('@').unwrap();
    let wrong = format!("postgres://saga_password:not-the-password@{host}");
    let out = saga(&["--store", &wrong, "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("authentication failed for user `saga_password`"),
        "{err}"
    );
    assert!(!err.contains("unreachable"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");
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
        engine
            .wait(&id)
            .await
            .or_else(support::ended)
            .unwrap()
            .status,
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

/// On PostgreSQL the store watch `LISTEN`s: with a poll interval of ten
/// minutes, a new execution and its end still show within the test's
/// bound (60 s), so they came by notification.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread")]
async fn the_store_watch_on_postgres_shows_changes_as_they_are_notified() {
    use saga_core::store::{PostgresOptions, PostgresStore};
    let url = pg_url();
    let schema = format!("cli_watch_{}", std::process::id());
    let store = PostgresStore::connect_with(&url, PostgresOptions::new().with_schema(&schema))
        .await
        .unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let engine = SagaEngine::new(store);
    engine.register(gated_saga(&gate)).await.unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_saga"))
        .args([
            "--store",
            &url,
            "--pg-schema",
            &schema,
            "watch",
            "--interval",
            "600000",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut child);
    until(&lines, "watching the store: 0 executions");
    let id = engine
        .start_with_id("gated", "pg-w-1", 0_u32)
        .await
        .unwrap();
    until(&lines, "  pg-w-1  gated  running");
    gate.add_permits(1);
    engine.wait(&id).await.unwrap();
    until(&lines, "  pg-w-1  gated  completed");
    child.kill().unwrap();
    let _ = child.wait();
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
    // A missing store is a bad argument, like any other: code 2.
    let out = saga(&["list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("error: no store given; pass `--store <path>`"));
    // An empty one (an unset variable) is one too, named as such; it
    // read "`` does not exist".
    let out = saga(&["--store", "", "list"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: `--store` is empty (an unset shell variable?); give the SQLite file your service writes or its PostgreSQL URL\n"
    );
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

/// A reader that stops early (`saga show ... | head -c 1500`) ends the
/// output quietly, with the command's own exit code. Before: `print!`
/// panicked ("failed printing to stdout: Broken pipe") with a backtrace
/// and exit code 101. The output (a 300 KB context) outgrows the pipe's
/// buffer, so the write meets the closed pipe whatever the timing.
#[tokio::test]
async fn a_reader_that_stops_early_ends_the_output_quietly() {
    let dir = dir("broken-pipe");
    let db = dir.join("sagas.db");
    let engine = SagaEngine::new(SqliteStore::open(&db).unwrap());
    let saga = saga_core::Saga::<Vec<String>>::builder("big")
        .step(saga_core::Step::new(
            "one",
            |_: &mut Vec<String>, _: &saga_core::StepInfo<'_>| Ok::<(), saga_core::StepError>(()),
        ))
        .build()
        .unwrap();
    engine.register(saga).await.unwrap();
    let id = engine
        .start_with_id("big", "big-1", vec!["x".repeat(100); 3_000])
        .await
        .unwrap();
    engine.wait(&id).await.unwrap();
    drop(engine);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_saga"))
        .args([
            "--store",
            db.to_str().unwrap(),
            "show",
            "big-1",
            "--context",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before the output is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

/// Output that cannot be written for another reason than a reader gone
/// (a full disk) is an error, exit code 1: only a closed pipe is quiet.
#[test]
fn output_that_cannot_be_written_is_an_error() {
    let dir = dir("dev-full");
    let db = dir.join("sagas.db");
    drop(SqliteStore::open(&db).unwrap());
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_saga"))
        .args(["--store", db.to_str().unwrap(), "list"])
        .stdout(full)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: cannot write the output: "), "{err}");
}
