//! Cores: what a second core adds to in-memory runs, against a floor that
//! shares as little as a saga engine can.
//!
//! Every saga has 10 no-op steps, each with a no-op compensation, and
//! completes. Each round measures, interleaved so that drift in the
//! machine's load touches all alike:
//!
//! - **sync, 1 and 2 threads**, each thread calling `run_blocking` in a
//!   loop for a fixed time: the *floor* (the same 10 boxed calls, one
//!   `Instant::now()` per step and a report `Vec` per saga, its step table
//!   shared by both threads), *one shared definition* (one `Saga` cloned
//!   into both threads, as a service holds it) and *one definition per
//!   thread*. Each kind's ratio is its 2-thread throughput over its
//!   1-thread throughput.
//! - **async on tokio's multi-thread runtime** (2 workers): 64 spawned
//!   tasks each running sagas in a loop, against one task doing the same;
//!   for the engine and for a floor of boxed futures.
//!
//! The figures are medians of per-round ratios. A round where the floor's
//! own 2-thread ratio is under 1.6 (the machine did not give the second
//! core) is printed and not counted. The CPU model and load average are
//! printed with the table; absolute figures are for reference only.
//!
//! Run: `cargo bench --bench scaling` (7 rounds of 300 ms per
//! measurement; `-- --rounds 11 --millis 500` to change them); quick
//! check: `cargo test --benches` (one short round, no targets).

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use saga_core::{BoxFuture, Saga, Step, StepError, StepInfo};
use tokio::runtime::Runtime;

mod support;
use support::{arg, cpu_model, load_average, median, verdict};

/// Steps per saga.
const STEPS: usize = 10;
/// Tasks in flight in the concurrent async measurement.
const IN_FLIGHT: usize = 64;
/// Rounds whose floor gains less than this from a second thread are not
/// counted.
const FLOOR_MIN: f64 = 1.6;

const NAMES: [&str; STEPS] = [
    "step_0", "step_1", "step_2", "step_3", "step_4", "step_5", "step_6", "step_7", "step_8",
    "step_9",
];

#[derive(Default)]
struct Ctx {
    _orders: u64,
}

// ---------------------------------------------------------------- the floor

type FloorStep = Box<dyn Fn(&mut Ctx) -> Result<(), StepError> + Send + Sync>;

/// The floor's step table, shared by every thread.
fn floor_table() -> Arc<[FloorStep]> {
    (0..STEPS)
        .map(|_| {
            Box::new(|ctx: &mut Ctx| {
                black_box(ctx);
                Ok(())
            }) as FloorStep
        })
        .collect()
}

/// One saga on the floor: each step through its box, one clock read per
/// step, and a report of (step, duration) pairs.
fn floor_run(table: &[FloorStep], ctx: &mut Ctx) -> Vec<(usize, Duration)> {
    let mut report = Vec::with_capacity(STEPS);
    let mut mark = Instant::now();
    for (index, step) in table.iter().enumerate() {
        let _ = step(ctx);
        let now = Instant::now();
        report.push((index, now - mark));
        mark = now;
    }
    report
}

type FloorFuture =
    Box<dyn for<'a> Fn(&'a mut Ctx) -> BoxFuture<'a, Result<(), StepError>> + Send + Sync>;

fn noop_future(ctx: &mut Ctx) -> BoxFuture<'_, Result<(), StepError>> {
    Box::pin(async move {
        black_box(ctx);
        Ok(())
    })
}

fn floor_async_table() -> Arc<[FloorFuture]> {
    (0..STEPS)
        .map(|_| Box::new(noop_future) as FloorFuture)
        .collect()
}

async fn floor_async_run(table: &[FloorFuture], ctx: &mut Ctx) -> Vec<(usize, Duration)> {
    let mut report = Vec::with_capacity(STEPS);
    let mut mark = Instant::now();
    for (index, step) in table.iter().enumerate() {
        let _ = step(ctx).await;
        let now = Instant::now();
        report.push((index, now - mark));
        mark = now;
    }
    report
}

// --------------------------------------------------------------- the engine

fn definition() -> Saga<Ctx> {
    let mut builder = Saga::builder("scaling");
    for name in NAMES {
        builder = builder.step(
            Step::new(name, |ctx: &mut Ctx, _: &StepInfo<'_>| {
                black_box(ctx);
                Ok::<_, StepError>(())
            })
            .undo(|ctx: &mut Ctx, _: Option<&()>, _: &StepInfo<'_>| {
                black_box(ctx);
                Ok::<_, StepError>(())
            }),
        );
    }
    builder.build().expect("a valid definition")
}

fn async_definition() -> Saga<Ctx> {
    let mut builder = Saga::builder("scaling_async");
    for name in NAMES {
        builder = builder.step(
            Step::new_async(name, |ctx: &mut Ctx, _: &StepInfo<'_>| {
                Box::pin(async move {
                    black_box(ctx);
                    Ok::<_, StepError>(())
                })
            })
            .undo(|ctx: &mut Ctx, _: Option<&()>, _: &StepInfo<'_>| {
                black_box(ctx);
                Ok::<_, StepError>(())
            }),
        );
    }
    builder.build().expect("a valid definition")
}

// ------------------------------------------------------------ measurement

/// Sagas per second of `threads` threads, each running `make()`'s loop
/// body until `window` has passed.
fn throughput<F, W>(threads: usize, window: Duration, make: F) -> f64
where
    F: Fn() -> W,
    W: FnMut() + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let mut work = make();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                let mut done = 0_u64;
                while start.elapsed() < window {
                    for _ in 0..64 {
                        work();
                    }
                    done += 64;
                }
                (done, start.elapsed())
            })
        })
        .collect();
    barrier.wait();
    handles
        .into_iter()
        .map(|h| {
            let (done, took) = h.join().expect("a measuring thread");
            done as f64 / took.as_secs_f64()
        })
        .sum()
}

/// Sagas per second of `tasks` tasks spawned on `rt`, each running
/// `run()` in a loop until `window` has passed.
fn async_throughput<F, Fut>(rt: &Runtime, tasks: usize, window: Duration, run: F) -> f64
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let run = Arc::new(run);
    rt.block_on(async move {
        let start = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let run = Arc::clone(&run);
                tokio::spawn(async move {
                    let mut done = 0_u64;
                    while start.elapsed() < window {
                        for _ in 0..16 {
                            run().await;
                        }
                        done += 16;
                    }
                    done
                })
            })
            .collect();
        let mut done = 0;
        for h in handles {
            done += h.await.expect("a measuring task");
        }
        done as f64 / start.elapsed().as_secs_f64()
    })
}

/// One round's ratios (2 threads over 1, 64 tasks over 1) and, for
/// reference, the 1-thread throughputs.
struct Round {
    floor: f64,
    shared: f64,
    own: f64,
    async_floor: f64,
    async_engine: f64,
    sync_one: [f64; 3],
}

fn round(window: Duration, rt: &Runtime) -> Round {
    let table = floor_table();
    let floor = |threads| {
        throughput(threads, window, || {
            let table = Arc::clone(&table);
            let mut ctx = Ctx::default();
            move || {
                black_box(floor_run(&table, &mut ctx));
            }
        })
    };
    let saga = definition();
    let shared = |threads| {
        throughput(threads, window, || {
            let saga = saga.clone();
            let mut ctx = Ctx::default();
            move || {
                let _ = black_box(saga.run_blocking(&mut ctx));
            }
        })
    };
    let own = |threads| {
        throughput(threads, window, || {
            let saga = definition();
            let mut ctx = Ctx::default();
            move || {
                let _ = black_box(saga.run_blocking(&mut ctx));
            }
        })
    };
    // Interleaved: 1 and 2 threads of each kind, kinds in turn.
    let (floor_1, shared_1, own_1) = (floor(1), shared(1), own(1));
    let (floor_2, shared_2, own_2) = (floor(2), shared(2), own(2));

    let async_table = floor_async_table();
    let async_floor = |tasks| {
        let table = Arc::clone(&async_table);
        async_throughput(rt, tasks, window, move || {
            let table = Arc::clone(&table);
            async move {
                let mut ctx = Ctx::default();
                black_box(floor_async_run(&table, &mut ctx).await);
            }
        })
    };
    let async_saga = async_definition();
    let async_engine = |tasks| {
        let saga = async_saga.clone();
        async_throughput(rt, tasks, window, move || {
            let saga = saga.clone();
            async move {
                let mut ctx = Ctx::default();
                let _ = black_box(saga.run(&mut ctx).await);
            }
        })
    };
    let (af_1, ae_1) = (async_floor(1), async_engine(1));
    let (af_n, ae_n) = (async_floor(IN_FLIGHT), async_engine(IN_FLIGHT));
    Round {
        floor: floor_2 / floor_1,
        shared: shared_2 / shared_1,
        own: own_2 / own_1,
        async_floor: af_n / af_1,
        async_engine: ae_n / ae_1,
        sync_one: [floor_1, shared_1, own_1],
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = if full {
        arg("--rounds").unwrap_or(7)
    } else {
        1
    };
    let window = Duration::from_millis(if full {
        arg("--millis").unwrap_or(300)
    } else {
        20
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    println!(
        "scaling: {} cores available, {}; load average {} at the start",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        load_average()
    );
    println!(
        "{:>5} {:>7} {:>7} {:>7} {:>9} {:>9}   {:>10} {:>10} {:>10}  counted",
        "round", "floor", "shared", "own", "floor64", "engine64", "floor/s", "shared/s", "own/s"
    );
    let mut counted = Vec::new();
    for n in 1..=rounds {
        let r = round(window, &rt);
        let counts = r.floor >= FLOOR_MIN;
        println!(
            "{n:>5} {:>6.2}x {:>6.2}x {:>6.2}x {:>8.2}x {:>8.2}x   {:>10.0} {:>10.0} {:>10.0}  {}",
            r.floor,
            r.shared,
            r.own,
            r.async_floor,
            r.async_engine,
            r.sync_one[0],
            r.sync_one[1],
            r.sync_one[2],
            if counts {
                "yes"
            } else {
                "no: floor under 1.6x"
            }
        );
        if counts {
            counted.push(r);
        }
    }
    println!("load average {} at the end", load_average());
    if !full {
        return;
    }
    if counted.is_empty() {
        println!("no round counted: the machine never gave the floor a second core");
        return;
    }
    let med = |f: fn(&Round) -> f64| median(counted.iter().map(f).collect());
    let (floor, shared, own) = (med(|r| r.floor), med(|r| r.shared), med(|r| r.own));
    let (async_floor, async_engine) = (med(|r| r.async_floor), med(|r| r.async_engine));
    // Per-round comparisons, then their medians.
    let shared_vs_floor = med(|r| r.shared / r.floor);
    let shared_vs_own = med(|r| r.shared - r.own);
    let async_vs_floor = med(|r| r.async_engine / r.async_floor);
    println!(
        "medians of {} counted rounds: floor {floor:.2}x, shared {shared:.2}x, own {own:.2}x; async 64 tasks: floor {async_floor:.2}x, engine {async_engine:.2}x",
        counted.len()
    );
    println!(
        "target: shared >= 0.9 x floor: {shared_vs_floor:.2} ({})",
        verdict(shared_vs_floor >= 0.9)
    );
    println!(
        "target: shared >= own - 0.05: {shared_vs_own:+.2} ({})",
        verdict(shared_vs_own >= -0.05)
    );
    println!(
        "target: async engine >= 0.9 x async floor: {async_vs_floor:.2} ({})",
        verdict(async_vs_floor >= 0.9)
    );
}
