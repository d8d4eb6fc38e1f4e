//! Time, injectable: the engine reads durations and sleeps between retries
//! through a [`Clock`], so tests of backoff do not sleep.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::step::BoxFuture;

/// A monotonic clock and a way to wait.
///
/// The default is [`SystemClock`]. Give a run another one with
/// [`RunOptions::with_clock`](crate::RunOptions::with_clock).
pub trait Clock: Send + Sync + 'static {
    /// The current instant (monotonic).
    fn now(&self) -> Instant;
    /// Waits `duration` inside an async run.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
    /// Waits `duration` inside a blocking run.
    fn sleep_blocking(&self, duration: Duration);
}

/// A shared clock is a clock: an `Arc<dyn Clock>` (or `Arc<TestClock>`)
/// kept by a service or a test can be given where a clock is asked.
impl<T: Clock + ?Sized> Clock for std::sync::Arc<T> {
    fn now(&self) -> Instant {
        (**self).now()
    }
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        (**self).sleep(duration)
    }
    fn sleep_blocking(&self, duration: Duration) {
        (**self).sleep_blocking(duration)
    }
}

/// The real clock: [`Instant::now`], tokio's timer, [`std::thread::sleep`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }

    fn sleep_blocking(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// A virtual clock for tests: sleeping returns at once and moves the clock
/// forward, and every sleep is recorded.
///
/// ```
/// use std::time::Duration;
/// use saga_core::clock::{Clock, TestClock};
///
/// let clock = TestClock::new();
/// let start = clock.now();
/// clock.sleep_blocking(Duration::from_secs(5));
/// assert_eq!(clock.now() - start, Duration::from_secs(5));
/// assert_eq!(clock.sleeps(), vec![Duration::from_secs(5)]);
/// ```
#[derive(Debug, Clone)]
pub struct TestClock {
    inner: Arc<Mutex<TestClockState>>,
}

#[derive(Debug)]
struct TestClockState {
    now: Instant,
    sleeps: Vec<Duration>,
}

impl Default for TestClock {
    fn default() -> Self {
        Self::new()
    }
}

impl TestClock {
    /// A clock starting at the real current instant.
    pub fn new() -> Self {
        TestClock {
            inner: Arc::new(Mutex::new(TestClockState {
                now: Instant::now(),
                sleeps: Vec::new(),
            })),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.state().now += by;
    }

    /// Every sleep asked for so far, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.state().sleeps.clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, TestClockState> {
        // The state stays consistent whatever panicked while it was held.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, duration: Duration) {
        let mut state = self.state();
        state.now += duration;
        state.sleeps.push(duration);
    }
}

impl Clock for TestClock {
    fn now(&self) -> Instant {
        self.state().now
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        self.record(duration);
        Box::pin(std::future::ready(()))
    }

    fn sleep_blocking(&self, duration: Duration) {
        self.record(duration);
    }
}

/// The time from `start` to `end`, zero if `end` is earlier: what
/// `end.saturating_duration_since(start)` gives, without its call.
///
/// std does not inline `Instant - Instant` (a call into the standard
/// library and about 56 instructions, once per step boundary of every
/// run); this reads each instant's seconds and nanoseconds (see
/// [`Parts`]) and subtracts them inline. An instant whose parts cannot be
/// read goes through std's subtraction.
#[inline(always)]
pub(crate) fn elapsed(start: Instant, end: Instant) -> Duration {
    match (Parts::of(start), Parts::of(end)) {
        (Some(start), Some(end)) => end.since(start),
        _ => end.saturating_duration_since(start),
    }
}

/// An [`Instant`]'s seconds and nanoseconds on its clock, read without
/// `unsafe` through its `Hash`, which std derives: on Linux, where std
/// keeps an instant as a `timespec`, it writes the seconds as an `i64`,
/// then the nanoseconds (below 10^9) as a `u32`. The hasher below takes
/// exactly that sequence (or an unsigned 64-bit count of seconds first)
/// and refuses any other, so a platform that keeps its instants otherwise
/// gets `None`, and std's subtraction, never a wrong duration; tests check
/// that the parts are read here and agree with std's subtraction. Inlined,
/// the hash folds to two loads.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Parts {
    secs: i64,
    nanos: u32,
}

impl Parts {
    #[inline(always)]
    fn of(instant: Instant) -> Option<Parts> {
        let mut reader = PartsReader::Empty;
        instant.hash(&mut reader);
        match reader {
            PartsReader::Full(parts) => Some(parts),
            _ => None,
        }
    }

    /// The time from `start` to `self`, zero if `self` is earlier.
    #[inline(always)]
    fn since(self, start: Parts) -> Duration {
        if self <= start {
            return Duration::ZERO;
        }
        // `self > start`, so the difference of the seconds is at least 0
        // and fits a `u64` (wrapping reads it right whatever its sign as
        // an `i64`).
        let mut secs = self.secs.wrapping_sub(start.secs) as u64;
        let nanos = if self.nanos >= start.nanos {
            self.nanos - start.nanos
        } else {
            secs -= 1;
            self.nanos + NANOS_PER_SEC - start.nanos
        };
        Duration::new(secs, nanos)
    }
}

const NANOS_PER_SEC: u32 = 1_000_000_000;

/// The [`Hasher`] that reads an instant's [`Parts`]: it takes one 64-bit
/// integer, then a `u32` below 10^9, and turns anything else into
/// `Refused`.
enum PartsReader {
    Empty,
    Secs(i64),
    Full(Parts),
    Refused,
}

impl PartsReader {
    #[inline(always)]
    fn secs(&mut self, secs: Option<i64>) {
        *self = match (&*self, secs) {
            (PartsReader::Empty, Some(secs)) => PartsReader::Secs(secs),
            _ => PartsReader::Refused,
        };
    }
}

impl Hasher for PartsReader {
    fn finish(&self) -> u64 {
        0
    }

    #[inline(always)]
    fn write(&mut self, _: &[u8]) {
        *self = PartsReader::Refused;
    }

    #[inline(always)]
    fn write_i64(&mut self, secs: i64) {
        self.secs(Some(secs));
    }

    #[inline(always)]
    fn write_u64(&mut self, secs: u64) {
        self.secs(i64::try_from(secs).ok());
    }

    #[inline(always)]
    fn write_u32(&mut self, nanos: u32) {
        *self = match &*self {
            PartsReader::Secs(secs) if nanos < NANOS_PER_SEC => {
                PartsReader::Full(Parts { secs: *secs, nanos })
            }
            _ => PartsReader::Refused,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_is_std_subtraction() {
        let base = Instant::now();
        let offsets = [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_nanos(999_999_999),
            Duration::from_secs(1),
            Duration::new(1, 1),
            Duration::new(3, 999_999_999),
            Duration::from_secs(86_400 * 365),
        ];
        for a in offsets {
            for b in offsets {
                let (start, end) = (base + a, base + b);
                assert_eq!(
                    elapsed(start, end),
                    end.saturating_duration_since(start),
                    "{a:?} -> {b:?}"
                );
            }
        }
        for _ in 0..1000 {
            let start = base + Duration::from_nanos(fastrand::u64(..1 << 40));
            let end = base + Duration::from_nanos(fastrand::u64(..1 << 40));
            assert_eq!(elapsed(start, end), end.saturating_duration_since(start));
        }
    }

    /// On Linux (where CI runs), instants are read inline, not through
    /// std's subtraction (the point of [`elapsed`]).
    #[cfg(target_os = "linux")]
    #[test]
    fn instants_have_parts_here() {
        assert!(Parts::of(Instant::now()).is_some());
        let later = Instant::now() + Duration::new(2, 5);
        assert!(Parts::of(later).is_some());
    }
}
