//! Durable throughput on the SQLite store, next to its two floors measured
//! in the same run on the same machine: the same saga in memory, and the
//! raw SQLite commit rate on the same disk.
//!
//! - `memory_run`: the saga run by `Saga::run` with no engine and no store
//!   (the in-memory run of `benches/overhead.rs`, with this bench's
//!   context and durable outputs): what the steps and the executor cost;
//! - `memory_engine_sequential` / `memory_engine_concurrent_64`: the same
//!   runs as below through a `SagaEngine` on a `MemoryStore` (the journal,
//!   JSON encoding, leases and spawned tasks, without a disk);
//! - `raw_commit`: one row the size of a real event per transaction (WAL,
//!   `synchronous=FULL`), the floor any durable log pays per commit;
//! - `sequential`: one 10-step saga at a time on SQLite; a step transition
//!   ("step k succeeded" + "step k+1 started", or the last success + the
//!   end) is one commit, plus one commit per saga to create the execution;
//! - `concurrent_64`: 64 sagas at once on SQLite, sharing commits (group
//!   commit);
//! - `json_encode_context` / `json_decode_context`: what the JSON encoding
//!   of a context of about 200 bytes costs per event;
//! - in the interleaved rounds only: the engine on a `MemoryStore` with a
//!   context of about 20 KB, and `serde_json::to_vec` of both contexts,
//!   so that what a larger context adds per step can be set against what
//!   its encoding adds (issue 17's `t(20 KB) - t(200 B) <= 1.2 x
//!   (enc(20 KB) - enc(200 B))`), and beside it the same difference of
//!   `serde_json::to_vec` done as the log does it (11 encodings per saga
//!   of 10 steps, kept until the saga ends); and the engine on a `MemoryStore` on a
//!   current-thread runtime, where a run's task and the caller waiting for
//!   it share one thread, against the multi-thread runtime above, where
//!   each run is handed from the caller's thread to a worker and back; and
//!   the engine called from a task on the multi-thread runtime (as a
//!   service's handler calls it), with the sync steps above, each of which
//!   a durable run there hands over with `block_in_place` (src/gate.rs),
//!   and with the same steps async, which need no hand-over: the engine's
//!   own cost on that runtime.
//!
//! Throughput is in step transitions (10 per saga) or rows per second.
//! First, all of them are measured in alternation and their ratios printed
//! (`durable interleaved ...`); then criterion measures each.
//! Run: `cargo bench --bench durable`. Files go under
//! `target/bench-durable/` (on the disk the project is on).

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use saga_core::store::{MemoryStore, SqliteStore};
use saga_core::{Saga, SagaEngine, Step, StepError, StepInfo};
use serde::{Deserialize, Serialize};
use support::{cpu_model, load_average, profile_spec, quartiles};

const STEPS: usize = 10;
const CONCURRENT: usize = 64;
/// Sagas per round of the engine in memory, whose store is purged after
/// each round.
const MEMORY_ENGINE_SAGAS: u64 = 20;

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

/// The same context grown to about 20 KB of JSON (800 more items):
/// built once, then cloned (a clone costs a tenth of a build, and is
/// what a caller holding the order would pay).
fn big_order() -> Order {
    static BIG: std::sync::OnceLock<Order> = std::sync::OnceLock::new();
    BIG.get_or_init(|| {
        let mut order = order();
        order
            .items
            .extend((0..800).map(|i| (format!("sku-item-{i:06}"), i)));
        order
    })
    .clone()
}

/// The name of [`saga`]'s definition.
const SYNC: &str = "bench";
/// The name of [`async_saga`]'s definition.
const ASYNC: &str = "bench_async";

fn saga() -> Saga<Order> {
    let mut builder = Saga::builder(SYNC);
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

/// [`saga`] with async steps doing the same work, which a durable run on
/// a multi-thread runtime polls in place (no `block_in_place`).
fn async_saga() -> Saga<Order> {
    let mut builder = Saga::builder(ASYNC);
    for i in 0..STEPS {
        builder = builder.step(
            Step::new_async(format!("step_{i}"), |o: &mut Order, _: &StepInfo<'_>| {
                o.steps_done += 1;
                let out = u64::from(o.steps_done);
                Box::pin(async move { Ok::<_, StepError>(out) })
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

/// A runtime, an engine on a fresh SQLite store in `dir` and one on a
/// memory store, the saga registered on both.
fn engines_on(
    dir: &std::path::Path,
) -> (tokio::runtime::Runtime, Arc<SagaEngine>, Arc<SagaEngine>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (sqlite, memory) = rt.block_on(async {
        let sqlite = SqliteStore::open(dir.join("sagas.db")).expect("store");
        (
            registered(SagaEngine::new(sqlite)).await,
            registered(memory_engine()).await,
        )
    });
    (rt, sqlite, memory)
}

/// A current-thread runtime and an engine on a `MemoryStore` made on it.
fn current_thread_engine() -> (tokio::runtime::Runtime, Arc<SagaEngine>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let engine = rt.block_on(registered(memory_engine()));
    (rt, engine)
}

/// An engine on a fresh `MemoryStore` with no retention: its
/// [`purge`](SagaEngine::purge) deletes every finished execution, as a
/// service's retention does with old ones, so that a store in memory does
/// not grow round after round.
fn memory_engine() -> SagaEngine {
    SagaEngine::new(MemoryStore::new()).with_retention(Duration::ZERO)
}

/// `engine` with the sagas registered ([`saga`], [`async_saga`]).
async fn registered(engine: SagaEngine) -> Arc<SagaEngine> {
    engine.register(saga()).await.expect("register");
    engine.register(async_saga()).await.expect("register");
    Arc::new(engine)
}

/// How long `run` takes on `rt`.
fn timed(rt: &tokio::runtime::Runtime, run: impl Future<Output = ()>) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        run.await;
        start.elapsed()
    })
}

/// How long `run` takes as a task on `rt`'s workers, the way a service's
/// request handler runs it (the caller above is `block_on`'s thread,
/// outside the workers).
fn timed_in_task(
    rt: &tokio::runtime::Runtime,
    run: impl Future<Output = ()> + Send + 'static,
) -> Duration {
    rt.block_on(async {
        tokio::spawn(async {
            let start = Instant::now();
            run.await;
            start.elapsed()
        })
        .await
        .expect("join")
    })
}

/// Runs the saga `runs` times with `Saga::run`, in memory.
async fn run_in_memory(saga: &Saga<Order>, runs: u64) {
    for _ in 0..runs {
        let mut ctx = order();
        saga.run(&mut ctx).await.expect("run");
    }
}

/// Runs `sagas` sagas one after another, on contexts made at the call
/// (before a clock around the returned future starts).
fn run_sequential(engine: &SagaEngine, sagas: u64) -> impl Future<Output = ()> + '_ {
    run_sequential_on(engine, contexts(sagas, order))
}

/// Runs one saga after another, one on each of `contexts` (made before
/// the clock starts: the caller's context is not the engine's work).
async fn run_sequential_on(engine: &SagaEngine, contexts: Vec<Order>) {
    for ctx in contexts {
        let id = engine.start(SYNC, ctx).await.expect("start");
        engine.wait(&id).await.expect("wait");
    }
}

/// How long the engine in memory takes over `sagas` sagas on contexts
/// `ctx` makes, one after another, in rounds of [`MEMORY_ENGINE_SAGAS`]:
/// a round's contexts are made before its clock starts, and each saga's
/// execution is purged once it finished, on the clock (the purge frees the
/// contexts and outputs the store kept, as a store handing its bytes on to
/// a disk frees them at each write; and the heap does not grow).
fn memory_rounds(
    rt: &tokio::runtime::Runtime,
    engine: &SagaEngine,
    sagas: u64,
    ctx: fn() -> Order,
) -> Duration {
    let mut took = Duration::ZERO;
    let mut left = sagas;
    while left > 0 {
        let n = left.min(MEMORY_ENGINE_SAGAS);
        let batch = contexts(n, ctx);
        took += timed(rt, run_purging(engine, SYNC, batch));
        left -= n;
    }
    took
}

/// [`memory_rounds`] of the saga `name` from a task on `rt`'s workers
/// (see [`timed_in_task`]), on 200-byte contexts.
fn memory_rounds_in_task(
    rt: &tokio::runtime::Runtime,
    engine: &Arc<SagaEngine>,
    sagas: u64,
    name: &'static str,
) -> Duration {
    let mut took = Duration::ZERO;
    let mut left = sagas;
    while left > 0 {
        let n = left.min(MEMORY_ENGINE_SAGAS);
        let (engine, batch) = (Arc::clone(engine), contexts(n, order));
        took += timed_in_task(rt, async move {
            run_purging(&engine, name, batch).await;
        });
        left -= n;
    }
    took
}

/// Runs one saga `name` after another, one on each of `contexts`, purging
/// each once it finished.
async fn run_purging(engine: &SagaEngine, name: &str, contexts: Vec<Order>) {
    for ctx in contexts {
        let id = engine.start(name, ctx).await.expect("start");
        engine.wait(&id).await.expect("wait");
        engine.purge().await.expect("purge");
    }
}

/// `n` contexts that `ctx` makes.
fn contexts(n: u64, ctx: fn() -> Order) -> Vec<Order> {
    (0..n).map(|_| ctx()).collect()
}

/// Starts `CONCURRENT` sagas at once, on contexts made at the call, and
/// waits for them all.
fn run_concurrent(engine: &Arc<SagaEngine>) -> impl Future<Output = ()> + '_ {
    run_concurrent_on(engine, contexts(CONCURRENT as u64, order))
}

/// [`run_concurrent`] on the engine in memory, then its purge (timed, as
/// in [`memory_rounds`]).
fn memory_concurrent(engine: &Arc<SagaEngine>) -> impl Future<Output = ()> + '_ {
    let run = run_concurrent(engine);
    async move {
        run.await;
        engine.purge().await.expect("purge");
    }
}

/// Starts one saga on each of `contexts` at once and waits for them all.
async fn run_concurrent_on(engine: &Arc<SagaEngine>, contexts: Vec<Order>) {
    let starts: Vec<_> = contexts
        .into_iter()
        .map(|ctx| {
            let engine = Arc::clone(engine);
            tokio::spawn(async move { engine.start(SYNC, ctx).await })
        })
        .collect();
    let mut ids = Vec::with_capacity(starts.len());
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
    let (rt, engine, memory) = engines_on(&dir);
    let in_memory = saga();
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
    group.bench_function("memory_run", |b| {
        b.iter_custom(|iters| timed(&rt, run_in_memory(&in_memory, iters)));
    });
    group.bench_function("memory_engine_sequential", |b| {
        b.iter_custom(|iters| memory_rounds(&rt, &memory, iters, order));
    });
    group.bench_function("sequential", |b| {
        b.iter_custom(|iters| timed(&rt, run_sequential(&engine, iters)));
    });
    group.throughput(Throughput::Elements((STEPS * CONCURRENT) as u64));
    group.bench_function("memory_engine_concurrent_64", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| timed(&rt, memory_concurrent(&memory)))
                .sum()
        });
    });
    group.bench_function("concurrent_64", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| timed(&rt, run_concurrent(&engine)))
                .sum()
        });
    });
    group.finish();
}

/// Everything measured in alternation, round after round, on fresh files:
/// on a shared machine the load and the disk's fsync latency drift between
/// criterion's groups, so the ratios are taken within each round, the raw
/// commits timed just before and just after the sequential sagas (so a
/// drift within the round cancels out), and the ratios' median and
/// quartiles over the rounds are reported, with the rates'.
///
/// Every engine run is timed on contexts made before its clock starts
/// (making the caller's context is not the engine's work). The engine in
/// memory purges each execution once it finished, on the clock
/// ([`memory_rounds`]; 64 at once, once all 64 finished): a `MemoryStore`
/// keeps every event's context, so without a purge the heap grows by
/// about 220 KB per 20 KB saga, and each new 4 KB page costs a page fault
/// that a store handing its bytes on to a disk does not pay (it doubled
/// the 20 KB ratio below). A purge of a whole round at once was no
/// better: the allocator gave the freed megabytes back to the kernel, and
/// the next round faulted them in again.
fn interleaved() {
    const ROUNDS: usize = 31;
    const MEMORY_RUNS: u64 = 200;
    /// Twice this many raw commits per round: as many commits as the
    /// sequential sagas make (11 per saga: the creation, then one per step
    /// transition).
    const RAW_COMMITS: usize = 11;
    const SEQUENTIAL_SAGAS: u64 = 2;
    let dir = bench_dir();
    let conn = raw_table(&dir);
    let context = serde_json::to_string(&order()).expect("json");
    let (rt, engine, memory) = engines_on(&dir);
    // The same engine on a current-thread runtime: the run's task and its
    // waiter on one thread, with no hand-off between threads.
    let (ct, memory_ct) = current_thread_engine();
    let in_memory = saga();
    let mut seq = 0_i64;
    let mut raw_commits = |n: usize| {
        let start = Instant::now();
        for _ in 0..n {
            seq += 1;
            raw_commit_once(&conn, seq, &context);
        }
        start.elapsed()
    };
    // Step transitions (or commits) per second.
    let rate = |n: usize, took: Duration| n as f64 / took.as_secs_f64();
    // Nanoseconds per `serde_json::to_vec` of `ctx`, over `n` encodings.
    let encode = |ctx: &Order, n: u32| {
        let start = Instant::now();
        for _ in 0..n {
            std::hint::black_box(serde_json::to_vec(std::hint::black_box(ctx)).expect("json"));
        }
        start.elapsed().as_secs_f64() * 1e9 / f64::from(n)
    };
    // Nanoseconds per step of `serde_json::to_vec` of `ctx` as a log on a
    // `MemoryStore` holds it, over `sagas` sagas: 11 encodings a saga
    // (the creation's, then one per step), kept until the saga ends, per
    // 10 steps. Not issue 17's yardstick (`encode` above, whose buffer is
    // the same few cache lines every time) but the same bytes written
    // where the engine writes them.
    let encode_as_logged = |ctx: &Order, sagas: u32| {
        let start = Instant::now();
        let mut kept = Vec::with_capacity(STEPS + 1);
        for _ in 0..sagas {
            for _ in 0..=STEPS {
                kept.push(serde_json::to_vec(std::hint::black_box(ctx)).expect("json"));
            }
            std::hint::black_box(&kept);
            kept.clear();
        }
        start.elapsed().as_secs_f64() * 1e9 / f64::from(sagas) / STEPS as f64
    };
    let (small, big) = (order(), big_order());
    println!(
        "durable: {}; load average {} at the start; contexts of {} and {} bytes",
        cpu_model(),
        load_average(),
        serde_json::to_vec(&small).expect("json").len(),
        serde_json::to_vec(&big).expect("json").len()
    );
    let mut rows: Vec<[f64; 24]> = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let memory_run = rate(
            MEMORY_RUNS as usize * STEPS,
            timed(&rt, run_in_memory(&in_memory, MEMORY_RUNS)),
        );
        // The engine in memory: contexts made before its clock starts, its
        // purge timed (see `memory_rounds`).
        let sagas = MEMORY_ENGINE_SAGAS;
        let per_step = |took| rate(sagas as usize * STEPS, took);
        let memory_sequential = per_step(memory_rounds(&rt, &memory, sagas, order));
        let memory_concurrent = rate(CONCURRENT * STEPS, timed(&rt, memory_concurrent(&memory)));
        let enc_small = encode(&small, 2000);
        let memory_big = per_step(memory_rounds(&rt, &memory, sagas, big_order));
        let enc_big = encode(&big, 50);
        let task_small = per_step(memory_rounds_in_task(&rt, &memory, sagas, SYNC));
        let task_async = per_step(memory_rounds_in_task(&rt, &memory, sagas, ASYNC));
        let ct_small = per_step(memory_rounds(&ct, &memory_ct, sagas, order));
        let ct_big = per_step(memory_rounds(&ct, &memory_ct, sagas, big_order));
        let logged_small = encode_as_logged(&small, 200);
        let logged_big = encode_as_logged(&big, 5);
        // Nanoseconds per step.
        let (t_small, t_big) = (1e9 / memory_sequential, 1e9 / memory_big);
        let (ct_t_small, ct_t_big) = (1e9 / ct_small, 1e9 / ct_big);
        let before = raw_commits(RAW_COMMITS);
        let sequential = rate(
            SEQUENTIAL_SAGAS as usize * STEPS,
            timed(&rt, run_sequential(&engine, SEQUENTIAL_SAGAS)),
        );
        let after = raw_commits(RAW_COMMITS);
        let raw = rate(2 * RAW_COMMITS, before + after);
        let concurrent = rate(CONCURRENT * STEPS, timed(&rt, run_concurrent(&engine)));
        rows.push([
            memory_run,
            memory_sequential,
            memory_concurrent,
            raw,
            sequential,
            concurrent,
            sequential / raw,
            memory_run / sequential,
            memory_sequential / sequential,
            concurrent / sequential,
            memory_concurrent / concurrent,
            memory_big,
            enc_small,
            enc_big,
            (t_big - t_small) / (enc_big - enc_small),
            t_small / enc_small,
            ct_small,
            ct_big,
            (ct_t_big - ct_t_small) / (enc_big - enc_small),
            task_small,
            task_async,
            logged_small,
            logged_big,
            (ct_t_big - ct_t_small) / (logged_big - logged_small),
        ]);
    }
    let q = |i: usize| quartiles(rows.iter().map(|r| r[i]).collect());
    let show = |what: &str, i: usize, per_step: bool| {
        let (low, mid, high) = q(i);
        let step = if per_step {
            format!(", {:.2} us per step", 1e6 / mid)
        } else {
            String::new()
        };
        println!("  {what}: {mid:.0}/s ({low:.0}-{high:.0}){step}");
    };
    let ratio = |what: &str, i: usize| {
        let (low, mid, high) = q(i);
        println!("  {what}: {mid:.2} ({low:.2}-{high:.2})");
    };
    println!(
        "durable interleaved: {ROUNDS} rounds; median (quartiles) over the rounds; rates in step transitions/s, raw in commits/s"
    );
    show("in memory, Saga::run", 0, true);
    show("in memory, engine, sequential", 1, true);
    show("in memory, engine, 64 at once", 2, true);
    show("in memory, engine, sequential, 20 KB context", 11, true);
    let (low, mid, high) = q(12);
    println!("  serde_json::to_vec, 200 B context: {mid:.0} ns ({low:.0}-{high:.0})");
    let (low, mid, high) = q(13);
    println!("  serde_json::to_vec, 20 KB context: {mid:.0} ns ({low:.0}-{high:.0})");
    ratio(
        "engine in memory, (t(20 KB) - t(200 B)) / (enc(20 KB) - enc(200 B)), per step",
        14,
    );
    ratio("engine in memory, t(200 B) per step / enc(200 B)", 15);
    show(
        "in memory, engine, sequential, from a task on the runtime",
        19,
        true,
    );
    show(
        "in memory, engine, sequential, async steps, from a task on the runtime",
        20,
        true,
    );
    show(
        "in memory, engine, sequential, current-thread runtime",
        16,
        true,
    );
    show(
        "in memory, engine, sequential, 20 KB context, current-thread runtime",
        17,
        true,
    );
    ratio(
        "engine in memory, current-thread, (t(20 KB) - t(200 B)) / (enc(20 KB) - enc(200 B))",
        18,
    );
    let (low, mid, high) = q(21);
    println!(
        "  serde_json::to_vec kept as a log, 200 B context: {mid:.0} ns per step ({low:.0}-{high:.0})"
    );
    let (low, mid, high) = q(22);
    println!(
        "  serde_json::to_vec kept as a log, 20 KB context: {mid:.0} ns per step ({low:.0}-{high:.0})"
    );
    ratio(
        "engine in memory, current-thread, (t(20 KB) - t(200 B)) / the same of serde_json kept as a log",
        23,
    );
    show("raw SQLite commits", 3, false);
    show("SQLite, engine, sequential", 4, true);
    show("SQLite, engine, 64 at once", 5, true);
    ratio("SQLite sequential transitions per raw commit", 6);
    ratio(
        "SQLite sequential, times slower than Saga::run in memory",
        7,
    );
    ratio(
        "SQLite sequential, times slower than the engine in memory",
        8,
    );
    ratio("SQLite 64 at once, times sequential", 9);
    ratio(
        "SQLite 64 at once, times slower than the engine in memory 64 at once",
        10,
    );
    println!("durable: load average {} at the end", load_average());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = durable
}

/// `SAGA_PROFILE=<case>:<sagas>` runs one case that many times and
/// nothing else (the engine in memory in rounds, as the interleaved bench
/// runs it), for `valgrind --tool=callgrind` (instruction counts) or
/// `strace -f -c` (fsyncs and writes per step). Cases: `memory_engine`
/// (one saga at a time on a `MemoryStore`, 200-byte context),
/// `memory_engine_20k` (the same with a 20 KB context),
/// `memory_engine_ct` (the first on a current-thread runtime),
/// `memory_engine_ct_20k` (the second on a current-thread runtime),
/// `memory_engine_task` (the first from a task on the multi-thread
/// runtime, its sync steps handed over with `block_in_place`),
/// `memory_engine_task_async` (the same with async steps), `sqlite`
/// (one at a time on SQLite), `sqlite_64` (64 at once on SQLite,
/// `<sagas>` rounds of 64), `raw` (`<sagas>` x 11 raw commits).
fn profile(spec: &str) {
    let (case, runs) = profile_spec(spec);
    let dir = bench_dir();
    let (rt, engine, memory) = engines_on(&dir);
    match case {
        "memory_engine" => {
            memory_rounds(&rt, &memory, runs, order);
        }
        "memory_engine_20k" => {
            memory_rounds(&rt, &memory, runs, big_order);
        }
        "memory_engine_ct" => {
            let (ct, memory_ct) = current_thread_engine();
            memory_rounds(&ct, &memory_ct, runs, order);
        }
        "memory_engine_ct_20k" => {
            let (ct, memory_ct) = current_thread_engine();
            memory_rounds(&ct, &memory_ct, runs, big_order);
        }
        "memory_engine_task" => {
            memory_rounds_in_task(&rt, &memory, runs, SYNC);
        }
        "memory_engine_task_async" => {
            memory_rounds_in_task(&rt, &memory, runs, ASYNC);
        }
        "sqlite" => rt.block_on(run_sequential(&engine, runs)),
        "sqlite_64" => rt.block_on(async {
            for _ in 0..runs {
                run_concurrent(&engine).await;
            }
        }),
        "raw" => {
            let conn = raw_table(&dir);
            let context = serde_json::to_string(&order()).expect("json");
            for seq in 0..runs as i64 * 11 {
                raw_commit_once(&conn, seq, &context);
            }
        }
        _ => panic!("SAGA_PROFILE: unknown case `{case}`"),
    }
}

fn main() {
    if let Ok(spec) = std::env::var("SAGA_PROFILE") {
        profile(&spec);
        return;
    }
    interleaved();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
