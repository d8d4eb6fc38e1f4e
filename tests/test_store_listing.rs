//! Listing executions: summaries without contexts, paged by a cursor on
//! `(created_at, id)`, on every store; one row of an unknown status is
//! left out with a warning naming it (the others are listed); a
//! PostgreSQL schema named like an SQL keyword works.

mod support;

use std::sync::Arc;
use std::time::Duration;

use log::{Level, LevelFilter};
use saga_core::store::{
    ExecutionSummary, ListCursor, ListQuery, MemoryStore, NewExecution, SagaStore, SqliteStore,
};
use saga_core::{ExecutionId, ExecutionStatus, SagaEngine};
use support::durable::{Order, Script, saga, scratch_dir};
use support::logs::{RECORDS, install_logger};

/// Runs `n` executions to the end on `store`; their ids.
async fn executions(store: impl SagaStore, n: usize) -> Vec<ExecutionId> {
    let engine = SagaEngine::new(store);
    engine
        .register(saga(&Arc::new(Script::default())))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..n {
        let id = engine.start("order", Order::default()).await.unwrap();
        engine.wait(&id).await.unwrap();
        ids.push(id);
    }
    ids
}

/// The warning about `id` the listing gave.
fn skipped(id: &ExecutionId) -> (Level, String) {
    let tag = format!("execution_id={id} ");
    RECORDS
        .0
        .lock()
        .unwrap()
        .iter()
        .find(|(_, m)| {
            m.starts_with("listing skips an execution of unknown status") && m.contains(&tag)
        })
        .cloned()
        .unwrap_or_else(|| panic!("no warning naming {id}"))
}

#[tokio::test]
async fn an_sqlite_row_of_unknown_status_is_skipped_with_a_warning() {
    install_logger(LevelFilter::Warn);
    let dir = scratch_dir("unknown-status");
    let path = dir.join("sagas.db");
    let ids = executions(SqliteStore::open(&path).unwrap(), 3).await;
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE executions SET status = 'frozen' WHERE id = ?1",
            [ids[1].as_str()],
        )
        .unwrap();
    let store = SqliteStore::open(&path).unwrap();
    let listed: Vec<ExecutionId> = store
        .list(None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, vec![ids[0].clone(), ids[2].clone()]);
    let (level, message) = skipped(&ids[1]);
    assert_eq!(level, Level::Warn);
    assert!(message.contains("status=frozen"), "{message}");
    // Read on its own, the row still says what is wrong with it.
    let err = store.get(&ids[1]).await.unwrap_err();
    assert!(err.to_string().contains("unknown status `frozen`"), "{err}");
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use saga_core::store::{PostgresOptions, PostgresStore};
    use support::pg::{client, fresh_schema, pg_url};

    #[tokio::test]
    async fn a_postgres_row_of_unknown_status_is_skipped_with_a_warning() {
        install_logger(LevelFilter::Warn);
        let schema = fresh_schema("unknown_status");
        let options = PostgresOptions::new().with_schema(schema.clone());
        let store = PostgresStore::connect_with(&pg_url(), options.clone())
            .await
            .unwrap();
        let ids = executions(store, 3).await;
        client(&pg_url())
            .await
            .execute(
                &format!("UPDATE {schema}.executions SET status = 'frozen' WHERE id = $1"),
                &[&ids[0].as_str()],
            )
            .await
            .unwrap();
        let store = PostgresStore::connect_with(&pg_url(), options)
            .await
            .unwrap();
        let listed: Vec<ExecutionId> = store
            .list(None)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(listed, vec![ids[1].clone(), ids[2].clone()]);
        let (level, message) = skipped(&ids[0]);
        assert_eq!(level, Level::Warn);
        assert!(message.contains("status=frozen"), "{message}");
    }

    /// The schema gains the index of unfiltered listings.
    #[tokio::test]
    async fn a_postgres_schema_has_the_listing_index() {
        let schema = fresh_schema("by_created");
        PostgresStore::connect_with(
            &pg_url(),
            PostgresOptions::new().with_schema(schema.clone()),
        )
        .await
        .unwrap();
        let row = client(&pg_url())
            .await
            .query_one(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND indexname = 'executions_by_created'",
                &[&schema],
            )
            .await
            .unwrap();
        let definition: String = row.get(0);
        assert!(
            definition.contains("(created_at, id COLLATE \"C\")"),
            "{definition}"
        );
    }

    #[tokio::test]
    async fn summaries_page_by_cursor_on_postgres() {
        let store = PostgresStore::connect_with(
            &pg_url(),
            PostgresOptions::new().with_schema(fresh_schema("summaries")),
        )
        .await
        .unwrap();
        summaries_contract("postgres", &store).await;
    }

    /// A role that may read every column of the executions but the
    /// context: a listing that read contexts would be refused.
    #[tokio::test]
    async fn a_postgres_listing_reads_no_context() {
        let schema = fresh_schema("no_context");
        let store = PostgresStore::connect_with(
            &pg_url(),
            PostgresOptions::new().with_schema(schema.clone()),
        )
        .await
        .unwrap();
        created(&store, 30, 1024).await;
        let role = format!("{schema}_r");
        client(&pg_url())
            .await
            .batch_execute(&format!(
                "CREATE ROLE {role} LOGIN;
                 GRANT CREATE ON DATABASE postgres TO {role};
                 GRANT USAGE ON SCHEMA {schema} TO {role};
                 GRANT SELECT ON {schema}.leases, {schema}.definitions, {schema}.events,
                    {schema}.saga_schema TO {role};
                 GRANT SELECT (id, saga, fingerprint, status, last_seq, created_at, updated_at,
                    cancel_requested) ON {schema}.executions TO {role};"
            ))
            .await
            .unwrap();
        let url = pg_url().replacen("postgres@", &format!("{role}@"), 1);
        // Connecting checks the schema (`CREATE SCHEMA IF NOT EXISTS` wants
        // the database's CREATE right) and writes nothing: it is current.
        let reader = PostgresStore::connect_with(&url, PostgresOptions::new().with_schema(schema))
            .await
            .unwrap();
        let err = reader.list(None).await.unwrap_err();
        assert!(format!("{err:?}").contains("permission denied"), "{err:?}");
        let summaries = reader.list_summaries(ListQuery::new()).await.unwrap();
        assert_eq!(summaries.len(), 30);
    }

    #[tokio::test]
    async fn schemas_named_like_sql_keywords_work() {
        for schema in ["user", "select"] {
            let store =
                PostgresStore::connect_with(&pg_url(), PostgresOptions::new().with_schema(schema))
                    .await
                    .unwrap_or_else(|e| panic!("schema `{schema}`: {e}"));
            let ids = executions(store.clone(), 1).await;
            let listed = store.list(None).await.unwrap();
            assert!(listed.iter().any(|r| r.id == ids[0]), "schema `{schema}`");
            // The tables are in that schema, not in another on the path.
            let found: i64 = client(&pg_url())
                .await
                .query_one(
                    &format!("SELECT count(*) FROM \"{schema}\".executions WHERE id = $1"),
                    &[&ids[0].as_str()],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(found, 1, "schema `{schema}`");
        }
    }
}

/// `n` executions created straight in `store`, each with a context of
/// `size` bytes; their ids in creation order (`e00`, `e01`, ...).
async fn created(store: &dyn SagaStore, n: usize, size: usize) -> Vec<ExecutionId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = ExecutionId::new(format!("e{i:02}"));
        let context = format!("\"{}\"", "x".repeat(size));
        let new = NewExecution {
            id: id.clone(),
            saga: "order".into(),
            fingerprint: "f".into(),
            context,
            events: Vec::new(),
        };
        store
            .create(new, "lister", Duration::from_secs(60))
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

/// Pages of `size` through every summary of `query`, following cursors
/// (through their text form, as a command line would).
async fn all_pages(store: &dyn SagaStore, query: ListQuery, size: usize) -> Vec<ExecutionSummary> {
    let mut all = Vec::new();
    let mut query = query.with_limit(size);
    loop {
        let page = store.list_summaries(query.clone()).await.unwrap();
        assert!(page.len() <= size);
        let Some(last) = page.last() else { break };
        let cursor: ListCursor = last.cursor().to_string().parse().unwrap();
        query = query.with_after(cursor);
        let full = page.len() == size;
        all.extend(page);
        if !full {
            break;
        }
    }
    all
}

/// The contract of summaries, paging and `context` on `store` (empty).
async fn summaries_contract(name: &str, store: &dyn SagaStore) {
    let ids = created(store, 30, 64 * 1024).await;
    let listed = all_pages(store, ListQuery::new(), 7).await;
    let mut expected = store.list(None).await.unwrap();
    expected
        .sort_by(|a, b| (a.created_at_ms, a.id.as_str()).cmp(&(b.created_at_ms, b.id.as_str())));
    let expected: Vec<ExecutionSummary> =
        expected.into_iter().map(ExecutionSummary::from).collect();
    assert_eq!(
        listed, expected,
        "{name}: pages of 7 give every execution once, in order"
    );
    assert_eq!(listed.len(), 30, "{name}");
    // A status filter pages too.
    store.request_cancel(&ids[3]).await.unwrap();
    let running = all_pages(
        store,
        ListQuery::new().with_status(ExecutionStatus::Running),
        4,
    )
    .await;
    assert_eq!(running.len(), 30, "{name}");
    let none = store
        .list_summaries(ListQuery::new().with_status(ExecutionStatus::Stuck))
        .await
        .unwrap();
    assert!(none.is_empty(), "{name}");
    // After the last one: nothing.
    let last = listed.last().unwrap().cursor();
    let after_last = store
        .list_summaries(ListQuery::new().with_after(last))
        .await
        .unwrap();
    assert!(after_last.is_empty(), "{name}");
    // One context, read on its own.
    let context = store.context(&ids[5]).await.unwrap().unwrap();
    assert_eq!(context.len(), 64 * 1024 + 2, "{name}");
    assert_eq!(
        store.context(&ExecutionId::new("nope")).await.unwrap(),
        None,
        "{name}"
    );
}

#[tokio::test]
async fn summaries_page_by_cursor_on_the_memory_and_sqlite_stores() {
    summaries_contract("memory", &MemoryStore::new()).await;
    let dir = scratch_dir("summaries");
    summaries_contract("sqlite", &SqliteStore::open(dir.join("sagas.db")).unwrap()).await;
}

#[tokio::test]
async fn an_sqlite_listing_reads_no_context() {
    let dir = scratch_dir("no-context");
    let path = dir.join("sagas.db");
    let ids = created(&SqliteStore::open(&path).unwrap(), 30, 1024).await;
    // A context SQLite cannot hand over as text: reading it fails, so a
    // listing that read contexts would fail.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE executions SET context = X'FFFE00' WHERE id = ?1",
            [ids[10].as_str()],
        )
        .unwrap();
    let store = SqliteStore::open(&path).unwrap();
    assert!(store.list(None).await.is_err(), "list reads contexts");
    let summaries = store.list_summaries(ListQuery::new()).await.unwrap();
    assert_eq!(summaries.len(), 30);
}

/// A store written by an older build (schema version 1, without the
/// index) gains the index when it is opened, and a listing of every
/// status walks it in order instead of sorting the table.
#[tokio::test]
async fn an_unfiltered_sqlite_listing_walks_an_index() {
    let dir = scratch_dir("by-created");
    let path = dir.join("store.db");
    std::fs::copy("tests/fixtures/stopped-mid-step/store.db", &path).unwrap();
    let version = |conn: &rusqlite::Connection| -> i64 {
        conn.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    };
    assert_eq!(version(&rusqlite::Connection::open(&path).unwrap()), 1);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store.list_summaries(ListQuery::new()).await.unwrap().len(),
        3
    );
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(version(&conn), 2);
    // The listing's shape (store/sqlite/ops.rs `list_summaries`).
    let plan: Vec<String> = conn
        .prepare(
            "EXPLAIN QUERY PLAN SELECT e.id FROM executions e
             WHERE (?1 IS NULL OR e.status = ?1)
               AND (?2 IS NULL OR (e.created_at, e.id) > (?2, ?3))
             ORDER BY e.created_at, e.id LIMIT ?4",
        )
        .unwrap()
        .query_map(
            rusqlite::params![None::<String>, None::<i64>, None::<String>, 50],
            |row| row.get::<_, String>(3),
        )
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        plan.iter().any(|p| p.contains("executions_by_created")),
        "{plan:?}"
    );
    assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{plan:?}");
}

#[test]
fn a_cursor_is_its_creation_time_and_id() {
    let cursor: ListCursor = "17:order/7:a".parse().unwrap();
    assert_eq!(
        (cursor.created_at_ms, cursor.id.as_str()),
        (17, "order/7:a")
    );
    for bad in ["", "17", "x:order", "17:"] {
        let err = bad.parse::<ListCursor>().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "`{bad}` is not a listing cursor (expected `<created_at_ms>:<id>`, as a listing prints it)"
            )
        );
    }
}
