//! The in-memory modes: injected failures, and actions or compensations
//! run twice.

use super::SagaTest;
use super::inject::{Call, Fault, Probe, Twice, wrap};
use super::oracle::Plan;
use super::report::{CaseReport, TestReport, describe_result, status_of};

use crate::clock::TestClock;
use crate::error::SagaError;
use crate::report::{ExecutionStatus, SagaReport};
use crate::saga::RunOptions;

impl<C: Send + 'static, D: Send + Sync + 'static> SagaTest<C, D> {
    /// Runs one case in memory; returns the status, what the probe saw and
    /// the final context.
    async fn run_case(
        &self,
        deps: &D,
        fault: Fault,
        twice: Twice,
    ) -> (Result<SagaReport, SagaError>, Vec<Call>, C) {
        let probe = Probe::new(fault, twice);
        let saga = wrap(&self.saga, &probe, None);
        let mut ctx = (self.factory)();
        let options = RunOptions::new().with_clock(TestClock::new());
        let result = saga.using(deps).run_with(&mut ctx, options).await;
        let calls = probe.calls().clone();
        (result, calls, ctx)
    }

    /// Runs the saga once undisturbed, then with each step failing cleanly
    /// and with an unknown outcome (permanent errors: no retry hides the
    /// rollback), each step failing once and then succeeding (a plain
    /// error: the step's policy decides whether the run goes on), and with
    /// each compensation failing (permanently);
    /// checks every run against the rules, and (with
    /// [`with_state`](Self::with_state)) that every run that was rolled
    /// back left the state as a fresh context from the factory has it.
    pub async fn failures(&self) -> TestReport {
        let deps = match self.dependencies() {
            Ok(deps) => deps,
            Err(report) => return report,
        };
        let plan = Plan::of(&self.saga);
        let mut cases = Vec::new();
        for fault in plan.failure_cases() {
            let (result, calls, ctx) = self.run_case(&deps, fault, Twice::Nothing).await;
            let expected = plan.expected(fault);
            let status = status_of(&result);
            let mut problems = plan.check(fault, &calls, status, false);
            if status != expected {
                problems.insert(0, format!("ended {status}: {}", describe_result(&result)));
            }
            // A clean rollback undoes every effect: the state is the
            // state the run started from.
            let difference = match status {
                ExecutionStatus::Compensated => self
                    .compare
                    .as_ref()
                    .and_then(|compare| compare(&(self.factory)(), &ctx)),
                _ => None,
            };
            if let Some(difference) = difference {
                problems.push(format!(
                    "rolled back, but the state is not the one it started from: {difference}"
                ));
            }
            cases.push(CaseReport {
                name: plan.describe(fault),
                expected,
                actual: Some(status),
                summary: plan.summary(&calls),
                problems,
            });
        }
        self.report(cases)
    }

    /// Runs every step's action twice in a row (with the same
    /// [`StepInfo`](crate::StepInfo), so the same idempotency key),
    /// undisturbed and on each rollback path; then, on each rollback path,
    /// every compensation twice in a row (the actions once). Checks that
    /// each run ends as a single run does and (with
    /// [`with_state`](Self::with_state)) leaves the same state.
    ///
    /// Actions and compensations are doubled in separate cases, so each
    /// case names what is not idempotent, and a non-idempotent pair (a
    /// doubled debit undone by a doubled credit) cannot cancel out.
    pub async fn twice(&self) -> TestReport {
        let deps = match self.dependencies() {
            Ok(deps) => deps,
            Err(report) => return report,
        };
        let plan = Plan::of(&self.saga);
        let mut cases = Vec::new();
        let faults = std::iter::once(Fault::None).chain(
            (0..plan.names.len())
                .filter_map(|s| (plan.can_roll_back(s) && s > 0).then_some(Fault::Clean(s))),
        );
        for fault in faults {
            let (once, _, once_ctx) = self.run_case(&deps, fault, Twice::Nothing).await;
            let rolls_back = matches!(fault, Fault::Clean(s) if plan.rolls_back_anything(s));
            let doubled = std::iter::once((Twice::Actions, "every step twice"))
                .chain(rolls_back.then_some((Twice::Compensations, "every compensation twice")));
            for (twice, what) in doubled {
                let (result, calls, ctx) = self.run_case(&deps, fault, twice).await;
                let expected = status_of(&once);
                let status = status_of(&result);
                let mut problems = plan.check(fault, &calls, status, false);
                if status != expected {
                    problems.insert(
                        0,
                        format!(
                            "ended {status} where a single run ends {expected}: {}",
                            describe_result(&result)
                        ),
                    );
                }
                if let Some(difference) = self.compare.as_ref().and_then(|c| c(&once_ctx, &ctx)) {
                    problems.push(format!("the final state differs: {difference}"));
                }
                cases.push(CaseReport {
                    name: format!("{}, {what}", plan.describe(fault)),
                    expected,
                    actual: Some(status),
                    summary: plan.summary(&calls),
                    problems,
                });
            }
        }
        self.report(cases)
    }
}
