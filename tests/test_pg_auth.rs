//! Refused credentials are not an outage: a wrong PostgreSQL password is
//! `StoreError::Unauthorized` naming the user, and a worker whose
//! credentials stop working stops instead of retrying forever.
//!
//! `scripts/pg.sh` makes the role `saga_password` log in with a password
//! (every other role is trusted).
#![cfg(feature = "postgres")]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{Level, LevelFilter};
use saga_core::store::{PostgresOptions, PostgresStore, StoreError};
use saga_core::{SagaEngine, Worker};
use support::durable::{Script, saga};
use support::logs::{entries_where, install_logger};
use support::pg::{client, fresh_schema, pg_url};

const ROLE: &str = "saga_password";

/// The URL of the server as `ROLE` with `password`.
fn url_as(password: &str) -> String {
    let url = pg_url();
    let rest = url.split_once('@').unwrap().1;
    format!("postgres://{ROLE}:{password}@{rest}")
}

/// Creates `ROLE` if the server has none (once per test process: two
/// concurrent `CREATE ROLE`s collide).
async fn role() {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let admin = client(&pg_url()).await;
        admin
            .batch_execute(&format!(
                "DO $$ BEGIN
                    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
                        CREATE ROLE {ROLE} LOGIN;
                    END IF;
                 END $$;
                 GRANT CREATE ON DATABASE postgres TO {ROLE};"
            ))
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_wrong_password_is_unauthorized_not_unreachable() {
    // Whatever its password is now (the other test sets its own), it is
    // not `wrong`.
    role().await;
    let err = PostgresStore::connect_with(
        &url_as("wrong"),
        PostgresOptions::new().with_schema(fresh_schema("auth")),
    )
    .await
    .unwrap_err();
    let StoreError::Unauthorized { user, what, .. } = &err else {
        panic!("expected Unauthorized, got {err:?}");
    };
    assert_eq!((user.as_str(), what.as_str()), (ROLE, "connecting"));
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("authentication failed for user `{ROLE}` at ")),
        "{message}"
    );
    assert!(!message.contains("wrong"), "no password in {message}");
    // The server's reason is in the cause chain (as the CLI prints it).
    let mut chain = Vec::new();
    let mut cause = std::error::Error::source(&err);
    while let Some(c) = cause {
        chain.push(c.to_string());
        cause = c.source();
    }
    assert!(
        chain.iter().any(|c| c.contains(&format!(
            "password authentication failed for user \"{ROLE}\""
        ))),
        "{chain:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_password_stops_working_stops_instead_of_retrying() {
    install_logger(LevelFilter::Info);
    role().await;
    // Another password than the other test's, so the two can run together.
    let admin = client(&pg_url()).await;
    admin
        .batch_execute(&format!("ALTER ROLE {ROLE} PASSWORD 'worker'"))
        .await
        .unwrap();
    let store = PostgresStore::connect_with(
        &url_as("worker"),
        PostgresOptions::new().with_schema(fresh_schema("auth_worker")),
    )
    .await
    .unwrap();
    let engine = SagaEngine::new(store);
    // A registered saga, so the worker has something to claim.
    engine
        .register(saga(&Arc::new(Script::default())))
        .await
        .unwrap();
    let owner = engine.owner().to_owned();
    let worker = Worker::new(engine)
        .with_poll_interval(Duration::from_millis(20))
        .with_max_backoff(Duration::from_millis(100))
        .spawn()
        .unwrap();
    assert!(!worker.has_stopped());
    // The password changes and the worker's connections are cut: its next
    // claim must connect again, and is refused.
    admin
        .batch_execute(&format!(
            "ALTER ROLE {ROLE} PASSWORD 'rotated';
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{ROLE}';"
        ))
        .await
        .unwrap();
    let ours = || entries_where("owner", &owner);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ours().iter().any(|e| e.message == "worker stopped") {
        if Instant::now() >= deadline {
            let records = ours();
            let last = &records[records.len().saturating_sub(2)..];
            panic!(
                "the worker kept retrying ({} records): {last:?}",
                records.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let records = ours();
    let refusal = records
        .iter()
        .find(|e| e.message == "worker stops: the store refused its credentials")
        .unwrap_or_else(|| panic!("{records:?}"));
    assert_eq!(refusal.level, Level::Error);
    let error = refusal.field("error").unwrap_or_default();
    assert!(
        error.contains(&format!("authentication failed for user `{ROLE}`")),
        "{refusal:?}"
    );
    // The refusal was not retried as an outage (the lost connection
    // before it may have been, once).
    assert!(
        !records
            .iter()
            .any(|e| e.message.starts_with("worker cannot claim work")
                && e.field("error")
                    .unwrap_or_default()
                    .contains("authentication failed")),
        "{records:?}"
    );
    // A health check sees it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !worker.has_stopped() {
        assert!(Instant::now() < deadline, "the handle says it still runs");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.shutdown(Duration::ZERO).await;
}
