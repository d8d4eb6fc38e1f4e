//! A step as the executor runs it: its action and compensation erased to
//! one type each, whatever their form (sync or async, exclusive or
//! shared context), and the codec of its output.

use super::{BoxFuture, Metadata, StepInfo};
use crate::error::StepError;
use crate::policy::RetryPolicy;
pub use crate::status::StepKind;
use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

pub(crate) type Output = Box<dyn Any + Send + Sync>;
pub(crate) type SyncAction<C, D> =
    dyn Fn(&mut C, &StepInfo<'_, D>) -> Result<Output, StepError> + Send + Sync;
type AsyncAction<C, D> =
    dyn for<'a> Fn(&'a mut C, &'a StepInfo<'a, D>) -> ActionFuture<'a> + Send + Sync;
/// An async action whose future already has the executor's types but for
/// the output, `()`: the user's own future, awaited without a second box
/// around it to erase its output (see [`Action::AsyncUnit`]).
pub(crate) type AsyncUnitAction<C, D> = dyn for<'a> Fn(&'a mut C, &'a StepInfo<'a, D>) -> BoxFuture<'a, Result<(), StepError>>
    + Send
    + Sync;
pub(crate) type SyncUndo<C, D> = dyn Fn(&mut C, Option<&(dyn Any + Send + Sync)>, &StepInfo<'_, D>) -> Result<(), StepError>
    + Send
    + Sync;
type AsyncUndo<C, D> = dyn for<'a> Fn(
        &'a mut C,
        Option<&'a (dyn Any + Send + Sync)>,
        &'a StepInfo<'a, D>,
    ) -> BoxFuture<'a, Result<(), StepError>>
    + Send
    + Sync;

type SharedSyncAction<C, D> =
    dyn Fn(&C, &StepInfo<'_, D>) -> Result<Output, StepError> + Send + Sync;
type SharedAsyncAction<C, D> =
    dyn for<'a> Fn(&'a C, &'a StepInfo<'a, D>) -> ActionFuture<'a> + Send + Sync;
type SharedSyncUndo<C, D> = dyn Fn(&C, Option<&(dyn Any + Send + Sync)>, &StepInfo<'_, D>) -> Result<(), StepError>
    + Send
    + Sync;
type SharedAsyncUndo<C, D> = dyn for<'a> Fn(
        &'a C,
        Option<&'a (dyn Any + Send + Sync)>,
        &'a StepInfo<'a, D>,
    ) -> BoxFuture<'a, Result<(), StepError>>
    + Send
    + Sync;

/// A future of an action's result whose output is erased as it is polled:
/// every future of a `Result<T, StepError>` is one. A task's future is
/// boxed as this trait (see [`TaskFuture`](super::TaskFuture)), so that
/// its one box holds the task's own future, polled in place, where a
/// [`BoxFuture`] of the erased output needs a second future around it
/// (an `async` block, which moves the task's future into place at its
/// first poll and dispatches on its own state at every poll).
pub(crate) trait PollOutput: Send {
    fn poll_output(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Output, StepError>>;
}

impl<F, T> PollOutput for F
where
    F: Future<Output = Result<T, StepError>> + Send,
    T: Send + Sync + 'static,
{
    #[inline]
    fn poll_output(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Output, StepError>> {
        self.poll(cx)
            .map(|result| result.map(|out| Box::new(out) as Output))
    }
}

/// A boxed [`PollOutput`]: a future of an action's erased output.
pub(crate) struct TypedFuture<'a>(pub(crate) Pin<Box<dyn PollOutput + 'a>>);

impl Future for TypedFuture<'_> {
    type Output = Result<Output, StepError>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll_output(cx)
    }
}

/// The future of an async action: its output erased already (a
/// [`BoxFuture`]), or erased as it is polled (a task's, see
/// [`PollOutput`]). Either way one box.
pub(crate) enum ActionFuture<'a> {
    Erased(BoxFuture<'a, Result<Output, StepError>>),
    Typed(TypedFuture<'a>),
}

impl Future for ActionFuture<'_> {
    type Output = Result<Output, StepError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            ActionFuture::Erased(future) => future.as_mut().poll(cx),
            ActionFuture::Typed(future) => Pin::new(future).poll(cx),
        }
    }
}

/// A step's action, type-erased: sync or async, taking the context
/// exclusively (`&mut C`) or shared (`&C`, as parallel branches must).
pub(crate) enum Action<C, D> {
    Sync(Box<SyncAction<C, D>>),
    Async(Box<AsyncAction<C, D>>),
    /// An async action on `&mut C` whose output is `()` and whose error a
    /// [`StepError`] ([`Step::new_async`](super::Step::new_async) with those
    /// types): the executor erases the output as it polls, so a step
    /// allocates one future (the user's) rather than two.
    AsyncUnit(Box<AsyncUnitAction<C, D>>),
    SharedSync(Box<SharedSyncAction<C, D>>),
    SharedAsync(Box<SharedAsyncAction<C, D>>),
}

impl<C, D> Action<C, D> {
    pub(crate) fn is_async(&self) -> bool {
        matches!(
            self,
            Action::Async(_) | Action::AsyncUnit(_) | Action::SharedAsync(_)
        )
    }

    /// The future of an async action on `&mut C`, its output erased: for
    /// callers that wrap an action in another (the test kit), where a
    /// second box does not matter. `None` for other actions.
    #[cfg(feature = "testkit")]
    pub(crate) fn call_async<'a>(
        &'a self,
        ctx: &'a mut C,
        info: &'a StepInfo<'a, D>,
    ) -> Option<BoxFuture<'a, Result<Output, StepError>>> {
        match self {
            Action::Async(f) => Some(match f(ctx, info) {
                ActionFuture::Erased(future) => future,
                typed => Box::pin(typed),
            }),
            Action::AsyncUnit(f) => {
                let future = f(ctx, info);
                Some(Box::pin(async move {
                    future.await.map(|()| Box::new(()) as Output)
                }))
            }
            _ => None,
        }
    }

    pub(crate) fn is_shared(&self) -> bool {
        matches!(self, Action::SharedSync(_) | Action::SharedAsync(_))
    }
}

/// A compensation, type-erased; the output arrives as `&dyn Any` and is
/// downcast to the step's own output type, which the typed builder
/// guarantees.
pub(crate) enum Undo<C, D> {
    Sync(Box<SyncUndo<C, D>>),
    Async(Box<AsyncUndo<C, D>>),
    SharedSync(Box<SharedSyncUndo<C, D>>),
    SharedAsync(Box<SharedAsyncUndo<C, D>>),
}

impl<C, D> Undo<C, D> {
    pub(crate) fn is_async(&self) -> bool {
        matches!(self, Undo::Async(_) | Undo::SharedAsync(_))
    }

    pub(crate) fn is_shared(&self) -> bool {
        matches!(self, Undo::SharedSync(_) | Undo::SharedAsync(_))
    }
}

/// A step, type-erased: what a [`Saga`](crate::Saga) holds.
pub(crate) struct StepDef<C, D> {
    pub(crate) name: super::Name,
    pub(crate) action: Action<C, D>,
    pub(crate) undo: Option<Undo<C, D>>,
    pub(crate) retry: RetryPolicy,
    pub(crate) undo_retry: Option<RetryPolicy>,
    pub(crate) timeout: Option<Duration>,
    /// Limits each attempt of an async compensation.
    pub(crate) undo_timeout: Option<Duration>,
    pub(crate) metadata: Metadata,
    pub(crate) cancel_safe: bool,
    pub(crate) pivot: bool,
    /// Set by the saga builder from the step's place.
    pub(crate) kind: StepKind,
    /// How a durable run stores the output: set for `()` outputs, and by
    /// [`Step::durable`] for others.
    pub(crate) codec: Option<OutputCodec>,
    /// The output's type name, for messages.
    pub(crate) output_type: &'static str,
}

/// Encodes and decodes a step's output for the durable log (JSON).
#[derive(Clone, Copy)]
pub(crate) struct OutputCodec {
    pub(crate) encode: fn(&(dyn Any + Send + Sync)) -> Result<String, String>,
    pub(crate) decode: fn(&str) -> Result<Output, String>,
}

impl OutputCodec {
    pub(super) fn of<T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static>()
    -> Self {
        OutputCodec {
            encode: |out| match out.downcast_ref::<T>() {
                Some(out) => serde_json::to_string(out).map_err(|e| e.to_string()),
                None => Err(format!(
                    "internal error: the output is not a `{}`",
                    std::any::type_name::<T>()
                )),
            },
            decode: |text| {
                serde_json::from_str::<T>(text)
                    .map(|out| Box::new(out) as Output)
                    .map_err(|e| e.to_string())
            },
        }
    }
}

/// Boxes an async action; taking the closure here gives it the
/// higher-ranked signature that a `let` binding cannot.
pub(crate) fn erase_async<C, D, F>(action: F) -> Action<C, D>
where
    F: for<'a> Fn(&'a mut C, &'a StepInfo<'a, D>) -> BoxFuture<'a, Result<Output, StepError>>
        + Send
        + Sync
        + 'static,
{
    erase_async_typed(move |ctx, info| ActionFuture::Erased(action(ctx, info)))
}

/// Boxes an async action whose future erases its output as it is polled
/// (see [`erase_async`]).
pub(crate) fn erase_async_typed<C, D, F>(action: F) -> Action<C, D>
where
    F: for<'a> Fn(&'a mut C, &'a StepInfo<'a, D>) -> ActionFuture<'a> + Send + Sync + 'static,
{
    Action::Async(Box::new(action))
}

/// Boxes an async compensation (see [`erase_async`]).
pub(crate) fn erase_async_undo<C, D, F>(undo: F) -> Undo<C, D>
where
    F: for<'a> Fn(
            &'a mut C,
            Option<&'a (dyn Any + Send + Sync)>,
            &'a StepInfo<'a, D>,
        ) -> BoxFuture<'a, Result<(), StepError>>
        + Send
        + Sync
        + 'static,
{
    Undo::Async(Box::new(undo))
}

/// Boxes an async action on a shared context (see [`erase_async`]).
pub(crate) fn erase_shared_async<C, D, F>(action: F) -> Action<C, D>
where
    F: for<'a> Fn(&'a C, &'a StepInfo<'a, D>) -> BoxFuture<'a, Result<Output, StepError>>
        + Send
        + Sync
        + 'static,
{
    erase_shared_async_typed(move |ctx, info| ActionFuture::Erased(action(ctx, info)))
}

/// [`erase_shared_async`] for an action whose future erases its output as
/// it is polled.
pub(crate) fn erase_shared_async_typed<C, D, F>(action: F) -> Action<C, D>
where
    F: for<'a> Fn(&'a C, &'a StepInfo<'a, D>) -> ActionFuture<'a> + Send + Sync + 'static,
{
    Action::SharedAsync(Box::new(action))
}

/// Boxes an async compensation on a shared context (see [`erase_async`]).
pub(crate) fn erase_shared_async_undo<C, D, F>(undo: F) -> Undo<C, D>
where
    F: for<'a> Fn(
            &'a C,
            Option<&'a (dyn Any + Send + Sync)>,
            &'a StepInfo<'a, D>,
        ) -> BoxFuture<'a, Result<(), StepError>>
        + Send
        + Sync
        + 'static,
{
    Undo::SharedAsync(Box::new(undo))
}

pub(super) fn erase_sync<C, D, T, E, F>(action: F) -> Action<C, D>
where
    T: Send + Sync + 'static,
    E: Into<StepError>,
    F: Fn(&mut C, &StepInfo<'_, D>) -> Result<T, E> + Send + Sync + 'static,
{
    Action::Sync(Box::new(move |ctx, info| match action(ctx, info) {
        Ok(out) => Ok(Box::new(out) as Output),
        Err(e) => Err(e.into()),
    }))
}

/// `value` as a `U`, when `T` and `U` are the same type; `value` back
/// otherwise. Lets a generic constructor take a cheaper path for one
/// instance of its type parameters, without `unsafe`.
pub(crate) fn same_type<T: 'static, U: 'static>(value: T) -> Result<U, T> {
    let mut slot = Some(value);
    let taken = (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<U>>()
        .and_then(Option::take);
    match (taken, slot) {
        (Some(same), _) => Ok(same),
        (None, Some(value)) => Err(value),
        // The slot is emptied only by a downcast that succeeded, which
        // returned its value.
        (None, None) => unreachable!("`same_type` lost its value"),
    }
}
