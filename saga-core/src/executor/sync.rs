//! A run driven without a runtime (`run_blocking`, whose steps are all
//! sync, and which is never durable): its forward path and its rollback
//! are plain loops, with no future to keep their state in, and each sync
//! action and compensation a plain call. What may still wait in such a
//! run (a group's branches, a step on a shared context) is driven to its
//! end here; its sleeps block the thread.

use std::pin::pin;
use std::time::Instant;

use super::forward::{
    Ended, Halt, action_failed, action_gave_up, action_succeeded, cancel_honoured, group_ended,
    ignore_cancel, run_action, stop_at,
};
use super::guard::catch;
use super::rollback::{
    Unwind, cause_of, compensation_failed, compensation_gave_up, compensation_started,
    compensation_succeeded, run_compensation,
};
use super::{Brakes, Env, Extra, Record, State, Stop, compensate_group, run_group};
use crate::blocking::block_on_ready;
use crate::clock::elapsed;
use crate::error::{SagaError, StepError};
use crate::observer::SagaEvent;
use crate::report::{SagaReport, StepStatus};
use crate::saga::Node;
use crate::step::{Action, StepDef, StepInfo, SyncAction, SyncUndo, Undo};

/// [`forward`](super::forward::forward) for a run driven without a
/// runtime and without a journal: the same path, as a plain loop. Out of
/// the run's future, its locals live in registers and on the stack, not
/// in the future's memory, and its code is only the sync run's
/// (docs/PERFORMANCE.md).
pub(super) fn forward_blocking<C, D>(
    env: &Env<'_, C, D>,
    state: &mut State<'_>,
    ctx: &mut C,
) -> Result<(), Stop> {
    debug_assert!(env.durable.is_none());
    let mut pivot_done = state.pivot_done;
    for (node_index, node) in env.saga.nodes.iter().enumerate() {
        if env.cancel_requested() {
            if !pivot_done {
                return Err(cancel_honoured(env, node.first()));
            }
            block_on_ready(pin!(ignore_cancel(env, state, node.first())))?;
        }
        let failure = match node {
            &Node::Step(index) => {
                let step = &env.saga.steps[index];
                let record = &mut state.records[index];
                let result = match &step.action {
                    Action::Sync(action) => run_sync_action(
                        env, step, &**action, &mut *ctx, record, state.mark, pivot_done,
                    ),
                    // An action on a shared context.
                    _ => {
                        let brakes = Brakes::of(env, step, pivot_done);
                        let attempts =
                            run_action(env, index, &mut *ctx, record, state.mark, brakes, None);
                        block_on_ready(pin!(attempts))
                    }
                };
                pivot_done |= step.pivot && result.is_ok();
                state.step_ended(index, result)
            }
            Node::Group { range, ops } => {
                let records = &mut state.records[range.clone()];
                let shared = (ops.run)(&*ctx);
                let group = run_group(env, shared, range.clone(), records, pivot_done);
                let ended = block_on_ready(pin!(group));
                group_ended(env, state, ended)
            }
        };
        if let Some((index, error)) = failure {
            return Err(stop_at(env, state, node_index, pivot_done, index, error));
        }
    }
    // A cancel that came during the last step: nothing is left to stop.
    if env.cancel_requested() {
        let last = env.saga.steps.len().saturating_sub(1);
        block_on_ready(pin!(ignore_cancel(env, state, last)))?;
    }
    Ok(())
}

/// [`rollback`](super::rollback::rollback) for a run driven without a
/// runtime and without a journal: the same compensations, as a plain loop
/// (no boxed future made for a failed run to keep its state in).
pub(super) fn rollback_blocking<C, D>(
    env: &Env<'_, C, D>,
    state: &mut State<'_>,
    ctx: &mut C,
    stop: Stop,
) -> Result<SagaReport, SagaError> {
    debug_assert!(env.durable.is_none());
    let saga = env.saga;
    let cause = cause_of(env, state, stop)?;
    let mut unwind = Unwind::new(state, cause);
    for node in saga.nodes.iter().rev() {
        if !unwind.compensates(saga, state, node) {
            continue;
        }
        match node {
            &Node::Step(index) => {
                let record = &mut state.records[index];
                let output = record.output.as_deref();
                let extra = &mut state.extra[index];
                let result = match &saga.steps[index].undo {
                    Some(Undo::Sync(undo)) => run_sync_compensation(
                        env,
                        index,
                        &**undo,
                        &mut *ctx,
                        &mut record.status,
                        output,
                        extra,
                        &mut state.mark,
                    ),
                    // A compensation on a shared context.
                    _ => {
                        let start = state.mark;
                        let compensation = run_compensation(
                            env,
                            index,
                            &mut *ctx,
                            &mut record.status,
                            output,
                            extra,
                            start,
                            &mut state.mark,
                        );
                        block_on_ready(pin!(compensation))
                    }
                };
                if let Err(error) = result {
                    unwind.gave_up(saga, state, index, error);
                }
            }
            Node::Group { range, ops } => {
                let records = &mut state.records[range.clone()];
                let extra = &mut state.extra[range.clone()];
                let shared = (ops.compensate)(&*ctx);
                let group = compensate_group(env, shared, range.clone(), records, extra);
                let failed = block_on_ready(pin!(group));
                state.mark = env.now();
                for (index, error) in failed {
                    unwind.gave_up(saga, state, index, error);
                }
            }
        }
    }
    unwind.end(env, state)
}

/// [`run_action`] for a sync action: nothing in it waits (a backoff sleep
/// blocks the thread), so it is a plain call, without a future to make,
/// poll and drop for every step. Inlined into [`forward_blocking`].
#[inline(always)]
fn run_sync_action<C, D>(
    env: &Env<'_, C, D>,
    step: &StepDef<C, D>,
    action: &SyncAction<C, D>,
    ctx: &mut C,
    record: &mut Record,
    start: Instant,
    pivot_done: bool,
) -> Result<Ended, Halt> {
    // Neither read nor written here, unlike in `run_action`: whether the
    // step succeeded already (only a recovered run's steps have, and a
    // recovered run is durable, so never here), and its `Running` status
    // (nothing reads the record before its attempts end, which write the
    // final status): work on every step of the hot path.
    debug_assert_eq!(record.status, StepStatus::Pending);
    let mut attempt = record.attempts;
    let mut recovered: Option<Box<str>> = None;
    loop {
        attempt += 1;
        record.attempts = attempt;
        env.emit(|| SagaEvent::StepStarted {
            step: &step.name,
            attempt,
        });
        let info = StepInfo::of(&env.saga.name, &env.id, &step.name, attempt, env.deps);
        #[cfg(not(feature = "tracing"))]
        let result = catch(|| action(&mut *ctx, &info));
        #[cfg(feature = "tracing")]
        let result = crate::spans::attempt_sync(false, &step.name, attempt, || {
            catch(|| action(&mut *ctx, &info))
        });
        let now = env.now();
        let mut error = match result {
            Ok(out) => {
                action_succeeded(env, step, record, attempt, start, now);
                record.output = Some(out);
                return Ok(Ended { at: now, recovered });
            }
            Err(error) => error,
        };
        // The brakes are read only after a failure: not made for every
        // step that succeeds.
        let mut brakes = Brakes::of(env, step, pivot_done);
        let Some(delay) = action_failed(env, step, record, attempt, &mut error, &mut brakes) else {
            return Err(action_gave_up(record, start, now, error));
        };
        env.clock().sleep_blocking(delay);
        // A cancellation during the backoff: no attempt follows.
        if brakes.applied() {
            return Err(action_gave_up(record, start, now, error));
        }
        recovered = Some(error.to_string().into_boxed_str());
    }
}

/// [`run_compensation`] for a sync compensation: a plain call, no future
/// to make, poll and drop for each compensation (a backoff sleep blocks
/// the thread, as `Env::sleep` does in such a run). Inlined, as
/// [`run_sync_action`] is: a call with eight arguments cost about 25
/// instructions a compensation.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn run_sync_compensation<C, D>(
    env: &Env<'_, C, D>,
    index: usize,
    undo: &SyncUndo<C, D>,
    ctx: &mut C,
    status: &mut StepStatus,
    output: Option<&(dyn std::any::Any + Send + Sync)>,
    extra: &mut Extra,
    mark: &mut Instant,
) -> Result<(), StepError> {
    let saga = env.saga;
    let step = &saga.steps[index];
    // Only a recovered run has compensations done already, and a
    // recovered run is durable, so never here.
    debug_assert_ne!(*status, StepStatus::Compensated);
    let start = *mark;
    *status = StepStatus::Compensating;
    loop {
        let attempt = compensation_started(env, step, extra);
        let info = StepInfo::of(&saga.name, &env.id, &step.name, attempt, env.deps);
        #[cfg(not(feature = "tracing"))]
        let result = catch(|| undo(&mut *ctx, output, &info));
        #[cfg(feature = "tracing")]
        let result = crate::spans::attempt_sync(true, &step.name, attempt, || {
            catch(|| undo(&mut *ctx, output, &info))
        });
        let now = env.now();
        *mark = now;
        let mut error = match result {
            Ok(()) => {
                compensation_succeeded(env, step, status, extra, attempt, elapsed(start, now));
                return Ok(());
            }
            Err(error) => error,
        };
        match compensation_failed(env, step, attempt, &mut error) {
            Some(delay) => {
                extra.last_error = Some(error.to_string());
                env.clock().sleep_blocking(delay);
            }
            None => return Err(compensation_gave_up(status, extra, start, now, error)),
        }
    }
}
