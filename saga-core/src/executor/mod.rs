//! The executor: runs one execution of a saga forward, and back when it
//! must, by the failure rules of `docs/DESIGN.md` section 3.
//!
//! It emits events (logs and observers) and knows neither the stores nor
//! the engine: a durable run is given a [`Journal`] (the log's vocabulary,
//! in `crate::journal`, below both) that it awaits at each log point, and
//! may start from a [`Resume`] (the state a log recorded) instead of from
//! nothing; the engine implements the journal on a store.
//! `tests/layers.rs` checks that nothing here names a module above it.
//!
//! - `mod.rs`: [`execute`] and the run's body, from its start to its end
//! - `env.rs`: what a run shares with every step; logging and events
//! - `state.rs`: the step records and the report built from them
//! - `forward.rs`: the forward path and action attempts
//! - `sync.rs`: the forward path and the rollback of a run driven without
//!   a runtime
//! - `rollback.rs`: compensations in reverse order
//! - `group.rs`: parallel groups
//! - `guard.rs`: an attempt under its guards (panics, timeout, brakes)
//! - `run.rs`: the [`Saga`](crate::Saga) run methods

use std::future::Future;
use std::ops::Range;
use std::sync::Mutex;

use crate::error::{BoxError, SagaError, StepError};
use crate::id::ExecutionId;
use crate::journal::{EventKind, Journal, Resume, StoreError};
use crate::logged::{LoggedError, outcome_detail};
use crate::observer::SagaEvent;
use crate::report::{ExecutionStatus, SagaReport};
// The test kit copies definitions and names their groups here.
#[cfg(feature = "testkit")]
pub(crate) use crate::saga::GroupOps;
use crate::saga::{Node, RunOptions, SagaInner};

mod env;
mod forward;
mod group;
mod guard;
mod rollback;
mod run;

pub use run::Using;
mod state;
mod sync;

use env::{Durable, Env};
use forward::{forward, stuck_forward};
use group::{compensate_group, run_group};
use guard::{Access, Brakes};
use rollback::rollback;
use state::{Extra, Record, State};
use sync::{forward_blocking, rollback_blocking};

/// A durable log could not be written; the run stopped there.
#[derive(Debug, thiserror::Error)]
#[error("the durable log could not be written")]
struct JournalFailed;

/// Why the forward path stopped short of the end.
enum Stop {
    /// Step `index` failed (cleanly, or with an unknown outcome before the
    /// pivot): roll back.
    Failed { index: usize, error: StepError },
    /// Cancelled before the pivot: roll back.
    Cancelled,
    /// The journal failed: stop without another step or compensation.
    Aborted,
    /// Step `index` failed where no rollback is allowed: the pivot with an
    /// unknown outcome, or a step after the pivot. `node` is where the
    /// remaining work starts.
    Stuck {
        node: usize,
        index: usize,
        error: StepError,
    },
}

/// What [`execute`] takes besides the saga and the context: how the run
/// is driven, and for a durable run its journal and where its log left it.
pub(crate) struct Run<'a, C> {
    pub(crate) options: RunOptions,
    /// Sync-only run driven without a runtime: sleeps block the thread.
    pub(crate) blocking: bool,
    /// The durable log, for a journaled run.
    pub(crate) journal: Option<&'a dyn Journal<C>>,
    /// The state a log recorded, for a recovered run: it starts there
    /// instead of from nothing.
    pub(crate) resume: Option<Resume>,
    /// Where the run keeps its step records (one per step, fresh, as
    /// [`Record::fresh`] makes them): `run_blocking` lends an array on its
    /// stack, which saves the run an allocation and a free.
    pub(crate) lent: Option<&'a mut [Record]>,
    /// Where the run's `saga` span hangs.
    #[cfg(feature = "tracing")]
    pub(crate) origin: crate::spans::Origin,
}

impl<C> Run<'_, C> {
    /// An in-memory run on an async runtime, with `options`.
    pub(crate) fn new(options: RunOptions) -> Self {
        Run {
            options,
            blocking: false,
            journal: None,
            resume: None,
            lent: None,
            #[cfg(feature = "tracing")]
            origin: crate::spans::Origin::Current,
        }
    }
}

/// Runs one execution, journaled when `run.journal` is given, from the
/// state a log recorded when `run.resume` is given.
///
/// Not an `async fn`: it returns the future of [`run_execution`] itself, so
/// no wrapper future stores the arguments once more in every run in
/// flight.
pub(crate) fn execute<'a, C, D>(
    saga: &'a SagaInner<C, D>,
    deps: &'a D,
    ctx: &'a mut C,
    run: Run<'a, C>,
) -> impl Future<Output = Result<SagaReport, SagaError>> + 'a {
    let Run {
        options,
        blocking,
        journal,
        resume,
        lent,
        #[cfg(feature = "tracing")]
        origin,
    } = run;
    let RunOptions {
        execution_id,
        clock,
        cancel,
        observers,
    } = options;
    let env = Env {
        saga,
        deps,
        id: execution_id.unwrap_or_else(ExecutionId::generate),
        clock,
        cancel,
        observed: !saga.observers.is_empty() || !observers.is_empty(),
        run_observers: observers,
        blocking,
        started: None,
        durable: journal.map(|journal| {
            Box::new(Durable {
                journal,
                aborted: Mutex::new(None),
                not_run: Mutex::new(Vec::new()),
            })
        }),
    };
    // Boxed: held by the future until its end, though read only at the
    // start of a recovered run.
    let resume = resume.map(Box::new);
    #[cfg(feature = "tracing")]
    {
        let id = env.id.clone();
        let run = run_execution(env, ctx, resume, lent);
        async move { crate::spans::execution(&saga.name, &id, origin, run).await }
    }
    #[cfg(not(feature = "tracing"))]
    run_execution(env, ctx, resume, lent)
}

/// The body of a run. Not an `async fn`: an `async fn` keeps each argument
/// twice in its future (as passed, and moved into its body), an `async
/// move` block keeps what it captures once.
// Deliberately not an `async fn` (see above): clippy's suggestion would
// store the arguments twice.
#[allow(clippy::manual_async_fn)]
fn run_execution<'a, C, D>(
    mut env: Env<'a, C, D>,
    ctx: &'a mut C,
    resume: Option<Box<Resume>>,
    lent: Option<&'a mut [Record]>,
) -> impl Future<Output = Result<SagaReport, SagaError>> + 'a {
    async move {
        let started = env.now();
        env.started = Some(started);
        let mut state = State::new(env.saga, started, lent);
        if let Some(resume) = &resume {
            let after_stuck = resume.after_stuck;
            env.emit(|| SagaEvent::SagaResumed { after_stuck });
        } else {
            env.emit(|| SagaEvent::SagaStarted);
        }
        // A recovered run that was rolling back goes on rolling back. (Its
        // cause is boxed, and each match ends before the next await: a
        // match's scrutinee, and a local moved on one path only, are held
        // to the end of their scope, across the awaits in it.)
        let result = {
            let stop = match resume.and_then(|resume| state.resume(env.saga, *resume)) {
                Some(stop) => Some(*stop),
                // Driven without a runtime, and never durable (only
                // `run_blocking` drives a run so).
                None if env.blocking => forward_blocking(&env, &mut state, ctx).err(),
                None => forward(&env, &mut state, ctx).await.err(),
            };
            match stop {
                None => Ok(state.finish(&env, ExecutionStatus::Completed)),
                Some(Stop::Stuck { node, index, error }) => {
                    Err(stuck_forward(&env, &mut state, node, index, error))
                }
                Some(stop) if env.blocking => rollback_blocking(&env, &mut state, ctx, stop),
                // Boxed: inline, the rollback's future would make every run
                // in flight larger, though only failed runs need it.
                Some(stop) => Box::pin(rollback(&env, &mut state, ctx, stop)).await,
            }
        };
        if env.durable.is_none() || matches!(result, Err(SagaError::Store { .. })) {
            return result;
        }
        // Boxed: the end of a durable run, held by no run in flight.
        Box::pin(finish_durable(&env, &mut state, ctx, result)).await
    }
}

/// Logs the end of a durable run.
async fn finish_durable<C, D>(
    env: &Env<'_, C, D>,
    state: &mut State<'_>,
    ctx: &mut C,
    mut result: Result<SagaReport, SagaError>,
) -> Result<SagaReport, SagaError> {
    if let Some(error) = env.take_abort() {
        return Err(store_error(env, state, error));
    }
    let status = match &result {
        Ok(report) => report.status,
        Err(error) => error.report().status,
    };
    let log = env.log(EventKind::Finished, status, |event| {
        // Every step's end logged the context it left: the last one logged
        // since the last commit is the context as it is, encoded already.
        event.context = env.last_context().or_else(|| env.snapshot(&*ctx));
        event.detail = result.as_ref().err().and_then(outcome_detail);
    });
    let abort = match log.await {
        Ok(_) => None,
        Err(_) => env.take_abort(),
    };
    if let Some(error) = abort {
        return Err(store_error(env, state, error));
    }
    env.emit(|| SagaEvent::SagaFinished {
        status,
        elapsed: env.since_start(state.mark),
    });
    // A cancel that came with the last commit found the run completed.
    if let Ok(report) = &mut result {
        report.cancel_ignored |= env.cancel_requested();
    }
    result
}

/// The error a run's [`SagaError`] carries for a step's `error`: a durable
/// run's is the logged form ([`LoggedError`]), as every engine reading the
/// log gives it; an in-memory run's is the user's own error.
fn final_error<C, D>(env: &Env<'_, C, D>, error: StepError) -> BoxError {
    if env.durable.is_some() {
        Box::new(LoggedError::of(&error))
    } else {
        error.into_inner()
    }
}

/// Ends a run whose journal failed.
fn store_error<C, D>(env: &Env<'_, C, D>, state: &mut State<'_>, error: StoreError) -> SagaError {
    let duration = env.since_start(env.now());
    let report = state.report(env, state.status, duration);
    SagaError::Store {
        saga: env.saga.name.clone(),
        error: Box::new(error),
        report: Box::new(report),
    }
}

impl<C> Node<C> {
    fn first(&self) -> usize {
        self.range().start
    }

    fn range(&self) -> Range<usize> {
        match self {
            Node::Step(index) => *index..*index + 1,
            Node::Group { range, .. } => range.clone(),
        }
    }
}
