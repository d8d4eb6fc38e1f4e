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
//! ...`), with the CPU model and load average and the cores the bench
//! process and the server kept busy while the workers ran: issue 17's targets are
//! 1 worker >= 0.8 x the 1-client raw commit rate, and 4 workers >= 2 x
//! 1 worker. Then criterion measures each alone.
//!
//! Without `SAGA_PG_URL` it starts `scripts/pg.sh`'s cluster. Both the
//! raw commits and the workers connect without TLS (`sslmode=disable`
//! unless the URL names an `sslmode`), so the floor and the engine pay
//! for the same transport. A step transition is one step run to its end:
//! the engine commits the step's start (with the previous step's end)
//! before running it, so each is one durable commit of the log unless
//! group commit merges them.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use saga_core::store::{PostgresOptions, PostgresStore};
use saga_core::{Context, Saga, SagaEngine, Step, StepError, StepInfo, Worker};
use support::{cpu_model, load_average, profile_spec, quartiles};
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

/// CPU time so far, in clock ticks (`/proc/<pid>/stat`'s user and system
/// times): this process's, and that of every process named `postgres`
/// (the server: its backends, WAL writer and the rest) with its reaped
/// children's.
fn cpu_ticks() -> (u64, u64) {
    let times = |stat: &str, children: bool| -> u64 {
        // The fields after the command's closing parenthesis: utime is
        // the 12th of them, stime the 13th, cutime and cstime follow.
        let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(4)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let take = if children { 4 } else { 2 };
        fields.iter().take(take).sum()
    };
    let own = std::fs::read_to_string("/proc/self/stat").map_or(0, |s| times(&s, false));
    let mut server = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if stat.contains("(postgres)") {
            server += times(&stat, true);
        }
    }
    (own, server)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if it cannot say).
fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// How a timed part went: its time, and the cores the bench process and
/// the server kept busy during it on average.
struct Timed {
    took: Duration,
    bench_cores: f64,
    server_cores: f64,
}

/// `url` with `sslmode=disable`, unless it names an `sslmode`.
fn plain(url: &str) -> String {
    if url.contains("sslmode=") {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}sslmode=disable")
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
async fn workers(url: &str, workers: usize, iters: u64, round: u64) -> Timed {
    // Without TLS, as the raw commits they are set against (the store
    // would take the server's offer of TLS otherwise, and pay for the
    // encryption on both sides).
    let url = &plain(url);
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
    let (own_before, server_before) = cpu_ticks();
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
    let (own_after, server_after) = cpu_ticks();
    let cores = |ticks: u64| ticks as f64 / ticks_per_second() / elapsed.as_secs_f64();
    for h in handles {
        h.shutdown(Duration::from_secs(5)).await;
    }
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    Timed {
        // Scaled to exactly `iters` transitions.
        took: elapsed.mul_f64(iters as f64 / (executions * STEPS) as f64),
        bench_cores: cores(own_after.saturating_sub(own_before)),
        server_cores: cores(server_after.saturating_sub(server_before)),
    }
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
                rt.block_on(workers(&url, n, iters, r)).took
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
    let mut rows: Vec<[f64; 9]> = Vec::new();
    for round in 0..ROUNDS {
        let raw1 = rate(RAW_COMMITS, rt.block_on(raw(&url, 1, RAW_COMMITS)));
        let w1 = rt.block_on(workers(&url, 1, TRANSITIONS, 1000 + round));
        let w4 = rt.block_on(workers(&url, 4, TRANSITIONS, 2000 + round));
        let (r1, r4) = (rate(TRANSITIONS, w1.took), rate(TRANSITIONS, w4.took));
        rows.push([
            raw1,
            r1,
            r4,
            r1 / raw1,
            r4 / r1,
            w1.bench_cores,
            w1.server_cores,
            w4.bench_cores,
            w4.server_cores,
        ]);
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
        ("cores busy, 1 worker: the bench", 5),
        ("cores busy, 1 worker: the server", 6),
        ("cores busy, 4 workers: the bench", 7),
        ("cores busy, 4 workers: the server", 8),
    ] {
        let (low, mid, high) = q(i);
        println!("  {what}: {mid:.2} ({low:.2}-{high:.2})");
    }
    println!("postgres: load average {} at the end", load_average());
}

/// `SAGA_PROFILE=<case>:<n>` runs one case and nothing else, for
/// `strace -f -c` or CPU time counts (`/usr/bin/time`, the server's
/// processes in `/proc`): `raw` (`<n>` 1-client commits), `workers_1`
/// and `workers_4` (`<n>` rounds of 2048 step transitions).
fn profile(spec: &str) {
    let (case, n) = profile_spec(spec);
    let url = url();
    let rt = Runtime::new().unwrap();
    let took = match case {
        "raw" => rt.block_on(raw(&url, 1, n)),
        "workers_1" | "workers_4" => {
            let w = if case == "workers_1" { 1 } else { 4 };
            (0..n)
                .map(|round| rt.block_on(workers(&url, w, 2048, 3000 + round)).took)
                .sum()
        }
        _ => panic!("SAGA_PROFILE: unknown case `{case}`"),
    };
    println!("{case}: {n} in {took:?}");
}

criterion_group!(benches, bench);

fn main() {
    if let Ok(spec) = std::env::var("SAGA_PROFILE") {
        profile(&spec);
        return;
    }
    interleaved();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
