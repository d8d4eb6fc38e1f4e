//! The warning `wait` logs while the store cannot be reached: one per
//! engine every 30 s, saying how many of its waits retry, rather than one
//! per wait (150 callers waiting through a database restart logged 150
//! lines at its start and 150 more every 30 s).

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How often an engine warns while its waits retry.
const EVERY: Duration = Duration::from_secs(30);

/// The waits of an engine that retry through an outage.
#[derive(Debug, Default)]
pub(super) struct WaitOutage {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The waits retrying now.
    retrying: usize,
    /// When the last warning was logged.
    warned: Option<Instant>,
}

impl WaitOutage {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One wait retrying, until the guard is dropped (its read worked, or
    /// the wait ended or was dropped).
    pub(super) fn retrying(&self) -> Retrying<'_> {
        self.state().retrying += 1;
        Retrying {
            outage: self,
            failures: 0,
        }
    }
}

/// A wait counted as retrying.
pub(super) struct Retrying<'a> {
    outage: &'a WaitOutage,
    failures: u32,
}

impl Retrying<'_> {
    /// Another read of this wait failed: how many waits retry, if the
    /// warning is due. It is due at this wait's second failure in a row
    /// (250 ms in: by then every wait the outage caught counts itself,
    /// and a blip one retry rides out is not an outage), unless this
    /// engine warned less than 30 s ago.
    pub(super) fn failed(&mut self) -> Option<usize> {
        self.failures += 1;
        if self.failures < 2 {
            return None;
        }
        let mut state = self.outage.state();
        if state.warned.is_some_and(|at| at.elapsed() < EVERY) {
            return None;
        }
        state.warned = Some(Instant::now());
        Some(state.retrying)
    }
}

impl Drop for Retrying<'_> {
    fn drop(&mut self) {
        let mut state = self.outage.state();
        state.retrying = state.retrying.saturating_sub(1);
    }
}
