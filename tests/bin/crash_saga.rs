//! The crash tests' helper: runs a durable five-step saga on an SQLite
//! store and stops dead at a chosen log point, for the test to SIGKILL it;
//! run again with `recover`, it carries the saga on.
//!
//! ```text
//! crash_saga <store.db> <ledger.db> forward|rollback [<point>]
//! crash_saga <store.db> <ledger.db> group-forward|group-rollback|group-late-rollback [<point>]
//! crash_saga <store.db> <ledger.db> recover
//! crash_saga <store.db> <ledger.db> worker [<point>]
//! ```
//!
//! `forward` and `rollback` run `s0`..`s4` in a row (`s4` refuses in
//! `rollback`). The `group-*` modes run `s0`, then a parallel group of
//! three async branches `b1`, `b2`, `b3`, then `s4`: `group-rollback` has
//! `b2` refuse (its siblings are compensated, then `s0`), and
//! `group-late-rollback` has `s4` refuse (the whole group is compensated,
//! at once, then `s0`).
//!
//! `<point>` is `commit-before:N` / `commit-after:N` (the N-th commit of
//! the saga's log, from 1: the execution's creation with its first step's
//! start) or `effect:N` (just after the N-th effect the
//! steps and compensations applied to the ledger, before they return). At
//! the point the helper prints `crash-point` and waits to be killed.
//! `step:N` stops whenever step `sN` starts its action, in every process
//! (a step that crashes its process each time it runs). At the end it
//! prints `commits=C effects=E` and each execution's status.
//!
//! `worker` carries the execution on with a [`Worker`] (the one call a
//! service makes at startup, no `recover`) until it ends, and prints each
//! step's last error (`error <step>: <message>`).
//!
//! The execution's id is `exec-1`, or `$CRASH_SAGA_ID` when set (several
//! executions in one store: the fixture of `tests/fixtures/`). The lease
//! lasts 200 ms, or `$CRASH_SAGA_LEASE_MS`.
//!
//! The ledger is a separate SQLite file, outside the saga: every
//! invocation is counted, and each effect is keyed by the step's
//! idempotency key, so a repeated invocation is absorbed (and counted).

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use saga_core::store::SqliteStore;
use saga_core::testkit::DelayedStore;
use saga_core::{Parallel, Saga, SagaEngine, Step, StepError, StepInfo, Worker};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Point {
    None,
    CommitBefore(usize),
    CommitAfter(usize),
    Effect(usize),
    Step(u32),
}

static EFFECTS: AtomicUsize = AtomicUsize::new(0);

fn crash_here() -> ! {
    println!("crash-point");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The SQLite store behind the test kit's delegating store, stopping
/// dead just before or just after the chosen commit of the log.
fn crashy(inner: SqliteStore, point: Point) -> DelayedStore {
    DelayedStore::new(inner, Duration::ZERO)
        .before_call(move |call| {
            if call.commit.is_some_and(|n| point == Point::CommitBefore(n)) {
                crash_here();
            }
            Ok(())
        })
        .after_call(move |call, _| {
            if call.commit.is_some_and(|n| point == Point::CommitAfter(n)) {
                crash_here();
            }
            Ok(())
        })
}

/// The saga's context: whether its last step refuses (the rollback path),
/// or the group's branch `b2` does.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Job {
    fail_last: bool,
    #[serde(default)]
    fail_branch: bool,
    done: Vec<String>,
}

/// The effects ledger, in its own file.
struct Ledger {
    conn: std::sync::Mutex<Connection>,
    point: Point,
}

impl Ledger {
    fn open(path: &str, point: Point) -> Result<Self, rusqlite::Error> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS effects (key TEXT, kind TEXT, PRIMARY KEY (key, kind));
             CREATE TABLE IF NOT EXISTS invocations (key TEXT, kind TEXT, absorbed INTEGER);",
        )?;
        Ok(Ledger {
            conn: std::sync::Mutex::new(conn),
            point,
        })
    }

    /// Applies `kind` once per key; a repeat is absorbed. `undo` applies
    /// only where a `do` did ("nothing to undo" otherwise).
    fn apply(&self, key: &str, kind: &str) -> Result<(), StepError> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| StepError::new("ledger lock poisoned"))?;
        let tx = conn.unchecked_transaction().map_err(StepError::new)?;
        let allowed = kind == "do"
            || tx
                .query_row(
                    "SELECT 1 FROM effects WHERE key = ?1 AND kind = 'do'",
                    [key],
                    |_| Ok(()),
                )
                .optional()
                .map_err(StepError::new)?
                .is_some();
        let applied = if allowed {
            tx.execute(
                "INSERT OR IGNORE INTO effects (key, kind) VALUES (?1, ?2)",
                params![key, kind],
            )
            .map_err(StepError::new)?
        } else {
            0
        };
        tx.execute(
            "INSERT INTO invocations (key, kind, absorbed) VALUES (?1, ?2, ?3)",
            params![key, kind, i64::from(applied == 0)],
        )
        .map_err(StepError::new)?;
        tx.commit().map_err(StepError::new)?;
        if applied == 1 {
            let n = EFFECTS.fetch_add(1, Ordering::SeqCst) + 1;
            if self.point == Point::Effect(n) {
                crash_here();
            }
        }
        Ok(())
    }
}

/// Step `s{i}`: applies its effect under its key, pushes to the context;
/// `s4` refuses when the job says so.
fn seq_step(ledger: &Arc<Ledger>, i: u32) -> Step<Job, u32> {
    let run = Arc::clone(ledger);
    let undo = Arc::clone(ledger);
    Step::new(
        format!("s{i}"),
        move |job: &mut Job, info: &StepInfo<'_>| {
            if run.point == Point::Step(i) {
                crash_here();
            }
            if i == 4 && job.fail_last {
                return Err(StepError::new("s4 refused"));
            }
            run.apply(&info.idempotency_key(), "do")?;
            job.done.push(format!("s{i}"));
            Ok(i * 10)
        },
    )
    .durable()
    .undo(
        move |job: &mut Job, out: Option<&u32>, info: &StepInfo<'_>| {
            if let Some(out) = out.filter(|out| **out != i * 10) {
                return Err(StepError::new(format!("s{i} got output {out}")));
            }
            undo.apply(&info.idempotency_key(), "undo")?;
            job.done.push(format!("undo s{i}"));
            Ok(())
        },
    )
}

/// `s0` to `s4` in a row.
fn saga(ledger: &Arc<Ledger>) -> Result<Saga<Job>, saga_core::BuildError> {
    let mut builder = Saga::<Job>::builder("crashy");
    for i in 0..5_u32 {
        builder = builder.step(seq_step(ledger, i));
    }
    builder.build()
}

/// Branch `b{i}` of the group: async, on the shared context, yielding
/// between its start and its effect so that its siblings interleave;
/// `b2` refuses when the job says so.
fn branch(ledger: &Arc<Ledger>, i: u32) -> Step<Job, u32> {
    let run = Arc::clone(ledger);
    let undo = Arc::clone(ledger);
    Step::shared_async(format!("b{i}"), move |job: &Job, info: &StepInfo<'_>| {
        let run = Arc::clone(&run);
        let key = info.idempotency_key();
        let refuse = i == 2 && job.fail_branch;
        Box::pin(async move {
            tokio::task::yield_now().await;
            if refuse {
                return Err(StepError::new("b2 refused"));
            }
            run.apply(&key, "do")?;
            Ok(i * 10)
        })
    })
    .durable()
    .undo_shared_async(move |_: &Job, out: Option<&u32>, info: &StepInfo<'_>| {
        let undo = Arc::clone(&undo);
        let key = info.idempotency_key();
        let out = out.copied();
        Box::pin(async move {
            if let Some(out) = out.filter(|out| *out != i * 10) {
                return Err(StepError::new(format!("b{i} got output {out}")));
            }
            tokio::task::yield_now().await;
            undo.apply(&key, "undo")
        })
    })
}

/// `s0`, then `b1`, `b2` and `b3` at once, then `s4`.
fn group_saga(ledger: &Arc<Ledger>) -> Result<Saga<Job>, saga_core::BuildError> {
    Saga::<Job>::builder("crashy-group")
        .step(seq_step(ledger, 0))
        .parallel(
            Parallel::new()
                .step(branch(ledger, 1))
                .step(branch(ledger, 2))
                .step(branch(ledger, 3)),
        )
        .step(seq_step(ledger, 4))
        .build()
}

fn parse_point(text: Option<&str>) -> Option<Point> {
    let Some(text) = text else {
        return Some(Point::None);
    };
    let (what, n) = text.split_once(':')?;
    let n: usize = n.parse().ok()?;
    match what {
        "commit-before" => Some(Point::CommitBefore(n)),
        "commit-after" => Some(Point::CommitAfter(n)),
        "effect" => Some(Point::Effect(n)),
        "step" => u32::try_from(n).ok().map(Point::Step),
        _ => None,
    }
}

async fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let [db, ledger, mode, rest @ ..] = args else {
        return Err(
            "usage: crash_saga <store.db> <ledger.db> forward|rollback|group-forward|group-rollback|group-late-rollback|recover|worker [point]".into(),
        );
    };
    let point = parse_point(rest.first().map(String::as_str))
        .ok_or("the point is `commit-before:N`, `commit-after:N`, `effect:N` or `step:N`")?;
    let ledger = Arc::new(Ledger::open(ledger, point)?);
    let store = crashy(SqliteStore::open(db)?, point);
    let commits = store.clone();
    // A short lease, unless `$CRASH_SAGA_LEASE_MS` says otherwise (the
    // liveness test gives an hour, so that only a proof of the owner's
    // death lets another process take over).
    let lease_ms = std::env::var("CRASH_SAGA_LEASE_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(200);
    let engine = SagaEngine::new(store).with_lease_ttl(Duration::from_millis(lease_ms));
    engine.register(saga(&ledger)?).await?;
    engine.register(group_saga(&ledger)?).await?;
    match mode.as_str() {
        "forward" | "rollback" | "group-forward" | "group-rollback" | "group-late-rollback" => {
            let job = Job {
                fail_last: mode.ends_with("rollback") && mode != "group-rollback",
                fail_branch: mode == "group-rollback",
                done: Vec::new(),
            };
            let name = if mode.starts_with("group") {
                "crashy-group"
            } else {
                "crashy"
            };
            let id = std::env::var("CRASH_SAGA_ID").unwrap_or_else(|_| "exec-1".to_owned());
            let id = engine.start_with_id(name, id, job).await?;
            ended(engine.wait(&id).await)?;
        }
        "recover" => loop {
            let recovery = engine.recover().await?;
            if let Some((id, error)) = recovery.refused.first() {
                return Err(format!("recovery refused `{id}`: {error}").into());
            }
            for id in &recovery.resumed {
                ended(engine.wait(id).await)?;
            }
            if recovery.busy.is_empty() {
                break;
            }
            // The killed owner's lease has not expired yet.
            tokio::time::sleep(Duration::from_millis(50)).await;
        },
        "worker" => {
            let id = std::env::var("CRASH_SAGA_ID").unwrap_or_else(|_| "exec-1".to_owned());
            let id = saga_core::ExecutionId::new(id);
            let worker = Worker::new(engine.clone())
                .with_poll_interval(Duration::from_millis(50))
                .spawn()?;
            // A resume requested of a stuck execution: `wait` follows it
            // until the worker has run it again. Stuck, compensated or
            // completed: the report either way.
            let waited = tokio::time::timeout(Duration::from_secs(30), engine.wait(&id))
                .await
                .map_err(|_| "the worker never carried out the resume request")?;
            let report = match waited {
                Ok(report) => report,
                Err(saga_core::WaitError::Saga(failed)) => failed.report().clone(),
                Err(other) => return Err(other.into()),
            };
            worker.shutdown(Duration::from_secs(5)).await;
            for step in &report.steps {
                if let Some(error) = &step.last_error {
                    println!("error {}: {error}", step.name);
                }
            }
        }
        other => return Err(format!("unknown mode `{other}`").into()),
    }
    println!(
        "commits={} effects={}",
        commits.commits(),
        EFFECTS.load(Ordering::SeqCst)
    );
    for record in engine.list(None).await? {
        println!("{} {}", record.id, record.status);
    }
    Ok(())
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
            eprintln!("crash_saga: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("crash_saga: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Waited for: an execution that ended compensated or stuck ended all the
/// same (the test reads its status from the store).
fn ended(
    outcome: Result<saga_core::SagaReport, saga_core::WaitError>,
) -> Result<(), saga_core::WaitError> {
    match outcome {
        Ok(_) | Err(saga_core::WaitError::Saga(_)) => Ok(()),
        Err(other) => Err(other),
    }
}
