//! The [`Task`] trait: a step written as a type (what `#[saga_task]`
//! generates, and what a user may write by hand), with its action and
//! undo as function pointers in one of four shapes ([`TaskFn`],
//! [`UndoFn`]) and its options as associated consts.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use super::def::{ActionFuture, PollOutput, TypedFuture};
use super::{BoxFuture, StepInfo};
use crate::error::StepError;
use crate::policy::{RetryOn, RetryPolicy};

/// A step written as a type: its name, options, action and undo are
/// associated items, so that `saga!` checks a saga of tasks at compile
/// time (a duplicate name, an undo on or after the pivot, a timeout on a
/// sync action, a task taking `&mut C` in a `parallel` group, an undo
/// receiving another output) and [`SagaBuilder::build`] checks the same
/// rules at run time. `#[saga_task]` generates exactly this impl on a
/// function's twin type; a hand-written one is checked the same way.
///
/// A task is its type: a unit struct (or one of `PhantomData`s) whose
/// value is a marker. Nothing reads a task value's fields, so a task
/// type with fields is refused at compile time; a step configured by
/// values is a [`Step::new`](crate::Step::new) closure that captures them,
/// and one task twice in a saga is two steps
/// [`named`](crate::Step::named) apart.
///
/// `C` is the saga's context, `D` its dependencies (see
/// [`Provides`](crate::Provides)); a task that needs no dependencies can
/// implement `Task<C, D>` for every `D`.
///
/// The action and the undo are plain function pointers: a sync task runs
/// as a plain call, without a future; an async one returns a boxed
/// future. The error type is [`StepError`]; convert yours with `?` or
/// `.map_err(Into::into)` (and mark it
/// [`outcome_unknown`](StepError::outcome_unknown) when it applies).
///
/// ```
/// use saga_core::{Saga, StepError, Task, TaskFn, UndoFn};
///
/// #[derive(Default)]
/// struct Order { id: Option<u64> }
///
/// struct CreateOrder;
///
/// impl Task<Order> for CreateOrder {
///     type Output = u64;
///     const NAME: &'static str = "create_order";
///     const ACTION: TaskFn<Order, (), u64> = TaskFn::Exclusive(|order, _info| {
///         order.id = Some(1001);
///         Ok(1001)
///     });
///     const UNDO: Option<UndoFn<Order, (), u64>> = Some(UndoFn::Exclusive(|order, _id, _info| {
///         order.id = None;
///         Ok(())
///     }));
/// }
///
/// struct Ship;
///
/// impl Task<Order> for Ship {
///     type Output = ();
///     const NAME: &'static str = "ship";
///     const PIVOT: bool = true;
///     const ACTION: TaskFn<Order, (), ()> =
///         TaskFn::Exclusive(|_, _| Err(StepError::new("no courier")));
/// }
///
/// let saga = Saga::builder("order").task(CreateOrder).task(Ship).build()?;
/// let mut order = Order::default();
/// assert!(saga.run_blocking(&mut order).is_err());
/// assert_eq!(order.id, None); // created, then undone
/// # Ok::<(), saga_core::BuildError>(())
/// ```
///
/// [`SagaBuilder::build`]: crate::SagaBuilder::build
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a step of a saga whose context is `{C}` and dependencies `{D}`",
    label = "not a `#[saga_task]` function taking `&mut {C}` or `&{C}`, nor a type implementing `Task<{C}, {D}>`",
    note = "a step is a `#[saga_task]` function whose first parameter is the saga's context (its `context: ..`, by default `saga_core::Context`), or a type implementing `saga_core::Task` by hand",
    note = "a compensation (a function taking `Option<&T>`) is not a step: name it after its step, as `step create_order => undo cancel_order`"
)]
pub trait Task<C, D = ()>: 'static {
    /// What the action returns and the undo receives.
    type Output: Send + Sync + 'static;

    /// The step's name, unique in its saga; it goes into the step's
    /// [idempotency key](StepInfo::idempotency_key), so it never contains
    /// `/`.
    const NAME: &'static str;

    /// Whether the step is the pivot, the point of no return (default:
    /// `false`). A pivot has no undo.
    const PIVOT: bool = false;

    /// The action's retry policy (default: one attempt); `saga!`'s own
    /// options override it field by field.
    const RETRY: RetrySpec = RetrySpec::NONE;

    /// The undo's retry policy, starting from [`default_undo_retry`]'s
    /// backoff, its number of attempts the saga's unless given (default:
    /// the saga's policy, [`SagaBuilder::undo_retry`](crate::SagaBuilder::undo_retry)).
    const UNDO_RETRY: RetrySpec = RetrySpec::NONE;

    /// Limits each attempt of an async action (default: none); a sync
    /// action cannot be interrupted, so a timeout on one is refused.
    const TIMEOUT: Option<Duration> = None;

    /// Limits each attempt of an async undo (default: none; see
    /// [`Step::undo_timeout`](crate::Step::undo_timeout)); the action's
    /// [`TIMEOUT`](Self::TIMEOUT) does not apply to the undo.
    const UNDO_TIMEOUT: Option<Duration> = None;

    /// Free-form metadata (default: none).
    const METADATA: &'static [(&'static str, &'static str)] = &[];

    /// Whether an async action may be dropped mid-flight when its run is
    /// cancelled before the pivot (see [`Step::cancel_safe`](crate::Step::cancel_safe)).
    const CANCEL_SAFE: bool = false;

    /// The action.
    const ACTION: TaskFn<C, D, Self::Output>;

    /// The undo, if the step has one (default: none, a step with nothing
    /// to undo). It receives the action's output: `Some` when the action
    /// succeeded, `None` when its outcome is unknown (see
    /// [`Step::undo`](crate::Step::undo)).
    const UNDO: Option<UndoFn<C, D, Self::Output>> = None;

    /// Not for hand-written impls: `#[saga_task]`'s impl overrides it to
    /// make the step [`durable`](crate::Step::durable) when its output
    /// implements serde's traits, a choice only a concrete type allows.
    #[doc(hidden)]
    fn __saga_codec(step: crate::Step<C, Self::Output, D>) -> crate::Step<C, Self::Output, D>
    where
        Self: Sized,
    {
        step
    }

    /// Not for hand-written impls: the step `saga!` adds, named and
    /// configured by `saga!`'s options over the task's own (all but the
    /// pivot, which `saga!` reads from [`PIVOT`](Self::PIVOT)).
    #[doc(hidden)]
    fn __saga_step(dsl: &Dsl) -> crate::Step<C, Self::Output, D>
    where
        Self: Sized,
        C: 'static,
        D: 'static,
    {
        let step = crate::Step::task_named::<Self>(dsl.name.unwrap_or(Self::NAME));
        let mut step = Self::__saga_codec(step).retry(dsl.retry.or(Self::RETRY).policy());
        let undo_retry = dsl.undo_retry.or(Self::UNDO_RETRY);
        if undo_retry.is_set() {
            step = step.undo_retry(undo_retry.policy_from(undo_retry_base()));
        }
        if let Some(timeout) = dsl.timeout.or(Self::TIMEOUT) {
            step = step.timeout(timeout);
        }
        if let Some(timeout) = dsl.undo_timeout.or(Self::UNDO_TIMEOUT) {
            step = step.undo_timeout(timeout);
        }
        for (key, value) in Self::METADATA.iter().chain(dsl.metadata) {
            step = step.metadata(*key, *value);
        }
        if Self::CANCEL_SAFE {
            step = step.cancel_safe();
        }
        step
    }
}

/// What `saga!` says about one step, beyond its task (`__private`).
#[doc(hidden)]
pub struct Dsl {
    /// `name "..."`.
    pub name: Option<&'static str>,
    /// `retry`, `backoff`, `max_backoff`, `retry_if`.
    pub retry: RetrySpec,
    /// `undo_retry`.
    pub undo_retry: RetrySpec,
    /// `timeout`.
    pub timeout: Option<Duration>,
    /// `undo_timeout`.
    pub undo_timeout: Option<Duration>,
    /// `metadata(..)`.
    pub metadata: &'static [(&'static str, &'static str)],
    /// `pivot` rather than `step`.
    pub pivot: bool,
}

/// Whether an undo, if any, takes the context shared: `true` without one
/// (`saga!`'s check of a `parallel` branch's compensation).
#[doc(hidden)]
pub const fn undo_shared<C, D, T>(undo: &Option<UndoFn<C, D, T>>) -> bool {
    match undo {
        Some(undo) => undo.is_shared(),
        None => true,
    }
}

/// Whether an undo, if any, is async: `true` without one (`saga!`'s check
/// of an `undo_timeout`, which another check requires an undo for).
#[doc(hidden)]
pub const fn undo_async<C, D, T>(undo: &Option<UndoFn<C, D, T>>) -> bool {
    match undo {
        Some(undo) => undo.is_async(),
        None => true,
    }
}

/// A sync action taking the context exclusively.
type SyncFn<C, D, T> = fn(&mut C, &StepInfo<'_, D>) -> Result<T, StepError>;
/// An async action taking the context exclusively.
type AsyncFn<C, D, T> = for<'a> fn(&'a mut C, &'a StepInfo<'a, D>) -> TaskFuture<'a, T>;
/// A sync action taking the context shared.
type SharedFn<C, D, T> = fn(&C, &StepInfo<'_, D>) -> Result<T, StepError>;
/// An async action taking the context shared.
type SharedAsyncFn<C, D, T> = for<'a> fn(&'a C, &'a StepInfo<'a, D>) -> TaskFuture<'a, T>;

/// A [`Task`]'s action, in one of four shapes: sync or async, taking the
/// context exclusively (`&mut C`) or shared (`&C`, the only kind a
/// [`Parallel`](crate::Parallel) group runs, and an ordinary step too).
///
/// The sync shapes are `Exclusive` and `Shared`, not `Sync`: a public
/// variant named `Sync` would make rustc spell the marker trait
/// `std::marker::Sync` in every error of a crate that uses this one.
pub enum TaskFn<C, D, T> {
    /// `fn(&mut C, &StepInfo<D>) -> Result<T, StepError>`, run as a plain
    /// call.
    Exclusive(SyncFn<C, D, T>),
    /// `fn(&mut C, &StepInfo<D>) -> TaskFuture<T>`.
    ExclusiveAsync(AsyncFn<C, D, T>),
    /// `fn(&C, &StepInfo<D>) -> Result<T, StepError>`.
    Shared(SharedFn<C, D, T>),
    /// `fn(&C, &StepInfo<D>) -> TaskFuture<T>`.
    SharedAsync(SharedAsyncFn<C, D, T>),
}

impl<C, D, T> TaskFn<C, D, T> {
    /// Whether the action is async.
    pub const fn is_async(&self) -> bool {
        matches!(self, TaskFn::ExclusiveAsync(_) | TaskFn::SharedAsync(_))
    }

    /// Whether the action takes the context shared (`&C`).
    pub const fn is_shared(&self) -> bool {
        matches!(self, TaskFn::Shared(_) | TaskFn::SharedAsync(_))
    }
}

impl<C, D, T> Clone for TaskFn<C, D, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C, D, T> Copy for TaskFn<C, D, T> {}

/// The future an async [`Task`] action returns ([`TaskFn::ExclusiveAsync`],
/// [`TaskFn::SharedAsync`]): `TaskFuture::new(async move { .. })`.
///
/// It boxes the action's future once, with what the executor does to its
/// output inside the same box, so that an attempt of an async task costs
/// one allocation; a `BoxFuture` of the action's own output would need a
/// second future, boxed again, around it. It is also a future of the
/// action's result, for calling a task's action by hand (in a unit test).
///
/// ```
/// use saga_core::{ExecutionId, StepError, StepInfo, Task, TaskFn, TaskFuture};
///
/// struct Quote;
///
/// impl Task<u32> for Quote {
///     type Output = u32;
///     const NAME: &'static str = "quote";
///     const ACTION: TaskFn<u32, (), u32> = TaskFn::ExclusiveAsync(|total, _info| {
///         TaskFuture::new(async move {
///             *total += 7;
///             Ok::<_, StepError>(*total)
///         })
///     });
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let TaskFn::ExclusiveAsync(quote) = Quote::ACTION else { unreachable!() };
/// let id = ExecutionId::new("order-1");
/// let mut total = 0;
/// assert_eq!(quote(&mut total, &StepInfo::new("order", &id, "quote", 1)).await?, 7);
/// # Ok::<(), StepError>(())
/// # }).unwrap();
/// ```
pub struct TaskFuture<'a, T> {
    /// The action's own future, its output erased as it is polled.
    inner: Pin<Box<dyn PollOutput + 'a>>,
    _output: PhantomData<fn() -> T>,
}

impl<'a, T: Send + Sync + 'static> TaskFuture<'a, T> {
    /// Boxes an async action's future.
    pub fn new(future: impl Future<Output = Result<T, StepError>> + Send + 'a) -> Self {
        TaskFuture {
            inner: Box::pin(future),
            _output: PhantomData,
        }
    }
}

impl<'a, T> TaskFuture<'a, T> {
    /// The boxed future as the executor awaits it.
    pub(crate) fn into_erased(self) -> ActionFuture<'a> {
        ActionFuture::Typed(TypedFuture(self.inner))
    }
}

impl<T: 'static> Future for TaskFuture<'_, T> {
    type Output = Result<T, StepError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll_output(cx).map(|result| {
            result.and_then(|out| match out.downcast::<T>() {
                Ok(out) => Ok(*out),
                // `new` boxed a `T`: unreachable, reported rather than a panic.
                Err(_) => Err(StepError::new(format!(
                    "internal error: a task's output is not a `{}`",
                    std::any::type_name::<T>()
                ))),
            })
        })
    }
}

impl<T> std::fmt::Debug for TaskFuture<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskFuture")
            .field("output", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}

/// A sync undo taking the context exclusively.
type SyncUndoFn<C, D, T> = fn(&mut C, Option<&T>, &StepInfo<'_, D>) -> Result<(), StepError>;
/// An async undo taking the context exclusively.
type AsyncUndoFn<C, D, T> = for<'a> fn(
    &'a mut C,
    Option<&'a T>,
    &'a StepInfo<'a, D>,
) -> BoxFuture<'a, Result<(), StepError>>;
/// A sync undo taking the context shared.
type SharedUndoFn<C, D, T> = fn(&C, Option<&T>, &StepInfo<'_, D>) -> Result<(), StepError>;
/// An async undo taking the context shared.
type SharedAsyncUndoFn<C, D, T> =
    for<'a> fn(&'a C, Option<&'a T>, &'a StepInfo<'a, D>) -> BoxFuture<'a, Result<(), StepError>>;

/// A [`Task`]'s undo, in the four shapes of [`TaskFn`], receiving the
/// action's output as `Option<&T>`.
pub enum UndoFn<C, D, T> {
    /// Sync, `&mut C`.
    Exclusive(SyncUndoFn<C, D, T>),
    /// Async, `&mut C`.
    ExclusiveAsync(AsyncUndoFn<C, D, T>),
    /// Sync, `&C`.
    Shared(SharedUndoFn<C, D, T>),
    /// Async, `&C`.
    SharedAsync(SharedAsyncUndoFn<C, D, T>),
}

impl<C, D, T> UndoFn<C, D, T> {
    /// Whether the undo is async.
    pub const fn is_async(&self) -> bool {
        matches!(self, UndoFn::ExclusiveAsync(_) | UndoFn::SharedAsync(_))
    }

    /// Whether the undo takes the context shared (`&C`).
    pub const fn is_shared(&self) -> bool {
        matches!(self, UndoFn::Shared(_) | UndoFn::SharedAsync(_))
    }
}

impl<C, D, T> Clone for UndoFn<C, D, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C, D, T> Copy for UndoFn<C, D, T> {}

/// A retry policy as a [`Task`] (or `#[saga_task(retry(..))]`, or
/// `saga!`) says it: every field optional, so that two can be merged
/// field by field, and a `const`.
#[derive(Debug, Clone, Copy)]
pub struct RetrySpec {
    /// Attempts in all.
    pub attempts: Option<u32>,
    /// Delay before the second attempt.
    pub backoff: Option<Duration>,
    /// Cap on the delay.
    pub max_backoff: Option<Duration>,
    /// Which errors are retried (see [`RetryPolicy::retry_if`]).
    pub retry_if: Option<fn(&StepError) -> bool>,
}

impl RetrySpec {
    /// Nothing said.
    pub const NONE: RetrySpec = RetrySpec {
        attempts: None,
        backoff: None,
        max_backoff: None,
        retry_if: None,
    };

    /// `attempts` attempts in all, the rest unsaid.
    pub const fn attempts(attempts: u32) -> RetrySpec {
        RetrySpec {
            attempts: Some(attempts),
            ..RetrySpec::NONE
        }
    }

    /// `self`, with the fields it leaves out taken from `fallback`.
    #[must_use]
    pub const fn or(self, fallback: RetrySpec) -> RetrySpec {
        RetrySpec {
            attempts: match self.attempts {
                Some(n) => Some(n),
                None => fallback.attempts,
            },
            backoff: match self.backoff {
                Some(d) => Some(d),
                None => fallback.backoff,
            },
            max_backoff: match self.max_backoff {
                Some(d) => Some(d),
                None => fallback.max_backoff,
            },
            retry_if: match self.retry_if {
                Some(f) => Some(f),
                None => fallback.retry_if,
            },
        }
    }

    /// Whether anything was said.
    pub const fn is_set(&self) -> bool {
        self.attempts.is_some()
            || self.backoff.is_some()
            || self.max_backoff.is_some()
            || self.retry_if.is_some()
    }

    /// The policy, starting from [`RetryPolicy::default`].
    pub fn policy(&self) -> RetryPolicy {
        self.policy_from(RetryPolicy::default())
    }

    /// The policy, starting from `base`: an undo's retries start from
    /// [`default_undo_retry`]'s backoff, so `undo_retry 5` keeps it.
    pub fn policy_from(&self, base: RetryPolicy) -> RetryPolicy {
        let mut policy = base;
        if let Some(n) = self.attempts {
            policy = policy.with_max_attempts(n);
        }
        if let Some(d) = self.backoff {
            policy = policy.with_backoff(d);
        }
        if let Some(d) = self.max_backoff {
            policy = policy.with_max_backoff(d);
        }
        if let Some(predicate) = self.retry_if {
            policy = policy.retry_if(predicate);
        }
        policy
    }
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec::NONE
    }
}

/// The compensation retry policy a saga starts with: 3 attempts, every error
/// retried, 100 ms backoff doubling up to 5 s. Compensations are retried by
/// default because a compensation that gives up leaves the run stuck.
pub fn default_undo_retry() -> RetryPolicy {
    undo_retry_base().with_max_attempts(3)
}

/// [`default_undo_retry`] without its number of attempts: what an undo's
/// `undo_retry` options start from, so that one without a number takes
/// the saga's when it is built, as the builder's `Step::undo_retry` does.
pub(crate) fn undo_retry_base() -> RetryPolicy {
    RetryPolicy::new()
        .with_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_secs(5))
        .retry_on(RetryOn::Any)
}
