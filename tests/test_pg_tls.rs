//! The PostgreSQL store over TLS, against the throwaway cluster of
//! `scripts/pg.sh` (TLS on, its server certificate signed by a CA of its
//! own, for `localhost` and 127.0.0.1; `scripts/pg.sh ca` names the CA's
//! file): `sslmode` with libpq's meanings, `sslrootcert`, and the
//! refusals: a CA the client does not trust, a host name the certificate
//! does not have. Each test logs in as a role of its own, so that what the
//! server says of that role's connections (`pg_stat_ssl`) is the test's
//! store's.
#![cfg(feature = "postgres")]

mod support;

use std::sync::Arc;

use saga_core::SagaEngine;
use saga_core::store::{PostgresOptions, PostgresStore, StoreError};
use support::durable::{Script, saga};
use support::pg::{client, fresh_schema, pg_url, script};

/// A password the URLs carry (the roles are trusted, so the server never
/// asks for it): no error may show it.
const PASSWORD: &str = "hunter2-never-shown";

const ROLES: [&str; 6] = [
    "tls_full",
    "tls_kv",
    "tls_untrusted",
    "tls_wrong_host",
    "tls_require",
    "tls_disable",
];

/// Creates the tests' roles, once per test process (two concurrent
/// `CREATE ROLE`s collide).
async fn roles() {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let admin = client(&pg_url()).await;
        for role in ROLES {
            admin
                .batch_execute(&format!(
                    "DO $$ BEGIN
                        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                            CREATE ROLE {role} LOGIN;
                        END IF;
                     END $$;
                     GRANT CREATE ON DATABASE postgres TO {role};"
                ))
                .await
                .unwrap();
        }
    })
    .await;
}

/// The cluster's port.
fn port() -> String {
    let url = pg_url();
    let after = url.rsplit_once(':').unwrap().1;
    after.split('/').next().unwrap().to_owned()
}

/// The CA that signed the cluster's certificate.
fn ca() -> String {
    pg_url();
    script("ca")
}

/// A URL as `role` at `host` with `params`.
fn url(role: &str, host: &str, params: &str) -> String {
    format!(
        "postgres://{role}:{PASSWORD}@{host}:{}/postgres?{params}",
        port()
    )
}

/// Connects a store as `role` on `url`.
async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
    PostgresStore::connect_with(url, PostgresOptions::new().with_schema(fresh_schema("tls"))).await
}

/// Runs a saga to its end on `store`: writes and reads over its
/// connections.
async fn run_a_saga(store: PostgresStore) {
    let engine = SagaEngine::new(store);
    let script = Arc::new(Script::default());
    engine.register(saga(&script)).await.unwrap();
    let id = engine
        .start("order", support::durable::Order::default())
        .await
        .unwrap();
    let report = engine.wait(&id).await.unwrap();
    assert_eq!(report.status, saga_core::ExecutionStatus::Completed);
}

/// Whether `role`'s open connections are encrypted (each one's `ssl`, as
/// the server says).
async fn encrypted(role: &str) -> Vec<bool> {
    let admin = client(&pg_url()).await;
    admin
        .query(
            "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = $1",
            &[&role],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// The error's message and its causes', one a line.
fn chain(error: &StoreError) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        text.push('\n');
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Checks a refusal: a `Backend` error saying the certificate was refused,
/// naming `host`, and never the password (nor in its `Debug`).
fn assert_refused(error: &StoreError, host: &str, mode: &str) {
    let text = chain(error);
    assert!(
        matches!(error, StoreError::Backend { what, .. }
            if what.starts_with(&format!("connecting with sslmode={mode} (the server's certificate was refused"))),
        "{error:?}"
    );
    assert!(text.contains(host), "no host `{host}` in {text}");
    assert!(!text.contains(PASSWORD), "the password in {text}");
    assert!(
        !format!("{error:?}").contains(PASSWORD),
        "the password in {error:?}"
    );
}

#[tokio::test]
async fn verify_full_with_the_clusters_ca_connects_and_runs_a_saga() {
    roles().await;
    let url = url(
        "tls_full",
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={}", ca()),
    );
    let store = connect(&url).await.unwrap();
    let kept = store.clone();
    run_a_saga(store).await;
    let connections = encrypted("tls_full").await;
    assert!(!connections.is_empty());
    assert!(connections.iter().all(|ssl| *ssl), "{connections:?}");
    drop(kept);
}

/// A `key=value` string, by host name (`localhost`, which the certificate
/// names) with the CA's path quoted.
#[tokio::test]
async fn verify_full_in_a_key_value_string_connects_by_host_name() {
    roles().await;
    let url = format!(
        "host=localhost port={} user=tls_kv password={PASSWORD} dbname=postgres sslmode=verify-full sslrootcert='{}'",
        port(),
        ca()
    );
    let store = connect(&url).await.unwrap();
    run_a_saga(store.clone()).await;
    let connections = encrypted("tls_kv").await;
    assert!(!connections.is_empty());
    assert!(connections.iter().all(|ssl| *ssl), "{connections:?}");
}

/// Without `sslrootcert` the CAs are the system's, which do not know the
/// cluster's: refused, under both `verify-*` modes.
#[tokio::test]
async fn a_ca_the_system_does_not_trust_is_refused() {
    roles().await;
    for mode in ["verify-full", "verify-ca"] {
        let error = connect(&url(
            "tls_untrusted",
            "127.0.0.1",
            &format!("sslmode={mode}"),
        ))
        .await
        .unwrap_err();
        assert_refused(&error, "127.0.0.1", mode);
        assert!(chain(&error).contains("UnknownIssuer"), "{}", chain(&error));
    }
    assert_eq!(encrypted("tls_untrusted").await, Vec::<bool>::new());
}

/// Reaching the server at 127.0.0.1 (`hostaddr`) under a host name its
/// certificate does not have: `verify-full` refuses, naming the host;
/// `verify-ca`, which checks the CA only, connects.
#[tokio::test]
async fn a_host_name_the_certificate_lacks_is_refused_under_verify_full() {
    roles().await;
    let host = "saga-wrong-host.invalid";
    let params = |mode: &str| format!("hostaddr=127.0.0.1&sslmode={mode}&sslrootcert={}", ca());
    let error = connect(&url("tls_wrong_host", host, &params("verify-full")))
        .await
        .unwrap_err();
    assert_refused(&error, host, "verify-full");
    assert!(
        chain(&error).contains(&format!("certificate not valid for name \"{host}\"")),
        "{}",
        chain(&error)
    );
    assert_eq!(encrypted("tls_wrong_host").await, Vec::<bool>::new());

    let store = connect(&url("tls_wrong_host", host, &params("verify-ca")))
        .await
        .unwrap();
    run_a_saga(store).await;
}

/// `require` encrypts without checking the certificate: no CA needed.
#[tokio::test]
async fn require_encrypts_without_a_ca() {
    roles().await;
    let store = connect(&url("tls_require", "127.0.0.1", "sslmode=require"))
        .await
        .unwrap();
    run_a_saga(store.clone()).await;
    let connections = encrypted("tls_require").await;
    assert!(!connections.is_empty());
    assert!(connections.iter().all(|ssl| *ssl), "{connections:?}");
}

/// `disable` connects in the clear, though the server offers TLS.
#[tokio::test]
async fn disable_connects_without_tls() {
    roles().await;
    let store = connect(&url("tls_disable", "127.0.0.1", "sslmode=disable"))
        .await
        .unwrap();
    run_a_saga(store.clone()).await;
    let connections = encrypted("tls_disable").await;
    assert!(!connections.is_empty());
    assert!(connections.iter().all(|ssl| !*ssl), "{connections:?}");
}

/// An `sslmode` libpq has but the store does not support is refused by
/// name, before any connection.
#[tokio::test]
async fn an_unknown_sslmode_is_refused_by_name() {
    let error = connect("postgres://u@127.0.0.1:1/postgres?sslmode=allow")
        .await
        .unwrap_err();
    assert!(
        chain(&error).contains(
            "sslmode `allow` is not one of `disable`, `prefer`, `require`, `verify-ca`, `verify-full`"
        ),
        "{}",
        chain(&error)
    );
}
