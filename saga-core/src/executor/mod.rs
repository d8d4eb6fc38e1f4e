//! The executor: runs one execution of a saga forward, and back when it
//! must, by the failure rules of `docs/DESIGN.md` section 3.
//!
//! It emits events (logs and observers) and knows no store: a durable run
//! is given a [`Journal`] that it awaits at each log point, and may start
//! from a [`Resume`] (the state a log recorded) instead of from nothing.

use std::future::{Future, poll_fn};
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::cancel::CancellationToken;
use crate::clock::{Clock, SystemClock};
use crate::error::{Failure, Interrupted, SagaError, StepError, StuckPhase};
use crate::id::{ExecutionId, mix};
use crate::journal::{Event, EventKind, Journal, Resume, ResumePhase, StoreError};
use crate::observer::{RunInfo, SagaEvent, SagaObserver};
use crate::policy::RetryPolicy;
use crate::report::{ExecutionStatus, Outcome, SagaReport, StepReport, StepStatus};
pub(crate) use crate::saga::GroupOps;
use crate::saga::{Node, RunOptions, Saga, SagaInner, SharedContext};
use crate::step::{Action, BoxFuture, Output, StepDef, StepInfo, SyncAction, Undo};

/// A durable log could not be written; the run stopped there.
#[derive(Debug, thiserror::Error)]
#[error("the durable log could not be written")]
struct JournalFailed;

static SYSTEM_CLOCK: SystemClock = SystemClock;

/// Why the forward path stopped short of the end.
enum Stop {
    /// Step `index` failed (cleanly, or with an unknown outcome before the
    /// pivot): roll back.
    Failed { index: usize, error: StepError },
    /// Cancelled before the pivot: roll back.
    Cancelled,
    /// The journal failed: stop without another step or compensation.
    Aborted,
    /// Step `index` failed where no rollback is allowed: the pivot with an
    /// unknown outcome, or a step after the pivot. `node` is where the
    /// remaining work starts.
    Stuck {
        node: usize,
        index: usize,
        error: StepError,
    },
}

/// What a run shares with every step, branches included: read-only. Owned
/// by the run's future (made before it, from the [`RunOptions`], so the
/// future holds the options once).
pub(crate) struct Env<'r, C> {
    saga: &'r SagaInner<C>,
    id: ExecutionId,
    /// The run's clock; the system clock when none.
    clock: Option<Arc<dyn Clock>>,
    cancel: Option<CancellationToken>,
    run_observers: Vec<Arc<dyn SagaObserver>>,
    /// Sync-only run driven without a runtime: sleeps block the thread.
    blocking: bool,
    /// Whether the saga or the run has observers: one test per event.
    observed: bool,
    /// When the run started: read at its first poll.
    started: Option<Instant>,
    /// The durable log and its abort slot, if the run is durable: behind
    /// one pointer, so an in-memory run does not carry them.
    durable: Option<Box<Durable<'r, C>>>,
}

/// What only a durable run needs.
struct Durable<'r, C> {
    journal: &'r dyn Journal<C>,
    /// The journal's first error: the run stops at the next check.
    aborted: Mutex<Option<StoreError>>,
}

/// One step's record while its run is in flight (40 bytes; the public
/// [`StepReport`] is built from it when the run ends). The step's name is
/// its index in the definition; what only a failure or a rollback needs is
/// in [`Extra`].
pub(crate) struct Record {
    output: Option<Output>,
    /// Time spent in its action. A `Duration` rather than nanoseconds in
    /// a `u64`, which would be 8 bytes less a step in flight: converting
    /// there and back cost about 17 instructions a step, by callgrind.
    duration: Duration,
    attempts: u32,
    status: StepStatus,
    outcome: Outcome,
}

/// What a step's record needs only once something failed: kept apart from
/// the [`Record`]s, and allocated the first time it is needed.
#[derive(Default)]
pub(crate) struct Extra {
    compensation_attempts: u32,
    compensation_duration: Duration,
    last_error: Option<String>,
}

/// What a run changes as it goes. Lives in the run's future; nothing of it
/// is in the definition.
struct State<'a> {
    records: Records<'a>,
    /// One per step once a step failed for good or a rollback started;
    /// empty (no allocation) until then.
    extra: Vec<Extra>,
    /// The last clock reading: the end of one step is the start of the
    /// next, so each step costs one clock read.
    mark: Instant,
    status: ExecutionStatus,
    cancel_ignored: bool,
}

/// The context as a step gets it: exclusively (`&mut C`) in a sequence,
/// shared (`&C`) in a parallel group. A trait rather than an enum, so a
/// sequence's future never holds a `&C` and stays `Send` for contexts that
/// are `Send` but not `Sync`.
trait Access<C> {
    fn shared(&self) -> &C;
    fn exclusive(&mut self) -> Option<&mut C>;
}

impl<C> Access<C> for &mut C {
    fn shared(&self) -> &C {
        self
    }

    fn exclusive(&mut self) -> Option<&mut C> {
        Some(self)
    }
}

impl<C> Access<C> for &dyn SharedContext<C> {
    fn shared(&self) -> &C {
        SharedContext::context(*self)
    }

    fn exclusive(&mut self) -> Option<&mut C> {
        None
    }
}

/// What may stop an attempt or a retry early.
#[derive(Clone, Copy)]
struct Brakes<'t> {
    /// The run's cancellation token, when the step may be dropped by it
    /// (cancel-safe, before the pivot).
    cancel: Option<&'t CancellationToken>,
    /// The group's token, fired when a sibling branch failed.
    group: Option<&'t CancellationToken>,
    /// Whether the step may be dropped mid-flight (cancel-safe).
    droppable: bool,
}

impl<'t> Brakes<'t> {
    /// A step's brakes in a sequence. Before the pivot a cancel-safe async
    /// step may be dropped when the run is cancelled; the pivot and what
    /// follows always finish.
    #[inline(always)]
    fn of<C>(env: &'t Env<'_, C>, step: &StepDef<C>, pivot_done: bool) -> Self {
        Brakes {
            cancel: env.cancel.as_ref().filter(|_| !pivot_done && !step.pivot),
            group: None,
            droppable: step.cancel_safe && !pivot_done && !step.pivot,
        }
    }

    fn applied(&self) -> bool {
        self.cancel.is_some_and(CancellationToken::is_cancelled)
            || self.group.is_some_and(CancellationToken::is_cancelled)
    }
}

/// Runs one execution.
///
/// This and [`execute_durable`] are not `async fn`s: they return the future
/// of [`run_execution`] itself, so no wrapper future stores the arguments
/// once more in every run in flight.
///
/// `lent`, when given, is where the run keeps its step records (one per
/// step, fresh, as [`Record::fresh`] makes them): `run_blocking` lends an
/// array on its stack, which saves the run an allocation and a free.
pub(crate) fn execute<'a, C>(
    saga: &'a SagaInner<C>,
    ctx: &'a mut C,
    options: RunOptions,
    blocking: bool,
    lent: Option<&'a mut [Record]>,
) -> impl Future<Output = Result<SagaReport, SagaError>> + 'a {
    execute_durable(saga, ctx, options, blocking, None, None, lent)
}

/// Runs one execution, journaled when `journal` is given, from the state a
/// log recorded when `resume` is given; its records in `lent` when given
/// (as for [`execute`]).
pub(crate) fn execute_durable<'a, C>(
    saga: &'a SagaInner<C>,
    ctx: &'a mut C,
    options: RunOptions,
    blocking: bool,
    journal: Option<&'a dyn Journal<C>>,
    resume: Option<Resume>,
    lent: Option<&'a mut [Record]>,
) -> impl Future<Output = Result<SagaReport, SagaError>> + 'a {
    let RunOptions {
        execution_id,
        clock,
        cancel,
        observers,
    } = options;
    let env = Env {
        saga,
        id: execution_id.unwrap_or_else(ExecutionId::generate),
        clock,
        cancel,
        observed: !saga.observers.is_empty() || !observers.is_empty(),
        run_observers: observers,
        blocking,
        started: None,
        durable: journal.map(|journal| {
            Box::new(Durable {
                journal,
                aborted: Mutex::new(None),
            })
        }),
    };
    // Boxed: held by the future until its end, though read only at the
    // start of a recovered run.
    let resume = resume.map(Box::new);
    #[cfg(feature = "tracing")]
    {
        let id = env.id.clone();
        let run = run_execution(env, ctx, resume, lent);
        async move { crate::spans::execution(&saga.name, &id, run).await }
    }
    #[cfg(not(feature = "tracing"))]
    run_execution(env, ctx, resume, lent)
}

/// The body of a run. Not an `async fn`: an `async fn` keeps each argument
/// twice in its future (as passed, and moved into its body), an `async
/// move` block keeps what it captures once.
// Deliberately not an `async fn` (see above): clippy's suggestion would
// store the arguments twice.
#[allow(clippy::manual_async_fn)]
fn run_execution<'a, C>(
    mut env: Env<'a, C>,
    ctx: &'a mut C,
    resume: Option<Box<Resume>>,
    lent: Option<&'a mut [Record]>,
) -> impl Future<Output = Result<SagaReport, SagaError>> + 'a {
    async move {
        let started = env.now();
        env.started = Some(started);
        let mut state = State::new(env.saga, started, lent);
        env.emit(&SagaEvent::SagaStarted);
        // A recovered run that was rolling back goes on rolling back. (Its
        // cause is boxed, and each match ends before the next await: a
        // match's scrutinee, and a local moved on one path only, are held
        // to the end of their scope, across the awaits in it.)
        let result = {
            let stop = match resume.and_then(|resume| state.resume(*resume)) {
                Some(stop) => Some(*stop),
                None => forward(&env, &mut state, ctx).await.err(),
            };
            match stop {
                None => Ok(state.finish(&env, ExecutionStatus::Completed)),
                Some(Stop::Stuck { node, index, error }) => {
                    Err(stuck_forward(&env, &mut state, node, index, error))
                }
                // Boxed: inline, the rollback's future would make every run
                // in flight larger, though only failed runs need it.
                Some(stop) => Box::pin(rollback(&env, &mut state, ctx, stop)).await,
            }
        };
        if env.durable.is_none() || matches!(result, Err(SagaError::Store { .. })) {
            return result;
        }
        // Boxed: the end of a durable run, held by no run in flight.
        Box::pin(finish_durable(&env, &mut state, ctx, result)).await
    }
}

/// Logs the end of a durable run.
async fn finish_durable<C>(
    env: &Env<'_, C>,
    state: &mut State<'_>,
    ctx: &mut C,
    result: Result<SagaReport, SagaError>,
) -> Result<SagaReport, SagaError> {
    if let Some(error) = env.take_abort() {
        return Err(store_error(env, state, error));
    }
    let status = match &result {
        Ok(report) => report.status,
        Err(error) => error.report().status,
    };
    let log = env.log(EventKind::Finished, status, |event| {
        event.context = env.snapshot(&*ctx);
    });
    if log.await.is_err()
        && let Some(error) = env.take_abort()
    {
        return Err(store_error(env, state, error));
    }
    result
}

/// Ends a run whose journal failed.
fn store_error<C>(env: &Env<'_, C>, state: &mut State<'_>, error: StoreError) -> SagaError {
    let duration = env.since_start(env.now());
    let report = state.report(env, state.status, duration);
    SagaError::Store {
        saga: Arc::clone(&env.saga.name),
        error,
        report: Box::new(report),
    }
}

impl Record {
    /// A step's record before the run: not started.
    pub(crate) fn fresh() -> Self {
        Record {
            output: None,
            duration: Duration::ZERO,
            attempts: 0,
            status: StepStatus::Pending,
            outcome: Outcome::NotStarted,
        }
    }
}

/// Where a run keeps its step records.
enum Records<'a> {
    /// Its own vector.
    Owned(Vec<Record>),
    /// Lent by the caller (`run_blocking`'s stack): no allocation.
    Lent(&'a mut [Record]),
}

impl std::ops::Deref for Records<'_> {
    type Target = [Record];

    #[inline(always)]
    fn deref(&self) -> &[Record] {
        match self {
            Records::Owned(records) => records,
            Records::Lent(records) => records,
        }
    }
}

impl std::ops::DerefMut for Records<'_> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut [Record] {
        match self {
            Records::Owned(records) => records,
            Records::Lent(records) => records,
        }
    }
}

impl<'a> State<'a> {
    fn new<C>(saga: &SagaInner<C>, started: Instant, lent: Option<&'a mut [Record]>) -> Self {
        let records = match lent {
            Some(records) if records.len() == saga.steps.len() => Records::Lent(records),
            _ => Records::Owned(saga.steps.iter().map(|_| Record::fresh()).collect()),
        };
        State {
            records,
            extra: Vec::new(),
            mark: started,
            status: ExecutionStatus::Running,
            cancel_ignored: false,
        }
    }

    /// Takes the end of a step's action; returns its error if it stops
    /// the run.
    #[inline(always)]
    fn step_ended(
        &mut self,
        index: usize,
        result: Result<Instant, Halt>,
    ) -> Option<(usize, StepError)> {
        match result {
            Ok(end) => {
                self.mark = end;
                None
            }
            Err(halt) => {
                self.mark = halt.end;
                if halt.failed {
                    self.extra()[index].last_error = Some(halt.error.to_string());
                }
                Some((index, halt.error))
            }
        }
    }

    /// Every step's [`Extra`], allocated the first time.
    fn extra(&mut self) -> &mut [Extra] {
        if self.extra.is_empty() {
            // Collected (one allocation of the exact size) rather than
            // resized (the vector's out-of-line growth path).
            self.extra = self.records.iter().map(|_| Extra::default()).collect();
        }
        &mut self.extra
    }

    fn failure<C>(
        &self,
        saga: &SagaInner<C>,
        index: usize,
        compensation: bool,
        error: &StepError,
    ) -> Failure {
        Failure {
            step: Arc::clone(&saga.steps[index].name),
            compensation,
            attempt: if compensation {
                self.extra
                    .get(index)
                    .map_or(0, |extra| extra.compensation_attempts)
            } else {
                self.records[index].attempts
            },
            message: error.to_string(),
            outcome_unknown: error.is_outcome_unknown(),
        }
    }

    /// Takes the state a log recorded; returns where its rollback starts
    /// if it was rolling back.
    fn resume(&mut self, resume: Resume) -> Option<Box<Stop>> {
        let rare = resume
            .steps
            .iter()
            .any(|step| step.compensation_attempts > 0 || step.last_error.is_some());
        if rare {
            self.extra();
        }
        for (index, (step, output)) in resume.steps.into_iter().zip(resume.outputs).enumerate() {
            let Some(record) = self.records.get_mut(index) else {
                break;
            };
            record.status = step.status;
            record.outcome = step.outcome;
            record.attempts = step.attempts;
            record.output = output;
            if let Some(extra) = self.extra.get_mut(index) {
                extra.compensation_attempts = step.compensation_attempts;
                extra.last_error = step.last_error;
            }
        }
        let ResumePhase::Rollback { cause } = resume.phase else {
            return None;
        };
        self.status = ExecutionStatus::Compensating;
        Some(Box::new(match cause {
            Some((index, message)) => Stop::Failed {
                index,
                error: StepError::new(message),
            },
            None => Stop::Cancelled,
        }))
    }

    /// The public report of the run so far. The steps' last errors move
    /// into it: it is made once, when the run ends.
    fn report<C>(
        &mut self,
        env: &Env<'_, C>,
        status: ExecutionStatus,
        duration: Duration,
    ) -> SagaReport {
        let definition = env.saga.steps.iter().zip(self.records.iter());
        // Without a failure there is no `Extra`: that loop, the common one,
        // does not look for it.
        let steps = if self.extra.is_empty() {
            definition
                .map(|(step, record)| step_report(step, record, None))
                .collect()
        } else {
            definition
                .zip(&mut self.extra)
                .map(|((step, record), extra)| step_report(step, record, Some(extra)))
                .collect()
        };
        SagaReport {
            saga: Arc::clone(&env.saga.name),
            execution_id: env.id.clone(),
            status,
            steps,
            cancel_ignored: self.cancel_ignored,
            duration,
        }
    }

    fn finish<C>(&mut self, env: &Env<'_, C>, status: ExecutionStatus) -> SagaReport {
        self.status = status;
        let elapsed = env.since_start(self.mark);
        env.emit(&SagaEvent::SagaFinished { status, elapsed });
        self.report(env, status, elapsed)
    }
}

/// The public report of one step, from its record. Its last error moves
/// into it.
#[inline(always)]
fn step_report<C>(step: &StepDef<C>, record: &Record, extra: Option<&mut Extra>) -> StepReport {
    let (compensation_attempts, compensation_duration, last_error) = match extra {
        Some(extra) => (
            extra.compensation_attempts,
            extra.compensation_duration,
            extra.last_error.take(),
        ),
        None => (0, Duration::ZERO, None),
    };
    StepReport {
        name: Arc::clone(&step.name),
        kind: step.kind,
        status: record.status,
        outcome: record.outcome,
        attempts: record.attempts,
        compensation_attempts,
        duration: record.duration,
        compensation_duration,
        last_error,
    }
}

/// Runs the nodes in order, up to the first that stops the run.
// Deliberately not an `async fn`: clippy's suggestion would store the
// arguments twice.
#[allow(clippy::manual_async_fn)]
fn forward<'a, C>(
    env: &'a Env<'_, C>,
    state: &'a mut State<'_>,
    ctx: &'a mut C,
) -> impl Future<Output = Result<(), Stop>> + 'a {
    async move {
        let mut pivot_done = false;
        // Indexed rather than iterated, and the definition read again after
        // each await: the future holds less across the steps' awaits.
        for node_index in 0..env.saga.nodes.len() {
            if env.cancel_requested() {
                if !pivot_done {
                    return Err(Stop::Cancelled);
                }
                if !state.cancel_ignored {
                    state.cancel_ignored = true;
                    let saga = env.saga;
                    let first = saga.nodes[node_index].first();
                    env.emit(&SagaEvent::CancelIgnored {
                        step: &saga.steps[first].name,
                    });
                    if env.durable.is_some() {
                        let log = env.log(
                            EventKind::CancelIgnored,
                            ExecutionStatus::Running,
                            |event| {
                                event.step = Some(first as u32);
                            },
                        );
                        if log.await.is_err() {
                            return Err(Stop::Aborted);
                        }
                    }
                }
            }
            let failure = match &env.saga.nodes[node_index] {
                &Node::Step(index) => 'step: {
                    let step = &env.saga.steps[index];
                    // A sync step in a run that can call it without a future.
                    if let Some(action) = env.sync_action(step) {
                        let result = run_sync_action(
                            env,
                            step,
                            action,
                            &mut *ctx,
                            &mut state.records[index],
                            state.mark,
                            pivot_done,
                        );
                        pivot_done |= step.pivot && result.is_ok();
                        break 'step state.step_ended(index, result);
                    }
                    let pivot = step.pivot;
                    let brakes = Brakes::of(env, step, pivot_done);
                    let result = run_action(
                        env,
                        index,
                        &mut *ctx,
                        &mut state.records[index],
                        state.mark,
                        brakes,
                    )
                    .await;
                    pivot_done |= pivot && result.is_ok();
                    state.step_ended(index, result)
                }
                Node::Group { range, ops } => {
                    let records = &mut state.records[range.clone()];
                    // Boxed: inline, a group's future would make every run
                    // in flight larger.
                    let shared = (ops.run)(&*ctx);
                    let (failure, errors) =
                        Box::pin(run_group(env, shared, range.clone(), records, pivot_done)).await;
                    state.mark = env.now();
                    if !errors.is_empty() {
                        let extra = state.extra();
                        for (index, message) in errors {
                            extra[index].last_error = Some(message);
                        }
                    }
                    failure
                }
            };
            if env.is_aborted() {
                return Err(Stop::Aborted);
            }
            if let Some((index, error)) = failure {
                let saga = env.saga;
                let step = &saga.steps[index];
                let unknown = state.records[index].outcome == Outcome::Unknown;
                if pivot_done || (step.pivot && unknown) {
                    return Err(Stop::Stuck {
                        node: node_index,
                        index,
                        error,
                    });
                }
                if env.cancel_requested() {
                    // Dropped mid-flight by the run's cancellation (then
                    // compensated with the others), or its retries stopped by
                    // it: the run ends cancelled either way.
                    return Err(Stop::Cancelled);
                }
                return Err(Stop::Failed { index, error });
            }
        }
        Ok(())
    }
}

/// Why a step's action stopped short of success.
struct Halt {
    /// The clock reading at its end.
    end: Instant,
    error: StepError,
    /// Whether the step failed for good (its last error goes in the
    /// report), rather than being stopped by the journal or by a
    /// cancellation at a write.
    failed: bool,
}

/// Runs one step's action until it succeeds or its policy gives up (or a
/// brake is applied). Returns the clock reading at its end.
// Deliberately not an `async fn` (see the comment in its body): clippy's
// suggestion would store the arguments twice.
#[allow(clippy::manual_async_fn)]
fn run_action<'a, C>(
    env: &'a Env<'_, C>,
    index: usize,
    mut ctx: impl Access<C> + 'a,
    record: &'a mut Record,
    start: Instant,
    brakes: Brakes<'a>,
) -> impl Future<Output = Result<Instant, Halt>> + 'a {
    // An `async move` block rather than an `async fn`: its captures are
    // stored once in the future, an `async fn`'s arguments twice.
    async move {
        let step = &env.saga.steps[index];
        if record.status == StepStatus::Succeeded {
            // Recovered: its success is in the log already.
            return Ok(start);
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
                // (the rollback that follows tells the log it never ran).
                if brakes.cancel.is_some_and(CancellationToken::is_cancelled) {
                    attempt -= 1;
                    record.attempts = attempt;
                    record.status = if attempt == 0 {
                        StepStatus::Pending
                    } else {
                        StepStatus::Failed
                    };
                    return Err(halt(env.now(), StepError::interrupted()));
                }
            }
            env.emit(&SagaEvent::StepStarted {
                step: &step.name,
                attempt,
            });
            // Scoped so that what the future holds across each await is
            // only what is used after it: a local borrowed or moved on one
            // path only is kept until the end of its scope.
            let delay = {
                let (now, error) = 'failed: {
                    let out = match {
                        let info = StepInfo::new(&env.saga.name, &env.id, &step.name, attempt);
                        settle!(
                            attempt_action(step, &mut ctx, &info, brakes),
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
                        return Ok(now);
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
                    return Ok(now);
                };
                let retry_in = action_failed(env, step, record, attempt, &error, &brakes);
                if env.durable.is_some() {
                    let log = env.log(EventKind::StepFailed, ExecutionStatus::Running, |event| {
                        event.step = Some(index as u32);
                        event.attempt = attempt;
                        event.error = Some(error.to_string());
                        event.outcome_unknown = error.is_outcome_unknown();
                        event.will_retry = retry_in.is_some();
                        event.context = env.snapshot(ctx.shared());
                    });
                    if log.await.is_err() {
                        return Err(halt(now, StepError::new(JournalFailed)));
                    }
                }
                let Some(delay) = retry_in else {
                    return Err(action_gave_up(record, start, now, error));
                };
                delay
            };
            env.sleep(delay).await;
        }
    }
}

/// [`run_action`] for a sync action in a run without a journal, driven
/// without a runtime (`run_blocking`): nothing in it waits (a backoff
/// sleep blocks the thread), so it is a plain call, without a future to
/// make, poll and drop for every step. Inlined: 81 instructions fewer per
/// sync run, 47 more per async one (whose future's code grows), by
/// callgrind.
#[inline(always)]
fn run_sync_action<C>(
    env: &Env<'_, C>,
    step: &StepDef<C>,
    action: &SyncAction<C>,
    ctx: &mut C,
    record: &mut Record,
    start: Instant,
    pivot_done: bool,
) -> Result<Instant, Halt> {
    // Neither read nor written here, unlike in `run_action`: whether the
    // step succeeded already (only a recovered run's steps have, and a
    // recovered run is durable, so never here), and its `Running` status
    // (nothing reads the record before its attempts end, which write the
    // final status): about 6 instructions a step, by callgrind.
    debug_assert_eq!(record.status, StepStatus::Pending);
    let mut attempt = record.attempts;
    loop {
        attempt += 1;
        record.attempts = attempt;
        env.emit(&SagaEvent::StepStarted {
            step: &step.name,
            attempt,
        });
        let info = StepInfo::new(&env.saga.name, &env.id, &step.name, attempt);
        #[cfg(not(feature = "tracing"))]
        let result = catch(|| action(&mut *ctx, &info));
        #[cfg(feature = "tracing")]
        let result = crate::spans::attempt_sync(false, &step.name, attempt, || {
            catch(|| action(&mut *ctx, &info))
        });
        let now = env.now();
        let error = match result {
            Ok(out) => {
                action_succeeded(env, step, record, attempt, start, now);
                record.output = Some(out);
                return Ok(now);
            }
            Err(error) => error,
        };
        // The brakes are read only after a failure: not made for every
        // step that succeeds.
        let brakes = Brakes::of(env, step, pivot_done);
        let Some(delay) = action_failed(env, step, record, attempt, &error, &brakes) else {
            return Err(action_gave_up(record, start, now, error));
        };
        env.clock().sleep_blocking(delay);
    }
}

/// Records an action's successful attempt, which ended at `now`.
#[inline(always)]
fn action_succeeded<C>(
    env: &Env<'_, C>,
    step: &StepDef<C>,
    record: &mut Record,
    attempt: u32,
    start: Instant,
    now: Instant,
) {
    record.status = StepStatus::Succeeded;
    record.outcome = Outcome::Applied;
    let elapsed = now - start;
    record.duration = elapsed;
    env.emit(&SagaEvent::StepSucceeded {
        step: &step.name,
        attempt,
        elapsed,
    });
}

/// Records an action's failed attempt; returns the delay before the next
/// one if the step's policy retries it. Out of line: the failure path's
/// code kept out of the hot loop.
#[inline(never)]
fn action_failed<C>(
    env: &Env<'_, C>,
    step: &StepDef<C>,
    record: &mut Record,
    attempt: u32,
    error: &StepError,
    brakes: &Brakes<'_>,
) -> Option<Duration> {
    // Unknown is sticky: once an attempt may have taken effect, the
    // step is compensated whatever follows.
    if error.is_outcome_unknown() {
        record.outcome = Outcome::Unknown;
    } else if record.outcome != Outcome::Unknown {
        record.outcome = Outcome::NotApplied;
    }
    // The pivot retries an unknown outcome whatever its predicate says:
    // giving up there means stuck.
    let qualifies = step.retry.retries(error) || (step.pivot && error.is_outcome_unknown());
    let retry_in = (attempt < step.retry.max_attempts()
        && qualifies
        && !error.error().is::<Interrupted>()
        && !brakes.applied())
    .then(|| backoff(&step.retry, attempt + 1));
    env.emit(&SagaEvent::StepFailed {
        step: &step.name,
        attempt,
        error,
        retry_in,
    });
    retry_in
}

/// Records that an action's policy gave up after an attempt that ended at
/// `now` with `error`.
fn action_gave_up(record: &mut Record, start: Instant, now: Instant, error: StepError) -> Halt {
    record.status = StepStatus::Failed;
    record.duration = now - start;
    Halt {
        end: now,
        error,
        failed: true,
    }
}

/// One attempt of an action: panics caught, the timeout applied, and a
/// droppable step dropped when a brake is applied.
#[inline]
fn attempt_action<'a, C, A: Access<C>>(
    step: &'a StepDef<C>,
    ctx: &'a mut A,
    info: &'a StepInfo<'a>,
    brakes: Brakes<'a>,
) -> Attempt<'a, Output> {
    let future = match &step.action {
        Action::Sync(action) => {
            return Attempt::Done(match A::exclusive(ctx) {
                Some(ctx) => catch(|| action(ctx, info)),
                None => Err(exclusive_in_group(info)),
            });
        }
        Action::SharedSync(action) => {
            return Attempt::Done(catch(|| action(A::shared(ctx), info)));
        }
        Action::Async(action) => match A::exclusive(ctx) {
            Some(ctx) => catch(move || Ok(action(ctx, info))),
            None => Err(exclusive_in_group(info)),
        },
        Action::SharedAsync(action) => {
            let ctx = A::shared(ctx);
            catch(move || Ok(action(ctx, info)))
        }
    };
    let future = match future {
        Ok(future) => future,
        Err(error) => return Attempt::Done(Err(error)),
    };
    let brakes = if step.cancel_safe && brakes.droppable {
        brakes
    } else {
        Brakes {
            cancel: None,
            group: None,
            droppable: false,
        }
    };
    let braked = brakes.droppable && (brakes.cancel.is_some() || brakes.group.is_some());
    if step.timeout.is_none() && !braked {
        return Attempt::Pending(Running::Plain(CatchUnwind(future)));
    }
    // A timer and a select make a large future (over 500 bytes), held by
    // every run in flight if it were inline: boxed, only the attempts that
    // use them pay for it.
    Attempt::Pending(Running::Guarded(Box::pin(guarded(
        CatchUnwind(future),
        step.timeout,
        brakes,
    ))))
}

/// One attempt of an action or a compensation, as made: a sync one is
/// done already (no future, no await); an async one is the step's future,
/// to be awaited. Smaller than an `async fn`'s future, which would hold
/// its arguments twice beside the step's future.
enum Attempt<'a, T> {
    Done(Result<T, StepError>),
    Pending(Running<'a, T>),
}

#[cfg(feature = "tracing")]
impl<T: Unpin> Attempt<'_, T> {
    async fn settle(self) -> Result<T, StepError> {
        match self {
            Attempt::Done(result) => result,
            Attempt::Pending(running) => running.await,
        }
    }
}

/// The step's future, polled with its panics caught; boxed with its timer
/// and brakes when a timeout or a brake applies.
enum Running<'a, T> {
    Plain(CatchUnwind<'a, T>),
    Guarded(BoxFuture<'a, Result<T, StepError>>),
}

impl<T> Future for Running<'_, T> {
    type Output = Result<T, StepError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Running::Plain(future) => Pin::new(future).poll(cx),
            Running::Guarded(future) => future.as_mut().poll(cx),
        }
    }
}

/// The result of an [`Attempt`]: a sync one's without an await. With
/// tracing, the attempt is made inside its span (the step's own spans and
/// events nest under it).
macro_rules! settle {
    ($make:expr, $compensation:expr, $step:expr, $attempt:expr) => {{
        // The match ends before the await: the future does not hold the
        // `Attempt` beside the step's future.
        #[cfg(not(feature = "tracing"))]
        let result = 'settled: {
            let running = match $make {
                Attempt::Done(result) => break 'settled result,
                Attempt::Pending(running) => running,
            };
            running.await
        };
        #[cfg(feature = "tracing")]
        let result = crate::spans::attempt($compensation, $step, $attempt, async {
            $make.settle().await
        })
        .await;
        result
    }};
}
use settle;

fn exclusive_in_group(info: &StepInfo<'_>) -> StepError {
    // `build()` rejects such a branch; reaching this is an engine bug,
    // reported as an error rather than a panic.
    StepError::new(format!(
        "internal error: step `{}` takes `&mut` context inside a parallel group",
        info.step
    ))
}

/// Calls user code, turning a panic into a step error of unknown outcome.
fn catch<T>(f: impl FnOnce() -> Result<T, StepError>) -> Result<T, StepError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| Err(StepError::panicked(&*panic)))
}

/// Rolls back: compensates, in reverse order (parallel branches at once),
/// every step that took effect or may have.
async fn rollback<C>(
    env: &Env<'_, C>,
    state: &mut State<'_>,
    ctx: &mut C,
    stop: Stop,
) -> Result<SagaReport, SagaError> {
    let saga = env.saga;
    state.status = ExecutionStatus::Compensating;
    let cause = match stop {
        Stop::Failed { index, error } => Some((index, error)),
        Stop::Cancelled => None,
        Stop::Stuck { node, index, error } => {
            return Err(stuck_forward(env, state, node, index, error));
        }
        Stop::Aborted => return Err(aborted(env, state)),
    };
    if env.durable.is_some() {
        let log = env.log(
            EventKind::RollbackStarted,
            ExecutionStatus::Compensating,
            |event| {
                if let Some((index, error)) = &cause {
                    event.step = Some(*index as u32);
                    event.error = Some(error.to_string());
                }
                event.context = env.snapshot(&*ctx);
            },
        );
        if log.await.is_err() {
            return Err(aborted(env, state));
        }
    }
    state.extra();
    let mut failures = Vec::new();
    let mut stuck: Option<(usize, StepError)> = None;
    let mut remaining = Vec::new();
    for node in saga.nodes.iter().rev() {
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
            continue;
        }
        if stuck.is_some() && !saga.continue_on_compensation_failure {
            let records = &state.records;
            remaining.extend(
                range
                    .filter(|&i| {
                        records[i].outcome.needs_compensation() && saga.steps[i].undo.is_some()
                    })
                    .map(|i| Arc::clone(&saga.steps[i].name)),
            );
            continue;
        }
        let failed = match node {
            Node::Step(index) => {
                let index = *index;
                let record = &mut state.records[index];
                let result = run_compensation(
                    env,
                    index,
                    &mut *ctx,
                    &mut record.status,
                    record.output.as_deref(),
                    &mut state.extra[index],
                    &mut state.mark,
                )
                .await;
                result.err().map(|e| vec![(index, e)]).unwrap_or_default()
            }
            Node::Group { range, ops } => {
                let records = &mut state.records[range.clone()];
                let extra = &mut state.extra[range.clone()];
                let shared = (ops.compensate)(&*ctx);
                let failed =
                    Box::pin(compensate_group(env, shared, range.clone(), records, extra)).await;
                state.mark = env.now();
                failed
            }
        };
        if env.is_aborted() {
            return Err(aborted(env, state));
        }
        for (index, error) in failed {
            remaining.push(Arc::clone(&saga.steps[index].name));
            if let Some((earlier, earlier_error)) = stuck.replace((index, error)) {
                failures.push(state.failure(saga, earlier, true, &earlier_error));
            }
        }
    }
    match (stuck, cause) {
        (None, Some((index, error))) => {
            let report = state.finish(env, ExecutionStatus::Compensated);
            Err(SagaError::Compensated {
                saga: Arc::clone(&saga.name),
                step: Arc::clone(&saga.steps[index].name),
                error: error.into_inner(),
                report: Box::new(report),
            })
        }
        (None, None) => {
            let report = state.finish(env, ExecutionStatus::Cancelled);
            Err(SagaError::Cancelled {
                saga: Arc::clone(&saga.name),
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
                saga: Arc::clone(&saga.name),
                step: Arc::clone(&saga.steps[index].name),
                phase: StuckPhase::Rollback,
                error: error.into_inner(),
                failures,
                remaining,
                report: Box::new(report),
            })
        }
    }
}

/// Runs one compensation until it succeeds or its policy gives up. `status`
/// is the step's in its [`Record`], `mark` the last clock reading.
async fn run_compensation<C>(
    env: &Env<'_, C>,
    index: usize,
    mut ctx: impl Access<C>,
    status: &mut StepStatus,
    output: Option<&(dyn std::any::Any + Send + Sync)>,
    extra: &mut Extra,
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
    let policy = step.undo_retry.as_ref().unwrap_or(&saga.undo_retry);
    // The last clock reading (the end of what ran before) is this
    // compensation's start, and its end the next one's: one read each.
    let start = *mark;
    *status = StepStatus::Compensating;
    // From 0 in a fresh run; a recovered run goes on where its log stopped.
    let mut attempt = extra.compensation_attempts;
    loop {
        attempt += 1;
        extra.compensation_attempts = attempt;
        env.emit(&SagaEvent::CompensationStarted {
            step: &step.name,
            attempt,
        });
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
            let info = StepInfo::new(&saga.name, &env.id, &step.name, attempt);
            settle!(
                attempt_undo(undo, &mut ctx, output, &info),
                true,
                &step.name,
                attempt
            )
        };
        let now = env.now();
        *mark = now;
        let error = match result {
            Ok(()) => {
                *status = StepStatus::Compensated;
                extra.compensation_duration = now - start;
                env.emit(&SagaEvent::CompensationSucceeded {
                    step: &step.name,
                    attempt,
                    elapsed: extra.compensation_duration,
                });
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
        let retry_in = (attempt < policy.max_attempts() && policy.retries(&error))
            .then(|| backoff(policy, attempt + 1));
        env.emit(&SagaEvent::CompensationFailed {
            step: &step.name,
            attempt,
            error: &error,
            retry_in,
        });
        if env.durable.is_some() {
            let log = env.log(
                EventKind::CompensationFailed,
                ExecutionStatus::Compensating,
                |event| {
                    event.step = Some(index as u32);
                    event.attempt = attempt;
                    event.error = Some(error.to_string());
                    event.will_retry = retry_in.is_some();
                    event.context = env.snapshot(ctx.shared());
                },
            );
            if log.await.is_err() {
                return Err(StepError::new(JournalFailed));
            }
        }
        match retry_in {
            Some(delay) => env.sleep(delay).await,
            None => {
                *status = StepStatus::CompensationFailed;
                extra.compensation_duration = now - start;
                extra.last_error = Some(error.to_string());
                return Err(error);
            }
        }
    }
}

/// One attempt of a compensation, panics caught.
fn attempt_undo<'a, C, A: Access<C>>(
    undo: &'a Undo<C>,
    ctx: &'a mut A,
    output: Option<&'a (dyn std::any::Any + Send + Sync)>,
    info: &'a StepInfo<'a>,
) -> Attempt<'a, ()> {
    let future = match undo {
        Undo::Sync(undo) => {
            return Attempt::Done(match A::exclusive(ctx) {
                Some(ctx) => catch(|| undo(ctx, output, info)),
                None => Err(exclusive_in_group(info)),
            });
        }
        Undo::SharedSync(undo) => {
            return Attempt::Done(catch(|| undo(A::shared(ctx), output, info)));
        }
        Undo::Async(undo) => match A::exclusive(ctx) {
            Some(ctx) => catch(move || Ok(undo(ctx, output, info))),
            None => Err(exclusive_in_group(info)),
        },
        Undo::SharedAsync(undo) => {
            let ctx = A::shared(ctx);
            catch(move || Ok(undo(ctx, output, info)))
        }
    };
    match future {
        Ok(future) => Attempt::Pending(Running::Plain(CatchUnwind(future))),
        Err(error) => Attempt::Done(Err(error)),
    }
}

/// Ends a run stuck going forward at step `index` of node `node`.
fn stuck_forward<C>(
    env: &Env<'_, C>,
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
        .map(|(_, step)| Arc::clone(&step.name))
        .collect();
    let report = state.finish(env, ExecutionStatus::Stuck);
    SagaError::Stuck {
        saga: Arc::clone(&saga.name),
        step: Arc::clone(&saga.steps[index].name),
        phase: StuckPhase::Forward,
        error: error.into_inner(),
        failures,
        remaining,
        report: Box::new(report),
    }
}

impl<C> Node<C> {
    fn first(&self) -> usize {
        self.range().start
    }

    fn range(&self) -> Range<usize> {
        match self {
            Node::Step(index) => *index..*index + 1,
            Node::Group { range, .. } => range.clone(),
        }
    }
}

/// Ends a rollback whose journal failed.
fn aborted<C>(env: &Env<'_, C>, state: &mut State<'_>) -> SagaError {
    let error = env.take_abort().unwrap_or_else(|| StoreError::Closed {
        store: "the journal".to_owned(),
    });
    store_error(env, state, error)
}

impl<C> Env<'_, C> {
    fn clock(&self) -> &dyn Clock {
        match &self.clock {
            Some(clock) => &**clock,
            None => &SYSTEM_CLOCK,
        }
    }

    /// The run's clock's reading: the system clock's without a call
    /// through a trait object when the run has no clock of its own.
    #[inline]
    fn now(&self) -> Instant {
        match &self.clock {
            Some(clock) => clock.now(),
            None => Instant::now(),
        }
    }

    /// A step's sync action, when the run can call it without a future:
    /// driven without a runtime and without a journal (see
    /// [`run_sync_action`]).
    #[inline]
    fn sync_action<'s>(&self, step: &'s StepDef<C>) -> Option<&'s SyncAction<C>> {
        // The run's kind first: an async run pays one test per step.
        if !self.blocking || self.durable.is_some() {
            return None;
        }
        match &step.action {
            Action::Sync(action) => Some(&**action),
            _ => None,
        }
    }

    /// The time from the run's start to `now`.
    fn since_start(&self, now: Instant) -> Duration {
        self.started.map_or(Duration::ZERO, |started| now - started)
    }

    /// Writes `event` to the journal (if any). On failure the error is kept
    /// for the run's result, and the run stops at its next check.
    ///
    /// Boxed: awaited inline at every log point, its future (the event and
    /// the journal's write) would make every run in flight larger, journal
    /// or not; a journaled run pays one allocation beside a store write.
    ///
    /// `fill` sets the event's fields: the event is made here, so the
    /// caller's future does not hold it across the write.
    fn log(
        &self,
        kind: EventKind,
        status: ExecutionStatus,
        fill: impl FnOnce(&mut Event),
    ) -> BoxFuture<'_, Result<(), ()>> {
        let mut event = Event::new(0, kind);
        fill(&mut event);
        // Only the durable part is captured, so the future is `Send`
        // whatever the context is.
        let durable = self.durable.as_deref();
        Box::pin(async move {
            let Some(durable) = durable else {
                return Ok(());
            };
            if lock(&durable.aborted).is_some() {
                return Err(());
            }
            match durable.journal.record(event, status).await {
                Ok(()) => Ok(()),
                Err(error) => {
                    lock(&durable.aborted).get_or_insert(error);
                    Err(())
                }
            }
        })
    }

    /// The context, encoded for the journal; an encoding error aborts the
    /// run (at its next log point).
    fn snapshot(&self, ctx: &C) -> Option<String> {
        let durable = self.durable.as_deref()?;
        match durable.journal.encode_context(ctx) {
            Ok(json) => Some(json),
            Err(error) => {
                self.abort(error);
                None
            }
        }
    }

    /// A step's output, encoded for the journal.
    fn encode_output(
        &self,
        step: &StepDef<C>,
        output: &(dyn std::any::Any + Send + Sync),
    ) -> Option<String> {
        let result = match &step.codec {
            Some(codec) => (codec.encode)(output),
            None => Err("the step has no codec; call `.durable()` on it".to_owned()),
        };
        result
            .map_err(|detail| {
                self.abort(StoreError::Encode {
                    what: format!("the output of step `{}`", step.name),
                    detail,
                });
            })
            .ok()
    }

    fn abort(&self, error: StoreError) {
        if let Some(durable) = &self.durable {
            lock(&durable.aborted).get_or_insert(error);
        }
    }

    fn is_aborted(&self) -> bool {
        // Only a journal aborts a run: a run without one skips the lock
        // (two atomic operations per step otherwise).
        self.durable
            .as_ref()
            .is_some_and(|durable| lock(&durable.aborted).is_some())
    }

    fn take_abort(&self) -> Option<StoreError> {
        lock(&self.durable.as_ref()?.aborted).take()
    }

    fn cancel_requested(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
    }

    async fn sleep(&self, delay: Duration) {
        if self.blocking {
            self.clock().sleep_blocking(delay);
        } else {
            self.clock().sleep(delay).await;
        }
    }

    /// Tells the logger and the observers of `event`. Inlined, so that
    /// where the event is built its log level folds to a constant: without
    /// a logger and observers an event costs an atomic load and a test,
    /// and is never built beyond its fields on the stack.
    #[inline(always)]
    fn emit(&self, event: &SagaEvent<'_>) {
        crate::logging::log_event(|| self.run_info(), event, || self.since_start(self.now()));
        if self.observed {
            self.notify(event);
        }
    }

    fn run_info(&self) -> RunInfo<'_> {
        RunInfo {
            saga: &self.saga.name,
            execution_id: &self.id,
        }
    }

    /// Calls every observer with `event`: out of line, as few runs have any.
    #[inline(never)]
    fn notify(&self, event: &SagaEvent<'_>) {
        let run = &self.run_info();
        for observer in self.saga.observers.iter().chain(&self.run_observers) {
            // An observer is user code: its panic must not tear down the
            // run (and leave compensations undone), nor silence the others.
            if catch_unwind(AssertUnwindSafe(|| observer.on_event(run, event))).is_err() {
                log::error!(
                    target: crate::logging::TARGET,
                    "observer panicked, event dropped for it saga={} execution={}",
                    run.saga,
                    run.execution_id
                );
            }
        }
    }
}

/// The journal's abort slot; it stays consistent whatever panicked while
/// it was held.
fn lock(slot: &Mutex<Option<StoreError>>) -> std::sync::MutexGuard<'_, Option<StoreError>> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The delay before `attempt`, with a fresh random pick for the jitter.
fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let random = mix(COUNTER.fetch_add(1, Ordering::Relaxed));
    let unit = (random >> 11) as f64 / (1u64 << 53) as f64;
    policy.delay_before(attempt, unit)
}

/// Awaits an attempt's future under its timeout, and drops it when a brake
/// is applied (only given for cancel-safe steps).
async fn guarded<T>(
    future: CatchUnwind<'_, T>,
    timeout: Option<Duration>,
    brakes: Brakes<'_>,
) -> Result<T, StepError> {
    let timed = async move {
        match timeout {
            Some(limit) => match tokio::time::timeout(limit, future).await {
                Ok(result) => result,
                Err(_) => Err(StepError::timeout(limit)),
            },
            None => future.await,
        }
    };
    if !brakes.droppable || (brakes.cancel.is_none() && brakes.group.is_none()) {
        return timed.await;
    }
    let braked = async {
        match (brakes.cancel, brakes.group) {
            (Some(a), Some(b)) => {
                tokio::select! {
                    () = a.cancelled() => {},
                    () = b.cancelled() => {},
                }
            }
            (Some(a), None) | (None, Some(a)) => a.cancelled().await,
            (None, None) => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        result = timed => result,
        () = braked => Err(StepError::interrupted()),
    }
}

/// Polls a boxed future, turning a panic into a step error of unknown
/// outcome.
struct CatchUnwind<'a, T>(BoxFuture<'a, Result<T, StepError>>);

impl<T> Future for CatchUnwind<'_, T> {
    type Output = Result<T, StepError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        match catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(panic) => Poll::Ready(Err(StepError::panicked(&*panic))),
        }
    }
}

/// What a group's run returns: its first failure, and the last error of
/// every branch that failed for good (for the report).
type GroupRun = (Option<(usize, StepError)>, Vec<(usize, String)>);

/// Runs a group's branches at once. The first branch to fail for good
/// stops its siblings' retries and drops the cancel-safe ones; the others
/// are let finish.
async fn run_group<C>(
    env: &Env<'_, C>,
    ctx: &dyn SharedContext<C>,
    range: Range<usize>,
    records: &mut [Record],
    pivot_done: bool,
) -> GroupRun {
    let group = CancellationToken::new();
    let first_failure = AtomicUsize::new(usize::MAX);
    let start = env.now();
    let branches = records
        .iter_mut()
        .zip(range.clone())
        .map(|(record, index)| {
            let group = &group;
            let first_failure = &first_failure;
            Box::pin(async move {
                let step = &env.saga.steps[index];
                let brakes = Brakes {
                    cancel: env.cancel.as_ref().filter(|_| !pivot_done),
                    group: Some(group),
                    droppable: step.cancel_safe && !pivot_done,
                };
                let result = run_action(env, index, ctx, record, start, brakes).await;
                result.err().map(|halt| {
                    let _ = first_failure.compare_exchange(
                        usize::MAX,
                        index,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                    group.cancel();
                    (index, halt)
                })
            })
        })
        .collect();
    let halts = join_all(branches).await;
    let first = first_failure.load(Ordering::SeqCst);
    let mut failure = None;
    let mut errors = Vec::new();
    for (index, halt) in halts.into_iter().flatten() {
        if halt.failed {
            errors.push((index, halt.error.to_string()));
        }
        if index == first && failure.is_none() {
            failure = Some((index, halt.error));
        }
    }
    (failure, errors)
}

/// Compensates, at once, every branch of a group that needs it; returns
/// the compensations that failed for good.
async fn compensate_group<C>(
    env: &Env<'_, C>,
    ctx: &dyn SharedContext<C>,
    range: Range<usize>,
    records: &mut [Record],
    extra: &mut [Extra],
) -> Vec<(usize, StepError)> {
    let saga = env.saga;
    let start = env.now();
    let branches = records
        .iter_mut()
        .zip(extra)
        .zip(range)
        .filter(|((record, _), index)| {
            record.outcome.needs_compensation() && saga.steps[*index].undo.is_some()
        })
        .map(|((record, extra), index)| {
            let mut mark = start;
            let Record { status, output, .. } = record;
            Box::pin(async move {
                run_compensation(env, index, ctx, status, output.as_deref(), extra, &mut mark)
                    .await
                    .err()
                    .map(|error| (index, error))
            })
        })
        .collect();
    join_all(branches).await.into_iter().flatten().collect()
}

/// Polls every future until all are done; results in input order.
async fn join_all<F: Future + Unpin>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Option<F>> = futures.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for (slot, result) in futures.iter_mut().zip(results.iter_mut()) {
            if let Some(future) = slot {
                match Pin::new(future).poll(cx) {
                    Poll::Ready(output) => {
                        *result = Some(output);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

impl<C: Send + 'static> Saga<C> {
    /// Runs the saga on `ctx`, inside a tokio runtime (its timers serve
    /// timeouts and backoff).
    ///
    /// # Errors
    /// [`SagaError::Compensated`] if a step failed and the rollback
    /// succeeded, [`SagaError::Stuck`] if the run can go neither way on its
    /// own, [`SagaError::Cancelled`] if it was cancelled before the pivot.
    // Not an `async fn`: it returns the executor's future itself, so no
    // wrapper future holds the arguments a second time (every run in
    // flight would pay for it).
    pub fn run<'a>(
        &'a self,
        ctx: &'a mut C,
    ) -> impl Future<Output = Result<SagaReport, SagaError>> + Send + 'a {
        execute(&self.inner, ctx, RunOptions::new(), false, None)
    }

    /// [`run`](Self::run) with options: an execution id, a clock, a
    /// cancellation token, observers.
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub fn run_with<'a>(
        &'a self,
        ctx: &'a mut C,
        options: RunOptions,
    ) -> impl Future<Output = Result<SagaReport, SagaError>> + Send + 'a {
        execute(&self.inner, ctx, options, false, None)
    }

    /// Runs the saga on the calling thread, without an async runtime when
    /// every step is sync.
    ///
    /// A saga with async steps is driven on a private current-thread tokio
    /// runtime (on a scoped helper thread when the caller is itself inside a
    /// runtime, which cannot be blocked on).
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub fn run_blocking(&self, ctx: &mut C) -> Result<SagaReport, SagaError> {
        self.run_blocking_with(ctx, RunOptions::new())
    }

    /// [`run_blocking`](Self::run_blocking) with options.
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub fn run_blocking_with(
        &self,
        ctx: &mut C,
        options: RunOptions,
    ) -> Result<SagaReport, SagaError> {
        if !self.inner.has_async {
            // The run's records on this stack, when its steps are few: no
            // allocation for them (about 100 instructions a run fewer, by
            // callgrind).
            let mut records: [Record; LENT_RECORDS] = std::array::from_fn(|_| Record::fresh());
            let lent = records.get_mut(..self.inner.steps.len());
            return crate::blocking::block_on_ready(execute(&self.inner, ctx, options, true, lent));
        }
        let drive = move || {
            crate::blocking::block_on_runtime(execute(&self.inner, ctx, options, false, None))
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|scope| {
                scope
                    .spawn(drive)
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
        } else {
            drive()
        }
    }
}

/// How many steps' records a sync `run_blocking` keeps on its stack (40
/// bytes each); a saga with more steps allocates them.
const LENT_RECORDS: usize = 16;
