//! What the `saga!` and `#[saga_task]` expansions use: not a public API,
//! exempt from semver, hidden from the docs.
//!
//! `#[saga_task]` turns a function `f` into the function plus a twin type
//! `f` (a braced struct, which lives in the type namespace only) carrying
//! what the attribute said as associated consts, so that `saga!`, which
//! cannot see other items, can check a saga across items with the type
//! system: bounds, and the rules of [`checks`]. See `docs/MACROS.md` for
//! an expansion.

use std::future::Future;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::error::StepError;
pub use crate::policy::RetryPolicy;
pub use crate::saga::{Parallel, Saga, SagaBuilder, default_undo_retry};
pub use crate::step::{
    BoxFuture, Dsl, Provides, RetrySpec, Step, StepInfo, Task, TaskFn, TaskFuture, UndoFn,
    undo_async, undo_shared,
};
pub use checks::UndoOf;
/// `saga!`'s implementation, which the `macro_rules!` `saga!` calls with
/// `$crate` first.
pub use saga_macros::saga;

/// The conversion of an async function's result: one boxed future, the
/// one an async [`TaskFn`] or [`UndoFn`] returns, with the `Ok` value
/// passed through `output` and the error through `error`.
///
/// Each bound is checked where the expansion spans it, so that a mistake
/// is reported at the token to change: the function's own future must be
/// `Send` (rustc's "future returned by `f` is not `Send`", at its
/// `async`); `output`, a closure spanned at the output type, passes the
/// output on (its `Send + Sync` is checked at the impl's `type Output`);
/// `error`, a closure spanned at the error type,
/// converts the error. Steps and compensations expand to the same call
/// with the same spans, so that a function that is both gets each error
/// once: the call returns what the shape it is given to returns (see
/// [`StepFuture`]), a [`TaskFuture`] for an action, a [`BoxFuture`] for
/// an undo.
pub fn step_future<'a, T, O: 'a, E, F: StepFuture<'a, O>>(
    future: impl Future<Output = Result<T, E>> + Send + 'a,
    output: impl FnOnce(T) -> O + Send + 'a,
    error: impl FnOnce(E) -> StepError + Send + 'a,
) -> F {
    F::__saga_box(async move {
        match future.await {
            Ok(out) => Ok(output(out)),
            Err(e) => Err(error(e)),
        }
    })
}

/// The boxed futures [`step_future`] makes: an action's [`TaskFuture`]
/// (the output erased inside its one box) or an undo's [`BoxFuture`].
pub trait StepFuture<'a, O>: Sized {
    /// Boxes `future`, once.
    fn __saga_box(future: impl Future<Output = Result<O, StepError>> + Send + 'a) -> Self;
}

impl<'a, O: 'a> StepFuture<'a, O> for BoxFuture<'a, Result<O, StepError>> {
    fn __saga_box(future: impl Future<Output = Result<O, StepError>> + Send + 'a) -> Self {
        Box::pin(future)
    }
}

impl<'a, O: Send + Sync + 'static> StepFuture<'a, O> for TaskFuture<'a, O> {
    fn __saga_box(future: impl Future<Output = Result<O, StepError>> + Send + 'a) -> Self {
        TaskFuture::new(future)
    }
}

/// Gives a `#[saga_task]` step its output codec when its output can be
/// logged, so that a durable saga can run it without an annotation.
///
/// The expansion calls `(&Codec::<T>::NEW).__saga_codec(step)` with both
/// traits in scope. Method lookup tries the receiver `&Codec<T>` as it is
/// before it borrows it again, so [`Durable::__saga_codec`] (a method of
/// `Codec<T>`, whose impl needs `T: Serialize + DeserializeOwned`) wins
/// when it applies, and [`InMemory::__saga_codec`] (a method of
/// `&Codec<T>`, for every `T`) otherwise: "autoref specialization". It
/// chooses right only where `T` is a concrete type, as in a `#[saga_task]`
/// expansion (its function is never generic); in generic code it would
/// always take [`InMemory`]. A step left without a codec still runs in
/// memory, and [`SagaEngine::register`] refuses it with
/// [`EngineError::OutputNotDurable`].
///
/// [`SagaEngine::register`]: crate::SagaEngine::register
/// [`EngineError::OutputNotDurable`]: crate::EngineError::OutputNotDurable
pub struct Codec<T>(PhantomData<fn() -> T>);

impl<T> Codec<T> {
    /// The only value.
    pub const NEW: Codec<T> = Codec(PhantomData);
}

/// The codec, for an output that serde can log (see [`Codec`]).
pub trait Durable<T> {
    /// `step.durable()`.
    fn __saga_codec<C: 'static, D: 'static>(&self, step: Step<C, T, D>) -> Step<C, T, D>;
}

impl<T> Durable<T> for Codec<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn __saga_codec<C: 'static, D: 'static>(&self, step: Step<C, T, D>) -> Step<C, T, D> {
        step.durable()
    }
}

/// No codec, for any other output (see [`Codec`]).
pub trait InMemory<T> {
    /// `step`, unchanged.
    fn __saga_codec<C, D>(&self, step: Step<C, T, D>) -> Step<C, T, D>;
}

impl<T> InMemory<T> for &Codec<T> {
    fn __saga_codec<C, D>(&self, step: Step<C, T, D>) -> Step<C, T, D> {
        step
    }
}

/// Adds a step `saga!` made, as the pivot if `pivot`.
pub fn push<C: 'static, T: Send + Sync + 'static, D: 'static>(
    builder: SagaBuilder<C, D>,
    step: Step<C, T, D>,
    pivot: bool,
) -> SagaBuilder<C, D> {
    if pivot {
        builder.pivot(step)
    } else {
        builder.step(step)
    }
}

/// First half of "`Self` can compensate a step of context `C`": the
/// context. Checked before [`UndoOutput`] (through [`UndoContext::Checked`])
/// so that a mismatch gives one error, not two.
#[diagnostic::on_unimplemented(
    message = "compensation `{Self}` takes a different context than its step, which takes `{C}`",
    label = "expected a `#[saga_task]` compensation taking `&mut {C}` or `&{C}`",
    note = "a compensation takes the same context as the step it undoes; a compensation that is a plain function needs `#[saga_task]`"
)]
pub trait UndoContext<C> {
    /// `Self`; naming the compensation through this projection makes the
    /// output check depend on this one.
    type Checked: ?Sized;
    /// Whether the compensation takes the context shared (`&C`), as the
    /// compensation of a `parallel` branch must.
    const SHARED: bool;
    /// Whether the compensation is async, as one with an `undo_timeout`
    /// must be.
    const ASYNC: bool;
}

/// Second half: what `Self` receives, as `Option<&Received>`, when it
/// undoes the step `Step`, whose output is `T`. A `#[saga_task]`
/// compensation that takes `Option<&R>` implements it for every `T`, with
/// `Received = R`, and [`checks::UndoReceives`] compares the two, so that
/// a mismatch is one error in words that name the step and both types.
/// One that takes no `Option<&R>` implements it for `T = ()` only, so that
/// undoing any other output fails here, in words that say what is
/// missing (its `&T` parameters, if any, ask the saga's dependencies,
/// and are often the output written without its `Option`).
#[diagnostic::on_unimplemented(
    message = "compensation `{Self}` cannot undo step `{Step}`: `{Step}` returns `{T}`, and `{Self}` takes no `Option<&{T}>` after its context",
    label = "expected a compensation taking `Option<&{T}>` after the context",
    note = "a compensation receives its step's output as `Option<&T>`: `Some` when the step succeeded, `None` when its outcome is unknown (a timeout, a panic, an error marked `outcome_unknown`)",
    note = "a `&T` parameter is not the step's output: it asks the saga's dependencies for a `T`",
    note = "a compensation that takes no `Option<&T>` undoes only a step whose output is `()`"
)]
pub trait UndoOutput<C, T, Step: ?Sized> {
    /// The `T` of the compensation's `Option<&T>` (`()` without one).
    type Received: ?Sized;
}

/// The step output `output` as the `R` its compensation receives, for a
/// compensation's [`UndoOf`] impl, which holds for every output `T`. Every
/// expansion that names that impl checks that `T` is `R`
/// ([`checks::UndoReceives`], a compile error otherwise), so the cast
/// always succeeds; were it ever to fail, the compensation would see an
/// unknown outcome (`None`), never another type's value.
pub fn received<T: 'static, R: 'static>(output: Option<&T>) -> Option<&R> {
    debug_assert_eq!(
        std::any::TypeId::of::<T>(),
        std::any::TypeId::of::<R>(),
        "a compensation received another output than it takes: a bug of the macros, please report it"
    );
    output.and_then(|output| (output as &dyn std::any::Any).downcast_ref::<R>())
}

/// Sets `undo` as the compensation of `step`.
pub fn attach_undo<C: 'static, T: Send + Sync + 'static, D: 'static>(
    step: Step<C, T, D>,
    undo: UndoFn<C, D, T>,
) -> Step<C, T, D> {
    step.with_undo(undo)
}

/// Whether a path named in `saga!` is a plain function (no `#[saga_task]`).
///
/// `saga!` imports each step and compensation under an alias next to a
/// glob import of generated fallback types of the same names. An explicit
/// import shadows a glob one in each namespace it fills, so the alias is
/// the user's twin type when `#[saga_task]` made one, and the fallback when
/// the path is a plain function (which fills only the value namespace).
/// The fallback has an inherent `__SAGA_PLAIN` of `true`, which wins over
/// this trait's `false`; [`checks::Plain`] turns that into an error in our
/// words rather than rustc's "expected type, found function".
pub trait NotPlain {
    /// `false`: anything but a fallback.
    const __SAGA_PLAIN: bool = false;
}

impl<T: ?Sized> NotPlain for T {}

/// The rules `saga!` checks across items at compile time, as traits its
/// compile errors name.
///
/// `saga!` cannot see another item's `#[saga_task]`, so a rule that
/// depends on one (a second compensation, a second pivot, a sync step
/// with a `timeout`..) is checked by the type system: the expansion
/// requires `Step: Rule<HOLDS>`, with `Step` the step's `#[saga_task]`
/// function (its twin type) and `HOLDS` whether the rule holds, computed
/// from what the attributes said. Each rule is implemented for every type
/// with `HOLDS = true` only, so a broken rule is a compile error in the
/// rule's own words, at the token to change. Nothing here is meant to be
/// named by hand.
///
/// The traits are public and documented (re-exported as
/// `saga_core::checks`) so that rustc's notes name them by a path that
/// reads well; their shape is exempt from semver, as the expansion is.
pub mod checks {
    /// Whether a path named in `saga!` is a plain function: `Plain<true>`
    /// (see [`Annotated`]).
    pub struct Plain<const PLAIN: bool>;

    /// A step or compensation named in `saga!` is a `#[saga_task]`
    /// function: implemented by `Plain<false>` only.
    #[diagnostic::on_unimplemented(
        message = "a plain function cannot be a saga step or compensation: add `#[saga_task]` above its `fn`",
        label = "this function has no `#[saga_task]`",
        note = "`#[saga_task]` keeps the function callable as written and lets `saga!` read its context, output and options"
    )]
    pub trait Annotated {
        /// Named by `saga!`'s check.
        const OK: () = ();
    }

    #[diagnostic::do_not_recommend]
    impl Annotated for Plain<false> {}

    /// The saga's dependencies `Self` provide the `T` that the
    /// `#[saga_task]` function `Step` asks for as `&T`: [`Provides<T>`],
    /// in words that name the function.
    ///
    /// [`Provides<T>`]: crate::Provides
    #[diagnostic::on_unimplemented(
        message = "`{Step}` asks for `&{T}`, and the saga's dependencies `{Self}` do not provide it",
        label = "`{Self}` does not provide `{T}`",
        note = "if `{Self}` is a type of your own, implement `saga_core::Provides<{T}>` for it (returning the `{T}` it holds); else name dependencies of your own type that provide it, as `dependencies: MyDeps` in `saga!` with `impl Provides<{T}> for MyDeps`"
    )]
    pub trait Dependency<Step: ?Sized, T: ?Sized>: crate::Provides<T> {}

    #[diagnostic::do_not_recommend]
    impl<Step: ?Sized, T: ?Sized, D: crate::Provides<T> + ?Sized> Dependency<Step, T> for D {}

    /// [`Dependency`] for a compensation: the saga's dependencies `Self`
    /// provide the `T` that the compensation `Undo` asks for as `&T`, in
    /// words that add where its step's output comes in, since a `&T`
    /// written for the output is read as a dependency.
    #[diagnostic::on_unimplemented(
        message = "compensation `{Undo}` asks for `&{T}`, and the saga's dependencies `{Self}` do not provide it",
        label = "`{Self}` does not provide `{T}`",
        note = "a compensation receives the output of the step it undoes as `Option<&T>` after its context: if `&{T}` is meant to be that output, write `Option<&{T}>`",
        note = "if `&{T}` is a dependency and `{Self}` a type of your own, implement `saga_core::Provides<{T}>` for it; else name dependencies of your own type that provide it, as `dependencies: MyDeps` in `saga!` with `impl Provides<{T}> for MyDeps`"
    )]
    pub trait UndoDependency<Undo: ?Sized, T: ?Sized>: crate::Provides<T> {}

    #[diagnostic::do_not_recommend]
    impl<Undo: ?Sized, T: ?Sized, D: crate::Provides<T> + ?Sized> UndoDependency<Undo, T> for D {}

    /// The error type `Self` of a `#[saga_task]` function converts into
    /// [`StepError`](crate::StepError): `Into<StepError>`, in words that
    /// say which types do, as one error where rustc would report each
    /// missing bound of a `Box<dyn Error>` (`Send`, `Sync`, `Sized`).
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be a step's error: it does not convert into `StepError`",
        label = "not an error type a step can return",
        note = "a step's error is any `std::error::Error + Send + Sync + 'static` (an enum deriving `thiserror::Error`, `std::io::Error`, `anyhow::Error`), a `String`, a `&'static str` or a `StepError`",
        note = "a boxed error must be `Send + Sync`, as steps run on any thread: `Box<dyn std::error::Error + Send + Sync>`"
    )]
    pub trait StepErrorType: Sized {
        /// `self.into()`.
        fn __saga_into(self) -> crate::StepError;
    }

    #[diagnostic::do_not_recommend]
    impl<E: Into<crate::StepError>> StepErrorType for E {
        fn __saga_into(self) -> crate::StepError {
            self.into()
        }
    }

    /// The saga's dependencies `Self` are, or provide, the `T` of the
    /// `StepInfo<'_, T>` that the `#[saga_task]` function `Step` takes:
    /// [`Provides<T>`], in words that name the function.
    ///
    /// [`Provides<T>`]: crate::Provides
    #[diagnostic::on_unimplemented(
        message = "`{Step}` takes `StepInfo<'_, {T}>`, and the saga's dependencies `{Self}` are not `{T}` and do not provide it",
        label = "`{Self}` is not `{T}` and does not provide it",
        note = "take `StepInfo<'_, {Self}>` to reach the saga's dependencies, name `{T}` with `dependencies: ..` in `saga!`, or, if `{Self}` is a type of your own, implement `saga_core::Provides<{T}>` for it"
    )]
    pub trait InfoDependencies<Step: ?Sized, T: ?Sized>: crate::Provides<T> {}

    #[diagnostic::do_not_recommend]
    impl<Step: ?Sized, T: ?Sized, D: crate::Provides<T> + ?Sized> InfoDependencies<Step, T> for D {}

    /// The compensation for a saga whose dependencies are `D`: implemented
    /// for every `D` that provides what the compensation asks for (its `&T`
    /// parameters, each a [`Dependency`] bound), and for every output
    /// `T`, so that a step's impl can require it of the undo its attribute
    /// names without a wrong output failing that bound (and being reported a
    /// second time, wherever `saga!` names the step). That the undo receives
    /// the step's output is [`UndoReceives`], checked once where the
    /// step names its undo; the call converts with [`received`](super::received).
    #[diagnostic::on_unimplemented(
        message = "compensation `{Self}` cannot undo a step whose output is `{T}` in a saga whose context is `{C}` and dependencies `{D}`",
        label = "not a `#[saga_task]` compensation of this step"
    )]
    pub trait UndoOf<C, T, D> {
        /// The compensation, in the shape of its function.
        const UNDO: super::UndoFn<C, D, T>;

        /// Sets the compensation of `step`.
        fn attach(step: super::Step<C, T, D>) -> super::Step<C, T, D>
        where
            C: 'static,
            T: Send + Sync + 'static,
            D: 'static,
        {
            super::attach_undo(step, Self::UNDO)
        }
    }

    /// The compensation `Undo` of step `Step` receives the step's output
    /// `T`: implemented by `T` only, for `Self` the type of the
    /// compensation's `Option<&Self>` ([`UndoOutput::Received`]).
    ///
    /// [`UndoOutput::Received`]: super::UndoOutput::Received
    #[diagnostic::on_unimplemented(
        message = "compensation `{Undo}` cannot undo step `{Step}`: `{Step}` returns `{T}`, and `{Undo}` undoes a step that returns `{Self}`",
        label = "expected a compensation taking `Option<&{T}>` after the context",
        note = "a compensation receives its step's output as `Option<&T>`: `Some` when the step succeeded, `None` when its outcome is unknown (a timeout, a panic, an error marked `outcome_unknown`)",
        note = "a compensation of a step whose output is `()` may leave that parameter out"
    )]
    pub trait UndoReceives<Step: ?Sized, Undo: ?Sized, T: ?Sized> {
        /// `Undo`: naming the compensation through this projection makes
        /// what follows depend on this check.
        type Undo: ?Sized;
    }

    #[diagnostic::do_not_recommend]
    impl<Step: ?Sized, Undo: ?Sized, T: ?Sized> UndoReceives<Step, Undo, T> for T {
        type Undo = Undo;
    }

    /// Defines a rule: a trait with the given message, label and note,
    /// implemented for every type when the rule holds.
    macro_rules! rule {
        (
            $(#[$doc:meta])*
            $name:ident<$($param:ident,)*> {
                message: $message:literal,
                label: $label:literal,
                note: $note:literal $(,)?
            }
        ) => {
            $(#[$doc])*
            #[diagnostic::on_unimplemented(message = $message, label = $label, note = $note)]
            pub trait $name<$($param: ?Sized,)* const HOLDS: bool> {
                /// Named by `saga!`'s check.
                const OK: () = ();
            }

            #[diagnostic::do_not_recommend]
            impl<S: ?Sized, $($param: ?Sized,)*> $name<$($param,)* true> for S {}
        };
    }

    rule! {
        /// A step's compensation is given once: in its `#[saga_task]` or
        /// in `saga!`, not in both.
        OneCompensation<> {
            message: "step `{Self}` already has a compensation from its `#[saga_task(undo = ..)]`; give it in one place",
            label: "a second compensation for `{Self}`",
            note: "drop this `=> undo ..` or the attribute's `undo = ..`",
        }
    }

    rule! {
        /// A `timeout` is given to an `async fn` step only: a sync step
        /// cannot be interrupted.
        TimeoutNeedsAsync<> {
            message: "`timeout` needs an `async fn` step, and `{Self}` is sync: a sync step cannot be interrupted",
            label: "a `timeout` on a sync step",
            note: "make `{Self}` an `async fn`, or drop `timeout`",
        }
    }

    rule! {
        /// `undo_retry` is given to a step with a compensation only.
        UndoRetryNeedsCompensation<> {
            message: "`undo_retry` retries a compensation, and step `{Self}` has none; give it one with `=> undo ..` or drop `undo_retry`",
            label: "`{Self}` has no compensation to retry",
            note: "an `undo_retry` may come from `saga!` or from the step's `#[saga_task(undo_retry(..))]`",
        }
    }

    rule! {
        /// `undo_timeout` is given to a step with a compensation only.
        UndoTimeoutNeedsCompensation<> {
            message: "`undo_timeout` limits a compensation, and step `{Self}` has none; give it one with `=> undo ..` or drop `undo_timeout`",
            label: "`{Self}` has no compensation to time",
            note: "an `undo_timeout` may come from `saga!` or from the step's `#[saga_task(undo_timeout = ..)]`",
        }
    }

    rule! {
        /// `undo_timeout` is given to a step whose compensation is an
        /// `async fn`: a sync compensation cannot be interrupted.
        UndoTimeoutNeedsAsyncUndo<> {
            message: "`undo_timeout` needs an `async fn` compensation, and the compensation of step `{Self}` is sync: a sync compensation cannot be interrupted",
            label: "an `undo_timeout` on a sync compensation",
            note: "make the compensation an `async fn`, or drop `undo_timeout`",
        }
    }

    rule! {
        /// A saga has at most one pivot.
        OnePivot<> {
            message: "step `{Self}` is a second pivot (a `pivot` here or in its `#[saga_task]`); a saga has one point of no return",
            label: "a second pivot",
            note: "keep `pivot` (in `saga!` or in `#[saga_task(pivot)]`) on one step only",
        }
    }

    rule! {
        /// No step at or after the pivot has a compensation.
        NoCompensationFromPivot<> {
            message: "step `{Self}` has a compensation but is or follows the pivot; once the pivot succeeds the saga only goes forward",
            label: "a compensation at or after the pivot",
            note: "move `{Self}` before the pivot, or drop its compensation",
        }
    }

    rule! {
        /// Step names are unique within a saga.
        UniqueName<Earlier,> {
            message: "steps `{Earlier}` and `{Self}` have the same name (set by `name` in `#[saga_task]` or `saga!`); step names must be unique",
            label: "the same name as `{Earlier}`",
            note: "give one of them another name with `name \"..\"` in `saga!`",
        }
    }

    rule! {
        /// A `parallel` branch takes the context shared (`&C`).
        SharedBranch<C,> {
            message: "step `{Self}` is a `parallel` branch, and branches share the context: take it as `&{C}`, not `&mut {C}`, and keep what its compensation needs in its output",
            label: "a branch taking `&mut {C}`",
            note: "branches run at the same time, so none of them may change the context",
        }
    }

    rule! {
        /// A `parallel` branch's compensation takes the context shared
        /// (`&C`).
        SharedBranchCompensation<C,> {
            message: "the compensation of step `{Self}` takes `&mut {C}`, and `{Self}` is a `parallel` branch: branches share the context, so take it as `&{C}` and undo from the step's output",
            label: "a compensation taking `&mut {C}`",
            note: "the compensations of a group's branches run at the same time, so none of them may change the context",
        }
    }

    rule! {
        /// The pivot is not a `parallel` branch.
        PivotNotBranch<> {
            message: "step `{Self}` is the pivot (its `#[saga_task(pivot)]`) and cannot be a `parallel` branch: its siblings could fail after it succeeded, and nothing may roll back past the pivot",
            label: "the pivot, in a `parallel` group",
            note: "move `{Self}` out of the group, after it",
        }
    }
}

/// Builds a saga whose every rule `saga!` checked at compile time.
pub fn finish<C: 'static, D: 'static>(builder: SagaBuilder<C, D>) -> Saga<C, D> {
    match builder.build() {
        Ok(saga) => saga,
        // `saga!` rejects at compile time every definition `build` rejects
        // (see `BuildError`'s variants), so this is a bug of the macros.
        Err(e) => panic!("internal error of `saga!`, please report it: {e}"),
    }
}

/// What `saga!` evaluates to next to a compile error, so that one mistake
/// does not cascade into errors at every use of the saga. Never runs: the
/// compile error stops the build.
pub fn stub<C, D>() -> Saga<C, D> {
    unreachable!("`saga!` emitted a compile error")
}

/// `a == b`, in a `const` context.
pub const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn str_eq_compares_bytes() {
        assert!(str_eq("charge", "charge"));
        assert!(!str_eq("charge", "charges"));
        assert!(!str_eq("charge", "change"));
        assert!(str_eq("", ""));
    }

    #[test]
    fn retry_spec_merges_field_by_field() {
        let dsl = RetrySpec {
            attempts: Some(3),
            ..RetrySpec::NONE
        };
        let attr = RetrySpec {
            attempts: Some(5),
            backoff: Some(Duration::from_millis(7)),
            ..RetrySpec::NONE
        };
        let merged = dsl.or(attr);
        assert_eq!(merged.attempts, Some(3));
        assert_eq!(merged.backoff, Some(Duration::from_millis(7)));
        assert_eq!(merged.policy().max_attempts(), 3);
        assert_eq!(RetrySpec::NONE.policy().max_attempts(), 1);
    }
}
