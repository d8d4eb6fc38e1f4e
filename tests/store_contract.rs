//! The store contract every [`SagaStore`] keeps
//! ([`saga_core::testkit::contract`], what users run on their own
//! stores), run on each store of this crate, fresh per check: memory,
//! SQLite and, with the `postgres` feature, PostgreSQL (its server from
//! `SAGA_PG_URL` or `scripts/pg.sh`); on a store that keeps only the
//! required methods (every default body of the trait); on a slow store;
//! and on stores with planted faults, each of which the contract must
//! catch by name. Then what only this crate's stores promise (a work
//! signal), and an engine's `wait` on a submitted execution no one has
//! run yet.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use saga_core::BoxFuture;
use saga_core::store::{
    Ack, ClaimRequest, ClaimedWithLog, Created, DefinitionRecord, Event, ExecutionRecord, Lease,
    MemoryStore, NewExecution, SagaStore, SqliteStore, StoreError, StoreResult,
};
use saga_core::testkit::DelayedStore;
use saga_core::testkit::contract;
use saga_core::{ExecutionId, ExecutionStatus};
use support::stores::every_store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_keeps_the_contract() {
    contract::check(|| async { MemoryStore::new() })
        .await
        .assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_store_keeps_the_contract() {
    contract::check(|| async {
        let dir = support::durable::scratch_dir("contract");
        SqliteStore::open(dir.join("sagas.db")).unwrap()
    })
    .await
    .assert_passed();
}

/// On PostgreSQL leases expire on the database's clock
/// (`clock_timestamp()`).
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_keeps_the_contract() {
    use saga_core::store::{PostgresOptions, PostgresStore};
    let url = support::pg::pg_url();
    contract::check(|| async {
        let schema = support::pg::fresh_schema("contract");
        PostgresStore::connect_with(&url, PostgresOptions::new().with_schema(schema))
            .await
            .unwrap()
    })
    .await
    .assert_passed();
}

/// Every default body of `SagaStore` (`claim_next`, `list_summaries`,
/// `latest_context`, `resume_requests`...) keeps the contract.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_bodies_keep_the_contract() {
    contract::check(|| async { Faulty::new(None) })
        .await
        .assert_passed();
}

/// A store that answers each call 50 ms late passes: no check needs a
/// lease to outlive calls by less than a minute, and none needs one to
/// expire before the check waited past it. (The contract of 0.1's tests
/// claimed with 30 ms leases it needed alive over two calls: 3 runs in 20
/// failed on a correct store that fsyncs each write.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_store_keeps_the_contract() {
    let report = contract::check(|| async {
        DelayedStore::new(MemoryStore::new(), Duration::from_millis(50))
    })
    .await;
    report.assert_passed();
}

/// Each planted fault fails the check that covers it, and the report
/// names that check, says what the trait requires and what the store did.
/// None of the first five failed the contract of 0.1's tests (an outside
/// store's fault matrix: `release` ignoring the token, `purge` deleting
/// stuck executions, `detail` dropped, `at_ms` not stamped; a live lease
/// claimed was caught there only by two of its tests' side effects).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_catches_planted_faults() {
    for (fault, check, says) in [
        (
            Fault::DropDetail,
            "events_come_back_as_written",
            "with `detail` None, written Some(",
        ),
        (
            Fault::NoAtMs,
            "the_store_stamps_each_event_time",
            "came back with `at_ms` [0, 0, 0]",
        ),
        (
            Fault::PurgeStuck,
            "purge_deletes_only_old_finished_executions_never_stuck_ones",
            "[\"p1 running\", \"p5 compensating\"]",
        ),
        (
            Fault::ReleaseAny,
            "release_frees_only_the_holders_lease",
            "freed `b`'s",
        ),
        (
            Fault::ClaimLiveLease,
            "a_live_lease_is_never_claimed",
            "while `a` holds a lease",
        ),
        (
            Fault::ShortClaimLog,
            "a_claim_with_its_log_gives_the_whole_log",
            "has the events [1, 2], not [1, 2, 3]",
        ),
    ] {
        let report = contract::check(|| async move { Faulty::new(Some(fault)) }).await;
        let failed = report
            .get(check)
            .unwrap_or_else(|| panic!("{fault:?}: no check {check}"));
        let problem = failed
            .problem
            .as_deref()
            .unwrap_or_else(|| panic!("{fault:?}: {check} passed:\n{report}"));
        assert!(problem.contains(says), "{fault:?}: {problem}");
        assert!(!failed.requirement.is_empty());
        let text = report.to_string();
        assert!(
            text.contains(&format!(
                "FAILED {check}\n  required: {}",
                failed.requirement
            )),
            "{fault:?}: {text}"
        );
        assert!(!report.passed(), "{fault:?}");
        println!("{fault:?}:\n{report}");
    }
}

/// A check that panics, or hangs, fails by name; the others still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_store_fails_the_checks_that_reach_the_panic() {
    let report = contract::check(|| async { Faulty::new(Some(Fault::PanicOnPurge)) }).await;
    let failed: Vec<&str> = report.failures().map(|c| c.name).collect();
    assert_eq!(
        failed,
        ["purge_deletes_only_old_finished_executions_never_stuck_ones"],
        "{report}"
    );
    let problem = report.failures().next().unwrap().problem.clone().unwrap();
    assert!(problem.contains("panicked: purge is broken"), "{problem}");
    assert_eq!(report.checks.len(), contract::check_names().len());
}

/// This crate's stores signal new work (in this process at least): the
/// contract's check of the signal passes a store that gives none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crates_stores_signal_new_work() {
    for (name, store) in every_store("signal").await {
        assert!(store.work_signal().is_some(), "{name}: no work signal");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_on_a_submitted_execution_returns_once_a_worker_runs_it() {
    for (name, store) in every_store("submitted").await {
        support::submitted::contract(name, store).await;
    }
}

/// The default `claim_next` (a store of only the required methods): an
/// error after it claimed some executions keeps those and gives back the
/// one whose read failed. Before, it returned the error and the leases it
/// had taken went with it: those executions waited a whole ttl (10.5 s in
/// a custom store's workload) for anyone to run them.
#[tokio::test]
async fn the_default_claim_next_keeps_its_claims_on_an_error() {
    let store = Faulty::new(Some(Fault::ThirdGetFails));
    for n in 0..4 {
        let id = ExecutionId::new(format!("order-{n}"));
        let new = NewExecution {
            id: id.clone(),
            saga: "order".into(),
            fingerprint: "f1".into(),
            context: "{}".into(),
            events: Vec::new(),
        };
        let Created::New(lease) = store.create(new, "creator", LIVE).await.unwrap() else {
            panic!("order-{n} exists")
        };
        store.release(&id, &lease).await.unwrap();
        // Distinct creation times, so that the claims' order is known.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let request = ClaimRequest {
        fingerprints: vec!["f1".to_owned()],
        owner: "worker".to_owned(),
        ttl: LIVE,
        limit: 4,
        exclude: Vec::new(),
    };
    let names = |claimed: Vec<saga_core::store::Claimed>| -> Vec<String> {
        claimed
            .into_iter()
            .map(|c| c.record.id.to_string())
            .collect()
    };
    let claimed = store.claim_next(request.clone()).await.unwrap();
    assert_eq!(names(claimed), ["order-0", "order-1"]);
    // The third was given back: the next claim takes it.
    let again = store.claim_next(request).await.unwrap();
    assert_eq!(names(again), ["order-2", "order-3"]);
}

/// A lease a check wants alive.
const LIVE: Duration = Duration::from_secs(60);

/// A fault planted in [`Faulty`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Events lose `detail` (a store mirroring 0.1's fields).
    DropDetail,
    /// Events keep the `at_ms` the caller passed (0).
    NoAtMs,
    /// `purge` deletes stuck executions too.
    PurgeStuck,
    /// `release` frees the lease whatever the token.
    ReleaseAny,
    /// `claim` takes a live lease.
    ClaimLiveLease,
    /// `purge` panics.
    PanicOnPurge,
    /// `claim_next_with_log` gives each log without its last event.
    ShortClaimLog,
    /// The third `get` fails with an outage.
    ThirdGetFails,
}

/// A `MemoryStore` behind only the required methods (so every default
/// body of `SagaStore` runs), with one planted fault, or none.
struct Faulty {
    inner: MemoryStore,
    fault: Option<Fault>,
    /// The lease each execution was last given.
    leases: Mutex<HashMap<ExecutionId, Lease>>,
    /// Executions `purge` deleted, as far as the wrapper shows.
    purged: Mutex<HashSet<ExecutionId>>,
    /// `get` calls so far.
    gets: AtomicUsize,
}

impl Faulty {
    fn new(fault: Option<Fault>) -> Self {
        Faulty {
            inner: MemoryStore::new(),
            fault,
            leases: Mutex::default(),
            purged: Mutex::default(),
            gets: AtomicUsize::new(0),
        }
    }

    fn has(&self, fault: Fault) -> bool {
        self.fault == Some(fault)
    }

    fn given(&self, id: &ExecutionId, lease: &Lease) {
        self.leases
            .lock()
            .unwrap()
            .insert(id.clone(), lease.clone());
    }

    fn shown(&self, id: &ExecutionId) -> bool {
        !self.purged.lock().unwrap().contains(id)
    }

    fn planted(&self, mut events: Vec<Event>) -> Vec<Event> {
        for event in &mut events {
            if self.has(Fault::DropDetail) {
                event.detail = None;
            }
            if self.has(Fault::NoAtMs) {
                event.at_ms = 0;
            }
        }
        events
    }
}

impl SagaStore for Faulty {
    fn claim_next_with_log(
        &self,
        request: ClaimRequest,
    ) -> BoxFuture<'_, StoreResult<Vec<ClaimedWithLog>>> {
        Box::pin(async move {
            let mut claimed = Vec::new();
            for claim in self.claim_next(request).await? {
                let log = if self.has(Fault::ShortClaimLog) {
                    let mut log = self.events(&claim.record.id).await?;
                    log.pop();
                    Some(log)
                } else {
                    None
                };
                claimed.push(ClaimedWithLog::new(claim, log));
            }
            Ok(claimed)
        })
    }
    fn describe(&self) -> String {
        format!("{:?} {}", self.fault, self.inner.describe())
    }
    fn put_definition(&self, d: DefinitionRecord) -> BoxFuture<'_, StoreResult<()>> {
        self.inner.put_definition(d)
    }
    fn definition(&self, f: &str) -> BoxFuture<'_, StoreResult<Option<DefinitionRecord>>> {
        self.inner.definition(f)
    }
    fn create(
        &self,
        e: NewExecution,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Created>> {
        let id = e.id.clone();
        let owner = owner.to_owned();
        Box::pin(async move {
            let created = self.inner.create(e, &owner, ttl).await?;
            if let Created::New(lease) = &created {
                self.given(&id, lease);
            }
            Ok(created)
        })
    }
    fn claim(
        &self,
        id: &ExecutionId,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Option<Lease>>> {
        let (id, owner) = (id.clone(), owner.to_owned());
        Box::pin(async move {
            let mut claimed = self.inner.claim(&id, &owner, ttl).await?;
            if claimed.is_none() && self.has(Fault::ClaimLiveLease) {
                let held = self.leases.lock().unwrap().get(&id).cloned();
                if let Some(held) = held {
                    self.inner.release(&id, &held).await?;
                }
                claimed = self.inner.claim(&id, &owner, ttl).await?;
            }
            if let Some(lease) = &claimed {
                self.given(&id, lease);
            }
            Ok(claimed)
        })
    }
    fn append<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
        events: Vec<Event>,
        status: ExecutionStatus,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        self.inner.append(id, lease, events, status)
    }
    fn renew<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        self.inner.renew(id, lease)
    }
    fn release<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<()>> {
        if self.has(Fault::ReleaseAny) {
            let held = self.leases.lock().unwrap().get(id).cloned();
            if let Some(held) = held {
                return Box::pin(async move { self.inner.release(id, &held).await });
            }
        }
        self.inner.release(id, lease)
    }
    fn get<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> BoxFuture<'a, StoreResult<Option<ExecutionRecord>>> {
        Box::pin(async move {
            let n = self.gets.fetch_add(1, Ordering::SeqCst) + 1;
            if self.has(Fault::ThirdGetFails) && n == 3 {
                return Err(StoreError::Unavailable {
                    store: "a faulty store".to_owned(),
                    what: "get".to_owned(),
                    source: "connection reset".into(),
                });
            }
            Ok(self.inner.get(id).await?.filter(|r| self.shown(&r.id)))
        })
    }
    fn events<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<Vec<Event>>> {
        Box::pin(async move {
            if !self.shown(id) {
                return Ok(Vec::new());
            }
            Ok(self.planted(self.inner.events(id).await?))
        })
    }
    fn list(&self, s: Option<ExecutionStatus>) -> BoxFuture<'_, StoreResult<Vec<ExecutionRecord>>> {
        Box::pin(async move {
            let mut records = self.inner.list(s).await?;
            records.retain(|r| self.shown(&r.id));
            Ok(records)
        })
    }
    fn request_cancel<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<bool>> {
        self.inner.request_cancel(id)
    }
    fn purge(&self, before_ms: i64) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(async move {
            assert!(!self.has(Fault::PanicOnPurge), "purge is broken");
            let mut purged = self.inner.purge(before_ms).await?;
            if self.has(Fault::PurgeStuck) {
                for record in self.list(Some(ExecutionStatus::Stuck)).await? {
                    if record.updated_at_ms <= before_ms {
                        self.purged.lock().unwrap().insert(record.id);
                        purged += 1;
                    }
                }
            }
            Ok(purged)
        })
    }
}
