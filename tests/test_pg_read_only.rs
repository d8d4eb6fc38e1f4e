//! Connecting to a PostgreSQL store without creating or migrating it
//! (`PostgresStore::connect_read_only`, and `connect_with` told not to
//! create one), the least privileges each needs, and the errors that say
//! what is wrong with a database, a schema or a user instead of calling
//! it an outage. Real server, real roles.
#![cfg(feature = "postgres")]

mod support;

use std::sync::Arc;

use saga_core::store::{DefinitionRecord, PostgresOptions, PostgresStore, SagaStore, StoreError};
use saga_core::{ExecutionStatus, SagaEngine};
use support::durable::{Order, Script, saga};
use support::pg::{client, fresh_schema, pg_url};
use tokio_postgres::Client;

fn options(schema: &str) -> PostgresOptions {
    PostgresOptions::new().with_schema(schema)
}

/// A read-only connection to the store in `schema`, as the superuser.
async fn read_only(schema: &str) -> Result<PostgresStore, StoreError> {
    PostgresStore::connect_read_only(&pg_url(), options(schema)).await
}

/// `pg_url()` as `user` (trusted by `scripts/pg.sh`, no password).
fn url_as(user: &str) -> String {
    let url = pg_url();
    let rest = url.split_once('@').unwrap().1;
    format!("postgres://{user}@{rest}")
}

/// A store in `schema` with one execution, `done-1`, completed.
async fn populated(schema: &str) {
    let store = PostgresStore::connect_with(&pg_url(), options(schema))
        .await
        .unwrap();
    let engine = SagaEngine::new(store);
    engine
        .register(saga(&Arc::new(Script::default())))
        .await
        .unwrap();
    let id = engine
        .start_with_id("order", "done-1", Order::default())
        .await
        .unwrap();
    assert_eq!(
        engine.wait(&id).await.unwrap().status,
        ExecutionStatus::Completed
    );
}

/// A login role with no privilege yet (a leftover of an earlier run is
/// dropped first).
async fn role(admin: &Client, role: &str) {
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN
                IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                    EXECUTE 'DROP OWNED BY {role}';
                    DROP ROLE {role};
                END IF;
             END $$;
             CREATE ROLE {role} LOGIN;"
        ))
        .await
        .unwrap();
}

async fn drop_role(admin: &Client, role: &str) {
    let _ = admin
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .await;
}

async fn schema_exists(admin: &Client, schema: &str) -> bool {
    admin
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
            &[&schema],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 1
}

/// The columns of `events`, in order.
async fn event_columns(admin: &Client, schema: &str) -> Vec<String> {
    admin
        .query(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = $1 AND table_name = 'events' ORDER BY ordinal_position",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test]
async fn a_schema_that_does_not_exist_is_no_store_and_is_not_created() {
    let admin = client(&pg_url()).await;
    let schema = fresh_schema("ro_missing");
    let err = read_only(&schema).await.unwrap_err();
    let StoreError::NoStore { detail, .. } = &err else {
        panic!("expected NoStore, got {err:?}");
    };
    assert_eq!(
        detail,
        &format!("database `postgres` has no schema `{schema}`")
    );
    assert!(
        err.to_string()
            .ends_with("nothing was created: check the schema name and the database of the URL"),
        "{err}"
    );
    assert!(!schema_exists(&admin, &schema).await);

    // Told not to create a store, a connection to write refuses it too.
    let err = PostgresStore::connect_with(&pg_url(), options(&schema).with_create_schema(false))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NoStore { .. }), "{err:?}");
    assert!(!schema_exists(&admin, &schema).await);

    // An empty schema is no store either, and stays empty.
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    for err in [
        read_only(&schema).await.unwrap_err(),
        PostgresStore::connect_with(&pg_url(), options(&schema).with_create_schema(false))
            .await
            .unwrap_err(),
    ] {
        let StoreError::NoStore { detail, .. } = &err else {
            panic!("expected NoStore, got {err:?}");
        };
        assert_eq!(
            detail,
            &format!("schema `{schema}` of database `postgres` has no tables")
        );
    }
    assert!(event_columns(&admin, &schema).await.is_empty());
    // By default, connecting creates the store in it, as before.
    PostgresStore::connect_with(&pg_url(), options(&schema))
        .await
        .unwrap();
    assert!(!event_columns(&admin, &schema).await.is_empty());
}

#[tokio::test]
async fn a_read_only_store_reads_and_refuses_every_write() {
    let schema = fresh_schema("ro_reads");
    populated(&schema).await;
    let store = read_only(&schema).await.unwrap();
    let listed = store.list(None).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, ExecutionStatus::Completed);
    assert!(!store.events(&listed[0].id).await.unwrap().is_empty());
    let err = store
        .put_definition(DefinitionRecord {
            fingerprint: "f".repeat(64),
            saga: "x".to_owned(),
            shape: "[]".to_owned(),
        })
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("recording a definition failed"),
        "{err}"
    );
    assert!(
        std::error::Error::source(&err)
            .unwrap()
            .to_string()
            .contains("opened read-only"),
        "{err:?}"
    );
    assert!(store.request_cancel(&listed[0].id).await.is_err());
    assert!(store.purge(i64::MAX).await.is_err());
    // Nothing reached the store.
    let admin = client(&pg_url()).await;
    let definitions: i64 = admin
        .query_one(&format!("SELECT count(*) FROM {schema}.definitions"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(definitions, 1);
    assert_eq!(store.list(None).await.unwrap().len(), 1);
}

/// `USAGE` on the schema and `SELECT` on its tables are all a reader
/// needs; a connection to write used to need `CREATE` on the database
/// too, for a schema that exists (`CREATE SCHEMA IF NOT EXISTS` checks it
/// first), which a worker given a schema of its own need not have.
#[tokio::test]
async fn least_privileges_suffice_to_read_and_to_work() {
    let admin = client(&pg_url()).await;
    let schema = fresh_schema("ro_least");
    populated(&schema).await;
    let reader = format!("ro_reader_{}", std::process::id());
    let writer = format!("ro_writer_{}", std::process::id());
    role(&admin, &reader).await;
    role(&admin, &writer).await;
    admin
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA {schema} TO {reader}, {writer};
             GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {reader};
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {writer};"
        ))
        .await
        .unwrap();
    let store = PostgresStore::connect_read_only(&url_as(&reader), options(&schema))
        .await
        .unwrap();
    assert_eq!(store.list(None).await.unwrap().len(), 1);

    let store = PostgresStore::connect_with(&url_as(&writer), options(&schema))
        .await
        .unwrap();
    let engine = SagaEngine::new(store);
    engine
        .register(saga(&Arc::new(Script::default())))
        .await
        .unwrap();
    let id = engine
        .start_with_id("order", "least-1", Order::default())
        .await
        .unwrap();
    assert_eq!(
        engine.wait(&id).await.unwrap().status,
        ExecutionStatus::Completed
    );
    drop(engine);

    // A schema the writer may not create is named with what to do.
    let missing = fresh_schema("ro_least_new");
    let err = PostgresStore::connect_with(&url_as(&writer), options(&missing))
        .await
        .unwrap_err();
    let StoreError::Misconfigured { problem, .. } = &err else {
        panic!("expected Misconfigured, got {err:?}");
    };
    assert_eq!(
        problem,
        &format!(
            "database `postgres` has no schema `{missing}`, and user `{writer}` may not create it; create it for the user (`CREATE SCHEMA {missing} AUTHORIZATION {writer}`), or check the schema name"
        )
    );
    drop_role(&admin, &reader).await;
    drop_role(&admin, &writer).await;
}

/// Without `USAGE`, PostgreSQL acts as if the schema's tables were not
/// there: the error was `relation "saga_schema" does not exist`. Now it
/// names the privilege, for reading and for writing; a reader without
/// `SELECT` is told which tables.
#[tokio::test]
async fn a_missing_privilege_is_misconfigured_and_named() {
    let admin = client(&pg_url()).await;
    let schema = fresh_schema("ro_priv");
    populated(&schema).await;
    let user = format!("ro_nopriv_{}", std::process::id());
    role(&admin, &user).await;
    for err in [
        PostgresStore::connect_read_only(&url_as(&user), options(&schema))
            .await
            .unwrap_err(),
        PostgresStore::connect_with(&url_as(&user), options(&schema))
            .await
            .unwrap_err(),
    ] {
        let StoreError::Misconfigured { problem, .. } = &err else {
            panic!("expected Misconfigured, got {err:?}");
        };
        assert!(
            problem.starts_with(&format!(
                "user `{user}` has no USAGE privilege on schema `{schema}` of database `postgres`; grant it (`GRANT USAGE ON SCHEMA {schema} TO {user}`"
            )),
            "{problem}"
        );
    }
    admin
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA {schema} TO {user};
             GRANT SELECT ON {schema}.executions, {schema}.saga_schema TO {user};"
        ))
        .await
        .unwrap();
    let err = PostgresStore::connect_read_only(&url_as(&user), options(&schema))
        .await
        .unwrap_err();
    let StoreError::Misconfigured { problem, .. } = &err else {
        panic!("expected Misconfigured, got {err:?}");
    };
    assert!(
        problem.starts_with(&format!(
            "user `{user}` may not read tables `definitions`, `events`, `leases` of schema `{schema}`"
        )),
        "{problem}"
    );
    // A privilege revoked under a connected store: its reads say so too.
    admin
        .batch_execute(&format!(
            "GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {user}"
        ))
        .await
        .unwrap();
    let store = PostgresStore::connect_read_only(&url_as(&user), options(&schema))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("REVOKE SELECT ON {schema}.executions FROM {user}"))
        .await
        .unwrap();
    let err = store.list(None).await.unwrap_err();
    let StoreError::Misconfigured { problem, .. } = &err else {
        panic!("expected Misconfigured, got {err:?}");
    };
    assert!(
        problem.contains("lacks a privilege the store needs"),
        "{problem}"
    );
    drop(store);
    drop_role(&admin, &user).await;
}

/// A read-only connection neither migrates an older schema nor reads a
/// newer incompatible one; each is refused with its versions and left as
/// it was. A newer compatible one (additive) is read.
#[tokio::test]
async fn schema_versions_are_checked_and_left_as_they_were() {
    let admin = client(&pg_url()).await;
    let schema = fresh_schema("ro_versions");
    populated(&schema).await;
    // Back to version 1: without the column and the index version 2 adds.
    admin
        .batch_execute(&format!(
            "ALTER TABLE {schema}.events DROP COLUMN detail;
             DROP INDEX {schema}.executions_by_created;
             UPDATE {schema}.saga_schema SET version = 1;"
        ))
        .await
        .unwrap();
    let err = read_only(&schema).await.unwrap_err();
    let StoreError::OlderSchema {
        found, supported, ..
    } = &err
    else {
        panic!("expected OlderSchema, got {err:?}");
    };
    assert_eq!((*found, *supported), (1, 2));
    assert!(
        err.to_string()
            .contains("let a worker of this build connect first"),
        "{err}"
    );
    assert!(
        !event_columns(&admin, &schema)
            .await
            .contains(&"detail".to_owned())
    );
    // A connection to write migrates it (not creating a store is no bar to
    // bringing one up to date), then it reads.
    PostgresStore::connect_with(&pg_url(), options(&schema).with_create_schema(false))
        .await
        .unwrap();
    assert!(
        event_columns(&admin, &schema)
            .await
            .contains(&"detail".to_owned())
    );
    let store = read_only(&schema).await.unwrap();
    assert_eq!(store.list(None).await.unwrap().len(), 1);
    drop(store);

    admin
        .batch_execute(&format!(
            "UPDATE {schema}.saga_schema SET version = 7, min_compatible = 1"
        ))
        .await
        .unwrap();
    let store = read_only(&schema).await.unwrap();
    assert_eq!(store.list(None).await.unwrap().len(), 1);
    drop(store);
    admin
        .batch_execute(&format!(
            "UPDATE {schema}.saga_schema SET version = 7, min_compatible = 5"
        ))
        .await
        .unwrap();
    let err = read_only(&schema).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::IncompatibleSchema {
                found: 7,
                required: 5,
                supported: 2,
                ..
            }
        ),
        "{err:?}"
    );
    let version: i64 = admin
        .query_one(&format!("SELECT version FROM {schema}.saga_schema"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 7);

    // Another application's tables: refused, untouched.
    let foreign = fresh_schema("ro_foreign");
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {foreign}; CREATE TABLE {foreign}.invoices (n INT)"
        ))
        .await
        .unwrap();
    let err = read_only(&foreign).await.unwrap_err();
    assert!(matches!(err, StoreError::ForeignSchema { .. }), "{err:?}");
}

/// A database the server does not have, and a URL without the password
/// the server asks for, were `Unavailable` (an outage: `wait` retried
/// them for good). A server that is not there still is.
#[tokio::test]
async fn configuration_errors_are_not_outages() {
    let url = pg_url();
    let host = url.split_once('@').unwrap().1.rsplit_once('/').unwrap().0;
    let nodb = format!("ro_nodb_{}", std::process::id());
    for connect in [false, true] {
        let url = format!("postgres://postgres@{host}/{nodb}");
        let err = if connect {
            PostgresStore::connect(&url).await.unwrap_err()
        } else {
            PostgresStore::connect_read_only(&url, PostgresOptions::new())
                .await
                .unwrap_err()
        };
        let StoreError::Misconfigured { problem, .. } = &err else {
            panic!("expected Misconfigured, got {err:?}");
        };
        assert_eq!(
            problem,
            &format!(
                "the server has no database `{nodb}`; check the database name of the URL (`postgres://user@host:port/database`)"
            )
        );
    }

    // `scripts/pg.sh` makes the role `saga_password` give a password.
    let err = PostgresStore::connect(&format!("postgres://saga_password@{host}/postgres"))
        .await
        .unwrap_err();
    let StoreError::Unauthorized { user, what, .. } = &err else {
        panic!("expected Unauthorized, got {err:?}");
    };
    assert_eq!(user, "saga_password");
    assert_eq!(
        what,
        "connecting (the server asks for a password and the URL has none)"
    );

    let err = PostgresStore::connect_read_only(
        "postgres://postgres@127.0.0.1:1/postgres",
        PostgresOptions::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
}
