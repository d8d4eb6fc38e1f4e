//! The PostgreSQL store's fence holds against a claim that commits while
//! an append waits for it: the append's lease check locks the lease row,
//! so it waits for the claim, sees the new token and is refused as lease
//! lost; nothing of the stale owner is written. Without that lock the
//! check would read the old token from the statement's snapshot and the
//! stale owner's events would commit after the other owner's claim.
//!
//! Deterministic: a second connection claims (as the store's claim does:
//! owner and token changed) inside a transaction it keeps open, the
//! append is sent, the test waits until the server shows the append
//! blocked by that transaction, then commits it. For an append alone and
//! for appends to distinct executions sent together (one statement).
#![cfg(feature = "postgres")]

mod support;

use std::time::{Duration, Instant};

use saga_core::ExecutionId;
use saga_core::store::{
    Ack, Event, EventKind, Lease, PostgresOptions, PostgresStore, SagaStore, StoreError,
};
use saga_core::{ExecutionStatus, store::ExecutionRecord};
use support::pg::{client, fresh_schema, pg_url};
use support::stores::created;
use tokio_postgres::Client;

async fn store(schema: &str) -> PostgresStore {
    PostgresStore::connect_with(&pg_url(), PostgresOptions::new().with_schema(schema))
        .await
        .unwrap()
}

/// Events that finish an execution: what a stale owner sends when it
/// believes the run is done.
fn finishing() -> Vec<Event> {
    let mut started = Event::new(1, EventKind::StepStarted);
    started.step = Some(0);
    started.attempt = 1;
    vec![started, Event::new(2, EventKind::Finished)]
}

async fn record(store: &PostgresStore, id: &ExecutionId) -> ExecutionRecord {
    store.get(id).await.unwrap().unwrap()
}

/// A connection of its own that has claimed `id` for owner `b` (the
/// token bumped, as the store's claim does) in a transaction still open:
/// the lease row stays locked until [`commit`](Self::commit).
struct Claim {
    client: Client,
    pid: i32,
}

impl Claim {
    async fn open(schema: &str, id: &ExecutionId) -> Claim {
        let client = client(&pg_url()).await;
        let pid = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        client.batch_execute("BEGIN").await.unwrap();
        let claimed = client
            .execute(
                &format!(
                    "UPDATE {schema}.leases SET owner = 'b', token = token + 1,
                        expires_at = expires_at + 1000
                     WHERE execution_id = $1"
                ),
                &[&id.as_str()],
            )
            .await
            .unwrap();
        assert_eq!(claimed, 1, "{id}: no lease to claim");
        Claim { client, pid }
    }

    /// Waits (at most 10 s) until a statement waits for this claim's
    /// lock, as the server shows it, then commits the claim; the text of
    /// the statement that waited.
    async fn commit_once_waited_for(self, watcher: &Client) -> String {
        let end = Instant::now() + Duration::from_secs(10);
        let waiting = loop {
            let waiting = watcher
                .query_opt(
                    "SELECT query FROM pg_stat_activity
                     WHERE wait_event_type = 'Lock' AND $1 = ANY(pg_blocking_pids(pid))
                     LIMIT 1",
                    &[&self.pid],
                )
                .await
                .unwrap();
            if let Some(row) = waiting {
                break row.get(0);
            }
            assert!(
                Instant::now() < end,
                "no statement waited for the claim's lock within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        self.client.batch_execute("COMMIT").await.unwrap();
        waiting
    }
}

/// The stale owner's append was refused as lease lost and left nothing:
/// no event, the log where it was, the claim's lease in place.
async fn refused_and_nothing_written(
    store: &PostgresStore,
    id: &ExecutionId,
    lease: &Lease,
    result: Result<Ack, StoreError>,
) {
    let error = result.expect_err("a stale owner's append was acknowledged");
    assert!(
        matches!(error, StoreError::LeaseLost { .. }),
        "{id}: {error:?}"
    );
    assert!(
        store.events(id).await.unwrap().is_empty(),
        "{id}: a stale owner's events were written after another owner's claim"
    );
    let after = record(store, id).await;
    assert_eq!(after.last_seq, 0, "{id}: the log moved on");
    assert_eq!(after.status, ExecutionStatus::Running, "{id}");
    assert_eq!(after.owner.as_deref(), Some("b"), "{id}: the claim undone");
    // The claim's token stands: the stale lease cannot renew.
    assert!(store.renew(id, lease).await.is_err(), "{id}: renewed");
}

#[tokio::test]
async fn an_append_waiting_for_a_claim_is_refused_once_it_commits() {
    let schema = fresh_schema("fence_one");
    let store = store(&schema).await;
    let watcher = client(&pg_url()).await;
    let (id, lease) = created(&store, "f1").await;

    let claim = Claim::open(&schema, &id).await;
    let (result, waited) = tokio::join!(
        store.append(&id, &lease, finishing(), ExecutionStatus::Completed),
        claim.commit_once_waited_for(&watcher),
    );
    assert!(waited.contains("WITH held AS"), "{waited}");
    refused_and_nothing_written(&store, &id, &lease, result).await;
}

#[tokio::test]
async fn batched_appends_waiting_for_a_claim_fence_each_on_its_own() {
    let schema = fresh_schema("fence_many");
    let store = store(&schema).await;
    let watcher = client(&pg_url()).await;
    let (id, lease) = created(&store, "f-stale").await;
    let (other, other_lease) = created(&store, "f-other").await;

    let claim = Claim::open(&schema, &id).await;
    // A current-thread runtime: both appends reach the writer's queue
    // before the writer runs, so they make one batch, one statement.
    let (stale, current, waited) = tokio::join!(
        store.append(&id, &lease, finishing(), ExecutionStatus::Completed),
        store.append(
            &other,
            &other_lease,
            finishing(),
            ExecutionStatus::Completed
        ),
        claim.commit_once_waited_for(&watcher),
    );
    // The batch's statement (`append_many_sql`) waited.
    assert!(waited.contains("WITH input AS"), "{waited}");
    refused_and_nothing_written(&store, &id, &lease, stale).await;
    current.unwrap_or_else(|e| panic!("the other append was refused: {e}"));
    let done = record(&store, &other).await;
    assert_eq!(done.status, ExecutionStatus::Completed);
    assert_eq!(store.events(&other).await.unwrap().len(), 2);
}
