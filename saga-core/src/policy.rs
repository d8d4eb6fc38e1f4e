//! [`RetryPolicy`]: how many attempts a step (or a compensation) gets, how
//! long to wait between them, and which errors are worth another attempt.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::StepError;

/// Which errors a [`RetryPolicy`] retries.
#[derive(Clone, Default)]
pub enum RetryOn {
    /// Only errors marked [`StepError::retryable`] (timeouts are marked).
    #[default]
    Marked,
    /// Every error, panics included.
    Any,
    /// Errors for which the predicate returns `true` (a panic in it counts
    /// as `false`).
    If(Arc<dyn Fn(&StepError) -> bool + Send + Sync>),
}

impl fmt::Debug for RetryOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryOn::Marked => f.write_str("Marked"),
            RetryOn::Any => f.write_str("Any"),
            RetryOn::If(_) => f.write_str("If(..)"),
        }
    }
}

/// How a step or a compensation is retried: a number of attempts, an
/// exponential backoff with jitter and a cap, and which errors qualify.
///
/// The default is one attempt (no retry). Counters are per step and per run.
///
/// ```
/// use std::time::Duration;
/// use saga_core::{RetryOn, RetryPolicy};
///
/// let policy = RetryPolicy::attempts(5)
///     .with_backoff(Duration::from_millis(50))
///     .with_max_backoff(Duration::from_secs(2))
///     .with_jitter(0.0)
///     .retry_on(RetryOn::Any);
/// assert_eq!(policy.max_attempts(), 5);
/// // Delays double from the initial backoff, capped: 50ms, 100ms, 200ms, ...
/// assert_eq!(policy.delay_before(2, 0.5), Duration::from_millis(50));
/// assert_eq!(policy.delay_before(4, 0.5), Duration::from_millis(200));
/// assert_eq!(policy.delay_before(30, 0.5), Duration::from_secs(2));
/// ```
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    max_attempts: u32,
    backoff: Duration,
    max_backoff: Duration,
    multiplier: f64,
    jitter: f64,
    retry_on: RetryOn,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.2,
            retry_on: RetryOn::Marked,
        }
    }
}

impl RetryPolicy {
    /// "Retry forever" is capped at this many attempts, so a run that can
    /// never succeed still ends (stuck) instead of hanging: with the default
    /// 10 s cap on backoff, about 28 hours.
    pub const FOREVER_ATTEMPTS: u32 = 10_000;

    /// One attempt, no retry.
    pub fn new() -> Self {
        Self::default()
    }

    /// No retry: one attempt.
    pub fn none() -> Self {
        Self::default()
    }

    /// Up to `n` attempts in all (the first one included), retrying the
    /// errors of [`RetryOn::Marked`] unless told otherwise. `0` is a
    /// [`BuildError::ZeroAttempts`](crate::BuildError::ZeroAttempts) when the
    /// saga is built.
    pub fn attempts(n: u32) -> Self {
        Self::default().with_max_attempts(n)
    }

    /// Up to [`FOREVER_ATTEMPTS`](Self::FOREVER_ATTEMPTS) attempts.
    pub fn forever() -> Self {
        Self::attempts(Self::FOREVER_ATTEMPTS)
    }

    /// Sets the number of attempts in all.
    #[must_use]
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Sets the delay before the second attempt (default 100 ms); later
    /// delays grow by the multiplier.
    #[must_use]
    pub fn with_backoff(mut self, initial: Duration) -> Self {
        self.backoff = initial;
        self
    }

    /// Caps the delay between attempts (default 10 s).
    #[must_use]
    pub fn with_max_backoff(mut self, cap: Duration) -> Self {
        self.max_backoff = cap;
        self
    }

    /// Sets the growth factor of the delay (default 2.0; values below 1.0
    /// count as 1.0).
    #[must_use]
    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier.max(1.0);
        self
    }

    /// Sets the jitter, the fraction of each delay that is random (default
    /// 0.2, clamped to `0.0..=1.0`): a delay `d` becomes a uniform pick in
    /// `d * (1 - jitter) ..= d`. Jitter keeps many failed runs from retrying
    /// in lockstep; `0.0` makes delays exact.
    #[must_use]
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        self
    }

    /// Sets which errors are retried.
    #[must_use]
    pub fn retry_on(mut self, retry_on: RetryOn) -> Self {
        self.retry_on = retry_on;
        self
    }

    /// Retries the errors for which `predicate` returns `true`.
    #[must_use]
    pub fn retry_if(self, predicate: impl Fn(&StepError) -> bool + Send + Sync + 'static) -> Self {
        self.retry_on(RetryOn::If(Arc::new(predicate)))
    }

    /// The number of attempts in all.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether this policy retries `error` (attempts aside).
    pub fn retries(&self, error: &StepError) -> bool {
        match &self.retry_on {
            RetryOn::Marked => error.is_retryable(),
            RetryOn::Any => true,
            // The predicate is user code: a panic in it means "no retry",
            // never a run torn down halfway (its rollback undone).
            RetryOn::If(predicate) => {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| predicate(error)))
                    .unwrap_or(false)
            }
        }
    }

    /// The delay before attempt `attempt` (2 for the first retry), given a
    /// uniform random `unit` in `0.0..1.0` for the jitter.
    pub fn delay_before(&self, attempt: u32, unit: f64) -> Duration {
        let retries = attempt.saturating_sub(2).min(64);
        let cap = self.max_backoff.as_secs_f64();
        let base = (self.backoff.as_secs_f64() * self.multiplier.powi(retries as i32)).min(cap);
        let jittered = base * (1.0 - self.jitter * unit.clamp(0.0, 1.0));
        Duration::try_from_secs_f64(jittered).unwrap_or(self.max_backoff)
    }

    /// [`delay_before`](Self::delay_before) with a fresh random pick from
    /// the thread's generator, seeded from the OS: processes and threads
    /// draw different jitter, so they do not retry in lockstep.
    pub(crate) fn random_delay_before(&self, attempt: u32) -> Duration {
        self.delay_before(attempt, fastrand::f64())
    }
}
