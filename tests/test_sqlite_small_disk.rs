//! An SQLite store on a small disk: its `-wal` stays bounded, a full disk
//! at the first start leaves no empty file behind, and the errors of a
//! full or read-only disk at open say so.
//!
//! The tests that need a small or full disk mount a tmpfs (root only) and
//! skip, saying so, where they cannot.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use saga_core::SagaEngine;
use saga_core::store::{SqliteStore, StoreError};
use support::durable::{Order, Script, saga, scratch_dir};

fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// A tmpfs of `size` (`mount -o size=`) mounted on a new directory, and
/// unmounted when dropped; `None`, said on stderr, where it cannot be.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(test: &str, options: &str) -> Option<Tmpfs> {
        let dir = scratch_dir(test);
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(&dir)
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Tmpfs { dir }),
            other => {
                eprintln!(
                    "SKIPPED {test}: cannot mount a tmpfs (needs root): {:?}",
                    other.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                );
                let _ = std::fs::remove_dir(&dir);
                None
            }
        }
    }

    /// Fills the disk: a file as large as it takes to get ENOSPC.
    fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.dir.join("fill")).unwrap();
        let chunk = vec![0_u8; 4096];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
    }

    fn unfill(&self) {
        std::fs::remove_file(self.dir.join("fill")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the store keeps a descriptor of its file for as long as
        // the file exists (see `open.rs`), which a plain `umount` refuses.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `n` executions one after the other on the store at `path`; the
/// largest `-wal` seen after each, and the first error.
fn run(path: &Path, n: usize) -> (u64, Result<(), String>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let engine = SagaEngine::new(SqliteStore::open(path).map_err(|e| e.to_string())?);
        let script = Arc::new(Script::default());
        engine
            .register(saga(&script))
            .await
            .map_err(|e| e.to_string())?;
        let mut largest = 0;
        for _ in 0..n {
            let id = engine
                .start("order", Order::default())
                .await
                .map_err(|e| e.to_string())?;
            engine
                .wait(&id)
                .await
                .or_else(support::ended)
                .map_err(|e| e.to_string())?;
            largest = largest.max(len(&companion(path, "-wal")));
        }
        Ok::<_, String>(largest)
    })
    .map_or_else(|e| (0, Err(e)), |largest| (largest, Ok(())))
}

/// The bound of the `-wal` the docs give (docs/OPERATIONS.md, "How big
/// the store grows").
const WAL_BOUND: u64 = 1_200_000;

/// With SQLite's defaults the `-wal` grows to about 4 MB (1000 pages)
/// before a checkpoint, and keeps that size.
#[test]
fn the_wal_stays_under_its_bound() {
    let dir = scratch_dir("wal-bound");
    let path = dir.join("sagas.db");
    let (largest, result) = run(&path, 150);
    result.unwrap();
    assert!(
        largest <= WAL_BOUND,
        "the -wal grew to {largest} bytes (bound {WAL_BOUND})"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A 3 MB disk holds a store of a few hundred kilobytes: the `-wal` does
/// not eat the rest.
#[test]
fn a_store_on_a_3_mb_disk_does_not_fill_it() {
    let Some(disk) = Tmpfs::mount("wal-3mb", "size=3m") else {
        return;
    };
    let path = disk.dir.join("sagas.db");
    let (largest, result) = run(&path, 200);
    assert_eq!(
        result,
        Ok(()),
        "-wal {} bytes, file {} bytes",
        len(&companion(&path, "-wal")),
        len(&path)
    );
    assert!(largest <= WAL_BOUND, "the -wal grew to {largest} bytes");
}

/// A store closed cleanly at `path`, with `n` executions.
fn closed_store(path: &Path, n: usize) {
    let (_, result) = run(path, n);
    result.unwrap();
}

/// A full disk at the first start: the open fails, saying the disk is
/// full, and leaves no empty file that would refuse every later start.
#[test]
fn a_full_disk_at_the_first_start_leaves_no_empty_file() {
    let Some(disk) = Tmpfs::mount("full-at-create", "size=1m") else {
        return;
    };
    disk.fill();
    let path = disk.dir.join("sagas.db");
    let err = SqliteStore::open(&path).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("full"), "{message}");
    let left: Vec<_> = std::fs::read_dir(&disk.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name != "fill")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?} ({message})");
    disk.unfill();
    closed_store(&path, 1);
}

/// A full disk at the start of an existing store: the error says the
/// disk is full and what to do, not that the store carries on by itself
/// (nothing retries an open); once there is room it opens.
#[test]
fn a_full_disk_at_open_says_so() {
    let Some(disk) = Tmpfs::mount("full-at-open", "size=1m") else {
        return;
    };
    let path = disk.dir.join("sagas.db");
    closed_store(&path, 2);
    let before = std::fs::read(&path).unwrap();
    disk.fill();
    let err = SqliteStore::open(&path).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("is full"), "{message}");
    assert!(message.contains("free space"), "{message}");
    assert!(!message.contains("carries on by itself"), "{message}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    disk.unfill();
    closed_store(&path, 1);
}

/// A store on a filesystem mounted read-only: the error says so (`chmod`
/// cannot help there).
#[test]
fn a_read_only_filesystem_is_named_at_open() {
    let Some(disk) = Tmpfs::mount("ro-mount", "size=1m") else {
        return;
    };
    let path = disk.dir.join("sagas.db");
    closed_store(&path, 1);
    let remounted = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&disk.dir)
        .status()
        .unwrap();
    assert!(remounted.success());
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("mounted read-only"), "{message}");
    assert!(message.contains("`mount` shows `ro`"), "{message}");
    // Reading it still works.
    drop(SqliteStore::open_read_only(&path).unwrap());
}
