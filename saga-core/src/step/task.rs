//! The [`Task`] and [`AsyncTask`] traits: a step written as a type (what
//! `#[saga_task]` generates).

use super::{BoxFuture, Metadata, StepInfo};
use crate::error::StepError;

/// A step written as a type, in the style of the original package: a name,
/// a sync action, an optional compensation, metadata.
///
/// ```
/// use saga_core::{Context, Saga, Step, StepError, StepInfo, Task};
///
/// struct CreateOrder;
///
/// impl Task<Context> for CreateOrder {
///     type Output = u64;
///     fn name(&self) -> &str { "create_order" }
///     fn execute(&self, ctx: &mut Context, _: &StepInfo<'_>) -> Result<u64, StepError> {
///         ctx.insert("order", 7_u64);
///         Ok(7)
///     }
///     fn has_compensation(&self) -> bool { true }
///     fn compensate(&self, ctx: &mut Context, _: Option<&u64>, _: &StepInfo<'_>) -> Result<(), StepError> {
///         let _ = ctx.remove::<u64>("order");
///         Ok(())
///     }
/// }
///
/// let saga = Saga::builder("order").step(Step::from_task(CreateOrder)).build().unwrap();
/// # let _ = saga;
/// ```
pub trait Task<C>: Send + Sync + 'static {
    /// What the action returns and the compensation receives.
    type Output: Send + Sync + 'static;

    /// The step's name, unique in its saga.
    fn name(&self) -> &str;

    /// The action.
    ///
    /// # Errors
    /// Any failure of the step; mark it [`StepError::permanent`] or
    /// [`StepError::outcome_unknown`] as it applies.
    fn execute(&self, ctx: &mut C, info: &StepInfo<'_>) -> Result<Self::Output, StepError>;

    /// Whether [`compensate`](Task::compensate) undoes the action; `false`
    /// (the default) makes the step one with nothing to undo.
    fn has_compensation(&self) -> bool {
        false
    }

    /// Undoes the action, given its output (`None` when the step's outcome
    /// is unknown, see [`Step::compensate`](crate::Step::compensate)). Only called when
    /// [`has_compensation`](Task::has_compensation) returns `true`.
    ///
    /// # Errors
    /// A failure of the compensation; it is retried by the compensation's
    /// policy, and when that is exhausted the run ends stuck.
    fn compensate(
        &self,
        ctx: &mut C,
        output: Option<&Self::Output>,
        info: &StepInfo<'_>,
    ) -> Result<(), StepError> {
        let _ = (ctx, output, info);
        Ok(())
    }

    /// Free-form metadata (default: none).
    fn metadata(&self) -> Metadata {
        Metadata::new()
    }
}

/// An async [`Task`].
pub trait AsyncTask<C>: Send + Sync + 'static {
    /// What the action returns and the compensation receives.
    type Output: Send + Sync + 'static;

    /// The step's name, unique in its saga.
    fn name(&self) -> &str;

    /// The action.
    fn execute<'a>(
        &'a self,
        ctx: &'a mut C,
        info: &'a StepInfo<'a>,
    ) -> BoxFuture<'a, Result<Self::Output, StepError>>;

    /// Whether [`compensate`](AsyncTask::compensate) undoes the action.
    fn has_compensation(&self) -> bool {
        false
    }

    /// Undoes the action, given its output.
    fn compensate<'a>(
        &'a self,
        ctx: &'a mut C,
        output: Option<&'a Self::Output>,
        info: &'a StepInfo<'a>,
    ) -> BoxFuture<'a, Result<(), StepError>> {
        let _ = (ctx, output, info);
        Box::pin(std::future::ready(Ok(())))
    }

    /// Free-form metadata (default: none).
    fn metadata(&self) -> Metadata {
        Metadata::new()
    }
}
