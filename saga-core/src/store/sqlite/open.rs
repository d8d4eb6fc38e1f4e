//! Opening an SQLite store file: checks before anything is written, the
//! schema and its migrations.

use std::fs::File;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::describe;
use super::options::{SqliteOptions, Synchronous};
use crate::store::{StoreError, StoreResult};

/// `PRAGMA application_id` of our files: "SAGA" in ASCII. A file with
/// another id belongs to another application and is never touched.
pub(super) const APPLICATION_ID: i64 = 0x5341_4741;

/// The migrations, in order: `MIGRATIONS[n]` takes the schema from version
/// `n` to `n + 1`. The file's `PRAGMA user_version` is its version.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: definitions, executions, their logs and leases.
    "CREATE TABLE definitions (
        fingerprint TEXT PRIMARY KEY,
        saga TEXT NOT NULL,
        shape TEXT NOT NULL,
        registered_at INTEGER NOT NULL
    );
    CREATE TABLE executions (
        id TEXT PRIMARY KEY,
        saga TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        status TEXT NOT NULL,
        context TEXT NOT NULL,
        last_seq INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        cancel_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX executions_by_status ON executions (status, created_at);
    CREATE TABLE events (
        execution_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        at INTEGER NOT NULL,
        kind TEXT NOT NULL,
        step INTEGER,
        attempt INTEGER NOT NULL,
        output TEXT,
        context TEXT,
        error TEXT,
        outcome_unknown INTEGER NOT NULL,
        will_retry INTEGER NOT NULL,
        PRIMARY KEY (execution_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE leases (
        execution_id TEXT PRIMARY KEY,
        owner TEXT,
        token INTEGER NOT NULL,
        expires_at INTEGER
    ) WITHOUT ROWID;",
    // 2 (0.2.0): listings of every status page in `(created_at, id)`
    // order (`saga list` with no `--status`) without sorting the whole
    // table; an event's detail (a failure's cause chain and permanent
    // mark, a run's outcome), JSON, NULL in events written before.
    "CREATE INDEX executions_by_created ON executions (created_at, id);
    ALTER TABLE events ADD COLUMN detail TEXT;",
];

/// The newest schema version this build knows.
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The `-wal` is checkpointed into the file once it holds this many
/// pages (`PRAGMA wal_autocheckpoint`; SQLite's default is 1000, about
/// 4 MB of 4 KB pages): 1 MB, so that a store on a small disk does not
/// lose several megabytes to its `-wal`.
pub(super) const WAL_CHECKPOINT_PAGES: i64 = 256;

/// The size a `-wal` is cut back to once a checkpoint let SQLite start
/// it over (`PRAGMA journal_size_limit`, bytes; SQLite's default keeps
/// it at its largest for good). A checkpoint held back (by a long read)
/// or a large write lets it grow past this size for a while.
pub(super) const WAL_SIZE_LIMIT: i64 = 1 << 20;

/// What an opener means to do with the file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// Read and write it (and migrate it, unless told not to).
    ReadWrite,
    /// Only read it.
    ReadOnly,
}

/// Creates the file at `path` if it is missing, readable and writable by
/// its owner only, before SQLite opens it (SQLite gives its `-wal` and
/// `-shm` files the database file's mode). `Ok(true)` if this call created
/// it; `Ok(false)` if it existed. The process umask is left alone, and an
/// existing file's mode is never changed.
pub(super) fn create_file(path: &Path) -> StoreResult<bool> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    // Opened and closed under the kept descriptors' lock: see `kept_files`.
    let created = {
        let _kept = kept_files();
        options.open(path).map(drop)
    };
    match created {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(StoreError::ReadOnly {
            path: path.to_path_buf(),
            detail: format!("the file cannot be created in its directory: {e}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem => Err(StoreError::ReadOnly {
            path: path.to_path_buf(),
            detail: format!("the file cannot be created: {e}; {READ_ONLY_FS}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::StorageFull => Err(StoreError::Backend {
            store: describe(path),
            what: "creating the file".to_owned(),
            source: format!("{e}; {FULL_AT_OPEN}").into(),
        }),
        Err(e) => Err(StoreError::Backend {
            store: describe(path),
            what: "creating the file".to_owned(),
            source: Box::new(e),
        }),
    }
}

/// What to do about a disk found full while opening: nothing retries an
/// open.
const FULL_AT_OPEN: &str = "the disk holding the store is full: free space on it, then open the store again (start the service again)";

/// What to do about a file on a filesystem mounted read-only.
const READ_ONLY_FS: &str = "its filesystem is mounted read-only (`mount` shows `ro` for it), so `chmod` cannot help: remount it read-write once the disk is checked (Linux remounts a failing disk read-only), or copy the store somewhere writable";

/// How much room [`disk_state`] looks for.
const ROOM: usize = 64 * 1024;

/// What the disk holding the file at `path` tells of an open that failed
/// with an I/O error: full, mounted read-only, or neither (or not to be
/// told).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Disk {
    /// Less than [`ROOM`] bytes could be written beside the file.
    Full,
    /// Nothing can be created beside the file: a read-only filesystem.
    ReadOnly,
    /// Room, and writable (or not to be told).
    Fine,
}

/// Tells the state of the disk holding `path` by writing (and syncing)
/// [`ROOM`] bytes to a new file beside it, then removing that file: the
/// standard library has no portable call for free space, and the test
/// is the one that matters (SQLite needs room for its `-shm`, 32 KB, and
/// its `-wal`). Only called once an open failed.
pub(super) fn disk_state(path: &Path) -> Disk {
    use std::io::{ErrorKind, Write};
    let probe = companion(path, &format!("-probe-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    let file = match options.open(&probe) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::ReadOnlyFilesystem => return Disk::ReadOnly,
        Err(e) if e.kind() == ErrorKind::StorageFull => return Disk::Full,
        Err(_) => return Disk::Fine,
    };
    let written = (&file)
        .write_all(&[0_u8; ROOM])
        .and_then(|()| file.sync_data());
    drop(file);
    let _ = std::fs::remove_file(&probe);
    match written {
        Err(e) if e.kind() == ErrorKind::StorageFull => Disk::Full,
        _ => Disk::Fine,
    }
}

/// Removes the file at `path` that this open created and could not make
/// into a store (a full disk, say): left empty, it would refuse every
/// later open ([`StoreError::Empty`]). Only while it is still empty (no
/// other opener made it a store meanwhile), with the empty `-wal` or
/// `-journal` SQLite may have left, and the `-shm` once no `-wal` is
/// left (a `-shm` alone would refuse the next open as a file gone).
pub(super) fn remove_if_empty(path: &Path) {
    let empty = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file() && m.len() == 0);
    if !empty(path) {
        return;
    }
    if std::fs::remove_file(path).is_err() {
        return;
    }
    for suffix in ["-wal", "-journal"] {
        let companion = companion(path, suffix);
        if empty(&companion) {
            let _ = std::fs::remove_file(companion);
        }
    }
    if std::fs::symlink_metadata(wal_path(path)).is_err() {
        let _ = std::fs::remove_file(companion(path, "-shm"));
    }
}

/// Refuses a missing file at `path` beside its store's traces: a `-wal`
/// holding anything, or a `-shm`. The file was deleted or moved while a
/// process had it open (and that process was killed): its last writes
/// may be in the `-wal`, which a new store there would drop. Nothing is
/// created or touched.
pub(super) fn refuse_orphaned_wal(path: &Path) -> StoreResult<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        // There, or not to be told: the open goes on and says why.
        _ => return Ok(()),
    }
    let wal = wal_path(path);
    let shm = companion(path, "-shm");
    let found = match std::fs::metadata(&wal) {
        Ok(m) if m.len() > 0 => format!("`{}` ({} bytes)", wal.display(), m.len()),
        _ if std::fs::symlink_metadata(&shm).is_ok() => format!("`{}`", shm.display()),
        _ => return Ok(()),
    };
    Err(StoreError::FileGone {
        path: path.to_path_buf(),
        problem: format!(
            "is missing, but {found} is beside it: the store file was deleted or moved, and its last writes may be in its `-wal`; nothing was created or touched: move the store file back if it was moved; to restore a backup or start a new store, move `{}` and `{}` away first",
            wal.display(),
            shm.display()
        ),
    })
}

/// Whether the file at `path` was written in the last few seconds: a
/// store another process is creating, not yet set up.
pub(super) fn just_written(path: &Path) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|at| at.elapsed().ok())
        .is_some_and(|age| age < std::time::Duration::from_secs(5))
}

/// Checks what can be checked without SQLite in an existing file: it must
/// not be empty, must start with the SQLite header and be as long as the
/// header says (unless a `-wal` beside it holds pages); for writing, it
/// must be writable.
pub(super) fn precheck_file(path: &Path, access: Access) -> StoreResult<()> {
    let metadata = std::fs::metadata(path).map_err(|e| StoreError::Backend {
        store: describe(path),
        what: "reading the file's metadata".to_owned(),
        source: Box::new(e),
    })?;
    if metadata.is_dir() {
        return Err(StoreError::NotADatabase {
            path: path.to_path_buf(),
            detail: "it is a directory".to_owned(),
        });
    }
    let len = metadata.len();
    if len == 0 {
        return Err(StoreError::Empty {
            path: path.to_path_buf(),
        });
    }
    let mut header = [0_u8; 100];
    let read = with_kept_file(path, |file| read_prefix(file, &mut header))
        .map_err(|e| StoreError::Backend {
            store: describe(path),
            what: "opening the file".to_owned(),
            source: Box::new(e),
        })?
        .map_err(|e| StoreError::Backend {
            store: describe(path),
            what: "reading the file's header".to_owned(),
            source: Box::new(e),
        })?;
    if !header.starts_with(b"SQLite format 3\0") {
        return Err(StoreError::NotADatabase {
            path: path.to_path_buf(),
            detail: "its first bytes are not the SQLite header".to_owned(),
        });
    }
    if read < header.len() {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("{len} bytes, shorter than an SQLite header"),
        });
    }
    // Bytes 16-17: page size (1 means 65536); 28-31: pages, valid when the
    // change counter (24-27) equals the version-valid-for number (92-95).
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        n => u64::from(n),
    };
    let pages = u64::from(u32::from_be_bytes([
        header[28], header[29], header[30], header[31],
    ]));
    let size_valid = header[24..28] == header[92..96];
    // Beside a `-wal` holding a frame, the file's length does not bound
    // the database: the last commit in the `-wal` does, and its pages are
    // read from there. A checkpoint cut off (by a full disk) leaves the
    // file shorter than its header's count, while SQLite reads it whole;
    // SQLite's own checks (and the integrity check) still apply.
    let in_wal = wal_holds_a_frame(path, page_size);
    if size_valid && pages > 0 && len < pages.saturating_mul(page_size) && !in_wal {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!(
                "truncated: {len} bytes, but its header says {pages} pages of {page_size} bytes"
            ),
        });
    }
    if access == Access::ReadWrite {
        check_writable(path, &metadata)?;
    }
    Ok(())
}

/// Whether the `-wal` beside `path` is long enough to hold a frame (its
/// header, a frame's header and a page of `page_size` bytes).
fn wal_holds_a_frame(path: &Path, page_size: u64) -> bool {
    std::fs::metadata(wal_path(path)).is_ok_and(|m| m.is_file() && m.len() >= 32 + 24 + page_size)
}

/// Calls `read` with the file at `path`, opened through a descriptor this
/// process keeps open for as long as the file exists.
///
/// Closing any descriptor of a file drops every POSIX lock the process
/// holds on it, SQLite's included: those of a store (or any SQLite
/// connection) open on the same file in this process. Another process's
/// SQLite closing its last connection would then find no other user and
/// delete the write-ahead log the live store goes on writing to: its later
/// commits seen by no one else, and lost in a crash. SQLite keeps the
/// descriptors it closes for the same reason. A file deleted (or renamed
/// over) since is no longer reachable by its path: its descriptor is closed
/// at the next call.
#[cfg(unix)]
fn with_kept_file<T>(path: &Path, read: impl FnOnce(&File) -> T) -> std::io::Result<T> {
    use std::os::unix::fs::MetadataExt;
    let mut kept = kept_files();
    kept.retain(|file| file.metadata().is_ok_and(|m| m.nlink() > 0));
    let wanted = std::fs::metadata(path)?;
    let same = |file: &File| {
        file.metadata()
            .is_ok_and(|m| m.dev() == wanted.dev() && m.ino() == wanted.ino())
    };
    if let Some(file) = kept.iter().find(|file| same(file)) {
        return Ok(read(file));
    }
    let file = File::open(path)?;
    let value = read(&file);
    kept.push(file);
    Ok(value)
}

/// The descriptors [`with_kept_file`] keeps (none but on Unix), locked:
/// [`create_file`] also opens and closes a new file under this lock, so
/// that its close cannot come after a concurrent opener's SQLite locked
/// the file.
fn kept_files() -> MutexGuard<'static, Vec<File>> {
    static KEPT: Mutex<Vec<File>> = Mutex::new(Vec::new());
    KEPT.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Elsewhere no lock is dropped by a close: the file is opened for the
/// call.
#[cfg(not(unix))]
fn with_kept_file<T>(path: &Path, read: impl FnOnce(&File) -> T) -> std::io::Result<T> {
    Ok(read(&File::open(path)?))
}

/// Reads the first bytes of `file` into `buf`, from its start whatever its
/// offset; returns how many (fewer at its end).
fn read_prefix(file: &File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut read = 0;
    while read < buf.len() {
        #[cfg(unix)]
        let n = std::os::unix::fs::FileExt::read_at(file, &mut buf[read..], read as u64);
        #[cfg(not(unix))]
        let n = std::io::Read::read(&mut &*file, &mut buf[read..]);
        match n {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(read)
}

pub(super) fn check_writable(path: &Path, metadata: &std::fs::Metadata) -> StoreResult<()> {
    if metadata.permissions().readonly() {
        return Err(StoreError::ReadOnly {
            path: path.to_path_buf(),
            detail: "the file's permissions forbid writing".to_owned(),
        });
    }
    Ok(())
}

/// Turns an SQLite error met while opening into the error users can act on.
pub(super) fn open_error(path: &Path, what: &str, error: rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => StoreError::NotADatabase {
            path: path.to_path_buf(),
            detail: error.to_string(),
        },
        Some(ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: error.to_string(),
        },
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            StoreError::ReadOnly {
                path: path.to_path_buf(),
                detail: match disk_state(path) {
                    Disk::ReadOnly => format!("{error}; {READ_ONLY_FS}"),
                    _ => error.to_string(),
                },
            }
        }
        // SQLite's own words for it ("database or disk is full") would
        // tell the operator that the store carries on by itself once
        // there is room, as a running store does: an open does not.
        Some(ErrorCode::DiskFull) => StoreError::Backend {
            store: describe(path),
            what: what.to_owned(),
            source: format!("SQLITE_FULL; {FULL_AT_OPEN}").into(),
        },
        // A full disk shows as an I/O error where SQLite cannot grow its
        // `-shm`; a read-only filesystem where it cannot create it.
        Some(ErrorCode::SystemIoFailure) => match disk_state(path) {
            Disk::Full => StoreError::Backend {
                store: describe(path),
                what: what.to_owned(),
                source: format!("{error}; {FULL_AT_OPEN}").into(),
            },
            Disk::ReadOnly => StoreError::ReadOnly {
                path: path.to_path_buf(),
                detail: format!("{error}; {READ_ONLY_FS}"),
            },
            Disk::Fine => StoreError::Backend {
                store: describe(path),
                what: what.to_owned(),
                source: Box::new(error),
            },
        },
        _ => StoreError::Backend {
            store: describe(path),
            what: what.to_owned(),
            source: Box::new(error),
        },
    }
}

/// Validates an opened file, then sets it up and migrates it (or, if
/// `options` say not to migrate, refuses an older schema). Nothing is
/// written before the file is known to be ours (or `created` by this open)
/// and sound.
pub(super) fn check_and_migrate(
    conn: &Connection,
    path: &Path,
    options: &SqliteOptions,
    created: bool,
) -> StoreResult<()> {
    let err = |what: &str| {
        let what = what.to_owned();
        move |e: rusqlite::Error| open_error(path, &what, e)
    };
    if conn
        .is_readonly(rusqlite::MAIN_DB)
        .map_err(err("checking access"))?
    {
        return Err(StoreError::ReadOnly {
            path: path.to_path_buf(),
            detail: match disk_state(path) {
                Disk::ReadOnly => format!("SQLite opened it read-only; {READ_ONLY_FS}"),
                _ => "SQLite opened it read-only".to_owned(),
            },
        });
    }
    conn.busy_timeout(options.busy_timeout)
        .map_err(err("setting the busy timeout"))?;
    let application_id: i64 = conn
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .map_err(err("reading the application id"))?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(err("reading the schema version"))?;
    let tables = table_names(conn).map_err(err("reading the schema"))?;
    check_ours(path, application_id, &tables, version, created)?;
    // Before anything is written (the switch to WAL may be a write): an
    // older build still opens the file it refused to migrate.
    if !options.migrate && !created && version < SCHEMA_VERSION {
        return Err(StoreError::OlderSchema {
            store: describe(path),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if options.integrity_check && !tables.is_empty() {
        let verdict: String = conn
            .pragma_query_value(None, "quick_check", |row| row.get(0))
            .map_err(err("checking integrity"))?;
        if verdict != "ok" {
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                detail: verdict,
            });
        }
    }
    // The file is ours and sound: its `-wal` is checkpointed into it on
    // close from now on, as SQLite does by default.
    keep_wal_on_close(conn, false).map_err(err("setting up the connection"))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(err("switching to WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend {
            store: describe(path),
            what: "switching to WAL".to_owned(),
            source: format!("SQLite kept journal mode `{mode}`").into(),
        });
    }
    let synchronous = match options.synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(err("setting `synchronous`"))?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)
        .map_err(err("setting `wal_autocheckpoint`"))?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
        .map_err(err("setting `journal_size_limit`"))?;
    if created || version < SCHEMA_VERSION {
        migrate(conn, path)?;
    }
    Ok(())
}

/// Whether closing `conn` leaves the `-wal` as it is (`yes`), instead of
/// checkpointing it into the file and deleting it when the connection is
/// the file's last (SQLite's default). An open that refuses a file must
/// leave it, and the `-wal` a killed process left beside it, as they were:
/// a checkpoint would write a `-wal` into a file it may not belong to (a
/// backup moved over a live file), and drop the `-wal` itself.
pub(super) fn keep_wal_on_close(conn: &Connection, yes: bool) -> rusqlite::Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        yes,
    )
    .map(drop)
}

/// Whether a `-wal` or a `-shm` is beside the file at `path`.
pub(super) fn has_traces(path: &Path) -> bool {
    std::fs::symlink_metadata(wal_path(path)).is_ok()
        || std::fs::symlink_metadata(companion(path, "-shm")).is_ok()
}

/// Refuses a file that is not a store of ours (another application id, or
/// none: only a file this open created may be stamped) or one of a newer
/// schema.
fn check_ours(
    path: &Path,
    application_id: i64,
    tables: &[String],
    version: i64,
    created: bool,
) -> StoreResult<()> {
    let fresh = created && application_id == 0 && tables.is_empty();
    if application_id != APPLICATION_ID && !fresh {
        let shown: Vec<&str> = tables.iter().take(5).map(String::as_str).collect();
        return Err(StoreError::ForeignDatabase {
            path: path.to_path_buf(),
            detail: format!(
                "application id {application_id:#x}, tables: {}",
                if shown.is_empty() {
                    "none".to_owned()
                } else {
                    shown.join(", ")
                }
            ),
        });
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// The reader's connection to a store opened (and checked, migrated) to
/// write: `query_only`, so it cannot write even by mistake.
pub(super) fn open_reader(path: &Path, options: &SqliteOptions) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| open_error(path, "opening the reader", e))?;
    conn.busy_timeout(options.busy_timeout)
        .and_then(|()| conn.pragma_update(None, "query_only", true))
        .map_err(|e| open_error(path, "opening the reader", e))?;
    Ok(conn)
}

/// Opens an existing store read-only and checks it is ours, writing
/// nothing (see [`SqliteStore::open_read_only`](super::SqliteStore::open_read_only)).
pub(super) fn open_read_only(path: &Path) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let traces = has_traces(path);
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| open_error(path, "opening read-only", e))?;
    // As for a writer (see `keep_wal_on_close`), until the checks pass.
    keep_wal_on_close(&conn, true).map_err(|e| open_error(path, "opening read-only", e))?;
    let conn = match read_header(&conn) {
        Ok(_) => conn,
        // No writer (no `-wal`) and SQLite could not create the `-shm`:
        // nobody can be writing, so the file cannot change under us.
        Err(e)
            if matches!(
                e.sqlite_error_code(),
                Some(ErrorCode::CannotOpen | ErrorCode::ReadOnly)
            ) && !wal_path(path).exists() =>
        {
            drop(conn);
            Connection::open_with_flags(immutable_uri(path), flags | OpenFlags::SQLITE_OPEN_URI)
                .map_err(|e| open_error(path, "opening read-only", e))?
        }
        Err(e) => return Err(open_error(path, "reading the application id", e)),
    };
    let (application_id, version) =
        read_header(&conn).map_err(|e| open_error(path, "reading the application id", e))?;
    // The tables are named only in a refusal (not read for our own
    // files), and a schema that cannot be read does not change it.
    let tables = if application_id == APPLICATION_ID {
        Vec::new()
    } else {
        table_names(&conn).unwrap_or_else(|_| vec!["(unreadable)".to_owned()])
    };
    let checked = check_ours(path, application_id, &tables, version, false).and_then(|()| {
        // An older schema is read only once a writer migrated it: its
        // tables lack this build's columns.
        if version < SCHEMA_VERSION {
            return Err(StoreError::OlderSchema {
                store: describe(path),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(())
    });
    if let Err(e) = checked {
        if !traces {
            let _ = keep_wal_on_close(&conn, false);
        }
        return Err(e);
    }
    keep_wal_on_close(&conn, false)
        .map_err(|e| open_error(path, "setting up the connection", e))?;
    conn.busy_timeout(SqliteOptions::new().busy_timeout)
        .map_err(|e| open_error(path, "setting the busy timeout", e))?;
    Ok(conn)
}

/// The names of the file's tables, in order.
fn table_names(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt =
        conn.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")?;
    let rows = stmt.query_map([], |row| row.get(0))?;
    rows.collect()
}

/// The file's application id and schema version.
fn read_header(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    let application_id = conn.pragma_query_value(None, "application_id", |row| row.get(0))?;
    let version = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    Ok((application_id, version))
}

fn wal_path(path: &Path) -> std::path::PathBuf {
    companion(path, "-wal")
}

/// The file of SQLite's beside `path` whose name ends in `suffix`.
fn companion(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// `file:` URI of `path` with `immutable=1` (`%`, `?` and `#` escaped).
fn immutable_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?immutable=1");
    uri
}

/// Brings the schema to [`SCHEMA_VERSION`], in one transaction that
/// re-reads the version (another process may have migrated meanwhile).
pub(super) fn migrate(conn: &Connection, path: &Path) -> StoreResult<()> {
    let err = |e: rusqlite::Error| open_error(path, "migrating the schema", e);
    conn.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
    let result = (|| {
        let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        for sql in MIGRATIONS.iter().skip(version.max(0) as usize) {
            conn.execute_batch(sql)?;
        }
        conn.pragma_update(None, "application_id", APPLICATION_ID)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION.max(version))?;
        Ok(version)
    })();
    let from = match result {
        Ok(from) => from,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(err(e));
        }
    };
    conn.execute_batch("COMMIT").map_err(err)?;
    // Told once, once it is committed: a new file, or an older schema.
    let file = path.display().to_string();
    let file = crate::escape::Escaped(&file);
    if from <= 0 {
        log::info!(target: "saga", path:% = file, version = SCHEMA_VERSION; "sqlite store created");
    } else if from < SCHEMA_VERSION {
        log::info!(target: "saga", path:% = file, from = from, version = SCHEMA_VERSION; "sqlite store migrated");
    }
    Ok(())
}
