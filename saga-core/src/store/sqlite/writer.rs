//! The writer thread of the SQLite store: group commit, one transaction
//! per batch of writes; a write that may fail half-way in its own
//! savepoint.

use std::cell::RefCell;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, Statement};

/// Work for the writer thread.
pub(super) enum Job {
    /// Runs inside the batch's transaction; returns what to do once the
    /// commit's fate is known.
    Write(Write),
    /// Runs after the batch's commit.
    Read(Read),
}

/// A read, given a connection outside any transaction.
pub(super) type Read = Box<dyn FnOnce(&Connection) + Send>;

/// A write and how a failure of it is undone.
pub(super) struct Write {
    pub(super) undo: Undo,
    /// Given an error instead of a connection when the transaction could
    /// not begin.
    pub(super) work: Box<WriteWork>,
}

/// How the writer undoes a write that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Undo {
    /// In a savepoint of its own, rolled back alone: for a write of
    /// several statements that may fail after one of them wrote.
    Savepoint,
    /// Without a savepoint (two statements and their copies of the pages
    /// it writes, about a tenth of an append's cost): for a write whose
    /// failure writes nothing (one writing statement, or a first statement
    /// that fences the rest). Should one fail after writing anyway (a
    /// damaged file, an I/O error), the writer rolls back its whole batch
    /// so far, the writes before it fail with it, and the rest of the
    /// batch goes on in a new transaction.
    Batch,
}

pub(super) type WriteWork = dyn FnOnce(Result<&Db<'_>, NotBegun>) -> Pending + Send;

/// Why a batch's transaction did not begin: what each of its writes is
/// given instead of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum NotBegun {
    /// SQLite's `BEGIN` (or the `ROLLBACK` of a transaction left open)
    /// failed: its message.
    Failed(String),
    /// The store's file was deleted or replaced while open
    /// ([`FileWatch`]): what was found and what to do.
    Gone(String),
}

impl std::fmt::Display for NotBegun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotBegun::Failed(message) | NotBegun::Gone(message) => f.write_str(message),
        }
    }
}

/// Whether the path of a store still names the file its connection has
/// open: a file deleted (or moved away, or replaced by another) under a
/// running process still takes its writes, seen by no one else and lost
/// when the process exits. Looked at (one `stat`) before a batch, at most
/// once a [`FileWatch::EVERY`]; once it is gone, every write is refused.
#[cfg_attr(not(unix), allow(dead_code))]
pub(super) struct FileWatch {
    path: PathBuf,
    /// The file's device and inode at open.
    #[cfg(unix)]
    id: (u64, u64),
    looked: Instant,
    gone: Option<String>,
}

#[cfg_attr(not(unix), allow(dead_code))]
impl FileWatch {
    /// The longest time between two looks.
    const EVERY: Duration = Duration::from_secs(1);

    /// Watches the file `path` names now (the one just opened); `None`
    /// where it cannot be told (no file identity but on Unix, or no
    /// metadata).
    pub(super) fn new(path: &Path) -> Option<Self> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let metadata = std::fs::metadata(path).ok()?;
            Some(FileWatch {
                path: path.to_path_buf(),
                id: (metadata.dev(), metadata.ino()),
                looked: Instant::now(),
                gone: None,
            })
        }
        #[cfg(not(unix))]
        {
            let _ = path;
            None
        }
    }

    /// Why writes are refused, if the file is gone: looks again if the
    /// last look is [`EVERY`](Self::EVERY) old, and logs an error the
    /// first time it finds the file gone.
    fn gone(&mut self) -> Option<&str> {
        if self.gone.is_none() && self.looked.elapsed() >= Self::EVERY {
            self.looked = Instant::now();
            if let Some(how) = self.look() {
                log::error!(target: "saga", path:% = crate::escape::Escaped(&self.path.display().to_string()), found = how; "sqlite store file deleted or replaced while open; every write is refused until the process restarts");
                self.gone = Some(format!(
                    "was deleted or replaced while this process had it open ({how}); every write is refused from now on, since it would go to a file no one else sees and be lost when the process exits: put the store file back in place, then restart the process"
                ));
            }
        }
        self.gone.as_deref()
    }

    /// What the path names now, if not the watched file.
    #[cfg(unix)]
    fn look(&self) -> Option<&'static str> {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.id => None,
            Ok(_) => Some("another file is at its path"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("no file is at its path"),
            // Not to be told (a directory made unreadable): not taken
            // for gone.
            Err(_) => None,
        }
    }

    #[cfg(not(unix))]
    fn look(&self) -> Option<&'static str> {
        None
    }
}

/// The writer's connection, with the statements of the hot path (an
/// append's) kept prepared by the address of their text: rusqlite's
/// statement cache hashes the text and moves an LRU entry (an allocation)
/// at each use and again at each return, about 5k instructions a write.
pub(super) struct Db<'c> {
    conn: &'c Connection,
    kept: RefCell<Vec<((usize, usize), Statement<'c>)>>,
}

/// How many statements a [`Db`] keeps; more go through the connection's
/// cache.
const KEPT: usize = 16;

impl<'c> Db<'c> {
    fn new(conn: &'c Connection) -> Self {
        Db {
            conn,
            kept: RefCell::new(Vec::with_capacity(KEPT)),
        }
    }

    /// Runs `run` on the statement of `sql` (a literal, or text that lives
    /// as long as the program), prepared the first time.
    pub(super) fn kept<T>(
        &self,
        sql: &'static str,
        run: impl FnOnce(&mut Statement<'c>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        // The address and the length: a prefix of a text is another text.
        let key = (sql.as_ptr() as usize, sql.len());
        let Ok(mut kept) = self.kept.try_borrow_mut() else {
            // Called from within `run`: not kept.
            return run(&mut *self.conn.prepare_cached(sql)?);
        };
        if let Some(i) = kept.iter().position(|(k, _)| *k == key) {
            return run(&mut kept[i].1);
        }
        if kept.len() == KEPT {
            drop(kept);
            return run(&mut *self.conn.prepare_cached(sql)?);
        }
        let stmt = self.conn.prepare(sql)?;
        kept.push((key, stmt));
        let last = kept.len() - 1;
        run(&mut kept[last].1)
    }
}

impl Deref for Db<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

pub(super) struct Pending {
    /// Whether the work succeeded (its savepoint is kept).
    pub(super) ok: bool,
    /// Answers the caller, given the commit's result.
    pub(super) finish: Box<dyn FnOnce(Result<(), String>) + Send>,
}

/// Runs one statement of transaction control (`BEGIN IMMEDIATE`,
/// `SAVEPOINT job`, ...) kept prepared ([`Db::kept`]): parsing
/// them again for every write cost as much as the write's own
/// statements.
fn control(db: &Db<'_>, sql: &'static str) -> rusqlite::Result<()> {
    db.kept(sql, |stmt| stmt.execute([])).map(|_| ())
}

/// The writer thread: one batch of writes per transaction, then the reads
/// that arrived with them.
pub(super) fn writer_loop(
    conn: &Connection,
    receiver: &mpsc::Receiver<Job>,
    max_batch: usize,
    mut watch: Option<FileWatch>,
) {
    let db = Db::new(conn);
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
            let gone = watch.as_mut().and_then(FileWatch::gone);
            match gone {
                Some(why) => refuse_batch(writes, &NotBegun::Gone(why.to_owned())),
                None => write_batch(&db, writes),
            }
        }
        for read in reads {
            read(conn);
        }
    }
}

/// Begins a batch's transaction. One still open (a `ROLLBACK` after a
/// failure failed too) is rolled back first: none of its writes was
/// answered as committed, and left open it would fail every later batch
/// and hold the write lock against other processes.
fn begin(db: &Db<'_>) -> Result<(), NotBegun> {
    if !db.conn.is_autocommit() {
        db.conn.execute_batch("ROLLBACK").map_err(|e| {
            NotBegun::Failed(format!(
                "a failed transaction could not be rolled back: {e}"
            ))
        })?;
    }
    control(db, "BEGIN IMMEDIATE").map_err(|e| NotBegun::Failed(e.to_string()))
}

/// Answers `writes` with `why` without running them.
fn refuse_batch(writes: Vec<Write>, why: &NotBegun) {
    for write in writes {
        let pending = (write.work)(Err(why.clone()));
        (pending.finish)(Err(why.to_string()));
    }
}

/// Runs `writes` in one transaction and commits it, then answers them.
fn write_batch(db: &Db<'_>, writes: Vec<Write>) {
    let conn = db.conn;
    let mut begun = begin(db);
    let mut pending = Vec::with_capacity(writes.len());
    for write in writes {
        if let Err(message) = &begun {
            // The transaction never began: the work does not run and its
            // caller hears why.
            pending.push((write.work)(Err(message.clone())));
            continue;
        }
        let before = conn.total_changes();
        let step = match write.undo {
            Undo::Savepoint => {
                let savepoint = control(db, "SAVEPOINT job");
                let step = (write.work)(
                    savepoint
                        .as_ref()
                        .map(|()| db)
                        .map_err(|e| NotBegun::Failed(e.to_string())),
                );
                let closed = if step.ok {
                    control(db, "RELEASE job")
                } else {
                    conn.execute_batch("ROLLBACK TO job; RELEASE job")
                };
                if let Err(e) = closed {
                    log::error!(target: "saga", error:% = crate::escape::Escaped(&e.to_string()); "sqlite savepoint failed");
                }
                step
            }
            Undo::Batch => (write.work)(Ok(db)),
        };
        // The transaction is gone (SQLite rolls it back itself on some
        // errors: a full disk, an I/O error), or a write without a
        // savepoint wrote, then failed: nothing but the whole transaction
        // undoes it.
        let lost = conn.is_autocommit();
        let half_way = write.undo == Undo::Batch && !step.ok && conn.total_changes() != before;
        if !lost && !half_way {
            pending.push(step);
            continue;
        }
        log::error!(target: "saga", "sqlite write failed half-way; its batch is rolled back");
        if !lost {
            let _ = conn.execute_batch("ROLLBACK");
        }
        // Its own caller hears its error, if it failed.
        let undone = Err("rolled back: a write of the same commit failed half-way".to_owned());
        for p in pending.drain(..) {
            (p.finish)(undone.clone());
        }
        (step.finish)(undone);
        begun = begin(db);
    }
    let commit = match begun {
        Ok(()) => {
            let commit = control(db, "COMMIT").map_err(|e| e.to_string());
            if commit.is_err() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            commit
        }
        Err(message) => Err(message.to_string()),
    };
    for p in pending {
        (p.finish)(commit.clone());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    type Answers = Arc<Mutex<Vec<(&'static str, Result<(), String>)>>>;

    /// A write that inserts `row`, then fails if `fail_after` (or fails
    /// before writing if `fail_before`).
    fn job(
        answers: &Answers,
        name: &'static str,
        undo: Undo,
        fail_before: bool,
        fail_after: bool,
    ) -> Job {
        let answers = Arc::clone(answers);
        Job::Write(Write {
            undo,
            work: Box::new(move |conn| {
                let conn = conn.unwrap();
                let ok = !fail_before && {
                    conn.execute("INSERT INTO t VALUES (?1)", [name]).unwrap();
                    !fail_after
                };
                Pending {
                    ok,
                    finish: Box::new(move |commit| {
                        let answer = if ok { commit } else { Err("failed".to_owned()) };
                        answers.lock().unwrap().push((name, answer));
                    }),
                }
            }),
        })
    }

    /// Runs `jobs` as one batch on a fresh database; the rows committed
    /// and each write's answer.
    fn run(jobs: impl FnOnce(&Answers) -> Vec<Job>) -> (Vec<String>, Answers) {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (name TEXT)").unwrap();
        let answers = Answers::default();
        let (sender, receiver) = mpsc::channel();
        for job in jobs(&answers) {
            sender.send(job).unwrap();
        }
        drop(sender);
        writer_loop(&conn, &receiver, 512, None);
        let mut stmt = conn.prepare("SELECT name FROM t ORDER BY name").unwrap();
        let rows = stmt
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<Vec<String>, _>>()
            .unwrap();
        (rows, answers)
    }

    fn answer(answers: &Answers, name: &str) -> Result<(), String> {
        let answers = answers.lock().unwrap();
        answers.iter().find(|(n, _)| *n == name).unwrap().1.clone()
    }

    /// A transaction that ends under a write (as SQLite ends it itself on
    /// a full disk or an I/O error) fails the writes before it, which were
    /// in it, and the batch goes on in a new one.
    #[test]
    fn a_transaction_lost_under_a_write_fails_its_writes_and_goes_on() {
        for undo in [Undo::Savepoint, Undo::Batch] {
            let (rows, answers) = run(|a| {
                let answers = Arc::clone(a);
                let lost = Job::Write(Write {
                    undo,
                    work: Box::new(move |conn| {
                        let conn = conn.unwrap();
                        conn.execute("INSERT INTO t VALUES ('b')", []).unwrap();
                        conn.execute_batch("ROLLBACK").unwrap();
                        Pending {
                            ok: true,
                            finish: Box::new(move |commit| {
                                answers.lock().unwrap().push(("b", commit));
                            }),
                        }
                    }),
                });
                vec![
                    job(a, "a", Undo::Batch, false, false),
                    lost,
                    job(a, "c", Undo::Batch, false, false),
                ]
            });
            assert_eq!(rows, ["c"], "{undo:?}");
            assert!(answer(&answers, "a").is_err());
            assert!(answer(&answers, "b").is_err());
            assert_eq!(answer(&answers, "c"), Ok(()));
        }
    }

    /// A statement is prepared once; a nested one and those beyond the
    /// kept ones still run (through the connection's cache).
    #[test]
    fn a_db_keeps_its_statements_prepared() {
        let conn = Connection::open_in_memory().unwrap();
        let db = Db::new(&conn);
        let one = |db: &Db<'_>| db.kept("SELECT 1", |s| s.query_row([], |r| r.get::<_, i64>(0)));
        assert_eq!(one(&db).unwrap(), 1);
        assert_eq!(one(&db).unwrap(), 1);
        assert_eq!(db.kept.borrow().len(), 1);
        let nested = db.kept("SELECT 2", |s| {
            let inner = one(&db)?;
            Ok(inner + s.query_row([], |r| r.get::<_, i64>(0))?)
        });
        assert_eq!(nested.unwrap(), 3);
        for n in 0..2 * KEPT {
            let sql: &'static str = Box::leak(format!("SELECT {n}").into_boxed_str());
            let got = db.kept(sql, |s| s.query_row([], |r| r.get::<_, usize>(0)));
            assert_eq!(got.unwrap(), n);
        }
        assert_eq!(db.kept.borrow().len(), KEPT);
    }

    #[test]
    fn a_write_that_fails_before_writing_leaves_its_neighbours() {
        let (rows, answers) = run(|a| {
            vec![
                job(a, "a", Undo::Batch, false, false),
                job(a, "b", Undo::Batch, true, false),
                job(a, "c", Undo::Batch, false, false),
            ]
        });
        assert_eq!(rows, ["a", "c"]);
        assert_eq!(answer(&answers, "a"), Ok(()));
        assert!(answer(&answers, "b").is_err());
        assert_eq!(answer(&answers, "c"), Ok(()));
    }

    #[test]
    fn a_savepoint_undoes_a_half_way_failure_alone() {
        let (rows, answers) = run(|a| {
            vec![
                job(a, "a", Undo::Batch, false, false),
                job(a, "b", Undo::Savepoint, false, true),
                job(a, "c", Undo::Batch, false, false),
            ]
        });
        assert_eq!(rows, ["a", "c"]);
        assert_eq!(answer(&answers, "a"), Ok(()));
        assert!(answer(&answers, "b").is_err());
        assert_eq!(answer(&answers, "c"), Ok(()));
    }

    /// Without a savepoint, a write that fails after writing takes the
    /// batch so far with it: nothing of it is committed, every write of it
    /// hears so, and the writes after it commit.
    #[test]
    fn a_half_way_failure_without_a_savepoint_rolls_back_the_batch_so_far() {
        let (rows, answers) = run(|a| {
            vec![
                job(a, "a", Undo::Savepoint, false, false),
                job(a, "b", Undo::Batch, false, false),
                job(a, "c", Undo::Batch, false, true),
                job(a, "d", Undo::Batch, false, false),
            ]
        });
        assert_eq!(rows, ["d"]);
        assert!(answer(&answers, "a").is_err());
        assert!(answer(&answers, "b").is_err());
        assert!(answer(&answers, "c").is_err());
        assert_eq!(answer(&answers, "d"), Ok(()));
    }
}

#[cfg(test)]
mod full_disk_tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    type Answers = Arc<Mutex<Vec<(&'static str, Result<(), String>)>>>;

    fn job(
        answers: &Answers,
        name: &'static str,
        undo: Undo,
        sql: &'static str,
        fail_after: bool,
    ) -> Job {
        let answers = Arc::clone(answers);
        Job::Write(Write {
            undo,
            work: Box::new(move |conn| {
                let conn = conn.unwrap();
                let ok = conn.execute(sql, [name]).is_ok() && !fail_after;
                Pending {
                    ok,
                    finish: Box::new(move |commit| {
                        let answer = if ok { commit } else { Err("failed".to_owned()) };
                        answers.lock().unwrap().push((name, answer));
                    }),
                }
            }),
        })
    }

    /// A real SQLITE_FULL (`max_page_count`) in a savepoint write, which
    /// makes SQLite roll the whole transaction back: every answer says
    /// what is on disk.
    #[test]
    fn a_full_disk_under_a_savepoint_write_leaves_every_answer_true() {
        let dir = std::env::temp_dir().join(format!("saga-writer-full-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (name TEXT, b BLOB);")
            .unwrap();
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        conn.execute_batch(&format!("PRAGMA max_page_count={}", pages + 2))
            .unwrap();
        let answers = Answers::default();
        let (sender, receiver) = std::sync::mpsc::channel();
        let small = "INSERT INTO t VALUES (?1, NULL)";
        let big = "INSERT INTO t VALUES (?1, zeroblob(200000))";
        for j in [
            job(&answers, "a", Undo::Batch, small, false),
            job(&answers, "b", Undo::Savepoint, big, false),
            job(&answers, "c", Undo::Batch, small, true),
            job(&answers, "d", Undo::Batch, small, false),
        ] {
            sender.send(j).unwrap();
        }
        drop(sender);
        writer_loop(&conn, &receiver, 512, None);
        drop(conn);
        let check = Connection::open(&path).unwrap();
        let mut stmt = check.prepare("SELECT name FROM t ORDER BY name").unwrap();
        let rows: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let answers = answers.lock().unwrap().clone();
        assert_eq!(answers.len(), 4, "{answers:?}");
        assert!(rows.contains(&"d".to_owned()), "{rows:?}");
        for (name, answer) in &answers {
            assert_eq!(
                answer.is_ok(),
                rows.iter().any(|r| r == name),
                "{name}: answer {answer:?} but rows {rows:?}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod kept_tests {
    use super::*;

    /// A transaction left open by a rollback that failed does not stop
    /// the next batch.
    #[test]
    fn a_transaction_left_open_is_rolled_back_before_the_next_batch() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x); BEGIN; INSERT INTO t VALUES (1);")
            .unwrap();
        let db = Db::new(&conn);
        assert_eq!(begin(&db), Ok(()));
        control(&db, "COMMIT").unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0);
    }
    /// Two texts at one address, of different lengths (one a prefix of
    /// the other), are two statements.
    #[test]
    fn a_kept_statement_is_found_by_its_whole_text() {
        let conn = Connection::open_in_memory().unwrap();
        let db = Db::new(&conn);
        let long: &'static str = "SELECT 1 + 1";
        let short: &'static str = &long[..8]; // "SELECT 1"
        let a = db
            .kept(long, |s| s.query_row([], |r| r.get::<_, i64>(0)))
            .unwrap();
        let b = db
            .kept(short, |s| s.query_row([], |r| r.get::<_, i64>(0)))
            .unwrap();
        assert_eq!((a, b), (2, 1));
    }
}
