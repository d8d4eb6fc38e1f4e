//! Every store, fresh: memory, SQLite, and PostgreSQL with the `postgres`
//! feature (its server from `SAGA_PG_URL` or `scripts/pg.sh`); and a bare
//! execution to write to one.

use std::sync::Arc;
use std::time::Duration;

use saga_core::ExecutionId;
use saga_core::store::{Created, Lease, MemoryStore, NewExecution, SagaStore, SqliteStore};

#[cfg(feature = "postgres")]
use super::pg;

/// Every store, fresh, for test `test`, each with its name.
pub async fn every_store(test: &str) -> Vec<(&'static str, Arc<dyn SagaStore>)> {
    let dir = super::durable::scratch_dir(test);
    #[allow(unused_mut)]
    let mut stores = vec![
        ("memory", Arc::new(MemoryStore::new()) as Arc<dyn SagaStore>),
        (
            "sqlite",
            Arc::new(SqliteStore::open(dir.join("sagas.db")).unwrap()) as Arc<dyn SagaStore>,
        ),
    ];
    #[cfg(feature = "postgres")]
    {
        use saga_core::store::{PostgresOptions, PostgresStore};
        let store = PostgresStore::connect_with(
            &pg::pg_url(),
            PostgresOptions::new().with_schema(pg::fresh_schema(test)),
        )
        .await
        .unwrap();
        stores.push(("postgres", Arc::new(store) as Arc<dyn SagaStore>));
    }
    stores
}

/// A new execution `id` of saga `order`, definition `f`, no events.
pub fn new_execution(id: &str) -> NewExecution {
    NewExecution {
        id: ExecutionId::new(id),
        saga: "order".into(),
        fingerprint: "f".into(),
        context: "{}".into(),
        events: Vec::new(),
    }
}

/// Creates [`new_execution`] `id` in `store` for owner `a`, with a 60 s
/// lease: its id and lease.
pub async fn created(store: &dyn SagaStore, id: &str) -> (ExecutionId, Lease) {
    let created = store
        .create(new_execution(id), "a", Duration::from_secs(60))
        .await
        .unwrap();
    let Created::New(lease) = created else {
        panic!("{id}: not created")
    };
    (ExecutionId::new(id), lease)
}
