//! Fault injection: wraps a saga's actions and compensations in a probe.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::error::StepError;
use crate::policy::RetryPolicy;
use crate::saga::{Node, Saga, SagaInner};
use crate::step::{
    Action, BoxFuture, Output, StepDef, StepInfo, Undo, erase_async, erase_async_undo,
    erase_shared_async, erase_shared_async_undo,
};

/// What a case does to the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    None,
    /// Every attempt of the step's action fails without running it, with
    /// a permanent error (so no retry hides the rollback).
    Clean(usize),
    /// Every attempt runs the action, then reports an unknown outcome
    /// (permanent too).
    Unknown(usize),
    /// The step's first attempt fails cleanly, with an error its policy
    /// may retry; later attempts run the action.
    Once(usize),
    /// As [`Once`](Self::Once), for every step whose policy retries that
    /// error (the probe's `retried`): the run completes through a retry
    /// of each.
    Retried,
    /// The step's first attempt runs the action, then reports an unknown
    /// outcome with an error its policy retries (the answer lost on its
    /// way back); later attempts run it again, with the same key.
    Lost(usize),
    /// As [`Lost`](Self::Lost), for the step's compensation: its first
    /// attempt runs, then reports an unknown outcome its compensation
    /// policy retries; the rollback is started by `trigger`.
    LostUndo {
        step: usize,
        trigger: Trigger,
    },
    /// Every attempt of the step's compensation fails without running it;
    /// the rollback is started by `trigger`.
    Undo {
        step: usize,
        trigger: Trigger,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trigger {
    /// A later step fails cleanly.
    Clean(usize),
    /// The step itself fails with an unknown outcome.
    Unknown(usize),
}

/// One invocation of an action or a compensation, as the probe saw it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Call {
    pub(super) step: usize,
    pub(super) undo: bool,
    /// `None` while running, or if it was dropped or cut off.
    pub(super) end: Option<End>,
    /// How many times the user's code ran in this invocation: 0 when an
    /// injected failure skipped it, 2 when the case runs it twice in a row.
    pub(super) runs: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    Ok,
    Failed { unknown: bool },
}

/// What a case runs twice in a row: the actions, or the compensations,
/// never both (a non-idempotent action and compensation doubled together
/// cancel out on a rollback); every step's, or one step's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Twice {
    Nothing,
    Actions,
    Compensations,
    /// This step's action only.
    Action(usize),
    /// This step's compensation only.
    Compensation(usize),
}

/// Injects a case's fault and records every invocation.
pub(super) struct Probe {
    fault: Fault,
    twice: Twice,
    /// Per step: whether [`Fault::Retried`] fails its first attempt.
    retried: Vec<bool>,
    calls: Mutex<Vec<Call>>,
}

impl Probe {
    pub(super) fn new(fault: Fault, twice: Twice) -> Arc<Self> {
        Self::retrying(fault, twice, Vec::new())
    }

    /// A probe whose [`Fault::Retried`] fails the first attempt of each
    /// step `retried` marks.
    pub(super) fn retrying(fault: Fault, twice: Twice, retried: Vec<bool>) -> Arc<Self> {
        Arc::new(Probe {
            fault,
            twice,
            retried,
            calls: Mutex::new(Vec::new()),
        })
    }

    /// Whether the case runs `step`'s action (`undo` false) or its
    /// compensation twice in a row.
    fn doubles(&self, step: usize, undo: bool) -> bool {
        match self.twice {
            Twice::Nothing => false,
            Twice::Actions => !undo,
            Twice::Compensations => undo,
            Twice::Action(s) => !undo && s == step,
            Twice::Compensation(s) => undo && s == step,
        }
    }

    pub(super) fn calls(&self) -> std::sync::MutexGuard<'_, Vec<Call>> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the start of an invocation; fails it at once if the case
    /// injects a clean failure there.
    fn before(&self, step: usize, undo: bool) -> Result<usize, StepError> {
        let first = || !self.calls().iter().any(|c| c.step == step && !c.undo);
        let injected = match self.fault {
            Fault::Clean(s) if !undo => s == step,
            Fault::Once(s) if !undo => s == step && first(),
            Fault::Retried if !undo => self.retried.get(step) == Some(&true) && first(),
            Fault::Undo { trigger, .. } | Fault::LostUndo { trigger, .. } if !undo => {
                trigger == Trigger::Clean(step)
            }
            Fault::Undo { step: s, .. } if undo => s == step,
            _ => false,
        };
        let mut calls = self.calls();
        calls.push(Call {
            step,
            undo,
            end: injected.then_some(End::Failed { unknown: false }),
            runs: 0,
        });
        if injected {
            if let Fault::Once(_) | Fault::Retried = self.fault {
                return Err(once_error());
            }
            let what = if undo { "compensation" } else { "step" };
            return Err(StepError::new(format!("injected failure of the {what}")).permanent());
        }
        Ok(calls.len() - 1)
    }

    /// Records that the user's code ran (once more) in an invocation.
    fn ran(&self, call: usize) {
        self.calls()[call].runs += 1;
    }

    /// Records the end of an invocation; turns a success into an unknown
    /// outcome if the case injects one there.
    fn after<T>(&self, call: usize, result: Result<T, StepError>) -> Result<T, StepError> {
        let step = self.calls()[call].step;
        let undo = self.calls()[call].undo;
        let unknown = !undo
            && match self.fault {
                Fault::Unknown(s) => s == step,
                Fault::Undo { trigger, .. } | Fault::LostUndo { trigger, .. } => {
                    trigger == Trigger::Unknown(step)
                }
                _ => false,
            };
        // The first attempt of the action (or compensation) the case
        // loses the answer of.
        let lost = match self.fault {
            Fault::Lost(s) => !undo && s == step,
            Fault::LostUndo { step: s, .. } => undo && s == step,
            _ => false,
        } && !self.calls()[..call]
            .iter()
            .any(|c| c.step == step && c.undo == undo);
        let result = match result {
            Ok(_) if unknown => Err(StepError::new(
                "injected failure after the step ran (outcome unknown)",
            )
            .outcome_unknown()
            .permanent()),
            Ok(_) if lost => Err(lost_error()),
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

/// The error of a [`Fault::Once`] case's first attempt: not permanent,
/// so the step's policy decides whether it is retried.
pub(super) fn once_error() -> StepError {
    StepError::new("injected failure of the step's first attempt")
}

/// The error of a [`Fault::Lost`] (or [`Fault::LostUndo`]) case's first
/// attempt, which ran: an unknown outcome, not permanent, so the policy
/// decides whether it is retried.
pub(super) fn lost_error() -> StepError {
    StepError::new("injected failure after it ran: its answer was lost (outcome unknown)")
        .outcome_unknown()
}

/// One invocation of a sync action or compensation through the probe:
/// twice in a row when the case doubles its kind.
fn invoke<T>(
    probe: &Probe,
    step: usize,
    undo: bool,
    mut call: impl FnMut() -> Result<T, StepError>,
) -> Result<T, StepError> {
    let at = probe.before(step, undo)?;
    probe.ran(at);
    let mut result = call();
    if probe.doubles(step, undo) && result.is_ok() {
        probe.ran(at);
        result = call();
    }
    probe.after(at, result)
}

fn mismatch() -> StepError {
    StepError::new("internal error: the test kit wrapped a step of another kind")
}

/// The retry policies of a wrapped saga. A durable run sleeps its backoff
/// on the real clock (an engine has no other), so the crash cases, which
/// run many, do not wait for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retries {
    /// The steps' own policies.
    AsGiven,
    /// The steps' own policies, but the given step gets one attempt (the
    /// trigger of a rollback: its rollback does not wait for retries that
    /// fail the same way).
    Single(usize),
    /// The steps' own policies without their backoff: each retry comes at
    /// once (the same log, without the wait).
    NoBackoff,
}

/// The saga with every action and compensation wrapped by `probe`, and
/// its retry policies as `retries` says.
pub(super) fn wrap<C: Send + 'static, D: Sync + 'static>(
    saga: &Saga<C, D>,
    probe: &Arc<Probe>,
    retries: Retries,
) -> Saga<C, D> {
    let inner = &saga.inner;
    let steps = inner
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| StepDef {
            name: step.name.clone(),
            action: wrap_action(saga, probe, i),
            undo: step.undo.as_ref().map(|u| wrap_undo(saga, probe, i, u)),
            retry: match retries {
                Retries::AsGiven => step.retry.clone(),
                Retries::Single(s) if s == i => RetryPolicy::none(),
                Retries::Single(_) => step.retry.clone(),
                // Forever after the pivot is in the policy since the build.
                Retries::NoBackoff => step.retry.clone().with_backoff(Duration::ZERO),
            },
            undo_retry: step.undo_retry.clone(),
            timeout: step.timeout,
            undo_timeout: step.undo_timeout,
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
            name: inner.name.clone(),
            version: inner.version.clone(),
            steps,
            nodes,
            observers: inner.observers.clone(),
            undo_retry: inner.undo_retry.clone(),
            continue_on_compensation_failure: inner.continue_on_compensation_failure,
            has_async: inner.has_async,
            // The test kit's cases see the errors as the saga's runs do.
            classify: inner.classify.clone(),
        }),
    }
}

fn wrap_action<C: Send + 'static, D: Sync + 'static>(
    saga: &Saga<C, D>,
    probe: &Arc<Probe>,
    i: usize,
) -> Action<C, D> {
    let (orig, probe) = (saga.clone(), Arc::clone(probe));
    match &saga.inner.steps[i].action {
        Action::Sync(_) => Action::Sync(Box::new(move |ctx: &mut C, info: &StepInfo<'_, D>| {
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
        Action::Async(_) | Action::AsyncUnit(_) => erase_async(move |ctx: &mut C, info| {
            let (orig, probe) = (orig.clone(), Arc::clone(&probe));
            Box::pin(async move {
                let f = &orig.inner.steps[i].action;
                if !matches!(f, Action::Async(_) | Action::AsyncUnit(_)) {
                    return Err(mismatch());
                }
                let call = probe.before(i, false)?;
                let Some(first) = f.call_async(&mut *ctx, info) else {
                    return Err(mismatch());
                };
                probe.ran(call);
                let mut result = first.await;
                if probe.doubles(i, false) && result.is_ok() {
                    let Some(second) = f.call_async(&mut *ctx, info) else {
                        return Err(mismatch());
                    };
                    probe.ran(call);
                    result = second.await;
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
            let second = probe.doubles(i, false).then(|| f(ctx, info));
            let probe = Arc::clone(&probe);
            Box::pin(async move {
                probe.ran(call);
                let mut result = first.await;
                if let Some(second) = second.filter(|_| result.is_ok()) {
                    probe.ran(call);
                    result = second.await;
                }
                probe.after(call, result)
            }) as BoxFuture<'_, Result<Output, StepError>>
        }),
    }
}

fn wrap_undo<C: Send + 'static, D: Sync + 'static>(
    saga: &Saga<C, D>,
    probe: &Arc<Probe>,
    i: usize,
    undo: &Undo<C, D>,
) -> Undo<C, D> {
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
                probe.ran(call);
                let mut result = f(&mut *ctx, out, info).await;
                if probe.doubles(i, true) && result.is_ok() {
                    probe.ran(call);
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
            let second = probe.doubles(i, true).then(|| f(ctx, out, info));
            let probe = Arc::clone(&probe);
            Box::pin(async move {
                probe.ran(call);
                let mut result = first.await;
                if let Some(second) = second.filter(|_| result.is_ok()) {
                    probe.ran(call);
                    result = second.await;
                }
                probe.after(call, result)
            }) as BoxFuture<'_, Result<(), StepError>>
        }),
    }
}
