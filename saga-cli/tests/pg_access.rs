//! The `saga` command on PostgreSQL creates and migrates nothing when it
//! inspects, never creates a store when it mends, and says what is wrong
//! with the URL, the schema or the user's privileges. Real server (see
//! `pg_url`), real roles of a few privileges, the real binary.
#![cfg(feature = "postgres")]

mod support;

use saga_core::store::{PostgresOptions, PostgresStore};
use saga_core::{ExecutionStatus, SagaEngine};
use support::*;
use tokio_postgres::{Client, NoTls};

/// A client of the server as its superuser, for the test's own statements.
async fn admin(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// A name of this test process's own (schemas and roles are shared by
/// every test on the server).
fn unique(name: &str) -> String {
    format!("cli_{name}_{}", std::process::id())
}

/// `url` with `user` (no password) in place of its user.
fn url_as(url: &str, user: &str) -> String {
    let rest = url.split_once('@').unwrap().1;
    format!("postgres://{user}@{rest}")
}

/// A store in `schema` with `pg-1` compensated, written by a real engine.
async fn store(url: &str, schema: &str) {
    let store = PostgresStore::connect_with(url, PostgresOptions::new().with_schema(schema))
        .await
        .unwrap();
    let engine = SagaEngine::new(store);
    engine.register(refund_saga()).await.unwrap();
    let id = engine.start_with_id("refund", "pg-1", 0_u32).await.unwrap();
    let report = engine.wait(&id).await.or_else(ended).unwrap();
    assert_eq!(report.status, ExecutionStatus::Compensated);
}

/// A role that logs in (trusted: `scripts/pg.sh`) and has no privilege on
/// anything yet; dropped first if an earlier run left it.
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

/// Whether the database has a schema of that name.
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

/// `saga --store <url> --pg-schema <schema> <args>`: its exit code,
/// stdout and stderr.
fn cli(url: &str, schema: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["--store", url, "--pg-schema", schema];
    all.extend_from_slice(args);
    let out = saga(&all);
    (out.status.code(), stdout(&out), stderr(&out))
}

/// A misspelt `--pg-schema` used to create that schema and its tables and
/// answer "0 executions" (exit 0), so an alert on `list --status stuck`
/// stayed quiet for good. Now every command, reading or writing, refuses
/// it, naming the schema and the database, and creates nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_misspelt_schema_is_an_error_and_nothing_is_created() {
    let url = pg_url();
    let admin = admin(&url).await;
    let typo = unique("typo");
    let _ = admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {typo} CASCADE"))
        .await;
    for args in [
        &["list", "--status", "stuck", "--json"][..],
        &["show", "pg-1"],
        &["diagram", "refund"],
        &["cancel", "pg-1", "--yes"],
        &["abandon", "pg-1", "--yes"],
    ] {
        let (code, out, err) = cli(&url, &typo, args);
        assert_eq!(code, Some(1), "{args:?}: {out}{err}");
        assert_eq!(out, "", "{args:?}");
        assert!(
            err.contains(&format!(
                "holds no saga store (database `postgres` has no schema `{typo}`)"
            )),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("never creates one: check `--pg-schema`"),
            "{err}"
        );
        assert!(!schema_exists(&admin, &typo).await, "{args:?} created it");
    }

    // A schema that exists but holds no store (made by hand, say) stays
    // empty too.
    admin
        .batch_execute(&format!("CREATE SCHEMA {typo}"))
        .await
        .unwrap();
    for args in [&["list"][..], &["resume", "x", "--yes"]] {
        let (code, _, err) = cli(&url, &typo, args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!(
                "(schema `{typo}` of database `postgres` has no tables)"
            )),
            "{args:?}: {err}"
        );
    }
    let tables = admin
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1",
            &[&typo],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(tables, 0);
    admin
        .batch_execute(&format!("DROP SCHEMA {typo}"))
        .await
        .unwrap();
}

/// A role with `USAGE` on the schema and `SELECT` on its tables, and no
/// `CREATE` anywhere, reads the store: `list`, `show` and `diagram` used
/// to fail (the connection ran the migration, whose `CREATE SCHEMA IF
/// NOT EXISTS` needs `CREATE` on the database).
#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_role_lists_shows_and_draws() {
    let url = pg_url();
    let admin = admin(&url).await;
    let schema = unique("ro");
    let reader = unique("ro_user");
    store(&url, &schema).await;
    role(&admin, &reader).await;
    admin
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA {schema} TO {reader};
             GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {reader};"
        ))
        .await
        .unwrap();
    let as_reader = url_as(&url, &reader);
    let (code, out, err) = cli(&as_reader, &schema, &["list", "--status", "compensated"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("pg-1") && out.ends_with("1 execution\n"),
        "{out}"
    );
    let (code, out, err) = cli(&as_reader, &schema, &["show", "pg-1"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("status     compensated"), "{out}");
    let (code, out, err) = cli(&as_reader, &schema, &["diagram", "refund"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("pay_back"), "{out}");
    drop_role(&admin, &reader).await;
}

/// Without `USAGE` on the schema, the error used to be `relation
/// "saga_schema" does not exist`; now it names the privilege, the schema
/// and the user. With `USAGE` but no `SELECT`, it names the tables.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_privilege_is_named() {
    let url = pg_url();
    let admin = admin(&url).await;
    let schema = unique("priv");
    let user = unique("priv_user");
    store(&url, &schema).await;
    role(&admin, &user).await;
    let as_user = url_as(&url, &user);
    for args in [&["list"][..], &["cancel", "pg-1", "--yes"]] {
        let (code, _, err) = cli(&as_user, &schema, args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!(
                "user `{user}` has no USAGE privilege on schema `{schema}` of database `postgres`"
            )),
            "{args:?}: {err}"
        );
        assert!(err.contains(&format!("GRANT USAGE ON SCHEMA {schema} TO {user}")));
        assert!(!err.contains("does not exist"), "{err}");
    }
    admin
        .batch_execute(&format!("GRANT USAGE ON SCHEMA {schema} TO {user}"))
        .await
        .unwrap();
    let (code, _, err) = cli(&as_user, &schema, &["list"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "user `{user}` may not read tables `definitions`, `events`, `executions`, `leases`, `saga_schema` of schema `{schema}`"
        )),
        "{err}"
    );
    drop_role(&admin, &user).await;
}

/// A database the server does not have, and a URL without the password
/// the server asks for, used to be reported as an unreachable server
/// ("check that the server runs"); now each says what is wrong.
#[test]
fn a_missing_database_or_password_is_named_not_an_outage() {
    let url = pg_url();
    let host = url.split_once('@').unwrap().1.rsplit_once('/').unwrap().0;
    let nodb = unique("nodb");
    let (code, _, err) = cli(
        &format!("postgres://postgres@{host}/{nodb}"),
        "saga",
        &["list"],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "the server has no database `{nodb}`; check the database name of the URL"
        )),
        "{err}"
    );
    assert!(!err.contains("unreachable"), "{err}");

    // `scripts/pg.sh` makes the role `saga_password` give a password.
    let (code, _, err) = cli(
        &format!("postgres://saga_password@{host}/postgres"),
        "saga",
        &["list"],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("authentication failed for user `saga_password`")
            && err.contains("the server asks for a password and the URL has none"),
        "{err}"
    );
    assert!(!err.contains("unreachable"), "{err}");
}
