//! The crash tests' helper: runs a durable five-step saga on an SQLite
//! store and stops dead at a chosen log point, for the test to SIGKILL it;
//! run again with `recover`, it carries the saga on.
//!
//! ```text
//! crash_saga <store.db> <ledger.db> forward|rollback [<point>]
//! crash_saga <store.db> <ledger.db> recover
//! ```
//!
//! `<point>` is `commit-before:N` / `commit-after:N` (the N-th commit of
//! the saga's log, from 1: the execution's creation with its first step's
//! start) or `effect:N` (just after the N-th effect the
//! steps and compensations applied to the ledger, before they return). At
//! the point the helper prints `crash-point` and waits to be killed. At the
//! end it prints `commits=C effects=E` and each execution's status.
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
use saga_core::store::{
    Ack, Created, DefinitionRecord, Event, ExecutionRecord, Lease, NewExecution, SagaStore,
    SqliteStore, StoreResult,
};
use saga_core::{
    BoxFuture, ExecutionId, ExecutionStatus, Saga, SagaEngine, Step, StepError, StepInfo,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Point {
    None,
    CommitBefore(usize),
    CommitAfter(usize),
    Effect(usize),
}

static COMMITS: AtomicUsize = AtomicUsize::new(0);
static EFFECTS: AtomicUsize = AtomicUsize::new(0);

fn crash_here() -> ! {
    println!("crash-point");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The SQLite store, counting commits of the log and stopping at one.
struct Crashy {
    inner: SqliteStore,
    point: Point,
}

impl SagaStore for Crashy {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn put_definition(&self, d: DefinitionRecord) -> BoxFuture<'_, StoreResult<()>> {
        self.inner.put_definition(d)
    }
    fn definition(&self, f: &str) -> BoxFuture<'_, StoreResult<Option<DefinitionRecord>>> {
        self.inner.definition(f)
    }
    fn create(&self, e: NewExecution, o: &str, t: Duration) -> BoxFuture<'_, StoreResult<Created>> {
        // The execution's creation, with its first step's start, is the
        // log's first commit.
        let o = o.to_owned();
        Box::pin(async move {
            let n = COMMITS.fetch_add(1, Ordering::SeqCst) + 1;
            if self.point == Point::CommitBefore(n) {
                crash_here();
            }
            let created = self.inner.create(e, &o, t).await?;
            if self.point == Point::CommitAfter(n) {
                crash_here();
            }
            Ok(created)
        })
    }
    fn claim(
        &self,
        id: &ExecutionId,
        o: &str,
        t: Duration,
    ) -> BoxFuture<'_, StoreResult<Option<Lease>>> {
        self.inner.claim(id, o, t)
    }
    fn append<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
        events: Vec<Event>,
        status: ExecutionStatus,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        Box::pin(async move {
            let n = COMMITS.fetch_add(1, Ordering::SeqCst) + 1;
            if self.point == Point::CommitBefore(n) {
                crash_here();
            }
            let ack = self.inner.append(id, lease, events, status).await?;
            if self.point == Point::CommitAfter(n) {
                crash_here();
            }
            Ok(ack)
        })
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
        self.inner.release(id, lease)
    }
    fn get<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> BoxFuture<'a, StoreResult<Option<ExecutionRecord>>> {
        self.inner.get(id)
    }
    fn events<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<Vec<Event>>> {
        self.inner.events(id)
    }
    fn list(&self, s: Option<ExecutionStatus>) -> BoxFuture<'_, StoreResult<Vec<ExecutionRecord>>> {
        self.inner.list(s)
    }
    fn request_cancel<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<bool>> {
        self.inner.request_cancel(id)
    }
    fn purge(&self, before: i64) -> BoxFuture<'_, StoreResult<u64>> {
        self.inner.purge(before)
    }
}

/// The saga's context: whether its last step refuses (the rollback path).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Job {
    fail_last: bool,
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

fn saga(ledger: &Arc<Ledger>) -> Result<Saga<Job>, saga_core::BuildError> {
    let mut builder = Saga::<Job>::builder("crashy");
    for i in 0..5_u32 {
        let run = Arc::clone(ledger);
        let undo = Arc::clone(ledger);
        builder = builder.step(
            Step::new(
                format!("s{i}"),
                move |job: &mut Job, info: &StepInfo<'_>| {
                    if i == 4 && job.fail_last {
                        return Err(StepError::new("s4 refused"));
                    }
                    run.apply(&info.idempotency_key(), "do")?;
                    job.done.push(format!("s{i}"));
                    Ok(i * 10)
                },
            )
            .durable()
            .compensate(
                move |job: &mut Job, out: Option<&u32>, info: &StepInfo<'_>| {
                    if let Some(out) = out
                        && *out != i * 10
                    {
                        return Err(StepError::new(format!("s{i} got output {out}")));
                    }
                    undo.apply(&info.idempotency_key(), "undo")?;
                    job.done.push(format!("undo s{i}"));
                    Ok(())
                },
            ),
        );
    }
    builder.build()
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
        _ => None,
    }
}

async fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let [db, ledger, mode, rest @ ..] = args else {
        return Err(
            "usage: crash_saga <store.db> <ledger.db> forward|rollback|recover [point]".into(),
        );
    };
    let point = parse_point(rest.first().map(String::as_str))
        .ok_or("the point is `commit-before:N`, `commit-after:N` or `effect:N`")?;
    let ledger = Arc::new(Ledger::open(ledger, point)?);
    let store = Crashy {
        inner: SqliteStore::open(db)?,
        point,
    };
    let engine = SagaEngine::new(store).with_lease_ttl(Duration::from_millis(200));
    engine.register(saga(&ledger)?).await?;
    match mode.as_str() {
        "forward" | "rollback" => {
            let job = Job {
                fail_last: mode == "rollback",
                done: Vec::new(),
            };
            let id = engine.start_with_id("crashy", "exec-1", job).await?;
            engine.wait(&id).await?;
        }
        "recover" => loop {
            let recovery = engine.recover().await?;
            if let Some((id, error)) = recovery.refused.first() {
                return Err(format!("recovery refused `{id}`: {error}").into());
            }
            for id in &recovery.resumed {
                engine.wait(id).await?;
            }
            if recovery.busy.is_empty() {
                break;
            }
            // The killed owner's lease has not expired yet.
            tokio::time::sleep(Duration::from_millis(50)).await;
        },
        other => return Err(format!("unknown mode `{other}`").into()),
    }
    println!(
        "commits={} effects={}",
        COMMITS.load(Ordering::SeqCst),
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
