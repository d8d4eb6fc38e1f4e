//! One attempt under its guards: the context's access, the brakes
//! (cancellation, a failed sibling), panics caught, the timeout, and the
//! backoff before a retry.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;

use std::task::Poll;
use std::time::Duration;

use super::{Env, Record};
use crate::cancel::CancellationToken;
use crate::error::StepError;
use crate::gate::Turn;
use crate::report::Outcome;
use crate::saga::SharedContext;
use crate::step::{Action, ActionFuture, BoxFuture, Output, StepDef, StepInfo, TypedFuture, Undo};

/// The context as a step gets it: exclusively (`&mut C`) in a sequence,
/// shared (`&C`) in a parallel group. A trait rather than an enum, so a
/// sequence's future never holds a `&C` and stays `Send` for contexts that
/// are `Send` but not `Sync`.
pub(super) trait Access<C> {
    fn shared(&self) -> &C;
    fn exclusive(&mut self) -> Option<&mut C>;
}

impl<C> Access<C> for &mut C {
    fn shared(&self) -> &C {
        self
    }

    fn exclusive(&mut self) -> Option<&mut C> {
        Some(self)
    }
}

impl<C> Access<C> for &dyn SharedContext<C> {
    fn shared(&self) -> &C {
        SharedContext::context(*self)
    }

    fn exclusive(&mut self) -> Option<&mut C> {
        None
    }
}

/// What may stop an attempt or a retry early.
#[derive(Clone, Copy)]
pub(super) struct Brakes<'t> {
    /// The run's cancellation token, when the step may be dropped by it
    /// (cancel-safe, before the pivot).
    pub(super) cancel: Option<&'t CancellationToken>,
    /// The group's token, fired when a sibling branch failed.
    pub(super) group: Option<&'t CancellationToken>,
    /// Whether the step may be dropped mid-flight (cancel-safe).
    pub(super) droppable: bool,
}

impl<'t> Brakes<'t> {
    /// A step's brakes in a sequence. Before the pivot a cancel-safe async
    /// step may be dropped when the run is cancelled; the pivot and what
    /// follows always finish.
    #[inline(always)]
    pub(super) fn of<C, D>(env: &'t Env<'_, C, D>, step: &StepDef<C, D>, pivot_done: bool) -> Self {
        Brakes {
            cancel: env.cancel.as_ref().filter(|_| !pivot_done && !step.pivot),
            group: None,
            droppable: step.cancel_safe && !pivot_done && !step.pivot,
        }
    }

    /// The cancellation the pivot heeds between its attempts: the run's,
    /// while none of them may have taken effect (every failure so far
    /// clean, none cut off), as a step before it heeds one; the point of
    /// no return is not passed yet. (A running pivot is never dropped.)
    pub(super) fn pivot_cancel<C, D>(
        env: &'t Env<'_, C, D>,
        record: &Record,
    ) -> Option<&'t CancellationToken> {
        env.cancel
            .as_ref()
            .filter(|_| record.outcome != Outcome::Unknown)
    }

    pub(super) fn applied(&self) -> bool {
        self.cancel.is_some_and(CancellationToken::is_cancelled)
            || self.group.is_some_and(CancellationToken::is_cancelled)
    }
}

/// The backoff before a retry of the attempt that failed with `error`:
/// `delay` on the run's clock, cut short when a brake is applied (a run
/// driven without a runtime sleeps it whole). Gives `error` back if a
/// brake was applied, before or during the wait: then no retry runs.
pub(super) async fn backoff<C, D>(
    env: &Env<'_, C, D>,
    delay: Duration,
    brakes: &Brakes<'_>,
    error: StepError,
) -> Option<StepError> {
    if env.blocking || (brakes.cancel.is_none() && brakes.group.is_none()) {
        env.sleep(delay).await;
    } else {
        tokio::select! {
            biased;
            () = applied(brakes.cancel) => {}
            () = applied(brakes.group) => {}
            () = env.sleep(delay) => {}
        }
    }
    brakes.applied().then_some(error)
}

/// Completes once `token` (if any) is cancelled.
async fn applied(token: Option<&CancellationToken>) {
    match token {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}

/// One attempt of an action: panics caught, the timeout applied, and a
/// droppable step dropped when a brake is applied. A sync action passes
/// its `turn` through the gate, if any (a durable run on a multi-thread
/// runtime: see [`BlockingGate`](crate::gate::BlockingGate)). Inlined
/// where it is called, as [`catch`] is: a call made for every attempt,
/// and the `Attempt` it returns written to memory and read back.
#[inline(always)]
pub(super) fn attempt_action<'a, C, D, A: Access<C>>(
    step: &'a StepDef<C, D>,
    ctx: &'a mut A,
    info: &'a StepInfo<'a, D>,
    brakes: Brakes<'a>,
    turn: Option<Turn<'_>>,
) -> Attempt<'a, Output> {
    let future = match &step.action {
        Action::Sync(action) => {
            return Attempt::Done(match A::exclusive(ctx) {
                Some(ctx) => blocking(turn, || action(ctx, info)),
                None => Err(exclusive_in_group(info)),
            });
        }
        Action::SharedSync(action) => {
            return Attempt::Done(blocking(turn, || action(A::shared(ctx), info)));
        }
        Action::Async(action) => match A::exclusive(ctx) {
            Some(ctx) => catch(move || Ok(Made::of(action(ctx, info)))),
            None => Err(exclusive_in_group(info)),
        },
        Action::AsyncUnit(action) => match A::exclusive(ctx) {
            Some(ctx) => catch(move || Ok(Made::Unit(action(ctx, info)))),
            None => Err(exclusive_in_group(info)),
        },
        Action::SharedAsync(action) => {
            let ctx = A::shared(ctx);
            catch(move || Ok(Made::of(action(ctx, info))))
        }
    };
    let future = match future {
        Ok(future) => future,
        Err(error) => return Attempt::Done(Err(error)),
    };
    let brakes = if step.cancel_safe && brakes.droppable {
        brakes
    } else {
        Brakes {
            cancel: None,
            group: None,
            droppable: false,
        }
    };
    let braked = brakes.droppable && (brakes.cancel.is_some() || brakes.group.is_some());
    if step.timeout.is_none() && !braked {
        return Attempt::Pending(match future {
            Made::Erased(future) => Running::Erased(CatchUnwind(future)),
            Made::Typed(future) => Running::Typed(CatchUnwind(future)),
            Made::Unit(future) => Running::Unit(CatchUnwind(future)),
        });
    }
    // A timer and a select make a large future (over 500 bytes), held by
    // every run in flight if it were inline: boxed, only the attempts that
    // use them pay for it.
    Attempt::Pending(Running::Guarded(match future {
        Made::Erased(future) => Box::pin(guarded(CatchUnwind(future), step.timeout, brakes)),
        Made::Typed(future) => Box::pin(guarded(CatchUnwind(future), step.timeout, brakes)),
        Made::Unit(future) => Box::pin(async move {
            guarded(CatchUnwind(future), step.timeout, brakes)
                .await
                .map(|()| Output::from_unit())
        }),
    }))
}

/// An async action's future as its action made it: its output erased
/// already, or as it is polled (a task's, or `()`: an
/// [`Action::AsyncUnit`]). One variant per kind of box, so that each is
/// polled and dropped without a second match.
enum Made<'a> {
    Erased(BoxFuture<'a, Result<Output, StepError>>),
    Typed(TypedFuture<'a>),
    Unit(BoxFuture<'a, Result<(), StepError>>),
}

impl<'a> Made<'a> {
    #[inline(always)]
    fn of(future: ActionFuture<'a>) -> Self {
        match future {
            ActionFuture::Erased(future) => Made::Erased(future),
            ActionFuture::Typed(future) => Made::Typed(future),
        }
    }
}

/// What an attempt's output becomes: for an action, its erased output
/// (from a `()`, a box of a zero-sized value, which allocates nothing);
/// for a compensation, `()`.
pub(super) trait FromUnit {
    fn from_unit() -> Self;
    /// An action's erased output (only an action's attempt has one).
    fn from_output(output: Output) -> Self;
}

impl FromUnit for Output {
    #[inline]
    fn from_unit() -> Self {
        Box::new(())
    }

    #[inline]
    fn from_output(output: Output) -> Self {
        output
    }
}

impl FromUnit for () {
    #[inline]
    fn from_unit() -> Self {}

    #[inline]
    fn from_output(_: Output) -> Self {}
}

/// One attempt of an action or a compensation, as made: a sync one is
/// done already (no future, no await); an async one is the step's future,
/// to be awaited. Smaller than an `async fn`'s future, which would hold
/// its arguments twice beside the step's future.
pub(super) enum Attempt<'a, T> {
    Done(Result<T, StepError>),
    Pending(Running<'a, T>),
}

#[cfg(feature = "tracing")]
impl<T: Unpin + FromUnit> Attempt<'_, T> {
    pub(super) async fn settle(self) -> Result<T, StepError> {
        match self {
            Attempt::Done(result) => result,
            Attempt::Pending(running) => running.await,
        }
    }
}

/// The step's future, polled with its panics caught; boxed with its timer
/// and brakes when a timeout or a brake applies.
pub(super) enum Running<'a, T> {
    /// An action's future, its output erased already.
    Erased(CatchUnwind<BoxFuture<'a, Result<Output, StepError>>>),
    /// An action's future, its output erased as it is polled.
    Typed(CatchUnwind<TypedFuture<'a>>),
    /// A future whose output is `()` (a compensation's, or an action's of
    /// `()`), made a `T` as it is polled.
    Unit(CatchUnwind<BoxFuture<'a, Result<(), StepError>>>),
    Guarded(BoxFuture<'a, Result<T, StepError>>),
}

impl<T: FromUnit> Future for Running<'_, T> {
    type Output = Result<T, StepError>;

    /// Inlined where the attempt is awaited, with [`CatchUnwind`]'s poll:
    /// each call returns its 24-byte result through memory, stored in
    /// parts (the error's flags a byte each) and read back whole by the
    /// caller, which stalls the read until the stores retire. Inlined, the
    /// step's own result is the only one so passed (docs/PERFORMANCE.md).
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Running::Erased(future) => Pin::new(future)
                .poll(cx)
                .map(|result| result.map(T::from_output)),
            Running::Typed(future) => Pin::new(future)
                .poll(cx)
                .map(|result| result.map(T::from_output)),
            Running::Unit(future) => Pin::new(future)
                .poll(cx)
                .map(|result| result.map(|()| T::from_unit())),
            Running::Guarded(future) => future.as_mut().poll(cx),
        }
    }
}

/// The result of an [`Attempt`]: a sync one's without an await. With
/// tracing, the attempt is made inside its span (the step's own spans and
/// events nest under it).
macro_rules! settle {
    ($make:expr, $compensation:expr, $step:expr, $attempt:expr) => {{
        // The match ends before the await: the future does not hold the
        // `Attempt` beside the step's future.
        #[cfg(not(feature = "tracing"))]
        let result = 'settled: {
            let running = match $make {
                $crate::executor::guard::Attempt::Done(result) => break 'settled result,
                $crate::executor::guard::Attempt::Pending(running) => running,
            };
            running.await
        };
        #[cfg(feature = "tracing")]
        let result = crate::spans::attempt($compensation, $step, $attempt, async {
            $make.settle().await
        })
        .await;
        result
    }};
}
pub(super) use settle;

pub(super) fn exclusive_in_group<D>(info: &StepInfo<'_, D>) -> StepError {
    // `build()` rejects such a branch; reaching this is an engine bug,
    // reported as an error rather than a panic.
    StepError::new(format!(
        "internal error: step `{}` takes `&mut` context inside a parallel group",
        info.step
    ))
}

/// Calls sync user code as [`catch`] does, in `turn` if any.
#[inline]
fn blocking<T>(
    turn: Option<Turn<'_>>,
    f: impl FnOnce() -> Result<T, StepError>,
) -> Result<T, StepError> {
    match turn {
        Some(turn) => turn.call(|| catch(f)),
        None => catch(f),
    }
}

/// Calls user code, turning a panic into a step error of unknown outcome.
/// Inlined: out of line, it was a call, its frame and its result written
/// to memory around every step's call, more than the landing pad it puts
/// in its caller costs (docs/PERFORMANCE.md).
///
/// The call's error is set aside as it returns, and only its output
/// crosses the panic guard: `catch_unwind` copies what its closure
/// returns out of a union, word by word, and a `Result<_, StepError>`
/// just written by the step's call has its variant in a byte of the
/// error's flags, so the copy's last word waited for that byte's store
/// to retire (perf: about a third of the sync forward loop's samples).
/// An `Option` of the output is written and copied whole.
#[inline(always)]
pub(super) fn catch<T>(f: impl FnOnce() -> Result<T, StepError>) -> Result<T, StepError> {
    let mut error = None;
    let caught = catch_unwind(AssertUnwindSafe(|| match f() {
        Ok(out) => Some(out),
        Err(e) => {
            error = Some(e);
            None
        }
    }));
    match caught {
        Ok(Some(out)) => Ok(out),
        // `error` is set whenever the output is not (the fallback is
        // never taken).
        Ok(None) => Err(error.unwrap_or_else(StepError::interrupted)),
        Err(panic) => Err(StepError::panicked(&*panic)),
    }
}

/// One attempt of a compensation, panics caught, under its step's undo
/// `timeout` (an async one only: `build()` refuses one for a sync
/// compensation); a sync one passes `turn`, as in [`attempt_action`].
/// Inlined, as [`attempt_action`] is.
#[inline(always)]
pub(super) fn attempt_undo<'a, C, D, A: Access<C>>(
    undo: &'a Undo<C, D>,
    ctx: &'a mut A,
    output: Option<&'a (dyn std::any::Any + Send + Sync)>,
    info: &'a StepInfo<'a, D>,
    turn: Option<Turn<'_>>,
    timeout: Option<Duration>,
) -> Attempt<'a, ()> {
    let future = match undo {
        Undo::Sync(undo) => {
            return Attempt::Done(match A::exclusive(ctx) {
                Some(ctx) => blocking(turn, || undo(ctx, output, info)),
                None => Err(exclusive_in_group(info)),
            });
        }
        Undo::SharedSync(undo) => {
            return Attempt::Done(blocking(turn, || undo(A::shared(ctx), output, info)));
        }
        Undo::Async(undo) => match A::exclusive(ctx) {
            Some(ctx) => catch(move || Ok(undo(ctx, output, info))),
            None => Err(exclusive_in_group(info)),
        },
        Undo::SharedAsync(undo) => {
            let ctx = A::shared(ctx);
            catch(move || Ok(undo(ctx, output, info)))
        }
    };
    match (future, timeout) {
        (Ok(future), None) => Attempt::Pending(Running::Unit(CatchUnwind(future))),
        // Boxed with its timer, as an action's: only compensations with a
        // timeout pay for it. No brakes: a compensation always finishes,
        // or times out.
        (Ok(future), Some(_)) => {
            let unbraked = Brakes {
                cancel: None,
                group: None,
                droppable: false,
            };
            Attempt::Pending(Running::Guarded(Box::pin(guarded(
                CatchUnwind(future),
                timeout,
                unbraked,
            ))))
        }
        (Err(error), _) => Attempt::Done(Err(error)),
    }
}

/// Awaits an attempt's future under its timeout, and drops it when a brake
/// is applied (only given for cancel-safe steps).
pub(super) async fn guarded<F: Future<Output = Result<T, StepError>> + Unpin, T>(
    future: CatchUnwind<F>,
    timeout: Option<Duration>,
    brakes: Brakes<'_>,
) -> Result<T, StepError> {
    let timed = async move {
        match timeout {
            Some(limit) => match tokio::time::timeout(limit, future).await {
                Ok(result) => result,
                Err(_) => Err(StepError::timeout(limit)),
            },
            None => future.await,
        }
    };
    if !brakes.droppable || (brakes.cancel.is_none() && brakes.group.is_none()) {
        return timed.await;
    }
    let braked = async {
        match (brakes.cancel, brakes.group) {
            (Some(a), Some(b)) => {
                tokio::select! {
                    () = a.cancelled() => {},
                    () = b.cancelled() => {},
                }
            }
            (Some(a), None) | (None, Some(a)) => a.cancelled().await,
            (None, None) => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        result = timed => result,
        () = braked => Err(StepError::interrupted()),
    }
}

/// Polls a boxed future, turning a panic into a step error of unknown
/// outcome.
pub(super) struct CatchUnwind<F>(F);

impl<F: Future<Output = Result<T, StepError>> + Unpin, T> Future for CatchUnwind<F> {
    type Output = Result<T, StepError>;

    /// Inlined, as [`Running`]'s poll is.
    #[inline(always)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        match catch_unwind(AssertUnwindSafe(|| Pin::new(&mut self.0).poll(cx))) {
            Ok(poll) => poll,
            Err(panic) => Poll::Ready(Err(StepError::panicked(&*panic))),
        }
    }
}
