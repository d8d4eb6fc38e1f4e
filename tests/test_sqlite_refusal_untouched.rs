//! An open of an SQLite store that is refused leaves the store's files as
//! they were: the main file and its `-wal` byte for byte (a refused open
//! must not checkpoint a `-wal` left by a killed process into the file,
//! nor delete it), and its `-shm` in place.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::Connection;
use saga_core::SagaEngine;
use saga_core::store::{SqliteOptions, SqliteStore, StoreError};
use support::durable::{Order, Script, saga, scratch_dir};

fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// A store file holding `n` finished executions, closed.
fn real_store(path: &Path, n: usize) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let engine = SagaEngine::new(SqliteStore::open(path).unwrap());
        let script = Arc::new(Script::default());
        engine.register(saga(&script)).await.unwrap();
        for _ in 0..n {
            let id = engine.start("order", Order::default()).await.unwrap();
            engine.wait(&id).await.or_else(support::ended).unwrap();
        }
    });
}

/// The three files at `path`: their bytes, `None` for a missing one.
fn files(path: &Path) -> [Option<Vec<u8>>; 3] {
    ["", "-wal", "-shm"].map(|suffix| std::fs::read(companion(path, suffix)).ok())
}

/// A store at `dir/name` as a killed process leaves it: its main file, and
/// a `-wal` holding the commits of `sql` (run after a checkpoint) with its
/// `-shm`. Copied while the connection that wrote them is open, so that
/// no close checkpoints them.
fn store_killed_after(dir: &Path, name: &str, sql: &str) -> PathBuf {
    let live = dir.join(format!("{name}-live.db"));
    real_store(&live, 3);
    let conn = Connection::open(&live).unwrap();
    conn.execute_batch(
        "PRAGMA wal_autocheckpoint = 0;
         CREATE TABLE pad (x BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40)
         INSERT INTO pad SELECT randomblob(1000) FROM n;",
    )
    .unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    conn.execute_batch(sql).unwrap();
    let path = dir.join(format!("{name}.db"));
    for suffix in ["", "-wal", "-shm"] {
        std::fs::copy(companion(&live, suffix), companion(&path, suffix)).unwrap();
    }
    drop(conn);
    let wal = std::fs::metadata(companion(&path, "-wal")).unwrap().len();
    assert!(wal > 4096, "{name}: the -wal holds commits ({wal} bytes)");
    path
}

/// Overwrites the last page of the main file with garbage (the `-wal`
/// does not hold it: the damage is the file's).
fn damage_last_page(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let len = bytes.len();
    bytes[len - 4096..].fill(0xA5);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_refused_open_leaves_the_file_and_its_wal_byte_for_byte() {
    let dir = scratch_dir("refusal-untouched");
    let new_commit = "INSERT INTO pad VALUES (randomblob(3000));";
    let cases: Vec<(&str, PathBuf, SqliteOptions)> = vec![
        (
            "damaged",
            {
                let p = store_killed_after(&dir, "damaged", new_commit);
                damage_last_page(&p);
                p
            },
            SqliteOptions::new(),
        ),
        (
            "another application's",
            store_killed_after(
                &dir,
                "foreign",
                "PRAGMA application_id = 1234; INSERT INTO pad VALUES (1);",
            ),
            SqliteOptions::new(),
        ),
        (
            "newer schema",
            store_killed_after(
                &dir,
                "newer",
                "PRAGMA user_version = 99; INSERT INTO pad VALUES (1);",
            ),
            SqliteOptions::new(),
        ),
        (
            "older schema, not to migrate",
            store_killed_after(
                &dir,
                "older",
                "PRAGMA user_version = 1; INSERT INTO pad VALUES (1);",
            ),
            SqliteOptions::new().with_migrate(false),
        ),
        (
            "empty",
            {
                let p = store_killed_after(&dir, "empty", new_commit);
                std::fs::write(&p, b"").unwrap();
                p
            },
            SqliteOptions::new(),
        ),
        (
            "not a database",
            {
                let p = store_killed_after(&dir, "garbage", new_commit);
                std::fs::write(&p, vec![7_u8; 8192]).unwrap();
                p
            },
            SqliteOptions::new(),
        ),
    ];
    for (what, path, options) in cases {
        let before = files(&path);
        let err = SqliteStore::open_with(&path, options).unwrap_err();
        match what {
            "damaged" => assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}"),
            "another application's" => {
                assert!(matches!(err, StoreError::ForeignDatabase { .. }), "{err:?}")
            }
            "newer schema" => assert!(matches!(err, StoreError::NewerSchema { .. }), "{err:?}"),
            "older schema, not to migrate" => {
                assert!(matches!(err, StoreError::OlderSchema { .. }), "{err:?}")
            }
            "empty" => assert!(matches!(err, StoreError::Empty { .. }), "{err:?}"),
            _ => assert!(matches!(err, StoreError::NotADatabase { .. }), "{err:?}"),
        }
        let after = files(&path);
        assert!(
            before[0] == after[0],
            "{what}: the main file changed under a refused open ({err})"
        );
        assert!(
            before[1] == after[1],
            "{what}: the -wal changed under a refused open ({} bytes before, {:?} after; {err})",
            before[1].as_ref().map_or(0, Vec::len),
            after[1].as_ref().map(Vec::len)
        );
        assert!(
            after[2].is_some(),
            "{what}: the -shm is gone after a refused open ({err})"
        );
        // A read-only open leaves them too, refused (or, for the damaged
        // file, which it does not check, opened and closed).
        let read_only = SqliteStore::open_read_only(&path).map(drop);
        assert_eq!(
            read_only.is_ok(),
            what == "damaged",
            "{what}: {read_only:?}"
        );
        let again = files(&path);
        assert!(
            before[0] == again[0] && before[1] == again[1] && again[2].is_some(),
            "{what}: a read-only open changed the files ({read_only:?})"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A refused file with no `-wal` or `-shm` beside it (a store closed
/// cleanly) is left without them: the ones SQLite made for the checks go.
#[test]
fn a_refused_open_of_a_closed_store_leaves_no_wal_behind() {
    let dir = scratch_dir("refusal-no-wal");
    let path = dir.join("newer.db");
    real_store(&path, 1);
    Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99;")
        .unwrap();
    let before = files(&path);
    assert!(before[1].is_none() && before[2].is_none());
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::NewerSchema { .. }), "{err:?}");
    assert!(files(&path) == before, "the files changed: {err}");
    // A read-only connection cannot remove the (empty) `-wal` and `-shm`
    // SQLite makes for it: the file itself is left as it was.
    let err = SqliteStore::open_read_only(&path).unwrap_err();
    assert!(matches!(err, StoreError::NewerSchema { .. }), "{err:?}");
    let after = files(&path);
    assert!(after[0] == before[0], "the file changed: {err}");
    assert!(after[1].as_ref().is_none_or(Vec::is_empty));
    let _ = std::fs::remove_dir_all(&dir);
}
