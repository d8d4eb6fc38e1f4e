//! Parallel groups: a group's branches run, and compensated, at once.

use std::future::{Future, poll_fn};
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;

use super::forward::run_action;
use super::rollback::run_compensation;
use super::{Brakes, Env, Extra, Record};
use crate::cancel::CancellationToken;
use crate::error::StepError;
use crate::report::ExecutionStatus;
use crate::saga::SharedContext;

/// What a group's run returns: its first failure, and the last error of
/// every branch that failed for good (for the report).
pub(super) type GroupRun = (Option<(usize, StepError)>, Vec<(usize, String)>);

/// Runs a group's branches at once. The first branch to fail for good
/// stops its siblings' retries and drops the cancel-safe ones; the others
/// are let finish.
pub(super) async fn run_group<C, D>(
    env: &Env<'_, C, D>,
    ctx: &dyn SharedContext<C>,
    range: Range<usize>,
    records: &mut [Record],
    pivot_done: bool,
) -> GroupRun {
    let group = CancellationToken::new();
    let first_failure = AtomicUsize::new(usize::MAX);
    let running = AtomicUsize::new(range.len());
    let start = env.now();
    let branches = records
        .iter_mut()
        .zip(range.clone())
        .map(|(record, index)| {
            let group = &group;
            let first_failure = &first_failure;
            let running = &running;
            Box::pin(async move {
                let step = &env.saga.steps[index];
                let brakes = Brakes {
                    cancel: env.cancel.as_ref().filter(|_| !pivot_done),
                    group: Some(group),
                    droppable: step.cancel_safe && !pivot_done,
                };
                let result = run_action(env, index, ctx, record, start, brakes, None).await;
                if result.is_err() {
                    let _ = first_failure.compare_exchange(
                        usize::MAX,
                        index,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                    group.cancel();
                }
                // A branch's end is logged now if a sibling still runs (a
                // failure is then in the log, a success is not run again).
                ended_while_siblings_run(env, running, ExecutionStatus::Running).await;
                (index, result)
            })
        })
        .collect();
    let ends = join_all(branches).await;
    let first = first_failure.load(Ordering::SeqCst);
    let mut failure = None;
    let mut errors = Vec::new();
    for (index, result) in ends {
        let halt = match result {
            Ok(end) => {
                if let Some(message) = end.recovered {
                    errors.push((index, message.into()));
                }
                continue;
            }
            Err(halt) => halt,
        };
        if halt.failed {
            errors.push((index, halt.error.to_string()));
        }
        if index == first && failure.is_none() {
            failure = Some((index, halt.error));
        }
    }
    (failure, errors)
}

/// Compensates, at once, every branch of a group that needs it; returns
/// the compensations that failed for good.
pub(super) async fn compensate_group<C, D>(
    env: &Env<'_, C, D>,
    ctx: &dyn SharedContext<C>,
    range: Range<usize>,
    records: &mut [Record],
    extra: &mut [Extra],
) -> Vec<(usize, StepError)> {
    let saga = env.saga;
    let start = env.now();
    let branches: Vec<_> = records
        .iter_mut()
        .zip(extra)
        .zip(range)
        .filter(|((record, _), index)| {
            record.outcome.needs_compensation() && saga.steps[*index].undo.is_some()
        })
        .collect();
    let running = AtomicUsize::new(branches.len());
    let running = &running;
    let branches = branches
        .into_iter()
        .map(|((record, extra), index)| {
            let mut mark = start;
            let Record { status, output, .. } = record;
            Box::pin(async move {
                let failed = run_compensation(
                    env,
                    index,
                    ctx,
                    status,
                    output.as_deref(),
                    extra,
                    start,
                    &mut mark,
                )
                .await
                .err()
                .map(|error| (index, error));
                ended_while_siblings_run(env, running, ExecutionStatus::Compensating).await;
                failed
            })
        })
        .collect();
    join_all(branches).await.into_iter().flatten().collect()
}

/// Counts a branch out of the `running` ones; commits what the journal
/// buffered if a sibling still runs. (A write that fails is in the run's
/// abort slot, which stops it after the group.)
async fn ended_while_siblings_run<C, D>(
    env: &Env<'_, C, D>,
    running: &AtomicUsize,
    status: ExecutionStatus,
) {
    if running.fetch_sub(1, Ordering::SeqCst) > 1 && env.durable.is_some() {
        let _ = env.flush(status).await;
    }
}

/// Polls every future until all are done; results in input order.
pub(super) async fn join_all<F: Future + Unpin>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Option<F>> = futures.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for (slot, result) in futures.iter_mut().zip(results.iter_mut()) {
            if let Some(future) = slot {
                match Pin::new(future).poll(cx) {
                    Poll::Ready(output) => {
                        *result = Some(output);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}
