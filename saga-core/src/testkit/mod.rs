//! A test kit for your own sagas (feature `testkit`): runs a saga with a
//! failure injected at every step and every compensation, each in turn,
//! with every step run twice, and with a crash at every log point followed
//! by recovery, and checks each run against the failure rules of
//! `docs/DESIGN.md` section 3.
//!
//! The kit wraps the definition's steps (the saga itself is untouched, and
//! the wrapped copy has the same [fingerprint](crate::Saga::fingerprint)),
//! so it runs the real actions and compensations on a fresh context from
//! your factory for every case. An injected failure either skips the action
//! (a clean failure: nothing took effect) or runs it and then reports an
//! error marked [`outcome_unknown`](crate::StepError::outcome_unknown) (it
//! took effect, the saga cannot know), so compensations are exercised with
//! `None` as well as with an output. Injected failures are persistent: every
//! attempt fails, so retry policies run out (on a [`TestClock`]: backoff
//! does not sleep).
//!
//! Every case checks that the run ended as the rules say (completed,
//! compensated or stuck), that no compensation ran for a step whose action
//! never started, that a step whose action took effect (or may have) was
//! compensated on a rollback and a step that failed cleanly was not, that
//! no compensation ran again after it succeeded, and that compensations ran
//! in reverse order. [`SagaTest::with_state`] adds a comparison of the
//! final context with the one an undisturbed run leaves (for the "twice"
//! and crash modes: how idempotency shows) and, after a rollback, with the
//! context the run started from (how an effect left behind shows).
//!
//! Steps that sleep (real remote calls, or stand-ins for them) make every
//! case wait: run the kit under `#[tokio::test(start_paused = true)]`
//! (tokio's `test-util` feature) and tokio's timers cost nothing.
//!
//! Add it as a dev-dependency with the feature on:
//!
//! ```toml
//! [dev-dependencies]
//! saga-core = { version = "0.1", features = ["testkit"] }
//! ```
//!
//! and copy this test:
//!
//! ```
//! use saga_core::testkit::{Durability, SagaTest};
//! use saga_core::{Saga, Step, StepError, StepInfo};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Default, Serialize, Deserialize)]
//! struct Order { reserved: u32, charged: u32 }
//!
//! fn order_saga() -> Saga<Order> {
//!     Saga::builder("order")
//!         .step(Step::new("reserve", |o: &mut Order, _: &StepInfo<'_>| {
//!             o.reserved = 2;
//!             Ok::<_, StepError>(())
//!         })
//!         .compensate(|o: &mut Order, _: Option<&()>, _: &StepInfo<'_>| {
//!             o.reserved = 0; // setting, not subtracting: safe to repeat
//!             Ok::<_, StepError>(())
//!         }))
//!         .pivot(Step::new("charge", |o: &mut Order, _: &StepInfo<'_>| {
//!             o.charged = 10;
//!             Ok::<_, StepError>(())
//!         }))
//!         .build()
//!         .expect("a valid saga")
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // In your tests: #[tokio::test] async fn order_saga_survives_failures() { .. }
//! let kit = SagaTest::new(&order_saga(), Order::default)
//!     .with_state(|o: &Order| (o.reserved, o.charged));
//! let report = kit.failures().await;
//! assert!(report.passed(), "{report}");
//! let report = kit.twice().await;
//! assert!(report.passed(), "{report}");
//! let report = kit.crashes(Durability::Memory).await;
//! assert!(report.passed(), "{report}");
//! // Or all three at once, printing every case on failure:
//! kit.check_all(Durability::Memory).await.assert_passed();
//! # });
//! ```

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::clock::TestClock;
use crate::engine::{EngineError, SagaEngine};
use crate::error::{SagaError, StepError};
use crate::id::ExecutionId;
use crate::policy::RetryPolicy;
use crate::report::{ExecutionStatus, SagaReport};
use crate::saga::{Node, RunOptions, Saga, SagaInner};
use crate::step::{
    Action, BoxFuture, Output, StepDef, StepInfo, StepKind, Undo, erase_async, erase_async_undo,
    erase_shared_async, erase_shared_async_undo,
};
use crate::store::{
    Ack, ClaimRequest, Claimed, Created, DefinitionRecord, Event, EventKind, ExecutionRecord,
    Lease, MemoryStore, NewExecution, SagaStore, StoreError, StoreResult,
};

/// Compares the final contexts of two runs: `None` when they agree, a
/// description of the difference otherwise.
type Compare<C> = dyn Fn(&C, &C) -> Option<String> + Send + Sync;

/// Tests one saga against failures, repeated steps and crashes. See the
/// [module documentation](self) for what each case checks.
pub struct SagaTest<C> {
    saga: Saga<C>,
    factory: Arc<dyn Fn() -> C + Send + Sync>,
    compare: Option<Arc<Compare<C>>>,
}

/// Where [`SagaTest::crashes`] keeps the log that survives the crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// A [`MemoryStore`] shared by the crashed engine and the one that
    /// recovers.
    Memory,
    /// A temporary [`SqliteStore`](crate::store::SqliteStore) file per case,
    /// deleted afterwards (feature `sqlite`).
    #[cfg(feature = "sqlite")]
    Sqlite,
}

/// The outcome of every case a [`SagaTest`] ran; its `Display` lists them.
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
    /// What the run did, in short (compensations, invocations).
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

    fn merge(mut self, other: TestReport) -> Self {
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

/// What a case does to the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Every attempt of the step's action fails without running it.
    Clean(usize),
    /// Every attempt runs the action, then reports an unknown outcome.
    Unknown(usize),
    /// Every attempt of the step's compensation fails without running it;
    /// the rollback is started by `trigger`.
    Undo {
        step: usize,
        trigger: Trigger,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// A later step fails cleanly.
    Clean(usize),
    /// The step itself fails with an unknown outcome.
    Unknown(usize),
}

/// One invocation of an action or a compensation, as the probe saw it.
#[derive(Debug, Clone, Copy)]
struct Call {
    step: usize,
    undo: bool,
    /// `None` while running, or if it was dropped or cut off.
    end: Option<End>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Ok,
    Failed { unknown: bool },
}

/// Injects a case's fault and records every invocation.
struct Probe {
    fault: Fault,
    twice: bool,
    calls: Mutex<Vec<Call>>,
}

impl Probe {
    fn new(fault: Fault, twice: bool) -> Arc<Self> {
        Arc::new(Probe {
            fault,
            twice,
            calls: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> std::sync::MutexGuard<'_, Vec<Call>> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the start of an invocation; fails it at once if the case
    /// injects a clean failure there.
    fn before(&self, step: usize, undo: bool) -> Result<usize, StepError> {
        let injected = match self.fault {
            Fault::Clean(s) if !undo => s == step,
            Fault::Undo { trigger, .. } if !undo => trigger == Trigger::Clean(step),
            Fault::Undo { step: s, .. } if undo => s == step,
            _ => false,
        };
        let mut calls = self.calls();
        calls.push(Call {
            step,
            undo,
            end: injected.then_some(End::Failed { unknown: false }),
        });
        if injected {
            let what = if undo { "compensation" } else { "step" };
            return Err(StepError::new(format!("injected failure of the {what}")));
        }
        Ok(calls.len() - 1)
    }

    /// Records the end of an invocation; turns a success into an unknown
    /// outcome if the case injects one there.
    fn after<T>(&self, call: usize, result: Result<T, StepError>) -> Result<T, StepError> {
        let step = self.calls()[call].step;
        let undo = self.calls()[call].undo;
        let unknown = !undo
            && match self.fault {
                Fault::Unknown(s) => s == step,
                Fault::Undo { trigger, .. } => trigger == Trigger::Unknown(step),
                _ => false,
            };
        let result = match result {
            Ok(_) if unknown => Err(StepError::new(
                "injected failure after the step ran (outcome unknown)",
            )
            .outcome_unknown()),
            other => other,
        };
        self.calls()[call].end = Some(match &result {
            Ok(_) => End::Ok,
            Err(e) => End::Failed {
                unknown: e.is_outcome_unknown(),
            },
        });
        result
    }
}

/// One invocation of a sync action or compensation through the probe:
/// twice in a row in the "twice" mode.
fn invoke<T>(
    probe: &Probe,
    step: usize,
    undo: bool,
    mut call: impl FnMut() -> Result<T, StepError>,
) -> Result<T, StepError> {
    let at = probe.before(step, undo)?;
    let mut result = call();
    if probe.twice && result.is_ok() {
        result = call();
    }
    probe.after(at, result)
}

fn mismatch() -> StepError {
    StepError::new("internal error: the test kit wrapped a step of another kind")
}

/// The saga with every action and compensation wrapped by `probe`; the
/// trigger of a crash case gets one attempt (so a rollback does not wait
/// for a real backoff).
fn wrap<C: Send + 'static>(saga: &Saga<C>, probe: &Arc<Probe>, single: Option<usize>) -> Saga<C> {
    let inner = &saga.inner;
    let steps = inner
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| StepDef {
            name: Arc::clone(&step.name),
            action: wrap_action(saga, probe, i),
            undo: step.undo.as_ref().map(|u| wrap_undo(saga, probe, i, u)),
            retry: if single == Some(i) {
                RetryPolicy::none()
            } else {
                step.retry.clone()
            },
            undo_retry: step.undo_retry.clone(),
            timeout: step.timeout,
            metadata: step.metadata.clone(),
            cancel_safe: step.cancel_safe,
            pivot: step.pivot,
            kind: step.kind,
            codec: step.codec,
            output_type: step.output_type,
        })
        .collect();
    let nodes = inner
        .nodes
        .iter()
        .map(|node| match node {
            Node::Step(i) => Node::Step(*i),
            Node::Group { range, ops } => Node::Group {
                range: range.clone(),
                ops: crate::executor::GroupOps {
                    run: ops.run,
                    compensate: ops.compensate,
                },
            },
        })
        .collect();
    Saga {
        inner: Arc::new(SagaInner {
            name: Arc::clone(&inner.name),
            steps,
            nodes,
            observers: inner.observers.clone(),
            undo_retry: inner.undo_retry.clone(),
            continue_on_compensation_failure: inner.continue_on_compensation_failure,
            has_async: inner.has_async,
        }),
    }
}

fn wrap_action<C: Send + 'static>(saga: &Saga<C>, probe: &Arc<Probe>, i: usize) -> Action<C> {
    let (orig, probe) = (saga.clone(), Arc::clone(probe));
    match &saga.inner.steps[i].action {
        Action::Sync(_) => Action::Sync(Box::new(move |ctx: &mut C, info: &StepInfo<'_>| {
            let Action::Sync(f) = &orig.inner.steps[i].action else {
                return Err(mismatch());
            };
            invoke(&probe, i, false, || f(&mut *ctx, info))
        })),
        Action::SharedSync(_) => Action::SharedSync(Box::new(move |ctx: &C, info| {
            let Action::SharedSync(f) = &orig.inner.steps[i].action else {
                return Err(mismatch());
            };
            invoke(&probe, i, false, || f(ctx, info))
        })),
        Action::Async(_) => erase_async(move |ctx: &mut C, info| {
            let (orig, probe) = (orig.clone(), Arc::clone(&probe));
            Box::pin(async move {
                let Action::Async(f) = &orig.inner.steps[i].action else {
                    return Err(mismatch());
                };
                let call = probe.before(i, false)?;
                let mut result = f(&mut *ctx, info).await;
                if probe.twice && result.is_ok() {
                    result = f(&mut *ctx, info).await;
                }
                probe.after(call, result)
            }) as BoxFuture<'_, Result<Output, StepError>>
        }),
        // The futures are made before the first is awaited, so that no
        // `&C` is held across an await (which would need `C: Sync`).
        Action::SharedAsync(_) => erase_shared_async(move |ctx: &C, info| {
            let Action::SharedAsync(f) = &orig.inner.steps[i].action else {
                return Box::pin(std::future::ready(Err(mismatch())));
            };
            let call = match probe.before(i, false) {
                Ok(call) => call,
                Err(e) => return Box::pin(std::future::ready(Err(e))),
            };
            let first = f(ctx, info);
            let second = probe.twice.then(|| f(ctx, info));
            let probe = Arc::clone(&probe);
            Box::pin(async move {
                let mut result = first.await;
                if let Some(second) = second.filter(|_| result.is_ok()) {
                    result = second.await;
                }
                probe.after(call, result)
            }) as BoxFuture<'_, Result<Output, StepError>>
        }),
    }
}

fn wrap_undo<C: Send + 'static>(
    saga: &Saga<C>,
    probe: &Arc<Probe>,
    i: usize,
    undo: &Undo<C>,
) -> Undo<C> {
    let (orig, probe) = (saga.clone(), Arc::clone(probe));
    match undo {
        Undo::Sync(_) => Undo::Sync(Box::new(move |ctx: &mut C, out, info| {
            let Some(Undo::Sync(f)) = &orig.inner.steps[i].undo else {
                return Err(mismatch());
            };
            invoke(&probe, i, true, || f(&mut *ctx, out, info))
        })),
        Undo::SharedSync(_) => Undo::SharedSync(Box::new(move |ctx: &C, out, info| {
            let Some(Undo::SharedSync(f)) = &orig.inner.steps[i].undo else {
                return Err(mismatch());
            };
            invoke(&probe, i, true, || f(ctx, out, info))
        })),
        Undo::Async(_) => erase_async_undo(move |ctx: &mut C, out, info| {
            let (orig, probe) = (orig.clone(), Arc::clone(&probe));
            Box::pin(async move {
                let Some(Undo::Async(f)) = &orig.inner.steps[i].undo else {
                    return Err(mismatch());
                };
                let call = probe.before(i, true)?;
                let mut result = f(&mut *ctx, out, info).await;
                if probe.twice && result.is_ok() {
                    result = f(&mut *ctx, out, info).await;
                }
                probe.after(call, result)
            }) as BoxFuture<'_, Result<(), StepError>>
        }),
        Undo::SharedAsync(_) => erase_shared_async_undo(move |ctx: &C, out, info| {
            let Some(Undo::SharedAsync(f)) = &orig.inner.steps[i].undo else {
                return Box::pin(std::future::ready(Err(mismatch())));
            };
            let call = match probe.before(i, true) {
                Ok(call) => call,
                Err(e) => return Box::pin(std::future::ready(Err(e))),
            };
            let first = f(ctx, out, info);
            let second = probe.twice.then(|| f(ctx, out, info));
            let probe = Arc::clone(&probe);
            Box::pin(async move {
                let mut result = first.await;
                if let Some(second) = second.filter(|_| result.is_ok()) {
                    result = second.await;
                }
                probe.after(call, result)
            }) as BoxFuture<'_, Result<(), StepError>>
        }),
    }
}

/// The cases of one saga, with what the rules expect of each.
struct Plan {
    names: Vec<String>,
    kinds: Vec<StepKind>,
    has_undo: Vec<bool>,
    /// Each step's node (its place in the order of execution).
    node_of: Vec<usize>,
    pivot: Option<usize>,
    continue_on_failure: bool,
}

impl Plan {
    fn of<C>(saga: &Saga<C>) -> Self {
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
        }
    }

    fn name(&self, step: usize) -> &str {
        &self.names[step]
    }

    /// Whether a failure of `step` may still roll the saga back: it comes
    /// before the pivot, or is the pivot.
    fn can_roll_back(&self, step: usize) -> bool {
        self.pivot
            .is_none_or(|p| self.node_of[step] <= self.node_of[p])
    }

    /// Every failure case: each step failing cleanly and with an unknown
    /// outcome, then each compensation failing (the rollback started by the
    /// next step that can roll back, failing cleanly, or by the step
    /// itself failing with an unknown outcome).
    fn failure_cases(&self) -> Vec<Fault> {
        let n = self.names.len();
        let mut cases = vec![Fault::None];
        for step in 0..n {
            cases.push(Fault::Clean(step));
            cases.push(Fault::Unknown(step));
        }
        for step in (0..n).filter(|&s| self.has_undo[s]) {
            let trigger = (step + 1..n)
                .find(|&t| self.node_of[t] > self.node_of[step] && self.can_roll_back(t))
                .map_or(Trigger::Unknown(step), Trigger::Clean);
            cases.push(Fault::Undo { step, trigger });
        }
        cases
    }

    /// The longest rollback: the last step that can roll back fails
    /// cleanly (none if no step before it has something to undo).
    fn longest_rollback(&self) -> Option<usize> {
        let last = (0..self.names.len())
            .rev()
            .find(|&s| self.can_roll_back(s) && self.node_of[s] > 0)?;
        (0..last)
            .any(|s| self.has_undo[s] && self.node_of[s] < self.node_of[last])
            .then_some(last)
    }

    fn describe(&self, fault: Fault) -> String {
        match fault {
            Fault::None => "no failure".to_owned(),
            Fault::Clean(s) => format!("step `{}` fails cleanly", self.name(s)),
            Fault::Unknown(s) => format!("step `{}` fails, outcome unknown", self.name(s)),
            Fault::Undo { step, trigger } => {
                let cause = match trigger {
                    Trigger::Clean(t) => format!("`{}` failing", self.name(t)),
                    Trigger::Unknown(t) => {
                        format!("`{}` failing with an unknown outcome", self.name(t))
                    }
                };
                format!(
                    "compensation of `{}` fails (rollback from {cause})",
                    self.name(step)
                )
            }
        }
    }

    /// What the rules say a run with `fault` ends as.
    fn expected(&self, fault: Fault) -> ExecutionStatus {
        let after_pivot = |s: usize| {
            self.pivot
                .is_some_and(|p| self.node_of[s] > self.node_of[p])
        };
        match fault {
            Fault::None => ExecutionStatus::Completed,
            Fault::Clean(s) if after_pivot(s) => ExecutionStatus::Stuck,
            Fault::Clean(_) => ExecutionStatus::Compensated,
            // The pivot with an unknown outcome can go neither way.
            Fault::Unknown(s) if after_pivot(s) || self.kinds[s] == StepKind::Pivot => {
                ExecutionStatus::Stuck
            }
            Fault::Unknown(_) => ExecutionStatus::Compensated,
            Fault::Undo { .. } => ExecutionStatus::Stuck,
        }
    }

    /// The rules a finished, uninterrupted run must have kept, given what
    /// the probe saw.
    fn check(
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
        if let Fault::Undo { step, .. } = fault
            && status == ExecutionStatus::Stuck
            && !self.continue_on_failure
        {
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
            if let Some(previous) = last
                && node > previous
            {
                problems.push(format!(
                    "the compensation of `{}` ran after that of a later step (rollback must go in reverse order)",
                    self.name(call.step)
                ));
            }
            last = Some(node);
        }
        problems
    }

    fn summary(&self, calls: &[Call]) -> String {
        let mut undone = Vec::new();
        for call in calls.iter().filter(|c| c.undo && c.end == Some(End::Ok)) {
            let name = self.name(call.step);
            if !undone.contains(&name) {
                undone.push(name);
            }
        }
        let actions = calls.iter().filter(|c| !c.undo).count();
        let undos = calls.iter().filter(|c| c.undo).count();
        format!(
            "compensated [{}]; {actions} action and {undos} compensation invocations",
            undone.join(", ")
        )
    }
}

fn status_of(result: &Result<SagaReport, SagaError>) -> ExecutionStatus {
    match result {
        Ok(report) => report.status,
        Err(error) => error.report().status,
    }
}

impl<C: Send + 'static> SagaTest<C> {
    /// A test of `saga`; `factory` makes the context of each case (the one
    /// your saga starts from in production).
    pub fn new(saga: &Saga<C>, factory: impl Fn() -> C + Send + Sync + 'static) -> Self {
        SagaTest {
            saga: saga.clone(),
            factory: Arc::new(factory),
            compare: None,
        }
    }

    /// Compares what `state` extracts from the final context of the
    /// "twice" and crash cases with what it extracts after an undisturbed
    /// run of the same case (a step that is not idempotent shows as a
    /// difference), and, after a rollback, with what it extracts from a
    /// fresh context (an effect left behind shows). Extract what your
    /// steps change and their compensations undo (stock, charges, a fake
    /// service's ledger kept in the context), not test scaffolding.
    #[must_use]
    pub fn with_state<S, F>(mut self, state: F) -> Self
    where
        S: PartialEq + fmt::Debug,
        F: Fn(&C) -> S + Send + Sync + 'static,
    {
        self.compare = Some(Arc::new(move |a: &C, b: &C| {
            let (a, b) = (state(a), state(b));
            (a != b).then(|| format!("{b:?} instead of {a:?}"))
        }));
        self
    }

    fn report(&self, cases: Vec<CaseReport>) -> TestReport {
        TestReport {
            saga: self.saga.name().to_owned(),
            cases,
        }
    }

    /// Runs one case in memory; returns the status, what the probe saw and
    /// the final context.
    async fn run_case(
        &self,
        fault: Fault,
        twice: bool,
    ) -> (Result<SagaReport, SagaError>, Vec<Call>, C) {
        let probe = Probe::new(fault, twice);
        let saga = wrap(&self.saga, &probe, None);
        let mut ctx = (self.factory)();
        let options = RunOptions::new().with_clock(TestClock::new());
        let result = saga.run_with(&mut ctx, options).await;
        let calls = probe.calls().clone();
        (result, calls, ctx)
    }

    /// Runs the saga once undisturbed, then with each step failing cleanly
    /// and with an unknown outcome, and with each compensation failing;
    /// checks every run against the rules, and (with
    /// [`with_state`](Self::with_state)) that every run that was rolled
    /// back left the state as a fresh context from the factory has it.
    pub async fn failures(&self) -> TestReport {
        let plan = Plan::of(&self.saga);
        let mut cases = Vec::new();
        for fault in plan.failure_cases() {
            let (result, calls, ctx) = self.run_case(fault, false).await;
            let expected = plan.expected(fault);
            let status = status_of(&result);
            let mut problems = plan.check(fault, &calls, status, false);
            if status != expected {
                problems.insert(0, format!("ended {status}: {}", describe_result(&result)));
            }
            // A clean rollback undoes every effect: the state is the
            // state the run started from.
            if status == ExecutionStatus::Compensated
                && let Some(difference) = self
                    .compare
                    .as_ref()
                    .and_then(|compare| compare(&(self.factory)(), &ctx))
            {
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
    /// [`StepInfo`], so the same idempotency key), undisturbed and on each
    /// rollback path, each compensation twice too; checks that each run
    /// ends as the undisturbed one does and (with
    /// [`with_state`](Self::with_state)) leaves the same state.
    pub async fn twice(&self) -> TestReport {
        let plan = Plan::of(&self.saga);
        let mut cases = Vec::new();
        let faults = std::iter::once(Fault::None).chain(
            (0..plan.names.len())
                .filter_map(|s| (plan.can_roll_back(s) && s > 0).then_some(Fault::Clean(s))),
        );
        for fault in faults {
            let (once, _, once_ctx) = self.run_case(fault, false).await;
            let (result, calls, ctx) = self.run_case(fault, true).await;
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
                name: format!(
                    "{}, every step and compensation twice",
                    plan.describe(fault)
                ),
                expected,
                actual: Some(status),
                summary: plan.summary(&calls),
                problems,
            });
        }
        self.report(cases)
    }
}

fn describe_result(result: &Result<SagaReport, SagaError>) -> String {
    match result {
        Ok(report) => format!("completed {} steps", report.steps.len()),
        Err(error) => match std::error::Error::source(error) {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        },
    }
}

impl<C> SagaTest<C>
where
    C: Serialize + DeserializeOwned + Send + 'static,
{
    /// Runs the saga durably (on an engine and a store), undisturbed and
    /// on its longest rollback path, and then once per log commit of each,
    /// stopping the owner dead just before and just after that commit; a
    /// new engine on the same store then recovers the execution. Each case
    /// must end as the undisturbed run did, with the same step statuses
    /// (and, with [`with_state`](Self::with_state), the same final state),
    /// and no compensation for a step that never started.
    ///
    /// One exception, by the rules: a crash while the failing step of the
    /// rollback path runs (its start logged, its failure not) makes that
    /// step's outcome unknown, so the case must end as a run in which that
    /// step fails with an unknown outcome does (stuck if it is the pivot;
    /// its own compensation run if it has one); the final state is not
    /// compared then, as that run's step did take effect.
    ///
    /// The crashed owner writes nothing after the crash; its lease is
    /// treated as expired. The failing step of the rollback path gets one
    /// attempt (its retry policy is not used here).
    pub async fn crashes(&self, durability: Durability) -> TestReport {
        let plan = Plan::of(&self.saga);
        let mut cases = Vec::new();
        let paths = std::iter::once(Fault::None).chain(plan.longest_rollback().map(Fault::Clean));
        for fault in paths {
            let path = plan.describe(fault);
            let baseline = match self.durable_run(fault, None, durability).await {
                Ok(run) => run,
                Err(problem) => {
                    cases.push(failed_case(
                        format!("{path}, durable"),
                        plan.expected(fault),
                        problem,
                    ));
                    continue;
                }
            };
            let mut problems = plan.check(fault, &baseline.calls, baseline.status, false);
            if baseline.status != plan.expected(fault) {
                problems.insert(0, format!("ended {}", baseline.status));
            }
            cases.push(CaseReport {
                name: format!("{path}, durable, {} commits", baseline.commits),
                expected: plan.expected(fault),
                actual: Some(baseline.status),
                summary: plan.summary(&baseline.calls),
                problems,
            });
            // The same path with the failing step's outcome unknown: what
            // a crash while it runs must end like.
            let unknown = match fault {
                Fault::Clean(s) => {
                    Some(self.durable_run(Fault::Unknown(s), None, durability).await)
                }
                _ => None,
            };
            for commit in 1..=baseline.commits {
                for after in [false, true] {
                    let when = if after { "after" } else { "before" };
                    let name = format!(
                        "{path}, crash {when} commit {commit} of {}",
                        baseline.commits
                    );
                    let run = match self
                        .durable_run(fault, Some((commit, after)), durability)
                        .await
                    {
                        Ok(run) => run,
                        Err(problem) => {
                            cases.push(failed_case(name, baseline.status, problem));
                            continue;
                        }
                    };
                    let (reference, name) = match (&unknown, run.failing_in_flight) {
                        (Some(Ok(unknown)), true) => (
                            unknown,
                            format!("{name} (while the failing step ran: its outcome is unknown)"),
                        ),
                        (Some(Err(problem)), true) => {
                            cases.push(failed_case(
                                name,
                                baseline.status,
                                format!("the run with an unknown outcome failed: {problem}"),
                            ));
                            continue;
                        }
                        _ => (&baseline, name),
                    };
                    let mut problems = plan.check(fault, &run.calls, run.status, true);
                    if run.status != reference.status {
                        problems.insert(0, format!("ended {}", run.status));
                    }
                    if run.steps != reference.steps {
                        problems.push(format!(
                            "step statuses {} instead of {}",
                            run.steps.join(" "),
                            reference.steps.join(" ")
                        ));
                    }
                    if let (Some(compare), Some(a), Some(b), false) = (
                        &self.compare,
                        &reference.context,
                        &run.context,
                        run.failing_in_flight,
                    ) && let Some(difference) = compare(a, b)
                    {
                        problems.push(format!("the final state differs: {difference}"));
                    }
                    cases.push(CaseReport {
                        name,
                        expected: reference.status,
                        actual: Some(run.status),
                        summary: plan.summary(&run.calls),
                        problems,
                    });
                }
            }
        }
        self.report(cases)
    }

    /// Runs [`failures`](Self::failures), [`twice`](Self::twice) and
    /// [`crashes`](Self::crashes) and joins their reports.
    pub async fn check_all(&self, durability: Durability) -> TestReport {
        let failures = self.failures().await;
        let twice = self.twice().await;
        let crashes = self.crashes(durability).await;
        failures.merge(twice).merge(crashes)
    }

    /// One durable run of a case, crashed at `crash` (commit number, after
    /// it or before it) and recovered by a second engine.
    async fn durable_run(
        &self,
        fault: Fault,
        crash: Option<(usize, bool)>,
        durability: Durability,
    ) -> Result<DurableRun<C>, String> {
        let (store, _file) = open_store(durability)?;
        let probe = Probe::new(fault, false);
        let failing = match fault {
            Fault::Clean(s) | Fault::Unknown(s) => Some(s),
            _ => None,
        };
        let single = failing;
        let saga = wrap(&self.saga, &probe, single);
        let crashing = Arc::new(CrashingStore {
            inner: Arc::clone(&store),
            crash,
            commits: AtomicUsize::new(0),
            crashed: AtomicBool::new(false),
        });
        let first = SagaEngine::with_store(Arc::clone(&crashing) as Arc<dyn SagaStore>);
        first
            .register(saga.clone())
            .await
            .map_err(|e| format!("cannot register the saga: {e}"))?;
        // A caller-given id, so that the caller can retry the start after
        // a crash before its creation was committed.
        let id = ExecutionId::generate();
        let outcome = match first
            .start_with_id(self.saga.name(), id.clone(), (self.factory)())
            .await
        {
            Ok(id) => first.wait(&id).await,
            Err(_) if crashing.crashed.load(Ordering::SeqCst) => Err(EngineError::NotFound {
                execution_id: id.clone(),
            }),
            Err(e) => return Err(format!("cannot start the saga: {e}")),
        };
        let commits = crashing.commits.load(Ordering::SeqCst);
        let mut failing_in_flight = false;
        let report = if crashing.crashed.load(Ordering::SeqCst) {
            drop(first);
            // What the log says at the crash: the failing step started and
            // did not end?
            if let (Some(step), Ok(events)) = (failing, store.events(&id).await) {
                let last = events.iter().rev().find(|e| e.step == Some(step as u32));
                failing_in_flight = last.is_some_and(|e| e.kind == EventKind::StepStarted);
            }
            let second = SagaEngine::with_store(Arc::clone(&store));
            second
                .register(saga)
                .await
                .map_err(|e| format!("cannot register the saga after the crash: {e}"))?;
            let recovery = second
                .recover()
                .await
                .map_err(|e| format!("recovery failed: {e}"))?;
            if let Some((_, error)) = recovery.refused.iter().find(|(r, _)| *r == id) {
                return Err(format!("recovery refused the execution: {error}"));
            }
            if recovery.busy.contains(&id) {
                return Err("recovery found the execution busy".to_owned());
            }
            // The caller, whose start failed, starts it again (idempotent
            // by its id: a no-op if it was created).
            if !recovery.resumed.contains(&id) {
                second
                    .start_with_id(self.saga.name(), id.clone(), (self.factory)())
                    .await
                    .map_err(|e| format!("the retried start failed: {e}"))?;
            }
            second
                .wait(&id)
                .await
                .map_err(|e| format!("the recovered run did not end: {e}"))?
        } else {
            outcome.map_err(|e| format!("the run did not end: {e}"))?
        };
        let context = final_context::<C>(&*store, &id).await;
        let calls = probe.calls().clone();
        Ok(DurableRun {
            status: report.status,
            steps: report
                .steps
                .iter()
                .map(|s| format!("{}={}", s.name, s.status))
                .collect(),
            calls,
            commits,
            context,
            failing_in_flight,
        })
    }
}

fn failed_case(name: String, expected: ExecutionStatus, problem: String) -> CaseReport {
    CaseReport {
        name,
        expected,
        actual: None,
        summary: String::new(),
        problems: vec![problem],
    }
}

struct DurableRun<C> {
    /// The crash cut the failing step of the path off.
    failing_in_flight: bool,
    status: ExecutionStatus,
    steps: Vec<String>,
    calls: Vec<Call>,
    commits: usize,
    context: Option<C>,
}

/// The context the log's `finished` event holds.
async fn final_context<C: DeserializeOwned>(store: &dyn SagaStore, id: &ExecutionId) -> Option<C> {
    let events = store.events(id).await.ok()?;
    let finished = events
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::Finished)?;
    serde_json::from_str(finished.context.as_deref()?).ok()
}

/// A temporary SQLite file, deleted on drop.
struct TempFile(Option<std::path::PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let mut file = path.clone().into_os_string();
                file.push(suffix);
                let _ = std::fs::remove_file(file);
            }
        }
    }
}

fn open_store(durability: Durability) -> Result<(Arc<dyn SagaStore>, TempFile), String> {
    match durability {
        Durability::Memory => Ok((Arc::new(MemoryStore::new()), TempFile(None))),
        #[cfg(feature = "sqlite")]
        Durability::Sqlite => {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let path = std::env::temp_dir().join(format!(
                "saga-testkit-{}-{}-{}.db",
                std::process::id(),
                ExecutionId::generate(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let file = TempFile(Some(path.clone()));
            let store = crate::store::SqliteStore::open(&path)
                .map_err(|e| format!("cannot open a temporary store: {e}"))?;
            Ok((Arc::new(store), file))
        }
    }
}

/// A store that dies at a chosen commit: from then on every write fails,
/// as if its process had been killed (reads still work, for the report).
struct CrashingStore {
    inner: Arc<dyn SagaStore>,
    /// The commit (from 1) to die at, and whether after writing it.
    crash: Option<(usize, bool)>,
    commits: AtomicUsize,
    crashed: AtomicBool,
}

impl CrashingStore {
    /// Numbers the next commit; dies if the crash is just before it (or
    /// came already).
    fn next_commit(&self) -> StoreResult<usize> {
        if self.crashed.load(Ordering::SeqCst) {
            return Err(self.dead());
        }
        let n = self.commits.fetch_add(1, Ordering::SeqCst) + 1;
        if self.crash == Some((n, false)) {
            self.crashed.store(true, Ordering::SeqCst);
            return Err(self.dead());
        }
        Ok(n)
    }

    /// Dies if the crash is just after commit `n`.
    fn after_commit(&self, n: usize) -> StoreResult<()> {
        if self.crash == Some((n, true)) {
            self.crashed.store(true, Ordering::SeqCst);
            return Err(self.dead());
        }
        Ok(())
    }

    fn dead(&self) -> StoreError {
        StoreError::Closed {
            store: format!("{} (crashed by the test kit)", self.inner.describe()),
        }
    }
}

impl SagaStore for CrashingStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn put_definition(&self, definition: DefinitionRecord) -> BoxFuture<'_, StoreResult<()>> {
        self.inner.put_definition(definition)
    }

    fn definition(
        &self,
        fingerprint: &str,
    ) -> BoxFuture<'_, StoreResult<Option<DefinitionRecord>>> {
        self.inner.definition(fingerprint)
    }

    fn create(
        &self,
        execution: NewExecution,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Created>> {
        // The creation is a commit of the log too (with the first events).
        let owner = owner.to_owned();
        Box::pin(async move {
            let n = self.next_commit()?;
            let id = execution.id.clone();
            let created = self.inner.create(execution, &owner, ttl).await?;
            if let Err(dead) = self.after_commit(n) {
                // The run never starts, so nothing releases the lease: it
                // expires (as `release` stands for after a crash).
                if let Created::New(lease) = &created {
                    let _ = self.inner.release(&id, lease).await;
                }
                return Err(dead);
            }
            Ok(created)
        })
    }

    fn claim(
        &self,
        id: &ExecutionId,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Option<Lease>>> {
        self.inner.claim(id, owner, ttl)
    }

    fn append<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
        events: Vec<Event>,
        status: ExecutionStatus,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        Box::pin(async move {
            let n = self.next_commit()?;
            let ack = self.inner.append(id, lease, events, status).await?;
            self.after_commit(n)?;
            Ok(ack)
        })
    }

    fn renew<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        if self.crashed.load(Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(self.dead())));
        }
        self.inner.renew(id, lease)
    }

    fn release<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<()>> {
        // After a crash this stands for the lease expiring.
        self.inner.release(id, lease)
    }

    fn get<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> BoxFuture<'a, StoreResult<Option<ExecutionRecord>>> {
        self.inner.get(id)
    }

    fn events<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<Vec<Event>>> {
        self.inner.events(id)
    }

    fn list(
        &self,
        status: Option<ExecutionStatus>,
    ) -> BoxFuture<'_, StoreResult<Vec<ExecutionRecord>>> {
        self.inner.list(status)
    }

    fn request_cancel<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<bool>> {
        self.inner.request_cancel(id)
    }

    fn purge(&self, before_ms: i64) -> BoxFuture<'_, StoreResult<u64>> {
        self.inner.purge(before_ms)
    }
}

/// A store that answers late: every operation goes to the inner store and
/// its answer comes back `delay` later, as a store across a network does.
/// For racing your own code (two callers of one operation, a
/// [`Worker`](crate::Worker) next to operator commands) with the latency
/// that makes races show: a race that needs 1 ms to show is still a race.
///
/// Every [`SagaStore`] method is passed on, including
/// [`claim_next`](SagaStore::claim_next) (the inner store's own, so a
/// PostgreSQL store keeps its one-statement claim) and
/// [`work_signal`](SagaStore::work_signal) (not delayed: it is a signal,
/// not an answer).
///
/// ```
/// use std::time::Duration;
/// use saga_core::SagaEngine;
/// use saga_core::store::MemoryStore;
/// use saga_core::testkit::DelayedStore;
///
/// let store = DelayedStore::new(MemoryStore::new(), Duration::from_millis(1));
/// let engine = SagaEngine::new(store);
/// # let _ = engine;
/// ```
#[derive(Clone)]
pub struct DelayedStore {
    inner: Arc<dyn SagaStore>,
    delay: Duration,
}

impl fmt::Debug for DelayedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelayedStore")
            .field("inner", &self.inner.describe())
            .field("delay", &self.delay)
            .finish()
    }
}

impl DelayedStore {
    /// `inner`, answering `delay` after it does (zero: at once, through
    /// the wrapper all the same).
    pub fn new(inner: impl SagaStore, delay: Duration) -> Self {
        Self::shared(Arc::new(inner), delay)
    }

    /// A shared `inner`, answering `delay` after it does.
    pub fn shared(inner: Arc<dyn SagaStore>, delay: Duration) -> Self {
        DelayedStore { inner, delay }
    }

    /// The store it wraps.
    pub fn inner(&self) -> &Arc<dyn SagaStore> {
        &self.inner
    }

    /// How late it answers.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// `answer`, awaited, then held back by the delay.
    fn late<'a, T: Send + 'a>(
        &self,
        answer: BoxFuture<'a, StoreResult<T>>,
    ) -> BoxFuture<'a, StoreResult<T>> {
        let delay = self.delay;
        Box::pin(async move {
            let answer = answer.await;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            answer
        })
    }
}

impl SagaStore for DelayedStore {
    fn describe(&self) -> String {
        format!(
            "{} (answering {:?} late)",
            self.inner.describe(),
            self.delay
        )
    }

    fn put_definition(&self, definition: DefinitionRecord) -> BoxFuture<'_, StoreResult<()>> {
        self.late(self.inner.put_definition(definition))
    }

    fn definition(
        &self,
        fingerprint: &str,
    ) -> BoxFuture<'_, StoreResult<Option<DefinitionRecord>>> {
        self.late(self.inner.definition(fingerprint))
    }

    fn create(
        &self,
        execution: NewExecution,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Created>> {
        self.late(self.inner.create(execution, owner, ttl))
    }

    fn claim(
        &self,
        id: &ExecutionId,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Option<Lease>>> {
        self.late(self.inner.claim(id, owner, ttl))
    }

    fn append<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
        events: Vec<Event>,
        status: ExecutionStatus,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        self.late(self.inner.append(id, lease, events, status))
    }

    fn renew<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        self.late(self.inner.renew(id, lease))
    }

    fn release<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.late(self.inner.release(id, lease))
    }

    fn get<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> BoxFuture<'a, StoreResult<Option<ExecutionRecord>>> {
        self.late(self.inner.get(id))
    }

    fn events<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<Vec<Event>>> {
        self.late(self.inner.events(id))
    }

    fn list(
        &self,
        status: Option<ExecutionStatus>,
    ) -> BoxFuture<'_, StoreResult<Vec<ExecutionRecord>>> {
        self.late(self.inner.list(status))
    }

    fn request_cancel<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<bool>> {
        self.late(self.inner.request_cancel(id))
    }

    fn claim_next(&self, request: ClaimRequest) -> BoxFuture<'_, StoreResult<Vec<Claimed>>> {
        self.late(self.inner.claim_next(request))
    }

    fn work_signal(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.work_signal()
    }

    fn purge(&self, before_ms: i64) -> BoxFuture<'_, StoreResult<u64>> {
        self.late(self.inner.purge(before_ms))
    }
}
