//! A worker whose PostgreSQL role lacks a privilege the store needs: its
//! claims are refused with `StoreError::Misconfigured`, each attempt is an
//! error record naming what is missing (not a warning, as an outage is),
//! and once an operator grants the privilege the worker carries on by
//! itself, with no restart. Real server, real role.
#![cfg(feature = "postgres")]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{Level, LevelFilter};
use saga_core::store::{PostgresOptions, PostgresStore};
use saga_core::{ExecutionStatus, SagaEngine, Worker};
use support::durable::{Order, Script, saga};
use support::logs::{entries_where, install_logger};
use support::pg::{client, fresh_schema, pg_url};

fn options(schema: &str) -> PostgresOptions {
    PostgresOptions::new().with_schema(schema)
}

/// `pg_url()` as `user` (trusted by `scripts/pg.sh`, no password).
fn url_as(user: &str) -> String {
    let url = pg_url();
    let rest = url.split_once('@').unwrap().1;
    format!("postgres://{user}@{rest}")
}

/// Before: every refused claim was a warning, `worker cannot claim work,
/// retrying`, as for a database restarting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_lacking_a_privilege_logs_errors_and_carries_on_once_granted() {
    install_logger(LevelFilter::Info);
    let admin = client(&pg_url()).await;
    let schema = fresh_schema("priv_worker");
    // The store, made by the superuser, with one execution submitted.
    let submitter = SagaEngine::new(
        PostgresStore::connect_with(&pg_url(), options(&schema))
            .await
            .unwrap(),
    );
    let script = Arc::new(Script::default());
    submitter.register(saga(&script)).await.unwrap();
    let id = submitter.submit("order", Order::default()).await.unwrap();
    // The worker's role may read the store and record definitions, but
    // not take a lease (UPDATE).
    let user = format!("priv_worker_{}", std::process::id());
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN
                IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{user}') THEN
                    EXECUTE 'DROP OWNED BY {user}';
                    DROP ROLE {user};
                END IF;
             END $$;
             CREATE ROLE {user} LOGIN;
             GRANT USAGE ON SCHEMA {schema} TO {user};
             GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {user};
             GRANT INSERT ON {schema}.definitions TO {user};"
        ))
        .await
        .unwrap();
    let engine = SagaEngine::new(
        PostgresStore::connect_with(&url_as(&user), options(&schema))
            .await
            .unwrap(),
    );
    engine.register(saga(&script)).await.unwrap();
    let owner = engine.owner().to_owned();
    let worker = Worker::new(engine)
        .with_poll_interval(Duration::from_millis(20))
        .with_max_backoff(Duration::from_millis(100))
        .spawn()
        .unwrap();
    let refusals = || {
        entries_where("owner", &owner)
            .into_iter()
            .filter(|e| e.message.starts_with("worker cannot claim work"))
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while refusals().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            entries_where("owner", &owner)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for refusal in refusals() {
        assert_eq!(refusal.level, Level::Error, "{refusal:?}");
        assert_eq!(
            refusal.message,
            "worker cannot claim work: the store is misconfigured; retrying"
        );
        let error = refusal.field("error").unwrap_or_default();
        assert!(
            error.contains("lacks a privilege the store needs"),
            "{refusal:?}"
        );
    }
    assert!(script.calls().is_empty(), "{:?}", script.calls());
    // The operator grants what is missing; nothing is restarted.
    admin
        .batch_execute(&format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {user}"
        ))
        .await
        .unwrap();
    let report = tokio::time::timeout(Duration::from_secs(30), submitter.wait(&id))
        .await
        .expect("the worker did not carry on once granted")
        .unwrap();
    assert_eq!(report.status, ExecutionStatus::Completed);
    let stats = worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(stats.finished, 1, "{stats:?}");
    assert!(
        entries_where("owner", &owner)
            .iter()
            .any(|e| e.message == "store configuration fixed; worker claims work again"),
        "{:?}",
        entries_where("owner", &owner)
    );
    drop(submitter);
    let _ = admin
        .batch_execute(&format!(
            "DROP SCHEMA {schema} CASCADE; DROP OWNED BY {user}; DROP ROLE {user}"
        ))
        .await;
}
