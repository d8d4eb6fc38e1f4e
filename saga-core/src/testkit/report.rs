//! The report of a test kit run: every case, what it expected, what happened.

use std::fmt;

use crate::error::SagaError;
use crate::report::{ExecutionStatus, SagaReport};

/// The outcome of every case a [`SagaTest`](super::SagaTest) ran; its `Display` lists them.
#[derive(Debug, Clone)]
pub struct TestReport {
    /// The saga's name.
    pub saga: String,
    /// Every case, in the order run.
    pub cases: Vec<CaseReport>,
}

/// One case: what was done, what was expected, what happened.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// What the case did, e.g. "step `charge` fails cleanly".
    pub name: String,
    /// The status the rules give.
    pub expected: ExecutionStatus,
    /// The status the run ended with (`None`: it did not end).
    pub actual: Option<ExecutionStatus>,
    /// What the run did, in short: the steps compensated, and how many
    /// times the user's actions and compensations ran (both runs of a
    /// doubled one; an attempt the kit failed without running it is not
    /// counted).
    pub summary: String,
    /// Every rule the run broke; empty when the case passed.
    pub problems: Vec<String>,
}

impl CaseReport {
    /// Whether the case passed.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

impl TestReport {
    /// Whether every case passed.
    pub fn passed(&self) -> bool {
        self.cases.iter().all(CaseReport::passed)
    }

    /// The cases that failed.
    pub fn failures(&self) -> impl Iterator<Item = &CaseReport> {
        self.cases.iter().filter(|c| !c.passed())
    }

    /// Panics with the whole report unless every case passed: the line to
    /// end a test with.
    ///
    /// # Panics
    /// When a case failed; the message lists every case.
    #[track_caller]
    pub fn assert_passed(&self) {
        assert!(self.passed(), "{self}");
    }

    /// The cases of both reports, `self`'s first: the modes run (or
    /// timed) one by one, reported as one.
    #[must_use]
    pub fn merge(mut self, other: TestReport) -> Self {
        self.cases.extend(other.cases);
        self
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed = self.failures().count();
        writeln!(
            f,
            "saga `{}`: {} cases, {} passed, {failed} failed",
            self.saga,
            self.cases.len(),
            self.cases.len() - failed
        )?;
        for case in &self.cases {
            let mark = if case.passed() { "ok  " } else { "FAIL" };
            let actual = case.actual.map_or("did not end", ExecutionStatus::label);
            writeln!(
                f,
                "  {mark} {}: expected {}, got {actual}; {}",
                case.name, case.expected, case.summary
            )?;
            for problem in &case.problems {
                writeln!(f, "       - {problem}")?;
            }
        }
        Ok(())
    }
}

pub(super) fn status_of(result: &Result<SagaReport, SagaError>) -> ExecutionStatus {
    match result {
        Ok(report) => report.status,
        Err(error) => error.report().status,
    }
}

pub(super) fn describe_result(result: &Result<SagaReport, SagaError>) -> String {
    match result {
        Ok(report) => format!("completed {} steps", report.steps.len()),
        Err(error) => match std::error::Error::source(error) {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        },
    }
}

pub(super) fn failed_case(name: String, expected: ExecutionStatus, problem: String) -> CaseReport {
    CaseReport {
        name,
        expected,
        actual: None,
        summary: String::new(),
        problems: vec![problem],
    }
}
