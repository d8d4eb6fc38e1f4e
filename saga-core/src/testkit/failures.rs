//! The in-memory modes: injected failures, and actions or compensations
//! run twice.

use std::sync::Arc;

use super::inject::{Call, Fault, Probe, Retries, Twice, wrap};
use super::oracle::Plan;
use super::report::{CaseReport, TestReport, describe_result, status_of};
use super::{Dependencies, SagaTest};

use crate::clock::TestClock;
use crate::error::SagaError;
use crate::report::{ExecutionStatus, SagaReport};
use crate::saga::RunOptions;

/// What one in-memory case left.
struct CaseRun<C, D> {
    result: Result<SagaReport, SagaError>,
    /// What the probe saw.
    calls: Vec<Call>,
    context: C,
    deps: Arc<D>,
}

impl<C: Send + 'static, D: Send + Sync + 'static> SagaTest<C, D> {
    /// Runs one case in memory, on dependencies from `deps`.
    async fn run_case(&self, deps: &Dependencies<D>, fault: Fault, twice: Twice) -> CaseRun<C, D> {
        let probe = Probe::new(fault, twice);
        let saga = wrap(&self.saga, &probe, Retries::AsGiven);
        let mut context = (self.factory)();
        let deps = deps.make();
        let options = RunOptions::new().with_clock(TestClock::new());
        let result = saga.using(&*deps).run_with(&mut context, options).await;
        let calls = probe.calls().clone();
        CaseRun {
            result,
            calls,
            context,
            deps,
        }
    }

    /// Runs the saga once undisturbed, then with each step failing cleanly
    /// and with an unknown outcome (permanent errors: no retry hides the
    /// rollback), each step failing once and then succeeding (a plain
    /// error: the step's policy decides whether the run goes on), and with
    /// each compensation failing (permanently);
    /// checks every run against the rules, and (with
    /// [`with_state`](Self::with_state)) that every run that was rolled
    /// back left the state as a fresh context from the factory has it
    /// (with [`with_dependencies_state`](Self::with_dependencies_state):
    /// and the dependencies as fresh ones have it).
    pub async fn failures(&self) -> TestReport {
        let deps = match self.dependencies() {
            Ok(deps) => deps,
            Err(report) => return report,
        };
        let plan = Plan::of(&self.saga);
        let mut cases = Vec::new();
        for fault in plan.failure_cases() {
            let run = self.run_case(&deps, fault, Twice::Nothing).await;
            let expected = plan.expected(fault);
            let status = status_of(&run.result);
            let mut problems = plan.check(fault, &run.calls, status, false);
            if status != expected {
                problems.insert(
                    0,
                    format!("ended {status}: {}", describe_result(&run.result)),
                );
            }
            // A clean rollback undoes every effect: the state is the
            // state the run started from.
            if status == ExecutionStatus::Compensated {
                let context = self
                    .compare
                    .as_ref()
                    .and_then(|compare| compare(&(self.factory)(), &run.context));
                if let Some(difference) = context {
                    problems.push(format!(
                        "rolled back, but the state is not the one it started from: {difference}"
                    ));
                }
                let dependencies = self
                    .compare_deps
                    .as_ref()
                    .and_then(|compare| compare(&deps.make(), &run.deps));
                if let Some(difference) = dependencies {
                    problems.push(format!(
                        "rolled back, but the dependencies' state is not that of fresh ones: {difference}"
                    ));
                }
            }
            cases.push(CaseReport {
                name: plan.describe(fault),
                expected,
                actual: Some(status),
                summary: plan.summary(&run.calls),
                problems,
            });
        }
        self.report(cases)
    }

    /// Runs every step's action twice in a row (with the same
    /// [`StepInfo`](crate::StepInfo), so the same idempotency key),
    /// undisturbed and on each rollback path; then, on each rollback path,
    /// every compensation twice in a row (the actions once); and, for each
    /// step whose retry policy retries an unknown outcome, a run where the
    /// step takes effect but its answer is lost (an unknown outcome its
    /// policy retries), so that a retry runs it again: a new attempt with
    /// the same key; then the same for each compensation whose policy
    /// retries an unknown outcome, on the rollback
    /// [`failures`](Self::failures) fails it on. Checks that each run ends as a single undisturbed run
    /// does and (with [`with_state`](Self::with_state) and
    /// [`with_dependencies_state`](Self::with_dependencies_state)) leaves
    /// the same state: a step whose effect depends on the attempt (a key
    /// of its own per attempt, say) charges twice there.
    ///
    /// Actions and compensations are doubled in separate cases, so each
    /// case names what is not idempotent, and a non-idempotent pair (a
    /// doubled debit undone by a doubled credit) cannot cancel out. When a
    /// case that doubles every step fails, the kit doubles them one at a
    /// time and names those that make the difference alone.
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
            let once = self.run_case(&deps, fault, Twice::Nothing).await;
            let rolls_back = matches!(fault, Fault::Clean(s) if plan.rolls_back_anything(s));
            let doubled = std::iter::once((Twice::Actions, "every step twice"))
                .chain(rolls_back.then_some((Twice::Compensations, "every compensation twice")));
            for (twice, what) in doubled {
                let run = self.run_case(&deps, fault, twice).await;
                let mut problems = self.against(&plan, fault, &once, &run);
                if !problems.is_empty() {
                    problems.push(self.culprits(&deps, &plan, fault, twice, &once).await);
                }
                cases.push(CaseReport {
                    name: format!("{}, {what}", plan.describe(fault)),
                    expected: status_of(&once.result),
                    actual: Some(status_of(&run.result)),
                    summary: plan.summary(&run.calls),
                    problems,
                });
            }
        }
        // An answer lost, then a retry: against the same path run once.
        for lost in plan.lost_cases() {
            let path = match lost {
                Fault::LostUndo { trigger, .. } => Plan::path(trigger),
                _ => Fault::None,
            };
            let once = self.run_case(&deps, path, Twice::Nothing).await;
            let run = self.run_case(&deps, lost, Twice::Nothing).await;
            cases.push(CaseReport {
                name: plan.describe(lost),
                expected: status_of(&once.result),
                actual: Some(status_of(&run.result)),
                summary: plan.summary(&run.calls),
                problems: self.against(&plan, lost, &once, &run),
            });
        }
        self.report(cases)
    }

    /// What `run` (of `fault`) broke, against `once`, the same path run
    /// once undisturbed: the rules, its end, and the states compared.
    fn against(
        &self,
        plan: &Plan,
        fault: Fault,
        once: &CaseRun<C, D>,
        run: &CaseRun<C, D>,
    ) -> Vec<String> {
        let expected = status_of(&once.result);
        let status = status_of(&run.result);
        let mut problems = plan.check(fault, &run.calls, status, false);
        if status != expected {
            problems.insert(
                0,
                format!(
                    "ended {status} where a single run ends {expected}: {}",
                    describe_result(&run.result)
                ),
            );
        }
        let context = self.compare.as_ref();
        if let Some(difference) = context.and_then(|c| c(&once.context, &run.context)) {
            problems.push(format!("the final state differs: {difference}"));
        }
        let dependencies = self.compare_deps.as_ref();
        if let Some(difference) = dependencies.and_then(|c| c(&once.deps, &run.deps)) {
            problems.push(format!(
                "the dependencies' final state differs: {difference}"
            ));
        }
        problems
    }

    /// Which steps, doubled alone (their actions for
    /// [`Twice::Actions`], their compensations otherwise), break the
    /// case `twice` broke, as a line for its report.
    async fn culprits(
        &self,
        deps: &Dependencies<D>,
        plan: &Plan,
        fault: Fault,
        twice: Twice,
        once: &CaseRun<C, D>,
    ) -> String {
        let actions = twice == Twice::Actions;
        let mut alone = Vec::new();
        for step in 0..plan.names.len() {
            if !actions && !plan.has_undo(step) {
                continue;
            }
            let single = if actions {
                Twice::Action(step)
            } else {
                Twice::Compensation(step)
            };
            let run = self.run_case(deps, fault, single).await;
            if !self.against(plan, fault, once, &run).is_empty() {
                alone.push(format!("`{}`", plan.names[step]));
            }
        }
        let (what, of) = if actions {
            ("step", "")
        } else {
            ("compensation", "that of ")
        };
        match alone.as_slice() {
            [] => format!(
                "doubled one {what} at a time, none makes the difference alone: only together"
            ),
            [one] => format!("doubled one {what} at a time: {of}{one} alone makes the difference"),
            many => format!(
                "doubled one {what} at a time: {}{} each make a difference alone",
                if actions { "" } else { "those of " },
                many.join(", ")
            ),
        }
    }
}
