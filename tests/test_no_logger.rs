//! Logging is the application's: the library installs no logger. A test
//! binary of its own, as `test_observer_logging.rs` installs one.

mod support;

use saga_core::{RetryPolicy, Saga, StepInfo};
use support::steps::*;

/// The library never installs a logger nor raises the log level: after
/// runs that log at every level, the process can still install its own.
/// (That the error text is logged is in `test_observer_logging.rs`.)
#[test]
fn the_library_installs_no_logger() {
    struct Quiet;
    impl log::Log for Quiet {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            false
        }
        fn log(&self, _: &log::Record<'_>) {}
        fn flush(&self) {}
    }
    static QUIET: Quiet = Quiet;

    let saga = Saga::builder("no-logger")
        .step(
            compensable("a").undo(|_: &mut Rec, _: Option<&String>, _: &StepInfo<'_>| {
                Err::<(), _>("refund failed")
            }),
        )
        .step(failing("b", declined))
        .undo_retry(RetryPolicy::none())
        .build()
        .unwrap();
    saga.run_blocking(&mut Rec::default()).unwrap_err();

    assert_eq!(log::max_level(), log::LevelFilter::Off);
    assert!(
        log::set_logger(&QUIET).is_ok(),
        "the library installed a logger"
    );
}
