//! Time, injectable: the engine reads durations and sleeps between retries
//! through a [`Clock`], so tests of backoff do not sleep.

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
