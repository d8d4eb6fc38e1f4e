//! Owners' liveness, proved by an OS file lock: on SQLite every owner of a
//! store runs on the machine that holds its file, so a process that died
//! can be told from one that lives without waiting for its leases to
//! expire.
//!
//! Each owner of this store (an engine's owner id, the first time it takes
//! a lease here) holds a lock on a sidecar file of its own,
//! `<store>-owner-<owner id>`, for as long as the store is open: an empty
//! SQLite database in which it keeps an exclusive transaction open, so the
//! lock is SQLite's own (POSIX advisory locks on Unix, `LockFileEx` on
//! Windows), which the system drops when the process dies, whatever kills
//! it. A claimer that finds a live lease of another owner tries that
//! owner's lock: taken, the owner's process is gone, and its leases are
//! claimable at once; refused, it lives (in another process, or behind
//! another store of this process), and its leases stand until they
//! expire. Where nothing can be proved (no sidecar, an owner id that is
//! not a plain name, a directory it cannot write) the lease's expiry
//! decides, as before.
//!
//! The locks are the process's, not a store object's: two stores of this
//! process on one file, used by one owner, share its lock (a count of the
//! stores that use it), so an owner lives while any of them is open. When
//! the last of them closes, the lock is released and the sidecar left in
//! place, as a dead process leaves it: a closed store's owner takes no
//! lease any more, whatever state its leases are in, so a claimer proves
//! it gone and takes its executions over at once, a clean exit no later
//! than a crash.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// The sidecar locks this process holds, by sidecar path: each with the
/// number of open stores whose owner it is. A lock is released when its
/// count falls to zero.
static HELD: Mutex<BTreeMap<PathBuf, Held>> = Mutex::new(BTreeMap::new());

/// One held lock.
struct Held {
    /// Holds the lock while it lives.
    _conn: Connection,
    /// The open stores whose owner it is.
    stores: usize,
}

/// The process's held locks, whatever a panic left them as.
fn held() -> std::sync::MutexGuard<'static, BTreeMap<PathBuf, Held>> {
    HELD.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The owners of one store in this process, and those found dead.
pub(super) struct Owners {
    db: PathBuf,
    /// This store's owners, each counted once in [`HELD`].
    mine: HashSet<String>,
    /// Owners whose process is gone: for good, as owner ids are never
    /// reused.
    dead: HashSet<String>,
}

impl Owners {
    /// The owners of the store in `db`. For a store opened to write,
    /// removes the sidecars that dead processes left (one that died
    /// holding no lease is never probed by a claim); a read-only store
    /// writes nothing, here either.
    pub(super) fn new(db: &Path, writable: bool) -> Self {
        // One file, one set of sidecar names, whatever path opened it: the
        // process's locks are keyed by them.
        let db = std::fs::canonicalize(db).unwrap_or_else(|_| db.to_path_buf());
        let mut owners = Owners {
            db,
            mine: HashSet::new(),
            dead: HashSet::new(),
        };
        if writable {
            owners.sweep();
        }
        owners
    }

    /// Probes every sidecar of this store; the dead ones are removed.
    fn sweep(&mut self) {
        let (Some(dir), Some(name)) = (self.db.parent(), self.db.file_name()) else {
            return;
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut prefix = name.to_owned();
        prefix.push("-owner-");
        let prefix = prefix.to_string_lossy().into_owned();
        for entry in entries.flatten() {
            let file = entry.file_name();
            let owner = file.to_string_lossy();
            match owner.strip_prefix(&prefix) {
                Some(owner) if self.probe(owner) => {
                    self.dead.insert(owner.to_owned());
                }
                _ => {}
            }
        }
    }

    /// The sidecar of `owner`; `None` for an owner id that is not a plain
    /// name (it would not make a safe file name).
    fn sidecar(&self, owner: &str) -> Option<PathBuf> {
        let plain = !owner.is_empty()
            && owner.len() <= 100
            && owner
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !plain {
            return None;
        }
        let mut name = self.db.as_os_str().to_owned();
        name.push(format!("-owner-{owner}"));
        Some(PathBuf::from(name))
    }

    /// Takes the lock of `owner`, an owner of this store, before its first
    /// lease here. Best effort: an owner whose lock cannot be taken is
    /// judged by its leases' expiry alone.
    pub(super) fn hold(&mut self, owner: &str) {
        if self.mine.contains(owner) {
            return;
        }
        let Some(path) = self.sidecar(owner) else {
            return;
        };
        let mut held = held();
        if let Some(lock) = held.get_mut(&path) {
            // Another store of this process, on this file, for this owner.
            lock.stores += 1;
            self.mine.insert(owner.to_owned());
            return;
        }
        match lock(&path, true) {
            Ok(conn) => {
                held.insert(
                    path,
                    Held {
                        _conn: conn,
                        stores: 1,
                    },
                );
                self.mine.insert(owner.to_owned());
            }
            Err(error) => {
                log::debug!(target: "saga", owner:% = crate::escape::Escaped(owner), error:% = crate::escape::Escaped(&error.to_string()); "owner lock not taken; leases expire by time");
            }
        }
    }

    /// Of `owners` (holders of live leases), those whose process is gone.
    pub(super) fn dead_among(&mut self, owners: impl IntoIterator<Item = String>) -> Vec<String> {
        let mut dead = Vec::new();
        for owner in owners {
            if self.mine.contains(&owner) || self.held_here(&owner) {
                continue;
            }
            if self.dead.contains(&owner) || self.probe(&owner) {
                self.dead.insert(owner.clone());
                dead.push(owner);
            }
        }
        dead
    }

    /// Whether this process holds `owner`'s lock, for another store on
    /// this file: it lives.
    fn held_here(&self, owner: &str) -> bool {
        self.sidecar(owner)
            .is_some_and(|path| held().contains_key(&path))
    }

    /// Whether `owner`'s lock can be taken: its process is gone. The
    /// sidecar is removed then.
    fn probe(&self, owner: &str) -> bool {
        let Some(path) = self.sidecar(owner) else {
            return false;
        };
        if !path.exists() {
            return false;
        }
        match lock(&path, false) {
            Ok(conn) => {
                drop(conn);
                let _ = std::fs::remove_file(&path);
                true
            }
            Err(_) => false,
        }
    }
}

impl Drop for Owners {
    fn drop(&mut self) {
        // The store closes: its owners take no lease here any more. An
        // owner no other store of this process uses is gone from now on,
        // its leases in whatever state: its lock is released and its
        // sidecar kept, for a claimer to prove it gone and take its
        // executions over at once (and remove the sidecar), as after a
        // crash. Removing the sidecar here would leave its live leases
        // nothing to prove, to stand until they expire.
        let mine = std::mem::take(&mut self.mine);
        let mut held = held();
        for owner in mine {
            let Some(path) = self.sidecar(&owner) else {
                continue;
            };
            let last = held.get_mut(&path).is_some_and(|lock| {
                lock.stores -= 1;
                lock.stores == 0
            });
            if last {
                // Dropping its connection releases the lock.
                held.remove(&path);
            }
        }
    }
}

/// Opens `path` (creating it, empty, if `create`) and takes its exclusive
/// lock, without waiting; the lock lasts as long as the connection.
fn lock(path: &Path, create: bool) -> rusqlite::Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::ZERO)?;
    conn.execute_batch("BEGIN EXCLUSIVE")?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("saga-liveness-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("sagas.db")
    }

    /// Releases `owner`'s lock as its process's death would: the sidecar
    /// is kept, and no other store of the process holds it.
    fn die(owners: &mut Owners, owner: &str) {
        assert!(owners.mine.remove(owner));
        let path = owners.sidecar(owner).unwrap();
        assert!(held().remove(&path).is_some());
        assert!(path.exists());
    }

    #[test]
    fn a_held_owner_lives_and_a_released_one_is_dead() {
        let db = scratch("held");
        let mut holder = Owners::new(&db, true);
        holder.hold("pid1-a");
        let mut claimer = Owners::new(&db, true);
        assert!(claimer.dead_among(["pid1-a".to_owned()]).is_empty());
        // Unknown owners (no sidecar) and odd ids are never judged dead.
        assert!(
            claimer
                .dead_among(["pid2-b".to_owned(), "../x".to_owned()])
                .is_empty()
        );
        die(&mut holder, "pid1-a");
        assert_eq!(claimer.dead_among(["pid1-a".to_owned()]), ["pid1-a"]);
        assert!(!claimer.sidecar("pid1-a").unwrap().exists());
    }

    #[test]
    fn a_closed_store_s_owner_is_dead_at_once() {
        let db = scratch("closed");
        let mut holder = Owners::new(&db, true);
        holder.hold("pid1-closed");
        let mut claimer = Owners::new(&db, true);
        assert!(claimer.dead_among(["pid1-closed".to_owned()]).is_empty());
        drop(holder);
        assert_eq!(
            claimer.dead_among(["pid1-closed".to_owned()]),
            ["pid1-closed"]
        );
        assert!(!claimer.sidecar("pid1-closed").unwrap().exists());
    }

    #[test]
    fn an_owner_lives_while_any_store_of_its_process_holds_it() {
        let db = scratch("shared");
        let mut first = Owners::new(&db, true);
        first.hold("pid1-shared");
        let mut second = Owners::new(&db, true);
        second.hold("pid1-shared");
        let mut claimer = Owners::new(&db, true);
        drop(first);
        assert!(claimer.dead_among(["pid1-shared".to_owned()]).is_empty());
        // A store opened now does not sweep it away either.
        drop(Owners::new(&db, true));
        assert!(second.sidecar("pid1-shared").unwrap().exists());
        drop(second);
        assert_eq!(
            claimer.dead_among(["pid1-shared".to_owned()]),
            ["pid1-shared"]
        );
    }

    #[test]
    fn opening_removes_the_sidecars_of_dead_owners_only() {
        let db = scratch("sweep");
        let mut live = Owners::new(&db, true);
        live.hold("pid1-live");
        let mut died = Owners::new(&db, true);
        died.hold("pid2-died");
        die(&mut died, "pid2-died");
        let sidecar = |owner: &str| live.sidecar(owner).unwrap();
        assert!(sidecar("pid2-died").exists());
        let opened = Owners::new(&db, true);
        assert!(!sidecar("pid2-died").exists());
        assert!(sidecar("pid1-live").exists());
        assert!(opened.dead.contains("pid2-died"));
        // Closed, its owner is gone: the next store opened to write
        // removes its sidecar; a read-only one writes nothing.
        let closed = live.sidecar("pid1-live").unwrap();
        drop(live);
        drop(Owners::new(&db, false));
        assert!(closed.exists());
        drop(Owners::new(&db, true));
        assert!(!closed.exists());
    }
}
