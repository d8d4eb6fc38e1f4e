//! Hostile and broken input, from outside: passwords in `--store` never
//! echoed, store errors with their causes, and control characters in
//! ids and step errors escaped before they reach a terminal.

mod support;

use saga_core::store::{Created, NewExecution, SqliteStore};
use saga_core::{ExecutionId, Saga, SagaEngine, Step, StepError, StepInfo};
use support::*;

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

/// What only looks like a connection string is still never echoed with
/// its password: a key/value string whose first key is misspelt (taken
/// for a file name), and a URL of another scheme with an unencoded `/`
/// in its password.
#[test]
fn a_password_in_a_store_argument_that_is_not_a_connection_string_is_masked() {
    let out = saga(&[
        "--store",
        "hots=127.0.0.1 password=Hunter2SuperSecretPW user=x",
        "list",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(!err.contains("Hunter2"), "{err}");
    assert!(
        err.contains("`hots=127.0.0.1 password=*** user=x` does not exist"),
        "{err}"
    );
    let out = saga(&[
        "--store",
        "hots=127.0.0.1 PASSWORD = 'Hunter2 Super' user=x",
        "list",
    ]);
    let err = stderr(&out);
    assert!(!err.contains("Hunter2"), "{err}");
    assert!(!err.contains("Super"), "{err}");

    let out = saga(&["--store", "postgress://u:Hunter2/Secret@host/db", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(!err.contains("Hunter2"), "{err}");
    assert!(!err.contains("Secret"), "{err}");
    assert!(err.contains("`postgress://u:***@host/db`"), "{err}");
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
    let fingerprint = engine.register(saga).await.unwrap();
    // `start_with_id` refuses such an id (0.2); 0.1 recorded it, and the
    // store still holds what was recorded. Written as 0.1 did, then run.
    let raw_id = "evil\u{1b}[31m\nid";
    let id = ExecutionId::new(raw_id);
    let created = engine
        .store()
        .create(
            NewExecution {
                id: id.clone(),
                saga: "hostile".into(),
                fingerprint,
                context: "0".into(),
                events: Vec::new(),
            },
            "a 0.1 process",
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap();
    let Created::New(lease) = created else {
        panic!("{created:?}")
    };
    engine.store().release(&id, &lease).await.unwrap();
    assert_eq!(engine.recover().await.unwrap().resumed, vec![id.clone()]);
    engine.wait(&id).await.or_else(support::ended).unwrap();
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
