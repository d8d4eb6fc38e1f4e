//! The PostgreSQL store's schema: its migrations, and the checks that
//! leave a schema of another application or a newer version as it was.

use tokio_postgres::Client;

use super::PostgresOptions;
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
    // 2 (0.2.0): listings of every status page in `(created_at, id)`
    // order (`saga list` with no `--status`) without sorting the whole
    // table, `id` in the "C" collation as the listing orders it; an
    // event's detail (a failure's cause chain and permanent mark, a run's
    // outcome), JSON, NULL in events written before. Old workers neither
    // read nor write it: `min_compatible` stays.
    "CREATE INDEX executions_by_created ON executions (created_at, id COLLATE \"C\");
    ALTER TABLE events ADD COLUMN detail TEXT;",
];

/// The newest schema version this build knows.
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The oldest schema version a build must understand to work on a schema
/// this build wrote (see [`MIGRATIONS`]).
pub(super) const MIN_COMPATIBLE: i64 = 1;

/// The tables a store's reads need (`saga_schema` aside).
const TABLES: &[&str] = &["definitions", "events", "executions", "leases"];

/// What the database holds under the store's schema name, as the
/// connected user sees it.
struct Found {
    database: String,
    user: String,
    /// `None` if no schema has that name; else whether the user has
    /// `USAGE` on it (without, PostgreSQL acts as if its tables were not
    /// there).
    usage: Option<bool>,
    /// The schema's tables (and views), by name. The catalog shows them
    /// whatever the user's privileges.
    tables: Vec<String>,
}

impl Found {
    /// Refuses a schema the user may not use.
    fn check_usage(&self, store: &str, schema: &str) -> StoreResult<()> {
        if self.usage == Some(false) {
            let user = &self.user;
            return Err(StoreError::Misconfigured {
                store: store.to_owned(),
                problem: format!(
                    "user `{user}` has no USAGE privilege on schema `{schema}` of database `{}`; grant it (`GRANT USAGE ON SCHEMA {schema} TO {user}`, and SELECT on the schema's tables to read them, INSERT, UPDATE and DELETE to write them), or connect as another user",
                    self.database
                ),
                source: None,
            });
        }
        Ok(())
    }

    /// Refuses a schema that does not exist or holds no table (a typo
    /// must not look like an empty store).
    fn check_exists(&self, store: &str, schema: &str) -> StoreResult<()> {
        let detail = match self.usage {
            None => format!("database `{}` has no schema `{schema}`", self.database),
            Some(_) if self.tables.is_empty() => format!(
                "schema `{schema}` of database `{}` has no tables",
                self.database
            ),
            Some(_) => return Ok(()),
        };
        Err(StoreError::NoStore {
            store: store.to_owned(),
            detail,
        })
    }

    /// Refuses a schema of another application's tables.
    fn check_ours(&self, store: &str) -> StoreResult<()> {
        if !self.tables.is_empty() && !self.tables.iter().any(|t| t == "saga_schema") {
            let shown: Vec<&str> = self.tables.iter().take(5).map(String::as_str).collect();
            return Err(StoreError::ForeignSchema {
                store: store.to_owned(),
                detail: format!("tables: {}", shown.join(", ")),
            });
        }
        Ok(())
    }
}

/// Looks at the schema without touching it.
async fn inspect(client: &Client, store: &str, schema: &str) -> StoreResult<Found> {
    let err = |e| sql_error(store, "reading the schema", e);
    let row = client
        .query_one(
            "SELECT current_database()::text, current_user::text,
                    (SELECT has_schema_privilege(n.oid, 'USAGE') FROM pg_namespace n
                     WHERE n.nspname = $1)",
            &[&schema],
        )
        .await
        .map_err(err)?;
    let tables = client
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
    Ok(Found {
        database: row.get(0),
        user: row.get(1),
        usage: row.get(2),
        tables,
    })
}

/// The schema's version, from `saga_schema`, once checked that this build
/// understands it (its `min_compatible` is no newer than this build).
async fn read_version(client: &Client, store: &str, what: &str) -> StoreResult<i64> {
    let row = client
        .query_opt("SELECT version, min_compatible FROM saga_schema", &[])
        .await
        .map_err(|e| sql_error(store, what, e))?;
    let Some(row) = row else {
        return Err(StoreError::ForeignSchema {
            store: store.to_owned(),
            detail: "its table `saga_schema` is empty".to_owned(),
        });
    };
    let (version, min_compatible) = (row.get::<_, i64>(0), row.get::<_, i64>(1));
    if min_compatible > SCHEMA_VERSION {
        return Err(StoreError::IncompatibleSchema {
            store: store.to_owned(),
            found: version,
            required: min_compatible,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(version)
}

/// Checks, writing nothing, that the schema holds a store this build can
/// read as it is: it exists, the user may read it, it is ours, neither
/// incompatible nor older than this build (whose reads need its columns).
pub(super) async fn check_read_only(
    session: &Session,
    store: &str,
    schema: &str,
) -> StoreResult<()> {
    let client = &session.client;
    let found = inspect(client, store, schema).await?;
    found.check_exists(store, schema)?;
    found.check_usage(store, schema)?;
    found.check_ours(store)?;
    let unreadable: Vec<String> = client
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = ANY($2)
               AND NOT has_table_privilege(c.oid, 'SELECT')
             ORDER BY 1",
            &[&schema, &[&["saga_schema"][..], TABLES].concat()],
        )
        .await
        .map_err(|e| sql_error(store, "reading the schema", e))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if !unreadable.is_empty() {
        let user = &found.user;
        return Err(StoreError::Misconfigured {
            store: store.to_owned(),
            problem: format!(
                "user `{user}` may not read table{} {} of schema `{schema}`; grant it (`GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {user}`), or connect as another user",
                if unreadable.len() == 1 { "" } else { "s" },
                unreadable
                    .iter()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            source: None,
        });
    }
    let version = read_version(client, store, "reading the schema version").await?;
    if version < SCHEMA_VERSION {
        return Err(StoreError::OlderSchema {
            store: store.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// Validates the schema, then migrates it, in one transaction under an
/// advisory lock (two workers starting together migrate once). Nothing is
/// written to a schema that is not ours or is too new; with `create`
/// false, nothing is created either: a schema that does not exist or
/// holds no table is [`StoreError::NoStore`]; with `options` saying not to
/// migrate, a store of an older version is [`StoreError::OlderSchema`],
/// and nothing is written to it.
pub(super) async fn check_and_migrate(
    session: &Session,
    store: &str,
    options: &PostgresOptions,
) -> StoreResult<()> {
    let err = |e| sql_error(store, "migrating the schema", e);
    let client = &session.client;
    client.batch_execute("BEGIN").await.map_err(err)?;
    let result = migrate(client, store, options).await;
    match result {
        Ok(()) => client.batch_execute("COMMIT").await.map_err(err),
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

async fn migrate(client: &Client, store: &str, options: &PostgresOptions) -> StoreResult<()> {
    let schema = options.schema.as_str();
    let err = |e| sql_error(store, "migrating the schema", e);
    client
        .execute(
            "SELECT pg_advisory_xact_lock(hashtext('saga-schema:' || $1::text))",
            &[&schema],
        )
        .await
        .map_err(err)?;
    let found = inspect(client, store, schema).await?;
    if !options.create_schema {
        found.check_exists(store, schema)?;
    }
    found.check_usage(store, schema)?;
    found.check_ours(store)?;
    if found.usage.is_none() {
        // Only when missing: `CREATE SCHEMA IF NOT EXISTS` needs CREATE on
        // the database even for a schema that exists, which a worker's
        // user given a schema of its own need not have. A checked
        // identifier, quoted: a keyword (`user`) is a name too.
        client
            .batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
            .await
            .map_err(|e| match e.code() {
                Some(code) if *code == tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE => {
                    let user = &found.user;
                    StoreError::Misconfigured {
                        store: store.to_owned(),
                        problem: format!(
                            "database `{}` has no schema `{schema}`, and user `{user}` may not create it; create it for the user (`CREATE SCHEMA {schema} AUTHORIZATION {user}`), or check the schema name",
                            found.database
                        ),
                        source: Some(Box::new(e)),
                    }
                }
                _ => err(e),
            })?;
    }
    let version = if found.tables.is_empty() {
        0
    } else {
        read_version(client, store, "migrating the schema").await?
    };
    if version >= SCHEMA_VERSION {
        // Ours, as new as this build or newer but compatible.
        return Ok(());
    }
    if version > 0 && !options.migrate {
        return Err(StoreError::OlderSchema {
            store: store.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
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
