//! Helpers of the integration tests, one module per concern; each test
//! binary declares `mod support;` and uses its subset.
//!
//! - [`steps`]: a context that records every effect in order, steps that
//!   record into it, a user error type (the behaviour tests);
//! - [`durable`]: scratch files and a five-step saga whose effects land in
//!   a ledger outside it, with crashes placed anywhere (the durable tests);
//! - [`stores`]: every store, fresh: memory, SQLite and, with the
//!   `postgres` feature, PostgreSQL;
//! - [`submitted`]: an engine's `wait` on a submitted execution, checked
//!   by `store_contract.rs` on each store;
//! - [`pg`] (feature `postgres`): the server, a schema per test, the
//!   `pg_worker` helper processes and the ledger's verdict.
#![allow(dead_code)]

pub mod durable;
pub mod logs;
#[cfg(feature = "postgres")]
pub mod pg;
pub mod steps;
pub mod stores;
pub mod submitted;

/// A `wait` that ended and did not complete (compensated, stuck,
/// cancelled, abandoned) as its report: `.or_else(support::ended)` for
/// tests that check the status themselves.
pub fn ended(error: saga_core::WaitError) -> Result<saga_core::SagaReport, saga_core::WaitError> {
    match error {
        saga_core::WaitError::Saga(failed) => Ok(failed.report().clone()),
        other => Err(other),
    }
}

/// A report's step as the tests compare it, without its durations (which
/// the clock decides): name, status, outcome, attempts, compensation
/// attempts, last error.
pub type ReportRow = (
    String,
    saga_core::StepStatus,
    saga_core::Outcome,
    u32,
    u32,
    Option<String>,
);

/// A report as its status and [`ReportRow`]s.
pub fn report_rows(report: &saga_core::SagaReport) -> (saga_core::ExecutionStatus, Vec<ReportRow>) {
    let steps = report
        .steps
        .iter()
        .map(|s| {
            (
                s.name.to_string(),
                s.status,
                s.outcome,
                s.attempts,
                s.compensation_attempts,
                s.last_error.clone(),
            )
        })
        .collect();
    (report.status, steps)
}
