//! A durable saga with sync steps run on a current-thread runtime is
//! warned of, once per registration: there a sync step holds the only
//! thread, no lease is renewed while it runs, and a step longer than the
//! lease is run again by another process. Multi-thread runtimes, and
//! sagas of async steps only, get no warning.

mod support;

use log::{Level, LevelFilter};
use saga_core::store::MemoryStore;
use saga_core::{Saga, SagaEngine, Step, StepError, StepInfo};
use support::logs::{entries_where, install_logger};

const WARNING: &str = "sync step on a current-thread runtime: while it runs nothing else on the runtime runs, lease renewals included, so a step longer than the lease is taken over and run again by another process; run durable sagas with sync steps on a multi-thread runtime";

fn saga(name: &'static str, sync: bool) -> Saga<u32> {
    let step = if sync {
        Step::new("debit", |n: &mut u32, _: &StepInfo<'_>| {
            *n += 1;
            Ok::<_, StepError>(())
        })
    } else {
        Step::new_async("debit", |n: &mut u32, _: &StepInfo<'_>| {
            Box::pin(async move {
                *n += 1;
                Ok::<_, StepError>(())
            })
        })
    };
    Saga::builder(name).step(step).build().unwrap()
}

/// Runs `saga` durably twice, to its end, on a runtime of `flavor`.
fn run_twice(runtime: tokio::runtime::Runtime, saga: Saga<u32>) {
    runtime.block_on(async {
        let engine = SagaEngine::new(MemoryStore::new());
        let name = saga.name().to_owned();
        engine.register(saga).await.unwrap();
        for _ in 0..2 {
            let id = engine.start(&name, 0_u32).await.unwrap();
            engine.wait(&id).await.unwrap();
        }
    });
}

fn warnings(saga: &str) -> Vec<(Level, String, Option<String>)> {
    entries_where("saga", saga)
        .into_iter()
        .filter(|e| e.level <= Level::Warn)
        .map(|e| {
            let step = e.field("step").map(str::to_owned);
            (e.level, e.message, step)
        })
        .collect()
}

#[test]
fn sync_steps_on_a_current_thread_runtime_are_warned_of_once() {
    install_logger(LevelFilter::Warn);
    let one_thread = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    run_twice(one_thread(), saga("one-thread-sync", true));
    assert_eq!(
        warnings("one-thread-sync"),
        [(Level::Warn, WARNING.to_owned(), Some("debit".to_owned()))]
    );

    run_twice(one_thread(), saga("one-thread-async", false));
    assert_eq!(warnings("one-thread-async"), []);

    let many_threads = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    run_twice(many_threads, saga("many-threads-sync", true));
    assert_eq!(warnings("many-threads-sync"), []);
}
