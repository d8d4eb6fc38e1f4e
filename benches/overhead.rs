//! Engine overhead against a floor measured in the same run.
//!
//! Every saga here has 10 no-op steps, each with a no-op compensation. The
//! happy path runs the 10 steps; the failure path fails at the last step and
//! runs the 9 compensations. The floor is the least any engine must do for
//! the same work: call each step (and compensation) through a boxed trait
//! object (sync) or a boxed future (async), and read the clock once per call
//! as a report with durations needs. The engine's overhead is its time minus
//! the floor's; `--paired` prints both per step and their ratio.
//!
//! Run: `cargo bench --bench overhead -- --rounds 7` (issue #17's item 2:
//! per round, every case against its floor in alternating batches; the
//! median of the per-round ratios, the failing case against the happy
//! one, the CPU and the load printed with them), `cargo bench --bench
//! overhead` (criterion's statistics), or `cargo bench --bench overhead
//! -- --paired` (one table of per-step figures from alternating batches);
//! quick check: `cargo test --benches`. For instruction counts, see
//! [`profile`] and `benches/callgrind.sh`.

use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use saga_core::{BoxFuture, Saga, SagaError, Step, StepError, StepInfo, saga, saga_task};
use tokio::runtime::Runtime;

mod support;
use support::{arg, cpu_model, load_average, median, profile_spec, verdict};

/// Steps per saga.
const STEPS: usize = 10;
/// Sagas run at once in the concurrent benchmarks.
const CONCURRENT: usize = 64;
/// The last step's error, the same for the engine and the floor.
const DECLINED: &str = "declined";

/// The user's context: the steps leave it alone.
#[derive(Default)]
struct Ctx {
    _orders: u64,
}

/// Which step fails, if any: the last one, or none.
#[derive(Clone, Copy)]
enum Path {
    Happy,
    Fail,
}

impl Path {
    fn label(self) -> &'static str {
        match self {
            Path::Happy => "happy",
            Path::Fail => "fail",
        }
    }

    fn fails(self, index: usize) -> bool {
        matches!(self, Path::Fail) && index == STEPS - 1
    }
}

const NAMES: [&str; STEPS] = [
    "step_0", "step_1", "step_2", "step_3", "step_4", "step_5", "step_6", "step_7", "step_8",
    "step_9",
];

// ---------------------------------------------------------------- the floor

/// A step called directly: the floor's boxed trait object.
trait Direct: Send + Sync {
    fn run(&self, ctx: &mut Ctx) -> Result<(), StepError>;
    fn undo(&self, ctx: &mut Ctx) -> Result<(), StepError>;
}

struct NoopStep {
    fails: bool,
}

impl Direct for NoopStep {
    fn run(&self, ctx: &mut Ctx) -> Result<(), StepError> {
        black_box(ctx);
        if self.fails {
            return Err(StepError::new(DECLINED));
        }
        Ok(())
    }

    fn undo(&self, ctx: &mut Ctx) -> Result<(), StepError> {
        black_box(ctx);
        Ok(())
    }
}

fn direct_steps(path: Path) -> Vec<Box<dyn Direct>> {
    (0..STEPS)
        .map(|i| {
            Box::new(NoopStep {
                fails: path.fails(i),
            }) as Box<dyn Direct>
        })
        .collect()
}

/// The sync floor: each step through its trait object, one clock read per
/// call, and the compensations in reverse after a failure.
fn floor_sync(steps: &[Box<dyn Direct>], ctx: &mut Ctx) -> Result<Instant, StepError> {
    let mut mark = Instant::now();
    for (index, step) in steps.iter().enumerate() {
        let result = step.run(ctx);
        mark = Instant::now();
        if let Err(error) = result {
            for undo in steps[..index].iter().rev() {
                let _ = undo.undo(ctx);
                mark = Instant::now();
            }
            black_box(mark);
            return Err(error);
        }
    }
    Ok(mark)
}

type DirectAsync =
    dyn for<'a> Fn(&'a mut Ctx) -> BoxFuture<'a, Result<(), StepError>> + Send + Sync;

/// An async step and its compensation, each returning a boxed future.
struct AsyncPair {
    run: Box<DirectAsync>,
    undo: Box<DirectAsync>,
}

fn boxed<F>(f: F) -> Box<DirectAsync>
where
    F: for<'a> Fn(&'a mut Ctx) -> BoxFuture<'a, Result<(), StepError>> + Send + Sync + 'static,
{
    Box::new(f)
}

fn direct_async_steps(path: Path) -> Vec<AsyncPair> {
    (0..STEPS)
        .map(|i| {
            let fails = path.fails(i);
            AsyncPair {
                run: boxed(move |ctx| {
                    Box::pin(async move {
                        black_box(ctx);
                        if fails {
                            return Err(StepError::new(DECLINED));
                        }
                        Ok(())
                    })
                }),
                undo: boxed(|ctx| {
                    Box::pin(async move {
                        black_box(ctx);
                        Ok(())
                    })
                }),
            }
        })
        .collect()
}

/// The async floor: each step's boxed future awaited in turn, one clock
/// read per call.
async fn floor_async(steps: &[AsyncPair], ctx: &mut Ctx) -> Result<Instant, StepError> {
    let mut mark = Instant::now();
    for (index, step) in steps.iter().enumerate() {
        let result = (step.run)(ctx).await;
        mark = Instant::now();
        if let Err(error) = result {
            for pair in steps[..index].iter().rev() {
                let _ = (pair.undo)(ctx).await;
                mark = Instant::now();
            }
            black_box(mark);
            return Err(error);
        }
    }
    Ok(mark)
}

// --------------------------------------------------------------- the engine

fn builder_sync(path: Path) -> Saga<Ctx> {
    let mut builder = Saga::builder("bench");
    for (i, name) in NAMES.into_iter().enumerate() {
        let fails = path.fails(i);
        builder = builder.step(
            Step::new(name, move |ctx: &mut Ctx, _: &StepInfo<'_>| {
                black_box(ctx);
                if fails {
                    return Err(StepError::new(DECLINED));
                }
                Ok(())
            })
            .undo(|ctx: &mut Ctx, _: Option<&()>, _: &StepInfo<'_>| {
                black_box(ctx);
                Ok::<_, StepError>(())
            }),
        );
    }
    match builder.build() {
        Ok(saga) => saga,
        Err(e) => panic!("the benchmark saga is valid: {e}"),
    }
}

fn builder_async(path: Path) -> Saga<Ctx> {
    let mut builder = Saga::builder("bench");
    for (i, name) in NAMES.into_iter().enumerate() {
        let fails = path.fails(i);
        builder = builder.step(
            Step::new_async(name, move |ctx: &mut Ctx, _: &StepInfo<'_>| {
                Box::pin(async move {
                    black_box(ctx);
                    if fails {
                        return Err(StepError::new(DECLINED));
                    }
                    Ok(())
                })
            })
            .undo_async(|ctx: &mut Ctx, _: Option<&()>, _: &StepInfo<'_>| {
                Box::pin(async move {
                    black_box(ctx);
                    Ok::<_, StepError>(())
                })
            }),
        );
    }
    match builder.build() {
        Ok(saga) => saga,
        Err(e) => panic!("the benchmark saga is valid: {e}"),
    }
}

// The same sagas declared with `saga!`: one no-op task under ten names,
// the last one failing on the failure path.

#[saga_task]
fn noop(ctx: &mut Ctx) -> Result<(), StepError> {
    black_box(ctx);
    Ok(())
}

#[saga_task]
fn declined(ctx: &mut Ctx) -> Result<(), StepError> {
    black_box(ctx);
    Err(StepError::new(DECLINED))
}

#[saga_task]
fn undo(ctx: &mut Ctx, _: Option<&()>) -> Result<(), StepError> {
    black_box(ctx);
    Ok(())
}

#[saga_task]
async fn noop_async(ctx: &mut Ctx) -> Result<(), StepError> {
    black_box(ctx);
    Ok(())
}

#[saga_task]
async fn declined_async(ctx: &mut Ctx) -> Result<(), StepError> {
    black_box(ctx);
    Err(StepError::new(DECLINED))
}

#[saga_task]
async fn undo_async(ctx: &mut Ctx, _: Option<&()>) -> Result<(), StepError> {
    black_box(ctx);
    Ok(())
}

fn macro_sync(path: Path) -> Saga<Ctx> {
    match path {
        Path::Happy => saga! {
            name: "bench",
            context: Ctx,
            step noop => undo undo, name "step_0";
            step noop => undo undo, name "step_1";
            step noop => undo undo, name "step_2";
            step noop => undo undo, name "step_3";
            step noop => undo undo, name "step_4";
            step noop => undo undo, name "step_5";
            step noop => undo undo, name "step_6";
            step noop => undo undo, name "step_7";
            step noop => undo undo, name "step_8";
            step noop => undo undo, name "step_9";
        },
        Path::Fail => saga! {
            name: "bench",
            context: Ctx,
            step noop => undo undo, name "step_0";
            step noop => undo undo, name "step_1";
            step noop => undo undo, name "step_2";
            step noop => undo undo, name "step_3";
            step noop => undo undo, name "step_4";
            step noop => undo undo, name "step_5";
            step noop => undo undo, name "step_6";
            step noop => undo undo, name "step_7";
            step noop => undo undo, name "step_8";
            step declined => undo undo, name "step_9";
        },
    }
}

fn macro_async(path: Path) -> Saga<Ctx> {
    match path {
        Path::Happy => saga! {
            name: "bench",
            context: Ctx,
            step noop_async => undo undo_async, name "step_0";
            step noop_async => undo undo_async, name "step_1";
            step noop_async => undo undo_async, name "step_2";
            step noop_async => undo undo_async, name "step_3";
            step noop_async => undo undo_async, name "step_4";
            step noop_async => undo undo_async, name "step_5";
            step noop_async => undo undo_async, name "step_6";
            step noop_async => undo undo_async, name "step_7";
            step noop_async => undo undo_async, name "step_8";
            step noop_async => undo undo_async, name "step_9";
        },
        Path::Fail => saga! {
            name: "bench",
            context: Ctx,
            step noop_async => undo undo_async, name "step_0";
            step noop_async => undo undo_async, name "step_1";
            step noop_async => undo undo_async, name "step_2";
            step noop_async => undo undo_async, name "step_3";
            step noop_async => undo undo_async, name "step_4";
            step noop_async => undo undo_async, name "step_5";
            step noop_async => undo undo_async, name "step_6";
            step noop_async => undo undo_async, name "step_7";
            step noop_async => undo undo_async, name "step_8";
            step declined_async => undo undo_async, name "step_9";
        },
    }
}

/// Checks that a run ended as its path says, so a benchmark never times a
/// run that went another way.
fn check<T>(path: Path, result: Result<T, SagaError>) {
    match (path, result) {
        (Path::Happy, Ok(_)) | (Path::Fail, Err(SagaError::Compensated { .. })) => {}
        (Path::Happy, Err(e)) => panic!("the happy path failed: {e}"),
        (Path::Fail, Ok(_)) => panic!("the failure path succeeded"),
        (Path::Fail, Err(e)) => panic!("the failure path did not compensate: {e}"),
    }
}

fn check_floor<T>(path: Path, result: Result<T, StepError>) {
    match (path, result) {
        (Path::Happy, Ok(_)) | (Path::Fail, Err(_)) => {}
        (Path::Happy, Err(e)) => panic!("the happy floor failed: {e}"),
        (Path::Fail, Ok(_)) => panic!("the failing floor succeeded"),
    }
}

// ------------------------------------------------------------ the benchmarks

fn current_thread() -> Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("cannot start a tokio runtime: {e}"),
    }
}

fn multi_thread() -> Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("cannot start a tokio runtime: {e}"),
    }
}

/// One saga at a time, sync, through `run_blocking`.
fn sync_one(c: &mut Criterion) {
    let mut group = c.benchmark_group("sync_one");
    for path in [Path::Happy, Path::Fail] {
        let floor = direct_steps(path);
        group.bench_function(format!("floor_{}", path.label()), |b| {
            let mut ctx = Ctx::default();
            b.iter(|| check_floor(path, black_box(floor_sync(&floor, &mut ctx))));
        });
        for (how, saga) in [("builder", builder_sync(path)), ("macro", macro_sync(path))] {
            group.bench_function(format!("{how}_{}", path.label()), |b| {
                let mut ctx = Ctx::default();
                b.iter(|| check(path, black_box(saga.run_blocking(&mut ctx))));
            });
        }
    }
    group.finish();
}

/// Times `iters` runs of `one` awaited in turn on a current-thread runtime,
/// inside a single `block_on` so the runtime's entry is not counted.
fn time_async(rt: &Runtime, iters: u64, mut one: impl AsyncFnMut()) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            one().await;
        }
        start.elapsed()
    })
}

/// One saga at a time, async, through `run` on a current-thread runtime.
fn async_one(c: &mut Criterion) {
    let rt = current_thread();
    let mut group = c.benchmark_group("async_one");
    for path in [Path::Happy, Path::Fail] {
        let floor = direct_async_steps(path);
        group.bench_function(format!("floor_{}", path.label()), |b| {
            let mut ctx = Ctx::default();
            b.iter_custom(|iters| {
                time_async(&rt, iters, async || {
                    check_floor(path, black_box(floor_async(&floor, &mut ctx).await));
                })
            });
        });
        for (how, saga) in [
            ("builder", builder_async(path)),
            ("macro", macro_async(path)),
        ] {
            group.bench_function(format!("{how}_{}", path.label()), |b| {
                let mut ctx = Ctx::default();
                b.iter_custom(|iters| {
                    time_async(&rt, iters, async || {
                        check(path, black_box(saga.run(&mut ctx).await));
                    })
                });
            });
        }
    }
    group.finish();
}

/// Times `iters` rounds of 64 tasks spawned on a multi-thread runtime, each
/// running `one` with its own context; a round ends when all 64 have.
fn time_concurrent<F, Fut>(rt: &Runtime, iters: u64, one: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            let tasks: Vec<_> = (0..CONCURRENT).map(|_| tokio::spawn(one())).collect();
            for task in tasks {
                if let Err(e) = task.await {
                    panic!("a benchmark task failed: {e}");
                }
            }
        }
        start.elapsed()
    })
}

/// 64 sagas at a time, async, each in its own task on a multi-thread
/// runtime (one worker per core). One iteration is the whole round of 64.
fn async_concurrent(c: &mut Criterion) {
    let rt = multi_thread();
    let mut group = c.benchmark_group("async_concurrent64");
    for path in [Path::Happy, Path::Fail] {
        let floor = Arc::new(direct_async_steps(path));
        group.bench_function(format!("floor_{}", path.label()), |b| {
            b.iter_custom(|iters| {
                time_concurrent(&rt, iters, || {
                    let floor = Arc::clone(&floor);
                    async move {
                        let mut ctx = Ctx::default();
                        check_floor(path, black_box(floor_async(&floor, &mut ctx).await));
                    }
                })
            });
        });
        for (how, saga) in [
            ("builder", builder_async(path)),
            ("macro", macro_async(path)),
        ] {
            group.bench_function(format!("{how}_{}", path.label()), |b| {
                b.iter_custom(|iters| {
                    time_concurrent(&rt, iters, || {
                        let saga = saga.clone();
                        async move {
                            let mut ctx = Ctx::default();
                            check(path, black_box(saga.run(&mut ctx).await));
                        }
                    })
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, sync_one, async_one, async_concurrent);

/// `SAGA_PROFILE=<case>:<runs>` runs one case that many times and nothing
/// else, for `valgrind --tool=callgrind` (instruction counts do not depend
/// on the machine's load, unlike times). Cases:
/// `{sync,async}_{floor,builder,macro}_{happy,fail}`, e.g.
/// `SAGA_PROFILE=sync_builder_happy:4000`.
fn profile(spec: &str) {
    let (case, runs) = profile_spec(spec);
    let Some((mode, rest)) = case.split_once('_') else {
        panic!("SAGA_PROFILE: unknown case `{case}`");
    };
    let Some((how, path)) = rest.split_once('_') else {
        panic!("SAGA_PROFILE: unknown case `{case}`");
    };
    let path = match path {
        "happy" => Path::Happy,
        "fail" => Path::Fail,
        _ => panic!("SAGA_PROFILE: unknown case `{case}`"),
    };
    let mut ctx = Ctx::default();
    match (mode, how) {
        ("sync", "floor") => {
            let steps = direct_steps(path);
            (0..runs).for_each(|_| check_floor(path, black_box(floor_sync(&steps, &mut ctx))));
        }
        ("sync", "builder" | "macro") => {
            let saga = if how == "macro" {
                macro_sync(path)
            } else {
                builder_sync(path)
            };
            (0..runs).for_each(|_| check(path, black_box(saga.run_blocking(&mut ctx))));
        }
        ("async", "floor") => {
            let steps = direct_async_steps(path);
            time_async(&current_thread(), runs, async || {
                check_floor(path, black_box(floor_async(&steps, &mut ctx).await));
            });
        }
        ("async", "builder" | "macro") => {
            let saga = if how == "macro" {
                macro_async(path)
            } else {
                builder_async(path)
            };
            time_async(&current_thread(), runs, async || {
                check(path, black_box(saga.run(&mut ctx).await));
            });
        }
        _ => panic!("SAGA_PROFILE: unknown case `{case}`"),
    }
}

/// Times `floor` and `engine` in alternating batches of `batch` iterations,
/// `rounds` times, and keeps each one's fastest batch: on a shared, noisy
/// machine the fastest batch is the one least disturbed, and alternating
/// exposes both to the same disturbances. Returns nanoseconds per step for
/// each (an iteration being `steps` steps).
fn paired(
    batch: u64,
    rounds: u32,
    steps: f64,
    mut floor: impl FnMut(u64) -> Duration,
    mut engine: impl FnMut(u64) -> Duration,
) -> (f64, f64) {
    let (mut best_floor, mut best_engine) = (Duration::MAX, Duration::MAX);
    // One untimed batch each first: caches, allocator, runtime threads.
    floor(batch);
    engine(batch);
    for _ in 0..rounds {
        best_floor = best_floor.min(floor(batch));
        best_engine = best_engine.min(engine(batch));
    }
    let per_step = |d: Duration| d.as_nanos() as f64 / (batch as f64 * steps);
    (per_step(best_floor), per_step(best_engine))
}

fn time_sync(iters: u64, mut one: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        one();
    }
    start.elapsed()
}

/// `cargo bench --bench overhead -- --paired`: every case as a markdown
/// table row of per-step times, the floor's beside them from alternating
/// batches, the overhead (engine minus floor) and the ratio.
fn paired_table() {
    const TARGETS: [(Path, f64); 2] = [(Path::Happy, 100.0), (Path::Fail, 200.0)];
    let steps = STEPS as f64;
    println!(
        "| case | path | saga per step | floor per step | overhead per step | ratio | targets met |"
    );
    println!("|---|---|---|---|---|---|---|");
    let row = |case: &str, path: Path, limit: f64, (floor, engine): (f64, f64)| {
        let (overhead, ratio) = (engine - floor, engine / floor);
        let met = |ok: bool| if ok { "yes" } else { "no" };
        println!(
            "| {case} | {} | {engine:.1} ns | {floor:.1} ns | {overhead:.1} ns | {ratio:.2}x | \
             overhead <= {limit} ns: {}; ratio <= 3: {} |",
            path.label(),
            met(overhead <= limit),
            met(ratio <= 3.0),
        );
    };
    // The floor's main cost, for reading the table.
    let clock = (0..150)
        .map(|_| {
            time_sync(20_000, || {
                black_box(Instant::now());
            })
        })
        .min()
        .unwrap_or(Duration::ZERO);
    let clock_read = clock.as_nanos() as f64 / 20_000.0;
    let current = current_thread();
    let multi = multi_thread();
    for (path, limit) in TARGETS {
        let direct = direct_steps(path);
        let direct_async = Arc::new(direct_async_steps(path));
        let mut ctx = Ctx::default();
        let mut floor_ctx = Ctx::default();
        let sagas = [
            ("builder", builder_sync(path), builder_async(path)),
            ("macro", macro_sync(path), macro_async(path)),
        ];
        for (how, sync, asynchronous) in &sagas {
            let times = paired(
                2000,
                150,
                steps,
                |n| {
                    time_sync(n, || {
                        check_floor(path, black_box(floor_sync(&direct, &mut floor_ctx)))
                    })
                },
                |n| time_sync(n, || check(path, black_box(sync.run_blocking(&mut ctx)))),
            );
            row(&format!("{how}, sync `run_blocking`"), path, limit, times);
            let times = paired(
                2000,
                150,
                steps,
                |n| {
                    time_async(&current, n, async || {
                        check_floor(
                            path,
                            black_box(floor_async(&direct_async, &mut floor_ctx).await),
                        );
                    })
                },
                |n| {
                    time_async(&current, n, async || {
                        check(path, black_box(asynchronous.run(&mut ctx).await));
                    })
                },
            );
            row(
                &format!("{how}, async `run`, current-thread"),
                path,
                limit,
                times,
            );
            let times = paired(
                30,
                60,
                steps * CONCURRENT as f64,
                |n| {
                    time_concurrent(&multi, n, || {
                        let floor = Arc::clone(&direct_async);
                        async move {
                            let mut ctx = Ctx::default();
                            check_floor(path, black_box(floor_async(&floor, &mut ctx).await));
                        }
                    })
                },
                |n| {
                    time_concurrent(&multi, n, || {
                        let saga = asynchronous.clone();
                        async move {
                            let mut ctx = Ctx::default();
                            check(path, black_box(saga.run(&mut ctx).await));
                        }
                    })
                },
            );
            row(
                &format!("{how}, async `run`, 64 tasks, multi-thread"),
                path,
                limit,
                times,
            );
        }
    }
    println!("\none `Instant::now()` (in every floor step): {clock_read:.1} ns");
}

/// Issue #17's targets for one run at a time: a sync `run_blocking` at
/// most this many times its floor per step...
const SYNC_LIMIT: f64 = 2.2;
/// ...an async `run` on a current-thread runtime at most this many...
const ASYNC_LIMIT: f64 = 1.9;
/// ...and a failing saga (the last step fails, 9 compensations) at most
/// this many times a happy one.
const FAIL_LIMIT: f64 = 2.0;

/// One case's figures in one round, in nanoseconds per saga.
struct Measured {
    floor_happy: f64,
    happy: f64,
    floor_fail: f64,
    fail: f64,
}

/// `cargo bench --bench overhead -- --rounds <n>`: issue #17's item 2.
/// Each round measures every case (sync `run_blocking` and async `run` on
/// a current-thread runtime, builder and `saga!`) against its floor in
/// alternating batches (the fastest of `--pairs` batches each), so the
/// floor is always from the same round; the cases take turns within a
/// round. Prints each round, then the median of the per-round ratios with
/// the targets, the CPU model and the load average.
fn rounds_table(rounds: u64) {
    let pairs = arg("--pairs").map_or(7, |n| n as u32);
    let batch = arg("--batch").unwrap_or(2000);
    println!(
        "overhead: {} cores available, {}; load average {} at the start",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        load_average()
    );
    println!(
        "{rounds} rounds; per case and round the fastest of {pairs} alternating batches of {batch} sagas, floor and saga"
    );
    let current = current_thread();
    let per_saga = |(floor, engine): (f64, f64)| (floor * STEPS as f64, engine * STEPS as f64);
    let measure_sync = |sync: &[Saga<Ctx>; 2]| {
        let mut out = [(0.0, 0.0); 2];
        for (slot, (path, saga)) in out
            .iter_mut()
            .zip([Path::Happy, Path::Fail].iter().zip(sync))
        {
            let path = *path;
            let direct = direct_steps(path);
            let (mut ctx, mut floor_ctx) = (Ctx::default(), Ctx::default());
            *slot = per_saga(paired(
                batch,
                pairs,
                STEPS as f64,
                |n| {
                    time_sync(n, || {
                        check_floor(path, black_box(floor_sync(&direct, &mut floor_ctx)))
                    })
                },
                |n| time_sync(n, || check(path, black_box(saga.run_blocking(&mut ctx)))),
            ));
        }
        out
    };
    let measure_async = |sagas: &[Saga<Ctx>; 2]| {
        let mut out = [(0.0, 0.0); 2];
        for (slot, (path, saga)) in out
            .iter_mut()
            .zip([Path::Happy, Path::Fail].iter().zip(sagas))
        {
            let path = *path;
            let direct = direct_async_steps(path);
            let (mut ctx, mut floor_ctx) = (Ctx::default(), Ctx::default());
            *slot = per_saga(paired(
                batch,
                pairs,
                STEPS as f64,
                |n| {
                    time_async(&current, n, async || {
                        check_floor(path, black_box(floor_async(&direct, &mut floor_ctx).await));
                    })
                },
                |n| {
                    time_async(&current, n, async || {
                        check(path, black_box(saga.run(&mut ctx).await));
                    })
                },
            ));
        }
        out
    };
    let cases: [(&str, bool, [Saga<Ctx>; 2]); 4] = [
        (
            "sync run_blocking, builder",
            false,
            [builder_sync(Path::Happy), builder_sync(Path::Fail)],
        ),
        (
            "sync run_blocking, saga!",
            false,
            [macro_sync(Path::Happy), macro_sync(Path::Fail)],
        ),
        (
            "async run current-thread, builder",
            true,
            [builder_async(Path::Happy), builder_async(Path::Fail)],
        ),
        (
            "async run current-thread, saga!",
            true,
            [macro_async(Path::Happy), macro_async(Path::Fail)],
        ),
    ];
    let mut results: Vec<Vec<Measured>> = cases.iter().map(|_| Vec::new()).collect();
    println!(
        "| round | case | floor ns/step | saga ns/step | saga/floor | fail ns/saga | fail floor ns/saga | fail/happy |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for round in 1..=rounds {
        for ((name, is_async, sagas), kept) in cases.iter().zip(&mut results) {
            let [(floor_happy, happy), (floor_fail, fail)] = if *is_async {
                measure_async(sagas)
            } else {
                measure_sync(sagas)
            };
            let steps = STEPS as f64;
            println!(
                "| {round} | {name} | {:.1} | {:.1} | {:.2}x | {fail:.0} | {floor_fail:.0} | {:.2}x |",
                floor_happy / steps,
                happy / steps,
                happy / floor_happy,
                fail / happy,
            );
            kept.push(Measured {
                floor_happy,
                happy,
                floor_fail,
                fail,
            });
        }
    }
    println!("load average {} at the end", load_average());
    println!();
    println!(
        "| case | median saga/floor | target | median fail/happy | target | median ns/step saga (floor) | median fail/fail floor |"
    );
    println!("|---|---|---|---|---|---|---|");
    for ((name, is_async, _), kept) in cases.iter().zip(&results) {
        let med = |f: fn(&Measured) -> f64| median(kept.iter().map(f).collect());
        let ratio = med(|m| m.happy / m.floor_happy);
        let fail_ratio = med(|m| m.fail / m.happy);
        let limit = if *is_async { ASYNC_LIMIT } else { SYNC_LIMIT };
        println!(
            "| {name} | {ratio:.2}x | <= {limit}: {} | {fail_ratio:.2}x | <= {FAIL_LIMIT}: {} | {:.1} ({:.1}) | {:.2}x |",
            verdict(ratio <= limit),
            verdict(fail_ratio <= FAIL_LIMIT),
            med(|m| m.happy) / STEPS as f64,
            med(|m| m.floor_happy) / STEPS as f64,
            med(|m| m.fail / m.floor_fail),
        );
    }
}

fn main() {
    if let Ok(spec) = std::env::var("SAGA_PROFILE") {
        profile(&spec);
        return;
    }
    if std::env::args().any(|arg| arg == "--rounds") {
        rounds_table(arg("--rounds").unwrap_or(7));
        return;
    }
    if std::env::args().any(|arg| arg == "--paired") {
        paired_table();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
