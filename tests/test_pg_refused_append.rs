//! An append the PostgreSQL store refuses leaves the lease as it was: a
//! finishing append refused on its sequence (a gap, a stale writer's log)
//! does not release the lease of the owner still running the execution,
//! and a refused append that does not finish does not extend it. Both for
//! an append alone (one statement of its own) and for appends to distinct
//! executions sent together (one statement for them all).
#![cfg(feature = "postgres")]

mod support;

use std::time::Duration;

use saga_core::ExecutionId;
use saga_core::store::{
    Created, Event, EventKind, Lease, PostgresOptions, PostgresStore, SagaStore, StoreError,
};
use saga_core::{ExecutionStatus, store::ExecutionRecord};
use support::pg::{fresh_schema, pg_url};
use support::stores::new_execution;

async fn store(test: &str) -> PostgresStore {
    PostgresStore::connect_with(
        &pg_url(),
        PostgresOptions::new().with_schema(fresh_schema(test)),
    )
    .await
    .unwrap()
}

async fn create(store: &PostgresStore, id: &str) -> (ExecutionId, Lease) {
    let created = store
        .create(new_execution(id), "a", Duration::from_secs(60))
        .await
        .unwrap();
    let Created::New(lease) = created else {
        panic!("{id}: not created")
    };
    (ExecutionId::new(id), lease)
}

fn started(seq: u64) -> Event {
    let mut event = Event::new(seq, EventKind::StepStarted);
    event.step = Some(0);
    event.attempt = 1;
    event
}

/// Events that finish an execution, from `first` on: what a writer whose
/// log is stale (or has a gap) sends when it believes the run is done.
fn finishing(first: u64) -> Vec<Event> {
    vec![started(first), Event::new(first + 1, EventKind::Finished)]
}

async fn record(store: &PostgresStore, id: &ExecutionId) -> ExecutionRecord {
    store.get(id).await.unwrap().unwrap()
}

/// The lease of `id` is the one `before` shows, and its owner can still
/// use it: a renewal and an append that continues the log succeed.
async fn still_held(
    store: &PostgresStore,
    id: &ExecutionId,
    lease: &Lease,
    before: &ExecutionRecord,
) {
    let after = record(store, id).await;
    assert_eq!(after.owner.as_deref(), Some("a"), "{id}: lease released");
    assert_eq!(
        after.lease_expires_at_ms, before.lease_expires_at_ms,
        "{id}: lease moved by a refused append"
    );
    assert_eq!(after.status, ExecutionStatus::Running, "{id}");
    assert_eq!(after.last_seq, 0, "{id}");
    store
        .renew(id, lease)
        .await
        .unwrap_or_else(|e| panic!("{id}: renewal refused: {e}"));
    store
        .append(id, lease, vec![started(1)], ExecutionStatus::Running)
        .await
        .unwrap_or_else(|e| panic!("{id}: next append refused: {e}"));
}

fn assert_gap(result: Result<saga_core::store::Ack, StoreError>, id: &ExecutionId) {
    let error = result.unwrap_err();
    assert!(
        matches!(error, StoreError::BadRecord { .. }),
        "{id}: {error:?}"
    );
    assert!(
        error.to_string().contains("the log ends at 0, expected 2"),
        "{id}: {error}"
    );
}

#[tokio::test]
async fn a_refused_append_alone_leaves_the_lease_as_it_was() {
    let store = store("refused_one").await;
    let (id, lease) = create(&store, "r1").await;
    let before = record(&store, &id).await;
    // The next milliseconds: a lease extended now would show it.
    tokio::time::sleep(Duration::from_millis(20)).await;

    // The log ends at 0: an append from 3 leaves a gap.
    let refused = store
        .append(&id, &lease, finishing(3), ExecutionStatus::Completed)
        .await;
    assert_gap(refused, &id);
    let refused = store
        .append(&id, &lease, vec![started(3)], ExecutionStatus::Running)
        .await;
    assert_gap(refused, &id);
    assert!(store.events(&id).await.unwrap().is_empty());
    still_held(&store, &id, &lease, &before).await;
}

#[tokio::test]
async fn refused_appends_sent_together_leave_their_leases_as_they_were() {
    let store = store("refused_many").await;
    let (done, done_lease) = create(&store, "m-done").await;
    let (finishing_gap, finishing_lease) = create(&store, "m-finish").await;
    let (running_gap, running_lease) = create(&store, "m-run").await;
    let finishing_before = record(&store, &finishing_gap).await;
    let running_before = record(&store, &running_gap).await;
    tokio::time::sleep(Duration::from_millis(20)).await;

    // A current-thread runtime: every append reaches the writer's queue
    // before the writer runs, so they make one batch, one statement.
    let (ok, refused_finish, refused_run) = tokio::join!(
        store.append(&done, &done_lease, finishing(1), ExecutionStatus::Completed),
        store.append(
            &finishing_gap,
            &finishing_lease,
            finishing(3),
            ExecutionStatus::Completed
        ),
        store.append(
            &running_gap,
            &running_lease,
            vec![started(3)],
            ExecutionStatus::Running
        ),
    );
    ok.unwrap();
    let done_record = record(&store, &done).await;
    assert_eq!(done_record.status, ExecutionStatus::Completed);
    assert_eq!(
        done_record.owner, None,
        "a finished execution's lease stays"
    );
    assert_gap(refused_finish, &finishing_gap);
    assert_gap(refused_run, &running_gap);
    still_held(&store, &finishing_gap, &finishing_lease, &finishing_before).await;
    still_held(&store, &running_gap, &running_lease, &running_before).await;
}
