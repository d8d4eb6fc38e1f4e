//! Checks of leases, fencing, cancel requests and unknown ids.

use std::sync::Arc;
use std::time::Duration;

use super::{
    Check, LIVE, OrFail, Outcome, SHORT, append, create, ensure, entry, event, events, expire,
    record,
};
use crate::store::{EventKind, Lease, SagaStore, StoreError};
use crate::{ExecutionId, ExecutionStatus};

pub(super) fn checks() -> Vec<Check> {
    vec![
        entry!(
            a_live_lease_is_never_claimed,
            "`claim` returns `None` while a live lease is held, by another owner or by the \
             claiming owner itself"
        ),
        entry!(
            an_expired_lease_is_claimed_with_a_new_token,
            "`claim` takes an expired lease and bumps the fencing token: the new lease's token \
             is greater than every earlier one, and the record names the new owner"
        ),
        entry!(
            an_owner_taken_over_can_no_longer_write,
            "once another owner claimed the execution, `append` and `renew` with the old lease \
             fail with `StoreError::LeaseLost` and write nothing"
        ),
        entry!(
            append_and_renew_extend_the_lease,
            "each `append` and each `renew` extends the lease by its ttl (from the time of the \
             call): the record's `lease_expires_at_ms` moves later, and another owner's claim \
             finds the lease live"
        ),
        entry!(
            release_frees_only_the_holders_lease,
            "`release` with the lease the execution holds frees it (another owner can claim \
             it); with a lease lost to a take-over it is a no-op: it succeeds and leaves the \
             new owner's lease in place"
        ),
        entry!(
            a_finishing_append_releases_the_lease,
            "an `append` with a finished status releases the lease in the same commit: the \
             record has no owner and no expiry, and another owner's claim succeeds at once"
        ),
        entry!(
            cancel_requests_reach_the_owner,
            "`request_cancel` marks the execution (`true`; `false` for an unknown id), and the \
             owner's next `renew` and `append` acknowledge it (`Ack::cancel_requested`)"
        ),
        entry!(
            unknown_ids_are_empty_answers,
            "for an unknown id `get`, `context` and `latest_context` give `None`, \
             `events_without_contexts` nothing, `request_cancel` `false`, and `claim` fails \
             with `StoreError::NotFound`"
        ),
    ]
}

async fn a_live_lease_is_never_claimed(store: Arc<dyn SagaStore>) -> Outcome {
    create(&*store, "x", "a", LIVE).await?;
    let id = ExecutionId::new("x");
    for owner in ["b", "a"] {
        let claimed = store
            .claim(&id, owner, LIVE)
            .await
            .or_fail(&format!("claim(`x`, `{owner}`)"))?;
        ensure!(
            claimed.is_none(),
            "`claim(x)` by `{owner}` while `a` holds a lease of {LIVE:?} taken just before \
             gave {claimed:?}"
        );
    }
    let got = record(&*store, &id).await?;
    ensure!(
        got.owner.as_deref() == Some("a"),
        "after refused claims of `x`, `get(x)` names the owner {:?}, not `a`",
        got.owner
    );
    Ok(())
}

async fn an_expired_lease_is_claimed_with_a_new_token(store: Arc<dyn SagaStore>) -> Outcome {
    let old = create(&*store, "x", "a", SHORT).await?;
    expire().await;
    let id = ExecutionId::new("x");
    let taken = taken_over(&*store, &id, "b", &old).await?;
    ensure!(
        &*taken.owner == "b",
        "`claim(x)` by `b` gave a lease of {:?}",
        taken.owner
    );
    let got = record(&*store, &id).await?;
    ensure!(
        got.owner.as_deref() == Some("b"),
        "after `b` claimed `x`, `get(x)` names the owner {:?}",
        got.owner
    );
    // And again: each claim bumps the token.
    store.release(&id, &taken).await.or_fail("release(`x`)")?;
    let third = taken_over(&*store, &id, "c", &taken).await?;
    ensure!(
        third.token > old.token,
        "tokens went back: {} then {} then {}",
        old.token,
        taken.token,
        third.token
    );
    Ok(())
}

async fn an_owner_taken_over_can_no_longer_write(store: Arc<dyn SagaStore>) -> Outcome {
    let old = create(&*store, "x", "a", SHORT).await?;
    expire().await;
    let id = ExecutionId::new("x");
    let taken = taken_over(&*store, &id, "b", &old).await?;
    let stale = vec![event(1, EventKind::StepStarted)];
    match store
        .append(&id, &old, stale, ExecutionStatus::Compensating)
        .await
    {
        Err(StoreError::LeaseLost { .. }) => {}
        Err(other) => {
            return Err(format!(
                "`append(x)` with `a`'s lease (token {}) after `b` claimed it (token {}) \
                 failed with {other:?}, not `StoreError::LeaseLost`",
                old.token, taken.token
            ));
        }
        Ok(_) => {
            return Err(format!(
                "`append(x)` with `a`'s lease (token {}) after `b` claimed it (token {}) was \
                 accepted",
                old.token, taken.token
            ));
        }
    }
    let log = events(&*store, &id).await?;
    let got = record(&*store, &id).await?;
    ensure!(
        log.is_empty() && got.status == ExecutionStatus::Running && got.last_seq == 0,
        "a refused `append` with a lost lease wrote: {} events, status `{}`",
        log.len(),
        got.status
    );
    match store.renew(&id, &old).await {
        Err(StoreError::LeaseLost { .. }) => {}
        other => {
            return Err(format!(
                "`renew(x)` with `a`'s lease after `b` claimed it gave {other:?}, not \
                 `Err(StoreError::LeaseLost)`"
            ));
        }
    }
    let ok = vec![event(1, EventKind::StepStarted)];
    append(&*store, &id, &taken, ok, ExecutionStatus::Running).await?;
    Ok(())
}

async fn append_and_renew_extend_the_lease(store: Arc<dyn SagaStore>) -> Outcome {
    // Measured on the store's clock: its time of the append is the
    // `at_ms` it stamps, and the renewal comes `PAUSE` later on any
    // clock. A lease the store left where it was (a whole ttl away from
    // the create) is `PAUSE` short of a whole ttl from then.
    const PAUSE: Duration = Duration::from_millis(400);
    // Between the time a store stamps and the time it extends from,
    // within one write.
    const SLOP: i64 = 100;
    let lease = create(&*store, "x", "a", LIVE).await?;
    let id = ExecutionId::new("x");
    let ttl = i64::try_from(LIVE.as_millis()).unwrap_or(i64::MAX);
    let pause = i64::try_from(PAUSE.as_millis()).unwrap_or(i64::MAX);
    let expiry = |what: &'static str| {
        let store = Arc::clone(&store);
        let id = id.clone();
        async move {
            record(&*store, &id)
                .await?
                .lease_expires_at_ms
                .ok_or_else(|| {
                    format!("after {what}, `get(x)` gave no lease expiry while `a` holds its lease")
                })
        }
    };
    let created = expiry("`create(x)`").await?;
    tokio::time::sleep(PAUSE).await;
    let started = vec![event(1, EventKind::StepStarted)];
    append(&*store, &id, &lease, started, ExecutionStatus::Running).await?;
    let appended = expiry("`append(x)`").await?;
    let at = events(&*store, &id).await?.first().map_or(0, |e| e.at_ms);
    ensure!(
        appended >= at + ttl - SLOP,
        "an `append` at {at} (its event's `at_ms`), {pause} ms after `create`, left the \
         lease's expiry at {appended} (it was {created}), not a whole ttl ({ttl} ms) after \
         the append: the append must extend the lease, or a step that blocks the engine's \
         renewals loses it"
    );
    tokio::time::sleep(PAUSE).await;
    store.renew(&id, &lease).await.or_fail("renew(`x`)")?;
    let renewed = expiry("`renew(x)`").await?;
    ensure!(
        renewed >= at + pause + ttl - SLOP,
        "a `renew` {pause} ms after an `append` at {at} left the lease's expiry at \
         {renewed} (it was {appended}), not a whole ttl ({ttl} ms) after the renewal"
    );
    let claimed = store
        .claim(&id, "b", LIVE)
        .await
        .or_fail("claim(`x`, `b`)")?;
    ensure!(
        claimed.is_none(),
        "`claim(x)` by `b` right after `a` renewed its lease gave {claimed:?}"
    );
    Ok(())
}

async fn release_frees_only_the_holders_lease(store: Arc<dyn SagaStore>) -> Outcome {
    let old = create(&*store, "x", "a", SHORT).await?;
    expire().await;
    let id = ExecutionId::new("x");
    let taken = taken_over(&*store, &id, "b", &old).await?;
    store
        .release(&id, &old)
        .await
        .or_fail("release(`x`) with a lease lost to a take-over")?;
    let got = record(&*store, &id).await?;
    ensure!(
        got.owner.as_deref() == Some("b"),
        "`release(x)` with `a`'s lost lease (token {}) freed `b`'s (token {}): `get(x)` names \
         the owner {:?}",
        old.token,
        taken.token,
        got.owner
    );
    let claimed = store
        .claim(&id, "c", LIVE)
        .await
        .or_fail("claim(`x`, `c`)")?;
    ensure!(
        claimed.is_none(),
        "`release(x)` with `a`'s lost lease (token {}) freed `b`'s live lease (token {}): \
         `c` claimed it, {claimed:?}",
        old.token,
        taken.token
    );
    let ok = vec![event(1, EventKind::StepStarted)];
    append(&*store, &id, &taken, ok, ExecutionStatus::Running).await?;
    store.release(&id, &taken).await.or_fail("release(`x`)")?;
    let claimed = store
        .claim(&id, "c", LIVE)
        .await
        .or_fail("claim(`x`, `c`)")?;
    ensure!(
        claimed.is_some(),
        "after `b` released its lease on `x`, `claim(x)` by `c` gave `None`"
    );
    Ok(())
}

async fn a_finishing_append_releases_the_lease(store: Arc<dyn SagaStore>) -> Outcome {
    let lease = create(&*store, "x", "a", LIVE).await?;
    let id = ExecutionId::new("x");
    let finished = vec![event(1, EventKind::Finished)];
    append(&*store, &id, &lease, finished, ExecutionStatus::Completed).await?;
    let got = record(&*store, &id).await?;
    ensure!(
        got.owner.is_none() && got.lease_expires_at_ms.is_none(),
        "after an `append` with status `completed`, `get(x)` still shows a lease: owner \
         {:?}, expiry {:?}",
        got.owner,
        got.lease_expires_at_ms
    );
    let claimed = store
        .claim(&id, "b", LIVE)
        .await
        .or_fail("claim(`x`, `b`)")?;
    ensure!(
        claimed.is_some(),
        "after an `append` with status `completed`, `claim(x)` by `b` gave `None`: the \
         lease was kept"
    );
    Ok(())
}

async fn cancel_requests_reach_the_owner(store: Arc<dyn SagaStore>) -> Outcome {
    let lease = create(&*store, "x", "a", LIVE).await?;
    let id = ExecutionId::new("x");
    let ack = store.renew(&id, &lease).await.or_fail("renew(`x`)")?;
    ensure!(
        !ack.cancel_requested,
        "`renew(x)` acknowledged a cancel request no one made"
    );
    let marked = store
        .request_cancel(&id)
        .await
        .or_fail("request_cancel(`x`)")?;
    ensure!(
        marked,
        "`request_cancel(x)` gave `false` for an existing execution"
    );
    let ack = store.renew(&id, &lease).await.or_fail("renew(`x`)")?;
    ensure!(
        ack.cancel_requested,
        "`renew(x)` after `request_cancel(x)` gave {ack:?}"
    );
    let ack = store
        .append(
            &id,
            &lease,
            vec![event(1, EventKind::StepStarted)],
            ExecutionStatus::Running,
        )
        .await
        .or_fail("append(`x`)")?;
    ensure!(
        ack.cancel_requested,
        "`append(x)` after `request_cancel(x)` gave {ack:?}"
    );
    let got = record(&*store, &id).await?;
    ensure!(
        got.cancel_requested,
        "after `request_cancel(x)`, `get(x)` gave `cancel_requested: false`"
    );
    let unknown = store
        .request_cancel(&ExecutionId::new("nope"))
        .await
        .or_fail("request_cancel(`nope`)")?;
    ensure!(!unknown, "`request_cancel` of an unknown id gave `true`");
    Ok(())
}

async fn unknown_ids_are_empty_answers(store: Arc<dyn SagaStore>) -> Outcome {
    create(&*store, "x", "a", LIVE).await?;
    let nope = ExecutionId::new("nope");
    let got = store.get(&nope).await.or_fail("get(`nope`)")?;
    ensure!(got.is_none(), "`get` of an unknown id gave {got:?}");
    let context = store.context(&nope).await.or_fail("context(`nope`)")?;
    ensure!(
        context.is_none(),
        "`context` of an unknown id gave {context:?}"
    );
    let latest = store
        .latest_context(&nope)
        .await
        .or_fail("latest_context(`nope`)")?;
    ensure!(
        latest.is_none(),
        "`latest_context` of an unknown id gave {latest:?}"
    );
    let log = store
        .events_without_contexts(&nope)
        .await
        .or_fail("events_without_contexts(`nope`)")?;
    ensure!(
        log.is_empty(),
        "`events_without_contexts` of an unknown id gave {log:?}"
    );
    match store.claim(&nope, "a", LIVE).await {
        Err(StoreError::NotFound { .. }) => {}
        other => {
            return Err(format!(
                "`claim` of an unknown id gave {other:?}, not `Err(StoreError::NotFound)`"
            ));
        }
    }
    Ok(())
}

/// `claimer`'s claim of `id`, whose lease `old` expired: a lease with a
/// token greater than `old`'s.
async fn taken_over(
    store: &dyn SagaStore,
    id: &ExecutionId,
    claimer: &str,
    old: &Lease,
) -> Result<Lease, String> {
    let claimed = store
        .claim(id, claimer, LIVE)
        .await
        .or_fail(&format!("claim(`{id}`, `{claimer}`)"))?;
    let taken = claimed.ok_or_else(|| {
        format!(
            "`claim({id})` by `{claimer}` gave `None` although the lease it held had expired \
             (its ttl, {SHORT:?}, passed 250 ms before) or been released"
        )
    })?;
    ensure!(
        taken.token > old.token,
        "`claim({id})` by `{claimer}` gave token {}, not greater than the earlier lease's {}: \
         the earlier owner could still write",
        taken.token,
        old.token
    );
    Ok(taken)
}
