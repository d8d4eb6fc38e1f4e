//! Listing executions holds up against bad rows and odd names: one row of
//! an unknown status is left out with a warning naming it (the others are
//! listed), and a PostgreSQL schema named like an SQL keyword works.

mod durable_common;
#[cfg(feature = "postgres")]
mod pg_common;

use std::sync::{Arc, Mutex, Once};

use durable_common::{Order, Script, saga, scratch_dir};
use log::{Level, LevelFilter, Log, Metadata, Record};
use saga_core::store::{SagaStore, SqliteStore};
use saga_core::{ExecutionId, SagaEngine};

struct Records(Mutex<Vec<(Level, String)>>);

static RECORDS: Records = Records(Mutex::new(Vec::new()));

impl Log for Records {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        self.0
            .lock()
            .unwrap()
            .push((record.level(), record.args().to_string()));
    }

    fn flush(&self) {}
}

fn install_logger() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::set_logger(&RECORDS).unwrap();
        log::set_max_level(LevelFilter::Warn);
    });
}

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
    install_logger();
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
    use pg_common::{client, fresh_schema, pg_url};
    use saga_core::store::{PostgresOptions, PostgresStore};

    #[tokio::test]
    async fn a_postgres_row_of_unknown_status_is_skipped_with_a_warning() {
        install_logger();
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
