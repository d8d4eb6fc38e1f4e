//! Bad input to the SQLite store: each gives a clear error naming the file
//! and what to do, and the file keeps every byte it had.

mod support;

use std::path::Path;
use std::sync::Arc;

use saga_core::SagaEngine;
use saga_core::store::{SqliteStore, StoreError};
use support::durable::{Order, Script, saga, scratch_dir};

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// A store file holding a few finished executions, closed.
fn real_store(path: &Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let engine = SagaEngine::new(SqliteStore::open(path).unwrap());
        let script = Arc::new(Script::default());
        engine.register(saga(&script)).await.unwrap();
        for _ in 0..40 {
            let id = engine.start("order", Order::default()).await.unwrap();
            engine.wait(&id).await.or_else(support::ended).unwrap();
        }
    });
    // The engine (and its store, which its finished tasks shared) is
    // dropped: the WAL is checkpointed into the file and removed.
    drop(rt);
    assert!(!path.with_extension("db-wal").exists());
}

fn open_err(path: &Path) -> StoreError {
    SqliteStore::open(path).unwrap_err()
}

#[test]
fn a_file_of_garbage_bytes_is_not_a_database_and_stays_as_it_was() {
    let dir = scratch_dir("garbage");
    let path = dir.join("sagas.db");
    let garbage: Vec<u8> = (0..4096_u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();
    let err = open_err(&path);
    assert!(matches!(err, StoreError::NotADatabase { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "`{}` is not an SQLite database (its first bytes are not the SQLite header); it was left untouched: point the store at another file, or restore this one from a backup",
            path.display()
        )
    );
    assert_eq!(bytes(&path), garbage);
}

#[test]
fn a_truncated_store_is_reported_damaged_and_stays_as_it_was() {
    let dir = scratch_dir("truncated");
    let path = dir.join("sagas.db");
    real_store(&path);
    let full = bytes(&path);
    assert!(full.len() > 8 * 4096, "a store of several pages");
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();
    let before = bytes(&path);
    let err = open_err(&path);
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("`{}` is damaged (truncated: ", path.display())),
        "{message}"
    );
    assert!(
        message.contains("it was left untouched: restore it from a backup"),
        "{message}"
    );
    assert_eq!(bytes(&path), before);
}

#[test]
fn an_sqlite_file_of_another_application_is_refused_and_stays_as_it_was() {
    let dir = scratch_dir("foreign");
    let path = dir.join("shop.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);
             INSERT INTO customers (name) VALUES ('ada'), ('grace');",
        )
        .unwrap();
    }
    let before = bytes(&path);
    let err = open_err(&path);
    assert!(matches!(err, StoreError::ForeignDatabase { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "`{}` is an SQLite database of another application (application id 0x0, tables: customers); it was left untouched: point the store at a file of its own",
            path.display()
        )
    );
    assert_eq!(bytes(&path), before);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let names: i64 = conn
        .query_row("SELECT count(*) FROM customers", [], |r| r.get(0))
        .unwrap();
    assert_eq!(names, 2);
}

#[test]
fn a_store_of_a_newer_schema_is_refused_and_stays_as_it_was() {
    let dir = scratch_dir("newer");
    let path = dir.join("sagas.db");
    real_store(&path);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let before = bytes(&path);
    let err = open_err(&path);
    assert_eq!(
        err.to_string(),
        format!(
            "`{}` has schema version 99, newer than this build understands (2); it was left untouched: upgrade saga-core to the version that wrote it",
            path.display()
        )
    );
    assert_eq!(bytes(&path), before);
}

#[test]
fn a_read_only_store_is_refused_and_stays_as_it_was() {
    let dir = scratch_dir("readonly");
    let path = dir.join("sagas.db");
    real_store(&path);
    let before = bytes(&path);
    let mut permissions = std::fs::metadata(&path).unwrap().permissions();
    permissions.set_readonly(true);
    std::fs::set_permissions(&path, permissions.clone()).unwrap();
    let err = open_err(&path);
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "`{}` is read-only (the file's permissions forbid writing); make it and its directory writable (e.g. `chmod u+w`), or copy it somewhere writable",
            path.display()
        )
    );
    assert_eq!(bytes(&path), before);
    #[allow(clippy::permissions_set_readonly_false)]
    permissions.set_readonly(false);
    std::fs::set_permissions(&path, permissions).unwrap();
    // Writable again, it opens with everything in it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let engine = SagaEngine::new(SqliteStore::open(&path).unwrap());
        assert_eq!(engine.list(None).await.unwrap().len(), 40);
    });
}

#[test]
fn a_new_store_is_created_and_an_existing_one_reopens_with_its_executions() {
    let dir = scratch_dir("reopen");
    let path = dir.join("sagas.db");
    real_store(&path);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    let app: i64 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .unwrap();
    assert_eq!((version, app), (2, 0x5341_4741));
    drop(conn);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let engine = SagaEngine::new(SqliteStore::open(&path).unwrap());
        let all = engine.list(None).await.unwrap();
        assert_eq!(all.len(), 40);
        assert!(
            all.iter()
                .all(|r| r.status == saga_core::ExecutionStatus::Completed)
        );
    });
}

/// A checkpoint cut off by a full disk leaves the file shorter than its
/// header's page count while the pages missing from it are in its `-wal`:
/// SQLite reads it whole, so it is no damage. The files are copied while
/// the store is open (its recent pages in the `-wal`, as a crash leaves
/// them), then the copy's header is made to count the pages its `-wal`
/// holds, as the checkpoint's copy of the first page left it.
#[test]
fn a_store_cut_off_by_a_checkpoint_opens_from_its_wal() {
    let dir = scratch_dir("cut-off-checkpoint");
    let path = dir.join("sagas.db");
    let copy = dir.join("copy.db");
    let copy_wal = dir.join("copy.db-wal");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let engine = SagaEngine::new(SqliteStore::open(&path).unwrap());
        let script = Arc::new(Script::default());
        engine.register(saga(&script)).await.unwrap();
        for _ in 0..10 {
            let id = engine.start("order", Order::default()).await.unwrap();
            engine.wait(&id).await.or_else(support::ended).unwrap();
        }
        let pages: u32 = {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.pragma_query_value(None, "page_count", |r| r.get(0))
                .unwrap()
        };
        std::fs::copy(&path, &copy).unwrap();
        std::fs::copy(path.with_extension("db-wal"), &copy_wal).unwrap();
        drop(engine);
        let mut main = bytes(&copy);
        let page_size = u64::from(u16::from_be_bytes([main[16], main[17]]));
        assert!(
            (main.len() as u64) < u64::from(pages) * page_size,
            "the file ({} bytes) holds fewer than the store's {pages} pages",
            main.len()
        );
        main[28..32].copy_from_slice(&pages.to_be_bytes());
        let counter: [u8; 4] = main[24..28].try_into().unwrap();
        main[92..96].copy_from_slice(&counter);
        std::fs::write(&copy, &main).unwrap();
    });
    let store = SqliteStore::open(&copy).unwrap();
    rt.block_on(async {
        let engine = SagaEngine::new(store);
        let all = engine.list(None).await.unwrap();
        assert_eq!(all.len(), 10);
        assert!(
            all.iter()
                .all(|r| r.status == saga_core::ExecutionStatus::Completed)
        );
    });
}
