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
