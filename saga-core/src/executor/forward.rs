//! The forward path: the nodes in order, each step's action attempted
//! until it succeeds or its policy gives up, and a run stuck going
//! forward. (A run driven without a runtime goes forward in `sync.rs`.)

use std::future::Future;
use std::time::{Duration, Instant};

use super::group::GroupRun;
use super::guard::{attempt_action, backoff, settle};
use super::{Access, Brakes, Env, JournalFailed, Record, State, Stop, final_error, run_group};
use crate::cancel::CancellationToken;
use crate::clock::elapsed;
use crate::error::{Interrupted, SagaError, StepError, StuckPhase};
use crate::journal::{EventKind, with_retry_in};
use crate::logged::failure_detail;
use crate::observer::SagaEvent;
use crate::report::{ExecutionStatus, Outcome, StepStatus};
use crate::saga::Node;
use crate::step::{StepDef, StepInfo};

/// Runs the nodes in order, up to the first that stops the run.
// Deliberately not an `async fn`: clippy's suggestion would store the
// arguments twice.
#[allow(clippy::manual_async_fn)]
pub(super) fn forward<'a, C, D>(
    env: &'a Env<'_, C, D>,
    state: &'a mut State<'_>,
    ctx: &'a mut C,
) -> impl Future<Output = Result<(), Stop>> + 'a {
    async move {
        let mut pivot_done = state.pivot_done;
        // Indexed rather than iterated, and the definition read again after
        // each await: the future holds less across the steps' awaits.
        for node_index in 0..env.saga.nodes.len() {
            // A node a recovered run's log shows done is passed over: a
            // cancellation is seen at the first node still to run.
            if env.cancel_requested() && !state.node_done(env.saga.nodes[node_index].range()) {
                let first = env.saga.nodes[node_index].first();
                if !pivot_done {
                    return Err(cancel_honoured(env, first));
                }
                ignore_cancel(env, state, first).await?;
            }
            // Only a recovered run has a retry its log left due, and it
            // has `Extra` then: an empty vector here in most other runs,
            // and no wait in it in a run that failed a step (no future
            // boxed per node after a failure).
            let range = env.saga.nodes[node_index].range();
            if state.extra.get(range).is_some_and(|extra| {
                extra
                    .iter()
                    .any(|e| e.retry_wait.is_some_and(|w| !w.is_zero()))
            }) {
                Box::pin(wait_due_retry(env, state, node_index, pivot_done)).await?;
            }
            let failure = match &env.saga.nodes[node_index] {
                &Node::Step(index) => 'step: {
                    let step = &env.saga.steps[index];
                    let pivot = step.pivot;
                    if env.durable.is_some() {
                        let result = run_action(
                            env,
                            index,
                            &mut *ctx,
                            &mut state.records[index],
                            state.mark,
                            Brakes::of(env, step, pivot_done),
                            None,
                        )
                        .await;
                        pivot_done |= pivot && result.is_ok();
                        break 'step state.step_ended(index, result);
                    }
                    // An in-memory run's first attempt is made here, as
                    // `run_action` makes it but without a journal, and
                    // without a future of its own (made, moved into place
                    // and dropped for every step: docs/PERFORMANCE.md).
                    // Scoped: what it borrows is not held across the
                    // retries' await below, where it would be kept apart
                    // from `run_action`'s future above and make the run's
                    // future larger. Only a recovered run, which is
                    // durable, has steps that succeeded already.
                    let retry = {
                        let mut brakes = Brakes::of(env, step, pivot_done);
                        let record = &mut state.records[index];
                        debug_assert_ne!(record.status, StepStatus::Succeeded);
                        let start = state.mark;
                        record.status = StepStatus::Running;
                        let attempt = record.attempts + 1;
                        record.attempts = attempt;
                        env.emit(|| SagaEvent::StepStarted {
                            step: &step.name,
                            attempt,
                        });
                        let mut ctx = &mut *ctx;
                        let result = {
                            let info = StepInfo::of(
                                &env.saga.name,
                                &env.id,
                                &step.name,
                                attempt,
                                env.deps,
                            );
                            settle!(
                                attempt_action(step, &mut ctx, &info, brakes, None),
                                false,
                                &step.name,
                                attempt
                            )
                        };
                        let now = env.now();
                        let mut error = match result {
                            Ok(out) => {
                                action_succeeded(env, step, record, attempt, start, now);
                                record.output = Some(out);
                                pivot_done |= pivot;
                                let end = Ended {
                                    at: now,
                                    recovered: None,
                                };
                                break 'step state.step_ended(index, Ok(end));
                            }
                            Err(error) => error,
                        };
                        let retry_in =
                            action_failed(env, step, record, attempt, &mut error, &mut brakes);
                        let Some(delay) = retry_in else {
                            let halt = action_gave_up(record, start, now, error);
                            break 'step state.step_ended(index, Err(halt));
                        };
                        Retry {
                            start,
                            delay,
                            error,
                            brakes,
                        }
                    };
                    // Retries, rare, go on in `run_action`'s future, boxed.
                    let retry =
                        retry_action(env, index, &mut *ctx, &mut state.records[index], retry);
                    let result = Box::pin(retry).await;
                    pivot_done |= pivot && result.is_ok();
                    state.step_ended(index, result)
                }
                Node::Group { range, ops } => {
                    let records = &mut state.records[range.clone()];
                    // Boxed: inline, a group's future would make every run
                    // in flight larger.
                    let shared = (ops.run)(&*ctx);
                    let ended =
                        Box::pin(run_group(env, shared, range.clone(), records, pivot_done)).await;
                    group_ended(env, state, ended)
                }
            };
            if env.is_aborted() {
                return Err(Stop::Aborted);
            }
            if let Some((index, error)) = failure {
                return Err(stop_at(env, state, node_index, pivot_done, index, error));
            }
        }
        // A cancel that came during the last step: nothing is left to stop.
        if env.cancel_requested() {
            let last = env.saga.steps.len().saturating_sub(1);
            ignore_cancel(env, state, last).await?;
        }
        Ok(())
    }
}

/// Takes the end of a group's run: the clock read, the last errors of its
/// branches noted; returns its first failure.
pub(super) fn group_ended<C, D>(
    env: &Env<'_, C, D>,
    state: &mut State<'_>,
    (failure, errors): GroupRun,
) -> Option<(usize, StepError)> {
    state.mark = env.now();
    if !errors.is_empty() {
        let extra = state.extra();
        for (index, message) in errors {
            extra[index].last_error = Some(message);
        }
    }
    failure
}

/// Where the forward path stops when step `index` of node `node` failed
/// with `error`.
pub(super) fn stop_at<C, D>(
    env: &Env<'_, C, D>,
    state: &State<'_>,
    node: usize,
    pivot_done: bool,
    index: usize,
    error: StepError,
) -> Stop {
    let step = &env.saga.steps[index];
    let unknown = state.records[index].outcome == Outcome::Unknown;
    if pivot_done || (step.pivot && unknown) {
        return Stop::Stuck { node, index, error };
    }
    if env.cancel_requested() {
        // Dropped mid-flight by the run's cancellation (then compensated
        // with the others), or its retries stopped by it: the run ends
        // cancelled either way.
        return cancel_honoured(env, index);
    }
    Stop::Failed { index, error }
}

/// Tells the observers that the run's cancellation stops it at step
/// `step`, before the pivot: the run rolls back.
pub(super) fn cancel_honoured<C, D>(env: &Env<'_, C, D>, step: usize) -> Stop {
    env.emit(|| SagaEvent::CancelHonoured {
        step: &env.saga.steps[step].name,
    });
    Stop::Cancelled
}

/// Records, once per run, that a cancellation was ignored at step `step`
/// (after the pivot, or with nothing left to stop): in the report, for the
/// observers, and in a durable run's log.
pub(super) async fn ignore_cancel<C, D>(
    env: &Env<'_, C, D>,
    state: &mut State<'_>,
    step: usize,
) -> Result<(), Stop> {
    if state.cancel_ignored {
        return Ok(());
    }
    state.cancel_ignored = true;
    env.emit(|| SagaEvent::CancelIgnored {
        step: &env.saga.steps[step].name,
    });
    if env.durable.is_some() {
        let log = env.log(
            EventKind::CancelIgnored,
            ExecutionStatus::Running,
            |event| {
                event.step = Some(step as u32);
            },
        );
        if log.await.is_err() {
            return Err(Stop::Aborted);
        }
    }
    Ok(())
}

/// Waits out what is left of the backoff of a retry that the log a
/// recovered run went on from left due at node `node` (a take-over after a
/// crash, a release or a claim mid-backoff): the next attempt runs when it
/// would have in the run that logged the failure, not at once, so a
/// restart loop does not spend the retries early. A group waits for the
/// longest of its branches'. A cancellation stops the wait where it stops
/// a backoff (before the pivot): the run then rolls back, the retry never
/// made.
async fn wait_due_retry<C, D>(
    env: &Env<'_, C, D>,
    state: &mut State<'_>,
    node: usize,
    pivot_done: bool,
) -> Result<(), Stop> {
    let range = env.saga.nodes[node].range();
    let Some(wait) = state.extra[range]
        .iter_mut()
        .filter_map(|extra| extra.retry_wait.take())
        .max()
        .filter(|wait| !wait.is_zero())
    else {
        return Ok(());
    };
    let brakes = match &env.saga.nodes[node] {
        &Node::Step(index) => {
            let step = &env.saga.steps[index];
            let mut brakes = Brakes::of(env, step, pivot_done);
            // The pivot's retry heeds a cancellation as in the run that
            // failed its attempts.
            if step.pivot {
                brakes.cancel = Brakes::pivot_cancel(env, &state.records[index]);
            }
            brakes
        }
        Node::Group { .. } => Brakes {
            cancel: env.cancel.as_ref().filter(|_| !pivot_done),
            group: None,
            droppable: false,
        },
    };
    match backoff(env, wait, &brakes, StepError::interrupted()).await {
        // Its steps are left as the log left them, their retries due: the
        // rollback stops them.
        Some(_) => Err(cancel_honoured(env, env.saga.nodes[node].first())),
        None => Ok(()),
    }
}

/// The end of a step's action that succeeded.
pub(super) struct Ended {
    /// The clock reading at its end.
    pub(super) at: Instant,
    /// The error of the last failed attempt, if a retry recovered from it
    /// (it goes in the report): a null pointer in the common case.
    pub(super) recovered: Option<Box<str>>,
}

/// Why a step's action stopped short of success.
pub(super) struct Halt {
    /// The clock reading at its end.
    pub(super) end: Instant,
    pub(super) error: StepError,
    /// Whether the step failed for good (its last error goes in the
    /// report), rather than being stopped by the journal or by a
    /// cancellation at a write.
    pub(super) failed: bool,
}

/// Runs one step's action until it succeeds or its policy gives up (or a
/// brake is applied). Returns the clock reading at its end.
// Deliberately not an `async fn` (see the comment in its body): clippy's
// suggestion would store the arguments twice.
#[allow(clippy::manual_async_fn)]
pub(super) fn run_action<'a, C, D>(
    env: &'a Env<'_, C, D>,
    index: usize,
    mut ctx: impl Access<C> + 'a,
    record: &'a mut Record,
    start: Instant,
    mut brakes: Brakes<'a>,
    // The error of the last failed attempt a retry recovered from: a
    // retry of an in-memory run's step comes with its first attempt's.
    mut recovered: Option<Box<str>>,
) -> impl Future<Output = Result<Ended, Halt>> + 'a {
    // An `async move` block rather than an `async fn`: its captures are
    // stored once in the future, an `async fn`'s arguments twice.
    async move {
        let step = &env.saga.steps[index];
        if record.status == StepStatus::Succeeded {
            // Recovered: its success is in the log already.
            return Ok(Ended {
                at: start,
                recovered: None,
            });
        }
        record.status = StepStatus::Running;
        let halt = |end, error| Halt {
            end,
            error,
            failed: false,
        };
        // From 0 in a fresh run; a recovered run goes on where its log stopped.
        let mut attempt = record.attempts;
        loop {
            attempt += 1;
            record.attempts = attempt;
            if env.durable.is_some() {
                let log = env.log(EventKind::StepStarted, ExecutionStatus::Running, |event| {
                    event.step = Some(index as u32);
                    event.attempt = attempt;
                });
                if log.await.is_err() {
                    return Err(halt(env.now(), StepError::new(JournalFailed)));
                }
                // A durable run hears of a cancellation request at its writes:
                // one that came with this start stops the step before it runs
                // (the rollback that follows names it in the log: a start
                // without an end is otherwise one a crash cut off).
                // The pivot too, but only before it may have taken effect.
                let stop = if step.pivot {
                    Brakes::pivot_cancel(env, record)
                } else {
                    brakes.cancel
                };
                if stop.is_some_and(CancellationToken::is_cancelled) {
                    env.not_run(index);
                    attempt -= 1;
                    record.attempts = attempt;
                    record.status = if attempt == 0 {
                        StepStatus::Pending
                    } else {
                        StepStatus::Failed
                    };
                    // Stopped before a retry: the step failed with the
                    // error of this run's attempt before (the report's).
                    return Err(match recovered {
                        Some(message) => Halt {
                            end: env.now(),
                            error: StepError::new(String::from(message)),
                            failed: true,
                        },
                        None => halt(env.now(), StepError::interrupted()),
                    });
                }
            }
            env.emit(|| SagaEvent::StepStarted {
                step: &step.name,
                attempt,
            });
            // Scoped so that what the future holds across each await is
            // only what is used after it: a local borrowed or moved on one
            // path only is kept until the end of its scope.
            let (delay, error) = {
                let (now, mut error) = 'failed: {
                    let out = match {
                        // A durable run's sync step on a multi-thread
                        // runtime waits for its turn (its start is logged,
                        // its lease renewed meanwhile). Before the step's
                        // info is made: held across this await too, it
                        // would have a place of its own in the future.
                        let turn = match env.gate() {
                            Some(gate) if !step.action.is_async() => Some(gate.turn().await),
                            _ => None,
                        };
                        let info =
                            StepInfo::of(&env.saga.name, &env.id, &step.name, attempt, env.deps);
                        settle!(
                            attempt_action(step, &mut ctx, &info, brakes, turn),
                            false,
                            &step.name,
                            attempt
                        )
                    } {
                        Ok(out) => out,
                        Err(error) => break 'failed (env.now(), error),
                    };
                    let now = env.now();
                    action_succeeded(env, step, record, attempt, start, now);
                    if env.durable.is_none() {
                        record.output = Some(out);
                        return Ok(Ended { at: now, recovered });
                    }
                    let encoded = env.encode_output(step, &*out);
                    record.output = Some(out);
                    let log = env.log(
                        EventKind::StepSucceeded,
                        ExecutionStatus::Running,
                        |event| {
                            event.step = Some(index as u32);
                            event.attempt = attempt;
                            event.output = encoded;
                            event.context = env.snapshot(ctx.shared());
                        },
                    );
                    if log.await.is_err() {
                        return Err(halt(now, StepError::new(JournalFailed)));
                    }
                    return Ok(Ended { at: now, recovered });
                };
                let retry_in = action_failed(env, step, record, attempt, &mut error, &mut brakes);
                if env.durable.is_some() {
                    let log = env.log(EventKind::StepFailed, ExecutionStatus::Running, |event| {
                        event.step = Some(index as u32);
                        event.attempt = attempt;
                        event.error = Some(error.to_string());
                        event.outcome_unknown = error.is_outcome_unknown();
                        event.will_retry = retry_in.is_some();
                        // With its backoff, which a run taking the
                        // execution over waits out.
                        event.detail = with_retry_in(failure_detail(&error), retry_in);
                        event.context = env.snapshot(ctx.shared());
                    });
                    if log.await.is_err() {
                        return Err(halt(now, StepError::new(JournalFailed)));
                    }
                }
                let Some(delay) = retry_in else {
                    return Err(action_gave_up(record, start, now, error));
                };
                recovered = Some(error.to_string().into_boxed_str());
                (delay, error)
            };
            // Boxed, with the error in it: a retry's wait is rare, and
            // inline its future would make every step's larger.
            if let Some(error) = Box::pin(backoff(env, delay, &brakes, error)).await {
                // A brake applied during the backoff: no attempt follows.
                return Err(action_gave_up(record, start, env.now(), error));
            }
        }
    }
}

/// An in-memory run's step whose first attempt, made by [`forward`],
/// failed and is to be retried: what [`retry_action`] takes besides the
/// step.
struct Retry<'t> {
    /// When the step started.
    start: Instant,
    /// The backoff before the next attempt.
    delay: Duration,
    /// The first attempt's error.
    error: StepError,
    /// The step's brakes.
    brakes: Brakes<'t>,
}

/// The retries of an in-memory run's step whose first attempt, made by
/// [`forward`], failed: the backoff, then [`run_action`]'s attempts from
/// the second on.
async fn retry_action<C, D>(
    env: &Env<'_, C, D>,
    index: usize,
    ctx: &mut C,
    record: &mut Record,
    retry: Retry<'_>,
) -> Result<Ended, Halt> {
    let Retry {
        start,
        delay,
        error,
        brakes,
    } = retry;
    let recovered = error.to_string().into_boxed_str();
    if let Some(error) = backoff(env, delay, &brakes, error).await {
        // A brake applied during the backoff: no attempt follows.
        return Err(action_gave_up(record, start, env.now(), error));
    }
    run_action(env, index, ctx, record, start, brakes, Some(recovered)).await
}

/// Records an action's successful attempt, which ended at `now`.
#[inline(always)]
pub(super) fn action_succeeded<C, D>(
    env: &Env<'_, C, D>,
    step: &StepDef<C, D>,
    record: &mut Record,
    attempt: u32,
    start: Instant,
    now: Instant,
) {
    record.status = StepStatus::Succeeded;
    record.outcome = Outcome::Applied;
    let elapsed = elapsed(start, now);
    record.duration = elapsed;
    env.emit(|| SagaEvent::StepSucceeded {
        step: &step.name,
        attempt,
        elapsed,
    });
}

/// Records an action's failed attempt; returns the delay before the next
/// one if the step's policy retries it. Out of line: the failure path's
/// code kept out of the hot loop.
#[inline(never)]
pub(super) fn action_failed<'t, C, D>(
    env: &'t Env<'_, C, D>,
    step: &StepDef<C, D>,
    record: &mut Record,
    attempt: u32,
    error: &mut StepError,
    brakes: &mut Brakes<'t>,
) -> Option<Duration> {
    env.saga.classify(error);
    // Unknown is sticky: once an attempt may have taken effect, the
    // step is compensated whatever follows.
    if error.is_outcome_unknown() {
        record.outcome = Outcome::Unknown;
    } else if record.outcome != Outcome::Unknown {
        record.outcome = Outcome::NotApplied;
    }
    if step.pivot {
        brakes.cancel = Brakes::pivot_cancel(env, record);
    }
    // A step after the pivot without a number of attempts was given
    // forever's when the saga was built.
    let policy = &step.retry;
    // The pivot retries an unknown outcome whatever its predicate says
    // (giving up there means stuck), but not a permanent error.
    let qualifies = policy.retries(error)
        || (step.pivot && error.is_outcome_unknown() && !error.is_permanent());
    let retry_in = (attempt < policy.max_attempts()
        && qualifies
        && !error.error().is::<Interrupted>()
        && !brakes.applied())
    .then(|| policy.random_delay_before(attempt + 1));
    env.emit(|| SagaEvent::StepFailed {
        step: &step.name,
        attempt,
        error,
        retry_in,
    });
    retry_in
}

/// Records that an action's policy gave up after an attempt that ended at
/// `now` with `error`.
pub(super) fn action_gave_up(
    record: &mut Record,
    start: Instant,
    now: Instant,
    error: StepError,
) -> Halt {
    record.status = StepStatus::Failed;
    record.duration = elapsed(start, now);
    Halt {
        end: now,
        error,
        failed: true,
    }
}

/// Ends a run stuck going forward at step `index` of node `node`.
pub(super) fn stuck_forward<C, D>(
    env: &Env<'_, C, D>,
    state: &mut State<'_>,
    node: usize,
    index: usize,
    error: StepError,
) -> SagaError {
    let saga = env.saga;
    let failures = vec![state.failure(saga, index, false, &error)];
    let first = saga.nodes[node].first();
    let remaining = state.records[first..]
        .iter()
        .zip(&saga.steps[first..])
        .filter(|(record, _)| record.status != StepStatus::Succeeded)
        .map(|(_, step)| step.name.clone())
        .collect();
    let report = state.finish(env, ExecutionStatus::Stuck);
    SagaError::Stuck {
        saga: saga.name.clone(),
        step: saga.steps[index].name.clone(),
        phase: StuckPhase::Forward,
        error: final_error(env, error),
        failures,
        remaining,
        report: Box::new(report),
    }
}
