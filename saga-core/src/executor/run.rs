//! The run methods of a [`Saga`]: in memory, async or blocking; with the
//! saga's dependencies lent by [`Saga::using`].

use std::future::Future;

use super::{Record, Run, execute};
use crate::error::SagaError;
use crate::report::SagaReport;
use crate::saga::{RunOptions, Saga, SagaInner};

impl<C: Send + 'static> Saga<C> {
    /// Runs the saga on `ctx`, inside a tokio runtime (its timers serve
    /// timeouts and backoff). A saga with dependencies runs through
    /// [`using`](Saga::using).
    ///
    /// Dropping the future mid-step (a `select!` branch lost, a timeout, a
    /// task aborted) abandons the run where it is: the step in flight is
    /// dropped at its await, nothing is compensated, no observer hears an
    /// end and no report is made. To stop a run with compensation, cancel
    /// it through a [`CancellationToken`](crate::CancellationToken) given
    /// by [`RunOptions::with_cancellation`] to [`run_with`](Self::run_with),
    /// and await its end.
    ///
    /// # Errors
    /// [`SagaError::Compensated`] if a step failed and the rollback
    /// succeeded, [`SagaError::Stuck`] if the run can go neither way on its
    /// own, [`SagaError::Cancelled`] if it was cancelled before the pivot.
    // Not an `async fn`: it returns the executor's future itself, so no
    // wrapper future holds the arguments a second time (every run in
    // flight would pay for it).
    pub fn run<'a>(
        &'a self,
        ctx: &'a mut C,
    ) -> impl Future<Output = Result<SagaReport, SagaError>> + Send + 'a {
        execute(&self.inner, &(), ctx, Run::new(RunOptions::new()))
    }

    /// [`run`](Self::run) with options: an execution id, a clock, a
    /// cancellation token, observers.
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub fn run_with<'a>(
        &'a self,
        ctx: &'a mut C,
        options: RunOptions,
    ) -> impl Future<Output = Result<SagaReport, SagaError>> + Send + 'a {
        execute(&self.inner, &(), ctx, Run::new(options))
    }

    /// Runs the saga on the calling thread, without an async runtime when
    /// every step is sync.
    ///
    /// A saga with async steps is driven on a private current-thread tokio
    /// runtime (on a scoped helper thread when the caller is itself inside a
    /// runtime, which cannot be blocked on). The calling thread waits for
    /// the run's end all the same: called from a task, it blocks that
    /// task's thread, and on a current-thread runtime the whole runtime,
    /// so an async step that needs the caller's runtime (a task spawned on
    /// it, a client whose connection it drives) never completes there.
    /// From async code, `.await` [`run`](Self::run) instead.
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub fn run_blocking(&self, ctx: &mut C) -> Result<SagaReport, SagaError> {
        run_blocking(&self.inner, &(), ctx, RunOptions::new())
    }

    /// [`run_blocking`](Self::run_blocking) with options.
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub fn run_blocking_with(
        &self,
        ctx: &mut C,
        options: RunOptions,
    ) -> Result<SagaReport, SagaError> {
        run_blocking(&self.inner, &(), ctx, options)
    }
}

impl<C, D> Saga<C, D> {
    /// The saga with its dependencies lent, for in-memory runs: the view
    /// has the run methods a saga without dependencies has
    /// ([`run`](Using::run), [`run_with`](Using::run_with),
    /// [`run_blocking`](Using::run_blocking),
    /// [`run_blocking_with`](Using::run_blocking_with)), and every step
    /// borrows `deps` (no clone per step or per run). A durable saga gets
    /// its dependencies from its engine
    /// ([`SagaEngine::with_dependencies`](crate::SagaEngine::with_dependencies)).
    ///
    /// ```
    /// use saga_core::{Saga, Step, StepError, StepInfo};
    ///
    /// struct Prices { unit: u32 }
    ///
    /// let saga = Saga::<u32, Prices>::builder("quote")
    ///     .step(Step::new("price", |total: &mut u32, info: &StepInfo<'_, Prices>| {
    ///         *total = 3 * info.dependencies().unit;
    ///         Ok::<_, StepError>(())
    ///     }))
    ///     .build()?;
    /// let prices = Prices { unit: 7 };
    /// let mut total = 0;
    /// saga.using(&prices).run_blocking(&mut total)?;
    /// assert_eq!(total, 21);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn using<'d>(&'d self, deps: &'d D) -> Using<'d, C, D> {
        Using { saga: self, deps }
    }
}

/// A [`Saga`] with its dependencies lent, made by [`Saga::using`]: runs
/// it in memory as a saga without dependencies runs.
pub struct Using<'d, C, D> {
    saga: &'d Saga<C, D>,
    deps: &'d D,
}

impl<C, D> Clone for Using<'_, C, D> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C, D> Copy for Using<'_, C, D> {}

impl<C, D> std::fmt::Debug for Using<'_, C, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Using")
            .field("saga", &self.saga.name())
            .field("dependencies", &std::any::type_name::<D>())
            .finish()
    }
}

impl<'d, C: Send + 'static, D: Send + Sync + 'static> Using<'d, C, D> {
    /// [`Saga::run`], with the dependencies.
    ///
    /// # Errors
    /// As [`Saga::run`].
    pub fn run<'a>(
        self,
        ctx: &'a mut C,
    ) -> impl Future<Output = Result<SagaReport, SagaError>> + Send + 'a
    where
        'd: 'a,
    {
        execute(
            &self.saga.inner,
            self.deps,
            ctx,
            Run::new(RunOptions::new()),
        )
    }

    /// [`Saga::run_with`], with the dependencies.
    ///
    /// # Errors
    /// As [`Saga::run`].
    pub fn run_with<'a>(
        self,
        ctx: &'a mut C,
        options: RunOptions,
    ) -> impl Future<Output = Result<SagaReport, SagaError>> + Send + 'a
    where
        'd: 'a,
    {
        execute(&self.saga.inner, self.deps, ctx, Run::new(options))
    }

    /// [`Saga::run_blocking`], with the dependencies.
    ///
    /// # Errors
    /// As [`Saga::run`].
    pub fn run_blocking(self, ctx: &mut C) -> Result<SagaReport, SagaError> {
        run_blocking(&self.saga.inner, self.deps, ctx, RunOptions::new())
    }

    /// [`Saga::run_blocking_with`], with the dependencies.
    ///
    /// # Errors
    /// As [`Saga::run`].
    pub fn run_blocking_with(
        self,
        ctx: &mut C,
        options: RunOptions,
    ) -> Result<SagaReport, SagaError> {
        run_blocking(&self.saga.inner, self.deps, ctx, options)
    }
}

/// The body of the blocking runs.
fn run_blocking<C: Send + 'static, D: Send + Sync + 'static>(
    saga: &SagaInner<C, D>,
    deps: &D,
    ctx: &mut C,
    options: RunOptions,
) -> Result<SagaReport, SagaError> {
    if !saga.has_async {
        // The run's records on this stack, when its steps are few: no
        // allocation for them.
        let mut records: [Record; LENT_RECORDS] = std::array::from_fn(|_| Record::fresh());
        let lent = records.get_mut(..saga.steps.len());
        let run = std::pin::pin!(execute(
            saga,
            deps,
            ctx,
            Run {
                blocking: true,
                lent,
                ..Run::new(options)
            },
        ));
        return crate::blocking::block_on_ready(run);
    }
    let drive =
        move || crate::blocking::block_on_runtime(execute(saga, deps, ctx, Run::new(options)));
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|scope| {
            scope
                .spawn(drive)
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    } else {
        drive()
    }
}

/// How many steps' records a sync `run_blocking` keeps on its stack (40
/// bytes each); a saga with more steps allocates them.
const LENT_RECORDS: usize = 16;
