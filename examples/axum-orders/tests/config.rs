//! The service refuses settings it cannot use, saying which and why,
//! before it opens a store or a port.

use std::process::Command;

fn refused(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_axum-orders"))
        .args(args)
        .output()
        .expect("the service runs");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    String::from_utf8(output.stderr).expect("stderr is text")
}

#[test]
fn an_unknown_argument_is_refused_with_the_known_ones() {
    let stderr = refused(&["--port", "80"]);
    assert_eq!(
        stderr.trim_end(),
        "axum-orders: unexpected argument `--port`; expected one of --listen, --store, \
         --payment-url, --lease-ttl-ms, --poll-ms, --grace-ms, each followed by a value"
    );
}

#[test]
fn an_argument_without_its_value_is_refused() {
    let stderr = refused(&["--store"]);
    assert_eq!(stderr.trim_end(), "axum-orders: `--store` needs a value");
}

#[test]
fn a_duration_that_is_not_milliseconds_is_refused() {
    let stderr = refused(&["--poll-ms", "5s"]);
    assert_eq!(
        stderr.trim_end(),
        "axum-orders: `--poll-ms` (ORDERS_POLL_MS) must be milliseconds, not `5s`"
    );
}

#[test]
fn a_store_that_cannot_be_opened_is_reported_in_words() {
    let dir = std::env::temp_dir().join(format!("axum-orders-nostore-{}", std::process::id()));
    let store = dir.join("missing-dir").join("orders.db");
    let output = Command::new(env!("CARGO_BIN_EXE_axum-orders"))
        .args(["--store", store.to_str().expect("a UTF-8 path")])
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("the service runs");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8(output.stderr).expect("stderr is text");
    // The error's own words (its `Display`), not its `Debug` form.
    assert!(stderr.starts_with("axum-orders: "), "{stderr}");
    assert!(stderr.contains("orders.db"), "{stderr}");
    assert!(
        !stderr.contains("Error {") && !stderr.contains("{ "),
        "{stderr}"
    );
}
