//! The PostgreSQL store's schema: its migrations, and the checks that
//! leave a schema of another application or a newer version as it was.

use tokio_postgres::Client;

use super::session::{Session, sql_error};
use crate::store::{StoreError, StoreResult};

/// The migrations, in order: `MIGRATIONS[n]` takes the schema from version
/// `n` to `n + 1`, inside the store's schema (`search_path` is set to it).
///
/// Rolling upgrades: while old and new workers run side by side, a newer
/// worker migrates the schema and the older ones keep working on it. So a
/// migration is *additive only*: new tables, new nullable (or defaulted)
/// columns, new indexes; never a rename, a drop, or a changed meaning. A
/// migration that old code could not live with must raise
/// [`MIN_COMPATIBLE`] to its own version: older workers then refuse the
/// schema with [`StoreError::IncompatibleSchema`] instead of misreading it.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: definitions, executions, their logs and leases. Times are
    // milliseconds since the Unix epoch by the database's clock.
    "CREATE TABLE saga_schema (
        singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
        version BIGINT NOT NULL,
        min_compatible BIGINT NOT NULL
    );
    CREATE TABLE definitions (
        fingerprint TEXT PRIMARY KEY,
        saga TEXT NOT NULL,
        shape TEXT NOT NULL,
        registered_at BIGINT NOT NULL
    );
    CREATE TABLE executions (
        id TEXT PRIMARY KEY,
        saga TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        status TEXT NOT NULL,
        context TEXT NOT NULL,
        last_seq BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        cancel_requested BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX executions_by_status ON executions (status, created_at);
    CREATE INDEX executions_unfinished ON executions (created_at, id)
        WHERE status IN ('running', 'compensating');
    CREATE TABLE events (
        execution_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        at BIGINT NOT NULL,
        kind TEXT NOT NULL,
        step BIGINT,
        attempt BIGINT NOT NULL,
        output TEXT,
        context TEXT,
        error TEXT,
        outcome_unknown BOOLEAN NOT NULL,
        will_retry BOOLEAN NOT NULL,
        PRIMARY KEY (execution_id, seq)
    );
    CREATE TABLE leases (
        execution_id TEXT PRIMARY KEY,
        owner TEXT,
        token BIGINT NOT NULL,
        expires_at BIGINT
    );",
    // 2: listings of every status page in `(created_at, id)` order
    // (`saga list` with no `--status`) without sorting the whole table;
    // `id` in the "C" collation, as the listing orders it.
    "CREATE INDEX executions_by_created ON executions (created_at, id COLLATE \"C\");",
];

/// The newest schema version this build knows.
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The oldest schema version a build must understand to work on a schema
/// this build wrote (see [`MIGRATIONS`]).
pub(super) const MIN_COMPATIBLE: i64 = 1;

/// Validates the schema, then migrates it, in one transaction under an
/// advisory lock (two workers starting together migrate once). Nothing is
/// written to a schema that is not ours or is too new.
pub(super) async fn check_and_migrate(
    session: &Session,
    store: &str,
    schema: &str,
) -> StoreResult<()> {
    let err = |e| sql_error(store, "migrating the schema", e);
    let client = &session.client;
    client.batch_execute("BEGIN").await.map_err(err)?;
    let result = migrate(client, store, schema).await;
    match result {
        Ok(()) => client.batch_execute("COMMIT").await.map_err(err),
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

pub(super) async fn migrate(client: &Client, store: &str, schema: &str) -> StoreResult<()> {
    let err = |e| sql_error(store, "migrating the schema", e);
    client
        .execute(
            "SELECT pg_advisory_xact_lock(hashtext('saga-schema:' || $1::text))",
            &[&schema],
        )
        .await
        .map_err(err)?;
    // A checked identifier, quoted: a keyword (`user`) is a name too.
    client
        .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .await
        .map_err(err)?;
    let tables: Vec<String> = client
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY 1",
            &[&schema],
        )
        .await
        .map_err(err)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let (version, min_compatible) = if tables.iter().any(|t| t == "saga_schema") {
        let row = client
            .query_opt("SELECT version, min_compatible FROM saga_schema", &[])
            .await
            .map_err(err)?;
        match row {
            Some(row) => (row.get::<_, i64>(0), row.get::<_, i64>(1)),
            None => {
                return Err(StoreError::ForeignSchema {
                    store: store.to_owned(),
                    detail: "its table `saga_schema` is empty".to_owned(),
                });
            }
        }
    } else if !tables.is_empty() {
        let shown: Vec<&str> = tables.iter().take(5).map(String::as_str).collect();
        return Err(StoreError::ForeignSchema {
            store: store.to_owned(),
            detail: format!("tables: {}", shown.join(", ")),
        });
    } else {
        (0, 0)
    };
    if min_compatible > SCHEMA_VERSION {
        return Err(StoreError::IncompatibleSchema {
            store: store.to_owned(),
            found: version,
            required: min_compatible,
            supported: SCHEMA_VERSION,
        });
    }
    if version >= SCHEMA_VERSION {
        // Ours, as new as this build or newer but compatible.
        return Ok(());
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        client.batch_execute(sql).await.map_err(err)?;
        log::info!(target: "saga", schema = schema, version = from + 1; "postgres store migrated");
    }
    client
        .execute(
            "INSERT INTO saga_schema (singleton, version, min_compatible) VALUES (TRUE, $1, $2)
             ON CONFLICT (singleton) DO UPDATE
             SET version = $1, min_compatible = GREATEST(saga_schema.min_compatible, $2)",
            &[&SCHEMA_VERSION, &MIN_COMPATIBLE],
        )
        .await
        .map_err(err)?;
    Ok(())
}
