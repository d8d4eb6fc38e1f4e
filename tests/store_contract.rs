//! The store contract every [`SagaStore`] keeps, run on each store, fresh:
//! memory, SQLite and, with the `postgres` feature, PostgreSQL (its
//! server from `SAGA_PG_URL` or `scripts/pg.sh`): the log, leases and
//! fencing, cancel requests, unknown ids, creation with first events and
//! purging; claims that skip each other and honour fingerprints; and an
//! engine's `wait` on a submitted execution no one has run yet.

mod support;

use std::time::Duration;

use saga_core::BoxFuture;
use saga_core::store::{
    Ack, ClaimRequest, Created, DefinitionRecord, Event, EventKind, ExecutionRecord, Lease,
    MemoryStore, NewExecution, SagaStore, StoreError, StoreResult,
};
use saga_core::{ExecutionId, ExecutionStatus};
use support::stores::{every_store, new_execution};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_leases_and_fencing_hold_on_every_store() {
    // On PostgreSQL leases expire on the database's clock
    // (`clock_timestamp()`).
    for (name, store) in every_store("fence").await {
        contract(name, &*store).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_on_a_submitted_execution_returns_once_a_worker_runs_it() {
    for (name, store) in every_store("submitted").await {
        support::submitted::contract(name, store).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_skip_each_other_honour_fingerprints_and_signal_new_work() {
    for (name, store) in every_store("claims").await {
        claims(name, &*store).await;
    }
}

/// Ten executions created and released by a submitter are claimed by
/// three concurrent claimers, each once; a claimer of another definition
/// gets none, and live leases none; every store signals the submitter's
/// commits (in this process at least), and a release alone.
async fn claims(name: &str, store: &dyn SagaStore) {
    let mut signal = store
        .work_signal()
        .unwrap_or_else(|| panic!("{name}: no work signal"));
    signal.borrow_and_update();
    for n in 0..10 {
        let ttl = Duration::from_secs(60);
        let lease = created(name, store, &format!("e{n}"), "submitter", ttl).await;
        store
            .release(&ExecutionId::new(format!("e{n}")), &lease)
            .await
            .unwrap();
    }
    // The submitter's commits were notified to this listener.
    tokio::time::timeout(Duration::from_secs(30), signal.changed())
        .await
        .unwrap_or_else(|_| panic!("{name}: no work signal"))
        .unwrap();
    let request = |owner: &str, fingerprint: &str| ClaimRequest {
        fingerprints: vec![fingerprint.to_owned()],
        owner: owner.to_owned(),
        ttl: Duration::from_secs(60),
        limit: 4,
        exclude: vec![ExecutionId::new("e0")],
    };
    assert!(
        store
            .claim_next(request("w", "other"))
            .await
            .unwrap()
            .is_empty(),
        "{name}"
    );
    let (a, b, c) = tokio::join!(
        store.claim_next(request("a", "f")),
        store.claim_next(request("b", "f")),
        store.claim_next(request("c", "f")),
    );
    let claimed: Vec<_> = [a.unwrap(), b.unwrap(), c.unwrap()]
        .into_iter()
        .flatten()
        .collect();
    let mut ids: Vec<String> = claimed.iter().map(|c| c.record.id.to_string()).collect();
    ids.sort();
    assert_eq!(
        ids,
        ["e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8", "e9"],
        "{name}: each claimed once"
    );
    assert!(
        store
            .claim_next(request("d", "f"))
            .await
            .unwrap()
            .is_empty(),
        "{name}: live leases"
    );
    // A release alone signals too (a worker shut down, a run stopped).
    signal.borrow_and_update();
    let first = &claimed[0];
    store.release(&first.record.id, &first.lease).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), signal.changed())
        .await
        .unwrap_or_else(|_| panic!("{name}: no work signal for a release"))
        .unwrap();
    let again = store.claim_next(request("d", "f")).await.unwrap();
    let again: Vec<&str> = again.iter().map(|c| c.record.id.as_str()).collect();
    assert_eq!(
        again,
        [first.record.id.as_str()],
        "{name}: released, claimable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_deletes_only_finished_executions_and_keeps_the_order() {
    for (name, store) in every_store("purge_order").await {
        let mut leases = Vec::new();
        for i in 0..6 {
            let ttl = Duration::from_secs(60);
            leases.push(created(name, &*store, &format!("p{i}"), "a", ttl).await);
        }
        // p0, p2 and p4 finish; p1, p3 and p5 are still running.
        for i in (0..6).step_by(2) {
            store
                .append(
                    &ExecutionId::new(format!("p{i}")),
                    &leases[i],
                    vec![Event::new(1, EventKind::Finished)],
                    ExecutionStatus::Completed,
                )
                .await
                .unwrap();
        }
        assert_eq!(store.purge(i64::MAX).await.unwrap(), 3, "{name}");
        let left: Vec<String> = store
            .list(None)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id.to_string())
            .collect();
        assert_eq!(left, ["p1", "p3", "p5"], "{name}");
        assert_eq!(store.purge(i64::MAX).await.unwrap(), 0, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_take_the_oldest_free_unfinished_executions_first() {
    for (name, store) in every_store("claim_order").await {
        claim_order(name, &*store).await;
    }
    claim_order("default bodies", &Defaults(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_read_alone_and_a_log_read_without_them() {
    for (name, store) in every_store("latest_context").await {
        latest_context(name, &*store).await;
    }
    latest_context("default bodies", &Defaults(MemoryStore::new())).await;
}

/// `latest_context` gives the initial context until an event logs one,
/// then the last logged, whatever events without a context follow it;
/// `None` for an unknown id. `events_without_contexts` gives the log as
/// `events` does, every context `None`.
async fn latest_context(name: &str, store: &dyn SagaStore) {
    let lease = created(name, store, "x", "a", Duration::from_secs(60)).await;
    let id = ExecutionId::new("x");
    let latest = || store.latest_context(&id);
    assert_eq!(latest().await.unwrap().as_deref(), Some("{}"), "{name}");
    let mut events = Vec::new();
    for (seq, context) in [
        (1, None),
        (2, Some("{\"k\":1}")),
        (3, Some("{\"k\":2}")),
        (4, None),
    ] {
        let mut event = Event::new(seq, EventKind::StepStarted);
        event.step = Some(0);
        event.attempt = 1;
        event.context = context.map(str::to_owned);
        events.push(event);
    }
    let later = events.split_off(2);
    let append = |events| store.append(&id, &lease, events, ExecutionStatus::Running);
    append(events).await.unwrap();
    assert_eq!(
        latest().await.unwrap().as_deref(),
        Some("{\"k\":1}"),
        "{name}"
    );
    append(later).await.unwrap();
    assert_eq!(
        latest().await.unwrap().as_deref(),
        Some("{\"k\":2}"),
        "{name}"
    );
    let unknown = ExecutionId::new("nope");
    assert_eq!(
        store.latest_context(&unknown).await.unwrap(),
        None,
        "{name}"
    );
    // The log without its contexts: every other field as `events` gives it.
    let mut expected = store.events(&id).await.unwrap();
    assert_eq!(expected.len(), 4, "{name}");
    for event in &mut expected {
        event.context = None;
    }
    let without = store.events_without_contexts(&id).await.unwrap();
    assert_eq!(without, expected, "{name}");
    let none = store.events_without_contexts(&unknown).await.unwrap();
    assert!(none.is_empty(), "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_requests_list_the_stuck_executions_asked_to_resume() {
    for (name, store) in every_store("resume_requests").await {
        resume_requests(name, &*store).await;
    }
    resume_requests("default bodies", &Defaults(MemoryStore::new())).await;
}

/// Three stuck executions: one asked to resume, one asked and resumed
/// since, one never asked; and a running one. Only the first is listed.
async fn resume_requests(name: &str, store: &dyn SagaStore) {
    let ttl = Duration::from_secs(60);
    let mut leases = Vec::new();
    for n in 0..4 {
        leases.push(created(name, store, &format!("r{n}"), "owner", ttl).await);
    }
    let id = |n: usize| ExecutionId::new(format!("r{n}"));
    for (n, lease) in leases.iter().enumerate().take(3) {
        store
            .append(
                &id(n),
                lease,
                vec![Event::new(1, EventKind::Finished)],
                ExecutionStatus::Stuck,
            )
            .await
            .unwrap();
    }
    // An operator's requests, each under a lease of its own.
    for n in 0..2 {
        let lease = store.claim(&id(n), "cli", ttl).await.unwrap().unwrap();
        store
            .append(
                &id(n),
                &lease,
                vec![Event::new(2, EventKind::ResumeRequested)],
                ExecutionStatus::Stuck,
            )
            .await
            .unwrap();
        store.release(&id(n), &lease).await.unwrap();
    }
    let lease = store.claim(&id(1), "worker", ttl).await.unwrap().unwrap();
    store
        .append(
            &id(1),
            &lease,
            vec![Event::new(3, EventKind::Resumed)],
            ExecutionStatus::Running,
        )
        .await
        .unwrap();
    let listed: Vec<String> = store
        .resume_requests()
        .await
        .unwrap()
        .into_iter()
        .map(|s| format!("{} {} {}", s.id, s.status, s.last_seq))
        .collect();
    assert_eq!(listed, ["r0 stuck 2"], "{name}");
}

/// A store that keeps only the required methods (those of a
/// `MemoryStore`), so every default body of `SagaStore` runs.
struct Defaults(MemoryStore);

impl SagaStore for Defaults {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn put_definition(&self, d: DefinitionRecord) -> BoxFuture<'_, StoreResult<()>> {
        self.0.put_definition(d)
    }
    fn definition(&self, f: &str) -> BoxFuture<'_, StoreResult<Option<DefinitionRecord>>> {
        self.0.definition(f)
    }
    fn create(
        &self,
        e: NewExecution,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Created>> {
        self.0.create(e, owner, ttl)
    }
    fn claim(
        &self,
        id: &ExecutionId,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Option<Lease>>> {
        self.0.claim(id, owner, ttl)
    }
    fn append<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
        events: Vec<Event>,
        status: ExecutionStatus,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        self.0.append(id, lease, events, status)
    }
    fn renew<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        self.0.renew(id, lease)
    }
    fn release<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.0.release(id, lease)
    }
    fn get<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> BoxFuture<'a, StoreResult<Option<ExecutionRecord>>> {
        self.0.get(id)
    }
    fn events<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<Vec<Event>>> {
        self.0.events(id)
    }
    fn list(&self, s: Option<ExecutionStatus>) -> BoxFuture<'_, StoreResult<Vec<ExecutionRecord>>> {
        self.0.list(s)
    }
    fn request_cancel<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<bool>> {
        self.0.request_cancel(id)
    }
    fn purge(&self, before_ms: i64) -> BoxFuture<'_, StoreResult<u64>> {
        self.0.purge(before_ms)
    }
}

/// Claims go oldest first, up to the limit, and take running and
/// compensating executions whose lease is free or expired, never a
/// finished or stuck one.
async fn claim_order(name: &str, store: &dyn SagaStore) {
    let id = |n: u32| ExecutionId::new(format!("o{n}"));
    let mut leases = Vec::new();
    for n in 0..6 {
        let ttl = Duration::from_millis(30);
        leases.push(created(name, store, &format!("o{n}"), "maker", ttl).await);
        // Distinct creation times, so the order is the creation order.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let end = |seq: u64, kind: EventKind| vec![Event::new(seq, kind)];
    // o1 finished, o2 stuck, o3 compensating; o0, o4, o5 running.
    store
        .append(
            &id(1),
            &leases[1],
            end(1, EventKind::Finished),
            ExecutionStatus::Completed,
        )
        .await
        .unwrap();
    store
        .append(
            &id(2),
            &leases[2],
            end(1, EventKind::Finished),
            ExecutionStatus::Stuck,
        )
        .await
        .unwrap();
    store
        .append(
            &id(3),
            &leases[3],
            end(1, EventKind::RollbackStarted),
            ExecutionStatus::Compensating,
        )
        .await
        .unwrap();
    for n in [0, 3, 4, 5] {
        store.release(&id(n), &leases[n as usize]).await.unwrap();
    }
    let request = |limit: usize| ClaimRequest {
        fingerprints: vec!["f".to_owned()],
        owner: "w".to_owned(),
        ttl: Duration::from_millis(30),
        limit,
        exclude: Vec::new(),
    };
    let ids = |claimed: Vec<saga_core::store::Claimed>| {
        claimed
            .into_iter()
            .map(|c| c.record.id.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store.claim_next(request(2)).await.unwrap()),
        ["o0", "o3"],
        "{name}"
    );
    assert_eq!(
        ids(store.claim_next(request(5)).await.unwrap()),
        ["o4", "o5"],
        "{name}"
    );
    // Once those leases expired (30 ms), all four are claimable again;
    // the record comes with the claim.
    let mut again = Vec::new();
    while again.len() < 4 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        again = store.claim_next(request(10)).await.unwrap();
        assert!(
            again.is_empty() || again.len() == 4,
            "{name}: {}",
            again.len()
        );
    }
    let statuses: Vec<_> = again.iter().map(|c| c.record.status).collect();
    assert_eq!(
        statuses,
        [
            ExecutionStatus::Running,
            ExecutionStatus::Compensating,
            ExecutionStatus::Running,
            ExecutionStatus::Running
        ],
        "{name}"
    );
    assert!(
        again
            .iter()
            .all(|c| c.record.context == "{}" && c.record.owner.as_deref() == Some("w")),
        "{name}"
    );
}

/// Creates execution `id` (of [`new_execution`]) for `owner` with a
/// lease of `ttl`, and returns the lease; `name` labels the failure of a
/// store that reports it existing.
async fn created(name: &str, store: &dyn SagaStore, id: &str, owner: &str, ttl: Duration) -> Lease {
    match store.create(new_execution(id), owner, ttl).await.unwrap() {
        Created::New(lease) => lease,
        Created::Existing(_) => panic!("{name}: {id} not created"),
    }
}

/// The whole contract on `store`, which must be empty; `name` labels
/// failures.
async fn contract(name: &str, store: &dyn SagaStore) {
    let old = created(name, store, "x", "a", Duration::ZERO).await;
    let id = ExecutionId::new("x");
    // A retried create writes nothing and reports the execution.
    let Created::Existing(existing) = store
        .create(new_execution("x"), "c", Duration::ZERO)
        .await
        .unwrap()
    else {
        panic!("{name}: created twice")
    };
    assert_eq!(existing.owner.as_deref(), Some("a"), "{name}");
    // `a`'s lease expired at once (on the store's clock): `b` takes over.
    let taken = store
        .claim(&id, "b", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert!(taken.token > old.token, "{name}");
    let err = store
        .append(
            &id,
            &old,
            vec![Event::new(1, EventKind::StepStarted)],
            ExecutionStatus::Running,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{name}: {err}");
    assert_eq!(
        err.to_string(),
        "the lease on execution `x` was lost to another owner; this owner stopped writing its log",
        "{name}"
    );
    assert!(store.events(&id).await.unwrap().is_empty(), "{name}");
    assert!(
        matches!(
            store.renew(&id, &old).await.unwrap_err(),
            StoreError::LeaseLost { .. }
        ),
        "{name}"
    );
    // `b` holds a live lease: `a` cannot claim it back.
    assert!(
        store
            .claim(&id, "a", Duration::from_secs(60))
            .await
            .unwrap()
            .is_none(),
        "{name}"
    );
    let mut started = Event::new(1, EventKind::StepStarted);
    started.step = Some(0);
    started.attempt = 1;
    let mut done = Event::new(2, EventKind::StepSucceeded);
    done.step = Some(0);
    done.attempt = 1;
    done.output = Some("7".into());
    done.context = Some("{\"k\":1}".into());
    store
        .append(&id, &taken, vec![started, done], ExecutionStatus::Running)
        .await
        .unwrap();
    let events = store.events(&id).await.unwrap();
    assert_eq!(events.len(), 2, "{name}");
    assert_eq!(events[1].output.as_deref(), Some("7"), "{name}");
    assert_eq!(events[1].context.as_deref(), Some("{\"k\":1}"), "{name}");
    assert_eq!(store.get(&id).await.unwrap().unwrap().last_seq, 2, "{name}");
    // A gap in the sequence is refused, and writes nothing.
    let err = store
        .append(
            &id,
            &taken,
            vec![Event::new(4, EventKind::StepStarted)],
            ExecutionStatus::Running,
        )
        .await
        .unwrap_err();
    // Each store words what it expected its own way (PostgreSQL and
    // SQLite: the log's end, 3; memory: the next sequence number, 3).
    let text = err.to_string();
    assert!(matches!(err, StoreError::BadRecord { .. }), "{name}: {err}");
    assert!(
        text.starts_with("event 4 of execution `x`")
            && (text.contains("expected 3") || text.contains("expected sequence number 3")),
        "{name}: {err}"
    );
    assert_eq!(store.events(&id).await.unwrap().len(), 2, "{name}");
    // A cancel request reaches the owner at its next write.
    assert!(store.request_cancel(&id).await.unwrap(), "{name}");
    assert!(
        store.renew(&id, &taken).await.unwrap().cancel_requested,
        "{name}"
    );
    assert!(
        !store
            .request_cancel(&ExecutionId::new("nope"))
            .await
            .unwrap(),
        "{name}"
    );
    assert!(
        matches!(
            store
                .claim(&ExecutionId::new("nope"), "a", Duration::ZERO)
                .await
                .unwrap_err(),
            StoreError::NotFound { .. }
        ),
        "{name}"
    );
    // Finished and old enough: purged.
    store
        .append(
            &id,
            &taken,
            vec![Event::new(3, EventKind::Finished)],
            ExecutionStatus::Completed,
        )
        .await
        .unwrap();
    // The finishing write released the lease in the same commit.
    let record = store.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (record.owner, record.lease_expires_at_ms),
        (None, None),
        "{name}"
    );
    store.release(&id, &taken).await.unwrap();
    // A creation commits its first events with it.
    let mut first = Event::new(1, EventKind::StepStarted);
    first.step = Some(0);
    first.attempt = 1;
    let mut with_events = new_execution("z");
    with_events.events = vec![first];
    let Created::New(z) = store
        .create(with_events, "a", Duration::from_secs(60))
        .await
        .unwrap()
    else {
        panic!("{name}: not created")
    };
    let zid = ExecutionId::new("z");
    assert_eq!(store.events(&zid).await.unwrap().len(), 1, "{name}");
    assert_eq!(
        store.get(&zid).await.unwrap().unwrap().last_seq,
        1,
        "{name}"
    );
    store
        .append(
            &zid,
            &z,
            vec![Event::new(2, EventKind::Finished)],
            ExecutionStatus::Completed,
        )
        .await
        .unwrap();
    assert_eq!(store.purge(i64::MAX).await.unwrap(), 2, "{name}");
    assert!(store.get(&id).await.unwrap().is_none(), "{name}");
}
