//! What opening an SQLite store does to files: a file that is not a store
//! of ours (no application id, another one, or empty) is refused byte for
//! byte; a new store is private to its owner; a read-only opener writes
//! nothing and works where it may not write.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use saga_core::store::{SagaStore, SqliteStore, StoreError};
use saga_core::{ExecutionId, SagaEngine};
use support::durable::{Order, Script, saga, scratch_dir};

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn companion(path: &Path, suffix: &str) -> std::path::PathBuf {
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

fn umask() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Umask:"))
        .unwrap()
        .to_owned()
}

#[test]
fn an_sqlite_file_without_an_application_id_is_refused_byte_for_byte() {
    let dir = scratch_dir("no-app-id");
    // Another application's file with no tables yet, only its version.
    let none = dir.join("none.db");
    rusqlite::Connection::open(&none)
        .unwrap()
        .execute_batch("PRAGMA user_version = 7; CREATE TABLE t (x); DROP TABLE t;")
        .unwrap();
    let other = dir.join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("PRAGMA application_id = 1234; PRAGMA user_version = 3;")
        .unwrap();
    for (path, id) in [(&none, "0x0"), (&other, "0x4d2")] {
        let before = bytes(path);
        let err = SqliteStore::open(path).unwrap_err();
        assert!(matches!(err, StoreError::ForeignDatabase { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "`{}` is an SQLite database of another application (application id {id}, tables: none); it was left untouched: point the store at a file of its own",
                path.display()
            )
        );
        assert_eq!(bytes(path), before, "{}", path.display());
        assert!(!companion(path, "-wal").exists());
        // And again: the first refusal changed nothing a second one sees.
        let again = SqliteStore::open(path).unwrap_err();
        assert!(
            matches!(again, StoreError::ForeignDatabase { .. }),
            "{again:?}"
        );
    }
}

/// A file of another application with tables is refused naming them, by a
/// read-only open as by one to write, and left byte for byte.
#[test]
fn another_applications_tables_are_named_by_both_opens() {
    let dir = scratch_dir("foreign-tables");
    let path = dir.join("app.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE users (id); CREATE TABLE orders (id);")
        .unwrap();
    let before = bytes(&path);
    let expected = format!(
        "`{}` is an SQLite database of another application (application id 0x0, tables: orders, users); it was left untouched: point the store at a file of its own",
        path.display()
    );
    let err = SqliteStore::open(&path).unwrap_err();
    assert_eq!(err.to_string(), expected);
    let err = SqliteStore::open_read_only(&path).unwrap_err();
    assert_eq!(err.to_string(), expected);
    assert_eq!(bytes(&path), before);
}

#[test]
fn an_empty_file_is_refused_and_stays_empty() {
    let dir = scratch_dir("empty");
    let path = dir.join("x.db");
    std::fs::write(&path, b"").unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Empty { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "`{}` is empty: delete it to start a new store",
            path.display()
        )
    );
    assert_eq!(bytes(&path), b"");
    let err = SqliteStore::open_read_only(&path).unwrap_err();
    assert!(matches!(err, StoreError::Empty { .. }), "{err:?}");
}

#[test]
fn a_new_store_is_private_to_its_owner_and_an_existing_mode_is_kept() {
    let dir = scratch_dir("modes");
    let path = dir.join("sagas.db");
    let umask_before = umask();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let engine = SagaEngine::new(SqliteStore::open(&path).unwrap());
        let script = Arc::new(Script::default());
        engine.register(saga(&script)).await.unwrap();
        let id = engine.start("order", Order::default()).await.unwrap();
        engine.wait(&id).await.or_else(support::ended).unwrap();
        // Open: the database and both of SQLite's companions.
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&companion(&path, "-wal")), 0o600);
        assert_eq!(mode(&companion(&path, "-shm")), 0o600);
    });
    drop(rt);
    assert_eq!(umask(), umask_before, "the process umask is left alone");
    // A mode the user chose for an existing store is theirs to keep.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let store = SqliteStore::open(&path).unwrap();
    drop(store);
    assert_eq!(mode(&path), 0o640);
}

#[test]
fn a_read_only_open_writes_nothing_and_refuses_writes() {
    let dir = scratch_dir("read-only-root");
    let path = dir.join("sagas.db");
    real_store(&path, 3);
    let before = bytes(&path);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = SqliteStore::open_read_only(&path).unwrap();
        assert_eq!(store.list(None).await.unwrap().len(), 3);
        let err = store
            .request_cancel(&ExecutionId::new("nope"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
    });
    drop(rt);
    assert_eq!(bytes(&path), before);
    // It is not a way to create a store either.
    let missing = dir.join("missing.db");
    assert!(SqliteStore::open_read_only(&missing).is_err());
    assert!(!missing.exists());
}

const NOBODY: u32 = 65534;

/// Runs [`read_only_helper`] as `nobody` on `path`; its output.
fn read_as_nobody(path: &Path) -> String {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(exe)
        .args(["read_only_helper", "--exact", "--ignored", "--nocapture"])
        .env("SAGA_READ_ONLY_PATH", path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

/// Tests run as root, which ignores permission bits; these run the opener
/// as `nobody` (via `runuser`), on a file and directory it may not write.
#[test]
fn a_read_only_open_works_for_a_user_who_cannot_write_the_file_or_its_directory() {
    let dir = scratch_dir("read-only-nobody");
    let path = dir.join("sagas.db");
    real_store(&path, 4);
    assert!(!companion(&path, "-wal").exists(), "no writer");
    std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let before = bytes(&path);

    // No writer: no -wal or -shm, and nobody may create them.
    let out = read_as_nobody(&path);
    assert!(out.contains("listed 4"), "{out}");
    assert!(out.contains("write refused: ReadOnly"), "{out}");
    assert_eq!(bytes(&path), before);

    // A live writer (root) holds the store open: its -wal and -shm exist
    // (owned by the file's owner, with the file's mode), and the reader
    // sees its committed writes.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let engine = rt.block_on(async {
        let engine = SagaEngine::new(SqliteStore::open(&path).unwrap());
        let script = Arc::new(Script::default());
        engine.register(saga(&script)).await.unwrap();
        let id = engine.start("order", Order::default()).await.unwrap();
        engine.wait(&id).await.or_else(support::ended).unwrap();
        engine
    });
    assert!(companion(&path, "-wal").exists());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let out = read_as_nobody(&path);
    assert!(out.contains("listed 5"), "{out}");
    assert!(out.contains("write refused: ReadOnly"), "{out}");
    drop(engine);
    drop(rt);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Not a test of its own: the body [`read_as_nobody`] runs as another
/// user. Prints what it could read and that its write was refused.
#[test]
#[ignore = "run as another user by the read-only tests"]
fn read_only_helper() {
    let Some(path) = std::env::var_os("SAGA_READ_ONLY_PATH") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = SqliteStore::open_read_only(&path).unwrap();
        println!("listed {}", store.list(None).await.unwrap().len());
        match store.request_cancel(&ExecutionId::new("x")).await {
            Err(StoreError::ReadOnly { .. }) => println!("write refused: ReadOnly"),
            other => println!("write not refused: {other:?}"),
        }
    });
}

/// Runs [`another_process_helper`] on `path`: another process opening the
/// file with SQLite and closing it, as an operator's `sqlite3` shell does.
/// Its output.
fn read_as_another_process(path: &Path) -> String {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([
            "another_process_helper",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("SAGA_ANOTHER_PROCESS_PATH", path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    text
}

/// Not a test of its own: the body [`read_as_another_process`] runs.
/// Prints how many executions a plain SQLite connection sees.
#[test]
#[ignore = "run as another process by the second-open test"]
fn another_process_helper() {
    let Some(path) = std::env::var_os("SAGA_ANOTHER_PROCESS_PATH") else {
        return;
    };
    let conn = rusqlite::Connection::open(path).unwrap();
    let count: i64 = conn
        .query_row("SELECT count(*) FROM executions", [], |row| row.get(0))
        .unwrap();
    println!("executions {count}");
}

/// A store opened again in the same process (to write, or to read) leaves
/// the locks of the store open on the file alone. Closing any descriptor
/// of a file drops every POSIX lock the process holds on it: another
/// process that opened and closed the file then believed itself its last
/// user and deleted the write-ahead log the live store went on writing to,
/// so later commits were seen by no one else and lost in a crash.
#[test]
fn a_second_open_in_the_process_keeps_the_live_stores_log() {
    for second in ["read-write", "read-only"] {
        let dir = scratch_dir(&format!("second-open-{second}"));
        let path = dir.join("sagas.db");
        let rt = tokio::runtime::Runtime::new().unwrap();
        let script = Arc::new(Script::default());
        let engine = rt.block_on(async {
            let engine = SagaEngine::new(SqliteStore::open(&path).unwrap());
            engine.register(saga(&script)).await.unwrap();
            engine
        });
        let run_one = || {
            rt.block_on(async {
                let id = engine.start("order", Order::default()).await.unwrap();
                engine.wait(&id).await.or_else(support::ended).unwrap();
            });
        };
        run_one();
        if second == "read-write" {
            drop(SqliteStore::open(&path).unwrap());
        } else {
            drop(SqliteStore::open_read_only(&path).unwrap());
        }
        let out = read_as_another_process(&path);
        assert!(out.contains("executions 1"), "{second}: {out}");
        assert!(
            companion(&path, "-wal").exists(),
            "{second}: the live store's write-ahead log was deleted"
        );
        run_one();
        let out = read_as_another_process(&path);
        assert!(out.contains("executions 2"), "{second}: {out}");
        drop(engine);
    }
}

/// A store file deleted (or moved away) while its process ran leaves its
/// `-wal` behind after a crash, holding the last writes: opening the path
/// again must not take it for a new store (a new file beside that `-wal`
/// would have SQLite drop it). It is refused, naming both files, and
/// nothing is created or touched; once the `-wal` is moved away, a new
/// store is created.
#[test]
fn a_missing_store_file_beside_its_wal_is_refused_and_nothing_is_created() {
    let dir = scratch_dir("orphaned-wal");
    let path = dir.join("sagas.db");
    let wal = companion(&path, "-wal");
    let shm = companion(&path, "-shm");
    let saved = dir.join("saved-wal");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let engine = SagaEngine::new(SqliteStore::open(&path).unwrap());
        let script = Arc::new(Script::default());
        engine.register(saga(&script)).await.unwrap();
        for _ in 0..3 {
            let id = engine.start("order", Order::default()).await.unwrap();
            engine.wait(&id).await.or_else(support::ended).unwrap();
        }
        // As a crash leaves it: the `-wal` as the open store wrote it.
        std::fs::copy(&wal, &saved).unwrap();
    });
    drop(rt);
    assert!(!wal.exists(), "a closed store's -wal is removed");
    std::fs::remove_file(&path).unwrap();
    std::fs::copy(&saved, &wal).unwrap();
    let kept = bytes(&wal);
    assert!(!kept.is_empty());
    for read_only in [false, true] {
        let err = if read_only {
            SqliteStore::open_read_only(&path).unwrap_err()
        } else {
            SqliteStore::open(&path).unwrap_err()
        };
        assert!(
            matches!(err, StoreError::FileGone { .. }),
            "read-only {read_only}: {err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains(&format!("`{}`", path.display()))
                && message.contains(&format!("`{}`", wal.display())),
            "read-only {read_only}: {message}"
        );
        assert!(
            message.contains("the store file was deleted or moved")
                && message.contains("its last writes may be in its `-wal`"),
            "read-only {read_only}: {message}"
        );
        assert!(!path.exists(), "read-only {read_only}: a store was created");
        assert_eq!(bytes(&wal), kept, "read-only {read_only}");
        assert!(!shm.exists(), "read-only {read_only}: a -shm was created");
    }
    // A `-shm` left alone (an empty `-wal`) is a store's trace too.
    std::fs::write(&wal, b"").unwrap();
    std::fs::write(&shm, vec![0_u8; 32 * 1024]).unwrap();
    let message = SqliteStore::open(&path).unwrap_err().to_string();
    assert!(
        message.contains(&format!("`{}`", shm.display())),
        "{message}"
    );
    assert!(!path.exists());
    // The traces moved away, the path is free for a new store.
    std::fs::remove_file(&wal).unwrap();
    std::fs::remove_file(&shm).unwrap();
    drop(SqliteStore::open(&path).unwrap());
    assert!(path.exists());
}

/// A store file deleted (or replaced by another file) under a running
/// process: its writes would go to a file no one else sees, lost when the
/// process exits. The store notices within about a second (it looks at
/// most once a second) and refuses every write from then on.
#[test]
fn a_store_file_deleted_or_replaced_while_open_refuses_every_write_after() {
    for how in ["deleted", "replaced"] {
        let dir = scratch_dir(&format!("gone-while-open-{how}"));
        let path = dir.join("sagas.db");
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let engine = SagaEngine::new(SqliteStore::open(&path).unwrap());
            let script = Arc::new(Script::default());
            engine.register(saga(&script)).await.unwrap();
            let id = engine.start("order", Order::default()).await.unwrap();
            engine.wait(&id).await.or_else(support::ended).unwrap();
            if how == "deleted" {
                std::fs::remove_file(&path).unwrap();
            } else {
                let other = dir.join("other.db");
                std::fs::copy(&path, &other).unwrap();
                std::fs::rename(&other, &path).unwrap();
            }
            let gone = std::time::Instant::now();
            let start = || {
                let engine = engine.clone();
                async move {
                    tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        engine.start("order", Order::default()),
                    )
                    .await
                    .expect("a write hung")
                }
            };
            let error = loop {
                assert!(
                    gone.elapsed() < std::time::Duration::from_secs(3),
                    "{how}: writes still succeed 3 s after"
                );
                match start().await {
                    Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                    Err(error) => break error,
                }
            };
            // At most a second between looks, and the writes' own time
            // on a loaded machine.
            assert!(
                gone.elapsed() < std::time::Duration::from_secs(2),
                "{how}: refused only after {:?}",
                gone.elapsed()
            );
            assert!(
                matches!(
                    error,
                    saga_core::EngineError::Store(StoreError::FileGone { .. })
                ),
                "{how}: {error:?}"
            );
            let message = error.to_string();
            assert!(
                message.contains(&format!("`{}`", path.display()))
                    && message.contains("was deleted or replaced while this process had it open")
                    && message.contains("restart the process"),
                "{how}: {message}"
            );
            for _ in 0..3 {
                let again = start().await.unwrap_err().to_string();
                assert_eq!(again, message, "{how}");
            }
        });
    }
}

/// A new file is told once, "sqlite store created" with its schema
/// version, and a 0.1 file once, "sqlite store migrated" from 1 (before:
/// a record per migration step, "migrated" for a new file too, written
/// before the commit); a current file is told nothing.
#[test]
fn a_new_or_migrated_store_is_logged_once() {
    support::logs::install_logger(log::LevelFilter::Info);
    let dir = scratch_dir("migration-records");
    let messages = |path: &Path| -> Vec<(String, Option<String>, Option<String>)> {
        support::logs::entries_where("path", &path.display().to_string())
            .into_iter()
            .map(|e| {
                let field = |key| e.field(key).map(str::to_owned);
                (e.message.clone(), field("from"), field("version"))
            })
            .collect()
    };
    let fresh = dir.join("fresh.db");
    drop(SqliteStore::open(&fresh).unwrap());
    drop(SqliteStore::open(&fresh).unwrap());
    assert_eq!(
        messages(&fresh),
        [(
            "sqlite store created".to_owned(),
            None,
            Some("2".to_owned())
        )]
    );
    let old = dir.join("old.db");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v0.1/store.db"),
        &old,
    )
    .unwrap();
    drop(SqliteStore::open(&old).unwrap());
    assert_eq!(
        messages(&old),
        [(
            "sqlite store migrated".to_owned(),
            Some("1".to_owned()),
            Some("2".to_owned())
        )]
    );
}
