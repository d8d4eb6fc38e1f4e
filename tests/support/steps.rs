//! Helpers shared by the behaviour tests: a context that records every
//! effect in order, steps that record into it, and a user error type.
//!
//! Each test binary uses a different subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga_core::clock::TestClock;
use saga_core::{
    RetryOn, RetryPolicy, RunOptions, SagaError, SagaReport, Step, StepError, StepInfo,
};

/// The context of most tests: every step and compensation appends what it
/// did, so a test asserts the exact order of effects.
#[derive(Debug, Default)]
pub struct Rec {
    pub effects: Vec<String>,
}

impl Rec {
    pub fn push(&mut self, effect: impl Into<String>) {
        self.effects.push(effect.into());
    }
}

/// A user error type (a thiserror enum, as users write them), to show that
/// `source()` downcasts to the user's own type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("card declined (code {0})")]
    Declined(u32),
    #[error("payment gateway unavailable")]
    Unavailable,
}

/// What a compensation records: `undo {name} with {output}`, `none` when the
/// step's outcome is unknown.
pub fn undo_effect(name: &str, out: Option<&String>) -> String {
    format!("undo {name} with {}", out.map_or("none", String::as_str))
}

/// A compensable step: records `do {name}`, outputs `{name}-out`; its
/// compensation records [`undo_effect`].
pub fn compensable(name: &'static str) -> Step<Rec, String> {
    Step::new(name, move |r: &mut Rec, _: &StepInfo<'_>| {
        r.push(format!("do {name}"));
        Ok::<_, StepError>(format!("{name}-out"))
    })
    .undo(undo(name))
}

/// A compensation recording [`undo_effect`].
pub fn undo(
    name: &'static str,
) -> impl Fn(&mut Rec, Option<&String>, &StepInfo<'_>) -> Result<(), StepError> + Send + Sync + 'static
{
    move |r: &mut Rec, out: Option<&String>, _: &StepInfo<'_>| {
        r.push(undo_effect(name, out));
        Ok(())
    }
}

/// A step with nothing to undo: records `do {name}`.
pub fn plain(name: &'static str) -> Step<Rec, ()> {
    Step::new(name, move |r: &mut Rec, _: &StepInfo<'_>| {
        r.push(format!("do {name}"));
        Ok::<_, StepError>(())
    })
}

/// A step whose every attempt records `try {name}#{attempt}` and fails with
/// `error()`; it has a compensation recording [`undo_effect`], which must
/// only run if the error says the outcome is unknown.
pub fn failing(
    name: &'static str,
    error: impl Fn() -> StepError + Send + Sync + 'static,
) -> Step<Rec, String> {
    Step::new(name, move |r: &mut Rec, info: &StepInfo<'_>| {
        r.push(format!("try {name}#{}", info.attempt()));
        Err::<String, _>(error())
    })
    .undo(undo(name))
}

/// A step that fails with `error()` on its first `failures` attempts
/// (recording `try {name}#{attempt}`), then succeeds (recording
/// `do {name}#{attempt}`) with output `{name}-out`.
pub fn flaky(
    name: &'static str,
    failures: u32,
    error: impl Fn() -> StepError + Send + Sync + 'static,
) -> Step<Rec, String> {
    Step::new(name, move |r: &mut Rec, info: &StepInfo<'_>| {
        if info.attempt() <= failures {
            r.push(format!("try {name}#{}", info.attempt()));
            return Err(error());
        }
        r.push(format!("do {name}#{}", info.attempt()));
        Ok(format!("{name}-out"))
    })
    .undo(undo(name))
}

/// The user's declined-card error: no retry fixes it, so it is marked
/// permanent.
pub fn declined() -> StepError {
    StepError::new(PaymentError::Declined(51)).permanent()
}

/// The user's transient error: a plain error, which a policy retries.
pub fn unavailable() -> StepError {
    StepError::new(PaymentError::Unavailable)
}

/// A policy of `n` attempts with exact delays: 100 ms, doubling, no jitter,
/// retrying every error not marked permanent.
pub fn exact(n: u32) -> RetryPolicy {
    RetryPolicy::attempts(n)
        .with_backoff(Duration::from_millis(100))
        .with_jitter(0.0)
}

/// [`exact`], retrying every error.
pub fn exact_any(n: u32) -> RetryPolicy {
    exact(n).retry_on(RetryOn::Any)
}

/// Options with a fresh virtual clock: backoff never sleeps for real.
pub fn virtual_time() -> (TestClock, RunOptions) {
    let clock = TestClock::new();
    (clock.clone(), RunOptions::new().with_clock(clock))
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The user's error behind a saga error, downcast to its own type.
pub fn user_error<E: std::error::Error + 'static>(err: &SagaError) -> &E {
    let source = std::error::Error::source(err).expect("a saga error has a source");
    source.downcast_ref::<E>().unwrap_or_else(|| {
        panic!(
            "the source is not a {}: {source}",
            std::any::type_name::<E>()
        )
    })
}

/// Each step's (name, status, outcome, attempts, compensation attempts).
pub fn rows(report: &SagaReport) -> Vec<(String, &'static str, &'static str, u32, u32)> {
    report
        .steps
        .iter()
        .map(|s| {
            (
                s.name.to_string(),
                s.status.label(),
                s.outcome.label(),
                s.attempts,
                s.compensation_attempts,
            )
        })
        .collect()
}

/// Builds the expected value of [`rows`].
pub fn row(
    name: &str,
    status: &'static str,
    outcome: &'static str,
    attempts: u32,
    compensation_attempts: u32,
) -> (String, &'static str, &'static str, u32, u32) {
    (
        name.to_owned(),
        status,
        outcome,
        attempts,
        compensation_attempts,
    )
}

/// How long a test waits for a run that should end before calling it hung.
/// Not a timing assertion: a healthy run ends in milliseconds, and the
/// limit only turns a would-be hang (a step never dropped, a timeout never
/// applied) into a failure.
pub const HANG: Duration = Duration::from_secs(60);

/// Awaits `future`, failing the test if it hangs.
pub async fn unless_hung<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(HANG, future)
        .await
        .expect("the run hung")
}

/// Runs `f` on its own thread, failing the test if it hangs.
pub fn unless_hung_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(f());
    });
    receive.recv_timeout(HANG).expect("the run hung")
}

/// A hand-written error type: no thiserror, no framework trait.
#[derive(Debug)]
pub struct Handmade {
    pub code: u16,
}

impl std::fmt::Display for Handmade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "handmade error {}", self.code)
    }
}

impl std::error::Error for Handmade {}

/// What a blocking sync step saw: how many times it started, per
/// execution; how many runs are in it, and the most that were at once;
/// how many ended.
#[derive(Default)]
pub struct BlockingProbe {
    pub started: Mutex<HashMap<String, u32>>,
    pub inside: AtomicUsize,
    pub most_inside: AtomicUsize,
    pub over: AtomicUsize,
}

impl BlockingProbe {
    /// A sync step `name` that blocks its thread for `block`, as a sync
    /// HTTP client, a file lock or a sleep would, adds 1 to the context
    /// and tells this probe.
    pub fn step(self: &Arc<Self>, name: &'static str, block: Duration) -> Step<u32, ()> {
        let probe = Arc::clone(self);
        Step::new(name, move |n: &mut u32, info: &StepInfo<'_>| {
            *probe
                .started
                .lock()
                .unwrap()
                .entry(info.execution_id().to_string())
                .or_default() += 1;
            let inside = probe.inside.fetch_add(1, Ordering::SeqCst) + 1;
            probe.most_inside.fetch_max(inside, Ordering::SeqCst);
            std::thread::sleep(block);
            probe.inside.fetch_sub(1, Ordering::SeqCst);
            probe.over.fetch_add(1, Ordering::SeqCst);
            *n += 1;
            Ok::<(), StepError>(())
        })
    }
}
