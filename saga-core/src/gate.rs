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
//! The hand-over needs a thread of the runtime's blocking pool: once the
//! pool is at its size (`max_blocking_threads`, 512 by default), a worker
//! entering `block_in_place` just blocks, and with enough such steps at
//! once every worker blocks and the runtime stalls (a 10 ms timer fired
//! after 1.8 s with 600 steps). So the gate lets in a bounded number of
//! steps at once (an engine's [`SagaEngine::with_sync_steps_at_once`],
//! 256 by default), below the pool's size; the others wait for their
//! turn asynchronously, holding no thread. A turn free at once costs no
//! await and no allocation.
//!
//! A current-thread runtime has no thread to hand over to, and no gate:
//! its sync steps block it (see `SagaEngine::with_lease_ttl`). In-memory
//! runs hold no lease and call their sync steps in place.
//!
//! [`SagaEngine::with_sync_steps_at_once`]: crate::SagaEngine::with_sync_steps_at_once

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::{Semaphore, SemaphorePermit};

/// The way a durable run's sync steps leave their worker thread: one per
/// engine, shared by its clones and its runs.
#[derive(Debug)]
pub(crate) struct BlockingGate {
    /// A permit per sync step that may be in `block_in_place` at once.
    turns: Semaphore,
    limit: Mutex<Limit>,
}

/// How many steps the gate lets through at once, and what a lowering of
/// it still owes. Locked by [`BlockingGate::set_steps`] and by a turn's
/// end, so that a turn ending while the limit is lowered cannot give back
/// a permit the new limit owes.
#[derive(Debug)]
struct Limit {
    /// The semaphore's permits: free, taken, or owed.
    steps: usize,
    /// Permits that were taken when the limit was lowered, forgotten as
    /// their turns end rather than given back.
    owed: usize,
}

/// A sync step's turn through the gate, held while it runs.
pub(crate) struct Turn<'g> {
    /// `None` only if the semaphore were closed, which it never is.
    permit: Option<SemaphorePermit<'g>>,
    gate: &'g BlockingGate,
}

impl BlockingGate {
    /// The default of [`BlockingGate::new`]'s `steps`: half the blocking
    /// pool of a runtime built with tokio's defaults.
    pub(crate) const DEFAULT_STEPS: usize = 256;

    /// A gate that lets `steps` sync steps (at least one) through at once.
    pub(crate) fn new(steps: usize) -> Self {
        let steps = steps.clamp(1, Semaphore::MAX_PERMITS);
        BlockingGate {
            turns: Semaphore::new(steps),
            limit: Mutex::new(Limit { steps, owed: 0 }),
        }
    }

    fn limit(&self) -> MutexGuard<'_, Limit> {
        // Two numbers, consistent whatever panicked.
        self.limit.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets `steps` sync steps (at least one) through at once from now
    /// on. Steps in their turn keep it; a lower limit holds once enough
    /// of them ended, its permits forgotten as they end.
    pub(crate) fn set_steps(&self, steps: usize) {
        let steps = steps.clamp(1, Semaphore::MAX_PERMITS);
        let mut limit = self.limit();
        if steps > limit.steps {
            // Owed permits not forgotten yet are kept instead.
            let more = steps - limit.steps;
            let kept = limit.owed.min(more);
            limit.owed -= kept;
            self.turns.add_permits(more - kept);
        } else {
            let fewer = limit.steps - steps;
            limit.owed += fewer - self.turns.forget_permits(fewer);
        }
        limit.steps = steps;
    }

    /// `gate`, when the caller runs on a multi-thread runtime; `None`
    /// outside a runtime and on a current-thread one.
    pub(crate) fn of_current_runtime(gate: &Arc<BlockingGate>) -> Option<Arc<BlockingGate>> {
        let handle = Handle::try_current().ok()?;
        (handle.runtime_flavor() == RuntimeFlavor::MultiThread).then(|| Arc::clone(gate))
    }

    /// Waits for a turn through the gate, asynchronously: a waiting step
    /// holds no thread. A turn free at once is taken without a wait or an
    /// allocation (a step waiting before it still goes first: a permit
    /// given back goes to the first waiter); a wait is boxed, so that the
    /// run's future does not hold the semaphore's waiter.
    pub(crate) async fn turn(&self) -> Turn<'_> {
        let permit = match self.turns.try_acquire() {
            Ok(permit) => Some(permit),
            Err(_) => Box::pin(self.turns.acquire()).await.ok(),
        };
        Turn { permit, gate: self }
    }
}

impl Drop for Turn<'_> {
    /// Gives the permit back, or forgets it if the limit was lowered
    /// while it was taken.
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        // Decided and done under the lock: a permit given back after it
        // could miss a lowering made meanwhile.
        let mut limit = self.gate.limit();
        if limit.owed > 0 {
            limit.owed -= 1;
            permit.forget();
        } else {
            drop(permit);
        }
        drop(limit);
    }
}

impl Turn<'_> {
    /// Calls `f`, a sync step, off its worker thread's duties; the turn
    /// is given back when it returns.
    pub(crate) fn call<R>(self, f: impl FnOnce() -> R) -> R {
        tokio::task::block_in_place(f)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn no_gate_outside_a_runtime_or_on_a_current_thread_one() {
        let gate = Arc::new(BlockingGate::new(BlockingGate::DEFAULT_STEPS));
        assert!(BlockingGate::of_current_runtime(&gate).is_none());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async { assert!(BlockingGate::of_current_runtime(&gate).is_none()) });
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
            let gate = Arc::new(BlockingGate::new(BlockingGate::DEFAULT_STEPS));
            let gate = BlockingGate::of_current_runtime(&gate).unwrap();
            let started = Instant::now();
            let sleeper = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                started.elapsed()
            });
            tokio::spawn(async move {
                gate.turn()
                    .await
                    .call(|| std::thread::sleep(Duration::from_secs(1)))
            })
            .await
            .unwrap();
            let woke = sleeper.await.unwrap();
            assert!(woke < Duration::from_millis(900), "woke after {woke:?}");
        });
    }

    /// A limit lowered while steps hold their turns holds once they end;
    /// raised again before they end, nothing is forgotten.
    #[test]
    fn a_limit_changed_while_steps_run_holds_once_they_end() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let gate = BlockingGate::new(2);
        let free = |gate: &BlockingGate| gate.turns.available_permits();
        rt.block_on(async {
            let (a, b) = (gate.turn().await, gate.turn().await);
            gate.set_steps(1);
            drop(a);
            assert_eq!(free(&gate), 0, "the first turn's permit is forgotten");
            drop(b);
            assert_eq!(free(&gate), 1);
            gate.set_steps(3);
            assert_eq!(free(&gate), 3);

            let (a, b, c) = (gate.turn().await, gate.turn().await, gate.turn().await);
            gate.set_steps(1);
            gate.set_steps(2);
            drop((a, b, c));
            assert_eq!(free(&gate), 2, "one owed permit kept by the raise");
            gate.set_steps(0);
            assert_eq!(free(&gate), 1, "at least one");
        });
    }

    /// More steps than the blocking pool has threads: those past the
    /// gate's limit wait for their turn without holding a worker, so the
    /// runtime's timers still fire, and every step runs.
    #[test]
    fn steps_past_the_limit_wait_without_holding_a_worker() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(8)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let gate = Arc::new(BlockingGate::new(4));
            let mut steps = Vec::new();
            for _ in 0..24 {
                let gate = Arc::clone(&gate);
                steps.push(tokio::spawn(async move {
                    gate.turn()
                        .await
                        .call(|| std::thread::sleep(Duration::from_millis(50)))
                }));
            }
            let started = Instant::now();
            tokio::time::sleep(Duration::from_millis(20)).await;
            let woke = started.elapsed();
            for step in steps {
                tokio::time::timeout(Duration::from_secs(10), step)
                    .await
                    .unwrap()
                    .unwrap();
            }
            assert!(woke < Duration::from_millis(150), "woke after {woke:?}");
        });
    }
}
