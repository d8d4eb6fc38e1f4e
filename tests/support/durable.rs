//! Helpers of the durable tests: scratch files, and a five-step saga whose
//! effects land in a ledger outside the saga, with a failure and a hang
//! that a test can place at any step or compensation.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga_core::store::SagaStore;
use saga_core::{
    ExecutionId, Saga, SagaBuilder, SagaEngine, SagaReport, Step, StepError, StepInfo,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A fresh directory under the system's temp dir, for one test.
pub fn scratch_dir(test: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "saga-durable-{test}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `crash_saga` helper process on the store and ledger in `dir`, in
/// `mode` from `point` (see `tests/bin/crash_saga.rs`), its output piped.
pub fn crash_saga(dir: &std::path::Path, mode: &str, point: &str) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_crash_saga"));
    command
        .arg(dir.join("sagas.db"))
        .arg(dir.join("ledger.db"))
        .arg(mode)
        .arg(point)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    command
}

/// The context of the test saga: what the steps saw, in order.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub done: Vec<String>,
}

/// Where a test wants the saga to fail or hang.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    Step(usize),
    Compensation(usize),
}

/// What the steps did, outside the saga: each invocation, with its
/// idempotency key.
#[derive(Debug, Default)]
pub struct Ledger {
    pub calls: Vec<(String, String)>,
}

#[derive(Debug, Default)]
pub struct Script {
    pub fail: Mutex<Option<usize>>,
    pub hang: Mutex<Option<Point>>,
    pub ledger: Mutex<Ledger>,
    /// Fired when the saga reaches the hang point.
    pub hung: tokio::sync::Notify,
}

impl Script {
    /// Notes an invocation and its idempotency key.
    pub fn record(&self, what: String, key: String) {
        self.ledger.lock().unwrap().calls.push((what, key));
    }

    pub fn calls(&self) -> Vec<(String, String)> {
        self.ledger.lock().unwrap().calls.clone()
    }

    fn hang_here(&self, point: Point) -> bool {
        *self.hang.lock().unwrap() == Some(point)
    }
}

pub const STEPS: usize = 5;

/// The test saga: five async compensable steps `s0`..`s4`; step `i`
/// returns `i * 10` (a durable output) and its compensation checks it got
/// it back.
pub fn saga(script: &Arc<Script>) -> Saga<Order> {
    let mut builder: SagaBuilder<Order> = Saga::builder("order");
    for i in 0..STEPS {
        let run = Arc::clone(script);
        let undo = Arc::clone(script);
        builder = builder.step(
            Step::new_async(
                format!("s{i}"),
                move |o: &mut Order, info: &StepInfo<'_>| {
                    let script = Arc::clone(&run);
                    let key = info.idempotency_key();
                    Box::pin(async move {
                        script.record(format!("do s{i}"), key);
                        if script.hang_here(Point::Step(i)) {
                            script.hung.notify_one();
                            std::future::pending::<()>().await;
                        }
                        if *script.fail.lock().unwrap() == Some(i) {
                            return Err(StepError::new(format!("s{i} refused")));
                        }
                        o.done.push(format!("s{i}"));
                        Ok::<u32, StepError>(i as u32 * 10)
                    })
                },
            )
            .durable()
            .undo_async(
                move |o: &mut Order, out: Option<&u32>, info: &StepInfo<'_>| {
                    let script = Arc::clone(&undo);
                    let key = info.idempotency_key();
                    let out = out.copied();
                    Box::pin(async move {
                        script.record(format!("undo s{i} {out:?}"), key);
                        if script.hang_here(Point::Compensation(i)) {
                            script.hung.notify_one();
                            std::future::pending::<()>().await;
                        }
                        o.done.push(format!("undo s{i}"));
                        Ok::<(), StepError>(())
                    })
                },
            ),
        );
    }
    builder.build().unwrap()
}

/// Runs `engine` work on its own runtime, which is dropped (with every task
/// on it, mid-step) when the closure's future ends: a crash of the owner,
/// without its lease being released.
pub fn in_dying_runtime<F, T>(f: impl FnOnce() -> F) -> T
where
    F: std::future::Future<Output = T>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let out = rt.block_on(f());
    rt.shutdown_timeout(Duration::from_millis(100));
    out
}

pub fn short_lease(engine: SagaEngine) -> SagaEngine {
    engine.with_lease_ttl(Duration::from_millis(100))
}

/// Starts `saga` (whose steps hang at `script`'s hang point) with an engine
/// on `store`, and "crashes" once the hang point is reached: the runtime is
/// dropped with the step cut off and the lease still held. Returns the
/// execution's id.
pub fn start_and_crash(
    store: &Arc<dyn SagaStore>,
    saga: Saga<Order>,
    script: &Arc<Script>,
) -> ExecutionId {
    let script = Arc::clone(script);
    start_and_crash_when(store, saga, Order::default(), async move {
        script.hung.notified().await;
    })
}

/// [`start_and_crash`] for any saga: starts it on `ctx` and crashes once
/// `hung` is ready (the saga reached its hang point).
pub fn start_and_crash_when<C>(
    store: &Arc<dyn SagaStore>,
    saga: Saga<C>,
    ctx: C,
    hung: impl std::future::Future<Output = ()>,
) -> ExecutionId
where
    C: Serialize + DeserializeOwned + Send + 'static,
{
    in_dying_runtime(|| {
        let store = Arc::clone(store);
        async move {
            let engine = short_lease(SagaEngine::with_store(store));
            let name = saga.name().to_owned();
            engine.register(saga).await.unwrap();
            let id = engine.start(&name, ctx).await.unwrap();
            hung.await;
            id
        }
    })
}

/// A second engine on `store` with `saga` registered recovers `id` (once
/// the crashed owner's lease expired) and waits for it.
pub fn recover_and_wait<C>(
    store: &Arc<dyn SagaStore>,
    saga: Saga<C>,
    id: &ExecutionId,
) -> SagaReport
where
    C: Serialize + DeserializeOwned + Send + 'static,
{
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let engine = short_lease(SagaEngine::with_store(Arc::clone(store)));
        engine.register(saga).await.unwrap();
        loop {
            let recovery = engine.recover().await.unwrap();
            assert!(recovery.refused.is_empty(), "{:?}", recovery.refused);
            if recovery.resumed.contains(id) {
                break;
            }
            // The crashed owner's lease has not expired yet.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        engine.wait(id).await.or_else(super::ended).unwrap()
    })
}
