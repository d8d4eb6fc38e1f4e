//! Sync steps of durable runs on a multi-thread runtime, kept off the
//! runtime's worker threads.
//!
//! A sync step (or compensation) blocks the thread that calls it for as
//! long as it runs. Called in place on a worker thread of a multi-thread
//! runtime, it holds more than that thread: the worker that was woken to
//! run it (by the store's reply, say) may be the one that drives the
//! runtime's timers and I/O, and tokio hands that duty to an idle worker
//! only when that worker parks. Until the step returns, no timer fires and
//! no socket is read, so the lease keeper does not renew, a PostgreSQL
//! store does not answer, and the service's other requests wait: the
//! lease expires mid-step, another process takes the execution over and
//! runs the step a second time while it still runs. So every sync step of
//! a durable run on a multi-thread runtime runs in
//! [`tokio::task::block_in_place`], which first hands its worker's duties
//! and other tasks to another thread. That costs a hand-over of a few
//! microseconds per step; async steps do not pay it.
//!
//! A current-thread runtime has no thread to hand over to, and no gate:
//! its sync steps block it (see `SagaEngine::with_lease_ttl`). In-memory
//! runs hold no lease and call their sync steps in place.

use tokio::runtime::{Handle, RuntimeFlavor};

/// The way a durable run's sync steps leave their worker thread.
#[derive(Debug)]
pub(crate) struct BlockingGate {
    _private: (),
}

static GATE: BlockingGate = BlockingGate { _private: () };

impl BlockingGate {
    /// The gate, when the caller runs on a multi-thread runtime; `None`
    /// outside a runtime and on a current-thread one.
    pub(crate) fn of_current_runtime() -> Option<&'static BlockingGate> {
        let handle = Handle::try_current().ok()?;
        (handle.runtime_flavor() == RuntimeFlavor::MultiThread).then_some(&GATE)
    }

    /// Calls `f`, a sync step, off its worker thread's duties.
    pub(crate) fn call<R>(&self, f: impl FnOnce() -> R) -> R {
        tokio::task::block_in_place(f)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn no_gate_outside_a_runtime_or_on_a_current_thread_one() {
        assert!(BlockingGate::of_current_runtime().is_none());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async { assert!(BlockingGate::of_current_runtime().is_none()) });
    }

    /// While a step blocks in the gate, the runtime's timers fire: a task
    /// sleeping 50 ms wakes in time, not once the step is over.
    #[test]
    fn timers_fire_while_a_step_blocks() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let gate = BlockingGate::of_current_runtime().unwrap();
            let started = Instant::now();
            let sleeper = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                started.elapsed()
            });
            tokio::spawn(async move { gate.call(|| std::thread::sleep(Duration::from_secs(1))) })
                .await
                .unwrap();
            let woke = sleeper.await.unwrap();
            assert!(woke < Duration::from_millis(900), "woke after {woke:?}");
        });
    }
}
