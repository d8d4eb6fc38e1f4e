//! The lease keeper: one task per engine and runtime that renews the
//! leases of all the engine's runs on that runtime, so that a run's start
//! costs a lock and an entry in a table rather than a task of its own.
//!
//! A run [keeps](LeaseKeeper::keep) its lease from its start to its end.
//! The keeper ticks every sixth of the ttl on its own timer while the
//! runtime has runs, so a run never wakes it: a task woken (or spawned)
//! from a worker thread waits in that worker's own slot, which no other
//! worker takes from, until the worker yields, and a run may block its
//! thread before it yields. The keeper is spawned (with a hand-over: the
//! run waits until it has run once) only when its runtime has none, and
//! ends after a ttl with no run to keep, or when its runtime shuts down
//! (its task dropped). One task still stops with its runtime's threads:
//! steps blocking every worker thread at once, or a blocked
//! current-thread runtime, stop the renewal of every run on it.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::runtime::{Handle, Id};
use tokio::sync::oneshot;
use tokio::time::{Instant, MissedTickBehavior};

use crate::cancel::CancellationToken;
use crate::id::ExecutionId;
use crate::name::Name;
use crate::store::{Lease, SagaStore, StoreError};

/// How many ticks in a row with no lease to keep end a keeper: a ttl.
const IDLE_TICKS: u32 = 6;

/// An engine's lease keeper (shared by its clones).
#[derive(Clone)]
pub(super) struct LeaseKeeper {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn SagaStore>,
    state: Mutex<State>,
    /// When a slow renewal was last told, and how many were slow since:
    /// one warning per [`SLOW_TOLD_EVERY`] for all the engine's leases, not
    /// one per lease when the store slows down for all of them.
    slow: Mutex<(Option<Instant>, u64)>,
}

/// How often slow renewals are told at most, per engine.
const SLOW_TOLD_EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
struct State {
    /// The leases kept, by slot (`None`: a free slot).
    held: Vec<Option<Held>>,
    /// The free slots of `held`.
    free: Vec<usize>,
    /// The last serial given to a lease kept or a keeper task.
    serials: u64,
    /// The keeper tasks alive: at most one per runtime.
    keepers: Vec<Keeper>,
}

/// A keeper task.
struct Keeper {
    /// The runtime it runs on, whose runs' leases it renews.
    runtime: Id,
    serial: u64,
    /// How often it ticks: a sixth of the shortest ttl it was made for.
    period: Duration,
}

/// A lease kept for a run.
struct Held {
    serial: u64,
    /// The runtime the run runs on: its keeper renews the lease.
    runtime: Id,
    /// The execution's saga, for the log.
    saga: Name,
    id: ExecutionId,
    lease: Lease,
    /// The run's: a renewal's ack that tells of a cancellation cancels it.
    cancel: CancellationToken,
    /// When the lease was taken (kept) or a renewal of it sent.
    renewed: Instant,
    /// Not renewed yet: the first renewal waits a third of the ttl, so a
    /// run shorter than that is never renewed (a renewal is a store
    /// write, a commit on SQLite).
    first: bool,
    /// A renewal of it is under way.
    renewing: bool,
    /// The run has ended and waits for the renewal under way.
    stopping: Option<oneshot::Sender<()>>,
}

impl State {
    fn next_serial(&mut self) -> u64 {
        self.serials += 1;
        self.serials
    }

    /// The lease in `slot`, if it is the one given `serial`.
    fn held(&mut self, slot: usize, serial: u64) -> Option<&mut Held> {
        self.held
            .get_mut(slot)
            .and_then(Option::as_mut)
            .filter(|held| held.serial == serial)
    }

    fn remove(&mut self, slot: usize) -> Option<Held> {
        let held = self.held.get_mut(slot)?.take();
        if held.is_some() {
            self.free.push(slot);
        }
        held
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl LeaseKeeper {
    pub(super) fn new(store: Arc<dyn SagaStore>) -> Self {
        LeaseKeeper {
            shared: Arc::new(Shared {
                store,
                state: Mutex::default(),
                slow: Mutex::default(),
            }),
        }
    }

    /// Keeps `lease` (of execution `id` of `saga`, just taken) renewed until the
    /// returned [`Kept`] is stopped or dropped; a renewal's ack that tells
    /// of a cancellation cancels `cancel`. Waits only when the current
    /// runtime has no keeper for this ttl yet: until the new one has run.
    pub(super) async fn keep(
        &self,
        saga: Name,
        id: ExecutionId,
        lease: Lease,
        cancel: CancellationToken,
    ) -> Kept {
        let Ok(runtime) = Handle::try_current() else {
            // A run always runs on a runtime.
            return Kept {
                shared: None,
                slot: 0,
                serial: 0,
            };
        };
        let runtime_id = runtime.id();
        let period = (lease.ttl / 6).max(Duration::from_millis(1));
        let renewed = Instant::now();
        let (slot, serial, spawn) = {
            let mut state = self.shared.state();
            let serial = state.next_serial();
            let held = Held {
                serial,
                runtime: runtime_id,
                saga,
                id,
                lease,
                cancel,
                renewed,
                first: true,
                renewing: false,
                stopping: None,
            };
            let slot = match state.free.pop() {
                Some(slot) => {
                    state.held[slot] = Some(held);
                    slot
                }
                None => {
                    state.held.push(Some(held));
                    state.held.len() - 1
                }
            };
            let alive = state
                .keepers
                .iter()
                .any(|k| k.runtime == runtime_id && k.period <= period);
            let spawn = if alive {
                None
            } else {
                // A keeper of this runtime that ticks too slowly for this
                // ttl is replaced: it sees so at its next tick, and ends.
                let keeper = state.next_serial();
                state.keepers.retain(|k| k.runtime != runtime_id);
                state.keepers.push(Keeper {
                    runtime: runtime_id,
                    serial: keeper,
                    period,
                });
                Some(keeper)
            };
            (slot, serial, spawn)
        };
        let kept = Kept {
            shared: Some(Arc::clone(&self.shared)),
            slot,
            serial,
        };
        if let Some(keeper) = spawn {
            let alive = Alive {
                shared: Arc::downgrade(&self.shared),
                runtime: runtime_id,
                serial: keeper,
            };
            let (ready, timer_set) = oneshot::channel();
            runtime.spawn(run_keeper(alive, period, ready));
            // A task spawned from a worker waits in that worker's own
            // slot, which no other worker takes from, until the spawner
            // yields, and the run may block before it yields: it waits
            // until the keeper has run and set its timer.
            let _ = timer_set.await;
        }
        kept
    }
}

/// A lease kept for a run, until [`stop`](Self::stop) or a drop.
pub(super) struct Kept {
    /// `None` once stopped.
    shared: Option<Arc<Shared>>,
    slot: usize,
    serial: u64,
}

impl Kept {
    /// Stops renewing, once a renewal of this lease under way (if any)
    /// has ended: no renewal outlives the run. (Renewals of other runs'
    /// leases are not waited for.)
    pub(super) async fn stop(mut self) {
        let Some(shared) = self.shared.as_ref() else {
            return;
        };
        let waiting = {
            let mut state = shared.state();
            match state.held(self.slot, self.serial) {
                Some(held) if held.renewing => {
                    let (stopped, waiting) = oneshot::channel();
                    held.stopping = Some(stopped);
                    Some(waiting)
                }
                Some(_) => {
                    state.remove(self.slot);
                    None
                }
                None => None,
            }
        };
        if let Some(waiting) = waiting {
            // The renewal's end removes the entry (also if its task is
            // dropped).
            let _ = waiting.await;
        }
        self.shared = None;
    }
}

impl Drop for Kept {
    /// The run's future dropped: its lease is no longer renewed; a
    /// renewal under way is not waited for, and its outcome is ignored.
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            let mut state = shared.state();
            if state.held(self.slot, self.serial).is_some() {
                state.remove(self.slot);
            }
        }
    }
}

/// A keeper task's token: dropped (the task ended, or was dropped with its
/// runtime), the runtime has no keeper any more, and the next run on it
/// spawns one.
struct Alive {
    shared: Weak<Shared>,
    runtime: Id,
    serial: u64,
}

impl Drop for Alive {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            let (runtime, serial) = (self.runtime, self.serial);
            shared
                .state()
                .keepers
                .retain(|k| k.runtime != runtime || k.serial != serial);
        }
    }
}

/// A renewal to send.
struct Due {
    slot: usize,
    serial: u64,
    saga: Name,
    id: ExecutionId,
    lease: Lease,
    cancel: CancellationToken,
}

/// The keeper task: every `period`, sends the renewals due, each in a task
/// of its own (so that a slow store call delays no other lease's renewal,
/// nor the next tick). Ends when the engine is gone, when a keeper that
/// ticks faster replaced it, or after [`IDLE_TICKS`] with no lease kept.
async fn run_keeper(alive: Alive, period: Duration, ready: oneshot::Sender<()>) {
    let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
    // After a stall, one tick, not one per tick missed.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let _ = ready.send(());
    let mut idle = 0;
    loop {
        ticks.tick().await;
        let Some(shared) = alive.shared.upgrade() else {
            return;
        };
        let Some(due) = due(&shared, &alive, &mut idle) else {
            return;
        };
        for due in due {
            tokio::spawn(renew(Arc::clone(&shared), due));
        }
    }
}

/// The renewals due on `keeper`'s runtime, marked under way; `None` if
/// the keeper is to end (replaced, or idle too long: then it is no longer
/// listed as alive).
fn due(shared: &Shared, keeper: &Alive, idle: &mut u32) -> Option<Vec<Due>> {
    let now = Instant::now();
    let mut state = shared.state();
    let listed = state
        .keepers
        .iter()
        .position(|k| k.runtime == keeper.runtime && k.serial == keeper.serial)?;
    let mut due = Vec::new();
    let mut any = false;
    for (slot, held) in state.held.iter_mut().enumerate() {
        let Some(held) = held.as_mut().filter(|h| h.runtime == keeper.runtime) else {
            continue;
        };
        any = true;
        if held.renewing {
            continue;
        }
        // Later renewals come every second tick (a third of the ttl): a
        // quarter of it keeps the ticks' lateness from skipping one.
        let wait = if held.first {
            held.lease.ttl / 3
        } else {
            held.lease.ttl / 4
        };
        if now.saturating_duration_since(held.renewed) >= wait {
            held.renewing = true;
            held.first = false;
            held.renewed = now;
            due.push(Due {
                slot,
                serial: held.serial,
                saga: held.saga.clone(),
                id: held.id.clone(),
                lease: held.lease.clone(),
                cancel: held.cancel.clone(),
            });
        }
    }
    if any {
        *idle = 0;
    } else {
        *idle += 1;
        if *idle >= IDLE_TICKS {
            state.keepers.swap_remove(listed);
            return None;
        }
    }
    Some(due)
}

/// A renewal under way: once it has ended (or its task was dropped), the
/// lease is free for the next, and a run waiting to stop stops.
struct Renewing {
    shared: Arc<Shared>,
    slot: usize,
    serial: u64,
}

impl Renewing {
    /// Whether the run still keeps its lease (its future was not dropped).
    fn kept(&self) -> bool {
        self.shared.state().held(self.slot, self.serial).is_some()
    }
}

impl Drop for Renewing {
    fn drop(&mut self) {
        let stopped = {
            let mut state = self.shared.state();
            match state.held(self.slot, self.serial) {
                Some(held) if held.stopping.is_some() => state
                    .remove(self.slot)
                    .and_then(|mut held| held.stopping.take()),
                Some(held) => {
                    held.renewing = false;
                    None
                }
                None => None,
            }
        };
        if let Some(stopped) = stopped {
            let _ = stopped.send(());
        }
    }
}

/// Renews one lease. A lost lease is only logged: it fails the run's next
/// write. A cancellation its ack tells of cancels the run.
async fn renew(shared: Arc<Shared>, due: Due) {
    let renewing = Renewing {
        shared: Arc::clone(&shared),
        slot: due.slot,
        serial: due.serial,
    };
    let store = &*shared.store;
    let asked = Instant::now();
    let renewed = store.renew(&due.id, &due.lease).await;
    // A third of the lease gone in one renewal that worked (and at least
    // 100 ms: a short ttl is no slow store): the store is slow enough to
    // cost leases soon (a locked file, an overloaded server). One that
    // failed says so itself, or met the run's end.
    let took = asked.elapsed();
    let slow = took >= (due.lease.ttl / 3).max(Duration::from_millis(100));
    if renewed.is_ok() && slow && renewing.kept() {
        let told = {
            let mut slow = shared.slow.lock().unwrap_or_else(PoisonError::into_inner);
            slow.1 += 1;
            let due_now = slow.0.is_none_or(|at| at.elapsed() >= SLOW_TOLD_EVERY);
            due_now.then(|| {
                slow.0 = Some(Instant::now());
                std::mem::take(&mut slow.1)
            })
        };
        if let Some(renewals) = told {
            log::warn!(target: "saga", saga:% = crate::escape::Escaped(due.saga.as_str()), execution:% = crate::escape::Escaped(due.id.as_str()), store:% = crate::escape::Escaped(&store.describe()), took:? = took, ttl:? = due.lease.ttl, renewals = renewals; "store slow: a lease renewal took a third of the lease or more");
        }
    }
    match renewed {
        Ok(ack) if ack.cancel_requested => due.cancel.cancel(),
        Ok(_) => {}
        // The run's own end released the lease while this renewal was
        // under way: nothing was lost.
        Err(StoreError::LeaseLost { .. }) if ended(store, &due.id).await => {}
        // A lost lease fails the run's next write; a run whose future was
        // dropped meanwhile has nothing left to tell.
        Err(error) => {
            if renewing.kept() {
                log::warn!(target: "saga", saga:% = crate::escape::Escaped(due.saga.as_str()), execution:% = crate::escape::Escaped(due.id.as_str()), error:% = crate::escape::Escaped(&error.to_string()); "lease renewal failed");
            }
        }
    }
    drop(renewing);
}

/// Whether execution `id` has ended, as the store says (a failed read
/// says no).
async fn ended(store: &dyn SagaStore, id: &ExecutionId) -> bool {
    matches!(store.get(id).await, Ok(Some(record)) if record.status.is_finished())
}
