//! Crash loops: a step (or compensation) whose every run takes its process
//! down would be run again at every take-over, forever. Each take-over
//! runs a cut-off attempt again as the same attempt and logs its start
//! anew, so the log itself counts the crashes: the starts of one attempt
//! with no end between them. At the limit, the take-over ends the
//! execution stuck instead of running it.
//!
//! The starts a run the store stopped was inside (an end could not be
//! written: a full disk, a database restarting; a group's branches are
//! in flight together) were cut off by no crash; the engine that saw it
//! knows ([`Cut`]) and does not count them, so that a store
//! that fails and comes back over and over does not end its executions
//! stuck as crash loops. An engine that did not see it (another process,
//! after this one died) counts it as any start without an end.

use crate::store::{Event, EventKind};

/// A step attempt started `starts` times without an end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CrashLoop {
    /// The step's index.
    pub(super) step: usize,
    /// Whether it is the step's compensation, rather than its action.
    pub(super) compensation: bool,
    /// The attempt.
    pub(super) attempt: u32,
    /// How many times it was started without an end.
    pub(super) starts: u32,
}

impl CrashLoop {
    /// What the log and the report say of it.
    pub(super) fn message(&self, name: &str) -> String {
        let what = if self.compensation {
            "the compensation of step"
        } else {
            "step"
        };
        format!(
            "{what} `{name}` was cut off {} times: its attempt {} started {} times and never ended (its process crashed or was shut down before it ended, or lost its lease while it ran); resume it once the cause is fixed",
            self.starts, self.attempt, self.starts
        )
    }

    /// The failure event that ends the attempt, at `seq`.
    pub(super) fn failure(&self, seq: u64, message: String) -> Event {
        let kind = if self.compensation {
            EventKind::CompensationFailed
        } else {
            EventKind::StepFailed
        };
        let mut event = Event::new(seq, kind);
        event.step = u32::try_from(self.step).ok();
        event.attempt = self.attempt;
        event.error = Some(message);
        // It may have taken effect before the crash.
        event.outcome_unknown = !self.compensation;
        event.will_retry = false;
        event
    }
}

/// A step attempt's start that a store failure cut off, seen by this
/// engine: the start logged at `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cut {
    seq: u64,
}

impl Cut {
    /// The starts of `events` (a log of `steps` steps) logged after `since`
    /// and still in flight at its end: those a run launched from the log
    /// up to `since`, and stopped by its store (its next write refused),
    /// was inside. Every one of them, not only the last one logged: a
    /// group's branches, or its compensations, are in flight together.
    pub(super) fn in_flight(events: &[Event], steps: usize, since: u64) -> Vec<Cut> {
        flying(events, steps, &[])
            .into_iter()
            .flatten()
            .flatten()
            .filter(|f| f.last > since)
            .map(|f| Cut { seq: f.last })
            .collect()
    }
}

/// An attempt in flight: started `starts` times (the ones in no cut) with
/// no end between them, the last time at `last`.
#[derive(Debug, Clone, Copy)]
struct Flying {
    attempt: u32,
    starts: u32,
    last: u64,
}

/// Per step: the action's and the compensation's attempt in flight at the
/// end of `events`, the starts in `cuts` not counted.
fn flying(events: &[Event], steps: usize, cuts: &[Cut]) -> Vec<[Option<Flying>; 2]> {
    let mut flying: Vec<[Option<Flying>; 2]> = vec![[None; 2]; steps];
    for event in events {
        match event.kind {
            EventKind::RollbackStarted => {
                flying.iter_mut().for_each(|f| f[0] = None);
                continue;
            }
            EventKind::Resumed => {
                flying.iter_mut().for_each(|f| *f = [None; 2]);
                continue;
            }
            _ => {}
        }
        let Some(step) = event.step.map(|s| s as usize).filter(|&s| s < steps) else {
            continue;
        };
        match event.kind {
            EventKind::StepStarted | EventKind::CompensationStarted => {
                let which = usize::from(event.kind == EventKind::CompensationStarted);
                let counted = u32::from(!cuts.contains(&Cut { seq: event.seq }));
                let slot = &mut flying[step][which];
                let starts = match *slot {
                    Some(f) if f.attempt == event.attempt => f.starts.saturating_add(counted),
                    _ => counted,
                };
                *slot = Some(Flying {
                    attempt: event.attempt,
                    starts,
                    last: event.seq,
                });
            }
            EventKind::StepSucceeded | EventKind::StepFailed => flying[step][0] = None,
            EventKind::CompensationSucceeded | EventKind::CompensationFailed => {
                flying[step][1] = None;
            }
            _ => {}
        }
    }
    flying
}

/// The attempts of a log of `steps` steps that were started at least
/// `limit` times without an end, and are still in flight at its end;
/// the starts in `cuts` (a store failure's, not a crash's) not counted.
///
/// Counted per step and per direction: a start of the same attempt as the
/// last one, with no end between them, counts one more; an end, another
/// attempt, a rollback (which tells that an unended start was stopped by
/// a cancellation before it ran) or an operator's resume start over.
pub(super) fn crash_loops(
    events: &[Event],
    steps: usize,
    limit: u32,
    cuts: &[Cut],
) -> Vec<CrashLoop> {
    let mut loops = Vec::new();
    for (step, slots) in flying(events, steps, cuts).into_iter().enumerate() {
        for (which, slot) in slots.into_iter().enumerate() {
            match slot {
                Some(f) if f.starts >= limit => loops.push(CrashLoop {
                    step,
                    compensation: which == 1,
                    attempt: f.attempt,
                    starts: f.starts,
                }),
                _ => {}
            }
        }
    }
    loops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, step: Option<u32>, attempt: u32) -> Event {
        let mut event = Event::new(0, kind);
        event.step = step;
        event.attempt = attempt;
        event
    }

    fn started(step: u32, attempt: u32) -> Event {
        event(EventKind::StepStarted, Some(step), attempt)
    }

    #[test]
    fn the_starts_of_one_unended_attempt_are_counted() {
        let log = [
            started(0, 1),
            event(EventKind::StepSucceeded, Some(0), 1),
            started(1, 1),
            started(1, 1),
            started(1, 1),
        ];
        assert_eq!(
            crash_loops(&log, 2, 3, &[]),
            [CrashLoop {
                step: 1,
                compensation: false,
                attempt: 1,
                starts: 3
            }]
        );
        assert!(crash_loops(&log, 2, 4, &[]).is_empty());
        assert!(crash_loops(&log[..4], 2, 3, &[]).is_empty());
    }

    #[test]
    fn an_end_another_attempt_a_rollback_or_a_resume_start_over() {
        let failed = event(EventKind::StepFailed, Some(0), 1);
        let rollback = event(EventKind::RollbackStarted, None, 0);
        let resumed = event(EventKind::Resumed, None, 0);
        for cut in [failed, started(0, 2), rollback, resumed] {
            let log = [started(0, 1), started(0, 1), cut, started(0, 1)];
            let loops = crash_loops(&log, 1, 2, &[]);
            assert!(loops.is_empty(), "{loops:?}");
        }
    }

    #[test]
    fn compensations_are_counted_apart_from_actions() {
        let comp = |attempt| event(EventKind::CompensationStarted, Some(0), attempt);
        let log = [
            started(0, 1),
            event(EventKind::StepSucceeded, Some(0), 1),
            event(EventKind::RollbackStarted, Some(1), 0),
            comp(1),
            comp(1),
        ];
        let loops = crash_loops(&log, 2, 2, &[]);
        assert_eq!(loops.len(), 1);
        assert!(loops[0].compensation);
        assert_eq!(
            loops[0].message("s0"),
            "the compensation of step `s0` was cut off 2 times: its attempt 1 started 2 times and never ended (its process crashed or was shut down before it ended, or lost its lease while it ran); resume it once the cause is fixed"
        );
    }

    #[test]
    fn starts_a_store_failure_cut_off_are_not_counted() {
        let mut log = vec![started(0, 1), started(0, 1), started(0, 1)];
        for (seq, event) in log.iter_mut().enumerate() {
            event.seq = seq as u64 + 1;
        }
        let cut = Cut::in_flight(&log, 1, 2);
        assert_eq!(cut, [Cut { seq: 3 }]);
        assert_eq!(crash_loops(&log, 1, 3, &[]).len(), 1);
        // One of the three starts was cut off by the store: two crashes.
        assert!(crash_loops(&log, 1, 3, &cut).is_empty());
        assert_eq!(crash_loops(&log, 1, 2, &cut).len(), 1);
        // Three store failures, no crash.
        let three = [Cut { seq: 1 }, Cut { seq: 2 }, Cut { seq: 3 }];
        assert!(crash_loops(&log, 1, 1, &three).is_empty());
        // A cut of another start counts for nothing here.
        assert_eq!(crash_loops(&log, 1, 3, &[Cut { seq: 9 }]).len(), 1);
    }

    #[test]
    fn every_start_in_flight_after_the_run_s_launch_is_its_cut() {
        // A group of two branches and a step before it: the run launched
        // after seq 2 started both branches; the one before it ended.
        let mut log = vec![
            started(0, 1),
            event(EventKind::StepSucceeded, Some(0), 1),
            started(1, 1),
            started(2, 1),
        ];
        for (seq, event) in log.iter_mut().enumerate() {
            event.seq = seq as u64 + 1;
        }
        assert_eq!(Cut::in_flight(&log, 3, 2), [Cut { seq: 3 }, Cut { seq: 4 }]);
        // A start logged before the launch is not the run's.
        assert_eq!(Cut::in_flight(&log, 3, 3), [Cut { seq: 4 }]);
    }
}
