//! The contract every [`SagaStore`] keeps, as checks you run on your own
//! store: [`check`] makes a fresh store per check with your factory,
//! runs each check on it, and reports each one that failed by name, with
//! what the trait's documentation requires and what your store did.
//!
//! The checks call the store the way the engine and a
//! [`Worker`](crate::Worker) do and look at what it answers and what it
//! kept: the log (every field of every event back as written, in order;
//! no gap or repeat in its sequence; each event's time stamped by the
//! store), leases and fencing (a live lease is never claimed; a claim
//! bumps the token; an owner taken over can neither write, nor renew,
//! nor release the new owner's lease; each append and renewal extends
//! the lease; a finishing append releases it), cancel requests, unknown
//! ids, listings, purging, [`claim_next`](SagaStore::claim_next) and the
//! work signal. They check behaviour, never the wording of an error: an
//! error's variant where the engine acts on it
//! ([`StoreError::LeaseLost`], [`StoreError::NotFound`],
//! [`StoreError::BadRecord`] for a refused sequence), and any variant
//! where any error will do.
//!
//! [`StoreError::LeaseLost`]: crate::store::StoreError::LeaseLost
//! [`StoreError::NotFound`]: crate::store::StoreError::NotFound
//! [`StoreError::BadRecord`]: crate::store::StoreError::BadRecord
//!
//! Slow stores pass: a lease a check needs alive lives a minute, and a
//! lease a check needs expired is taken with a ttl of 50 ms and waited
//! past by 250 ms after the call that took it returned, so no check
//! depends on how fast the store answers. A check that does not end within
//! two minutes fails as hung; one that panics (in the store or in the
//! check) fails with the panic's message, and the others still run.
//!
//! Each check makes executions and definitions with ids of its own
//! (`x`, `o0`..) in a store it expects empty: the factory must make a
//! store with nothing in it (a new directory, a new schema), each call.
//!
//! ```
//! use saga_core::store::MemoryStore;
//! use saga_core::testkit::contract;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // In your tests: #[tokio::test] async fn my_store_keeps_the_contract() { .. }
//! // with your store in place of `MemoryStore`, e.g. one per new directory.
//! let report = contract::check(|| async { MemoryStore::new() }).await;
//! report.assert_passed();
//! assert!(report.checks.iter().any(|c| c.name == "events_come_back_as_written"));
//! # });
//! ```

mod claims;
mod leases;
mod listing;
mod log;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::step::BoxFuture;
use crate::store::{
    Created, Event, EventKind, ExecutionRecord, Lease, NewExecution, SagaStore, StoreResult,
};
use crate::{ExecutionId, ExecutionStatus};

/// How long one check may take before it fails as hung.
const HUNG: Duration = Duration::from_secs(120);

/// A lease that must outlive every call of a check.
const LIVE: Duration = Duration::from_secs(60);

/// A lease that must expire: waited past by [`expire`].
const SHORT: Duration = Duration::from_millis(50);

/// Runs every check of the store contract, each on a fresh store from
/// `make`, one after another, and reports each; see the [module
/// documentation](self). Call it in a tokio runtime (`#[tokio::test]`):
/// each check runs on a task of its own.
///
/// ```
/// # use saga_core::store::MemoryStore;
/// # use saga_core::testkit::contract;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let report = contract::check(|| async { MemoryStore::new() }).await;
/// assert!(report.passed(), "{report}");
/// # });
/// ```
pub async fn check<S, F, Fut>(mut make: F) -> ContractReport
where
    S: SagaStore,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    let mut report = ContractReport {
        store: String::new(),
        checks: Vec::new(),
    };
    for check in checks() {
        let store: Arc<dyn SagaStore> = Arc::new(make().await);
        if report.store.is_empty() {
            report.store = store.describe();
        }
        let started = Instant::now();
        let mut task = tokio::spawn((check.run)(store));
        let problem = match tokio::time::timeout(HUNG, &mut task).await {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(problem))) => Some(problem),
            Ok(Err(join)) => Some(match join.try_into_panic() {
                Ok(panic) => format!("panicked: {}", panic_message(&*panic)),
                Err(join) => format!("its task ended: {join}"),
            }),
            Err(_) => {
                // Its calls stop at their next await.
                task.abort();
                Some(format!(
                    "did not end within {} s: a call of the store hangs",
                    HUNG.as_secs()
                ))
            }
        };
        report.checks.push(CheckReport {
            name: check.name,
            requirement: check.requirement,
            problem,
            took: started.elapsed(),
        });
    }
    report
}

/// The names of every check [`check`] runs, in the order it runs them.
pub fn check_names() -> Vec<&'static str> {
    checks().iter().map(|c| c.name).collect()
}

/// What [`check`] found: every check, in the order run. Its `Display`
/// lists the failed ones, each with what is required and what the store
/// did, then how many passed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ContractReport {
    /// The store, as its [`describe`](SagaStore::describe) names the
    /// first one made.
    pub store: String,
    /// Every check, in the order run.
    pub checks: Vec<CheckReport>,
}

/// One check of the contract.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CheckReport {
    /// Its name, e.g. `append_extends_the_lease`.
    pub name: &'static str,
    /// What the trait's documentation requires, in a sentence.
    pub requirement: &'static str,
    /// What the store did instead; `None` when the check passed.
    pub problem: Option<String>,
    /// How long it took.
    pub took: Duration,
}

impl CheckReport {
    /// Whether the check passed.
    pub fn passed(&self) -> bool {
        self.problem.is_none()
    }
}

impl ContractReport {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(CheckReport::passed)
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &CheckReport> {
        self.checks.iter().filter(|c| !c.passed())
    }

    /// The check named `name`, if one ran.
    pub fn get(&self, name: &str) -> Option<&CheckReport> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// Panics with the report unless every check passed: the line to end
    /// a test with.
    ///
    /// # Panics
    /// When a check failed; the message names each failed check, what
    /// it requires and what the store did.
    #[track_caller]
    pub fn assert_passed(&self) {
        assert!(self.passed(), "{self}");
    }
}

impl fmt::Display for ContractReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed = self.failures().count();
        writeln!(
            f,
            "store contract on {}: {} of {} checks passed",
            self.store,
            self.checks.len() - failed,
            self.checks.len()
        )?;
        for check in self.failures() {
            writeln!(f, "FAILED {}", check.name)?;
            writeln!(f, "  required: {}", check.requirement)?;
            if let Some(problem) = &check.problem {
                writeln!(f, "  the store: {problem}")?;
            }
        }
        Ok(())
    }
}

/// One check: its name, what it requires, and its body, which gives
/// what the store did wrong.
struct Check {
    name: &'static str,
    requirement: &'static str,
    run: fn(Arc<dyn SagaStore>) -> BoxFuture<'static, Outcome>,
}

/// A check's end: `Err` says what the store did.
type Outcome = Result<(), String>;

/// Every check, in the order run.
fn checks() -> Vec<Check> {
    let mut all = log::checks();
    all.extend(leases::checks());
    all.extend(listing::checks());
    all.extend(claims::checks());
    all
}

/// `Err(format!(..))` unless `cond`.
macro_rules! ensure {
    ($cond:expr, $($what:tt)+) => {
        if !$cond {
            return Err(format!($($what)+));
        }
    };
}
use ensure;

/// A store call's answer, or what failed: "`what` failed: error".
trait OrFail<T> {
    fn or_fail(self, what: &str) -> Result<T, String>;
}

impl<T> OrFail<T> for StoreResult<T> {
    fn or_fail(self, what: &str) -> Result<T, String> {
        self.map_err(|error| format!("`{what}` failed: {error} ({error:?})"))
    }
}

/// A panic's message, if it has one.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// A new execution `id` of saga `order`, definition `f`, context `{}`,
/// no events.
fn new_execution(id: &str) -> NewExecution {
    NewExecution {
        id: ExecutionId::new(id),
        saga: "order".into(),
        fingerprint: "f".into(),
        context: "{}".into(),
        events: Vec::new(),
    }
}

/// Creates [`new_execution`] `id` for `owner` with a lease of `ttl`.
async fn create(
    store: &dyn SagaStore,
    id: &str,
    owner: &str,
    ttl: Duration,
) -> Result<Lease, String> {
    let what = format!("create(`{id}`, owner `{owner}`)");
    match store
        .create(new_execution(id), owner, ttl)
        .await
        .or_fail(&what)?
    {
        Created::New(lease) => Ok(lease),
        Created::Existing(record) => Err(format!(
            "{what} in an empty store reported an existing execution: {record:?}"
        )),
    }
}

/// The record of `id`, which must exist.
async fn record(store: &dyn SagaStore, id: &ExecutionId) -> Result<ExecutionRecord, String> {
    store
        .get(id)
        .await
        .or_fail(&format!("get(`{id}`)"))?
        .ok_or_else(|| format!("get(`{id}`) found no execution it had created"))
}

/// Appends `events` to `id` under `lease` with `status`.
async fn append(
    store: &dyn SagaStore,
    id: &ExecutionId,
    lease: &Lease,
    events: Vec<Event>,
    status: ExecutionStatus,
) -> Result<(), String> {
    let what = format!(
        "append(`{id}`, token {}, seq {:?}, {status})",
        lease.token,
        events.iter().map(|e| e.seq).collect::<Vec<_>>()
    );
    store
        .append(id, lease, events, status)
        .await
        .or_fail(&what)
        .map(drop)
}

/// One event of `kind` at `seq`.
fn event(seq: u64, kind: EventKind) -> Event {
    Event::new(seq, kind)
}

/// Waits until a lease of [`SHORT`] taken by a call that returned before
/// this one has expired on any clock that runs at the speed of ours.
async fn expire() {
    tokio::time::sleep(SHORT + Duration::from_millis(250)).await;
}

/// The log of `id`, as [`SagaStore::events`] gives it.
async fn events(store: &dyn SagaStore, id: &ExecutionId) -> Result<Vec<Event>, String> {
    store.events(id).await.or_fail(&format!("events(`{id}`)"))
}

/// The ids of `records`, in order.
fn ids<'a>(records: impl IntoIterator<Item = &'a ExecutionId>) -> Vec<&'a str> {
    records.into_iter().map(ExecutionId::as_str).collect()
}

/// A check whose body is the `async fn` `$body` of this module's child.
macro_rules! entry {
    ($name:ident, $requirement:expr) => {
        $crate::testkit::contract::Check {
            name: stringify!($name),
            requirement: $requirement,
            run: |store| Box::pin($name(store)),
        }
    };
}
use entry;
