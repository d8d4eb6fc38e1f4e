//! Helpers of the durable tests: scratch files, and a five-step saga whose
//! effects land in a ledger outside the saga, with a failure and a hang
//! that a test can place at any step or compensation.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga_core::{Saga, SagaBuilder, SagaEngine, Step, StepError, StepInfo};
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
                        script
                            .ledger
                            .lock()
                            .unwrap()
                            .calls
                            .push((format!("do s{i}"), key));
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
            .compensate_async(
                move |o: &mut Order, out: Option<&u32>, info: &StepInfo<'_>| {
                    let script = Arc::clone(&undo);
                    let key = info.idempotency_key();
                    let out = out.copied();
                    Box::pin(async move {
                        script
                            .ledger
                            .lock()
                            .unwrap()
                            .calls
                            .push((format!("undo s{i} {out:?}"), key));
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
