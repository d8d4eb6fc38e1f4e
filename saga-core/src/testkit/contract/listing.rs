//! Checks of listings, contexts, resume requests and purging.

use std::sync::Arc;
use std::time::Duration;

use super::{
    Check, LIVE, OrFail, Outcome, append, create, ensure, entry, event, events, ids, record,
};
use crate::store::{EventKind, ListQuery, SagaStore};
use crate::{ExecutionId, ExecutionStatus};

pub(super) fn checks() -> Vec<Check> {
    vec![
        entry!(
            listings_go_oldest_first,
            "`list` and `list_summaries` give the executions with the status asked (every one \
             for `None`), oldest first (`(created_at, id)` order); `list_summaries` pages \
             after its cursor, at most its limit"
        ),
        entry!(
            contexts_read_alone_and_logs_without_them,
            "`latest_context` gives the initial context until an event logs one, then the last \
             one logged; `events_without_contexts` gives the log as `events` does, every \
             context `None`"
        ),
        entry!(
            resume_requests_list_the_stuck_executions_asked_to_resume,
            "`resume_requests` lists the stuck executions whose log ends with `resume_requested`, \
             and no other"
        ),
        entry!(
            purge_deletes_only_old_finished_executions_never_stuck_ones,
            "`purge(before_ms)` deletes the finished executions last written at or before \
             `before_ms`, with their logs, except stuck ones, which wait for an operator; it \
             returns how many it deleted"
        ),
    ]
}

async fn listings_go_oldest_first(store: Arc<dyn SagaStore>) -> Outcome {
    let mut leases = Vec::new();
    for n in 0..4 {
        leases.push(create(&*store, &format!("l{n}"), "a", LIVE).await?);
        // Distinct creation times, so the order is the creation order.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let id = |n: usize| ExecutionId::new(format!("l{n}"));
    let done = vec![event(1, EventKind::Finished)];
    append(
        &*store,
        &id(1),
        &leases[1],
        done,
        ExecutionStatus::Completed,
    )
    .await?;
    let all = store.list(None).await.or_fail("list(None)")?;
    let got = ids(all.iter().map(|r| &r.id));
    ensure!(
        got == ["l0", "l1", "l2", "l3"],
        "`list(None)` gave {got:?} for l0..l3 created in that order"
    );
    ensure!(
        all.iter().all(|r| r.context == "{}"),
        "`list(None)` gave the records without their contexts: {all:?}"
    );
    let running = store
        .list(Some(ExecutionStatus::Running))
        .await
        .or_fail("list(Some(running))")?;
    let got = ids(running.iter().map(|r| &r.id));
    ensure!(
        got == ["l0", "l2", "l3"],
        "`list(Some(running))` gave {got:?}; l1 is completed, the others running"
    );
    let page = store
        .list_summaries(ListQuery::new().with_limit(2))
        .await
        .or_fail("list_summaries(limit 2)")?;
    let got = ids(page.iter().map(|s| &s.id));
    ensure!(
        got == ["l0", "l1"],
        "`list_summaries` with limit 2 gave {got:?}"
    );
    let rest = store
        .list_summaries(ListQuery::new().with_after(page[1].cursor()))
        .await
        .or_fail("list_summaries(after l1)")?;
    let got = ids(rest.iter().map(|s| &s.id));
    ensure!(
        got == ["l2", "l3"],
        "`list_summaries` after l1's cursor gave {got:?}"
    );
    let completed = store
        .list_summaries(ListQuery::new().with_status(ExecutionStatus::Completed))
        .await
        .or_fail("list_summaries(completed)")?;
    let got = ids(completed.iter().map(|s| &s.id));
    ensure!(
        got == ["l1"],
        "`list_summaries` of the completed gave {got:?}"
    );
    Ok(())
}

async fn contexts_read_alone_and_logs_without_them(store: Arc<dyn SagaStore>) -> Outcome {
    let lease = create(&*store, "x", "a", LIVE).await?;
    let id = ExecutionId::new("x");
    let latest = || store.latest_context(&id);
    let initial = latest().await.or_fail("latest_context(`x`)")?;
    ensure!(
        initial.as_deref() == Some("{}"),
        "`latest_context(x)` before any event gave {initial:?}, not the initial `{{}}`"
    );
    let mut batch = Vec::new();
    for (seq, context) in [
        (1, None),
        (2, Some("{\"k\":1}")),
        (3, Some("{\"k\":2}")),
        (4, None),
    ] {
        let mut e = event(seq, EventKind::StepStarted);
        e.step = Some(0);
        e.attempt = 1;
        e.context = context.map(str::to_owned);
        batch.push(e);
    }
    let later = batch.split_off(2);
    append(&*store, &id, &lease, batch, ExecutionStatus::Running).await?;
    let got = latest().await.or_fail("latest_context(`x`)")?;
    ensure!(
        got.as_deref() == Some("{\"k\":1}"),
        "`latest_context(x)` after events logging no context, then `{{\"k\":1}}`, gave {got:?}"
    );
    append(&*store, &id, &lease, later, ExecutionStatus::Running).await?;
    let got = latest().await.or_fail("latest_context(`x`)")?;
    ensure!(
        got.as_deref() == Some("{\"k\":2}"),
        "`latest_context(x)` after `{{\"k\":2}}` then an event logging none gave {got:?}"
    );
    let context = store.context(&id).await.or_fail("context(`x`)")?;
    ensure!(
        context.as_deref() == Some("{}"),
        "`context(x)` gave {context:?}, not the initial context `{{}}`"
    );
    let mut expected = events(&*store, &id).await?;
    for e in &mut expected {
        e.context = None;
    }
    let without = store
        .events_without_contexts(&id)
        .await
        .or_fail("events_without_contexts(`x`)")?;
    ensure!(
        without == expected,
        "`events_without_contexts(x)` gave {without:?}, not the log without its contexts: \
         {expected:?}"
    );
    Ok(())
}

async fn resume_requests_list_the_stuck_executions_asked_to_resume(
    store: Arc<dyn SagaStore>,
) -> Outcome {
    let mut leases = Vec::new();
    for n in 0..4 {
        leases.push(create(&*store, &format!("r{n}"), "owner", LIVE).await?);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let id = |n: usize| ExecutionId::new(format!("r{n}"));
    // r0, r1, r2 stuck; r3 running.
    for (n, lease) in leases.iter().enumerate().take(3) {
        let finished = vec![event(1, EventKind::Finished)];
        append(&*store, &id(n), lease, finished, ExecutionStatus::Stuck).await?;
    }
    // An operator's requests for r0 and r1, each under a lease of its own.
    for n in 0..2 {
        let lease = store
            .claim(&id(n), "cli", LIVE)
            .await
            .or_fail(&format!("claim(`r{n}`, `cli`)"))?
            .ok_or_else(|| {
                format!("`claim(r{n})` of a stuck execution with no lease gave `None`")
            })?;
        let asked = vec![event(2, EventKind::ResumeRequested)];
        append(&*store, &id(n), &lease, asked, ExecutionStatus::Stuck).await?;
        store
            .release(&id(n), &lease)
            .await
            .or_fail(&format!("release(`r{n}`)"))?;
    }
    // r1 resumed since.
    let lease = store
        .claim(&id(1), "worker", LIVE)
        .await
        .or_fail("claim(`r1`, `worker`)")?
        .ok_or("`claim(r1)` of a stuck execution whose lease was released gave `None`")?;
    let resumed = vec![event(3, EventKind::Resumed)];
    append(&*store, &id(1), &lease, resumed, ExecutionStatus::Running).await?;
    let listed: Vec<String> = store
        .resume_requests()
        .await
        .or_fail("resume_requests()")?
        .into_iter()
        .map(|s| format!("{} {} {}", s.id, s.status, s.last_seq))
        .collect();
    ensure!(
        listed == ["r0 stuck 2"],
        "`resume_requests()` gave {listed:?} (as `id status last_seq`); only r0 is stuck with \
         a pending request (r1 was resumed since, r2 never asked, r3 is running)"
    );
    Ok(())
}

async fn purge_deletes_only_old_finished_executions_never_stuck_ones(
    store: Arc<dyn SagaStore>,
) -> Outcome {
    let statuses = [
        ExecutionStatus::Completed,
        ExecutionStatus::Running,
        ExecutionStatus::Compensated,
        ExecutionStatus::Stuck,
        ExecutionStatus::Cancelled,
        ExecutionStatus::Compensating,
        ExecutionStatus::Abandoned,
    ];
    let id = |n: usize| ExecutionId::new(format!("p{n}"));
    for (n, &status) in statuses.iter().enumerate() {
        let lease = create(&*store, &format!("p{n}"), "a", LIVE).await?;
        tokio::time::sleep(Duration::from_millis(2)).await;
        let kind = if status.is_finished() {
            EventKind::Finished
        } else if status == ExecutionStatus::Compensating {
            EventKind::RollbackStarted
        } else {
            EventKind::StepStarted
        };
        append(&*store, &id(n), &lease, vec![event(1, kind)], status).await?;
    }
    // Nothing was last written at or before the epoch.
    let purged = store.purge(0).await.or_fail("purge(0)")?;
    ensure!(
        purged == 0,
        "`purge(0)` deleted {purged} executions, all of them written now"
    );
    let purged = store.purge(i64::MAX).await.or_fail("purge(i64::MAX)")?;
    let left: Vec<String> = store
        .list(None)
        .await
        .or_fail("list(None)")?
        .into_iter()
        .map(|r| format!("{} {}", r.id, r.status))
        .collect();
    ensure!(
        left == ["p1 running", "p3 stuck", "p5 compensating"],
        "after `purge(i64::MAX)` (which returned {purged}), `list(None)` gave {left:?}: a \
         purge deletes completed, compensated, cancelled and abandoned executions and keeps \
         stuck ones and unfinished ones"
    );
    ensure!(
        purged == 4,
        "`purge(i64::MAX)` deleted the 4 finished, not stuck, executions but returned {purged}"
    );
    let log = store
        .events_without_contexts(&id(0))
        .await
        .or_fail("events_without_contexts(`p0`)")?;
    ensure!(
        log.is_empty(),
        "after `purge` deleted p0, `events_without_contexts(p0)` still gave {} events",
        log.len()
    );
    let stuck = record(&*store, &id(3)).await?;
    ensure!(
        stuck.status == ExecutionStatus::Stuck,
        "after `purge`, the stuck p3 is `{}`",
        stuck.status
    );
    let again = store
        .purge(i64::MAX)
        .await
        .or_fail("purge(i64::MAX) again")?;
    ensure!(
        again == 0,
        "a second `purge(i64::MAX)` deleted {again} more"
    );
    Ok(())
}
