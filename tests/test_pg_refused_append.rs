//! An append the PostgreSQL store refuses leaves the lease as it was: a
//! finishing append refused on its sequence (a gap, a stale writer's log)
//! does not release the lease of the owner still running the execution,
//! and a refused append that does not finish does not extend it. Both for
//! an append alone (one statement of its own) and for appends to distinct
//! executions sent together (one statement for them all).
//!
//! And when the read that explains a refusal fails after the batch
//! committed (the connection drops), only the refused append fails: the
//! appends of its batch that committed are acknowledged (a TCP relay of
//! the test's cuts the connection at that moment).
#![cfg(feature = "postgres")]

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use saga_core::ExecutionId;
use saga_core::store::{
    Event, EventKind, Lease, PostgresOptions, PostgresStore, SagaStore, StoreError,
};
use saga_core::{ExecutionStatus, store::ExecutionRecord};
use support::pg::{fresh_schema, pg_url};
use support::stores::created;

async fn store(test: &str) -> PostgresStore {
    PostgresStore::connect_with(
        &pg_url(),
        PostgresOptions::new().with_schema(fresh_schema(test)),
    )
    .await
    .unwrap()
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
    let (id, lease) = created(&store, "r1").await;
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
    let (done, done_lease) = created(&store, "m-done").await;
    let (finishing_gap, finishing_lease) = created(&store, "m-finish").await;
    let (running_gap, running_lease) = created(&store, "m-run").await;
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

/// A relay from a port of its own to the server's that, once armed, cuts
/// the connection whose client starts the read that explains a refused
/// append (the first preparation of the store's read of one execution):
/// what the client sent before it (the batch's `COMMIT`) reaches the
/// server, the read does not, and the client finds its connection
/// closed, as when the network drops at that moment.
struct Relay {
    port: u16,
    armed: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
}

/// The start of the text of the store's read of one execution.
const EXPLAINING_READ: &[u8] = b"LEFT JOIN leases l ON l.execution_id = e.id WHERE e.id = $1";

impl Relay {
    fn to(server: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let (server, a, c) = (server.to_owned(), Arc::clone(&armed), Arc::clone(&cut));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(upstream) = TcpStream::connect(&server) else {
                    return;
                };
                let (a, c) = (Arc::clone(&a), Arc::clone(&c));
                let (client2, upstream2) =
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                std::thread::spawn(move || forward(client2, upstream2, &a, &c));
                // The server's answers, until it closes; none is passed
                // on once the connection is cut.
                std::thread::spawn(move || {
                    let (mut from, mut to) = (upstream, client);
                    let mut buf = [0_u8; 16 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let _ = to.write_all(&buf[..n]);
                    }
                });
            }
        });
        Relay { port, armed, cut }
    }
}

/// Copies the client's bytes to the server; armed, it stops at the
/// message that prepares [`EXPLAINING_READ`]: the bytes before it go on,
/// the server is told the client is done (a FIN: it still runs what it
/// was sent), and the client's side is closed.
fn forward(mut client: TcpStream, mut upstream: TcpStream, armed: &AtomicBool, cut: &AtomicBool) {
    let mut buf = vec![0_u8; 64 * 1024];
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        let at = chunk
            .windows(EXPLAINING_READ.len())
            .position(|w| w == EXPLAINING_READ);
        let (Some(at), true) = (at, armed.load(Ordering::SeqCst)) else {
            if upstream.write_all(chunk).is_err() {
                return;
            }
            continue;
        };
        // The `Parse` message ('P', its length, the statement's name,
        // the query) that holds the read: the last 'P' before it whose
        // length reaches past it.
        let start = (0..at)
            .rev()
            .find(|&p| {
                chunk[p] == b'P'
                    && p + 5 <= n
                    && p + 1 + u32::from_be_bytes(chunk[p + 1..p + 5].try_into().unwrap()) as usize
                        > at
            })
            .unwrap_or(0);
        let _ = upstream.write_all(&chunk[..start]);
        let _ = upstream.flush();
        let _ = upstream.shutdown(Shutdown::Write);
        cut.store(true, Ordering::SeqCst);
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
}

/// The store through `relay`, and one straight to the server, on one
/// schema.
async fn relayed_stores(test: &str, relay: &Relay) -> (PostgresStore, PostgresStore) {
    let url = pg_url();
    let server = server_of(&url);
    let schema = fresh_schema(test);
    let options = || PostgresOptions::new().with_schema(schema.clone());
    let direct = PostgresStore::connect_with(&url, options()).await.unwrap();
    // In the clear, for the relay to read.
    let relayed_url = url.replace(&server, &format!("127.0.0.1:{}", relay.port));
    let relayed_url = match relayed_url.contains('?') {
        true => format!("{relayed_url}&sslmode=disable"),
        false => format!("{relayed_url}?sslmode=disable"),
    };
    let relayed = PostgresStore::connect_with(&relayed_url, options())
        .await
        .unwrap();
    (relayed, direct)
}

/// `host:port` of a `postgres://user@host:port/db` URL.
fn server_of(url: &str) -> String {
    let rest = url.split_once('@').map_or(url, |(_, rest)| rest);
    rest.split(['/', '?']).next().unwrap().to_owned()
}

/// Two appends to one execution in one batch (one statement each,
/// pipelined with the `COMMIT`): the first commits, the second is
/// refused (a gap), and the connection drops as the store reads why. The
/// first is acknowledged, as its events are durable; only the refused
/// one fails, as an outage.
#[tokio::test]
async fn a_failed_read_of_why_an_append_was_refused_fails_that_append_alone() {
    let relay = Relay::to(&server_of(&pg_url()));
    let (store, direct) = relayed_stores("explain_one", &relay).await;
    let (id, lease) = created(&store, "e1").await;
    relay.armed.store(true, Ordering::SeqCst);
    // A current-thread runtime: both appends reach the writer's queue
    // before the writer runs, so they make one batch.
    let (written, refused) = tokio::join!(
        store.append(&id, &lease, vec![started(1)], ExecutionStatus::Running),
        store.append(&id, &lease, vec![started(5)], ExecutionStatus::Running),
    );
    assert!(
        relay.cut.load(Ordering::SeqCst),
        "the connection was not cut"
    );
    assert_eq!(direct.events(&id).await.unwrap().len(), 1, "not committed");
    assert_eq!(record(&direct, &id).await.last_seq, 1);
    written.unwrap_or_else(|e| panic!("a committed append was told: {e}"));
    let refused = refused.unwrap_err();
    assert!(
        matches!(refused, StoreError::Unavailable { .. }),
        "{refused:?}"
    );
    assert!(
        refused
            .to_string()
            .contains("reading why an append was refused"),
        "{refused}"
    );
}

/// The same with appends to distinct executions, one statement for the
/// batch: the committed append is acknowledged, the refused one fails
/// alone.
#[tokio::test]
async fn a_failed_read_of_why_a_batched_append_was_refused_fails_that_append_alone() {
    let relay = Relay::to(&server_of(&pg_url()));
    let (store, direct) = relayed_stores("explain_many", &relay).await;
    let (id, lease) = created(&store, "e-ok").await;
    let (gap, gap_lease) = created(&store, "e-gap").await;
    relay.armed.store(true, Ordering::SeqCst);
    let (written, refused) = tokio::join!(
        store.append(&id, &lease, finishing(1), ExecutionStatus::Completed),
        store.append(&gap, &gap_lease, vec![started(5)], ExecutionStatus::Running),
    );
    assert!(
        relay.cut.load(Ordering::SeqCst),
        "the connection was not cut"
    );
    let done = record(&direct, &id).await;
    assert_eq!(done.status, ExecutionStatus::Completed, "not committed");
    assert_eq!(direct.events(&id).await.unwrap().len(), 2);
    written.unwrap_or_else(|e| panic!("a committed append was told: {e}"));
    let refused = refused.unwrap_err();
    assert!(
        matches!(refused, StoreError::Unavailable { .. }),
        "{refused:?}"
    );
    assert!(direct.events(&gap).await.unwrap().is_empty());
}
