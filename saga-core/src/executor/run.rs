//! The run methods of a [`Saga`]: in memory, async or blocking.

use std::future::Future;

use super::{Record, Run, execute};
use crate::error::SagaError;
use crate::report::SagaReport;
use crate::saga::{RunOptions, Saga};

impl<C: Send + 'static> Saga<C> {
    /// Runs the saga on `ctx`, inside a tokio runtime (its timers serve
    /// timeouts and backoff).
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
        execute(&self.inner, ctx, Run::new(RunOptions::new()))
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
        execute(&self.inner, ctx, Run::new(options))
    }

    /// Runs the saga on the calling thread, without an async runtime when
    /// every step is sync.
    ///
    /// A saga with async steps is driven on a private current-thread tokio
    /// runtime (on a scoped helper thread when the caller is itself inside a
    /// runtime, which cannot be blocked on).
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub fn run_blocking(&self, ctx: &mut C) -> Result<SagaReport, SagaError> {
        self.run_blocking_with(ctx, RunOptions::new())
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
        if !self.inner.has_async {
            // The run's records on this stack, when its steps are few: no
            // allocation for them.
            let mut records: [Record; LENT_RECORDS] = std::array::from_fn(|_| Record::fresh());
            let lent = records.get_mut(..self.inner.steps.len());
            return crate::blocking::block_on_ready(execute(
                &self.inner,
                ctx,
                Run {
                    blocking: true,
                    lent,
                    ..Run::new(options)
                },
            ));
        }
        let drive =
            move || crate::blocking::block_on_runtime(execute(&self.inner, ctx, Run::new(options)));
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
}

/// How many steps' records a sync `run_blocking` keeps on its stack (40
/// bytes each); a saga with more steps allocates them.
const LENT_RECORDS: usize = 16;
