//! [`RetryPolicy`]: how many attempts a step (or a compensation) gets, how
//! long to wait between them, and which errors are worth another attempt.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::StepError;

/// Which errors a [`RetryPolicy`] retries. A
/// [`permanent`](StepError::permanent) error is never retried, whatever
/// this says: a predicate only narrows.
#[derive(Clone, Default)]
pub enum RetryOn {
    /// Since 0.2.0 the same as [`Any`](Self::Any): 0.1 retried only errors
    /// marked `retryable()`, a mark that no longer has an effect.
    #[deprecated(
        since = "0.2.0",
        note = "every error not marked `permanent()` is retried: use `RetryOn::Any`"
    )]
    Marked,
    /// Every error not marked permanent: timeouts and panics included.
    #[default]
    Any,
    /// Errors not marked permanent for which the predicate returns `true`
    /// (a panic in it counts as `false`).
    If(Arc<dyn Fn(&StepError) -> bool + Send + Sync>),
}

impl fmt::Debug for RetryOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            #[allow(deprecated)]
            RetryOn::Marked => f.write_str("Marked"),
            RetryOn::Any => f.write_str("Any"),
            RetryOn::If(_) => f.write_str("If(..)"),
        }
    }
}

/// How a step or a compensation is retried: a number of attempts, an
/// exponential backoff with jitter and a cap, and which errors qualify.
///
/// Every error is retried except one marked
/// [`permanent`](StepError::permanent); [`retry_if`](Self::retry_if) only
/// narrows that. A policy that does not set its number of attempts
/// ([`new`](Self::new), and its setters other than
/// [`with_max_attempts`](Self::with_max_attempts)) gets its place's
/// default when the saga is built: one attempt (no retry) on a step
/// before the pivot, [`forever`](Self::forever) on a step after it, and
/// on a compensation the saga's number
/// ([`SagaBuilder::undo_retry`](crate::SagaBuilder::undo_retry), 3 by
/// default). A backoff, a jitter or a predicate alone never changes how
/// many attempts there are, and is kept.
/// Counters are per step and per run.
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
    /// Whether the number of attempts was never set: the saga's build
    /// gives it its place's (see the type's docs).
    /// Only [`with_max_attempts`](Self::with_max_attempts) clears it.
    attempts_unset: bool,
}

impl Default for RetryPolicy {
    /// One attempt; as built into a saga, on a step after the pivot
    /// [`forever`](Self::forever), on a compensation the saga's number
    /// (3 by default).
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.2,
            retry_on: RetryOn::Any,
            attempts_unset: true,
        }
    }
}

impl RetryPolicy {
    /// "Retry forever" is capped at this many attempts, so a run that can
    /// never succeed still ends (stuck) instead of hanging: with the default
    /// 10 s cap on backoff, 22 to 28 hours (the default jitter draws each
    /// delay between 8 and 10 s).
    pub const FOREVER_ATTEMPTS: u32 = 10_000;

    /// The default policy ([`Default`]), to build on with the `with_*`
    /// setters.
    pub fn new() -> Self {
        Self::default()
    }

    /// No retry: one attempt, also on a step after the pivot.
    pub fn none() -> Self {
        Self::default().with_max_attempts(1)
    }

    /// Up to `n` attempts in all (the first one included), retrying every
    /// error not marked permanent unless told otherwise. `0` is a
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
        self.attempts_unset = false;
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

    /// Sets which errors are retried (a permanent one never is).
    #[must_use]
    pub fn retry_on(mut self, retry_on: RetryOn) -> Self {
        self.retry_on = retry_on;
        self
    }

    /// Retries the errors for which `predicate` returns `true`; a
    /// [`permanent`](StepError::permanent) error is not retried even then
    /// (the predicate only narrows). On the pivot, an error of unknown
    /// outcome is retried whatever it says: giving up there means stuck.
    #[must_use]
    pub fn retry_if(self, predicate: impl Fn(&StepError) -> bool + Send + Sync + 'static) -> Self {
        self.retry_on(RetryOn::If(Arc::new(predicate)))
    }

    /// The number of attempts in all: 1 for a policy that set none, until
    /// a saga's build gives it its place's.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether this policy retries `error` (attempts aside): never a
    /// permanent error; otherwise unless a predicate says `false`.
    pub fn retries(&self, error: &StepError) -> bool {
        if error.is_permanent() {
            return false;
        }
        match &self.retry_on {
            #[allow(deprecated)]
            RetryOn::Marked => true,
            RetryOn::Any => true,
            // The predicate is user code: a panic in it means "no retry",
            // never a run torn down halfway (its rollback undone).
            RetryOn::If(predicate) => {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| predicate(error)))
                    .unwrap_or(false)
            }
        }
    }

    /// This policy, with `n` attempts if it did not set its number: what
    /// a saga's build gives it in its place.
    pub(crate) fn or_attempts(self, n: u32) -> Self {
        if self.attempts_unset {
            self.with_max_attempts(n)
        } else {
            self
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
