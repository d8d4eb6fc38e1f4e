//! The writer thread of the SQLite store: group commit, one transaction
//! per batch of writes, each write in its own savepoint.

use std::sync::mpsc;

use rusqlite::Connection;

/// Work for the writer thread.
pub(super) enum Job {
    /// Runs inside the batch's transaction, in a savepoint; returns what to
    /// do once the commit's fate is known.
    /// Given an error instead of a connection when the transaction could
    /// not begin.
    Write(Box<WriteWork>),
    /// Runs after the batch's commit.
    Read(Box<dyn FnOnce(&Connection) + Send>),
}

pub(super) type WriteWork = dyn FnOnce(Result<&Connection, String>) -> Pending + Send;

pub(super) struct Pending {
    /// Whether the work succeeded (its savepoint is kept).
    pub(super) ok: bool,
    /// Answers the caller, given the commit's result.
    pub(super) finish: Box<dyn FnOnce(Result<(), String>) + Send>,
}

/// Runs one statement of transaction control (`BEGIN IMMEDIATE`,
/// `SAVEPOINT job`, ...) from the connection's statement cache: parsing
/// them again for every write cost as much as the write's own
/// statements.
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// The writer thread: one batch of writes per transaction, then the reads
/// that arrived with them.
pub(super) fn writer_loop(conn: &Connection, receiver: &mpsc::Receiver<Job>, max_batch: usize) {
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
            let begun = control(conn, "BEGIN IMMEDIATE").map_err(|e| e.to_string());
            let mut pending = Vec::with_capacity(writes.len());
            for write in writes {
                let Err(message) = &begun else {
                    let savepoint = control(conn, "SAVEPOINT job");
                    let step = write(savepoint.as_ref().map(|()| conn).map_err(|e| e.to_string()));
                    let closed = if step.ok {
                        control(conn, "RELEASE job")
                    } else {
                        conn.execute_batch("ROLLBACK TO job; RELEASE job")
                    };
                    if let Err(e) = closed {
                        log::error!(target: "saga", error:% = crate::escape::Escaped(&e.to_string()); "sqlite savepoint failed");
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
                    let commit = control(conn, "COMMIT").map_err(|e| e.to_string());
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
