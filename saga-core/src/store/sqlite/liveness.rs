//! Owners' liveness, proved by an OS file lock: on SQLite every owner of a
//! store runs on the machine that holds its file, so a process that died
//! can be told from one that lives without waiting for its leases to
//! expire.
//!
//! Each owner of this store (an engine's owner id, the first time it takes
//! a lease here) holds a lock on a sidecar file of its own,
//! `<store>-owner-<owner id>`, for as long as the store is open: an empty
//! SQLite database in which it keeps an exclusive transaction open (its
//! journal in memory, so no file beside it: see [`lock`]), so the lock
//! is SQLite's own (POSIX advisory locks on Unix, `LockFileEx` on
//! Windows), which the system drops when the process dies, whatever kills
//! it. A claimer that finds a live lease of another owner tries that
//! owner's lock: taken, the owner's process is gone, and its leases are
//! claimable at once; refused, it lives (in another process, or behind
//! another store of this process), and its leases stand until they
//! expire. Where nothing can be proved (no sidecar, an owner id that is
//! not a plain name, a directory it cannot write) the lease's expiry
//! decides, as before.
//!
//! The proof is made durable before it is thrown away: the write
//! transaction that finds an owner dead (a claim's, or the sweep a
//! store opened to write runs first) expires every live lease of that
//! owner in the database ([`expire_leases`]), and the sidecar is
//! removed only once that transaction has committed. So every later
//! process, one that never saw the sidecar included (a restarted
//! worker, the CLI), finds the dead owner's executions claimable at
//! once; a transaction that cannot commit (the store busy, a full disk)
//! leaves the sidecar for the next one. On Unix an owner makes its
//! sidecar and locks it under another name, then renames it into place
//! ([`lock_new`]), so a sidecar under its name is locked for as long as
//! its owner lives, and a lock not taken leaves no sidecar (the owner's
//! leases then expire by time); one a process killed before the rename
//! leaves under the other name is removed by the next sweep. Elsewhere
//! (Windows does not rename a file SQLite holds open) the sidecar is
//! locked in place and this is not guaranteed: a lock not taken removes
//! the sidecar where it can, and the owner's leases then expire by
//! time; a sidecar it cannot remove (one already there, a prober's
//! still open) says the owner is dead (fencing still holds). The locks
//! are also tried inside a write transaction, which an owner's first
//! lease (and its [`hold`](Owners::hold)) is taken in too. Fencing is
//! the token's, not the expiry's: an owner judged dead writes nothing
//! with an expired lease that anyone else claimed.
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
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};

use super::writer::{Job, Pending, Undo, Write};

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
    /// The owners of the store in `db`. Nothing is probed yet: a store
    /// opened to write runs [`sweep`] first.
    pub(super) fn new(db: &Path) -> Self {
        // One file, one set of sidecar names, whatever path opened it: the
        // process's locks are keyed by them.
        let db = std::fs::canonicalize(db).unwrap_or_else(|_| db.to_path_buf());
        Owners {
            db,
            mine: HashSet::new(),
            dead: HashSet::new(),
        }
    }

    /// Probes every sidecar of this store but those of live owners of this
    /// process: the owners found dead, with a sidecar still to remove.
    fn dead_by_sidecar(&mut self) -> Vec<String> {
        let (Some(dir), Some(name)) = (self.db.parent(), self.db.file_name()) else {
            return Vec::new();
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut prefix = name.to_owned();
        prefix.push("-owner-");
        let prefix = prefix.to_string_lossy().into_owned();
        let mut owners = Vec::new();
        let mut unfinished = Vec::new();
        for entry in entries.flatten() {
            let file = entry.file_name();
            let Some(owner) = file
                .to_string_lossy()
                .strip_prefix(&prefix)
                .map(str::to_owned)
            else {
                continue;
            };
            // A sidecar in the making is not a sidecar; nor are SQLite's
            // own companions of one (a journal, which a sidecar's lock no
            // longer makes: see [`lock`]).
            if owner.ends_with(UNFINISHED) {
                unfinished.push(entry.path());
            } else if !["-journal", "-wal", "-shm"]
                .iter()
                .any(|suffix| owner.ends_with(suffix))
            {
                owners.push(owner);
            }
        }
        remove_unfinished(&unfinished);
        self.dead_among(owners)
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
    /// lease here (in the write transaction that takes it). Best effort:
    /// an owner whose lock cannot be taken is judged by its leases' expiry
    /// alone.
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
        match lock_new(&path) {
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
    /// Called in a write transaction, which is to expire their leases
    /// ([`expire_leases`]) before their sidecars are removed
    /// ([`forget`](Self::forget)).
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

    /// Removes the sidecars of `dead` owners, once the leases they held
    /// are expired in a committed transaction: their death is recorded in
    /// the store, and the proof is not needed any more.
    pub(super) fn forget(&self, dead: &[String]) {
        for owner in dead {
            if !self.dead.contains(owner) {
                continue;
            }
            if let Some(path) = self.sidecar(owner) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    /// Whether this process holds `owner`'s lock, for another store on
    /// this file: it lives.
    fn held_here(&self, owner: &str) -> bool {
        self.sidecar(owner)
            .is_some_and(|path| held().contains_key(&path))
    }

    /// Whether `owner`'s lock can be taken: its process is gone. The
    /// sidecar stays, the proof, until the death is recorded.
    fn probe(&self, owner: &str) -> bool {
        let Some(path) = self.sidecar(owner) else {
            return false;
        };
        if !path.exists() {
            return false;
        }
        lock(&path, false).is_ok()
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

/// Expires, in the write transaction of `conn`, every live lease that the
/// `dead` owners (a JSON array of owner ids) hold on an execution not
/// ended: each is set to expire at `now`, so that any claimer, in any
/// process, takes it over at once. The owner and the token stay (who ran
/// it last; the fence is the token's). The number of leases expired.
pub(super) fn expire_leases(conn: &Connection, dead: &str, now: i64) -> rusqlite::Result<usize> {
    // Through the status index: the unfinished executions are few, the
    // leases as many as the executions kept. A stuck one holds a lease
    // between a resume's claim and its first commit.
    conn.prepare_cached(
        "UPDATE leases SET expires_at = ?1
         WHERE execution_id IN (
            SELECT e.id FROM executions e JOIN leases l ON l.execution_id = e.id
            WHERE e.status IN ('running', 'compensating', 'stuck')
              AND l.owner IN (SELECT value FROM json_each(?2))
              AND l.expires_at > ?1)",
    )?
    .execute(params![now, dead])
}

/// The sweep a store opened to write runs before anything else: the
/// owners whose sidecar proves them gone (whether they held a lease or
/// not) have their leases expired, and, once that is committed, their
/// sidecars removed. A transaction that cannot begin (the store busy for
/// longer than the busy timeout) or commit probes and removes nothing:
/// the sidecars stay for the next claimer.
pub(super) fn sweep(owners: Arc<Mutex<Owners>>) -> Job {
    let nothing = || Pending {
        ok: true,
        finish: Box::new(|_| {}),
    };
    Job::Write(Write {
        undo: Undo::Batch,
        work: Box::new(move |conn| {
            let Ok(conn) = conn else {
                return nothing();
            };
            let dead = super::owners(&owners).dead_by_sidecar();
            if dead.is_empty() {
                return nothing();
            }
            let list = serde_json::Value::from(dead.clone()).to_string();
            match expire_leases(conn, &list, crate::store::now_ms()) {
                Ok(_) => Pending {
                    ok: true,
                    finish: Box::new(move |commit| {
                        if commit.is_ok() {
                            super::owners(&owners).forget(&dead);
                        }
                    }),
                },
                Err(error) => {
                    log::warn!(target: "saga", error:% = crate::escape::Escaped(&error.to_string()); "dead owners' leases not expired; they expire by time");
                    Pending {
                        ok: false,
                        finish: Box::new(|_| {}),
                    }
                }
            }
        }),
    })
}

/// The end of the name a sidecar is made under ([`making`]).
const UNFINISHED: &str = ".locking";

/// The name a sidecar is made under, locked, before it is put in place:
/// not a sidecar's (an owner id is a plain name, without a `.`), so a
/// claimer never probes it.
#[cfg(unix)]
fn making(sidecar: &Path) -> PathBuf {
    let mut name = sidecar.as_os_str().to_owned();
    name.push(UNFINISHED);
    PathBuf::from(name)
}

/// How old a sidecar in the making must be for a sweep to remove it:
/// an owner locks and renames its own within milliseconds.
const UNFINISHED_AGE: Duration = Duration::from_secs(60);

/// Removes the sidecars in the making ([`making`]) at `paths` that are
/// older than [`UNFINISHED_AGE`] and whose lock can be taken: a process
/// killed between making one and putting it in place left it, and
/// nothing else would. One whose lock is held is an owner's putting its
/// sidecar in place now; a young one may be an owner's of another process
/// between making its file and locking it: both stay. Best effort.
fn remove_unfinished(paths: &[PathBuf]) {
    let old = |path: &PathBuf| {
        std::fs::metadata(path)
            .and_then(|m| m.modified())
            .is_ok_and(|made| made.elapsed().is_ok_and(|age| age >= UNFINISHED_AGE))
    };
    let paths: Vec<&PathBuf> = paths.iter().filter(|p| old(p)).collect();
    if paths.is_empty() {
        return;
    }
    // This process's owners make theirs holding the table: none of them
    // is caught in the making.
    let _held = held();
    for path in paths {
        if let Ok(conn) = lock(path, false) {
            // Removed while locked: no owner took it meanwhile.
            let _ = std::fs::remove_file(path);
            drop(conn);
        }
    }
}

/// Makes the sidecar `path` and takes its lock: made and locked under
/// another name ([`making`]), then renamed into place, so that a sidecar
/// under its name is always locked while its owner lives. Made and locked
/// in place, a lock not taken (a prober holding it longer than the owner
/// waits, an I/O error) left a live owner's sidecar unlocked, which the
/// next claimer took as proof of its death, taking its executions over
/// from a live process. A failure leaves no sidecar (the owner is judged
/// by its leases' expiry), and a sidecar already in place (left by a
/// store of this process that closed) is replaced.
#[cfg(unix)]
fn lock_new(path: &Path) -> Result<Connection, Box<dyn std::error::Error>> {
    let making = making(path);
    let locked = lock(&making, true).map_err(Box::from).and_then(|conn| {
        match std::fs::rename(&making, path) {
            Ok(()) => Ok(conn),
            Err(error) => Err(error.into()),
        }
    });
    if locked.is_err() {
        let _ = std::fs::remove_file(&making);
    }
    locked
}

/// Makes the sidecar `path` and takes its lock, in place: Windows does not
/// rename a file SQLite has open. A lock not taken removes the sidecar it
/// made (best effort), so it is not taken for the owner's death.
#[cfg(not(unix))]
fn lock_new(path: &Path) -> Result<Connection, Box<dyn std::error::Error>> {
    let existed = path.exists();
    lock(path, true).map_err(|error| {
        if !existed {
            let _ = std::fs::remove_file(path);
        }
        error.into()
    })
}

/// Opens `path` (creating it, empty, if `create`) and takes its exclusive
/// lock; the lock lasts as long as the connection. A prober does not wait:
/// a lock held is an owner alive. An owner taking its own lock waits a
/// moment for a prober that holds it (where the sidecar is locked in
/// place, see [`lock_new`]: a read-only store's claim probes outside a
/// write transaction).
///
/// The rollback journal is kept in memory, so a sidecar has no file
/// beside it. The exclusive transaction starts the empty database (its
/// first page, in memory), which in SQLite's default journal mode makes
/// a journal file, `<file>-journal`, kept for as long as the lock: a
/// killed process left it, and on Unix under the name the sidecar was
/// made under (`<sidecar>.locking-journal`), which no later connection
/// opens, rolls back or removes: one file more beside the store per
/// crash. Nothing is ever written to a sidecar (its transaction never
/// commits), so nothing is left to roll back after a crash either.
fn lock(path: &Path, create: bool) -> rusqlite::Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut patience = Duration::ZERO;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
        patience = Duration::from_millis(100);
    }
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(patience)?;
    // Reads the (empty) schema under a shared lock: refused, like the
    // transaction, while another connection holds the lock.
    conn.pragma_update_and_check(None, "journal_mode", "MEMORY", |row| {
        row.get::<_, String>(0)
    })?;
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
        let mut holder = Owners::new(&db);
        holder.hold("pid1-a");
        let mut claimer = Owners::new(&db);
        assert!(claimer.dead_among(["pid1-a".to_owned()]).is_empty());
        // Unknown owners (no sidecar) and odd ids are never judged dead.
        assert!(
            claimer
                .dead_among(["pid2-b".to_owned(), "../x".to_owned()])
                .is_empty()
        );
        die(&mut holder, "pid1-a");
        assert_eq!(claimer.dead_among(["pid1-a".to_owned()]), ["pid1-a"]);
        // The proof stays until the death is recorded.
        let sidecar = claimer.sidecar("pid1-a").unwrap();
        assert!(sidecar.exists());
        claimer.forget(&["pid1-a".to_owned()]);
        assert!(!sidecar.exists());
    }

    #[test]
    fn a_live_owner_s_sidecar_is_never_forgotten() {
        let db = scratch("forget");
        let mut holder = Owners::new(&db);
        holder.hold("pid1-live");
        let claimer = Owners::new(&db);
        claimer.forget(&["pid1-live".to_owned()]);
        assert!(claimer.sidecar("pid1-live").unwrap().exists());
    }

    #[test]
    fn a_closed_store_s_owner_is_dead_at_once() {
        let db = scratch("closed");
        let mut holder = Owners::new(&db);
        holder.hold("pid1-closed");
        let mut claimer = Owners::new(&db);
        assert!(claimer.dead_among(["pid1-closed".to_owned()]).is_empty());
        drop(holder);
        assert_eq!(
            claimer.dead_among(["pid1-closed".to_owned()]),
            ["pid1-closed"]
        );
    }

    #[test]
    fn an_owner_lives_while_any_store_of_its_process_holds_it() {
        let db = scratch("shared");
        let mut first = Owners::new(&db);
        first.hold("pid1-shared");
        let mut second = Owners::new(&db);
        second.hold("pid1-shared");
        let mut claimer = Owners::new(&db);
        drop(first);
        assert!(claimer.dead_among(["pid1-shared".to_owned()]).is_empty());
        // A sweep does not find it dead either.
        assert!(Owners::new(&db).dead_by_sidecar().is_empty());
        drop(second);
        assert_eq!(
            claimer.dead_among(["pid1-shared".to_owned()]),
            ["pid1-shared"]
        );
    }

    /// Whether a sidecar is at `path` and unlocked: what a claimer takes
    /// as its owner's death.
    #[cfg(unix)]
    fn unlocked(path: &Path) -> bool {
        path.exists() && lock(path, false).is_ok()
    }

    /// The job of [`probe_for_parent`]: the store's file and the owner,
    /// on two lines.
    #[cfg(unix)]
    const PROBE: &str = "SAGA_LIVENESS_PROBE";

    /// What a claimer and a sweep of another process find of `owner` of
    /// the store in `db`: this test binary run again for
    /// [`probe_for_parent`] alone. In this process the owners it holds
    /// are skipped (they live), whatever their sidecar's state.
    #[cfg(unix)]
    fn judged_by_another_process(db: &Path, owner: &str) -> String {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "store::sqlite::liveness::tests::probe_for_parent",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PROBE, format!("{}\n{owner}", db.display()))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "the probe failed: {stdout}");
        stdout
            .lines()
            .find_map(|line| Some(line.split_once("probe: ")?.1))
            .unwrap_or_else(|| panic!("the probe did not run: {stdout}"))
            .to_owned()
    }

    /// Run by [`judged_by_another_process`]; does nothing otherwise.
    #[cfg(unix)]
    #[test]
    fn probe_for_parent() {
        let Ok(job) = std::env::var(PROBE) else {
            return;
        };
        let (db, owner) = job.split_once('\n').unwrap();
        let db = Path::new(db);
        let mut claimer = Owners::new(db);
        let unlocked = unlocked(&claimer.sidecar(owner).unwrap());
        let dead = claimer.dead_among([owner.to_owned()]);
        let swept = Owners::new(db).dead_by_sidecar();
        println!("probe: unlocked {unlocked}, dead {dead:?}, swept {swept:?}");
    }

    #[cfg(unix)]
    #[test]
    fn an_owner_whose_sidecar_a_prober_holds_still_lives() {
        // A prober outside a write transaction (a read-only store's
        // claim) holds the sidecar's lock longer than the owner waits.
        let db = scratch("busy");
        let mut holder = Owners::new(&db);
        let sidecar = holder.sidecar("pid1-busy").unwrap();
        let prober = lock(&sidecar, true).unwrap();
        holder.hold("pid1-busy");
        drop(prober);
        assert!(sidecar.exists());
        assert_eq!(
            judged_by_another_process(&db, "pid1-busy"),
            "unlocked false, dead [], swept []",
            "a live owner's sidecar is unlocked"
        );
        // The same probe finds the owner dead once its store is closed.
        drop(holder);
        assert_eq!(
            judged_by_another_process(&db, "pid1-busy"),
            r#"unlocked true, dead ["pid1-busy"], swept ["pid1-busy"]"#
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_lock_not_taken_leaves_no_sidecar() {
        // The new sidecar's lock cannot be taken (held here, as a
        // prober's would be): the owner is judged by expiry alone, and no
        // unlocked sidecar says it is dead.
        let db = scratch("untaken");
        let mut holder = Owners::new(&db);
        let sidecar = holder.sidecar("pid1-untaken").unwrap();
        let making = making(&sidecar);
        let busy = lock(&making, true).unwrap();
        holder.hold("pid1-untaken");
        assert!(!sidecar.exists());
        assert!(!making.exists(), "the sidecar in the making is left");
        assert!(!holder.mine.contains("pid1-untaken"));
        drop(busy);
        assert!(Owners::new(&db).dead_by_sidecar().is_empty());

        // The sidecar cannot be put in place (a directory holds its
        // name): the same, and the directory is left alone.
        std::fs::create_dir(&sidecar).unwrap();
        std::fs::write(sidecar.join("x"), b"").unwrap();
        holder.hold("pid1-untaken");
        assert!(sidecar.is_dir());
        assert!(!making.exists(), "the sidecar in the making is left");
        assert!(!holder.mine.contains("pid1-untaken"));
    }

    #[cfg(unix)]
    #[test]
    fn a_sweep_removes_a_sidecar_left_in_the_making() {
        let db = scratch("unfinished");
        let owners = Owners::new(&db);
        // A process killed between making its sidecar and putting it in
        // place leaves it, unlocked.
        let left = making(&owners.sidecar("pid1-killed").unwrap());
        drop(lock(&left, true).unwrap());
        made_long_ago(&left);
        // An owner putting its sidecar in place now holds its lock.
        let now = making(&owners.sidecar("pid2-making").unwrap());
        let busy = lock(&now, true).unwrap();
        made_long_ago(&now);
        // One just made, not locked yet: its owner may lock it next.
        let young = making(&owners.sidecar("pid3-young").unwrap());
        drop(lock(&young, true).unwrap());
        assert!(Owners::new(&db).dead_by_sidecar().is_empty());
        assert!(!left.exists(), "a sidecar left in the making stays");
        assert!(now.exists(), "an owner's sidecar in the making was removed");
        assert!(young.exists(), "a sidecar just made was removed");
        drop(busy);
    }

    /// Dates `path` back past [`UNFINISHED_AGE`].
    #[cfg(unix)]
    fn made_long_ago(path: &Path) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        let then = std::time::SystemTime::now() - UNFINISHED_AGE * 2;
        file.set_modified(then).unwrap();
    }

    #[test]
    fn a_sidecar_has_no_file_beside_it() {
        // Neither its owner's lock nor a prober's makes one (a journal),
        // which a killed process would leave.
        let db = scratch("alone");
        let files = || {
            let mut names: Vec<String> = std::fs::read_dir(db.parent().unwrap())
                .unwrap()
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        let mut holder = Owners::new(&db);
        holder.hold("pid1-alone");
        let sidecar = holder.sidecar("pid1-alone").unwrap();
        assert!(lock(&sidecar, false).is_err(), "a live owner's lock taken");
        assert_eq!(files(), ["sagas.db-owner-pid1-alone"]);
        drop(holder);
        let prober = lock(&sidecar, false).unwrap();
        assert_eq!(files(), ["sagas.db-owner-pid1-alone"]);
        drop(prober);
        assert_eq!(files(), ["sagas.db-owner-pid1-alone"]);
    }

    #[test]
    fn a_sweep_finds_the_dead_owners_only() {
        let db = scratch("sweep");
        let mut live = Owners::new(&db);
        live.hold("pid1-live");
        let mut died = Owners::new(&db);
        died.hold("pid2-died");
        die(&mut died, "pid2-died");
        let sidecar = |owner: &str| live.sidecar(owner).unwrap();
        // SQLite's companion of a sidecar is not one.
        let journal = db.with_file_name("sagas.db-owner-pid3-gone-journal");
        std::fs::write(&journal, b"").unwrap();
        let mut sweeper = Owners::new(&db);
        assert_eq!(sweeper.dead_by_sidecar(), ["pid2-died"]);
        assert!(sidecar("pid2-died").exists());
        sweeper.forget(&["pid2-died".to_owned()]);
        assert!(!sidecar("pid2-died").exists());
        assert!(sidecar("pid1-live").exists());
        // Closed, its owner is gone.
        drop(live);
        assert_eq!(Owners::new(&db).dead_by_sidecar(), ["pid1-live"]);
    }
}
