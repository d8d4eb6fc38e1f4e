//! [`SqliteStore`]: the embedded durable store, one SQLite file.

/// The text of `rows::SELECT_EXECUTION`, for `concat!`: a statement built on
/// it is a literal, not a `format!` each time it is looked up.
macro_rules! select_execution {
    () => {
        "SELECT e.id, e.saga, e.fingerprint, e.status, e.context, e.last_seq,
        e.created_at, e.updated_at, l.owner, l.expires_at, e.cancel_requested
    FROM executions e LEFT JOIN leases l ON l.execution_id = e.id"
    };
}

/// Whether the lease `?2` (token), `?3` (owner) is still the lease of
/// execution `?1`: the condition every fenced statement embeds (with
/// `concat!`).
macro_rules! lease_held {
    () => {
        "EXISTS (SELECT 1 FROM leases WHERE execution_id = ?1 AND token = ?2 AND owner = ?3)"
    };
}

mod liveness;
mod open;
mod ops;
mod options;
mod rows;
mod writer;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{oneshot, watch};

use self::liveness::Owners;
use self::open::{Access, check_and_migrate, create_file, open_error, precheck_file};
pub use self::options::{SqliteOptions, Synchronous};
use self::writer::{Db, FileWatch, Job, NotBegun, Pending, Read, Undo, Write, writer_loop};
use super::{StoreError, StoreResult};
use crate::step::BoxFuture;

/// The embedded store: one SQLite file (plus SQLite's `-wal` and `-shm`
/// companions), in WAL mode, with durable commits by default.
///
/// Every write goes through one writer thread, which groups the writes that
/// arrive while it commits into one transaction: concurrent executions
/// share fsyncs (*group commit*). A failing write does not undo its
/// neighbours: a creation or a purge runs in a savepoint of its own, and
/// the other writes (an append, a claim, a renewal) write nothing when
/// they fail, but for a damaged file or an I/O error, which roll back the
/// batch so far (its writes fail; none is half-applied). Reads run on a
/// reader thread with a connection of its own (on a read-only store, on
/// the one thread after its batch): they see every write whose future
/// resolved, and none that is not committed (with the default
/// `synchronous=FULL`, a commit is visible to other connections only once
/// it is synced).
///
/// Its [`work_signal`](super::SagaStore::work_signal) tells of the
/// creations and releases of this process (a [`Worker`](crate::Worker)
/// hears of them at once); another process's work is found by the
/// worker's poll. [`claim_next`](super::SagaStore::claim_next) is one
/// statement that reads no context but those of the executions it claims.
///
/// All the owners of a store run on the machine that holds its file, so
/// an owner's liveness is proved by an OS file lock: each owner (an
/// engine, from its first lease here) locks a sidecar file of its own,
/// `<file>-owner-<owner id>`, while the store is open. A claim that finds
/// a live lease tries its owner's lock: a process that died (SIGKILL, a
/// crash, a power cut) holds none, and its executions are taken over at
/// once instead of when their leases expire; a live one's leases stand.
/// A store that closes (dropped, or its process returning from `main`)
/// releases its owners' locks as a dead process does, and its executions
/// are taken over as fast as a crashed one's; an owner that another open
/// store of its process still uses keeps its lock. The first claimer (or
/// the next store opened to write) that finds an owner gone expires all
/// its leases in the same transaction, and removes its sidecar only once
/// that is committed: every process after it, which cannot prove anything
/// any more, finds them claimable at once all the same.
///
/// Opening checks the file before writing anything: a file that is not an
/// SQLite database, a damaged one, an empty one, one without our
/// application id, one with a newer schema, or a read-only one gives a
/// [`StoreError`] naming the file, and the file is left as it was. A file
/// of an older schema is migrated (unless
/// [`SqliteOptions::with_migrate`] says not to: then it is refused, as it
/// was). A missing file is created, `0600`, unless its `-wal` (holding
/// anything) or `-shm` is there: the file was deleted or moved, its last
/// writes perhaps in the `-wal`, and the open is refused
/// ([`StoreError::FileGone`]) with nothing created or touched.
///
/// Never delete (or replace) the file while a process has the store open:
/// that process would go on writing to a file no one else sees, lost when
/// it exits. The writer looks at most once a second (one `stat`, on Unix)
/// whether the path still names the file it opened; once it does not, it
/// logs an error and refuses every write with [`StoreError::FileGone`]
/// until the process is restarted.
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
    /// The reader thread of a store opened to write: reads on a
    /// connection of their own, off the writer's thread.
    reader: Option<(mpsc::Sender<Read>, JoinHandle<()>)>,
    /// Bumped when this process made work claimable (a creation, a
    /// release): the [`work_signal`](super::SagaStore::work_signal).
    work: watch::Sender<u64>,
    /// Owners' liveness by OS file locks (`liveness.rs`).
    owners: Arc<Mutex<Owners>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the writer's loop; joining closes the
        // connection (and checkpoints the WAL) before the store is gone.
        if let Some((sender, reader)) = self.reader.take() {
            drop(sender);
            let _ = reader.join();
        }
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

impl SqliteStore {
    /// Opens (or creates) the store in the file at `path`, with durable
    /// commits.
    ///
    /// A missing file is created, readable and writable by its owner only
    /// (mode `0600` on Unix: the store holds contexts in clear); SQLite's
    /// `-wal` and `-shm` files take the same mode; if the open then fails
    /// (a full disk), the file it created is removed while still empty,
    /// so that it does not refuse the next open. An existing file is
    /// written to only if it is a store of ours: a file of another
    /// application (another application id, or none) and an empty file are
    /// refused, byte for byte as they were.
    ///
    /// # Errors
    /// A [`StoreError`] naming the file if it cannot be used; it is left as
    /// it was. [`StoreError::FileGone`] if the file is missing while its
    /// `-wal` or `-shm` is there (nothing is created).
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        Self::open_with(path, SqliteOptions::new())
    }

    /// Opens the store with `options`.
    ///
    /// # Errors
    /// As [`open`](Self::open), and [`StoreError::OlderSchema`] for a store
    /// of an older schema version when `options` say not to migrate it
    /// ([`SqliteOptions::with_migrate(false)`](SqliteOptions::with_migrate)).
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        open::refuse_orphaned_wal(&path)?;
        let created = create_file(&path)?;
        // A file another process created a moment ago is empty, then an
        // SQLite file with no schema (its first page perhaps half
        // written), until that process's open has set it up: a file
        // written in the last seconds is waited for (at most the busy
        // timeout, and 2 s) before it is taken for a mistake.
        let waited = std::time::Instant::now();
        let patience = options.busy_timeout.min(std::time::Duration::from_secs(2));
        let conn = loop {
            match Self::open_checked(&path, &options, created) {
                Err(
                    StoreError::Empty { .. }
                    | StoreError::ForeignDatabase { .. }
                    | StoreError::NotADatabase { .. }
                    | StoreError::Corrupt { .. },
                ) if !created && waited.elapsed() < patience && open::just_written(&path) => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break other,
            }
        };
        let conn = match conn {
            Ok(conn) => conn,
            Err(e) => {
                if created {
                    open::remove_if_empty(&path);
                }
                return Err(e);
            }
        };
        let reader = open::open_reader(&path, &options)?;
        Self::start(path, conn, options.max_batch, Some(reader))
    }

    /// The writer's connection to the store at `path`, checked (and
    /// migrated) as [`open_with`](Self::open_with) says.
    fn open_checked(
        path: &Path,
        options: &SqliteOptions,
        created: bool,
    ) -> StoreResult<Connection> {
        if !created {
            precheck_file(path, Access::ReadWrite)?;
        }
        let traces = open::has_traces(path);
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| open_error(path, "opening", e))?;
        // Until the file passes the checks, closing this connection must
        // not checkpoint a `-wal` into it (nor delete the `-wal`).
        open::keep_wal_on_close(&conn, true).map_err(|e| open_error(path, "opening", e))?;
        match check_and_migrate(&conn, path, options, created) {
            Ok(()) => Ok(conn),
            Err(e) => {
                // A `-wal` and `-shm` SQLite created for the checks hold
                // nothing: its close may remove them, as it would have.
                if !traces {
                    let _ = open::keep_wal_on_close(&conn, false);
                }
                Err(e)
            }
        }
    }

    /// Opens an existing store for reading only (`SQLITE_OPEN_READ_ONLY`):
    /// for tools that list and show executions, on files they may not
    /// write. Nothing is written, no migration runs, and the integrity
    /// check is skipped (it reads the whole file); the store's writes fail
    /// with [`StoreError::ReadOnly`].
    ///
    /// While a writer has the store open, its `-wal` and `-shm` files
    /// exist and are read (SQLite needs read access to both). With no
    /// writer they do not exist; if the directory lets this process create
    /// them SQLite does so, and otherwise the file is opened as immutable
    /// (SQLite's `immutable=1`), which is sound then: without a `-wal` file
    /// and with a directory nobody here can write, no writer is running.
    ///
    /// # Errors
    /// A [`StoreError`] naming the file if it is missing
    /// ([`StoreError::FileGone`] if its `-wal` or `-shm` is there), not a
    /// store of ours, or of a newer schema; [`StoreError::OlderSchema`]
    /// for a store of an older one (a 0.1 file: open it once with
    /// [`open`](Self::open), which migrates it).
    pub fn open_read_only(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        open::refuse_orphaned_wal(&path)?;
        precheck_file(&path, Access::ReadOnly)?;
        let conn = open::open_read_only(&path)?;
        Self::start(path, conn, 1, None)
    }

    /// Starts the writer thread on an opened, checked connection, and the
    /// reader thread on `reader`, a second connection of a store opened to
    /// write (reads of a read-only store run on its one thread).
    fn start(
        path: PathBuf,
        conn: Connection,
        max_batch: usize,
        reader: Option<Connection>,
    ) -> StoreResult<Self> {
        let writable = reader.is_some();
        let thread_error = |what: &str, e: std::io::Error| StoreError::Backend {
            store: describe(&path),
            what: what.to_owned(),
            source: Box::new(e),
        };
        let reader = match reader {
            Some(reader) => {
                reader.set_prepared_statement_cache_capacity(64);
                let (sender, receiver) = mpsc::channel::<Read>();
                let thread = std::thread::Builder::new()
                    .name("saga-sqlite-reader".to_owned())
                    .spawn(move || {
                        while let Ok(read) = receiver.recv() {
                            read(&reader);
                        }
                    })
                    .map_err(|e| thread_error("starting the reader thread", e))?;
                Some((sender, thread))
            }
            None => None,
        };
        // Room for every statement the store caches (about twenty), so that
        // none is parsed again after another pushed it out.
        conn.set_prepared_statement_cache_capacity(64);
        let (sender, receiver) = mpsc::channel::<Job>();
        // A store opened to write refuses its writes once its file is
        // deleted or replaced (they would be lost with the process).
        let watch = if writable {
            FileWatch::new(&path)
        } else {
            None
        };
        let writer = std::thread::Builder::new()
            .name("saga-sqlite-writer".to_owned())
            .spawn(move || writer_loop(&conn, &receiver, max_batch, watch))
            .map_err(|e| thread_error("starting the writer thread", e))?;
        let owners = Arc::new(Mutex::new(Owners::new(&path)));
        if writable {
            // The first write: dead owners' leases expired, their sidecars
            // removed. Not waited for: a busy store does not hold the open
            // up, and every write after it sees it.
            let _ = sender.send(liveness::sweep(Arc::clone(&owners)));
        }
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                owners,
                path,
                sender: Some(sender),
                writer: Some(writer),
                reader,
                work: watch::channel(0).0,
            }),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The owners' liveness, for a write job (on the writer thread).
    fn owners(&self) -> Arc<Mutex<Owners>> {
        Arc::clone(&self.inner.owners)
    }

    /// Tells this process's claimers that work may have become claimable.
    fn signal_work(&self) {
        self.inner.work.send_modify(|n| *n = n.wrapping_add(1));
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

    /// Runs `work` in the next group commit, in a savepoint of its own;
    /// resolves once it is durable.
    fn write<T, F>(&self, what: &'static str, work: F) -> BoxFuture<'static, StoreResult<T>>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>, &Path) -> StoreResult<T> + Send + 'static,
    {
        self.write_undone(what, Undo::Savepoint, work)
    }

    /// As [`write`](Self::write), without a savepoint: for `work` that
    /// writes nothing when it fails (see [`Undo::Batch`]).
    fn write_fenced<T, F>(&self, what: &'static str, work: F) -> BoxFuture<'static, StoreResult<T>>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>, &Path) -> StoreResult<T> + Send + 'static,
    {
        self.write_undone(what, Undo::Batch, work)
    }

    fn write_undone<T, F>(
        &self,
        what: &'static str,
        undo: Undo,
        work: F,
    ) -> BoxFuture<'static, StoreResult<T>>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>, &Path) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let path = self.inner.path.clone();
        let work: Box<writer::WriteWork> = Box::new(move |conn| match conn {
            Err(not_begun) => Pending {
                ok: false,
                finish: Box::new(move |_| {
                    let _ = tx.send(Err(match not_begun {
                        NotBegun::Failed(message) => StoreError::Backend {
                            store: describe(&path),
                            what: format!("beginning a transaction ({what})"),
                            source: message.into(),
                        },
                        NotBegun::Gone(problem) => StoreError::FileGone { path, problem },
                    }));
                }),
            },
            // A panic of `work` (a bug) fails this write as an error
            // would: its savepoint is rolled back, or, for a write without
            // one that wrote, its batch. The writer thread goes on.
            Ok(conn) => match catch_unwind(AssertUnwindSafe(|| work(conn, &path)))
                .unwrap_or_else(|panic| Err(panicked(&path, what, &*panic)))
            {
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
        });
        self.submit(Job::Write(Write { undo, work }), rx)
    }

    /// Runs `work` outside any transaction: on the reader's connection, or
    /// on the writer's after its batch for a read-only store. It sees
    /// every write whose future resolved: a write's future resolves after
    /// its commit (with `synchronous=FULL`, in WAL mode, the commit's
    /// frames are synced before the WAL index publishes them).
    fn read<T, F>(&self, work: F) -> BoxFuture<'static, StoreResult<T>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Path) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let path = self.inner.path.clone();
        let read: Read = Box::new(move |conn| {
            // A panic of `work` (a bug) fails this read alone: the thread
            // goes on with the next.
            let answer = catch_unwind(AssertUnwindSafe(|| work(conn, &path)))
                .unwrap_or_else(|panic| Err(panicked(&path, "reading", &*panic)));
            let _ = tx.send(answer);
        });
        let sent = match &self.inner.reader {
            Some((reader, _)) => reader.send(read).map_err(|_| self.closed()),
            None => self.send(Job::Read(read)),
        };
        self.answer(sent, rx)
    }

    fn submit<T: Send + 'static>(
        &self,
        job: Job,
        rx: oneshot::Receiver<StoreResult<T>>,
    ) -> BoxFuture<'static, StoreResult<T>> {
        self.answer(self.send(job), rx)
    }

    /// The answer to a job `sent` to a thread.
    fn answer<T: Send + 'static>(
        &self,
        sent: StoreResult<()>,
        rx: oneshot::Receiver<StoreResult<T>>,
    ) -> BoxFuture<'static, StoreResult<T>> {
        if let Err(e) = sent {
            return Box::pin(std::future::ready(Err(e)));
        }
        // The error only if the thread went away: describing the store
        // formats its path, which every call paid for before.
        let path = self.inner.path.clone();
        Box::pin(async move {
            rx.await.map_err(|_| StoreError::Closed {
                store: describe(&path),
            })?
        })
    }
}

/// The error of work that panicked doing `what` on the store at `path`.
fn panicked(path: &Path, what: &str, payload: &(dyn std::any::Any + Send)) -> StoreError {
    StoreError::Backend {
        store: describe(path),
        what: format!("{what} (the store's code panicked: a bug, please report it)"),
        source: crate::error::panic_message(payload).into(),
    }
}

/// The owners, whatever a panic left them as.
fn owners(owners: &Mutex<Owners>) -> MutexGuard<'_, Owners> {
    owners.lock().unwrap_or_else(PoisonError::into_inner)
}

fn describe(path: &Path) -> String {
    format!("the SQLite store `{}`", path.display())
}
