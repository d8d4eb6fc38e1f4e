//! A run's state: the step records it keeps while in flight, what it
//! keeps only once something failed, and the report built from them.

use std::time::{Duration, Instant};

use super::forward::{Ended, Halt};
use super::{Env, Stop};
use crate::error::{Failure, StepError};
use crate::journal::{Resume, ResumePhase};
use crate::logged::LoggedError;
use crate::observer::SagaEvent;
use crate::report::{ExecutionStatus, Outcome, SagaReport, StepReport, StepStatus};
use crate::saga::SagaInner;
use crate::step::{Output, StepDef, StepKind};

/// One step's record while its run is in flight (40 bytes; the public
/// [`StepReport`] is built from it when the run ends). The step's name is
/// its index in the definition; what only a failure or a rollback needs is
/// in [`Extra`].
pub(crate) struct Record {
    pub(super) output: Option<Output>,
    /// Time spent in its action. A `Duration` rather than nanoseconds in
    /// a `u64`, which would be 8 bytes less a step in flight but a
    /// conversion there and back at every step (docs/PERFORMANCE.md).
    pub(super) duration: Duration,
    pub(super) attempts: u32,
    pub(super) status: StepStatus,
    pub(super) outcome: Outcome,
}

/// What a step's record needs only once something failed: kept apart from
/// the [`Record`]s, and allocated the first time it is needed.
#[derive(Default)]
pub(crate) struct Extra {
    pub(super) compensation_attempts: u32,
    pub(super) compensation_duration: Duration,
    pub(super) last_error: Option<String>,
    /// A recovered run's step whose last attempt a crash cut off (see
    /// [`ResumeStep::cut_off`](crate::journal::ResumeStep)).
    pub(super) cut_off: bool,
    /// A recovered run's step whose retry its log left due: what is left
    /// of the backoff, waited out before its next attempt (taken then).
    pub(super) retry_wait: Option<Duration>,
    /// The same for its compensation's next attempt.
    pub(super) undo_wait: Option<Duration>,
    /// A resumed run's attempts of the action made before the operator's
    /// resume (`Record::attempts` counts from there): in the report.
    pub(super) earlier_attempts: u32,
    /// The same for its compensation.
    pub(super) earlier_compensation_attempts: u32,
    /// A recovered run's time its log shows the action took before the
    /// run (see [`ResumeStep::took`](crate::journal::ResumeStep)): the
    /// report adds it to the run's own.
    pub(super) took: Duration,
    /// The same for its compensation.
    pub(super) undo_took: Duration,
}

/// What a run changes as it goes. Lives in the run's future; nothing of it
/// is in the definition.
pub(super) struct State<'a> {
    pub(super) records: Records<'a>,
    /// One per step once a step failed for good or a rollback started;
    /// empty (no allocation) until then.
    pub(super) extra: Vec<Extra>,
    /// The last clock reading: the end of one step is the start of the
    /// next, so each step costs one clock read.
    pub(super) mark: Instant,
    pub(super) status: ExecutionStatus,
    pub(super) cancel_ignored: bool,
    /// Whether a pivot succeeded, or may have taken effect (an attempt a
    /// crash cut off), before this run started (a recovered or resumed
    /// run's log says so): a cancellation is then ignored from the first
    /// step on, and the pivot, if cut off, runs again.
    pub(super) pivot_done: bool,
    /// A recovered run's time its log shows the execution took before the
    /// run: the report adds it to the run's own.
    pub(super) took: Duration,
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
pub(super) enum Records<'a> {
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
    pub(super) fn new<C, D>(
        saga: &SagaInner<C, D>,
        started: Instant,
        lent: Option<&'a mut [Record]>,
    ) -> Self {
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
            pivot_done: false,
            took: Duration::ZERO,
        }
    }

    /// Takes the end of a step's action; returns its error if it stops
    /// the run.
    #[inline(always)]
    pub(super) fn step_ended(
        &mut self,
        index: usize,
        result: Result<Ended, Halt>,
    ) -> Option<(usize, StepError)> {
        match result {
            Ok(end) => {
                self.mark = end.at;
                if let Some(message) = end.recovered {
                    self.extra()[index].last_error = Some(message.into());
                }
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

    /// Whether every step in `range` (a node's) has succeeded: a
    /// recovered run's node its log shows done.
    pub(super) fn node_done(&self, range: std::ops::Range<usize>) -> bool {
        self.records[range]
            .iter()
            .all(|record| record.status == StepStatus::Succeeded)
    }

    /// Every step's [`Extra`], allocated the first time.
    pub(super) fn extra(&mut self) -> &mut [Extra] {
        if self.extra.is_empty() {
            // Collected (one allocation of the exact size) rather than
            // resized (the vector's out-of-line growth path).
            self.extra = self.records.iter().map(|_| Extra::default()).collect();
        }
        &mut self.extra
    }

    pub(super) fn failure<C, D>(
        &self,
        saga: &SagaInner<C, D>,
        index: usize,
        compensation: bool,
        error: &StepError,
    ) -> Failure {
        Failure {
            step: saga.steps[index].name.clone(),
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
            permanent: error.is_permanent(),
        }
    }

    /// Takes the state a log recorded; returns where its rollback starts
    /// if it was rolling back.
    pub(super) fn resume<C, D>(
        &mut self,
        saga: &SagaInner<C, D>,
        resume: Resume,
    ) -> Option<Box<Stop>> {
        let rare = resume.steps.iter().any(|step| {
            step.compensation_attempts > 0
                || step.earlier_attempts > 0
                || step.earlier_compensation_attempts > 0
                || step.last_error.is_some()
                || step.cut_off
                || step.retry_due.is_some()
                || step.undo_retry_due.is_some()
                || !step.took.is_zero()
                || !step.undo_took.is_zero()
        });
        if rare {
            self.extra();
        }
        // The first failure logged as final keeps its causes and marks for
        // `failed_for_good`.
        let failed_detail = resume
            .steps
            .iter()
            .find(|step| step.status == StepStatus::Failed)
            .and_then(|step| step.last_detail.clone());
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
                extra.earlier_attempts = step.earlier_attempts;
                extra.earlier_compensation_attempts = step.earlier_compensation_attempts;
                extra.last_error = step.last_error;
                extra.cut_off = step.cut_off;
                extra.took = step.took;
                extra.undo_took = step.undo_took;
                // Read off the wall clock now, as the run takes the
                // execution over: the wait is on the run's own clock.
                extra.retry_wait = step.retry_due.map(|due| due.remaining_now());
                extra.undo_wait = step.undo_retry_due.map(|due| due.remaining_now());
            }
        }
        self.cancel_ignored = resume.cancel_ignored;
        self.took = resume.took;
        self.pivot_done = saga
            .steps
            .iter()
            .zip(self.records.iter())
            .any(|(step, record)| {
                step.pivot
                    && (record.status == StepStatus::Succeeded
                        || record.outcome == Outcome::Unknown)
            });
        let ResumePhase::Rollback { cause } = resume.phase else {
            return self.failed_for_good(saga, failed_detail.as_deref());
        };
        self.status = ExecutionStatus::Compensating;
        Some(Box::new(match cause {
            Some((index, cause)) => Stop::Failed {
                index,
                error: LoggedError::from_event(
                    &cause.message,
                    cause.outcome_unknown,
                    cause.detail.as_deref(),
                )
                .into_step_error(),
            },
            None => Stop::Cancelled,
        }))
    }

    /// Where a recovered run going forward stops at once: a step whose
    /// failure the log recorded as final (not to be retried), cut off
    /// before the rollback or the end it led to was logged. The decision
    /// logged is followed, never taken again under this build's rules: the
    /// step is not run again, and the run goes where that failure leads
    /// (as [`forward`](super::forward::forward) decides for a live one).
    fn failed_for_good<C, D>(
        &mut self,
        saga: &SagaInner<C, D>,
        detail: Option<&str>,
    ) -> Option<Box<Stop>> {
        let index = self
            .records
            .iter()
            .position(|record| record.status == StepStatus::Failed)?;
        let message = self
            .extra
            .get(index)
            .and_then(|extra| extra.last_error.clone())
            .unwrap_or_default();
        let step = &saga.steps[index];
        let unknown = self.records[index].outcome == Outcome::Unknown;
        let error = LoggedError::from_event(&message, unknown, detail).into_step_error();
        let after_pivot = step.kind == StepKind::Retriable;
        Some(Box::new(if after_pivot || (step.pivot && unknown) {
            let node = saga
                .nodes
                .iter()
                .position(|node| node.range().contains(&index))
                .unwrap_or_default();
            Stop::Stuck { node, index, error }
        } else {
            self.status = ExecutionStatus::Compensating;
            Stop::Failed { index, error }
        }))
    }

    /// The public report of the run so far. The steps' last errors move
    /// into it: it is made once, when the run ends.
    pub(super) fn report<C, D>(
        &mut self,
        env: &Env<'_, C, D>,
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
            saga: env.saga.name.clone(),
            execution_id: env.id.clone(),
            status,
            steps,
            cancel_ignored: self.cancel_ignored,
            duration: self.took.saturating_add(duration),
        }
    }

    pub(super) fn finish<C, D>(
        &mut self,
        env: &Env<'_, C, D>,
        status: ExecutionStatus,
    ) -> SagaReport {
        self.status = status;
        let elapsed = env.since_start(self.mark);
        // A durable run has finished once its end is in the log: it tells
        // then (`finish_durable`), and not if that write fails.
        if env.durable.is_none() {
            env.emit(|| SagaEvent::SagaFinished { status, elapsed });
        }
        self.report(env, status, elapsed)
    }
}

/// The public report of one step, from its record. Its last error moves
/// into it.
#[inline(always)]
pub(super) fn step_report<C, D>(
    step: &StepDef<C, D>,
    record: &Record,
    extra: Option<&mut Extra>,
) -> StepReport {
    let (earlier_attempts, compensation_attempts, took, compensation_duration, last_error) =
        match extra {
            Some(extra) => (
                extra.earlier_attempts,
                extra.earlier_compensation_attempts + extra.compensation_attempts,
                extra.took,
                extra.undo_took.saturating_add(extra.compensation_duration),
                extra.last_error.take(),
            ),
            None => (0, 0, Duration::ZERO, Duration::ZERO, None),
        };
    StepReport {
        name: step.name.clone(),
        kind: step.kind,
        status: record.status,
        outcome: record.outcome,
        attempts: earlier_attempts + record.attempts,
        compensation_attempts,
        duration: took.saturating_add(record.duration),
        compensation_duration,
        last_error,
    }
}
