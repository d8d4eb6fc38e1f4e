//! The rollback: compensations in reverse order, each attempted until
//! it succeeds or its policy gives up, and how a rollback ends.

use crate::name::Name;
use std::time::{Duration, Instant};

use super::guard::{attempt_undo, settle};
use super::{
    Access, Env, Extra, JournalFailed, State, Stop, compensate_group, final_error, store_error,
    stuck_forward,
};
use crate::clock::elapsed;
use crate::error::{Failure, SagaError, StepError, StuckPhase};
use crate::journal::{EventKind, StoreError, with_retry_in};
use crate::logged::{failure_detail, rollback_detail};
use crate::observer::SagaEvent;
use crate::report::{ExecutionStatus, Outcome, SagaReport, StepStatus};
use crate::saga::{Node, SagaInner};
use crate::step::{StepDef, StepInfo};

/// What the log and the report say of an attempt a crash cut off that a
/// rollback does not run again.
const CUT_OFF: &str = "its attempt was cut off by the end of the process running it, and is not run again: the execution is rolling back";

/// Ends step `index`'s attempt that a crash cut off, as a failure whose
/// outcome is unknown (its record has the attempt before it: a run going
/// forward would run it again). A journal failure is in the abort slot.
async fn cut_off<C, D>(env: &Env<'_, C, D>, state: &mut State<'_>, index: usize) {
    let record = &mut state.records[index];
    record.attempts += 1;
    record.status = StepStatus::Failed;
    record.outcome = Outcome::Unknown;
    let attempt = record.attempts;
    state.extra()[index].last_error = Some(CUT_OFF.into());
    let log = env.log(
        EventKind::StepFailed,
        ExecutionStatus::Compensating,
        |event| {
            event.step = Some(index as u32);
            event.attempt = attempt;
            event.error = Some(CUT_OFF.to_owned());
            event.outcome_unknown = true;
        },
    );
    let _ = log.await;
}

/// Rolls back: compensates, in reverse order (parallel branches at once),
/// every step that took effect or may have. (A run driven without a
/// runtime rolls back in [`rollback_blocking`](super::sync::rollback_blocking).)
pub(super) async fn rollback<C, D>(
    env: &Env<'_, C, D>,
    state: &mut State<'_>,
    ctx: &mut C,
    stop: Stop,
) -> Result<SagaReport, SagaError> {
    let saga = env.saga;
    let cause = cause_of(env, state, stop)?;
    if env.durable.is_some() {
        // A step that a crash cut off, left running by the log a recovered
        // run went on from, is not run again: its attempt is ended in the
        // log, failed with an unknown outcome (it may have taken effect).
        // Any other step left running (a retry was due, or an operator's
        // resume gave it a fresh budget) did not run: the rollback stops it.
        for index in 0..state.records.len() {
            if state.records[index].status != StepStatus::Running {
                continue;
            }
            if state.extra.get(index).is_some_and(|extra| extra.cut_off) {
                cut_off(env, state, index).await;
            } else {
                let record = &mut state.records[index];
                record.status = if record.attempts == 0 {
                    StepStatus::Pending
                } else {
                    StepStatus::Failed
                };
            }
        }
        let log = env.log(
            EventKind::RollbackStarted,
            ExecutionStatus::Compensating,
            |event| {
                if let Some((index, error)) = &cause {
                    event.step = Some(*index as u32);
                    event.error = Some(error.to_string());
                    event.outcome_unknown = error.is_outcome_unknown();
                    event.detail = failure_detail(error);
                } else {
                    event.detail = rollback_detail(env.take_not_run());
                }
                event.context = env.snapshot(&*ctx);
            },
        );
        if log.await.is_err() {
            return Err(aborted(env, state));
        }
    }
    let mut unwind = Unwind::new(state, cause);
    for node in saga.nodes.iter().rev() {
        if !unwind.compensates(saga, state, node) {
            continue;
        }
        match node {
            Node::Step(index) => {
                let index = *index;
                let record = &mut state.records[index];
                let step = &saga.steps[index];
                let result = match &step.undo {
                    Some(undo) if env.durable.is_none() => 'compensated: {
                        // An in-memory run's first attempt is made here, as
                        // `run_compensation` makes it but without a journal,
                        // and without a future of its own (as the forward
                        // path makes an action's). Scoped, so that what it
                        // borrows is not held across the retries' awaits.
                        // Only a recovered run, which is durable, has steps
                        // compensated already.
                        let (start, delay) = {
                            debug_assert_ne!(record.status, StepStatus::Compensated);
                            let status = &mut record.status;
                            let extra = &mut state.extra[index];
                            let start = state.mark;
                            *status = StepStatus::Compensating;
                            let attempt = compensation_started(env, step, extra);
                            let mut ctx = &mut *ctx;
                            let result = {
                                let info = StepInfo::of(
                                    &saga.name, &env.id, &step.name, attempt, env.deps,
                                );
                                let output = record.output.as_deref();
                                settle!(
                                    attempt_undo(
                                        undo,
                                        &mut ctx,
                                        output,
                                        &info,
                                        None,
                                        step.undo_timeout
                                    ),
                                    true,
                                    &step.name,
                                    attempt
                                )
                            };
                            let now = env.now();
                            state.mark = now;
                            let mut error = match result {
                                Ok(()) => {
                                    let elapsed = elapsed(start, now);
                                    compensation_succeeded(
                                        env, step, status, extra, attempt, elapsed,
                                    );
                                    break 'compensated Ok(());
                                }
                                Err(error) => error,
                            };
                            let Some(delay) = compensation_failed(env, step, attempt, &mut error)
                            else {
                                let error = compensation_gave_up(status, extra, start, now, error);
                                break 'compensated Err(error);
                            };
                            extra.last_error = Some(error.to_string());
                            (start, delay)
                        };
                        // Retries, rare, go on in `run_compensation`, from
                        // the compensation's start.
                        env.sleep(delay).await;
                        let record = &mut state.records[index];
                        run_compensation(
                            env,
                            index,
                            &mut *ctx,
                            &mut record.status,
                            record.output.as_deref(),
                            &mut state.extra[index],
                            start,
                            &mut state.mark,
                        )
                        .await
                    }
                    _ => {
                        run_compensation(
                            env,
                            index,
                            &mut *ctx,
                            &mut record.status,
                            record.output.as_deref(),
                            &mut state.extra[index],
                            state.mark,
                            &mut state.mark,
                        )
                        .await
                    }
                };
                if env.is_aborted() {
                    return Err(aborted(env, state));
                }
                if let Err(error) = result {
                    unwind.gave_up(saga, state, index, error);
                }
            }
            Node::Group { range, ops } => {
                let records = &mut state.records[range.clone()];
                let extra = &mut state.extra[range.clone()];
                let shared = (ops.compensate)(&*ctx);
                let failed =
                    Box::pin(compensate_group(env, shared, range.clone(), records, extra)).await;
                state.mark = env.now();
                if env.is_aborted() {
                    return Err(aborted(env, state));
                }
                for (index, error) in failed {
                    unwind.gave_up(saga, state, index, error);
                }
            }
        }
    }
    unwind.end(env, state)
}

/// Why a rollback starts, from where the forward path stopped; `Err` if
/// the run ends there instead (stuck going forward, or its journal
/// failed).
pub(super) fn cause_of<C, D>(
    env: &Env<'_, C, D>,
    state: &mut State<'_>,
    stop: Stop,
) -> Result<Option<(usize, StepError)>, SagaError> {
    state.status = ExecutionStatus::Compensating;
    match stop {
        Stop::Failed { index, error } => Ok(Some((index, error))),
        Stop::Cancelled => Ok(None),
        Stop::Stuck { node, index, error } => Err(stuck_forward(env, state, node, index, error)),
        Stop::Aborted => Err(aborted(env, state)),
    }
}

/// A rollback under way: why it started, and the compensations that
/// failed for good.
pub(super) struct Unwind {
    /// The step whose failure started it; none for a cancellation.
    cause: Option<(usize, StepError)>,
    /// The last compensation that failed for good: the rollback is stuck
    /// there.
    stuck: Option<(usize, StepError)>,
    /// The ones that failed for good before it.
    failures: Vec<Failure>,
    /// The steps left to compensate.
    remaining: Vec<Name>,
}

impl Unwind {
    /// A rollback for `cause`: every step's [`Extra`] is made.
    pub(super) fn new(state: &mut State<'_>, cause: Option<(usize, StepError)>) -> Self {
        state.extra();
        Unwind {
            cause,
            stuck: None,
            failures: Vec::new(),
            remaining: Vec::new(),
        }
    }

    /// Whether `node` has compensations to run. A step that took effect
    /// (or may have) without an undo is skipped; once the rollback is
    /// stuck, and unless the saga goes on past a failed compensation, a
    /// node's are left to compensate instead. Inlined: it runs for every
    /// node of every rollback.
    #[inline(always)]
    pub(super) fn compensates<C, D>(
        &mut self,
        saga: &SagaInner<C, D>,
        state: &mut State<'_>,
        node: &Node<C>,
    ) -> bool {
        // A single step, the usual node, without the group's count.
        if let &Node::Step(index) = node {
            let record = &mut state.records[index];
            if !record.outcome.needs_compensation() {
                return false;
            }
            let step = &saga.steps[index];
            if step.undo.is_none() {
                record.status = StepStatus::Skipped;
                return false;
            }
            if self.stuck.is_some() && !saga.continue_on_compensation_failure {
                self.remaining.push(step.name.clone());
                return false;
            }
            return true;
        }
        let range = node.range();
        // Counted rather than collected: a vector per node was an
        // allocation per compensated step.
        let mut pending = 0;
        for index in range.clone() {
            let record = &mut state.records[index];
            if !record.outcome.needs_compensation() {
                continue;
            }
            if saga.steps[index].undo.is_none() {
                record.status = StepStatus::Skipped;
            } else {
                pending += 1;
            }
        }
        if pending == 0 {
            return false;
        }
        if self.stuck.is_some() && !saga.continue_on_compensation_failure {
            let records = &state.records;
            self.remaining.extend(
                range
                    .filter(|&i| {
                        records[i].outcome.needs_compensation() && saga.steps[i].undo.is_some()
                    })
                    .map(|i| saga.steps[i].name.clone()),
            );
            return false;
        }
        true
    }

    /// Notes that the compensation of step `index` failed for good with
    /// `error`: the rollback is stuck there, with the step left to
    /// compensate, and the one it was stuck at before, if any, joins the
    /// failures. (A step's failure comes here as it is: a vector made and
    /// dropped for every compensated step cost more than its call.)
    pub(super) fn gave_up<C, D>(
        &mut self,
        saga: &SagaInner<C, D>,
        state: &State<'_>,
        index: usize,
        error: StepError,
    ) {
        self.remaining.push(saga.steps[index].name.clone());
        if let Some((earlier, earlier_error)) = self.stuck.replace((index, error)) {
            self.failures
                .push(state.failure(saga, earlier, true, &earlier_error));
        }
    }

    /// How the rollback ends: compensated, cancelled, or stuck.
    pub(super) fn end<C, D>(
        self,
        env: &Env<'_, C, D>,
        state: &mut State<'_>,
    ) -> Result<SagaReport, SagaError> {
        let saga = env.saga;
        let Unwind {
            cause,
            stuck,
            mut failures,
            remaining,
        } = self;
        match (stuck, cause) {
            (None, Some((index, error))) => {
                let report = state.finish(env, ExecutionStatus::Compensated);
                Err(SagaError::Compensated {
                    saga: saga.name.clone(),
                    step: saga.steps[index].name.clone(),
                    error: final_error(env, error),
                    report: Box::new(report),
                })
            }
            (None, None) => {
                let report = state.finish(env, ExecutionStatus::Cancelled);
                Err(SagaError::Cancelled {
                    saga: saga.name.clone(),
                    report: Box::new(report),
                })
            }
            (Some((index, error)), cause) => {
                if let Some((cause_index, cause_error)) = cause {
                    // The failure that started the rollback comes first.
                    failures.insert(0, state.failure(saga, cause_index, false, &cause_error));
                }
                failures.push(state.failure(saga, index, true, &error));
                let report = state.finish(env, ExecutionStatus::Stuck);
                Err(SagaError::Stuck {
                    saga: saga.name.clone(),
                    step: saga.steps[index].name.clone(),
                    phase: StuckPhase::Rollback,
                    error: final_error(env, error),
                    failures,
                    remaining: remaining.into_boxed_slice(),
                    report: Box::new(report),
                })
            }
        }
    }
}

/// Runs one compensation until it succeeds or its policy gives up. `status`
/// is the step's in its [`Record`], `start` the compensation's start and
/// `mark` the last clock reading. (The last clock reading before a
/// compensation, the end of what ran before, is its start, and its end
/// the next one's: one read each. An in-memory run's retries go on here
/// from the start of the first attempt, which the rollback made.)
#[allow(clippy::too_many_arguments)]
pub(super) async fn run_compensation<C, D>(
    env: &Env<'_, C, D>,
    index: usize,
    mut ctx: impl Access<C>,
    status: &mut StepStatus,
    output: Option<&(dyn std::any::Any + Send + Sync)>,
    extra: &mut Extra,
    start: Instant,
    mark: &mut Instant,
) -> Result<(), StepError> {
    let saga = env.saga;
    let step = &saga.steps[index];
    let Some(undo) = &step.undo else {
        return Ok(());
    };
    if *status == StepStatus::Compensated {
        // Recovered: its success is in the log already.
        return Ok(());
    }
    *status = StepStatus::Compensating;
    // A recovered run's retry its log left due: the rest of its backoff.
    if let Some(wait) = extra.undo_wait.take().filter(|wait| !wait.is_zero()) {
        env.sleep(wait).await;
    }
    loop {
        let attempt = compensation_started(env, step, extra);
        if env.durable.is_some() {
            let log = env.log(
                EventKind::CompensationStarted,
                ExecutionStatus::Compensating,
                |event| {
                    event.step = Some(index as u32);
                    event.attempt = attempt;
                },
            );
            if log.await.is_err() {
                return Err(StepError::new(JournalFailed));
            }
        }
        let result = {
            // As an action's (see `run_action`).
            let turn = match env.gate() {
                Some(gate) if !undo.is_async() => Some(gate.turn().await),
                _ => None,
            };
            let info = StepInfo::of(&saga.name, &env.id, &step.name, attempt, env.deps);
            settle!(
                attempt_undo(undo, &mut ctx, output, &info, turn, step.undo_timeout),
                true,
                &step.name,
                attempt
            )
        };
        let now = env.now();
        *mark = now;
        let mut error = match result {
            Ok(()) => {
                compensation_succeeded(env, step, status, extra, attempt, elapsed(start, now));
                if env.durable.is_some() {
                    let log = env.log(
                        EventKind::CompensationSucceeded,
                        ExecutionStatus::Compensating,
                        |event| {
                            event.step = Some(index as u32);
                            event.attempt = attempt;
                            event.context = env.snapshot(ctx.shared());
                        },
                    );
                    if log.await.is_err() {
                        return Err(StepError::new(JournalFailed));
                    }
                }
                return Ok(());
            }
            Err(error) => error,
        };
        let retry_in = compensation_failed(env, step, attempt, &mut error);
        if env.durable.is_some() {
            let log = env.log(
                EventKind::CompensationFailed,
                ExecutionStatus::Compensating,
                |event| {
                    event.step = Some(index as u32);
                    event.attempt = attempt;
                    event.error = Some(error.to_string());
                    event.outcome_unknown = error.is_outcome_unknown();
                    event.will_retry = retry_in.is_some();
                    event.detail = with_retry_in(failure_detail(&error), retry_in);
                    event.context = env.snapshot(ctx.shared());
                },
            );
            if log.await.is_err() {
                return Err(StepError::new(JournalFailed));
            }
        }
        match retry_in {
            Some(delay) => {
                // Recovered from or not, the last error so far.
                extra.last_error = Some(error.to_string());
                env.sleep(delay).await;
            }
            None => return Err(compensation_gave_up(status, extra, start, now, error)),
        }
    }
}

/// Starts a compensation's next attempt; returns its number. (Counted
/// from 0 in a fresh run; a recovered run goes on where its log stopped.)
#[inline(always)]
pub(super) fn compensation_started<C, D>(
    env: &Env<'_, C, D>,
    step: &StepDef<C, D>,
    extra: &mut Extra,
) -> u32 {
    let attempt = extra.compensation_attempts + 1;
    extra.compensation_attempts = attempt;
    env.emit(|| SagaEvent::CompensationStarted {
        step: &step.name,
        attempt,
    });
    attempt
}

/// Records a compensation's successful attempt, `elapsed` after its start.
#[inline(always)]
pub(super) fn compensation_succeeded<C, D>(
    env: &Env<'_, C, D>,
    step: &StepDef<C, D>,
    status: &mut StepStatus,
    extra: &mut Extra,
    attempt: u32,
    elapsed: Duration,
) {
    *status = StepStatus::Compensated;
    extra.compensation_duration = elapsed;
    env.emit(|| SagaEvent::CompensationSucceeded {
        step: &step.name,
        attempt,
        elapsed,
    });
}

/// Tells of a compensation's failed attempt; returns the delay before the
/// next one if its policy retries it.
pub(super) fn compensation_failed<C, D>(
    env: &Env<'_, C, D>,
    step: &StepDef<C, D>,
    attempt: u32,
    error: &mut StepError,
) -> Option<Duration> {
    env.saga.classify(error);
    let policy = step.undo_retry.as_ref().unwrap_or(&env.saga.undo_retry);
    let retry_in = (attempt < policy.max_attempts() && policy.retries(error))
        .then(|| policy.random_delay_before(attempt + 1));
    env.emit(|| SagaEvent::CompensationFailed {
        step: &step.name,
        attempt,
        error,
        retry_in,
    });
    retry_in
}

/// Records that a compensation's policy gave up on `error`, at `now`
/// after its start at `start`.
pub(super) fn compensation_gave_up(
    status: &mut StepStatus,
    extra: &mut Extra,
    start: Instant,
    now: Instant,
    error: StepError,
) -> StepError {
    *status = StepStatus::CompensationFailed;
    extra.compensation_duration = elapsed(start, now);
    // The last error, which the compensation failed for good with.
    extra.last_error = Some(error.to_string());
    error
}

/// Ends a rollback whose journal failed.
pub(super) fn aborted<C, D>(env: &Env<'_, C, D>, state: &mut State<'_>) -> SagaError {
    let error = env.take_abort().unwrap_or_else(|| StoreError::Closed {
        store: "the journal".to_owned(),
    });
    store_error(env, state, error)
}
