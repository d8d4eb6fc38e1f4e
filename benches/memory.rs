//! Heap held per in-flight execution, counted by a global allocator.
//!
//! Starts 10,000 runs of a 10-step async saga and polls each once: every
//! run stops at its last step, which waits on a gate, so all 10,000 are in
//! flight at once with nine steps' outputs and reports held. The bytes live
//! at that moment, less those before the runs started, divided by 10,000,
//! are what one execution holds beyond the user's context (the contexts are
//! allocated before the count starts). The same is measured for the floor
//! (the boxed step futures awaited directly), then the gate opens, every run
//! must finish, and the live bytes must return to where they started.
//!
//! Run: `cargo bench --bench memory`. It fails if a run leaks, or if an
//! optimized build's execution holds more than [`CEILING`] bytes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use saga_core::{BoxFuture, Saga, Step, StepError, StepInfo};

/// Counts the bytes live on the heap, and every allocation made.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters are only read.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Executions held in flight at once.
const IN_FLIGHT: usize = 10_000;
/// Steps per saga; the last one waits on the gate.
const STEPS: usize = 10;
/// The target: heap bytes per in-flight execution beyond the context.
const TARGET: isize = 1024;
/// What an optimized build must stay under, so that a regression fails CI:
/// the target itself, now that it is met (docs/PERFORMANCE.md). Debug
/// builds lay futures out larger and are not held to it.
const CEILING: isize = TARGET;

/// Shut until every run is in flight.
static GATE: AtomicBool = AtomicBool::new(false);

/// Pending until the gate opens. It registers no waker: the runs are polled
/// by hand, with a no-op waker.
struct Gate;

impl Future for Gate {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if GATE.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// The user's context: what each run is handed, allocated before counting.
#[derive(Default)]
struct Ctx {
    _orders: u64,
}

fn saga() -> Saga<Ctx> {
    let mut builder = Saga::builder("memory");
    for i in 0..STEPS {
        let last = i == STEPS - 1;
        builder = builder.step(
            Step::new_async(
                format!("step_{i}"),
                move |ctx: &mut Ctx, _: &StepInfo<'_>| {
                    Box::pin(async move {
                        if last {
                            Gate.await;
                        }
                        black_box(ctx);
                        Ok::<_, StepError>(())
                    })
                },
            )
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

type DirectAsync =
    dyn for<'a> Fn(&'a mut Ctx) -> BoxFuture<'a, Result<(), StepError>> + Send + Sync;

fn boxed<F>(f: F) -> Box<DirectAsync>
where
    F: for<'a> Fn(&'a mut Ctx) -> BoxFuture<'a, Result<(), StepError>> + Send + Sync + 'static,
{
    Box::new(f)
}

/// The floor: the same step futures, awaited directly.
fn floor_steps() -> Vec<Box<DirectAsync>> {
    (0..STEPS)
        .map(|i| {
            let last = i == STEPS - 1;
            boxed(move |ctx| {
                Box::pin(async move {
                    if last {
                        Gate.await;
                    }
                    black_box(ctx);
                    Ok(())
                })
            })
        })
        .collect()
}

async fn floor_run(steps: &[Box<DirectAsync>], ctx: &mut Ctx) -> Result<(), StepError> {
    let mut mark = std::time::Instant::now();
    for step in steps {
        step(ctx).await?;
        mark = std::time::Instant::now();
    }
    black_box(mark);
    Ok(())
}

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Holds `IN_FLIGHT` runs made by `start` in flight; returns the heap
/// bytes they hold, per run, and the allocations each made to get there.
/// Then opens the gate, finishes every run, and checks nothing leaked.
fn measure<'c, F>(label: &str, contexts: &'c mut [Ctx], mut start: F) -> (isize, f64)
where
    F: FnMut(&'c mut Ctx) -> Pin<Box<dyn Future<Output = Result<(), String>> + 'c>>,
{
    GATE.store(false, Ordering::Release);
    let mut cx = Context::from_waker(Waker::noop());
    let before = live();
    let mut runs = Vec::with_capacity(IN_FLIGHT);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    for ctx in contexts.iter_mut() {
        let mut run = start(ctx);
        if run.as_mut().poll(&mut cx).is_ready() {
            panic!("{label}: a run finished before the gate opened");
        }
        runs.push(run);
    }
    // The vector of handles is the benchmark's, not the runs'.
    let handles = (runs.capacity() * size_of::<Pin<Box<dyn Future<Output = ()>>>>()) as isize;
    let held = live() - before - handles;
    let per_run = held / IN_FLIGHT as isize;
    let allocs = (ALLOCATIONS.load(Ordering::Relaxed) - allocations) as f64 / IN_FLIGHT as f64;
    GATE.store(true, Ordering::Release);
    for run in &mut runs {
        match run.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => panic!("{label}: a run failed: {e}"),
            Poll::Pending => panic!("{label}: a run is still pending after the gate opened"),
        }
    }
    drop(runs);
    let leaked = live() - before;
    assert_eq!(
        leaked, 0,
        "{label}: {leaked} bytes still live after every run finished"
    );
    (per_run, allocs)
}

fn main() {
    let saga = saga();
    let floor = floor_steps();
    let mut contexts: Vec<Ctx> = (0..IN_FLIGHT).map(|_| Ctx::default()).collect();
    // One run first, so one-time statics (the id generator's seed) are not
    // counted against the first execution.
    GATE.store(true, Ordering::Release);
    let mut warm = Ctx::default();
    let mut cx = Context::from_waker(Waker::noop());
    let mut run = Box::pin(saga.run(&mut warm));
    if !matches!(run.as_mut().poll(&mut cx), Poll::Ready(Ok(_))) {
        panic!("the warm-up run did not complete");
    }
    drop(run);
    // The future of one run, before it is polled: the largest single part
    // of what an execution holds.
    let future_size = {
        let mut ctx = Ctx::default();
        size_of_val(&saga.run(&mut ctx))
    };

    let (engine, engine_allocs) = measure("engine", &mut contexts, |ctx| {
        let saga = &saga;
        Box::pin(async move {
            match saga.run(ctx).await {
                Ok(report) => {
                    black_box(report);
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        })
    });
    let (floor, floor_allocs) = measure("floor", &mut contexts, |ctx| {
        let floor = &floor;
        Box::pin(async move { floor_run(floor, ctx).await.map_err(|e| e.to_string()) })
    });

    println!("memory: {IN_FLIGHT} executions of a {STEPS}-step async saga in flight");
    println!("  engine: {engine} bytes per execution ({engine_allocs:.1} allocations)");
    println!("  floor:  {floor} bytes per execution ({floor_allocs:.1} allocations)");
    println!("  of which the `Saga::run` future: {future_size} bytes");
    println!(
        "  size of the context: {} bytes (not counted)",
        size_of::<Ctx>()
    );
    let verdict = if engine <= TARGET { "met" } else { "not met" };
    println!("  target: at most {TARGET} bytes per execution: {verdict}");
    if !cfg!(debug_assertions) {
        assert!(
            engine <= CEILING,
            "an in-flight execution holds {engine} bytes, over the {CEILING}-byte ceiling"
        );
    }
}
