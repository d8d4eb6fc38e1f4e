//! Options of the SQLite store: when commits reach the disk, busy timeout,
//! batch size, the integrity check on open.

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
