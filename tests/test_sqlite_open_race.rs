//! Processes of a fleet starting at once open one new SQLite store
//! together: every open succeeds. Before, the first created the file and
//! the others found it empty ("delete it to start a new store") or not yet
//! stamped as ours ("an SQLite database of another application"), and
//! exited (an outside workload: 40 of 60 opens failed).

mod support;

use std::sync::{Arc, Barrier};

use saga_core::store::SqliteStore;
use support::durable::scratch_dir;

#[test]
fn three_opens_of_one_new_file_at_once_all_succeed() {
    let dir = scratch_dir("open_race");
    for trial in 0..20 {
        let path = dir.join(format!("sagas-{trial}.db"));
        let start = Arc::new(Barrier::new(3));
        let opens: Vec<_> = (0..3)
            .map(|_| {
                let (path, start) = (path.clone(), Arc::clone(&start));
                std::thread::spawn(move || {
                    start.wait();
                    SqliteStore::open(&path).map(drop)
                })
            })
            .collect();
        for open in opens {
            let result = open.join().unwrap();
            assert!(result.is_ok(), "trial {trial}: {}", result.unwrap_err());
        }
    }
}
