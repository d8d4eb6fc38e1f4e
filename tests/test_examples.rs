//! The examples run as the README says.

// The README's first command runs this example; the test runs the same code.
#[path = "../examples/order_saga.rs"]
mod order_saga;

/// The README's first command runs this example: it runs and behaves as
/// it says.
#[test]
fn the_readme_example_runs_and_behaves_as_it_says() {
    order_saga::main().expect("the example runs and behaves as it says");
}

// Its `main` is run by hand; the test calls `run`.
#[allow(dead_code)]
#[path = "../examples/batch_job.rs"]
mod batch_job;

/// The batch job example refunds each good row once, rolls a bad one back
/// with its reason, and a rerun on the same store starts nothing twice.
#[test]
fn the_batch_job_example_refunds_once_and_reruns_idempotently() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("batch-job-example");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let refund = |account: &str, cents| batch_job::Refund {
        account: account.to_owned(),
        cents,
        ..batch_job::Refund::default()
    };
    let refunds = [refund("a", 100), refund("b", -5), refund("c", 7)];
    let expected = batch_job::Summary {
        picked_up: 0,
        refunded: 2,
        rolled_back: vec![(
            "refund-1".to_owned(),
            "saga `refund` failed at step `debit` and was rolled back (nothing to compensate): \
             amount -5 is not positive"
                .to_owned(),
        )],
        need_attention: Vec::new(),
    };
    let store = dir.join("refunds.db");
    assert_eq!(batch_job::run(&store, &refunds).unwrap(), expected);
    assert_eq!(batch_job::run(&store, &refunds).unwrap(), expected);
}
