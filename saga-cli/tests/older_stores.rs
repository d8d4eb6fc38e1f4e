//! The `saga` command never migrates a store of an older schema version:
//! on a store that 0.1 wrote, every command (a dry run, a typo'd id, a
//! real `--yes`, a listing) is refused with `OlderSchema`, which says to
//! let a worker of this build open the store first, and the store is left
//! byte for byte as it was, so the 0.1 processes still running on it (or
//! restarting) keep working. A dry run used to migrate the file (its
//! `user_version` 1 -> 2), after which every 0.1 process refused it as
//! newer. Once a service of this build has migrated the store, the same
//! commands work.
//!
//! The stores are the fixtures 0.1 wrote (`tests/fixtures/v0.1/`, see its
//! README), copied; the command is the real binary.

mod support;

use std::path::{Path, PathBuf};

use saga_core::store::SqliteStore;
use support::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/v0.1");

/// Every kind of command an operator may type on a store: dry runs of
/// each operator command, the same done (`--yes`, one for an id that does
/// not exist) and the reads. The ids are the fixture's (`submitted` is
/// running, `stuck` and `resume-requested` are stuck).
const COMMANDS: &[&[&str]] = &[
    &["cancel", "submitted"],
    &["resume", "stuck"],
    &["abandon", "stuck"],
    &["cancel", "submitted", "--json"],
    &["cancel", "no-such-id", "--yes"],
    &["cancel", "submitted", "--yes"],
    &["abandon", "stuck", "--yes"],
    &["resume", "resume-requested", "--yes"],
    &["list"],
    &["show", "stuck"],
];

/// A copy of the 0.1 SQLite fixture in a fresh directory.
fn sqlite_fixture(name: &str) -> PathBuf {
    let db = dir(name).join("store.db");
    std::fs::copy(Path::new(FIXTURES).join("store.db"), &db).unwrap();
    db
}

/// The file's `PRAGMA user_version`, read from its header (bytes 60-63),
/// without SQLite.
fn user_version(db: &Path) -> u32 {
    let bytes = std::fs::read(db).unwrap();
    u32::from_be_bytes(bytes[60..64].try_into().unwrap())
}

/// What the refusal of an older store says, whatever the command.
fn assert_refused_as_older(args: &[&str], code: Option<i32>, out: &str, err: &str) {
    assert_eq!(code, Some(1), "{args:?}: {out}{err}");
    assert_eq!(out, "", "{args:?}");
    assert!(
        err.contains("has schema version 1, older than this build's (2)"),
        "{args:?}: {err}"
    );
    assert!(err.contains("it was left untouched"), "{args:?}: {err}");
    assert!(
        err.contains("let a worker of this build connect first"),
        "{args:?}: {err}"
    );
}

#[test]
fn no_command_migrates_a_0_1_sqlite_store() {
    let db = sqlite_fixture("older-sqlite");
    let before = std::fs::read(&db).unwrap();
    assert_eq!(user_version(&db), 1);
    for args in COMMANDS {
        let mut all = vec!["--store", db.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = saga(&all);
        assert_refused_as_older(args, out.status.code(), &stdout(&out), &stderr(&out));
        assert_eq!(user_version(&db), 1, "{args:?} migrated the file");
        assert!(
            std::fs::read(&db).unwrap() == before,
            "{args:?} changed the file"
        );
    }

    // A service of this build opens it (and migrates it): the commands
    // work from then on.
    drop(SqliteStore::open(&db).unwrap());
    assert_eq!(user_version(&db), 2);
    let err = fails(&db, &["cancel", "submitted"], 1);
    assert!(
        err.starts_with("this would cancel running execution `submitted` of saga `compat-order`"),
        "{err}"
    );
    let text = ok(&db, &["abandon", "stuck", "--yes"]);
    assert_eq!(text, "abandoned `stuck`; nothing was compensated\n");
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use saga_core::store::{PostgresOptions, PostgresStore};
    use tokio_postgres::{Client, NoTls};

    async fn admin(url: &str) -> Client {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }

    /// The 0.1 dump, loaded into `schema` (its own schema renamed, psql's
    /// `\restrict` meta-commands left out), `schema` dropped first.
    async fn load_fixture(admin: &Client, schema: &str) {
        const DUMPED: &str = "saga_v0_1";
        let dump = std::fs::read_to_string(Path::new(FIXTURES).join("postgres.sql")).unwrap();
        assert!(dump.contains(&format!("CREATE SCHEMA {DUMPED};")));
        let sql: String = dump
            .lines()
            .filter(|line| !line.starts_with('\\'))
            .map(|line| line.replace(DUMPED, schema) + "\n")
            .collect();
        admin
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .unwrap();
        admin.batch_execute(&sql).await.unwrap();
    }

    /// The schema's version and whether `events` has the column version 2
    /// adds.
    async fn version(admin: &Client, schema: &str) -> (i64, bool) {
        let version = admin
            .query_one(&format!("SELECT version FROM {schema}.saga_schema"), &[])
            .await
            .unwrap()
            .get(0);
        let detail = admin
            .query_one(
                "SELECT count(*) FROM information_schema.columns
                 WHERE table_schema = $1 AND table_name = 'events' AND column_name = 'detail'",
                &[&schema],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        (version, detail == 1)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn no_command_migrates_a_0_1_postgres_store() {
        let url = pg_url();
        let admin = admin(&url).await;
        let schema = format!("cli_older_{}", std::process::id());
        load_fixture(&admin, &schema).await;
        assert_eq!(version(&admin, &schema).await, (1, false));
        for args in COMMANDS {
            let mut all = vec!["--store", &url, "--pg-schema", &schema];
            all.extend_from_slice(args);
            let out = saga(&all);
            assert_refused_as_older(args, out.status.code(), &stdout(&out), &stderr(&out));
            assert_eq!(
                version(&admin, &schema).await,
                (1, false),
                "{args:?} migrated the schema"
            );
        }

        // A service of this build connects (and migrates it): the commands
        // work from then on.
        drop(
            PostgresStore::connect_with(&url, PostgresOptions::new().with_schema(&schema))
                .await
                .unwrap(),
        );
        assert_eq!(version(&admin, &schema).await, (2, true));
        let out = saga(&["--store", &url, "--pg-schema", &schema, "abandon", "stuck"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).starts_with("this would abandon stuck execution `stuck`"),
            "{}",
            stderr(&out)
        );
        let out = saga(&[
            "--store",
            &url,
            "--pg-schema",
            &schema,
            "abandon",
            "stuck",
            "--yes",
        ]);
        assert_eq!(
            stdout(&out),
            "abandoned `stuck`; nothing was compensated\n",
            "{}",
            stderr(&out)
        );
        admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    }
}
