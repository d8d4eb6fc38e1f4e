//! Options of the SQLite store: when commits reach the disk, busy timeout,
//! batch size, the integrity check and the migration on open.

use std::time::Duration;

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

/// Options of a [`SqliteStore`](super::SqliteStore).
///
/// ```
/// use saga_core::store::{SqliteOptions, Synchronous};
///
/// let options = SqliteOptions::new().with_synchronous(Synchronous::Normal);
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub(super) synchronous: Synchronous,
    pub(super) busy_timeout: Duration,
    pub(super) max_batch: usize,
    pub(super) integrity_check: bool,
    pub(super) migrate: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            max_batch: 512,
            integrity_check: true,
            migrate: true,
        }
    }
}

impl SqliteOptions {
    /// The defaults: durable commits, a 5 s busy timeout, batches of up to
    /// 512 writes, an integrity check on open, an older schema migrated.
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

    /// Whether opening migrates a store of an older schema version
    /// (default: yes, as a service's own processes want: the first open by
    /// a new version brings its store up to date). With `false`, such a
    /// file is refused with
    /// [`StoreError::OlderSchema`](crate::store::StoreError::OlderSchema)
    /// and left byte for byte as it was, so processes of the older version
    /// can still open it (an older build refuses a migrated file as newer
    /// than it understands). Tools that mend a store (the `saga` command's
    /// `resume`, `abandon` and `cancel`) open so, and leave the migration
    /// to the service. A missing file is still created as a new store of
    /// this version.
    #[must_use]
    pub fn with_migrate(mut self, yes: bool) -> Self {
        self.migrate = yes;
        self
    }
}
