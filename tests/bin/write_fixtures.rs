//! Writes the compatibility fixtures of `tests/fixtures/v0.1/`: one store
//! holding executions of a small saga stopped at each point of its log, as
//! release 0.1.0 leaves them. `tests/test_compat_v0_1.rs` recovers copies
//! with later builds.
//!
//! ```text
//! write_fixtures sqlite <store.db>
//! write_fixtures postgres <url> <schema>      (feature `postgres`)
//! ```
//!
//! Only release 0.1.0 may run it: the fixtures stand for stores its users
//! wrote, so a later build regenerating them would test itself against
//! itself. The store must be empty (a new file, a new schema).
//!
//! The saga, `compat-order`: `reserve`, `charge` (up to 3 attempts) and
//! `book`, each with an undo; the pivot `ship`; then `notify`. Which step
//! fails is decided by the execution's id (see [`SCENARIOS`]). A crash is
//! a store that stops writing after a chosen commit of the log, as the
//! test kit's crash mode does: everything the process would write after
//! it (log, lease renewal, release) is lost, and the lease expires.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use saga_core::store::{EventKind, SagaStore, SqliteStore, StoreError};
use saga_core::testkit::{DelayedStore, StoreOp};
use saga_core::{ExecutionStatus, RetryPolicy, Saga, SagaEngine, Step, StepError, StepInfo};
use serde::{Deserialize, Serialize};

const SAGA: &str = "compat-order";

/// The saga's context: the order, and what was done to it, in order.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Order {
    sku: String,
    done: Vec<String>,
}

/// How a scenario is run, and where its log must end.
struct Scenario {
    id: &'static str,
    run: Run,
    /// The log's last event (none for an empty log): kind, step index,
    /// attempt.
    last: Option<(EventKind, Option<u32>, u32)>,
    status: ExecutionStatus,
}

enum Run {
    /// Submitted for a worker; no one ran it.
    Submitted,
    /// Started, and the process died just after commit N of its log.
    CrashAfterCommit(usize),
    /// Run to its end.
    ToTheEnd,
    /// Run to its end (stuck), then an operator asked for a resume from a
    /// tool, as `saga resume` does.
    ToTheEndThenRequestResume,
}

/// The executions. Commits of an undisturbed run: 1 the execution with
/// `reserve` started, 2 `reserve` ended and `charge` started, 3 `book`
/// started, 4 `ship` started, 5 `notify` started, 6 finished.
const SCENARIOS: &[Scenario] = &[
    Scenario {
        id: "submitted",
        run: Run::Submitted,
        last: None,
        status: ExecutionStatus::Running,
    },
    Scenario {
        id: "reserve-started",
        run: Run::CrashAfterCommit(1),
        last: Some((EventKind::StepStarted, Some(0), 1)),
        status: ExecutionStatus::Running,
    },
    Scenario {
        // An id with slashes: the key is the id, `/`, the step.
        id: "shop/7/charge-started",
        run: Run::CrashAfterCommit(2),
        last: Some((EventKind::StepStarted, Some(1), 1)),
        status: ExecutionStatus::Running,
    },
    Scenario {
        // `charge` fails its first attempt with an error marked
        // retryable; the failure is committed with the retry's start.
        id: "charge-retrying",
        run: Run::CrashAfterCommit(3),
        last: Some((EventKind::StepStarted, Some(1), 2)),
        status: ExecutionStatus::Running,
    },
    Scenario {
        id: "ship-started",
        run: Run::CrashAfterCommit(4),
        last: Some((EventKind::StepStarted, Some(3), 1)),
        status: ExecutionStatus::Running,
    },
    Scenario {
        id: "notify-started",
        run: Run::CrashAfterCommit(5),
        last: Some((EventKind::StepStarted, Some(4), 1)),
        status: ExecutionStatus::Running,
    },
    Scenario {
        // `book` fails with an unmarked error: no retry, the rollback
        // starts, and `charge`'s undo with it in the same commit.
        id: "rollback-started",
        run: Run::CrashAfterCommit(4),
        last: Some((EventKind::CompensationStarted, Some(1), 1)),
        status: ExecutionStatus::Compensating,
    },
    Scenario {
        // `book` fails, `charge` is undone, `reserve`'s undo fails its
        // three attempts (the default compensation policy).
        id: "stuck",
        run: Run::ToTheEnd,
        last: Some((EventKind::Finished, None, 0)),
        status: ExecutionStatus::Stuck,
    },
    Scenario {
        id: "resume-requested",
        run: Run::ToTheEndThenRequestResume,
        last: Some((EventKind::ResumeRequested, None, 0)),
        status: ExecutionStatus::Stuck,
    },
];

fn charge_fails_once(id: &str) -> bool {
    id == "charge-retrying"
}

fn book_fails(id: &str) -> bool {
    matches!(id, "rollback-started" | "stuck" | "resume-requested")
}

fn release_fails(id: &str) -> bool {
    matches!(id, "stuck" | "resume-requested")
}

/// A step pushing its name, returning `output`; its undo pushes `undo
/// <name>`.
fn step<T>(name: &'static str, output: fn(&Order) -> T) -> Step<Order, T>
where
    T: Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    Step::new(name, move |order: &mut Order, info: &StepInfo<'_>| {
        let id = info.execution_id().as_str();
        if name == "charge" && charge_fails_once(id) && info.attempt() == 1 {
            return Err(StepError::new("card network timeout").retryable());
        }
        if name == "book" && book_fails(id) {
            return Err(StepError::new("no courier slot"));
        }
        order.done.push(name.to_owned());
        Ok(output(order))
    })
    .durable()
}

fn undo<T: Send + Sync + 'static>(step: Step<Order, T>, name: &'static str) -> Step<Order, T> {
    step.compensate(
        move |order: &mut Order, _: Option<&T>, info: &StepInfo<'_>| {
            if name == "reserve" && release_fails(info.execution_id().as_str()) {
                return Err(StepError::new("the warehouse refused the release"));
            }
            order.done.push(format!("undo {name}"));
            Ok(())
        },
    )
}

fn saga() -> Result<Saga<Order>, saga_core::BuildError> {
    Saga::<Order>::builder(SAGA)
        .step(undo(
            step("reserve", |o: &Order| format!("hold-{}", o.sku)),
            "reserve",
        ))
        .step(
            undo(step("charge", |_: &Order| 4200_u64), "charge").retry(
                RetryPolicy::attempts(3)
                    .with_backoff(Duration::from_millis(1))
                    .with_jitter(0.0),
            ),
        )
        .step(undo(step("book", |_: &Order| "slot-9".to_owned()), "book"))
        .pivot(step("ship", |o: &Order| format!("parcel-{}", o.sku)))
        .step(Step::new(
            "notify",
            |order: &mut Order, _: &StepInfo<'_>| {
                order.done.push("notify".to_owned());
                Ok::<_, StepError>(())
            },
        ))
        .build()
}

/// `inner` behind a store that dies after commit `after` (if any): from
/// then on every write fails, as for a killed process.
fn dying(inner: &Arc<dyn SagaStore>, after: Option<usize>) -> DelayedStore {
    let dead = Arc::new(AtomicBool::new(false));
    let (before, killed) = (Arc::clone(&dead), dead);
    let closed = || StoreError::Closed {
        store: "the fixture writer's store (a crash)".to_owned(),
    };
    DelayedStore::shared(Arc::clone(inner), Duration::ZERO)
        .before_call(move |call| {
            let writes = call.commit.is_some()
                || matches!(
                    call.op,
                    StoreOp::Renew | StoreOp::Release | StoreOp::Claim | StoreOp::ClaimNext
                );
            if writes && before.load(Ordering::SeqCst) {
                return Err(closed());
            }
            Ok(())
        })
        .after_call(move |call, _| {
            if call.commit.is_some() && call.commit == after {
                killed.store(true, Ordering::SeqCst);
                return Err(closed());
            }
            Ok(())
        })
}

async fn write(inner: Arc<dyn SagaStore>) -> Result<(), Box<dyn std::error::Error>> {
    if !inner.list(None).await?.is_empty() {
        return Err("the store is not empty: write the fixtures into a new one".into());
    }
    for scenario in SCENARIOS {
        let crash = match scenario.run {
            Run::CrashAfterCommit(n) => Some(n),
            _ => None,
        };
        let engine =
            SagaEngine::new(dying(&inner, crash)).with_lease_ttl(Duration::from_millis(100));
        engine.register(saga()?).await?;
        let order = Order {
            sku: "sku-1".to_owned(),
            done: Vec::new(),
        };
        match scenario.run {
            Run::Submitted => {
                engine.submit_with_id(SAGA, scenario.id, order).await?;
            }
            Run::CrashAfterCommit(_) => {
                // A crash at the first commit fails the start itself;
                // `check` below says whether the crash came where it should.
                let ended = match engine.start_with_id(SAGA, scenario.id, order).await {
                    Ok(id) => engine.wait(&id).await.ok(),
                    Err(_) => None,
                };
                if let Some(report) = ended {
                    let (id, status) = (report.execution_id, report.status);
                    return Err(format!("`{id}` ended {status} instead of crashing").into());
                }
            }
            Run::ToTheEnd | Run::ToTheEndThenRequestResume => {
                let id = engine.start_with_id(SAGA, scenario.id, order).await?;
                engine.wait(&id).await?;
                if matches!(scenario.run, Run::ToTheEndThenRequestResume) {
                    engine.request_resume(&id).await?;
                }
            }
        }
        drop(engine);
        check(&*inner, scenario).await?;
    }
    Ok(())
}

/// The log ends where the scenario says, with the status it says.
async fn check(
    store: &dyn SagaStore,
    scenario: &Scenario,
) -> Result<(), Box<dyn std::error::Error>> {
    let id = saga_core::ExecutionId::new(scenario.id);
    let record = store.get(&id).await?.ok_or("not written")?;
    let events = store.events(&id).await?;
    let last = events.last().map(|e| (e.kind, e.step, e.attempt));
    if last != scenario.last || record.status != scenario.status {
        return Err(format!(
            "`{id}` is {} with its log ending {last:?}, not {} ending {:?}",
            record.status, scenario.status, scenario.last
        )
        .into());
    }
    let shown: Vec<String> = events
        .iter()
        .map(|e| match e.step {
            Some(step) => format!("{}({step}#{})", e.kind, e.attempt),
            None => e.kind.to_string(),
        })
        .collect();
    println!("{id} {} [{}]", record.status, shown.join(" "));
    Ok(())
}

async fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let store: Arc<dyn SagaStore> = match args {
        [kind, path] if kind == "sqlite" => Arc::new(SqliteStore::open(path)?),
        #[cfg(feature = "postgres")]
        [kind, url, schema] if kind == "postgres" => Arc::new(
            saga_core::store::PostgresStore::connect_with(
                url,
                saga_core::store::PostgresOptions::new().with_schema(schema.clone()),
            )
            .await?,
        ),
        _ => {
            return Err(
                "usage: write_fixtures sqlite <store.db> | postgres <url> <schema> (feature `postgres`)"
                    .into(),
            );
        }
    };
    write(store).await
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("write_fixtures: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("write_fixtures: {error}");
            ExitCode::FAILURE
        }
    }
}
