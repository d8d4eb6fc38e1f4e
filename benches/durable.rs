//! Durable throughput on the SQLite store, next to the raw SQLite commit
//! rate measured in the same run on the same disk:
//!
//! - `raw_commit`: one row the size of a real event per transaction (WAL,
//!   `synchronous=FULL`), the floor any durable log pays per commit;
//! - `sequential`: one 10-step saga at a time; a step transition ("step k
//!   succeeded" + "step k+1 started", or the last success + the end) is one
//!   commit, plus one commit per saga to create the execution;
//! - `concurrent_64`: 64 sagas at once, sharing commits (group commit);
//! - `json_encode_context` / `json_decode_context`: what the JSON encoding
//!   of a context of about 200 bytes costs per event.
//!
//! Throughput is in step transitions (10 per saga) or rows per second.
//! First, the three are measured in alternation and their ratios printed
//! (`durable interleaved ...`); then criterion measures each.
//! Run: `cargo bench --bench durable`. Files go under
//! `target/bench-durable/` (on the disk the project is on).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use saga_core::store::SqliteStore;
use saga_core::{Saga, SagaEngine, Step, StepError, StepInfo};
use serde::{Deserialize, Serialize};

const STEPS: usize = 10;
const CONCURRENT: usize = 64;

/// A context of a realistic size (about 200 bytes of JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    order_id: String,
    customer: String,
    items: Vec<(String, u32)>,
    total_cents: u64,
    steps_done: u32,
}

fn order() -> Order {
    Order {
        order_id: "order-000000000042".to_owned(),
        customer: "customer-7f3a9c21@example.com".to_owned(),
        items: vec![
            ("sku-book-0001".to_owned(), 2),
            ("sku-pen-0042".to_owned(), 10),
            ("sku-lamp-0777".to_owned(), 1),
        ],
        total_cents: 12_345,
        steps_done: 0,
    }
}

fn saga() -> Saga<Order> {
    let mut builder = Saga::builder("bench");
    for i in 0..STEPS {
        builder = builder.step(
            Step::new(format!("step_{i}"), |o: &mut Order, _: &StepInfo<'_>| {
                o.steps_done += 1;
                Ok::<_, StepError>(u64::from(o.steps_done))
            })
            .durable(),
        );
    }
    builder.build().expect("a valid saga")
}

fn bench_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-durable");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// A table shaped like the store's events, in its own file, configured as
/// the store configures its file.
fn raw_table(dir: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(dir.join("raw.db")).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("sync");
    conn.execute_batch(
        "CREATE TABLE events (execution_id TEXT, seq INTEGER, kind TEXT, output TEXT,
            context TEXT, PRIMARY KEY (execution_id, seq)) WITHOUT ROWID",
    )
    .expect("schema");
    conn
}

/// One transaction of one event-sized row.
fn raw_commit_once(conn: &rusqlite::Connection, seq: i64, context: &str) {
    let tx = conn.unchecked_transaction().expect("begin");
    tx.execute(
        "INSERT INTO events VALUES ('0123456789abcdef0123456789abcdef', ?1, 'step_succeeded', '7', ?2)",
        rusqlite::params![seq, context],
    )
    .expect("insert");
    tx.commit().expect("commit");
}

/// A runtime and an engine on a fresh store in `dir`, the saga registered.
fn engine_on(dir: &std::path::Path) -> (tokio::runtime::Runtime, Arc<SagaEngine>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let engine = rt.block_on(async {
        let engine = SagaEngine::new(SqliteStore::open(dir.join("sagas.db")).expect("store"));
        engine.register(saga()).await.expect("register");
        Arc::new(engine)
    });
    (rt, engine)
}

/// Runs `sagas` sagas one after another.
async fn run_sequential(engine: &SagaEngine, sagas: u64) {
    for _ in 0..sagas {
        let id = engine.start("bench", order()).await.expect("start");
        engine.wait(&id).await.expect("wait");
    }
}

/// Starts `CONCURRENT` sagas at once and waits for them all.
async fn run_concurrent(engine: &Arc<SagaEngine>) {
    let starts: Vec<_> = (0..CONCURRENT)
        .map(|_| {
            let engine = Arc::clone(engine);
            tokio::spawn(async move { engine.start("bench", order()).await })
        })
        .collect();
    let mut ids = Vec::with_capacity(CONCURRENT);
    for start in starts {
        ids.push(start.await.expect("join").expect("start"));
    }
    for id in &ids {
        engine.wait(id).await.expect("wait");
    }
}

fn durable(c: &mut Criterion) {
    let dir = bench_dir();
    let conn = raw_table(&dir);
    let context = serde_json::to_string(&order()).expect("json");
    let mut seq = 0_i64;
    let (rt, engine) = engine_on(&dir);
    let mut group = c.benchmark_group("durable");
    group.throughput(Throughput::Elements(1));
    // What JSON costs per event: the context encoded at each step's end,
    // and decoded once per recovery.
    let sample = order();
    group.bench_function("json_encode_context", |b| {
        b.iter(|| serde_json::to_string(std::hint::black_box(&sample)).expect("json"));
    });
    group.bench_function("json_decode_context", |b| {
        b.iter(|| serde_json::from_str::<Order>(std::hint::black_box(&context)).expect("json"));
    });
    group.bench_function("raw_commit", |b| {
        b.iter(|| {
            seq += 1;
            raw_commit_once(&conn, seq, &context);
        });
    });
    group.throughput(Throughput::Elements(STEPS as u64));
    group.bench_function("sequential", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                run_sequential(&engine, iters).await;
                start.elapsed()
            })
        });
    });
    group.throughput(Throughput::Elements((STEPS * CONCURRENT) as u64));
    group.bench_function("concurrent_64", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    run_concurrent(&engine).await;
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

/// The three measured in alternation, round after round, on fresh files:
/// on a shared machine the disk's fsync latency drifts between criterion's
/// groups, so the ratios are taken within each round and their median is
/// reported (with the median rates).
fn interleaved() {
    const ROUNDS: usize = 15;
    const RAW_COMMITS: usize = 50;
    const SEQUENTIAL_SAGAS: u64 = 5;
    let dir = bench_dir();
    let conn = raw_table(&dir);
    let context = serde_json::to_string(&order()).expect("json");
    let (rt, engine) = engine_on(&dir);
    let mut seq = 0_i64;
    let (mut raw, mut sequential, mut concurrent) = (Vec::new(), Vec::new(), Vec::new());
    let (mut seq_ratio, mut conc_ratio) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for _ in 0..RAW_COMMITS {
            seq += 1;
            raw_commit_once(&conn, seq, &context);
        }
        let r = RAW_COMMITS as f64 / start.elapsed().as_secs_f64();
        let start = Instant::now();
        rt.block_on(run_sequential(&engine, SEQUENTIAL_SAGAS));
        let s = (SEQUENTIAL_SAGAS as usize * STEPS) as f64 / start.elapsed().as_secs_f64();
        let start = Instant::now();
        rt.block_on(run_concurrent(&engine));
        let c = (CONCURRENT * STEPS) as f64 / start.elapsed().as_secs_f64();
        raw.push(r);
        sequential.push(s);
        concurrent.push(c);
        seq_ratio.push(s / r);
        conc_ratio.push(c / s);
    }
    println!(
        "durable interleaved ({ROUNDS} rounds, medians): raw commits {:.0}/s; sequential {:.0} step transitions/s ({:.2} of raw); 64 concurrent {:.0} step transitions/s ({:.1}x sequential)",
        median(&mut raw),
        median(&mut sequential),
        median(&mut seq_ratio),
        median(&mut concurrent),
        median(&mut conc_ratio),
    );
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = durable
}

fn main() {
    interleaved();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
