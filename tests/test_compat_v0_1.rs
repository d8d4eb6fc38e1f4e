//! Stores written by 0.1 (the build of commit 0a56b04: see the fixtures'
//! README), recovered by this build: every execution ends as 0.1's rules
//! decided (completed, compensated, or stuck), the steps it runs again
//! get the keys `{execution_id}/{step}` byte for byte, the execution whose
//! resume an operator requested is resumed, and the stuck one stays
//! stuck; an open that must not migrate leaves them as they were.
//!
//! The stores are fixtures, `tests/fixtures/v0.1/` (an SQLite file and a
//! PostgreSQL dump; their README says what each execution is and how
//! 0.1 wrote it). Each test recovers a copy: the committed files are
//! never opened for writing.
//!
//! The saga is defined here again with the names and kinds that 0.1.0
//! logged (its fingerprint must be the stored one), in a world where
//! nothing fails any more: a step run again succeeds, so an execution
//! that this build re-decided (retrying a failure 0.1.0 gave up on,
//! resuming a stuck run no one asked to resume) would end otherwise.

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};

use saga_core::store::{EventKind, SagaStore, SqliteStore};
use saga_core::{
    ExecutionId, ExecutionStatus, RetryPolicy, Saga, SagaEngine, SagaReport, Step, StepError,
    StepInfo,
};
use serde::{Deserialize, Serialize};
use support::durable::scratch_dir;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v0.1");

/// The fingerprint 0.1.0 recorded for `compat-order`.
const FINGERPRINT: &str = "700f2929c1c85ac476c941577f419e0800ceb932fb7c64a03d6ca48ee41f23d9";

/// The context as 0.1.0 logged it.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Order {
    sku: String,
    done: Vec<String>,
}

/// One invocation of a step or an undo, as it saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    execution: String,
    /// The step's name, or `undo <step>`.
    what: String,
    key: String,
    attempt: u32,
    /// For an undo: the step's output it was handed, `Debug`-formatted.
    output: Option<String>,
}

type Calls = Arc<Mutex<Vec<Call>>>;

fn record(calls: &Calls, what: String, info: &StepInfo<'_>, output: Option<String>) {
    calls.lock().unwrap().push(Call {
        execution: info.execution_id().to_string(),
        what,
        key: info.idempotency_key(),
        attempt: info.attempt(),
        output,
    });
}

/// A step that records its call, pushes its name and returns `output`;
/// its undo records its call (with the output it got) and pushes `undo
/// <name>`.
fn step<T>(calls: &Calls, name: &'static str, output: fn(&Order) -> T) -> Step<Order, T>
where
    T: Serialize + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let run = Arc::clone(calls);
    Step::new(name, move |order: &mut Order, info: &StepInfo<'_>| {
        record(&run, name.to_owned(), info, None);
        order.done.push(name.to_owned());
        Ok::<_, StepError>(output(order))
    })
    .durable()
}

fn undo<T>(calls: &Calls, step: Step<Order, T>, name: &'static str) -> Step<Order, T>
where
    T: std::fmt::Debug + Send + Sync + 'static,
{
    let calls = Arc::clone(calls);
    step.undo(
        move |order: &mut Order, out: Option<&T>, info: &StepInfo<'_>| {
            let what = format!("undo {name}");
            record(&calls, what.clone(), info, out.map(|o| format!("{o:?}")));
            order.done.push(what);
            Ok::<_, StepError>(())
        },
    )
}

/// `compat-order` as 0.1.0 defined it: names, kinds and outputs; the
/// retry policies too (they are not part of the fingerprint).
fn saga(calls: &Calls) -> Saga<Order> {
    Saga::<Order>::builder("compat-order")
        .step(undo(
            calls,
            step(calls, "reserve", |o: &Order| format!("hold-{}", o.sku)),
            "reserve",
        ))
        .step(
            undo(calls, step(calls, "charge", |_: &Order| 4200_u64), "charge").retry(
                RetryPolicy::attempts(3)
                    .with_backoff(std::time::Duration::from_millis(1))
                    .with_jitter(0.0),
            ),
        )
        .step(undo(
            calls,
            step(calls, "book", |_: &Order| "slot-9".to_owned()),
            "book",
        ))
        .pivot(step(calls, "ship", |o: &Order| format!("parcel-{}", o.sku)))
        .step({
            let calls = Arc::clone(calls);
            Step::new("notify", move |order: &mut Order, info: &StepInfo<'_>| {
                record(&calls, "notify".to_owned(), info, None);
                order.done.push("notify".to_owned());
                Ok::<_, StepError>(())
            })
        })
        .build()
        .unwrap()
}

/// What an execution of the fixture must end as.
struct Expected {
    id: &'static str,
    status: ExecutionStatus,
    /// Each step: `name kind status outcome attempts/undo-attempts
    /// last-error` (`-` for none).
    steps: [&'static str; 5],
    /// The calls recovery makes: what, key, attempt, output handed to an
    /// undo.
    calls: &'static [(&'static str, &'static str, u32, Option<&'static str>)],
    /// The context's `done` when it ended.
    done: &'static [&'static str],
}

const FORWARD: [&str; 5] = [
    "reserve compensable succeeded applied 1/0 -",
    "charge compensable succeeded applied 1/0 -",
    "book compensable succeeded applied 1/0 -",
    "ship pivot succeeded applied 1/0 -",
    "notify retriable succeeded applied 1/0 -",
];

const ALL_DONE: &[&str] = &["reserve", "charge", "book", "ship", "notify"];

const ROLLED_BACK: [&str; 5] = [
    "reserve compensable compensated applied 1/1 -",
    "charge compensable compensated applied 1/1 -",
    "book compensable failed not_applied 1/0 no courier slot",
    "ship pivot pending not_started 0/0 -",
    "notify retriable pending not_started 0/0 -",
];

const UNDONE: &[&str] = &["reserve", "charge", "undo charge", "undo reserve"];

fn expected() -> Vec<Expected> {
    vec![
        Expected {
            id: "submitted",
            status: ExecutionStatus::Completed,
            steps: FORWARD,
            calls: &[
                ("reserve", "submitted/reserve", 1, None),
                ("charge", "submitted/charge", 1, None),
                ("book", "submitted/book", 1, None),
                ("ship", "submitted/ship", 1, None),
                ("notify", "submitted/notify", 1, None),
            ],
            done: ALL_DONE,
        },
        Expected {
            id: "reserve-started",
            status: ExecutionStatus::Completed,
            steps: FORWARD,
            calls: &[
                ("reserve", "reserve-started/reserve", 1, None),
                ("charge", "reserve-started/charge", 1, None),
                ("book", "reserve-started/book", 1, None),
                ("ship", "reserve-started/ship", 1, None),
                ("notify", "reserve-started/notify", 1, None),
            ],
            done: ALL_DONE,
        },
        Expected {
            id: "shop/7/charge-started",
            status: ExecutionStatus::Completed,
            steps: FORWARD,
            calls: &[
                ("charge", "shop/7/charge-started/charge", 1, None),
                ("book", "shop/7/charge-started/book", 1, None),
                ("ship", "shop/7/charge-started/ship", 1, None),
                ("notify", "shop/7/charge-started/notify", 1, None),
            ],
            done: ALL_DONE,
        },
        Expected {
            // The retry 0.1.0 had started runs again as attempt 2.
            id: "charge-retrying",
            status: ExecutionStatus::Completed,
            steps: [
                FORWARD[0],
                "charge compensable succeeded applied 2/0 card network timeout",
                FORWARD[2],
                FORWARD[3],
                FORWARD[4],
            ],
            calls: &[
                ("charge", "charge-retrying/charge", 2, None),
                ("book", "charge-retrying/book", 1, None),
                ("ship", "charge-retrying/ship", 1, None),
                ("notify", "charge-retrying/notify", 1, None),
            ],
            done: ALL_DONE,
        },
        Expected {
            id: "ship-started",
            status: ExecutionStatus::Completed,
            steps: FORWARD,
            calls: &[
                ("ship", "ship-started/ship", 1, None),
                ("notify", "ship-started/notify", 1, None),
            ],
            done: ALL_DONE,
        },
        Expected {
            id: "notify-started",
            status: ExecutionStatus::Completed,
            steps: FORWARD,
            calls: &[("notify", "notify-started/notify", 1, None)],
            done: ALL_DONE,
        },
        Expected {
            // `book` is not run again, though it would succeed now: 0.1.0
            // logged its failure as final and started the rollback.
            id: "rollback-started",
            status: ExecutionStatus::Compensated,
            steps: ROLLED_BACK,
            calls: &[
                ("undo charge", "rollback-started/charge", 1, Some("4200")),
                (
                    "undo reserve",
                    "rollback-started/reserve",
                    1,
                    Some("\"hold-sku-1\""),
                ),
            ],
            done: UNDONE,
        },
        Expected {
            // Left alone, though its undo would succeed now: no one asked.
            id: "stuck",
            status: ExecutionStatus::Stuck,
            steps: [
                "reserve compensable compensation_failed applied 1/3 the warehouse refused the release",
                ROLLED_BACK[1],
                ROLLED_BACK[2],
                ROLLED_BACK[3],
                ROLLED_BACK[4],
            ],
            calls: &[],
            done: &["reserve", "charge", "undo charge"],
        },
        Expected {
            // Resumed as requested: `reserve`'s undo with a fresh budget.
            // The report keeps the error the resume recovered from, and
            // counts the undo's three attempts before the resume with the
            // one after.
            id: "resume-requested",
            status: ExecutionStatus::Compensated,
            steps: [
                "reserve compensable compensated applied 1/4 the warehouse refused the release",
                ROLLED_BACK[1],
                ROLLED_BACK[2],
                ROLLED_BACK[3],
                ROLLED_BACK[4],
            ],
            calls: &[(
                "undo reserve",
                "resume-requested/reserve",
                1,
                Some("\"hold-sku-1\""),
            )],
            done: UNDONE,
        },
    ]
}

fn describe(report: &SagaReport) -> Vec<String> {
    report
        .steps
        .iter()
        .map(|s| {
            format!(
                "{} {} {} {} {}/{} {}",
                s.name,
                s.kind.label(),
                s.status.label(),
                s.outcome.label(),
                s.attempts,
                s.compensation_attempts,
                s.last_error.as_deref().unwrap_or("-")
            )
        })
        .collect()
}

/// The context the log's `finished` event holds.
async fn final_done(engine: &SagaEngine, id: &ExecutionId) -> Vec<String> {
    let view = engine.get(id).await.unwrap().unwrap();
    let finished = view
        .events
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::Finished)
        .unwrap_or_else(|| panic!("`{id}` has no `finished` event"));
    let order: Order = serde_json::from_str(finished.context.as_deref().unwrap()).unwrap();
    order.done
}

/// Recovers the fixture's executions on `store` with this build and checks
/// each against [`expected`].
async fn recover_and_check(store: impl SagaStore) {
    let calls = Calls::default();
    let engine = SagaEngine::new(store);
    let fingerprint = engine.register(saga(&calls)).await.unwrap();
    assert_eq!(fingerprint, FINGERPRINT, "the saga's shape changed");
    let expected = expected();
    let records = engine.list(None).await.unwrap();
    let mut ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    let mut wanted: Vec<&str> = expected.iter().map(|e| e.id).collect();
    wanted.sort_unstable();
    assert_eq!(ids, wanted, "the fixture's executions");
    assert!(records.iter().all(|r| r.fingerprint == FINGERPRINT));

    let recovery = engine.recover().await.unwrap();
    assert!(
        recovery.refused.is_empty(),
        "refused: {:?}",
        recovery.refused
    );
    assert!(recovery.busy.is_empty(), "busy: {:?}", recovery.busy);
    let mut resumed: Vec<&str> = recovery.resumed.iter().map(ExecutionId::as_str).collect();
    resumed.sort_unstable();
    let mut unfinished: Vec<&str> = expected
        .iter()
        .filter(|e| e.id != "stuck")
        .map(|e| e.id)
        .collect();
    unfinished.sort_unstable();
    assert_eq!(resumed, unfinished, "the executions recovery took over");
    for id in &recovery.resumed {
        // Compensated and stuck ones are `Err(WaitError::Saga)`; their
        // reports are checked below.
        engine.wait(id).await.or_else(support::ended).unwrap();
    }

    let calls = calls.lock().unwrap().clone();
    for e in &expected {
        let id = ExecutionId::new(e.id);
        let report = engine.report(&id).await.unwrap();
        assert_eq!(report.status, e.status, "`{}` ended", e.id);
        assert_eq!(describe(&report), e.steps, "the steps of `{}`", e.id);
        let made: Vec<(&str, &str, u32, Option<&str>)> = calls
            .iter()
            .filter(|c| c.execution == e.id)
            .map(|c| {
                (
                    c.what.as_str(),
                    c.key.as_str(),
                    c.attempt,
                    c.output.as_deref(),
                )
            })
            .collect();
        assert_eq!(made, e.calls, "the calls of `{}`", e.id);
        assert_eq!(
            final_done(&engine, &id).await,
            e.done,
            "the context of `{}`",
            e.id
        );
    }

    // Nothing is left to recover: the stuck execution stays stuck, the
    // resume request was carried out once.
    let again = engine.recover().await.unwrap();
    assert!(
        again.resumed.is_empty() && again.busy.is_empty() && again.refused.is_empty(),
        "a second recovery: {again:?}"
    );
    let stuck = engine.report(&ExecutionId::new("stuck")).await.unwrap();
    assert_eq!(stuck.status, ExecutionStatus::Stuck);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_stores_of_0_1_recover_as_0_1_decided() {
    let dir = scratch_dir("compat-v0-1");
    let path = dir.join("store.db");
    std::fs::copy(Path::new(FIXTURES).join("store.db"), &path).unwrap();
    recover_and_check(SqliteStore::open(&path).unwrap()).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A read-only open (what `saga list` and `saga show` use) of a 0.1 file
/// does not migrate it, so it cannot read it: it says so, and what to do,
/// rather than failing at the first query on a missing column; the file
/// is left as it was.
#[test]
fn a_read_only_open_of_a_0_1_store_asks_for_a_migration() {
    let dir = scratch_dir("compat-v0-1-read-only");
    let path = dir.join("store.db");
    std::fs::copy(Path::new(FIXTURES).join("store.db"), &path).unwrap();
    let before = std::fs::read(&path).unwrap();
    let Err(error) = SqliteStore::open_read_only(&path) else {
        panic!("a 0.1 file opened read-only without a migration");
    };
    assert!(
        matches!(
            error,
            saga_core::store::StoreError::OlderSchema { found, supported, .. }
                if found < supported
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("let a worker of this build"),
        "{error}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before, "the file changed");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An open that may write but must not migrate (what the `saga` command's
/// `resume`, `abandon` and `cancel --yes` use) refuses a 0.1 file with
/// the same error, before writing anything: the file stays a store that
/// 0.1 processes can open.
#[test]
fn an_open_told_not_to_migrate_leaves_a_0_1_store_as_it_was() {
    use saga_core::store::{SqliteOptions, StoreError};

    let dir = scratch_dir("compat-v0-1-no-migration");
    let path = dir.join("store.db");
    std::fs::copy(Path::new(FIXTURES).join("store.db"), &path).unwrap();
    let before = std::fs::read(&path).unwrap();
    for integrity_check in [true, false] {
        let options = SqliteOptions::new()
            .with_integrity_check(integrity_check)
            .with_migrate(false);
        let Err(error) = SqliteStore::open_with(&path, options) else {
            panic!("a 0.1 file opened to write without a migration");
        };
        assert!(
            matches!(
                error,
                StoreError::OlderSchema {
                    found: 1,
                    supported: 2,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("let a worker of this build"),
            "{error}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before, "the file changed");
    }
    // The default still migrates, as a service's first open must.
    drop(SqliteStore::open(&path).unwrap());
    assert_ne!(std::fs::read(&path).unwrap(), before);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The dump, made loadable into `schema` by this test's client: its
/// schema renamed, and psql's `\restrict` lines (meta-commands that guard
/// psql against a hostile server) left out.
#[cfg(feature = "postgres")]
fn dump_for(schema: &str) -> String {
    const DUMPED: &str = "saga_v0_1";
    let dump = std::fs::read_to_string(Path::new(FIXTURES).join("postgres.sql")).unwrap();
    assert!(dump.contains(&format!("CREATE SCHEMA {DUMPED};")));
    dump.lines()
        .filter(|line| !line.starts_with('\\'))
        .map(|line| line.replace(DUMPED, schema) + "\n")
        .collect()
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stores_of_0_1_recover_as_0_1_decided() {
    use saga_core::store::{PostgresOptions, PostgresStore};
    use support::pg::{client, fresh_schema, pg_url};

    let url = pg_url();
    let schema = fresh_schema("compat_v0_1");
    client(&url)
        .await
        .batch_execute(&dump_for(&schema))
        .await
        .unwrap();
    let store = PostgresStore::connect_with(&url, PostgresOptions::new().with_schema(schema))
        .await
        .unwrap();
    recover_and_check(store).await;
}

/// A connection that may write but must not migrate refuses a 0.1 schema
/// and leaves it at version 1, without the column version 2 adds.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_connection_told_not_to_migrate_leaves_a_0_1_store_as_it_was() {
    use saga_core::store::{PostgresOptions, PostgresStore, StoreError};
    use support::pg::{client, fresh_schema, pg_url};

    let url = pg_url();
    let schema = fresh_schema("compat_v0_1_no_migration");
    let admin = client(&url).await;
    admin.batch_execute(&dump_for(&schema)).await.unwrap();
    let state = || async {
        let version: i64 = admin
            .query_one(&format!("SELECT version FROM {schema}.saga_schema"), &[])
            .await
            .unwrap()
            .get(0);
        let columns: i64 = admin
            .query_one(
                "SELECT count(*) FROM information_schema.columns
                 WHERE table_schema = $1 AND table_name = 'events'",
                &[&schema],
            )
            .await
            .unwrap()
            .get(0);
        (version, columns)
    };
    let before = state().await;
    assert_eq!(before.0, 1);
    let options = PostgresOptions::new()
        .with_schema(&schema)
        .with_create_schema(false)
        .with_migrate(false);
    let error = PostgresStore::connect_with(&url, options)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::OlderSchema {
                found: 1,
                supported: 2,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("let a worker of this build"),
        "{error}"
    );
    assert_eq!(state().await, before, "the schema changed");
    // The default still migrates, as a service's first connection must.
    drop(
        PostgresStore::connect_with(&url, PostgresOptions::new().with_schema(&schema))
            .await
            .unwrap(),
    );
    assert_eq!(state().await, (2, before.1 + 1));
}
