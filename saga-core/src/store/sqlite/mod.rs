//! [`SqliteStore`]: the embedded durable store, one SQLite file.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};
use tokio::sync::oneshot;

use super::{
    Ack, Created, DefinitionRecord, Event, EventKind, ExecutionRecord, Lease, NewExecution,
    SagaStore, StoreError, StoreResult, now_ms, status_from_label, ttl_ms,
};
use crate::id::ExecutionId;
use crate::report::ExecutionStatus;
use crate::step::BoxFuture;

/// `PRAGMA application_id` of our files: "SAGA" in ASCII. A file with
/// another id belongs to another application and is never touched.
const APPLICATION_ID: i64 = 0x5341_4741;

/// The migrations, in order: `MIGRATIONS[n]` takes the schema from version
/// `n` to `n + 1`. The file's `PRAGMA user_version` is its version.
const MIGRATIONS: &[&str] = &[
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
];

/// The newest schema version this build knows.
const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// When SQLite syncs the file to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// `synchronous=FULL` (the default): every commit is on disk when the
    /// engine goes on, so a power cut loses no acknowledged event.
    #[default]
    Full,
    /// `synchronous=NORMAL`: faster (WAL syncs only at checkpoints); a crash
    /// of the *process* loses nothing, but a power cut or OS crash may lose
    /// the last commits. The file stays consistent either way; steps whose
    /// "started" was lost run again, as after any crash.
    Normal,
}

/// Options of a [`SqliteStore`].
///
/// ```
/// use saga_core::store::{SqliteOptions, Synchronous};
///
/// let options = SqliteOptions::new().with_synchronous(Synchronous::Normal);
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    synchronous: Synchronous,
    busy_timeout: Duration,
    max_batch: usize,
    integrity_check: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            max_batch: 512,
            integrity_check: true,
        }
    }
}

impl SqliteOptions {
    /// The defaults: durable commits, a 5 s busy timeout, batches of up to
    /// 512 writes, an integrity check on open.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets when commits reach the disk (see [`Synchronous`]).
    #[must_use]
    pub fn with_synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// How long a write waits for another process's lock on the file.
    #[must_use]
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// The most writes one commit groups (at least 1).
    #[must_use]
    pub fn with_max_batch(mut self, writes: usize) -> Self {
        self.max_batch = writes.max(1);
        self
    }

    /// Whether opening runs `PRAGMA quick_check` (default: yes). It reads
    /// the whole file, so a damaged file is reported before anything is
    /// written; skip it for very large files you trust.
    #[must_use]
    pub fn with_integrity_check(mut self, yes: bool) -> Self {
        self.integrity_check = yes;
        self
    }
}

/// The embedded store: one SQLite file (plus SQLite's `-wal` and `-shm`
/// companions), in WAL mode, with durable commits by default.
///
/// Every write goes through one writer thread, which groups the writes that
/// arrive while it commits into one transaction (each in its own savepoint,
/// so one failing write does not undo its neighbours): concurrent
/// executions share fsyncs (*group commit*). Reads run on the same thread,
/// after the batch they arrived with is committed, so they never see a
/// write that is not yet durable.
///
/// Opening checks the file before writing anything: a file that is not an
/// SQLite database, a damaged one, one of another application, one with a
/// newer schema, or a read-only one gives a [`StoreError`] naming the file,
/// and the file is left as it was. A file of an older schema is migrated.
///
/// Contexts and outputs are stored as JSON text, readable with the
/// `sqlite3` shell: `SELECT seq, kind, step, context FROM events WHERE
/// execution_id = '...' ORDER BY seq`.
///
/// ```no_run
/// use saga_core::store::SqliteStore;
///
/// let store = SqliteStore::open("sagas.db")?;
/// # Ok::<(), saga_core::store::StoreError>(())
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    sender: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the writer's loop; joining closes the
        // connection (and checkpoints the WAL) before the store is gone.
        self.sender.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

/// Work for the writer thread.
enum Job {
    /// Runs inside the batch's transaction, in a savepoint; returns what to
    /// do once the commit's fate is known.
    /// Given an error instead of a connection when the transaction could
    /// not begin.
    Write(Box<WriteWork>),
    /// Runs after the batch's commit.
    Read(Box<dyn FnOnce(&Connection) + Send>),
}

type WriteWork = dyn FnOnce(Result<&Connection, String>) -> Pending + Send;

struct Pending {
    /// Whether the work succeeded (its savepoint is kept).
    ok: bool,
    /// Answers the caller, given the commit's result.
    finish: Box<dyn FnOnce(Result<(), String>) + Send>,
}

impl SqliteStore {
    /// Opens (or creates) the store in the file at `path`, with durable
    /// commits.
    ///
    /// # Errors
    /// A [`StoreError`] naming the file if it cannot be used; it is left as
    /// it was.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        Self::open_with(path, SqliteOptions::new())
    }

    /// Opens the store with `options`.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        precheck_file(&path)?;
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| open_error(&path, "opening", e))?;
        check_and_migrate(&conn, &path, &options)?;
        let (sender, receiver) = mpsc::channel::<Job>();
        let max_batch = options.max_batch;
        let writer = std::thread::Builder::new()
            .name("saga-sqlite-writer".to_owned())
            .spawn(move || writer_loop(&conn, &receiver, max_batch))
            .map_err(|e| StoreError::Backend {
                store: describe(&path),
                what: "starting the writer thread".to_owned(),
                source: Box::new(e),
            })?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                sender: Some(sender),
                writer: Some(writer),
            }),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn closed(&self) -> StoreError {
        StoreError::Closed {
            store: describe(&self.inner.path),
        }
    }

    fn send(&self, job: Job) -> StoreResult<()> {
        self.inner
            .sender
            .as_ref()
            .ok_or_else(|| self.closed())?
            .send(job)
            .map_err(|_| self.closed())
    }

    /// Runs `work` in the next group commit; resolves once it is durable.
    fn write<T, F>(&self, what: &'static str, work: F) -> BoxFuture<'static, StoreResult<T>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Path) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let path = self.inner.path.clone();
        let job = Job::Write(Box::new(move |conn| match conn {
            Err(message) => Pending {
                ok: false,
                finish: Box::new(move |_| {
                    let _ = tx.send(Err(StoreError::Backend {
                        store: describe(&path),
                        what: format!("beginning a transaction ({what})"),
                        source: message.into(),
                    }));
                }),
            },
            Ok(conn) => match work(conn, &path) {
                Ok(value) => Pending {
                    ok: true,
                    finish: Box::new(move |commit| {
                        let result =
                            commit
                                .map(|()| value)
                                .map_err(|message| StoreError::Backend {
                                    store: describe(&path),
                                    what: format!("committing ({what})"),
                                    source: message.into(),
                                });
                        let _ = tx.send(result);
                    }),
                },
                Err(error) => Pending {
                    ok: false,
                    finish: Box::new(move |_| {
                        let _ = tx.send(Err(error));
                    }),
                },
            },
        }));
        self.submit(job, rx)
    }

    /// Runs `work` on the writer's connection, outside any transaction.
    fn read<T, F>(&self, work: F) -> BoxFuture<'static, StoreResult<T>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Path) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let path = self.inner.path.clone();
        let job = Job::Read(Box::new(move |conn| {
            let _ = tx.send(work(conn, &path));
        }));
        self.submit(job, rx)
    }

    fn submit<T: Send + 'static>(
        &self,
        job: Job,
        rx: oneshot::Receiver<StoreResult<T>>,
    ) -> BoxFuture<'static, StoreResult<T>> {
        let sent = self.send(job);
        let closed = self.closed();
        Box::pin(async move {
            sent?;
            rx.await.map_err(|_| closed)?
        })
    }
}

fn describe(path: &Path) -> String {
    format!("the SQLite store `{}`", path.display())
}

/// The writer thread: one batch of writes per transaction, then the reads
/// that arrived with them.
fn writer_loop(conn: &Connection, receiver: &mpsc::Receiver<Job>, max_batch: usize) {
    while let Ok(first) = receiver.recv() {
        let mut writes = Vec::new();
        let mut reads = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Write(w) => writes.push(w),
                Job::Read(r) => reads.push(r),
            }
            if writes.len() + reads.len() < max_batch {
                next = receiver.try_recv().ok();
            }
        }
        if !writes.is_empty() {
            let begun = conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(|e| e.to_string());
            let mut pending = Vec::with_capacity(writes.len());
            for write in writes {
                let Err(message) = &begun else {
                    let savepoint = conn.execute_batch("SAVEPOINT job");
                    let step = write(savepoint.as_ref().map(|()| conn).map_err(|e| e.to_string()));
                    let closed = if step.ok {
                        conn.execute_batch("RELEASE job")
                    } else {
                        conn.execute_batch("ROLLBACK TO job; RELEASE job")
                    };
                    if let Err(e) = closed {
                        log::error!(target: "saga", "sqlite savepoint failed error={e}");
                    }
                    pending.push(step);
                    continue;
                };
                // The transaction never began: the work does not run and
                // its caller hears why.
                pending.push(write(Err(message.clone())));
            }
            let commit = match begun {
                Ok(()) => {
                    let commit = conn.execute_batch("COMMIT").map_err(|e| e.to_string());
                    if commit.is_err() {
                        let _ = conn.execute_batch("ROLLBACK");
                    }
                    commit
                }
                Err(message) => Err(message),
            };
            for p in pending {
                (p.finish)(commit.clone());
            }
        }
        for read in reads {
            read(conn);
        }
    }
}

/// Checks what can be checked without SQLite: a non-empty file must start
/// with the SQLite header, and be as long as the header says; it must be
/// writable.
fn precheck_file(path: &Path) -> StoreResult<()> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(StoreError::Backend {
                store: describe(path),
                what: "reading the file's metadata".to_owned(),
                source: Box::new(e),
            });
        }
    };
    if metadata.is_dir() {
        return Err(StoreError::NotADatabase {
            path: path.to_path_buf(),
            detail: "it is a directory".to_owned(),
        });
    }
    let len = metadata.len();
    if len == 0 {
        // An empty file is a new database to SQLite.
        return check_writable(path, &metadata);
    }
    let mut header = [0_u8; 100];
    let mut file = std::fs::File::open(path).map_err(|e| StoreError::Backend {
        store: describe(path),
        what: "opening the file".to_owned(),
        source: Box::new(e),
    })?;
    let mut read = 0;
    while read < header.len() {
        match file.read(&mut header[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(StoreError::Backend {
                    store: describe(path),
                    what: "reading the file's header".to_owned(),
                    source: Box::new(e),
                });
            }
        }
    }
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
    if size_valid && pages > 0 && len < pages.saturating_mul(page_size) {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!(
                "truncated: {len} bytes, but its header says {pages} pages of {page_size} bytes"
            ),
        });
    }
    check_writable(path, &metadata)
}

fn check_writable(path: &Path, metadata: &std::fs::Metadata) -> StoreResult<()> {
    if metadata.permissions().readonly() {
        return Err(StoreError::ReadOnly {
            path: path.to_path_buf(),
            detail: "the file's permissions forbid writing".to_owned(),
        });
    }
    Ok(())
}

/// Turns an SQLite error met while opening into the error users can act on.
fn open_error(path: &Path, what: &str, error: rusqlite::Error) -> StoreError {
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
                detail: error.to_string(),
            }
        }
        _ => StoreError::Backend {
            store: describe(path),
            what: what.to_owned(),
            source: Box::new(error),
        },
    }
}

/// Validates an opened file, then sets it up and migrates it. Nothing is
/// written before the file is known to be ours (or empty) and sound.
fn check_and_migrate(conn: &Connection, path: &Path, options: &SqliteOptions) -> StoreResult<()> {
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
            detail: "SQLite opened it read-only".to_owned(),
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
    let tables: Vec<String> = {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .map_err(err("reading the schema"))?;
        let rows = stmt
            .query_map([], |row| row.get(0))
            .map_err(err("reading the schema"))?;
        rows.collect::<Result<_, _>>()
            .map_err(err("reading the schema"))?
    };
    if application_id != APPLICATION_ID {
        if application_id != 0 || !tables.is_empty() {
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
    } else if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
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
    migrate(conn, path)
}

/// Brings the schema to [`SCHEMA_VERSION`], in one transaction that
/// re-reads the version (another process may have migrated meanwhile).
fn migrate(conn: &Connection, path: &Path) -> StoreResult<()> {
    let err = |e: rusqlite::Error| open_error(path, "migrating the schema", e);
    conn.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
    let result = (|| {
        let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        for (from, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            conn.execute_batch(sql)?;
            log::info!(target: "saga", "sqlite store migrated path={} version={}", path.display(), from + 1);
        }
        conn.pragma_update(None, "application_id", APPLICATION_ID)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION.max(version))?;
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT").map_err(err),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(err(e))
        }
    }
}

/// Maps an error of a statement.
fn db(path: &Path, what: &str) -> impl Fn(rusqlite::Error) -> StoreError {
    let store = describe(path);
    let path = path.to_path_buf();
    let what = what.to_owned();
    move |e| match e.sqlite_error_code() {
        Some(ErrorCode::ReadOnly) => StoreError::ReadOnly {
            path: path.clone(),
            detail: e.to_string(),
        },
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt {
            path: path.clone(),
            detail: e.to_string(),
        },
        _ => StoreError::Backend {
            store: store.clone(),
            what: what.clone(),
            source: Box::new(e),
        },
    }
}

fn bad_record(path: &Path, what: String, detail: String) -> StoreError {
    StoreError::BadRecord {
        store: describe(path),
        what,
        detail,
    }
}

const SELECT_EXECUTION: &str =
    "SELECT e.id, e.saga, e.fingerprint, e.status, e.context, e.last_seq,
        e.created_at, e.updated_at, l.owner, l.expires_at, e.cancel_requested
    FROM executions e LEFT JOIN leases l ON l.execution_id = e.id";

type RawExecution = (
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    Option<String>,
    Option<i64>,
    bool,
);

fn raw_execution(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawExecution> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
        row.get(9)?,
        row.get(10)?,
    ))
}

fn execution(path: &Path, raw: RawExecution) -> StoreResult<ExecutionRecord> {
    let (
        id,
        saga,
        fingerprint,
        status,
        context,
        last_seq,
        created,
        updated,
        owner,
        expires,
        cancel,
    ) = raw;
    let status = status_from_label(&status).ok_or_else(|| {
        bad_record(
            path,
            format!("execution `{id}`"),
            format!("unknown status `{status}`"),
        )
    })?;
    Ok(ExecutionRecord {
        id: ExecutionId::new(id),
        saga,
        fingerprint,
        status,
        context,
        last_seq: u64::try_from(last_seq).unwrap_or(0),
        created_at_ms: created,
        updated_at_ms: updated,
        owner,
        lease_expires_at_ms: expires,
        cancel_requested: cancel,
    })
}

fn get_execution(conn: &Connection, path: &Path, id: &str) -> StoreResult<Option<ExecutionRecord>> {
    let raw = conn
        .prepare_cached(&format!("{SELECT_EXECUTION} WHERE e.id = ?1"))
        .and_then(|mut stmt| stmt.query_row([id], raw_execution).optional())
        .map_err(db(path, "reading an execution"))?;
    raw.map(|raw| execution(path, raw)).transpose()
}

/// Whether `lease` is still the execution's lease: the condition every
/// fenced statement embeds.
/// Writes `events`, each under the fence. `Err(None)`: the lease is lost.
fn insert_events(
    conn: &Connection,
    id: &ExecutionId,
    lease: &Lease,
    events: &[Event],
    now: i64,
) -> Result<(), Option<rusqlite::Error>> {
    let mut insert = conn.prepare_cached(&format!(
        "INSERT INTO events (execution_id, seq, at, kind, step, attempt, output,
            context, error, outcome_unknown, will_retry)
         SELECT ?1, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13 WHERE {LEASE_HELD}"
    ))?;
    for event in events {
        let written = insert.execute(params![
            id.as_str(),
            lease.token,
            &*lease.owner,
            event.seq as i64,
            now,
            event.kind.label(),
            event.step,
            event.attempt,
            event.output,
            event.context,
            event.error,
            event.outcome_unknown,
            event.will_retry
        ])?;
        if written != 1 {
            return Err(None);
        }
    }
    Ok(())
}

const LEASE_HELD: &str =
    "EXISTS (SELECT 1 FROM leases WHERE execution_id = ?1 AND token = ?2 AND owner = ?3)";

fn lease_lost(id: &ExecutionId) -> StoreError {
    StoreError::LeaseLost {
        execution_id: id.clone(),
    }
}

impl SagaStore for SqliteStore {
    fn describe(&self) -> String {
        describe(&self.inner.path)
    }

    fn put_definition(&self, definition: DefinitionRecord) -> BoxFuture<'_, StoreResult<()>> {
        self.write("recording a definition", move |conn, path| {
            conn.prepare_cached(
                "INSERT INTO definitions (fingerprint, saga, shape, registered_at)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (fingerprint) DO NOTHING",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    definition.fingerprint,
                    definition.saga,
                    definition.shape,
                    now_ms()
                ])
            })
            .map_err(db(path, "recording a definition"))?;
            Ok(())
        })
    }

    fn definition(
        &self,
        fingerprint: &str,
    ) -> BoxFuture<'_, StoreResult<Option<DefinitionRecord>>> {
        let fingerprint = fingerprint.to_owned();
        self.read(move |conn, path| {
            conn.prepare_cached("SELECT saga, shape FROM definitions WHERE fingerprint = ?1")
                .and_then(|mut stmt| {
                    stmt.query_row([&fingerprint], |row| {
                        Ok(DefinitionRecord {
                            fingerprint: fingerprint.clone(),
                            saga: row.get(0)?,
                            shape: row.get(1)?,
                        })
                    })
                    .optional()
                })
                .map_err(db(path, "reading a definition"))
        })
    }

    fn create(
        &self,
        execution: NewExecution,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Created>> {
        let owner = owner.to_owned();
        self.write("creating an execution", move |conn, path| {
            let now = now_ms();
            let id = execution.id.as_str();
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO executions (id, saga, fingerprint, status, context, last_seq,
                        created_at, updated_at)
                     VALUES (?1, ?2, ?3, 'running', ?4, ?6, ?5, ?5)
                     ON CONFLICT (id) DO NOTHING",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        id,
                        execution.saga,
                        execution.fingerprint,
                        execution.context,
                        now,
                        execution.events.len() as i64
                    ])
                })
                .map_err(db(path, "creating an execution"))?;
            if inserted == 0 {
                return match get_execution(conn, path, id)? {
                    Some(existing) => Ok(Created::Existing(existing)),
                    None => Err(StoreError::NotFound {
                        execution_id: execution.id.clone(),
                    }),
                };
            }
            conn.prepare_cached(
                "INSERT INTO leases (execution_id, owner, token, expires_at) VALUES (?1, ?2, 1, ?3)
                 ON CONFLICT (execution_id) DO UPDATE SET owner = ?2, token = token + 1, expires_at = ?3",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![id, owner, now.saturating_add(ttl_ms(ttl))])
            })
            .map_err(db(path, "creating a lease"))?;
            let token: i64 = conn
                .query_row(
                    "SELECT token FROM leases WHERE execution_id = ?1",
                    [id],
                    |row| row.get(0),
                )
                .map_err(db(path, "creating a lease"))?;
            let lease = Lease {
                owner: owner.into(),
                token,
                ttl,
            };
            insert_events(conn, &execution.id, &lease, &execution.events, now).map_err(|e| {
                match e {
                    Some(e) => db(path, "creating an execution")(e),
                    None => lease_lost(&execution.id),
                }
            })?;
            Ok(Created::New(lease))
        })
    }

    fn claim(
        &self,
        id: &ExecutionId,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Option<Lease>>> {
        let id = id.clone();
        let owner = owner.to_owned();
        self.write("claiming an execution", move |conn, path| {
            let now = now_ms();
            let token: Option<i64> = conn
                .prepare_cached(
                    "UPDATE leases SET owner = ?2, token = token + 1, expires_at = ?3
                     WHERE execution_id = ?1
                       AND (owner IS NULL OR expires_at IS NULL OR expires_at <= ?4)
                     RETURNING token",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(
                        params![id.as_str(), owner, now.saturating_add(ttl_ms(ttl)), now],
                        |row| row.get(0),
                    )
                    .optional()
                })
                .map_err(db(path, "claiming an execution"))?;
            match token {
                Some(token) => Ok(Some(Lease {
                    owner: owner.into(),
                    token,
                    ttl,
                })),
                None if get_execution(conn, path, id.as_str())?.is_none() => {
                    Err(StoreError::NotFound { execution_id: id })
                }
                None => Ok(None),
            }
        })
    }

    fn append<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
        events: Vec<Event>,
        status: ExecutionStatus,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        let id = id.clone();
        let lease = lease.clone();
        self.write("appending events", move |conn, path| {
            let now = now_ms();
            let err = db(path, "appending events");
            let first = events.first().map_or(0, |e| e.seq);
            let last = events.last().map_or(0, |e| e.seq);
            let prev = first.saturating_sub(1);
            // The fence and the sequence check in the statement that moves
            // the execution on: a lost lease or a gap writes nothing.
            let cancel: Option<bool> = conn
                .prepare_cached(&format!(
                    "UPDATE executions SET status = ?4, last_seq = ?5, updated_at = ?6
                     WHERE id = ?1 AND last_seq = ?7 AND {LEASE_HELD}
                     RETURNING cancel_requested"
                ))
                .and_then(|mut stmt| {
                    stmt.query_row(
                        params![
                            id.as_str(),
                            lease.token,
                            &*lease.owner,
                            status.label(),
                            if events.is_empty() {
                                prev as i64
                            } else {
                                last as i64
                            },
                            now,
                            prev as i64
                        ],
                        |row| row.get(0),
                    )
                    .optional()
                })
                .map_err(&err)?;
            let Some(cancel_requested) = cancel else {
                let record = get_execution(conn, path, id.as_str())?;
                return Err(match record {
                    None => StoreError::NotFound { execution_id: id },
                    Some(r) if r.last_seq != prev && r.owner.as_deref() == Some(&*lease.owner) => {
                        bad_record(
                            path,
                            format!("event {first} of execution `{id}`"),
                            format!("the log ends at {}, expected {prev}", r.last_seq),
                        )
                    }
                    Some(_) => lease_lost(&id),
                });
            };
            insert_events(conn, &id, &lease, &events, now).map_err(|e| match e {
                Some(e) => err(e),
                None => lease_lost(&id),
            })?;
            // Extends the lease, or releases it when the execution ended.
            conn.prepare_cached(
                "UPDATE leases SET
                    owner = CASE WHEN ?5 THEN NULL ELSE owner END,
                    expires_at = CASE WHEN ?5 THEN NULL ELSE ?4 END
                 WHERE execution_id = ?1 AND token = ?2 AND owner = ?3",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    id.as_str(),
                    lease.token,
                    &*lease.owner,
                    now.saturating_add(ttl_ms(lease.ttl)),
                    status.is_finished()
                ])
            })
            .map_err(&err)?;
            Ok(Ack { cancel_requested })
        })
    }

    fn renew<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        let id = id.clone();
        let lease = lease.clone();
        self.write("renewing a lease", move |conn, path| {
            let now = now_ms();
            let cancel: Option<bool> = conn
                .prepare_cached(
                    "UPDATE leases SET expires_at = ?4
                     WHERE execution_id = ?1 AND token = ?2 AND owner = ?3
                     RETURNING (SELECT cancel_requested FROM executions WHERE id = ?1)",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(
                        params![
                            id.as_str(),
                            lease.token,
                            &*lease.owner,
                            now.saturating_add(ttl_ms(lease.ttl))
                        ],
                        |row| row.get(0),
                    )
                    .optional()
                })
                .map_err(db(path, "renewing a lease"))?;
            match cancel {
                Some(cancel_requested) => Ok(Ack { cancel_requested }),
                None => Err(lease_lost(&id)),
            }
        })
    }

    fn release<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<()>> {
        let id = id.clone();
        let lease = lease.clone();
        self.write("releasing a lease", move |conn, path| {
            conn.prepare_cached(
                "UPDATE leases SET owner = NULL, expires_at = NULL
                 WHERE execution_id = ?1 AND token = ?2 AND owner = ?3",
            )
            .and_then(|mut stmt| stmt.execute(params![id.as_str(), lease.token, &*lease.owner]))
            .map_err(db(path, "releasing a lease"))?;
            Ok(())
        })
    }

    fn get<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> BoxFuture<'a, StoreResult<Option<ExecutionRecord>>> {
        let id = id.clone();
        self.read(move |conn, path| get_execution(conn, path, id.as_str()))
    }

    fn events<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<Vec<Event>>> {
        let id = id.clone();
        self.read(move |conn, path| {
            let err = db(path, "reading events");
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, kind, step, attempt, output, context, error, outcome_unknown,
                        will_retry, at
                     FROM events WHERE execution_id = ?1 ORDER BY seq",
                )
                .map_err(&err)?;
            let rows = stmt
                .query_map([id.as_str()], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, Option<u32>>(2)?,
                        row.get::<_, u32>(3)?,
                        row.get::<_, Option<String>>(4)?,
                        row.get::<_, Option<String>>(5)?,
                        row.get::<_, Option<String>>(6)?,
                        row.get::<_, bool>(7)?,
                        row.get::<_, bool>(8)?,
                        row.get::<_, i64>(9)?,
                    ))
                })
                .map_err(&err)?;
            let mut events = Vec::new();
            for row in rows {
                let (seq, kind, step, attempt, output, context, error, unknown, retry, at) =
                    row.map_err(&err)?;
                let kind = EventKind::from_label(&kind).ok_or_else(|| {
                    bad_record(
                        path,
                        format!("event {seq} of execution `{id}`"),
                        format!("unknown kind `{kind}`"),
                    )
                })?;
                events.push(Event {
                    seq: u64::try_from(seq).unwrap_or(0),
                    kind,
                    step,
                    attempt,
                    output,
                    context,
                    error,
                    outcome_unknown: unknown,
                    will_retry: retry,
                    at_ms: at,
                });
            }
            Ok(events)
        })
    }

    fn list(
        &self,
        status: Option<ExecutionStatus>,
    ) -> BoxFuture<'_, StoreResult<Vec<ExecutionRecord>>> {
        self.read(move |conn, path| {
            let err = db(path, "listing executions");
            let mut stmt = conn
                .prepare_cached(&format!(
                    "{SELECT_EXECUTION} WHERE ?1 IS NULL OR e.status = ?1 ORDER BY e.created_at, e.id"
                ))
                .map_err(&err)?;
            let rows = stmt
                .query_map([status.map(ExecutionStatus::label)], raw_execution)
                .map_err(&err)?;
            let mut records = Vec::new();
            for row in rows {
                records.push(execution(path, row.map_err(&err)?)?);
            }
            Ok(records)
        })
    }

    fn request_cancel<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<bool>> {
        let id = id.clone();
        self.write("requesting a cancellation", move |conn, path| {
            let changed = conn
                .execute(
                    "UPDATE executions SET cancel_requested = 1 WHERE id = ?1",
                    [id.as_str()],
                )
                .map_err(db(path, "requesting a cancellation"))?;
            Ok(changed == 1)
        })
    }

    fn purge(&self, before_ms: i64) -> BoxFuture<'_, StoreResult<u64>> {
        self.write("purging executions", move |conn, path| {
            let err = db(path, "purging executions");
            let doomed = "SELECT id FROM executions
                WHERE status IN ('completed', 'compensated', 'cancelled', 'abandoned')
                  AND updated_at <= ?1";
            conn.execute(
                &format!("DELETE FROM events WHERE execution_id IN ({doomed})"),
                [before_ms],
            )
            .map_err(&err)?;
            conn.execute(
                &format!("DELETE FROM leases WHERE execution_id IN ({doomed})"),
                [before_ms],
            )
            .map_err(&err)?;
            let purged = conn
                .execute(
                    "DELETE FROM executions
                     WHERE status IN ('completed', 'compensated', 'cancelled', 'abandoned')
                       AND updated_at <= ?1",
                    [before_ms],
                )
                .map_err(&err)?;
            Ok(purged as u64)
        })
    }
}
