//! Replay: a log folded back into each step's state, for a recovered run
//! and for a report rebuilt from the log.

use std::time::Duration;

use super::{EngineError, SagaEngine, Shape, WaitError, kind_from_label};
use crate::error::{Failure, SagaError, StuckPhase};
use crate::id::ExecutionId;
use crate::journal::{LoggedCause, ResumePhase, ResumeStep, RetryDue};
use crate::logged::{LoggedError, read_outcome, stopped_before_run};
use crate::name::Name;
use crate::report::{ExecutionStatus, Outcome, SagaReport, StepReport, StepStatus};
use crate::step::StepKind;
use crate::store::{Event, EventKind, ExecutionRecord, LoggedSpans, StoreError, logged_durations};

impl SagaEngine {
    /// The report of a finished execution, rebuilt from its log (read
    /// without its contexts, which a report does not hold) and its
    /// definition's shape (the registered one's, or else the stored one).
    pub(super) async fn rebuilt_report(
        &self,
        record: &ExecutionRecord,
    ) -> Result<SagaReport, EngineError> {
        let events = self.inner.store.events_without_contexts(&record.id).await?;
        self.report_from_log(record, &events).await
    }

    /// [`rebuilt_report`](Self::rebuilt_report) from a log read already.
    async fn report_from_log(
        &self,
        record: &ExecutionRecord,
        events: &[Event],
    ) -> Result<SagaReport, EngineError> {
        let registered = self
            .registry()
            .by_fingerprint
            .get(&record.fingerprint)
            .cloned();
        let stored;
        let shape = match &registered {
            Some(runner) => runner.shape(),
            None => {
                stored = self.stored_shape(record).await?;
                &stored
            }
        };
        let folded = fold(&record.id, shape.steps.len(), events)?;
        let rolled_back = matches!(folded.phase, ResumePhase::Rollback { .. });
        // Durations by the log's timestamps; zero where a span is missing
        // or the clock went back.
        let since = |ms: Option<i64>| Duration::from_millis(ms.map_or(0, |ms| ms.max(0) as u64));
        let spans = logged_durations(shape.steps.len(), events);
        let run = events
            .first()
            .zip(events.last())
            .map(|(first, last)| last.at_ms - first.at_ms);
        let steps = shape
            .steps
            .iter()
            .zip(folded.steps)
            .zip(spans)
            .map(|((s, f), (action, undo))| StepReport {
                name: s.name.clone().into(),
                kind: kind_from_label(&s.kind),
                // A rollback passes over a step with nothing to undo that
                // took effect (the log has no event for it), as a live
                // rollback reports it (whether it succeeded or its outcome is
                // unknown).
                status: if rolled_back
                    && kind_from_label(&s.kind) == StepKind::NoUndo
                    && f.outcome.needs_compensation()
                {
                    StepStatus::Skipped
                } else {
                    f.status
                },
                outcome: f.outcome,
                // The fold counts an attempt a crash cut off as not made
                // (a resume makes it again, as the same attempt); it was
                // started, and the report counts it, and those made before
                // an operator's resume.
                attempts: f.earlier_attempts + f.attempts + u32::from(f.cut_off),
                compensation_attempts: f.earlier_compensation_attempts
                    + f.compensation_attempts
                    + u32::from(f.undo_cut_off),
                duration: since(action),
                compensation_duration: since(undo),
                last_error: f.last_error,
            })
            .collect();
        Ok(SagaReport {
            saga: record.saga.clone().into(),
            execution_id: record.id.clone(),
            status: record.status,
            steps,
            // A request that came with the last commit was not logged as
            // ignored: the execution completed with it on file.
            cancel_ignored: folded.cancel_ignored
                || (record.status == ExecutionStatus::Completed && record.cancel_requested),
            duration: since(run),
        })
    }

    /// The shape stored with a definition this engine has not registered.
    async fn stored_shape(&self, record: &ExecutionRecord) -> Result<Shape, EngineError> {
        let store = &self.inner.store;
        let Some(definition) = store.definition(&record.fingerprint).await? else {
            return Err(StoreError::BadRecord {
                store: store.describe(),
                what: format!("execution `{}`", record.id),
                detail: format!("its definition {} is not stored", record.fingerprint),
            }
            .into());
        };
        serde_json::from_str::<Shape>(&definition.shape).map_err(|e| {
            StoreError::BadRecord {
                store: store.describe(),
                what: format!("the definition {}", record.fingerprint),
                detail: e.to_string(),
            }
            .into()
        })
    }
}

/// Whether the last event of a log is a pending resume request.
pub(super) fn resume_requested(events: &[Event]) -> bool {
    events.last().map(|e| e.kind) == Some(EventKind::ResumeRequested)
}

/// What a log says of an execution.
pub(super) struct Folded {
    pub(super) steps: Vec<ResumeStep>,
    pub(super) outputs: Vec<Option<String>>,
    pub(super) context: Option<String>,
    pub(super) phase: ResumePhase,
    /// Whether the log records a cancellation as ignored.
    pub(super) cancel_ignored: bool,
}

/// Reads a log: each step's state, outputs, the latest context and the
/// direction. A step or compensation that started and never ended is set
/// up to run again as the same attempt, its outcome unknown. After an
/// operator's resume, what failed for good gets a fresh budget.
pub(super) fn fold(
    id: &ExecutionId,
    steps: usize,
    events: &[Event],
) -> Result<Folded, EngineError> {
    let mut folded = Folded {
        steps: (0..steps)
            .map(|_| ResumeStep {
                status: StepStatus::Pending,
                outcome: Outcome::NotStarted,
                attempts: 0,
                compensation_attempts: 0,
                earlier_attempts: 0,
                earlier_compensation_attempts: 0,
                last_error: None,
                last_detail: None,
                cut_off: false,
                undo_cut_off: false,
                retry_due: None,
                undo_retry_due: None,
                took: Duration::ZERO,
                undo_took: Duration::ZERO,
            })
            .collect(),
        outputs: vec![None; steps],
        context: None,
        phase: ResumePhase::Forward,
        cancel_ignored: false,
    };
    let mut in_flight = vec![false; steps];
    for event in events {
        if event.context.is_some() {
            folded.context.clone_from(&event.context);
        }
        let index = match event.step {
            Some(i) if (i as usize) < steps => Some(i as usize),
            Some(i) => {
                return Err(EngineError::BadLog {
                    execution_id: id.clone(),
                    detail: format!(
                        "event {} names step {i}, but the saga has {steps} steps",
                        event.seq
                    ),
                });
            }
            None => None,
        };
        let step = index.map(|i| (&mut folded.steps[i], &mut in_flight[i]));
        match (event.kind, step) {
            (EventKind::StepStarted, Some((s, flying))) => {
                // Started again with no end of the attempt before: a crash
                // cut that one off, and it may have taken effect.
                if *flying && s.status == StepStatus::Running {
                    s.outcome = Outcome::Unknown;
                }
                s.status = StepStatus::Running;
                s.attempts = event.attempt;
                s.retry_due = None;
                *flying = true;
            }
            (EventKind::StepSucceeded, Some((s, flying))) => {
                s.status = StepStatus::Succeeded;
                s.outcome = Outcome::Applied;
                s.attempts = event.attempt;
                *flying = false;
                folded.outputs[index.unwrap_or_default()].clone_from(&event.output);
            }
            (EventKind::StepFailed, Some((s, flying))) => {
                *flying = false;
                s.attempts = event.attempt;
                if event.outcome_unknown {
                    s.outcome = Outcome::Unknown;
                } else if s.outcome != Outcome::Unknown {
                    s.outcome = Outcome::NotApplied;
                }
                s.last_error.clone_from(&event.error);
                s.last_detail.clone_from(&event.detail);
                s.retry_due = RetryDue::of(event);
                if !event.will_retry {
                    s.status = StepStatus::Failed;
                }
            }
            (EventKind::RollbackStarted, _) => {
                // A step whose start is followed by the rollback without an
                // end of its own was either stopped by a cancellation before
                // it ran (the start's commit brought the request; the
                // cancellation's rollback names it), or cut off by a crash
                // before a recovery rolled back: it may have taken effect,
                // and it is not run again.
                let not_run = match index {
                    None => stopped_before_run(event.detail.as_deref()),
                    Some(_) => Vec::new(),
                };
                for (i, (s, flying)) in folded.steps.iter_mut().zip(&mut in_flight).enumerate() {
                    s.retry_due = None;
                    if s.status != StepStatus::Running {
                        continue;
                    }
                    if !*flying {
                        // Its retry was due (or an operator's resume gave
                        // it a fresh budget): the rollback stopped it.
                        s.status = if s.attempts == 0 {
                            StepStatus::Pending
                        } else {
                            StepStatus::Failed
                        };
                        continue;
                    }
                    *flying = false;
                    if not_run.contains(&(i as u32)) {
                        s.attempts = s.attempts.saturating_sub(1);
                        s.status = if s.attempts == 0 {
                            StepStatus::Pending
                        } else {
                            StepStatus::Failed
                        };
                    } else {
                        s.outcome = Outcome::Unknown;
                        s.status = StepStatus::Failed;
                    }
                }
                folded.phase = ResumePhase::Rollback {
                    cause: index.map(|i| {
                        (
                            i,
                            LoggedCause {
                                message: event.error.clone().unwrap_or_default(),
                                outcome_unknown: event.outcome_unknown,
                                detail: event.detail.clone(),
                            },
                        )
                    }),
                };
            }
            (EventKind::CompensationStarted, Some((s, flying))) => {
                s.status = StepStatus::Compensating;
                s.compensation_attempts = event.attempt;
                s.undo_retry_due = None;
                *flying = true;
            }
            (EventKind::CompensationSucceeded, Some((s, flying))) => {
                s.status = StepStatus::Compensated;
                *flying = false;
            }
            (EventKind::CompensationFailed, Some((s, flying))) => {
                *flying = false;
                s.compensation_attempts = event.attempt;
                s.last_error.clone_from(&event.error);
                s.last_detail.clone_from(&event.detail);
                s.undo_retry_due = RetryDue::of(event);
                if !event.will_retry {
                    s.status = StepStatus::CompensationFailed;
                }
            }
            (EventKind::CancelIgnored, _) => folded.cancel_ignored = true,
            (EventKind::Finished, _) => {
                // A retry that was due when the run ended (a sibling's
                // failure stopped it) was never run.
                for (s, flying) in folded.steps.iter_mut().zip(&in_flight) {
                    (s.retry_due, s.undo_retry_due) = (None, None);
                    if s.status == StepStatus::Running && !*flying {
                        s.status = if s.attempts == 0 {
                            StepStatus::Pending
                        } else {
                            StepStatus::Failed
                        };
                    }
                }
            }
            (EventKind::Resumed, _) => {
                // Exactly what the resumed phase runs again: going forward,
                // the steps that failed for good; rolling back, the
                // compensations that did (the step whose failure started
                // the rollback stays failed: it is not run again).
                // A fresh budget: no backoff is owed (nor can one be
                // pending: the run ended before the resume).
                let forward = matches!(folded.phase, ResumePhase::Forward);
                for s in &mut folded.steps {
                    (s.retry_due, s.undo_retry_due) = (None, None);
                    match s.status {
                        StepStatus::Failed if forward => {
                            s.status = StepStatus::Running;
                            s.earlier_attempts += s.attempts;
                            s.attempts = 0;
                        }
                        StepStatus::CompensationFailed if !forward => {
                            s.status = StepStatus::Compensating;
                            s.earlier_compensation_attempts += s.compensation_attempts;
                            s.compensation_attempts = 0;
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    // Cut off by a crash: run the same attempt again; it may have taken
    // effect, so its outcome is unknown (sticky, as for a timeout).
    for (s, flying) in folded.steps.iter_mut().zip(in_flight) {
        if !flying {
            continue;
        }
        match s.status {
            StepStatus::Running => {
                s.attempts = s.attempts.saturating_sub(1);
                s.outcome = Outcome::Unknown;
                s.cut_off = true;
            }
            StepStatus::Compensating => {
                s.compensation_attempts = s.compensation_attempts.saturating_sub(1);
                s.undo_cut_off = true;
            }
            _ => {}
        }
    }
    Ok(folded)
}

/// Sets each step's [`took`](ResumeStep::took) and
/// [`undo_took`](ResumeStep::undo_took), the time a log shows before a run
/// takes its execution over at `now_ms` (the wall clock, never before the
/// log's last event); returns the execution's. By the rules of the report
/// [`SagaEngine::report`] rebuilds from the whole log
/// ([`logged_durations`]): a step's action and compensation from their
/// first start to their last end, less the time the execution sat ended
/// until an operator's resume, and to `now_ms` for one the run carries on
/// (still `Running` or `Compensating` after the fold); the execution from
/// its first event. The run's report adds its own time to them, so that
/// `wait` gives what `report(id)` does once the run ended.
pub(super) fn took_before(steps: &mut [ResumeStep], events: &[Event], now_ms: i64) -> Duration {
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Duration::ZERO;
    };
    let now = now_ms.max(last.at_ms);
    let ms = |ms: i64| Duration::from_millis(ms.max(0) as u64);
    let logged = LoggedSpans::of(steps.len(), events);
    let took = |(start, end): (Option<i64>, Option<i64>)| match (start, end) {
        (Some(a), Some(b)) => ms(logged.took(a, b)),
        _ => Duration::ZERO,
    };
    for (step, [action, undo]) in steps.iter_mut().zip(logged.spans.iter().copied()) {
        let goes_on = step.status == StepStatus::Running;
        step.took = took((action.0, if goes_on { Some(now) } else { action.1 }));
        let goes_on = step.status == StepStatus::Compensating;
        step.undo_took = took((undo.0, if goes_on { Some(now) } else { undo.1 }));
    }
    ms(now - first.at_ms)
}

impl SagaEngine {
    /// How a finished execution ended, as [`wait`](SagaEngine::wait)
    /// returns it: `report` (the run's own, or one rebuilt from the log),
    /// and for an execution that did not complete, the [`SagaError`] its
    /// `finished` event logged.
    pub(super) async fn outcome(
        &self,
        record: &ExecutionRecord,
        report: Option<SagaReport>,
    ) -> Result<SagaReport, WaitError> {
        // A completed or abandoned execution has no logged error to read.
        let logged_error = !matches!(
            record.status,
            ExecutionStatus::Completed | ExecutionStatus::Abandoned
        );
        // The log, read once (its contexts left out): for the report, the
        // logged error, or both.
        let events = if report.is_none() || logged_error {
            self.inner.store.events_without_contexts(&record.id).await?
        } else {
            Vec::new()
        };
        let report = match report {
            Some(report) => report,
            None => self.report_from_log(record, &events).await?,
        };
        match record.status {
            ExecutionStatus::Completed => return Ok(report),
            ExecutionStatus::Abandoned => {
                return Err(SagaError::Abandoned {
                    saga: Name::from(record.saga.clone()),
                    report: Box::new(report),
                }
                .into());
            }
            _ => {}
        }
        let logged = events
            .iter()
            .rev()
            .find(|e| e.kind == EventKind::Finished)
            .and_then(|e| e.detail.as_deref())
            .and_then(read_outcome);
        Err(match logged {
            Some(outcome) => outcome.into_error(&record.saga, report),
            None => from_old_log(
                Name::from(record.saga.clone()),
                record.status,
                &events,
                report,
            ),
        }
        .into())
    }
}

/// The error of an execution whose `finished` event says no more than the
/// status (a log written before 0.2.0, or a crash loop's end): the step
/// and message of the failure that decided it, as far as the log records
/// them. A rollback's, as a live one names them: the failure that started
/// it first among the failures, then the compensations that failed for
/// good; `remaining`, the compensation it is stuck at, then every other
/// one still owed (a step that took effect, or may have, with an undo
/// that has not succeeded), last step first.
fn from_old_log(
    saga: Name,
    status: ExecutionStatus,
    events: &[Event],
    report: SagaReport,
) -> SagaError {
    let name = |step: Option<u32>| -> Name {
        step.and_then(|i| report.steps.get(i as usize))
            .map_or_else(|| Name::from_static(""), |s| s.name.clone())
    };
    let error_of = |e: &Event| {
        LoggedError::from_event(
            e.error.as_deref().unwrap_or_default(),
            e.outcome_unknown,
            e.detail.as_deref(),
        )
    };
    if status == ExecutionStatus::Stuck {
        let last = events.iter().rev().find(|e| {
            matches!(
                e.kind,
                EventKind::StepFailed | EventKind::CompensationFailed
            ) && !e.will_retry
        });
        let (step, phase, error, attempt, compensation) = match last {
            Some(e) => (
                name(e.step),
                if e.kind == EventKind::CompensationFailed {
                    StuckPhase::Rollback
                } else {
                    StuckPhase::Forward
                },
                error_of(e),
                e.attempt,
                e.kind == EventKind::CompensationFailed,
            ),
            None => (
                Name::from_static(""),
                StuckPhase::Forward,
                LoggedError::from_event("", false, None),
                0,
                false,
            ),
        };
        let first = report
            .steps
            .iter()
            .position(|s| s.name == step)
            .unwrap_or_default();
        let remaining = match phase {
            StuckPhase::Forward => report
                .steps
                .iter()
                .enumerate()
                .filter(|(i, s)| *i >= first && s.status != StepStatus::Succeeded)
                .map(|(_, s)| s.name.clone())
                .collect(),
            StuckPhase::Rollback => {
                let owed = |s: &&StepReport| {
                    s.name != step
                        && s.kind == StepKind::Compensable
                        && s.outcome.needs_compensation()
                        && s.status != StepStatus::Compensated
                };
                std::iter::once(step.clone())
                    .chain(
                        report
                            .steps
                            .iter()
                            .rev()
                            .filter(owed)
                            .map(|s| s.name.clone()),
                    )
                    .collect()
            }
        };
        let failure = |e: &Event, compensation: bool| {
            let error = error_of(e);
            Failure {
                step: name(e.step),
                compensation,
                attempt: e.attempt,
                message: error.message().to_owned(),
                outcome_unknown: error.is_outcome_unknown(),
                permanent: error.is_permanent(),
            }
        };
        let mut failures = Vec::new();
        if phase == StuckPhase::Rollback {
            // Since the run that rolled back (or an operator's resume of it).
            let since = events
                .iter()
                .rposition(|e| e.kind == EventKind::Resumed)
                .map_or(0, |i| i + 1);
            let cause = events
                .iter()
                .rev()
                .find(|e| e.kind == EventKind::RollbackStarted && e.step.is_some());
            if let Some(cause) = cause {
                // The cause's own event carries no attempt: its step's
                // last failure does.
                let attempt = events
                    .iter()
                    .rev()
                    .find(|e| e.kind == EventKind::StepFailed && e.step == cause.step)
                    .map_or(0, |e| e.attempt);
                failures.push(Failure {
                    attempt,
                    ..failure(cause, false)
                });
            }
            let earlier = events[since..].iter().filter(|e| {
                e.kind == EventKind::CompensationFailed
                    && !e.will_retry
                    && name(e.step) != step
                    && e.step
                        .and_then(|i| report.steps.get(i as usize))
                        .map(|s| s.status)
                        == Some(StepStatus::CompensationFailed)
            });
            failures.extend(earlier.map(|e| failure(e, true)));
        }
        failures.push(Failure {
            step: step.clone(),
            compensation,
            attempt,
            message: error.message().to_owned(),
            outcome_unknown: error.is_outcome_unknown(),
            permanent: error.is_permanent(),
        });
        return SagaError::Stuck {
            saga,
            failures,
            step,
            phase,
            error: Box::new(error),
            remaining,
            report: Box::new(report),
        };
    }
    let cause = events
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::RollbackStarted && e.step.is_some());
    match (status, cause) {
        (ExecutionStatus::Compensated, Some(e)) => SagaError::Compensated {
            saga,
            step: name(e.step),
            error: Box::new(error_of(e)),
            report: Box::new(report),
        },
        _ => SagaError::Cancelled {
            saga,
            report: Box::new(report),
        },
    }
}
