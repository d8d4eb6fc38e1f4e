//! Step transitions per second on PostgreSQL with 1 and 4 workers (16
//! executions in flight each), next to raw single-row `INSERT` commits per
//! second from 1 and 4 clients on the same server, in the same run.
//!
//! ```text
//! SAGA_PG_URL=$(scripts/pg.sh start) cargo bench --features postgres --bench postgres
//! ```
//!
//! First, the raw commits of 1 client and the runs of 1 and 4 workers are
//! measured in alternation, round after round, and the medians (and
//! quartiles) of the per-round ratios printed (`postgres interleaved
//! ...`), with the CPU model and load average: issue 17's targets are
//! 1 worker >= 0.8 x the 1-client raw commit rate, and 4 workers >= 2 x
//! 1 worker. Then criterion measures each alone.
//!
//! Without `SAGA_PG_URL` it starts `scripts/pg.sh`'s cluster. A step
//! transition is one step run to its end: the engine commits the step's
//! start (with the previous step's end) before running it, so each is one
//! durable commit of the log unless group commit merges them.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use saga_core::store::{PostgresOptions, PostgresStore};
use saga_core::{Context, Saga, SagaEngine, Step, StepError, StepInfo, Worker};
use support::{cpu_model, load_average, quartiles};
use tokio::runtime::Runtime;
use tokio_postgres::NoTls;

const STEPS: u64 = 8;
const IN_FLIGHT: usize = 16;

fn url() -> String {
    match std::env::var("SAGA_PG_URL") {
        Ok(url) if !url.is_empty() => return url,
        _ => {}
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(root.join("scripts/pg.sh"))
        .arg("start")
        .current_dir(root)
        .output()
        .expect("running scripts/pg.sh start");
    assert!(out.status.success(), "scripts/pg.sh start failed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn saga() -> Saga<Context> {
    let mut builder = Saga::<Context>::builder("bench");
    for i in 0..STEPS {
        builder = builder.step(Step::new(
            format!("s{i}"),
            |_: &mut Context, _: &StepInfo<'_>| Ok::<_, StepError>(()),
        ));
    }
    builder.build().unwrap()
}

/// `iters` single-row INSERTs, each its own commit, split across `clients`
/// connections; the time they took.
async fn raw(url: &str, clients: u64, iters: u64) -> Duration {
    let mut conns = Vec::new();
    for _ in 0..clients {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
        tokio::spawn(connection);
        conns.push(client);
    }
    conns[0]
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS bench_raw (id BIGSERIAL PRIMARY KEY, v BIGINT NOT NULL)",
        )
        .await
        .unwrap();
    let left = Arc::new(AtomicU64::new(iters));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for client in conns {
        let left = Arc::clone(&left);
        tasks.push(tokio::spawn(async move {
            let insert = client
                .prepare("INSERT INTO bench_raw (v) VALUES ($1)")
                .await
                .unwrap();
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                client.execute(&insert, &[&1_i64]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

/// At least `iters` step transitions: executions submitted first (not
/// timed), then `workers` workers (each its own store and connections)
/// run them; the time from the workers' start to the last execution's
/// end.
async fn workers(url: &str, workers: usize, iters: u64, round: u64) -> Duration {
    // Enough executions to keep every worker's 16 slots busy for a while;
    // the time is scaled back to `iters` below.
    let run = iters.max(STEPS * 64 * workers as u64);
    let schema = format!("bench_w{workers}_{}_{round}", std::process::id());
    let opts = || PostgresOptions::new().with_schema(schema.clone());
    let submitter = SagaEngine::new(PostgresStore::connect_with(url, opts()).await.unwrap());
    submitter.register(saga()).await.unwrap();
    let executions = run.div_ceil(STEPS);
    let mut ids = Vec::new();
    for _ in 0..executions {
        ids.push(submitter.submit("bench", Context::new()).await.unwrap());
    }
    let mut engines = Vec::new();
    for _ in 0..workers {
        let engine = SagaEngine::new(PostgresStore::connect_with(url, opts()).await.unwrap());
        engine.register(saga()).await.unwrap();
        engines.push(engine);
    }
    let start = Instant::now();
    let handles: Vec<_> = engines
        .into_iter()
        .map(|e| {
            Worker::new(e)
                .with_concurrency(IN_FLIGHT)
                .with_poll_interval(Duration::from_millis(500))
                .spawn()
                .unwrap()
        })
        .collect();
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let unfinished = format!(
        "SELECT count(*) FROM {schema}.executions WHERE status NOT IN ('completed', 'compensated')"
    );
    while client
        .query_one(&unfinished, &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
        > 0
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = start.elapsed();
    for h in handles {
        h.shutdown(Duration::from_secs(5)).await;
    }
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    // Scaled to exactly `iters` transitions.
    elapsed.mul_f64(iters as f64 / (executions * STEPS) as f64)
}

fn bench(c: &mut Criterion) {
    let url = url();
    let rt = Runtime::new().unwrap();
    let mut group = c.benchmark_group("postgres");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(1));
    for clients in [1, 4] {
        group.bench_function(format!("raw_insert_commits/{clients}_clients"), |b| {
            b.iter_custom(|iters| rt.block_on(raw(&url, clients, iters)));
        });
    }
    let round = AtomicU64::new(0);
    for n in [1, 4] {
        group.bench_function(format!("step_transitions/{n}_workers"), |b| {
            b.iter_custom(|iters| {
                let r = round.fetch_add(1, Ordering::Relaxed);
                rt.block_on(workers(&url, n, iters, r))
            });
        });
    }
    group.finish();
}

/// Raw 1-client commits, 1 worker and 4 workers in alternation, `ROUNDS`
/// times: the ratios are taken within each round (the server and the
/// disk drift between rounds on a shared machine), then their medians.
fn interleaved() {
    const ROUNDS: u64 = 9;
    const RAW_COMMITS: u64 = 400;
    const TRANSITIONS: u64 = 2048;
    let url = url();
    let rt = Runtime::new().unwrap();
    println!(
        "postgres: {}; load average {} at the start",
        cpu_model(),
        load_average()
    );
    let rate = |n: u64, took: Duration| n as f64 / took.as_secs_f64();
    let mut rows: Vec<[f64; 5]> = Vec::new();
    for round in 0..ROUNDS {
        let raw1 = rate(RAW_COMMITS, rt.block_on(raw(&url, 1, RAW_COMMITS)));
        let w1 = rate(
            TRANSITIONS,
            rt.block_on(workers(&url, 1, TRANSITIONS, 1000 + round)),
        );
        let w4 = rate(
            TRANSITIONS,
            rt.block_on(workers(&url, 4, TRANSITIONS, 2000 + round)),
        );
        rows.push([raw1, w1, w4, w1 / raw1, w4 / w1]);
    }
    let q = |i: usize| quartiles(rows.iter().map(|r| r[i]).collect());
    println!("postgres interleaved: {ROUNDS} rounds; median (quartiles) over the rounds");
    for (what, i) in [
        ("raw commits, 1 client, per s", 0),
        ("step transitions, 1 worker, per s", 1),
        ("step transitions, 4 workers, per s", 2),
    ] {
        let (low, mid, high) = q(i);
        println!("  {what}: {mid:.0} ({low:.0}-{high:.0})");
    }
    for (what, i) in [
        ("1 worker / raw 1 client (target >= 0.8)", 3),
        ("4 workers / 1 worker (target >= 2)", 4),
    ] {
        let (low, mid, high) = q(i);
        println!("  {what}: {mid:.2} ({low:.2}-{high:.2})");
    }
    println!("postgres: load average {} at the end", load_average());
}

criterion_group!(benches, bench);

fn main() {
    interleaved();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
