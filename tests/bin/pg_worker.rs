//! The PostgreSQL tests' helper: a worker process (or a submitter) of a
//! four-step saga whose effects land in a ledger outside the saga.
//!
//! ```text
//! pg_worker <url> <schema> submit <count> [key=value...]
//! pg_worker <url> <schema> work [key=value...]
//! ```
//!
//! Options: `seed=N` (which steps fail, default 1), `fail=P` (permille of
//! steps that fail for good, default 0), `step_ms=N` (each step sleeps up
//! to N/2 ms before its effect and up to N/2 after, default 0), `slow=I:MS` (step I sleeps MS ms before its
//! effect), `ttl_ms=N` (lease, default 1000), `poll_ms=N` (default 250),
//! `concurrency=N` (default 16).
//!
//! The ledger lives in schema `<schema>_fx`: `calls` records every
//! invocation (idempotency key, pid), `effects` applies each key once (its
//! primary key), so a repeated invocation is absorbed. A step's effect is
//! `do:<key>`, its compensation's `undo:<key>`.
//!
//! A worker prints `ready` once it runs and `lease-lost append|renew <id>` when
//! the store refuses a write because its lease was taken over.

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use saga_core::store::{PostgresOptions, PostgresStore, StoreError};
use saga_core::testkit::{DelayedStore, StoreOp};
use saga_core::{Saga, SagaEngine, Step, StepError, StepInfo, Worker};
use serde::{Deserialize, Serialize};
use tokio_postgres::NoTls;

const STEPS: usize = 4;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Job {
    n: u64,
}

struct Options {
    seed: u64,
    fail_permille: u64,
    step_ms: u64,
    slow: Option<(usize, u64)>,
    ttl_ms: u64,
    poll_ms: u64,
    concurrency: usize,
}

fn options(args: &[String]) -> Result<Options, String> {
    let mut map = HashMap::new();
    for arg in args {
        let (k, v) = arg
            .split_once('=')
            .ok_or_else(|| format!("expected key=value, got `{arg}`"))?;
        map.insert(k.to_owned(), v.to_owned());
    }
    let num = |k: &str, default: u64| -> Result<u64, String> {
        map.get(k).map_or(Ok(default), |v| {
            v.parse().map_err(|e| format!("`{k}`: {e}"))
        })
    };
    let slow = match map.get("slow") {
        None => None,
        Some(v) => {
            let (i, ms) = v.split_once(':').ok_or("`slow` is I:MS")?;
            Some((
                i.parse().map_err(|e| format!("`slow`: {e}"))?,
                ms.parse().map_err(|e| format!("`slow`: {e}"))?,
            ))
        }
    };
    Ok(Options {
        seed: num("seed", 1)?,
        fail_permille: num("fail", 0)?,
        step_ms: num("step_ms", 0)?,
        slow,
        ttl_ms: num("ttl_ms", 1000)?,
        poll_ms: num("poll_ms", 250)?,
        concurrency: usize::try_from(num("concurrency", 16)?).map_err(|e| e.to_string())?,
    })
}

/// A deterministic hash of the seed and a key (FNV-1a, then a mix).
fn hash(seed: u64, key: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64 ^ seed;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// The ledger: one connection, opened again when lost.
struct Ledger {
    url: String,
    schema: String,
    client: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
}

impl Ledger {
    async fn apply(&self, effect: &str) -> Result<(), StepError> {
        let mut slot = self.client.lock().await;
        if slot.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
            let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
                .await
                .map_err(|e| StepError::new(format!("ledger unreachable: {e}")))?;
            tokio::spawn(connection);
            *slot = Some(client);
        }
        let Some(client) = slot.as_ref() else {
            return Err(StepError::new("ledger unreachable"));
        };
        let sql = format!(
            "WITH call AS (INSERT INTO {s}.calls (effect, pid) VALUES ($1, $2) RETURNING 1)
             INSERT INTO {s}.effects (effect) SELECT $1 FROM call ON CONFLICT (effect) DO NOTHING",
            s = self.schema
        );
        let pid = i64::from(std::process::id());
        client
            .execute(&sql, &[&effect, &pid])
            .await
            .map_err(|e| StepError::new(format!("ledger call failed: {e}")))?;
        Ok(())
    }
}

fn saga(opts: &Options, ledger: &Arc<Ledger>) -> Saga<Job> {
    let mut builder = Saga::builder("chaos");
    for i in 0..STEPS {
        let run = Arc::clone(ledger);
        let undo = Arc::clone(ledger);
        let (seed, fail, step_ms) = (opts.seed, opts.fail_permille, opts.step_ms);
        let slow = opts.slow.and_then(|(s, ms)| (s == i).then_some(ms));
        builder = builder.step(
            Step::new_async(format!("s{i}"), move |_: &mut Job, info: &StepInfo<'_>| {
                let ledger = Arc::clone(&run);
                let key = info.idempotency_key();
                Box::pin(async move {
                    let h = hash(seed, &key);
                    if let Some(ms) = slow {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    // Half of the work before the effect, half after it:
                    // a crash may cut a step either side of its effect.
                    let pause = |bits: u64| {
                        Duration::from_millis(if step_ms > 1 { bits % (step_ms / 2) } else { 0 })
                    };
                    tokio::time::sleep(pause(h >> 8)).await;
                    if h % 1000 < fail {
                        return Err(StepError::new(format!("{key} refused (seeded)")));
                    }
                    ledger.apply(&format!("do:{key}")).await?;
                    tokio::time::sleep(pause(h >> 24)).await;
                    Ok::<(), StepError>(())
                })
            })
            .undo_async(move |_: &mut Job, _: Option<&()>, info: &StepInfo<'_>| {
                let ledger = Arc::clone(&undo);
                let key = info.idempotency_key();
                Box::pin(async move { ledger.apply(&format!("undo:{key}")).await })
            }),
        );
    }
    // Built from fixed parts: cannot fail.
    match builder.build() {
        Ok(saga) => saga,
        Err(e) => panic!("the helper's saga does not build: {e}"),
    }
}

/// The PostgreSQL store behind the test kit's delegating store, telling
/// stdout when a write was refused for a lost lease.
fn telling(store: PostgresStore) -> DelayedStore {
    DelayedStore::new(store, Duration::ZERO).after_call(|call, answer| {
        let renewing = matches!(call.op, StoreOp::Append | StoreOp::Renew);
        if let (true, Err(StoreError::LeaseLost { execution_id })) = (renewing, answer) {
            println!("lease-lost {} {execution_id}", call.op.label());
            let _ = std::io::stdout().flush();
        }
        Ok(())
    })
}

/// Logs to stderr: errors, and with `PG_WORKER_LOG=1` everything down to
/// info.
struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!("[{} {}] {}", std::process::id(), r.level(), r.args());
        }
    }
    fn flush(&self) {}
}

static LOGGER: Stderr = Stderr;

async fn main_async(args: Vec<String>) -> Result<(), String> {
    let [url, schema, mode, rest @ ..] = args.as_slice() else {
        return Err(
            "usage: pg_worker <url> <schema> submit <count> [key=value...] | work [key=value...]"
                .to_owned(),
        );
    };
    let (count, rest) = match mode.as_str() {
        "submit" => {
            let (count, rest) = rest.split_first().ok_or("submit needs a count")?;
            (Some(count.parse::<u64>().map_err(|e| e.to_string())?), rest)
        }
        "work" => (None, rest),
        other => return Err(format!("unknown mode `{other}`")),
    };
    let opts = options(rest)?;
    let store =
        PostgresStore::connect_with(url, PostgresOptions::new().with_schema(schema.clone()))
            .await
            .map_err(|e| e.to_string())?;
    let ledger = Arc::new(Ledger {
        url: url.clone(),
        schema: format!("{schema}_fx"),
        client: tokio::sync::Mutex::new(None),
    });
    let engine = SagaEngine::new(telling(store)).with_lease_ttl(Duration::from_millis(opts.ttl_ms));
    engine
        .register(saga(&opts, &ledger))
        .await
        .map_err(|e| e.to_string())?;
    if let Some(count) = count {
        for n in 0..count {
            engine
                .submit_with_id("chaos", format!("job-{n:05}"), Job { n })
                .await
                .map_err(|e| e.to_string())?;
        }
        println!("submitted {count}");
        return Ok(());
    }
    let worker = Worker::new(engine)
        .with_concurrency(opts.concurrency)
        .with_poll_interval(Duration::from_millis(opts.poll_ms))
        .with_max_backoff(Duration::from_millis(1000))
        .spawn()
        .map_err(|e| e.to_string())?;
    println!("ready");
    let _ = std::io::stdout().flush();
    // Until SIGTERM-free death: the tests SIGKILL, SIGSTOP and SIGCONT it;
    // a line on stdin (or its end) asks for a graceful stop.
    let mut line = String::new();
    let _ = tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await;
    let stats = worker.shutdown(Duration::from_secs(5)).await;
    println!("stopped {stats:?}");
    Ok(())
}

fn main() -> ExitCode {
    let level = if std::env::var_os("PG_WORKER_LOG").is_some() {
        log::LevelFilter::Info
    } else {
        log::LevelFilter::Error
    };
    let _ = log::set_logger(&LOGGER).map(|()| log::set_max_level(level));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pg_worker: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_async(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pg_worker: {e}");
            ExitCode::FAILURE
        }
    }
}
