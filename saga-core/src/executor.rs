//! The executor: runs one execution of a saga forward, and back when it
//! must, by the failure rules of `docs/DESIGN.md` section 3.
//!
//! It emits events (logs and observers) and knows no store.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::cancel::CancellationToken;
use crate::clock::{Clock, SystemClock};
use crate::error::{Failure, SagaError, StepError, StuckPhase};
use crate::id::{ExecutionId, mix};
use crate::observer::{RunInfo, SagaEvent, SagaObserver};
use crate::policy::RetryPolicy;
use crate::report::{ExecutionStatus, Outcome, SagaReport, StepReport, StepStatus};
use crate::saga::{RunOptions, SagaInner};
use crate::step::{Action, Output, StepDef, StepInfo, StepKind, Undo};

static SYSTEM_CLOCK: SystemClock = SystemClock;

/// Why the forward path stopped short of the end.
enum Stop {
    /// Step `index` failed (cleanly, or with an unknown outcome before the
    /// pivot): roll back from it.
    Failed { index: usize, error: StepError },
    /// Cancelled before the pivot; steps before `index` may have taken
    /// effect.
    Cancelled { index: usize },
    /// Step `index` failed where no rollback is allowed: the pivot with an
    /// unknown outcome, or a step after the pivot.
    Stuck { index: usize, error: StepError },
}

/// The state of one run. Lives on the stack of [`execute`]; nothing of it
/// is in the definition.
struct Execution<'r, C> {
    saga: &'r SagaInner<C>,
    id: ExecutionId,
    clock: &'r dyn Clock,
    cancel: Option<&'r CancellationToken>,
    run_observers: &'r [Arc<dyn SagaObserver>],
    /// Sync-only run driven without a runtime: sleeps block the thread.
    blocking: bool,
    report: SagaReport,
    outputs: Vec<Option<Output>>,
    failures: Vec<Failure>,
    started: Instant,
    /// The last clock reading: the end of one step is the start of the
    /// next, so each step costs one clock read.
    mark: Instant,
    rng: u64,
}

/// Runs one execution.
pub(crate) async fn execute<C>(
    saga: &SagaInner<C>,
    ctx: &mut C,
    options: RunOptions,
    blocking: bool,
) -> Result<SagaReport, SagaError> {
    let clock: &dyn Clock = match &options.clock {
        Some(clock) => &**clock,
        None => &SYSTEM_CLOCK,
    };
    let id = options
        .execution_id
        .clone()
        .unwrap_or_else(ExecutionId::generate);
    let mut ex = Execution::new(
        saga,
        id,
        clock,
        options.cancel.as_ref(),
        &options.observers,
        blocking,
    );
    ex.emit(&SagaEvent::SagaStarted);
    match ex.forward(ctx).await {
        Ok(()) => Ok(ex.finish(ExecutionStatus::Completed)),
        Err(Stop::Stuck { index, error }) => Err(ex.stuck_forward(index, error)),
        Err(stop) => ex.rollback(ctx, stop).await,
    }
}

impl<'r, C> Execution<'r, C> {
    fn new(
        saga: &'r SagaInner<C>,
        id: ExecutionId,
        clock: &'r dyn Clock,
        cancel: Option<&'r CancellationToken>,
        run_observers: &'r [Arc<dyn SagaObserver>],
        blocking: bool,
    ) -> Self {
        let now = clock.now();
        let steps = saga
            .steps
            .iter()
            .map(|s| StepReport {
                name: Arc::clone(&s.name),
                kind: s.kind,
                status: StepStatus::Pending,
                outcome: Outcome::NotStarted,
                attempts: 0,
                compensation_attempts: 0,
                duration: Duration::ZERO,
                compensation_duration: Duration::ZERO,
                last_error: None,
            })
            .collect();
        let mut outputs = Vec::with_capacity(saga.steps.len());
        outputs.resize_with(saga.steps.len(), || None);
        Execution {
            saga,
            report: SagaReport {
                saga: Arc::clone(&saga.name),
                execution_id: id.clone(),
                status: ExecutionStatus::Running,
                steps,
                cancel_ignored: false,
                duration: Duration::ZERO,
            },
            id,
            clock,
            cancel,
            run_observers,
            blocking,
            outputs,
            failures: Vec::new(),
            started: now,
            mark: now,
            rng: 0,
        }
    }

    /// Runs the steps in order, up to the first that stops the run.
    async fn forward(&mut self, ctx: &mut C) -> Result<(), Stop> {
        let mut pivot_done = false;
        for index in 0..self.saga.steps.len() {
            let step = &self.saga.steps[index];
            if self.cancel_requested() {
                if !pivot_done {
                    return Err(Stop::Cancelled { index });
                }
                if !self.report.cancel_ignored {
                    self.report.cancel_ignored = true;
                    self.emit(&SagaEvent::CancelIgnored { step: &step.name });
                }
            }
            // Before the pivot a cancel-safe async step may be dropped when
            // the run is cancelled; the pivot and what follows always finish.
            let droppable = !pivot_done && !step.pivot && step.cancel_safe;
            match self.run_step(index, ctx, droppable).await {
                Ok(()) => pivot_done |= step.pivot,
                Err(error) => {
                    let unknown = self.report.steps[index].outcome == Outcome::Unknown;
                    if pivot_done || (step.pivot && unknown) {
                        return Err(Stop::Stuck { index, error });
                    }
                    if error.error().is::<crate::error::Interrupted>() || self.cancel_requested() {
                        // Dropped mid-flight, or its retries stopped by the
                        // cancel: compensated with the others if it may
                        // have taken effect.
                        return Err(Stop::Cancelled { index: index + 1 });
                    }
                    return Err(Stop::Failed { index, error });
                }
            }
        }
        Ok(())
    }

    /// Runs one step's action until it succeeds or its policy gives up.
    async fn run_step(
        &mut self,
        index: usize,
        ctx: &mut C,
        droppable: bool,
    ) -> Result<(), StepError> {
        let saga = self.saga;
        let step = &saga.steps[index];
        let start = self.mark;
        self.report.steps[index].status = StepStatus::Running;
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.report.steps[index].attempts = attempt;
            self.emit(&SagaEvent::StepStarted {
                step: &step.name,
                attempt,
            });
            let info = StepInfo::new(&saga.name, &self.id, &step.name, attempt);
            let result = self.attempt_action(step, ctx, &info, droppable).await;
            let now = self.clock.now();
            self.mark = now;
            let report = &mut self.report.steps[index];
            match result {
                Ok(output) => {
                    report.status = StepStatus::Succeeded;
                    report.outcome = Outcome::Applied;
                    report.duration = now - start;
                    self.outputs[index] = Some(output);
                    let elapsed = report.duration;
                    self.emit(&SagaEvent::StepSucceeded {
                        step: &step.name,
                        attempt,
                        elapsed,
                    });
                    return Ok(());
                }
                Err(error) => {
                    // Unknown is sticky: once an attempt may have taken
                    // effect, the step is compensated whatever follows.
                    if error.is_outcome_unknown() {
                        report.outcome = Outcome::Unknown;
                    } else if report.outcome != Outcome::Unknown {
                        report.outcome = Outcome::NotApplied;
                    }
                    let interrupted = error.error().is::<crate::error::Interrupted>();
                    // The pivot retries an unknown outcome whatever its
                    // predicate says: giving up there means stuck.
                    let qualifies =
                        step.retry.retries(&error) || (step.pivot && error.is_outcome_unknown());
                    // Between attempts nothing is in flight: a cancel stops
                    // the retries of any step before the pivot.
                    let before_pivot =
                        matches!(step.kind, StepKind::Compensable | StepKind::NoUndo);
                    let cancelled_before_pivot = before_pivot && self.cancel_requested();
                    let retry_in = (attempt < step.retry.max_attempts()
                        && qualifies
                        && !interrupted
                        && !cancelled_before_pivot)
                        .then(|| self.backoff(&step.retry, attempt + 1));
                    self.emit(&SagaEvent::StepFailed {
                        step: &step.name,
                        attempt,
                        error: &error,
                        retry_in,
                    });
                    match retry_in {
                        Some(delay) => self.sleep(delay).await,
                        None => {
                            let report = &mut self.report.steps[index];
                            report.status = StepStatus::Failed;
                            report.duration = self.mark - start;
                            report.last_error = Some(error.to_string());
                            return Err(error);
                        }
                    }
                }
            }
        }
    }

    /// One attempt of an action: panics caught, the timeout applied, and a
    /// droppable step dropped on cancellation.
    async fn attempt_action(
        &self,
        step: &StepDef<C>,
        ctx: &mut C,
        info: &StepInfo<'_>,
        droppable: bool,
    ) -> Result<Output, StepError> {
        match &step.action {
            Action::Sync(action) => catch_unwind(AssertUnwindSafe(|| action(ctx, info)))
                .unwrap_or_else(|panic| Err(StepError::panicked(&*panic))),
            Action::Async(action) => {
                let future = match catch_unwind(AssertUnwindSafe(move || {
                    // Moved, not reborrowed: the future keeps the borrow.
                    let ctx = ctx;
                    action(ctx, info)
                })) {
                    Ok(future) => CatchUnwind(future),
                    Err(panic) => return Err(StepError::panicked(&*panic)),
                };
                let cancel = self.cancel.filter(|_| droppable);
                guarded(future, step.timeout, cancel).await
            }
        }
    }

    /// Rolls back: compensates, in reverse order, every step that took
    /// effect or may have.
    async fn rollback(&mut self, ctx: &mut C, stop: Stop) -> Result<SagaReport, SagaError> {
        self.report.status = ExecutionStatus::Compensating;
        let (end, cause) = match stop {
            Stop::Failed { index, error } => (index + 1, Some((index, error))),
            Stop::Cancelled { index } => (index, None),
            Stop::Stuck { index, error } => return Err(self.stuck_forward(index, error)),
        };
        let mut stuck: Option<(usize, StepError)> = None;
        let mut remaining = Vec::new();
        for index in (0..end).rev() {
            if !self.report.steps[index].outcome.needs_compensation() {
                continue;
            }
            if self.saga.steps[index].undo.is_none() {
                self.report.steps[index].status = StepStatus::Skipped;
                continue;
            }
            let halted = stuck.is_some() && !self.saga.continue_on_compensation_failure;
            if halted {
                remaining.push(Arc::clone(&self.saga.steps[index].name));
                continue;
            }
            if let Err(error) = self.compensate(index, ctx).await {
                remaining.push(Arc::clone(&self.saga.steps[index].name));
                if let Some((earlier, earlier_error)) = stuck.replace((index, error)) {
                    let failure = self.failure(earlier, true, &earlier_error);
                    self.failures.push(failure);
                }
            }
        }
        match (stuck, cause) {
            (None, Some((index, error))) => {
                let report = self.finish(ExecutionStatus::Compensated);
                Err(SagaError::Compensated {
                    saga: Arc::clone(&self.saga.name),
                    step: Arc::clone(&self.saga.steps[index].name),
                    error: error.into_inner(),
                    report: Box::new(report),
                })
            }
            (None, None) => {
                let report = self.finish(ExecutionStatus::Cancelled);
                Err(SagaError::Cancelled {
                    saga: Arc::clone(&self.saga.name),
                    report: Box::new(report),
                })
            }
            (Some((index, error)), cause) => {
                if let Some((cause_index, cause_error)) = cause {
                    // The failure that started the rollback comes first.
                    let failure = self.failure(cause_index, false, &cause_error);
                    self.failures.insert(0, failure);
                }
                let last = self.failure(index, true, &error);
                self.failures.push(last);
                let report = self.finish(ExecutionStatus::Stuck);
                Err(SagaError::Stuck {
                    saga: Arc::clone(&self.saga.name),
                    step: Arc::clone(&self.saga.steps[index].name),
                    phase: StuckPhase::Rollback,
                    error: error.into_inner(),
                    failures: std::mem::take(&mut self.failures),
                    remaining,
                    report: Box::new(report),
                })
            }
        }
    }

    /// Runs one compensation until it succeeds or its policy gives up.
    async fn compensate(&mut self, index: usize, ctx: &mut C) -> Result<(), StepError> {
        let saga = self.saga;
        let step = &saga.steps[index];
        let Some(undo) = &step.undo else {
            return Ok(());
        };
        let policy = step.undo_retry.as_ref().unwrap_or(&saga.undo_retry);
        let start = self.clock.now();
        self.report.steps[index].status = StepStatus::Compensating;
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.report.steps[index].compensation_attempts = attempt;
            self.emit(&SagaEvent::CompensationStarted {
                step: &step.name,
                attempt,
            });
            let info = StepInfo::new(&saga.name, &self.id, &step.name, attempt);
            let output = self.outputs[index].as_deref();
            let ctx = &mut *ctx;
            let info = &info;
            let result = match undo {
                Undo::Sync(undo) => catch_unwind(AssertUnwindSafe(move || {
                    let ctx = ctx;
                    undo(ctx, output, info)
                }))
                .unwrap_or_else(|panic| Err(StepError::panicked(&*panic))),
                Undo::Async(undo) => match catch_unwind(AssertUnwindSafe(move || {
                    let ctx = ctx;
                    undo(ctx, output, info)
                })) {
                    Ok(future) => guarded(CatchUnwind(future), None, None).await,
                    Err(panic) => Err(StepError::panicked(&*panic)),
                },
            };
            let now = self.clock.now();
            self.mark = now;
            match result {
                Ok(()) => {
                    let report = &mut self.report.steps[index];
                    report.status = StepStatus::Compensated;
                    report.compensation_duration = now - start;
                    let elapsed = report.compensation_duration;
                    self.emit(&SagaEvent::CompensationSucceeded {
                        step: &step.name,
                        attempt,
                        elapsed,
                    });
                    return Ok(());
                }
                Err(error) => {
                    let retry_in = (attempt < policy.max_attempts() && policy.retries(&error))
                        .then(|| self.backoff(policy, attempt + 1));
                    self.emit(&SagaEvent::CompensationFailed {
                        step: &step.name,
                        attempt,
                        error: &error,
                        retry_in,
                    });
                    match retry_in {
                        Some(delay) => self.sleep(delay).await,
                        None => {
                            let report = &mut self.report.steps[index];
                            report.status = StepStatus::CompensationFailed;
                            report.compensation_duration = self.mark - start;
                            report.last_error = Some(error.to_string());
                            return Err(error);
                        }
                    }
                }
            }
        }
    }

    /// Ends a run stuck going forward at step `index`.
    fn stuck_forward(&mut self, index: usize, error: StepError) -> SagaError {
        let failure = self.failure(index, false, &error);
        self.failures.push(failure);
        let remaining = self.saga.steps[index..]
            .iter()
            .map(|s| Arc::clone(&s.name))
            .collect();
        let report = self.finish(ExecutionStatus::Stuck);
        SagaError::Stuck {
            saga: Arc::clone(&self.saga.name),
            step: Arc::clone(&self.saga.steps[index].name),
            phase: StuckPhase::Forward,
            error: error.into_inner(),
            failures: std::mem::take(&mut self.failures),
            remaining,
            report: Box::new(report),
        }
    }

    fn failure(&self, index: usize, compensation: bool, error: &StepError) -> Failure {
        let report = &self.report.steps[index];
        Failure {
            step: Arc::clone(&report.name),
            compensation,
            attempt: if compensation {
                report.compensation_attempts
            } else {
                report.attempts
            },
            message: error.to_string(),
            outcome_unknown: error.is_outcome_unknown(),
        }
    }

    fn finish(&mut self, status: ExecutionStatus) -> SagaReport {
        self.report.status = status;
        let elapsed = self.mark - self.started;
        self.report.duration = elapsed;
        self.emit(&SagaEvent::SagaFinished { status, elapsed });
        self.report.clone()
    }

    fn cancel_requested(&self) -> bool {
        self.cancel.is_some_and(CancellationToken::is_cancelled)
    }

    fn backoff(&mut self, policy: &RetryPolicy, attempt: u32) -> Duration {
        if self.rng == 0 {
            static SEEDS: AtomicU64 = AtomicU64::new(1);
            self.rng = mix(SEEDS.fetch_add(1, Ordering::Relaxed)) | 1;
        }
        // xorshift64: plenty for spreading retries apart.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let unit = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        policy.delay_before(attempt, unit)
    }

    async fn sleep(&mut self, delay: Duration) {
        if self.blocking {
            self.clock.sleep_blocking(delay);
        } else {
            self.clock.sleep(delay).await;
        }
        self.mark = self.clock.now();
    }

    fn emit(&self, event: &SagaEvent<'_>) {
        let run = RunInfo {
            saga: &self.saga.name,
            execution_id: &self.id,
        };
        crate::logging::log_event(&run, event, || self.clock.now() - self.started);
        for observer in self.saga.observers.iter().chain(self.run_observers) {
            // An observer is user code: its panic must not tear down the
            // run (and leave compensations undone), nor silence the others.
            if catch_unwind(AssertUnwindSafe(|| observer.on_event(&run, event))).is_err() {
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

/// Awaits an attempt's future under its timeout, and drops it if `cancel`
/// fires first (only given for cancel-safe steps).
async fn guarded<T>(
    future: CatchUnwind<'_, T>,
    timeout: Option<Duration>,
    cancel: Option<&CancellationToken>,
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
    match cancel {
        Some(token) => {
            tokio::select! {
                biased;
                result = timed => result,
                () = token.cancelled() => Err(StepError::interrupted()),
            }
        }
        None => timed.await,
    }
}

/// Polls a boxed future, turning a panic into a step error of unknown
/// outcome.
struct CatchUnwind<'a, T>(crate::step::BoxFuture<'a, Result<T, StepError>>);

impl<T> Future for CatchUnwind<'_, T> {
    type Output = Result<T, StepError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        match catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(panic) => Poll::Ready(Err(StepError::panicked(&*panic))),
        }
    }
}
