//! Sync steps of durable runs on a multi-thread runtime, kept off the
//! runtime's last worker thread.
//!
//! A sync step (or compensation) blocks the thread that calls it for as
//! long as it runs. When sync steps of durable runs hold every worker
//! thread of a runtime at once, nothing else on it runs: not the lease
//! keeper, so the leases expire and another process takes the executions
//! over and runs their steps a second time while the first run goes on;
//! not the store's own tasks; not the service's other requests. A
//! runtime's [`BlockingGate`] lets all but one of its worker threads run a
//! sync step in place (a call, nothing more); a sync step beyond those
//! runs in [`tokio::task::block_in_place`], which first hands its worker
//! thread's other tasks to a new thread, so one worker thread is always
//! free for them. In place is the common case and costs two atomic
//! operations; `block_in_place` costs a hand-over (a few microseconds).
//!
//! A current-thread runtime has no thread to spare, and no gate: its sync
//! steps block it as before (see `SagaEngine::with_lease_ttl`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::runtime::{Handle, Id, RuntimeFlavor};

/// The sync steps in place on one multi-thread runtime.
#[derive(Debug)]
pub(crate) struct BlockingGate {
    /// Sync steps running in place now.
    in_place: AtomicUsize,
    /// How many may: the runtime's worker threads but one.
    limit: usize,
}

/// The gates of the runtimes alive, one per runtime, shared by its runs.
static GATES: Mutex<Vec<(Id, Weak<BlockingGate>)>> = Mutex::new(Vec::new());

impl BlockingGate {
    /// The gate of the runtime the caller runs on; `None` outside a
    /// runtime and on a current-thread runtime.
    pub(crate) fn of_current_runtime() -> Option<Arc<BlockingGate>> {
        let handle = Handle::try_current().ok()?;
        if handle.runtime_flavor() != RuntimeFlavor::MultiThread {
            return None;
        }
        let id = handle.id();
        let mut gates = GATES.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(gate) = gates
            .iter()
            .find(|(runtime, _)| *runtime == id)
            .and_then(|(_, gate)| gate.upgrade())
        {
            return Some(gate);
        }
        // The gates of runtimes gone, and this one's if it was dropped.
        gates.retain(|(_, gate)| gate.strong_count() > 0);
        let gate = Arc::new(BlockingGate::new(handle.metrics().num_workers()));
        gates.push((id, Arc::downgrade(&gate)));
        Some(gate)
    }

    /// A gate for a runtime of `workers` worker threads.
    fn new(workers: usize) -> Self {
        BlockingGate {
            in_place: AtomicUsize::new(0),
            limit: workers.saturating_sub(1),
        }
    }

    /// Calls `f`, a sync step: in place while another worker thread is
    /// free of sync steps, else in `block_in_place`.
    pub(crate) fn call<R>(&self, f: impl FnOnce() -> R) -> R {
        if self.in_place.fetch_add(1, Ordering::AcqRel) < self.limit {
            let _leave = Leave(&self.in_place);
            return f();
        }
        self.in_place.fetch_sub(1, Ordering::AcqRel);
        tokio::task::block_in_place(f)
    }
}

/// Counts a step in place out again, on return or unwind.
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_gate_outside_a_runtime_or_on_a_current_thread_one() {
        assert!(BlockingGate::of_current_runtime().is_none());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async { assert!(BlockingGate::of_current_runtime().is_none()) });
    }

    #[test]
    fn one_gate_per_runtime_leaving_one_worker_free() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(3)
            .build()
            .unwrap();
        let (a, b) = rt.block_on(async {
            (
                BlockingGate::of_current_runtime().unwrap(),
                BlockingGate::of_current_runtime().unwrap(),
            )
        });
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.limit, 2);
        let other = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let c = other.block_on(async { BlockingGate::of_current_runtime().unwrap() });
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.limit, 1);
    }

    #[test]
    fn steps_beyond_the_limit_leave_their_worker_thread() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        rt.block_on(async {
            let gate = BlockingGate::of_current_runtime().unwrap();
            let (inside, outside) = tokio::spawn(async move {
                gate.call(|| {
                    // One step in place: the next goes to block_in_place,
                    // and a panic counts it out again.
                    let inside = gate.in_place.load(Ordering::SeqCst);
                    let outside = gate.call(|| gate.in_place.load(Ordering::SeqCst));
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        gate.call(|| panic!("a step's panic"))
                    }));
                    (inside, outside)
                })
            })
            .await
            .unwrap();
            assert_eq!((inside, outside), (1, 1));
        });
    }
}
