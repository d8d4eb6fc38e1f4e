//! Steps: [`Step`] (the builder of one step), [`StepInfo`] (what a step
//! knows about its run), the [`Task`] trait and [`Provides`].

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use crate::error::StepError;
use crate::id::ExecutionId;
use crate::policy::RetryPolicy;
pub use crate::status::StepKind;

mod def;
mod provides;
mod task;

pub use crate::name::Name;
pub(crate) use def::{
    Action, ActionFuture, Output, OutputCodec, StepDef, SyncAction, SyncUndo, TypedFuture, Undo,
    erase_async, erase_async_undo, erase_shared_async, erase_shared_async_undo,
};
use def::{AsyncUnitAction, erase_sync, same_type};
use def::{erase_async_typed, erase_shared_async_typed};
pub use provides::Provides;
#[doc(hidden)]
pub use task::{Dsl, undo_async, undo_shared};
pub use task::{RetrySpec, Task, TaskFn, TaskFuture, UndoFn, default_undo_retry};

/// A boxed, `Send` future: what async steps and compensations return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`Step::new_async`]'s action, boxed as it is (before its output is
/// erased).
type AsyncActionOf<C, D, T, E> =
    dyn for<'a> Fn(&'a mut C, &'a StepInfo<'a, D>) -> BoxFuture<'a, Result<T, E>> + Send + Sync;

/// [`Step::undo_async`]'s compensation, boxed as it is.
type AsyncUndoOf<C, D, T, E> = dyn for<'a> Fn(&'a mut C, Option<&'a T>, &'a StepInfo<'a, D>) -> BoxFuture<'a, Result<(), E>>
    + Send
    + Sync;

/// A step's metadata: free-form string pairs for logs, diagrams and tools.
pub type Metadata = BTreeMap<String, String>;

/// What a step or compensation knows of the run it is part of.
///
/// Pass [`idempotency_key`](StepInfo::idempotency_key) to remote services:
/// it is the same for every attempt of the step in this execution, and for
/// its compensation, so a repeated call can be recognised and absorbed.
///
/// A durable saga (run by a [`SagaEngine`](crate::SagaEngine)) invokes each
/// step and compensation *at least once*: one cut off by a crash runs again
/// after recovery, with the same key and the same attempt number. The key is
/// what makes its effect happen once.
pub struct StepInfo<'a, D = ()> {
    pub(crate) saga: &'a str,
    pub(crate) execution_id: &'a ExecutionId,
    pub(crate) step: &'a str,
    pub(crate) attempt: u32,
    pub(crate) dependencies: &'a D,
}

impl<D> Clone for StepInfo<'_, D> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<D> Copy for StepInfo<'_, D> {}

impl<D> std::fmt::Debug for StepInfo<'_, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepInfo")
            .field("saga", &self.saga)
            .field("execution_id", &self.execution_id)
            .field("step", &self.step)
            .field("attempt", &self.attempt)
            .field("dependencies", &std::any::type_name::<D>())
            .finish()
    }
}

impl<'a> StepInfo<'a> {
    /// Information for calling a step by hand (in a unit test, say), with
    /// no dependencies; add them with
    /// [`with_dependencies`](Self::with_dependencies).
    pub fn new(saga: &'a str, execution_id: &'a ExecutionId, step: &'a str, attempt: u32) -> Self {
        StepInfo::of(saga, execution_id, step, attempt, &())
    }
}

impl<'a, D> StepInfo<'a, D> {
    /// What the executor hands a step.
    pub(crate) fn of(
        saga: &'a str,
        execution_id: &'a ExecutionId,
        step: &'a str,
        attempt: u32,
        dependencies: &'a D,
    ) -> Self {
        StepInfo {
            saga,
            execution_id,
            step,
            attempt,
            dependencies,
        }
    }

    /// The same information with `dependencies`: for calling a step that
    /// uses them by hand (in a unit test, say).
    pub fn with_dependencies<E>(self, dependencies: &'a E) -> StepInfo<'a, E> {
        StepInfo::of(
            self.saga,
            self.execution_id,
            self.step,
            self.attempt,
            dependencies,
        )
    }

    /// The saga's dependencies (its clients, pools, configuration): the
    /// value given to [`SagaEngine::with_dependencies`](crate::SagaEngine::with_dependencies)
    /// for a durable run, or to [`Saga::using`](crate::Saga::using) for an
    /// in-memory one; `&()` for a saga without dependencies. They are
    /// never logged.
    pub fn dependencies(&self) -> &'a D {
        self.dependencies
    }

    /// The saga's name.
    pub fn saga(&self) -> &'a str {
        self.saga
    }

    /// The execution's id.
    pub fn execution_id(&self) -> &'a ExecutionId {
        self.execution_id
    }

    /// The step's name.
    pub fn step(&self) -> &'a str {
        self.step
    }

    /// The attempt, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// `{execution_id}/{step}`: stable across attempts, retries and
    /// recovery; the compensation sees the same key as its step.
    ///
    /// # The key format is a versioned contract
    ///
    /// Format 1 (every release so far): the execution id, one `/`, the
    /// step's name, byte for byte, with no escaping. Keys are computed on
    /// each run, not stored, so a release that changed the format would
    /// hand the re-run steps of in-flight executions new keys and double
    /// their effects; a change would need a new format number and a
    /// migration note. Step names cannot contain `/` (a
    /// [`BuildError::SlashInStepName`](crate::BuildError::SlashInStepName),
    /// and a compile error in `saga!` and `#[saga_task]`), so the step is
    /// what follows the last `/`, while execution ids may contain `/`.
    ///
    /// Length: neither execution ids nor step names are bounded, so
    /// neither is the key (its length in bytes is the id's plus the
    /// name's plus one). Services often cap keys (255 bytes is common):
    /// keep ids and names short enough, or hash the key for such a
    /// service.
    pub fn idempotency_key(&self) -> String {
        format!("{}/{}", self.execution_id, self.step)
    }
}

/// One step of a saga, with its output type `T`, built before it is added
/// to a [`SagaBuilder`](crate::SagaBuilder).
///
/// ```
/// use saga_core::{Step, StepError, StepInfo};
///
/// struct Shop { reserved: Vec<u32> }
///
/// let reserve = Step::new("reserve", |shop: &mut Shop, _: &StepInfo<'_>| {
///     shop.reserved.push(7);
///     Ok::<_, StepError>(7_u32)
/// })
/// .undo(|shop: &mut Shop, item: Option<&u32>, _: &StepInfo<'_>| {
///     shop.reserved.retain(|i| Some(i) != item);
///     Ok::<_, StepError>(())
/// });
/// # let _ = reserve;
/// ```
pub struct Step<C, T = (), D = ()> {
    def: StepDef<C, D>,
    _output: PhantomData<fn() -> T>,
}

impl<C, T: 'static, D> Step<C, T, D> {
    /// Bounded by less than the constructors that call it, so that an
    /// output that is not `Send + Sync` is reported by them, or by
    /// `saga!`'s own checks, and not once more here (`__private`).
    pub(crate) fn from_action(name: Name, action: Action<C, D>) -> Self {
        Step {
            def: StepDef {
                name,
                action,
                undo: None,
                retry: RetryPolicy::default(),
                undo_retry: None,
                timeout: None,
                undo_timeout: None,
                metadata: Metadata::new(),
                cancel_safe: false,
                pivot: false,
                kind: StepKind::NoUndo,
                // A `()` output needs no opt-in: there is nothing to lose.
                codec: (std::any::TypeId::of::<T>() == std::any::TypeId::of::<()>())
                    .then(OutputCodec::of::<()>),
                output_type: std::any::type_name::<T>(),
            },
            _output: PhantomData,
        }
    }
}

impl<C: 'static, T: Send + Sync + 'static, D: 'static> Step<C, T, D> {
    /// A step whose action is a sync function of the context and the
    /// step's [`StepInfo`]. Its output is kept for its compensation.
    pub fn new<E, F>(name: impl Into<Name>, action: F) -> Self
    where
        E: Into<StepError>,
        F: Fn(&mut C, &StepInfo<'_, D>) -> Result<T, E> + Send + Sync + 'static,
    {
        Self::from_action(name.into(), erase_sync(action))
    }

    /// A step whose action is async: a function returning a boxed future
    /// (`Box::pin(async move { .. })`).
    pub fn new_async<E, F>(name: impl Into<Name>, action: F) -> Self
    where
        E: Into<StepError> + 'static,
        F: for<'a> Fn(&'a mut C, &'a StepInfo<'a, D>) -> BoxFuture<'a, Result<T, E>>
            + Send
            + Sync
            + 'static,
    {
        // An action with the executor's types but for its `()` output is
        // kept as it is: its future is the only one a step allocates.
        // Others are wrapped in a future that converts what they return.
        let action: Box<AsyncActionOf<C, D, T, E>> = Box::new(action);
        let action = match same_type::<_, Box<AsyncUnitAction<C, D>>>(action) {
            Ok(unit) => Action::AsyncUnit(unit),
            Err(action) => erase_async(move |ctx, info| {
                let fut = action(ctx, info);
                Box::pin(async move {
                    match fut.await {
                        Ok(out) => Ok(Box::new(out) as Output),
                        Err(e) => Err(e.into()),
                    }
                })
            }),
        };
        Self::from_action(name.into(), action)
    }

    /// A step whose sync action only reads the context (`&C`): the kind a
    /// [`Parallel`](crate::Parallel) group runs, since its branches share
    /// the context. It works as an ordinary step too.
    pub fn shared<E, F>(name: impl Into<Name>, action: F) -> Self
    where
        E: Into<StepError>,
        F: Fn(&C, &StepInfo<'_, D>) -> Result<T, E> + Send + Sync + 'static,
    {
        let action = move |ctx: &C, info: &StepInfo<'_, D>| match action(ctx, info) {
            Ok(out) => Ok(Box::new(out) as Output),
            Err(e) => Err(e.into()),
        };
        Self::from_action(name.into(), Action::SharedSync(Box::new(action)))
    }

    /// A step whose async action only reads the context (`&C`); see
    /// [`shared`](Self::shared).
    pub fn shared_async<E, F>(name: impl Into<Name>, action: F) -> Self
    where
        E: Into<StepError> + 'static,
        F: for<'a> Fn(&'a C, &'a StepInfo<'a, D>) -> BoxFuture<'a, Result<T, E>>
            + Send
            + Sync
            + 'static,
    {
        let action = erase_shared_async(move |ctx, info| {
            let fut = action(ctx, info);
            Box::pin(async move {
                match fut.await {
                    Ok(out) => Ok(Box::new(out) as Output),
                    Err(e) => Err(e.into()),
                }
            })
        });
        Self::from_action(name.into(), action)
    }

    /// Sets the compensation: a sync function of the context and this
    /// step's output, run on rollback if the step took effect (or may have).
    ///
    /// The output is `Some` when the step succeeded and `None` when its
    /// outcome is unknown (an attempt timed out, panicked, or returned an
    /// error marked [`StepError::outcome_unknown`]): the step may have taken
    /// effect without saying what it did, so the compensation must find out
    /// (by the [`StepInfo::idempotency_key`]) and tolerate "nothing to undo".
    #[must_use]
    pub fn undo<E, G>(mut self, undo: G) -> Self
    where
        E: Into<StepError>,
        G: Fn(&mut C, Option<&T>, &StepInfo<'_, D>) -> Result<(), E> + Send + Sync + 'static,
    {
        self.def.undo = Some(Undo::Sync(Box::new(
            move |ctx: &mut C, out: Option<&(dyn Any + Send + Sync)>, info: &StepInfo<'_, D>| {
                undo(ctx, downcast_output::<T, D>(out, info)?, info).map_err(Into::into)
            },
        )));
        self
    }

    /// Sets an async compensation (see [`undo`](Self::undo)).
    #[must_use]
    pub fn undo_async<E, G>(self, undo: G) -> Self
    where
        E: Into<StepError> + 'static,
        G: for<'a> Fn(
                &'a mut C,
                Option<&'a T>,
                &'a StepInfo<'a, D>,
            ) -> BoxFuture<'a, Result<(), E>>
            + Send
            + Sync
            + 'static,
    {
        // A compensation whose error is a `StepError` already is called as
        // it is: no second future to convert its error.
        let undo: Box<AsyncUndoOf<C, D, T, E>> = Box::new(undo);
        match same_type::<_, Box<AsyncUndoOf<C, D, T, StepError>>>(undo) {
            Ok(undo) => self.undo_converted_async(move |ctx, out, info| undo(ctx, out, info)),
            Err(undo) => self.undo_converted_async(move |ctx, out, info| {
                let fut = undo(ctx, out, info);
                Box::pin(async move { fut.await.map_err(Into::into) })
            }),
        }
    }

    /// [`undo_async`](Self::undo_async) for a compensation whose future
    /// already returns a `StepError`: no second box to convert it.
    pub(crate) fn undo_converted_async<G>(mut self, undo: G) -> Self
    where
        G: for<'a> Fn(
                &'a mut C,
                Option<&'a T>,
                &'a StepInfo<'a, D>,
            ) -> BoxFuture<'a, Result<(), StepError>>
            + Send
            + Sync
            + 'static,
    {
        self.def.undo = Some(erase_async_undo(
            move |ctx, out, info| match downcast_output::<T, D>(out, info) {
                Ok(out) => undo(ctx, out, info),
                Err(e) => Box::pin(std::future::ready(Err(e))),
            },
        ));
        self
    }

    /// Sets a sync compensation that only reads the context (`&C`), as the
    /// branches of a [`Parallel`](crate::Parallel) group need; see
    /// [`undo`](Self::undo).
    #[must_use]
    pub fn undo_shared<E, G>(mut self, undo: G) -> Self
    where
        E: Into<StepError>,
        G: Fn(&C, Option<&T>, &StepInfo<'_, D>) -> Result<(), E> + Send + Sync + 'static,
    {
        self.def.undo = Some(Undo::SharedSync(Box::new(
            move |ctx: &C, out: Option<&(dyn Any + Send + Sync)>, info: &StepInfo<'_, D>| {
                undo(ctx, downcast_output::<T, D>(out, info)?, info).map_err(Into::into)
            },
        )));
        self
    }

    /// Sets an async compensation that only reads the context (`&C`); see
    /// [`undo_shared`](Self::undo_shared).
    #[must_use]
    pub fn undo_shared_async<E, G>(self, undo: G) -> Self
    where
        E: Into<StepError> + 'static,
        G: for<'a> Fn(&'a C, Option<&'a T>, &'a StepInfo<'a, D>) -> BoxFuture<'a, Result<(), E>>
            + Send
            + Sync
            + 'static,
    {
        self.undo_converted_shared_async(move |ctx, out, info| {
            let fut = undo(ctx, out, info);
            Box::pin(async move { fut.await.map_err(Into::into) })
        })
    }

    /// [`undo_shared_async`](Self::undo_shared_async) for a compensation
    /// whose future already returns a `StepError` (see
    /// [`undo_converted_async`](Self::undo_converted_async)).
    pub(crate) fn undo_converted_shared_async<G>(mut self, undo: G) -> Self
    where
        G: for<'a> Fn(
                &'a C,
                Option<&'a T>,
                &'a StepInfo<'a, D>,
            ) -> BoxFuture<'a, Result<(), StepError>>
            + Send
            + Sync
            + 'static,
    {
        self.def.undo = Some(erase_shared_async_undo(
            move |ctx, out, info| match downcast_output::<T, D>(out, info) {
                Ok(out) => undo(ctx, out, info),
                Err(e) => Box::pin(std::future::ready(Err(e))),
            },
        ));
        self
    }

    /// Renamed to [`undo`](Self::undo).
    #[deprecated(since = "0.2.0", note = "renamed to `Step::undo`")]
    #[must_use]
    pub fn compensate<E, G>(self, undo: G) -> Self
    where
        E: Into<StepError>,
        G: Fn(&mut C, Option<&T>, &StepInfo<'_, D>) -> Result<(), E> + Send + Sync + 'static,
    {
        self.undo(undo)
    }

    /// Renamed to [`undo_async`](Self::undo_async).
    #[deprecated(since = "0.2.0", note = "renamed to `Step::undo_async`")]
    #[must_use]
    pub fn compensate_async<E, G>(self, undo: G) -> Self
    where
        E: Into<StepError> + 'static,
        G: for<'a> Fn(
                &'a mut C,
                Option<&'a T>,
                &'a StepInfo<'a, D>,
            ) -> BoxFuture<'a, Result<(), E>>
            + Send
            + Sync
            + 'static,
    {
        self.undo_async(undo)
    }

    /// Renamed to [`undo_shared`](Self::undo_shared).
    #[deprecated(since = "0.2.0", note = "renamed to `Step::undo_shared`")]
    #[must_use]
    pub fn compensate_shared<E, G>(self, undo: G) -> Self
    where
        E: Into<StepError>,
        G: Fn(&C, Option<&T>, &StepInfo<'_, D>) -> Result<(), E> + Send + Sync + 'static,
    {
        self.undo_shared(undo)
    }

    /// Renamed to [`undo_shared_async`](Self::undo_shared_async).
    #[deprecated(since = "0.2.0", note = "renamed to `Step::undo_shared_async`")]
    #[must_use]
    pub fn compensate_shared_async<E, G>(self, undo: G) -> Self
    where
        E: Into<StepError> + 'static,
        G: for<'a> Fn(&'a C, Option<&'a T>, &'a StepInfo<'a, D>) -> BoxFuture<'a, Result<(), E>>
            + Send
            + Sync
            + 'static,
    {
        self.undo_shared_async(undo)
    }
    /// Sets the retry policy of the step's action (default: one attempt,
    /// or [`forever`](RetryPolicy::forever) on a step after the pivot; a
    /// policy that does not set its number of attempts keeps that default).
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.def.retry = policy;
        self
    }

    /// Sets the retry policy of the step's compensation (default:
    /// [`SagaBuilder::undo_retry`](crate::SagaBuilder::undo_retry)). A
    /// policy that does not set its number of attempts takes the saga's
    /// (3 unless [`SagaBuilder::undo_retry`](crate::SagaBuilder::undo_retry)
    /// says otherwise).
    #[must_use]
    pub fn undo_retry(mut self, policy: RetryPolicy) -> Self {
        self.def.undo_retry = Some(policy);
        self
    }

    /// Renamed to [`undo_retry`](Self::undo_retry).
    #[deprecated(since = "0.2.0", note = "renamed to `Step::undo_retry`")]
    #[must_use]
    pub fn compensation_retry(self, policy: RetryPolicy) -> Self {
        self.undo_retry(policy)
    }

    /// Limits each attempt of an async step; an attempt that runs longer is
    /// dropped and counts as a failure of unknown outcome (retried by the
    /// step's policy like any other). The attempt is dropped where it
    /// awaits: an async step that blocks its thread (`std::thread::sleep`,
    /// a blocking client, a long computation) runs to its end first, and
    /// holds a runtime worker meanwhile; run such work in
    /// `tokio::task::spawn_blocking` and await it, or make the step sync. A sync
    /// step cannot be pre-empted, so a timeout on one is a
    /// [`BuildError::TimeoutOnSyncStep`](crate::BuildError::TimeoutOnSyncStep),
    /// and a zero timeout, which would fail every attempt before it starts,
    /// a [`BuildError::ZeroTimeout`](crate::BuildError::ZeroTimeout).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.def.timeout = Some(timeout);
        self
    }

    /// Limits each attempt of the step's async compensation, as
    /// [`timeout`](Self::timeout) limits its action's: an attempt that runs
    /// longer is dropped and counts as a failure of unknown outcome, retried
    /// by the compensation's policy ([`undo_retry`](Self::undo_retry)); when
    /// that gives up, the run ends stuck, as for any compensation that
    /// fails. The step's own `timeout` does not apply to its compensation:
    /// without this, a compensation that never answers holds the rollback
    /// in `compensating` for good.
    ///
    /// A sync compensation cannot be pre-empted, so a timeout for one is a
    /// [`BuildError::UndoTimeoutOnSyncUndo`](crate::BuildError::UndoTimeoutOnSyncUndo);
    /// one for a step without a compensation a
    /// [`BuildError::UndoTimeoutWithoutUndo`](crate::BuildError::UndoTimeoutWithoutUndo);
    /// a zero one a
    /// [`BuildError::ZeroUndoTimeout`](crate::BuildError::ZeroUndoTimeout).
    ///
    /// ```
    /// use std::time::Duration;
    /// use saga_core::{RetryPolicy, Step, StepError, StepInfo};
    ///
    /// let charge = Step::new_async("charge", |_: &mut (), _: &StepInfo<'_>| {
    ///     Box::pin(async { Ok::<_, StepError>(()) })
    /// })
    /// .undo_async(|_: &mut (), _: Option<&()>, _: &StepInfo<'_>| {
    ///     Box::pin(async { Ok::<_, StepError>(()) }) // the refund's call
    /// })
    /// .undo_timeout(Duration::from_secs(5))
    /// .undo_retry(RetryPolicy::attempts(5));
    /// # let _ = charge;
    /// ```
    #[must_use]
    pub fn undo_timeout(mut self, timeout: Duration) -> Self {
        self.def.undo_timeout = Some(timeout);
        self
    }

    /// Adds a metadata entry.
    #[must_use]
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.def.metadata.insert(key.into(), value.into());
        self
    }

    /// Marks an async step safe to drop mid-flight when its run is
    /// cancelled before the pivot (its outcome then counts as unknown, so it
    /// is compensated). Unmarked steps are always let finish.
    #[must_use]
    pub fn cancel_safe(mut self) -> Self {
        self.def.cancel_safe = true;
        self
    }

    /// Lets a durable saga (one run by a [`SagaEngine`](crate::SagaEngine))
    /// log this step's output, as JSON, with the step's success, so that a
    /// recovered rollback hands its compensation the same output.
    ///
    /// Steps returning `()` need not call it; the engine rejects, when the
    /// saga is registered, a step returning anything else without it
    /// ([`EngineError::OutputNotDurable`](crate::EngineError::OutputNotDurable)).
    /// In-memory runs ignore it. A `#[saga_task]` step gets it by itself
    /// when its output type implements the two serde traits.
    ///
    /// ```
    /// use saga_core::{Step, StepError, StepInfo};
    ///
    /// let charge = Step::new("charge", |_: &mut (), _: &StepInfo<'_>| {
    ///     Ok::<_, StepError>(String::from("charge-17"))
    /// })
    /// .durable();
    /// # let _ = charge;
    /// ```
    #[must_use]
    pub fn durable(mut self) -> Self
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        self.def.codec = Some(OutputCodec::of::<T>());
        self
    }

    /// The step's name.
    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// Renames the step: one [`Task`] (or one closure) used twice in a
    /// saga, as two steps with names of their own. The name goes into the
    /// step's [idempotency key](StepInfo::idempotency_key), and
    /// [`SagaBuilder::build`](crate::SagaBuilder::build) checks it as any
    /// step's (unique, no `/`).
    ///
    /// ```
    /// use saga_core::{Saga, Step, Task, TaskFn};
    ///
    /// struct Audit;
    /// impl Task<Vec<String>> for Audit {
    ///     type Output = ();
    ///     const NAME: &'static str = "audit";
    ///     const ACTION: TaskFn<Vec<String>, (), ()> =
    ///         TaskFn::Exclusive(|trail, info| Ok(trail.push(info.step().to_owned())));
    /// }
    ///
    /// let saga = Saga::builder("audited")
    ///     .step(Step::from_task(Audit).named("audit_before"))
    ///     .step(Step::from_task(Audit).named("audit_after"))
    ///     .build()?;
    /// let mut trail = Vec::new();
    /// saga.run_blocking(&mut trail)?;
    /// assert_eq!(trail, ["audit_before", "audit_after"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn named(mut self, name: impl Into<Name>) -> Self {
        self.def.name = name.into();
        self
    }

    pub(crate) fn into_def(self) -> StepDef<C, D> {
        self.def
    }

    pub(crate) fn into_pivot(mut self) -> StepDef<C, D> {
        self.def.pivot = true;
        self.def
    }
}

impl<C: 'static, T: Send + Sync + 'static, D: 'static> Step<C, T, D> {
    /// The step a [`Task`] describes: its name, action, undo and options.
    /// [`SagaBuilder::build`](crate::SagaBuilder::build) checks it as it
    /// checks any step. A sync action or undo is called as it is, without
    /// a future. An output other than `()` of a hand-written task needs
    /// [`durable`](Self::durable) for a durable saga, as any step's; a
    /// `#[saga_task]` one is logged without it (the macro picks the codec
    /// where the output's type is known). A `#[saga_task] fn charge`'s
    /// task is its twin struct: `Step::from_task(charge {})`.
    ///
    /// ```
    /// use saga_core::{Step, Task, TaskFn};
    ///
    /// struct Ping;
    /// impl Task<u32> for Ping {
    ///     type Output = ();
    ///     const NAME: &'static str = "ping";
    ///     const ACTION: TaskFn<u32, (), ()> = TaskFn::Exclusive(|n, _| {
    ///         *n += 1;
    ///         Ok(())
    ///     });
    /// }
    /// let step = Step::from_task(Ping);
    /// assert_eq!(step.name(), "ping");
    /// ```
    ///
    /// A task is its type: its name, options, action and undo are
    /// associated items, and nothing reads the value's fields. A task type
    /// with fields (not zero-sized) is refused at compile time (`cargo
    /// build`), where its fields would otherwise be ignored in silence; a
    /// step configured by values is a [`Step::new`] closure that captures
    /// them.
    pub fn from_task<K: Task<C, D, Output = T>>(task: K) -> Self {
        const {
            assert!(
                std::mem::size_of::<K>() == 0,
                "a `Task` is its type, not its value: `Step::from_task`, `SagaBuilder::task` and `Parallel::task` never read the fields of the task given (the type named in the note below `instantiating`); make it a unit struct, and build a step configured by values with `Step::new` and a closure that captures them"
            )
        };
        let _ = task;
        let mut step = K::__saga_codec(Self::task_named::<K>(K::NAME));
        step.def.retry = K::RETRY.policy();
        if K::UNDO_RETRY.is_set() {
            step.def.undo_retry = Some(K::UNDO_RETRY.policy_from(task::undo_retry_base()));
        }
        step.def.timeout = K::TIMEOUT;
        step.def.undo_timeout = K::UNDO_TIMEOUT;
        for (key, value) in K::METADATA {
            step.def
                .metadata
                .insert((*key).to_owned(), (*value).to_owned());
        }
        step.def.cancel_safe = K::CANCEL_SAFE;
        step.def.pivot = K::PIVOT;
        step
    }

    /// A task's action and undo, named `name`, without its options:
    /// `saga!` applies them itself, merged with its own (`__private`).
    pub(crate) fn task_named<K: Task<C, D, Output = T> + ?Sized>(name: &'static str) -> Self {
        let action = match K::ACTION {
            TaskFn::Exclusive(f) => {
                Action::Sync(Box::new(move |ctx: &mut C, info: &StepInfo<'_, D>| {
                    f(ctx, info).map(|out| Box::new(out) as Output)
                }))
            }
            TaskFn::Shared(f) => {
                Action::SharedSync(Box::new(move |ctx: &C, info: &StepInfo<'_, D>| {
                    f(ctx, info).map(|out| Box::new(out) as Output)
                }))
            }
            // The task's own box is the one the executor awaits: one box
            // per attempt.
            TaskFn::ExclusiveAsync(f) => {
                erase_async_typed(move |ctx, info| f(ctx, info).into_erased())
            }
            TaskFn::SharedAsync(f) => {
                erase_shared_async_typed(move |ctx, info| f(ctx, info).into_erased())
            }
        };
        let step = Self::from_action(name.into(), action);
        match K::UNDO {
            None => step,
            Some(undo) => step.with_undo(undo),
        }
    }

    /// Sets an undo given in one of the four shapes of a [`Task`].
    pub(crate) fn with_undo(self, undo: UndoFn<C, D, T>) -> Self {
        match undo {
            UndoFn::Exclusive(g) => self.undo(g),
            UndoFn::Shared(g) => self.undo_shared(g),
            UndoFn::ExclusiveAsync(g) => self.undo_converted_async(g),
            UndoFn::SharedAsync(g) => self.undo_converted_shared_async(g),
        }
    }
}

/// Inlined into each compensation's erasure: a call for every
/// compensation otherwise, around a type check of a few instructions.
#[inline]
fn downcast_output<'o, T: 'static, D>(
    out: Option<&'o (dyn Any + Send + Sync)>,
    info: &StepInfo<'_, D>,
) -> Result<Option<&'o T>, StepError> {
    let Some(out) = out else {
        return Ok(None);
    };
    // The typed builder pairs each compensation with its own step's output,
    // so this only fails if that pairing is broken: an engine bug, reported
    // as an error rather than a panic.
    out.downcast_ref::<T>().map(Some).ok_or_else(|| {
        StepError::new(format!(
            "internal error: the output of step `{}` is not a `{}`",
            info.step,
            std::any::type_name::<T>()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("declined")]
    struct Declined;

    #[test]
    fn an_async_step_of_unit_and_step_error_keeps_its_own_future() {
        let unit = Step::<(), ()>::new_async("unit", |_: &mut (), _: &StepInfo<'_>| {
            Box::pin(async { Ok::<_, StepError>(()) })
        });
        assert!(matches!(unit.def.action, Action::AsyncUnit(_)));
        let converted = Step::<(), ()>::new_async("converted", |_: &mut (), _: &StepInfo<'_>| {
            Box::pin(async { Err::<(), _>(Declined) })
        });
        assert!(matches!(converted.def.action, Action::Async(_)));
        let output = Step::<(), u32>::new_async("output", |_: &mut (), _: &StepInfo<'_>| {
            Box::pin(async { Ok::<_, StepError>(7) })
        });
        assert!(matches!(output.def.action, Action::Async(_)));
    }

    #[test]
    fn same_type_gives_the_value_as_the_other_type_only_when_they_are_one() {
        assert_eq!(def::same_type::<u32, u32>(7), Ok(7));
        assert_eq!(def::same_type::<u32, i32>(7), Err(7));
        let text = String::from("kept");
        assert_eq!(
            def::same_type::<String, &str>(text),
            Err(String::from("kept"))
        );
    }
}
