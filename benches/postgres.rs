//! Step transitions per second on PostgreSQL with 1 and 4 workers (16
//! executions in flight each), next to raw single-row `INSERT` commits per
//! second from 1 and 4 clients on the same server, in the same run.
//!
//! ```text
//! SAGA_PG_URL=$(scripts/pg.sh start) cargo bench --features postgres --bench postgres
//! ```
//!
//! First, the raw commits of 1 and 4 clients and the runs of 1 and 4
//! workers are measured in alternation, round after round, and the medians (and
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
async fn workers(url: &str, workers: usize, iters: u64, round: u64, counting: bool) -> Timed {
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
    if workers == 0 {
        // `SAGA_PROFILE=submit`: the submissions alone, to subtract.
        drop(submitter);
        let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
        return Timed {
            took: Duration::ZERO,
            bench_cores: 0.0,
            server_cores: 0.0,
        };
    }
    let mut engines = Vec::new();
    for _ in 0..workers {
        let engine = SagaEngine::new(PostgresStore::connect_with(url, opts()).await.unwrap());
        engine.register(saga()).await.unwrap();
        engines.push(engine);
    }
    // The client that watches for the end: connected, and its query
    // prepared, before the clock starts (a new backend's start and a
    // query planned anew every 2 ms would count as the server's work).
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let unfinished = client
        .prepare(&format!(
            "SELECT count(*) FROM {schema}.executions WHERE status NOT IN ('completed', 'compensated')"
        ))
        .await
        .unwrap();
    let before = match counting {
        true => {
            // The submitter's backend ends, and reports its counts, first.
            drop(submitter);
            tokio::time::sleep(Duration::from_millis(300)).await;
            Some(Counts::read(&client).await)
        }
        false => None,
    };
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
    let mut polls = 1;
    while client
        .query_one(&unfinished, &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
        > 0
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
        polls += 1;
    }
    let elapsed = start.elapsed();
    let (own_after, server_after) = cpu_ticks();
    let cores = |ticks: u64| ticks as f64 / ticks_per_second() / elapsed.as_secs_f64();
    for h in handles {
        h.shutdown(Duration::from_secs(5)).await;
    }
    if let Some(before) = before {
        // The workers' backends end, and report their counts (a backend
        // reports at most once a second while it lives).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = Counts::read(&client).await;
        after.print_per(&before, executions * STEPS, polls);
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

/// The server's counters (`SAGA_PROFILE` only): commits, WAL flushes and
/// writes, and, with `pg_stat_statements`, statements by kind.
struct Counts {
    commits: i64,
    wal_syncs: i64,
    wal_writes: i64,
    wal_records: i64,
    wal_bytes: f64,
    /// `(what, calls)`; empty without `pg_stat_statements`.
    statements: Vec<(String, i64)>,
}

impl Counts {
    async fn read(client: &tokio_postgres::Client) -> Counts {
        let db = client
            .query_one(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
                &[],
            )
            .await
            .unwrap();
        let wal = client
            .query_one(
                "SELECT wal_sync, wal_write, wal_records, wal_bytes::float8 FROM pg_stat_wal",
                &[],
            )
            .await
            .unwrap();
        // Statements of the store, by their first words; the bench's own
        // (its schema's name is in them) and the catalog's left out.
        let statements = client
            .query(
                "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 60), sum(calls)::int8
                 FROM pg_stat_statements
                 WHERE query NOT LIKE '%bench\\_%' AND query NOT LIKE '%pg\\_stat%'
                 GROUP BY 1",
                &[],
            )
            .await
            .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
            .unwrap_or_default();
        Counts {
            commits: db.get(0),
            wal_syncs: wal.get(0),
            wal_writes: wal.get(1),
            wal_records: wal.get(2),
            wal_bytes: wal.get(3),
            statements,
        }
    }

    /// Prints the counts since `before`, per step transition; `polls`
    /// (the bench's own queries, each a commit) left out.
    fn print_per(&self, before: &Counts, transitions: u64, polls: i64) {
        let per = |n: i64| n as f64 / transitions as f64;
        println!(
            "  per transition: {:.3} commits, {:.3} WAL flushes (fdatasync), {:.3} WAL writes, {:.2} WAL records, {:.0} WAL bytes",
            per(self.commits - before.commits - polls),
            per(self.wal_syncs - before.wal_syncs),
            per(self.wal_writes - before.wal_writes),
            per(self.wal_records - before.wal_records),
            (self.wal_bytes - before.wal_bytes) / transitions as f64,
        );
        let mut total = 0;
        for (what, calls) in &self.statements {
            let was = before
                .statements
                .iter()
                .find(|(w, _)| w == what)
                .map_or(0, |(_, c)| *c);
            if calls - was > 0 {
                total += calls - was;
                println!("    {:.3} x {what}", per(calls - was));
            }
        }
        if total > 0 {
            println!("  per transition: {:.3} statements in all", per(total));
        }
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
                rt.block_on(workers(&url, n, iters, r, false)).took
            });
        });
    }
    group.finish();
}

/// Raw 1-client and 4-client commits, 1 worker and 4 workers in
/// alternation, `ROUNDS` times: the ratios are taken within each round
/// (the server and the disk drift between rounds on a shared machine),
/// then their medians. The raw 4-client / 1-client ratio is what the
/// machine itself gives for the same step, next to 4 workers / 1 worker.
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
    // CPU time per transition, in ms, of `cores` kept busy for `took`.
    let per = |cores: f64, took: Duration| cores * took.as_secs_f64() * 1000.0 / TRANSITIONS as f64;
    let mut rows: Vec<[f64; 14]> = Vec::new();
    for round in 0..ROUNDS {
        let raw1 = rate(RAW_COMMITS, rt.block_on(raw(&url, 1, RAW_COMMITS)));
        let raw4 = rate(RAW_COMMITS, rt.block_on(raw(&url, 4, RAW_COMMITS)));
        let w1 = rt.block_on(workers(&url, 1, TRANSITIONS, 1000 + round, false));
        let w4 = rt.block_on(workers(&url, 4, TRANSITIONS, 2000 + round, false));
        let (r1, r4) = (rate(TRANSITIONS, w1.took), rate(TRANSITIONS, w4.took));
        rows.push([
            raw1,
            raw4,
            r1,
            r4,
            r1 / raw1,
            r4 / r1,
            raw4 / raw1,
            w1.bench_cores,
            w1.server_cores,
            w4.bench_cores,
            w4.server_cores,
            per(w1.bench_cores, w1.took),
            per(w1.server_cores, w1.took),
            per(w4.server_cores, w4.took),
        ]);
    }
    let q = |i: usize| quartiles(rows.iter().map(|r| r[i]).collect());
    println!("postgres interleaved: {ROUNDS} rounds; median (quartiles) over the rounds");
    for (what, i) in [
        ("raw commits, 1 client, per s", 0),
        ("raw commits, 4 clients, per s", 1),
        ("step transitions, 1 worker, per s", 2),
        ("step transitions, 4 workers, per s", 3),
    ] {
        let (low, mid, high) = q(i);
        println!("  {what}: {mid:.0} ({low:.0}-{high:.0})");
    }
    for (what, i) in [
        ("1 worker / raw 1 client (target >= 0.8)", 4),
        ("4 workers / 1 worker (target >= 2)", 5),
        ("raw 4 clients / raw 1 client (the machine's own)", 6),
        ("cores busy, 1 worker: the bench", 7),
        ("cores busy, 1 worker: the server", 8),
        ("cores busy, 4 workers: the bench", 9),
        ("cores busy, 4 workers: the server", 10),
        ("CPU ms per transition, 1 worker: the bench", 11),
        ("CPU ms per transition, 1 worker: the server", 12),
        ("CPU ms per transition, 4 workers: the server", 13),
    ] {
        let (low, mid, high) = q(i);
        println!("  {what}: {mid:.3} ({low:.3}-{high:.3})");
    }
    println!("postgres: load average {} at the end", load_average());
}

/// `SAGA_PROFILE=<case>:<n>` runs one case and nothing else, for
/// `strace -f -c` or CPU time counts (`/usr/bin/time`, the server's
/// processes in `/proc`): `raw` (`<n>` 1-client commits), `submit`
/// (`<n>` rounds of the executions' submissions alone, to subtract from
/// the next two), `workers_1` and `workers_4` (`<n>` rounds of 2048 step
/// transitions, each after its submissions; each round
/// also prints the server's commits, WAL flushes and, with
/// `pg_stat_statements` loaded and created, statements per transition).
fn profile(spec: &str) {
    let (case, n) = profile_spec(spec);
    let url = url();
    let rt = Runtime::new().unwrap();
    let took = match case {
        "raw" => rt.block_on(raw(&url, 1, n)),
        "workers_1" | "workers_4" | "submit" => {
            let w = match case {
                "workers_1" => 1,
                "workers_4" => 4,
                _ => 0,
            };
            (0..n)
                .map(|round| rt.block_on(workers(&url, w, 2048, 3000 + round, true)).took)
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
