//! Crash loops: a step (or compensation) whose every run takes its process
//! down would be run again at every take-over, forever. Each take-over
//! runs a cut-off attempt again as the same attempt and logs its start
//! anew, so the log itself counts the crashes: the starts of one attempt
//! with no end between them. At the limit, the take-over ends the
//! execution stuck instead of running it.
//!
//! A start whose run the store stopped (its end could not be written: a
//! full disk, a database restarting) was cut off by no crash; the engine
//! that saw it knows ([`Cut`]) and does not count it, so that a store
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
/// engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cut {
    step: usize,
    compensation: bool,
    attempt: u32,
}

impl Cut {
    /// The last start of a step or a compensation in `events`, the one a
    /// run stopped by its store (its next write refused) was inside.
    pub(super) fn last_start(events: &[Event]) -> Option<Cut> {
        events.iter().rev().find_map(|e| {
            let compensation = match e.kind {
                EventKind::StepStarted => false,
                EventKind::CompensationStarted => true,
                _ => return None,
            };
            Some(Cut {
                step: e.step? as usize,
                compensation,
                attempt: e.attempt,
            })
        })
    }
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
    // Per step: the action's and the compensation's attempt in flight,
    // and how many times it was started.
    let mut flying: Vec<[Option<(u32, u32)>; 2]> = vec![[None; 2]; steps];
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
                let slot = &mut flying[step][which];
                *slot = match *slot {
                    Some((attempt, starts)) if attempt == event.attempt => {
                        Some((attempt, starts.saturating_add(1)))
                    }
                    _ => Some((event.attempt, 1)),
                };
            }
            EventKind::StepSucceeded | EventKind::StepFailed => flying[step][0] = None,
            EventKind::CompensationSucceeded | EventKind::CompensationFailed => {
                flying[step][1] = None;
            }
            _ => {}
        }
    }
    let mut loops = Vec::new();
    for (step, slots) in flying.into_iter().enumerate() {
        for (which, slot) in slots.into_iter().enumerate() {
            let compensation = which == 1;
            let cut = |(attempt, starts): (u32, u32)| {
                let by_store = cuts
                    .iter()
                    .filter(|c| {
                        (c.step, c.compensation, c.attempt) == (step, compensation, attempt)
                    })
                    .count();
                (attempt, starts.saturating_sub(by_store as u32))
            };
            match slot.map(cut) {
                Some((attempt, starts)) if starts >= limit => loops.push(CrashLoop {
                    step,
                    compensation,
                    attempt,
                    starts,
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
        let log = [started(0, 1), started(0, 1), started(0, 1)];
        let cut = Cut::last_start(&log).unwrap();
        assert_eq!(crash_loops(&log, 1, 3, &[]).len(), 1);
        // One of the three starts was cut off by the store: two crashes.
        assert!(crash_loops(&log, 1, 3, &[cut]).is_empty());
        assert_eq!(crash_loops(&log, 1, 2, &[cut]).len(), 1);
        // Three store failures, no crash.
        assert!(crash_loops(&log, 1, 1, &[cut, cut, cut]).is_empty());
        // A cut of another attempt counts for nothing here.
        let other = Cut::last_start(&[started(0, 2)]).unwrap();
        assert_eq!(crash_loops(&log, 1, 3, &[other]).len(), 1);
    }
}
