//! The oracle: what the failure rules say each case must end as, and the
//! rules a run must keep.

use super::inject::{Call, End, Fault, Trigger, lost_error, once_error};

use crate::report::ExecutionStatus;
use crate::saga::{Node, Saga};
use crate::step::StepKind;

/// The cases of one saga, with what the rules expect of each.
pub(super) struct Plan {
    pub(super) names: Vec<String>,
    kinds: Vec<StepKind>,
    has_undo: Vec<bool>,
    /// Each step's node (its place in the order of execution).
    node_of: Vec<usize>,
    pivot: Option<usize>,
    continue_on_failure: bool,
    /// Per step: whether its policy retries a first attempt's failure
    /// ([`once_error`]).
    retries_once: Vec<bool>,
    /// Per step: whether its policy retries a first attempt's unknown
    /// outcome ([`lost_error`]).
    retries_lost: Vec<bool>,
    /// Per step: whether its compensation's policy does.
    undo_retries_lost: Vec<bool>,
}

impl Plan {
    pub(super) fn of<C, D>(saga: &Saga<C, D>) -> Self {
        let inner = &saga.inner;
        let mut node_of = vec![0; inner.steps.len()];
        for (n, node) in inner.nodes.iter().enumerate() {
            let range = match node {
                Node::Step(i) => *i..*i + 1,
                Node::Group { range, .. } => range.clone(),
            };
            for slot in &mut node_of[range] {
                *slot = n;
            }
        }
        Plan {
            names: inner.steps.iter().map(|s| s.name.to_string()).collect(),
            kinds: inner.steps.iter().map(|s| s.kind).collect(),
            has_undo: inner.steps.iter().map(|s| s.undo.is_some()).collect(),
            node_of,
            pivot: inner.steps.iter().position(|s| s.pivot),
            continue_on_failure: inner.continue_on_compensation_failure,
            retries_once: retries(saga, &once_error()),
            retries_lost: retries(saga, &lost_error()),
            undo_retries_lost: inner
                .steps
                .iter()
                .map(|s| {
                    let policy = s.undo_retry.as_ref().unwrap_or(&inner.undo_retry);
                    s.undo.is_some() && policy.max_attempts() > 1 && policy.retries(&lost_error())
                })
                .collect(),
        }
    }

    fn name(&self, step: usize) -> &str {
        &self.names[step]
    }

    /// Whether `step` has a compensation.
    pub(super) fn has_undo(&self, step: usize) -> bool {
        self.has_undo[step]
    }

    /// A [`Fault::Lost`] per step whose policy retries an unknown outcome,
    /// then a [`Fault::LostUndo`] per compensation whose policy does, on
    /// the rollback [`failure_cases`](Self::failure_cases) fails it on.
    pub(super) fn lost_cases(&self) -> Vec<Fault> {
        let steps = (0..self.names.len())
            .filter(|&s| self.retries_lost[s])
            .map(Fault::Lost);
        let undos = (0..self.names.len())
            .filter(|&s| self.undo_retries_lost[s])
            .map(|step| Fault::LostUndo {
                step,
                trigger: self.trigger(step),
            });
        steps.chain(undos).collect()
    }

    /// What starts the rollback that runs `step`'s compensation: the next
    /// step that can roll back, failing cleanly, or else the step itself
    /// failing with an unknown outcome.
    fn trigger(&self, step: usize) -> Trigger {
        (step + 1..self.names.len())
            .find(|&t| self.node_of[t] > self.node_of[step] && self.can_roll_back(t))
            .map_or(Trigger::Unknown(step), Trigger::Clean)
    }

    /// The rollback path a [`Trigger`] starts, without a fault of its own.
    pub(super) fn path(trigger: Trigger) -> Fault {
        match trigger {
            Trigger::Clean(t) => Fault::Clean(t),
            Trigger::Unknown(s) => Fault::Unknown(s),
        }
    }

    /// Whether a failure of `step` may still roll the saga back: it comes
    /// before the pivot, or is the pivot.
    pub(super) fn can_roll_back(&self, step: usize) -> bool {
        self.pivot
            .is_none_or(|p| self.node_of[step] <= self.node_of[p])
    }

    /// Whether a clean failure of `step` has something to compensate: a
    /// step with a compensation before it.
    pub(super) fn rolls_back_anything(&self, step: usize) -> bool {
        (0..step).any(|s| self.has_undo[s] && self.node_of[s] < self.node_of[step])
    }

    /// Every failure case: each step failing cleanly and with an unknown
    /// outcome (permanent errors), each step failing once and then
    /// succeeding, then each compensation failing (the rollback started by
    /// the next step that can roll back, failing cleanly, or by the step
    /// itself failing with an unknown outcome).
    pub(super) fn failure_cases(&self) -> Vec<Fault> {
        let n = self.names.len();
        let mut cases = vec![Fault::None];
        for step in 0..n {
            cases.push(Fault::Clean(step));
            cases.push(Fault::Unknown(step));
            cases.push(Fault::Once(step));
        }
        for step in (0..n).filter(|&s| self.has_undo[s]) {
            let trigger = self.trigger(step);
            cases.push(Fault::Undo { step, trigger });
        }
        cases
    }

    /// Per step: whether [`Fault::Retried`] fails its first attempt (its
    /// policy retries that failure).
    pub(super) fn retried(&self) -> Vec<bool> {
        self.retries_once.clone()
    }

    /// The path on which every step whose policy retries fails once and
    /// then succeeds; none if no step retries.
    pub(super) fn retry_path(&self) -> Option<Fault> {
        self.retries_once
            .iter()
            .any(|&r| r)
            .then_some(Fault::Retried)
    }

    /// The longest rollback: the last step that can roll back fails
    /// cleanly (none if no step before it has something to undo).
    pub(super) fn longest_rollback(&self) -> Option<usize> {
        let last = (0..self.names.len())
            .rev()
            .find(|&s| self.can_roll_back(s) && self.node_of[s] > 0)?;
        (0..last)
            .any(|s| self.has_undo[s] && self.node_of[s] < self.node_of[last])
            .then_some(last)
    }

    pub(super) fn describe(&self, fault: Fault) -> String {
        match fault {
            Fault::None => "no failure".to_owned(),
            Fault::Clean(s) => format!("step `{}` fails cleanly", self.name(s)),
            Fault::Unknown(s) => format!("step `{}` fails, outcome unknown", self.name(s)),
            Fault::Once(s) if self.retries_once[s] => {
                format!("step `{}` fails once, then succeeds", self.name(s))
            }
            Fault::Once(s) => format!(
                "step `{}` fails once (its retry policy does not retry it: a failure)",
                self.name(s)
            ),
            Fault::Lost(s) => format!(
                "step `{}` takes effect but its answer is lost, then a retry runs it again",
                self.name(s)
            ),
            Fault::Retried => {
                let names: Vec<String> = (0..self.names.len())
                    .filter(|&s| self.retries_once[s])
                    .map(|s| format!("`{}`", self.name(s)))
                    .collect();
                match names.as_slice() {
                    [one] => format!("step {one} fails once, then succeeds"),
                    _ => format!("steps {} fail once, then succeed", names.join(", ")),
                }
            }
            Fault::Undo { step, trigger } => format!(
                "compensation of `{}` fails (rollback from {})",
                self.name(step),
                self.cause(trigger)
            ),
            Fault::LostUndo { step, trigger } => format!(
                "compensation of `{}` takes effect but its answer is lost, then a retry runs it again (rollback from {})",
                self.name(step),
                self.cause(trigger)
            ),
        }
    }

    /// A rollback's cause, in words.
    fn cause(&self, trigger: Trigger) -> String {
        match trigger {
            Trigger::Clean(t) => format!("`{}` failing", self.name(t)),
            Trigger::Unknown(t) => format!("`{}` failing with an unknown outcome", self.name(t)),
        }
    }

    /// What the rules say a run with `fault` ends as.
    pub(super) fn expected(&self, fault: Fault) -> ExecutionStatus {
        let after_pivot = |s: usize| {
            self.pivot
                .is_some_and(|p| self.node_of[s] > self.node_of[p])
        };
        match fault {
            Fault::None => ExecutionStatus::Completed,
            Fault::Clean(s) if after_pivot(s) => ExecutionStatus::Stuck,
            Fault::Clean(_) => ExecutionStatus::Compensated,
            Fault::Once(s) if self.retries_once[s] => ExecutionStatus::Completed,
            Fault::Once(s) => self.expected(Fault::Clean(s)),
            Fault::Retried => ExecutionStatus::Completed,
            Fault::Lost(s) if self.retries_lost[s] => ExecutionStatus::Completed,
            Fault::Lost(s) => self.expected(Fault::Unknown(s)),
            // The pivot with an unknown outcome can go neither way.
            Fault::Unknown(s) if after_pivot(s) || self.kinds[s] == StepKind::Pivot => {
                ExecutionStatus::Stuck
            }
            Fault::Unknown(_) => ExecutionStatus::Compensated,
            Fault::Undo { .. } => ExecutionStatus::Stuck,
            // The retry succeeds: the rollback ends as it would have.
            Fault::LostUndo { trigger, .. } => self.expected(Self::path(trigger)),
        }
    }

    /// The rules a finished, uninterrupted run must have kept, given what
    /// the probe saw.
    pub(super) fn check(
        &self,
        fault: Fault,
        calls: &[Call],
        status: ExecutionStatus,
        interrupted: bool,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let n = self.names.len();
        let started = |s: usize| calls.iter().any(|c| c.step == s && !c.undo);
        // Took effect, or may have: an attempt succeeded, reported an
        // unknown outcome, or never ended (dropped, cut off).
        let effect = |s: usize| {
            calls
                .iter()
                .any(|c| c.step == s && !c.undo && c.end != Some(End::Failed { unknown: false }))
        };
        let undo_calls = |s: usize| calls.iter().filter(move |c| c.step == s && c.undo);
        let undone = |s: usize| undo_calls(s).any(|c| c.end == Some(End::Ok));
        for s in 0..n {
            let name = self.name(s);
            if !started(s) && undo_calls(s).next().is_some() {
                problems.push(format!(
                    "the compensation of `{name}` ran, but its step never started"
                ));
            }
            if !interrupted {
                let mut after_success = false;
                let mut seen_ok = false;
                for call in undo_calls(s) {
                    after_success |= seen_ok;
                    seen_ok |= call.end == Some(End::Ok);
                }
                if after_success {
                    problems.push(format!(
                        "the compensation of `{name}` ran again after it had succeeded"
                    ));
                }
            }
        }
        if status == ExecutionStatus::Compensated {
            for s in (0..n).filter(|&s| self.has_undo[s]) {
                let name = self.name(s);
                if effect(s) && !undone(s) {
                    problems.push(format!(
                        "step `{name}` took effect (or may have) but was not compensated"
                    ));
                }
                if !effect(s) && undone(s) && !interrupted {
                    problems.push(format!(
                        "step `{name}` failed cleanly (no effect) but was compensated"
                    ));
                }
            }
        }
        let halted_at = match fault {
            Fault::Undo { step, .. }
                if status == ExecutionStatus::Stuck && !self.continue_on_failure =>
            {
                Some(step)
            }
            _ => None,
        };
        if let Some(step) = halted_at {
            for s in (0..n).filter(|&s| self.node_of[s] < self.node_of[step]) {
                if undo_calls(s).next().is_some() {
                    problems.push(format!(
                        "the compensation of `{}` ran after the compensation of `{}` failed for good (the rollback must halt there)",
                        self.name(s),
                        self.name(step)
                    ));
                }
            }
        }
        // Reverse order: each compensation's first call comes from the
        // same node or an earlier one than the one before it.
        let mut last: Option<usize> = None;
        let mut seen = vec![false; n];
        for call in calls.iter().filter(|c| c.undo) {
            if std::mem::replace(&mut seen[call.step], true) {
                continue;
            }
            let node = self.node_of[call.step];
            if last.is_some_and(|previous| node > previous) {
                problems.push(format!(
                    "the compensation of `{}` ran after that of a later step (rollback must go in reverse order)",
                    self.name(call.step)
                ));
            }
            last = Some(node);
        }
        problems
    }

    pub(super) fn summary(&self, calls: &[Call]) -> String {
        let mut undone = Vec::new();
        for call in calls.iter().filter(|c| c.undo && c.end == Some(End::Ok)) {
            let name = self.name(call.step);
            if !undone.contains(&name) {
                undone.push(name);
            }
        }
        // The user's code, however often each attempt ran it (twice in a
        // "twice" case; not at all when a failure was injected instead).
        let runs = |undo: bool| -> u32 {
            calls
                .iter()
                .filter(|c| c.undo == undo)
                .map(|c| c.runs)
                .sum()
        };
        let (actions, undos) = (runs(false), runs(true));
        format!(
            "compensated [{}]; {actions} action and {undos} compensation invocations",
            undone.join(", ")
        )
    }
}

/// Per step of `saga`: whether its policy retries `error` after a first
/// attempt (after the pivot, a policy without a number of attempts has
/// forever's since the build).
fn retries<C, D>(saga: &Saga<C, D>, error: &crate::error::StepError) -> Vec<bool> {
    saga.inner
        .steps
        .iter()
        .map(|s| s.retry.max_attempts() > 1 && s.retry.retries(error))
        .collect()
}
