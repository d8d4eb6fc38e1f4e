//! Checks of `claim_next` and the work signal.

use std::sync::Arc;
use std::time::Duration;

use super::{
    Check, LIVE, OrFail, Outcome, SHORT, append, create, ensure, entry, event, expire, ids,
};
use crate::store::{ClaimRequest, Claimed, EventKind, SagaStore};
use crate::{ExecutionId, ExecutionStatus};

pub(super) fn checks() -> Vec<Check> {
    vec![
        entry!(
            claim_next_takes_the_oldest_free_unfinished_first,
            "`claim_next` claims up to `limit` running or compensating executions whose lease \
             is free or expired, oldest first, never a finished or stuck one nor one with a \
             live lease, each with a new lease and its record"
        ),
        entry!(
            claimers_skip_each_other_and_honour_fingerprints,
            "concurrent `claim_next` calls never claim one execution twice; only executions \
             started with one of `fingerprints` are claimed, and none in `exclude`"
        ),
        entry!(
            a_claim_with_its_log_gives_the_whole_log,
            "`claim_next_with_log` claims as `claim_next` does; a log it gives is the \
             execution's whole log, every event an earlier owner committed, ending at the \
             record's `last_seq` (`None`: the engine reads it itself)"
        ),
        entry!(
            the_work_signal_changes_on_new_work,
            "a store that gives a `work_signal` changes its value when an execution is \
             created and when a lease is released (a store that gives `None` passes: claimers \
             poll it)"
        ),
    ]
}

/// A request of `owner` for definition `f`.
fn request(owner: &str, ttl: Duration, limit: usize) -> ClaimRequest {
    ClaimRequest {
        fingerprints: vec!["f".to_owned()],
        owner: owner.to_owned(),
        ttl,
        limit,
        exclude: Vec::new(),
    }
}

/// The ids claimed.
fn claimed_ids(claimed: &[Claimed]) -> Vec<&str> {
    ids(claimed.iter().map(|c| &c.record.id))
}

async fn claim_next_takes_the_oldest_free_unfinished_first(store: Arc<dyn SagaStore>) -> Outcome {
    let id = |n: usize| ExecutionId::new(format!("o{n}"));
    let mut leases = Vec::new();
    for n in 0..6 {
        leases.push(create(&*store, &format!("o{n}"), "maker", LIVE).await?);
        // Distinct creation times, so the order is the creation order.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // o1 completed, o2 stuck, o3 compensating; o0, o4, o5 running; all
    // but o1 and o2 released.
    let end = |kind| vec![event(1, kind)];
    append(
        &*store,
        &id(1),
        &leases[1],
        end(EventKind::Finished),
        ExecutionStatus::Completed,
    )
    .await?;
    append(
        &*store,
        &id(2),
        &leases[2],
        end(EventKind::Finished),
        ExecutionStatus::Stuck,
    )
    .await?;
    let rollback = end(EventKind::RollbackStarted);
    append(
        &*store,
        &id(3),
        &leases[3],
        rollback,
        ExecutionStatus::Compensating,
    )
    .await?;
    for n in [0, 3, 4, 5] {
        store
            .release(&id(n), &leases[n])
            .await
            .or_fail(&format!("release(`o{n}`)"))?;
    }
    let first = store
        .claim_next(request("w", LIVE, 2))
        .await
        .or_fail("claim_next(limit 2)")?;
    ensure!(
        claimed_ids(&first) == ["o0", "o3"],
        "`claim_next` with limit 2 gave {:?}; free and unfinished, oldest first, are o0, o3 \
         (o1 is completed, o2 stuck)",
        claimed_ids(&first)
    );
    // o4 and o5 on a lease that expires.
    let second = store
        .claim_next(request("w", SHORT, 5))
        .await
        .or_fail("claim_next(limit 5)")?;
    ensure!(
        claimed_ids(&second) == ["o4", "o5"],
        "`claim_next` with limit 5 gave {:?}; o0 and o3 have live leases now, o4 and o5 are \
         free",
        claimed_ids(&second)
    );
    expire().await;
    let third = store
        .claim_next(request("v", LIVE, 10))
        .await
        .or_fail("claim_next(limit 10)")?;
    ensure!(
        claimed_ids(&third) == ["o4", "o5"],
        "`claim_next` once the leases of o4 and o5 expired gave {:?}; o0 and o3 still have \
         live ones",
        claimed_ids(&third)
    );
    for claimed in &third {
        let lease = &claimed.lease;
        let old = second.iter().find(|c| c.record.id == claimed.record.id);
        ensure!(
            &*lease.owner == "v" && old.is_some_and(|old| lease.token > old.lease.token),
            "`claim_next` by `v` of {} gave the lease {lease:?} after {:?}: a claim bumps the \
             token",
            claimed.record.id,
            old.map(|c| &c.lease)
        );
    }
    for (claimed, lease) in first.iter().zip(&first) {
        store
            .release(&claimed.record.id, &lease.lease)
            .await
            .or_fail(&format!("release(`{}`)", claimed.record.id))?;
    }
    let again = store
        .claim_next(request("u", LIVE, 10))
        .await
        .or_fail("claim_next(limit 10)")?;
    ensure!(
        claimed_ids(&again) == ["o0", "o3"],
        "`claim_next` once o0 and o3 were released gave {:?}",
        claimed_ids(&again)
    );
    let statuses: Vec<_> = again.iter().map(|c| c.record.status).collect();
    ensure!(
        statuses == [ExecutionStatus::Running, ExecutionStatus::Compensating]
            && again
                .iter()
                .all(|c| c.record.context == "{}" && c.record.owner.as_deref() == Some("u")),
        "`claim_next` by `u` gave records that do not show the claim: {:?}",
        again.iter().map(|c| &c.record).collect::<Vec<_>>()
    );
    Ok(())
}

async fn claimers_skip_each_other_and_honour_fingerprints(store: Arc<dyn SagaStore>) -> Outcome {
    for n in 0..10 {
        let lease = create(&*store, &format!("e{n}"), "submitter", LIVE).await?;
        store
            .release(&ExecutionId::new(format!("e{n}")), &lease)
            .await
            .or_fail(&format!("release(`e{n}`)"))?;
    }
    let request = |owner: &str, fingerprint: &str| ClaimRequest {
        fingerprints: vec![fingerprint.to_owned()],
        owner: owner.to_owned(),
        ttl: LIVE,
        limit: 4,
        exclude: vec![ExecutionId::new("e0")],
    };
    let other = store
        .claim_next(request("w", "other"))
        .await
        .or_fail("claim_next(fingerprint `other`)")?;
    ensure!(
        other.is_empty(),
        "`claim_next` for fingerprint `other` claimed {:?}, of fingerprint `f`",
        claimed_ids(&other)
    );
    let (a, b, c) = tokio::join!(
        store.claim_next(request("a", "f")),
        store.claim_next(request("b", "f")),
        store.claim_next(request("c", "f")),
    );
    let mut claimed = Vec::new();
    for (owner, got) in [("a", a), ("b", b), ("c", c)] {
        claimed.extend(got.or_fail(&format!("claim_next by `{owner}`"))?);
    }
    let mut got = claimed_ids(&claimed);
    got.sort_unstable();
    ensure!(
        got == ["e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8", "e9"],
        "three concurrent `claim_next` calls (limit 4 each, excluding e0) of e0..e9 claimed \
         {got:?}: each of e1..e9 once"
    );
    let none = store
        .claim_next(request("d", "f"))
        .await
        .or_fail("claim_next by `d`")?;
    ensure!(
        none.is_empty(),
        "`claim_next` claimed {:?}, which other claimers hold live leases on",
        claimed_ids(&none)
    );
    Ok(())
}

async fn a_claim_with_its_log_gives_the_whole_log(store: Arc<dyn SagaStore>) -> Outcome {
    let lease = create(&*store, "x", "a", LIVE).await?;
    let id = ExecutionId::new("x");
    let mut written = Vec::new();
    for seq in 1..=3 {
        let mut e = event(seq, EventKind::StepStarted);
        e.step = Some(0);
        e.attempt = u32::try_from(seq).unwrap_or(u32::MAX);
        e.context = Some(format!("{{\"k\":{seq}}}"));
        written.push(e);
    }
    append(
        &*store,
        &id,
        &lease,
        written[..2].to_vec(),
        ExecutionStatus::Running,
    )
    .await?;
    append(
        &*store,
        &id,
        &lease,
        written[2..].to_vec(),
        ExecutionStatus::Running,
    )
    .await?;
    store.release(&id, &lease).await.or_fail("release(`x`)")?;
    let claimed = store
        .claim_next_with_log(request("w", LIVE, 10))
        .await
        .or_fail("claim_next_with_log(limit 10)")?;
    let got: Vec<&str> = ids(claimed.iter().map(|c| &c.claimed.record.id));
    ensure!(
        got == ["x"],
        "`claim_next_with_log` gave {got:?} for the one free execution x"
    );
    let claim = &claimed[0];
    let record = &claim.claimed.record;
    ensure!(
        record.owner.as_deref() == Some("w") && record.last_seq == 3,
        "`claim_next_with_log` by `w` gave the record {record:?}, not x with owner `w` and \
         `last_seq` 3"
    );
    if let Some(log) = &claim.events {
        super::log::same_events("`claim_next_with_log` of x (its log)", &written, log)?;
    }
    Ok(())
}

async fn the_work_signal_changes_on_new_work(store: Arc<dyn SagaStore>) -> Outcome {
    // Signals may take a network round trip (PostgreSQL's `NOTIFY`).
    const WAIT: Duration = Duration::from_secs(30);
    let Some(mut signal) = store.work_signal() else {
        return Ok(());
    };
    signal.borrow_and_update();
    let lease = create(&*store, "x", "a", LIVE).await?;
    let changed = tokio::time::timeout(WAIT, signal.changed()).await;
    ensure!(
        matches!(changed, Ok(Ok(()))),
        "the work signal did not change within {} s of `create(x)` ({changed:?})",
        WAIT.as_secs()
    );
    // Once the value changed for the creation, a later change is the
    // release's (a creation signals at most once more, at once).
    tokio::time::sleep(Duration::from_millis(100)).await;
    signal.borrow_and_update();
    let id = ExecutionId::new("x");
    store.release(&id, &lease).await.or_fail("release(`x`)")?;
    let changed = tokio::time::timeout(WAIT, signal.changed()).await;
    ensure!(
        matches!(changed, Ok(Ok(()))),
        "the work signal did not change within {} s of `release(x)` ({changed:?})",
        WAIT.as_secs()
    );
    Ok(())
}
