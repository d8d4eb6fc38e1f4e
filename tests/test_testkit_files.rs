//! The test kit's SQLite crash cases leave nothing in the temporary
//! directory: not the stores, their journals, nor the owners' lock files
//! beside them. One test in this file, so no other test of this process
//! makes files there at the same time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use saga_core::testkit::{Durability, SagaTest};
use saga_core::{Saga, Step, StepError, StepInfo};

/// The entries of the system's temporary directory that this process's
/// test kit made (their names start with `saga-testkit-<pid>`).
fn kit_files() -> Vec<String> {
    let prefix = format!("saga-testkit-{}", std::process::id());
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&prefix))
        .collect()
}

#[tokio::test]
async fn crashes_on_sqlite_leave_no_file_behind() {
    assert_eq!(kit_files(), Vec::<String>::new());
    // The steps look while the cases run: the kit's files are where this
    // test looks for them.
    let seen = Arc::new(AtomicUsize::new(0));
    let look = |name: &'static str| {
        let seen = Arc::clone(&seen);
        Step::new(name, move |n: &mut u32, _: &StepInfo<'_>| {
            seen.fetch_max(kit_files().len(), Ordering::SeqCst);
            *n += 1;
            Ok::<_, StepError>(())
        })
    };
    let saga = Saga::builder("files")
        .step(
            look("reserve").undo(|n: &mut u32, _: Option<&()>, _: &StepInfo<'_>| {
                *n -= 1;
                Ok::<_, StepError>(())
            }),
        )
        .pivot(look("ship"))
        .build()
        .unwrap();
    let report = SagaTest::new(&saga, || 0)
        .with_state(|n: &u32| *n)
        .crashes(Durability::Sqlite)
        .await;
    report.assert_passed();
    assert!(report.cases.len() > 10, "{report}");
    assert!(
        seen.load(Ordering::SeqCst) > 0,
        "no kit file seen in {:?}",
        std::env::temp_dir()
    );
    assert_eq!(kit_files(), Vec::<String>::new());
}
