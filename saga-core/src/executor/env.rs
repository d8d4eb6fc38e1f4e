//! The run's environment: what a run shares with every step (the saga,
//! its id, clock, cancellation, observers and the durable journal), and
//! how it logs, emits events, sleeps and reads the clock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cancel::CancellationToken;
use crate::clock::{Clock, SystemClock};
use crate::id::ExecutionId;
use crate::journal::{Event, EventKind, Journal, StoreError, Write};
use crate::observer::{RunInfo, SagaEvent, SagaObserver};
use crate::report::ExecutionStatus;
use crate::saga::SagaInner;
use crate::step::StepDef;

pub(super) static SYSTEM_CLOCK: SystemClock = SystemClock;

/// What a run shares with every step, branches included: read-only. Owned
/// by the run's future (made before it, from the [`RunOptions`], so the
/// future holds the options once).
pub(crate) struct Env<'r, C, D> {
    pub(super) saga: &'r SagaInner<C, D>,
    /// The saga's dependencies, lent for the run: every step's
    /// [`StepInfo`](crate::StepInfo) borrows them, nothing clones them.
    pub(super) deps: &'r D,
    pub(super) id: ExecutionId,
    /// The run's clock; the system clock when none.
    pub(super) clock: Option<Arc<dyn Clock>>,
    pub(super) cancel: Option<CancellationToken>,
    pub(super) run_observers: Vec<Arc<dyn SagaObserver>>,
    /// Sync-only run driven without a runtime: sleeps block the thread.
    pub(super) blocking: bool,
    /// Whether the saga or the run has observers: one test per event.
    pub(super) observed: bool,
    /// When the run started: read at its first poll.
    pub(super) started: Option<Instant>,
    /// The durable log and its abort slot, if the run is durable: behind
    /// one pointer, so an in-memory run does not carry them.
    pub(super) durable: Option<Box<Durable<'r, C>>>,
}

/// What only a durable run needs.
pub(super) struct Durable<'r, C> {
    pub(super) journal: &'r dyn Journal<C>,
    /// The journal's first error: the run stops at the next check.
    pub(super) aborted: Mutex<Option<StoreError>>,
    /// The steps whose last start was stopped before it ran (a
    /// cancellation came with its commit): the rollback's event names
    /// them, so that a log tells them from starts a crash cut off.
    pub(super) not_run: Mutex<Vec<u32>>,
}

impl<C, D> Env<'_, C, D> {
    /// The gate a durable run's sync steps pass on a multi-thread runtime
    /// (see [`BlockingGate`](crate::gate::BlockingGate)).
    #[inline]
    pub(super) fn gate(&self) -> Option<&crate::gate::BlockingGate> {
        self.durable.as_deref()?.journal.gate()
    }

    pub(super) fn clock(&self) -> &dyn Clock {
        match &self.clock {
            Some(clock) => &**clock,
            None => &SYSTEM_CLOCK,
        }
    }

    /// The run's clock's reading: the system clock's without a call
    /// through a trait object when the run has no clock of its own.
    #[inline]
    pub(super) fn now(&self) -> Instant {
        match &self.clock {
            Some(clock) => clock.now(),
            None => Instant::now(),
        }
    }

    /// The time from the run's start to `now`.
    pub(super) fn since_start(&self, now: Instant) -> Duration {
        self.started.map_or(Duration::ZERO, |started| {
            crate::clock::elapsed(started, now)
        })
    }

    /// Writes `event` to the journal (if any). On failure the error is kept
    /// for the run's result, and the run stops at its next check.
    ///
    /// An event the journal only buffers is recorded here, at the call,
    /// and the future is ready at once; a commit is the journal's
    /// [`Write`], polled in place (see [`Logged`]), with no box around it.
    ///
    /// `fill` sets the event's fields: the event is made here, so the
    /// caller's future does not hold it across the write.
    pub(super) fn log(
        &self,
        kind: EventKind,
        status: ExecutionStatus,
        fill: impl FnOnce(&mut Event),
    ) -> Logged<'_> {
        let mut event = Event::new(0, kind);
        fill(&mut event);
        self.write(|journal| journal.record(event, status))
    }

    /// Commits what the journal (if any) buffered, as [`log`](Self::log)
    /// commits an event: a branch of a group that ended while a sibling
    /// still runs, so that a crash in the sibling does not read as one
    /// that cut this branch off too.
    pub(super) fn flush(&self, status: ExecutionStatus) -> Logged<'_> {
        self.write(|journal| journal.flush(status))
    }

    /// The write `start` makes on the journal, if the run is durable and
    /// its journal has not failed.
    fn write<'s>(&'s self, start: impl FnOnce(&'s dyn Journal<C>) -> Write<'s>) -> Logged<'s> {
        let Some(durable) = self.durable.as_deref() else {
            return Logged::Done(true);
        };
        if lock(&durable.aborted).is_some() {
            return Logged::Done(false);
        }
        match start(durable.journal) {
            Write::Done => Logged::Done(true),
            write => Logged::Writing {
                write,
                aborted: &durable.aborted,
            },
        }
    }

    /// The context, encoded for the journal; an encoding error aborts the
    /// run (at its next log point).
    pub(super) fn snapshot(&self, ctx: &C) -> Option<String> {
        let durable = self.durable.as_deref()?;
        match durable.journal.encode_context(ctx) {
            Ok(json) => Some(json),
            Err(error) => {
                self.abort(error);
                None
            }
        }
    }

    /// The context as the journal last recorded it since its last commit
    /// (see [`Journal::last_context`]).
    pub(super) fn last_context(&self) -> Option<String> {
        self.durable.as_deref()?.journal.last_context()
    }

    /// A step's output, encoded for the journal.
    pub(super) fn encode_output(
        &self,
        step: &StepDef<C, D>,
        output: &(dyn std::any::Any + Send + Sync),
    ) -> Option<String> {
        let result = match &step.codec {
            Some(codec) => (codec.encode)(output),
            None => Err("the step has no codec; call `.durable()` on it".to_owned()),
        };
        result
            .map_err(|detail| {
                self.abort(StoreError::Encode {
                    what: format!("the output of step `{}`", step.name),
                    detail,
                });
            })
            .ok()
    }

    pub(super) fn abort(&self, error: StoreError) {
        if let Some(durable) = &self.durable {
            lock(&durable.aborted).get_or_insert(error);
        }
    }

    pub(super) fn is_aborted(&self) -> bool {
        // Only a journal aborts a run: a run without one skips the lock
        // (two atomic operations per step otherwise).
        self.durable
            .as_ref()
            .is_some_and(|durable| lock(&durable.aborted).is_some())
    }

    /// Notes that step `index`'s last start was stopped before it ran.
    pub(super) fn not_run(&self, index: usize) {
        if let Some(durable) = &self.durable {
            lock(&durable.not_run).push(index as u32);
        }
    }

    /// The steps whose last start was stopped before it ran, in order.
    pub(super) fn take_not_run(&self) -> Vec<u32> {
        self.durable
            .as_ref()
            .map(|durable| std::mem::take(&mut *lock(&durable.not_run)))
            .unwrap_or_default()
    }

    pub(super) fn take_abort(&self) -> Option<StoreError> {
        lock(&self.durable.as_ref()?.aborted).take()
    }

    pub(super) fn cancel_requested(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
    }

    pub(super) async fn sleep(&self, delay: Duration) {
        if self.blocking {
            self.clock().sleep_blocking(delay);
        } else {
            self.clock().sleep(delay).await;
        }
    }

    /// Tells the logger and the observers of the event `make` builds.
    /// Inlined, and the event built only once something may hear it:
    /// without a logger and observers an event costs an atomic load and
    /// two tests, and is never built (not even its fields on the stack).
    /// Where it is built its log level folds to a constant.
    #[inline(always)]
    pub(super) fn emit<'e>(&self, make: impl FnOnce() -> SagaEvent<'e>) {
        if !self.observed && log::max_level() == log::LevelFilter::Off {
            return;
        }
        let event = &make();
        crate::logging::log_event(|| self.run_info(), event, || self.since_start(self.now()));
        if self.observed {
            self.notify(event);
        }
    }

    pub(super) fn run_info(&self) -> RunInfo<'_> {
        RunInfo {
            saga: &self.saga.name,
            execution_id: &self.id,
        }
    }

    /// Calls every observer with `event`: out of line, as few runs have any.
    #[inline(never)]
    pub(super) fn notify(&self, event: &SagaEvent<'_>) {
        let observers = self.saga.observers.iter().chain(&self.run_observers);
        crate::logging::tell(observers, &self.run_info(), event);
    }
}

/// The future of a log point ([`Env::log`]): `Ok(())` once the event is
/// recorded, `Err(())` if the journal failed, now or before (its error is
/// then in the run's abort slot). Polled in place by the caller's future,
/// it holds no more than the journal's write and the slot: only the
/// durable part of the run, so it is `Send` whatever the context is.
pub(super) enum Logged<'a> {
    /// Settled at the call: recorded (or nothing to record) when `true`.
    Done(bool),
    /// The journal's write under way.
    Writing {
        write: Write<'a>,
        aborted: &'a Mutex<Option<StoreError>>,
    },
}

impl std::future::Future for Logged<'_> {
    type Output = Result<(), ()>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        match self.get_mut() {
            Logged::Done(true) => Poll::Ready(Ok(())),
            Logged::Done(false) => Poll::Ready(Err(())),
            Logged::Writing { write, aborted } => match std::pin::Pin::new(write).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
                Poll::Ready(Err(error)) => {
                    lock(aborted).get_or_insert(error);
                    Poll::Ready(Err(()))
                }
            },
        }
    }
}

/// The journal's abort slot, or its list of steps not run; each stays
/// consistent whatever panicked while it was held.
pub(super) fn lock<T>(slot: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
