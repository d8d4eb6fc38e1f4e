//! The executor's journal on a store: numbers events, buffers them, and
//! commits at every point after which an effect may happen.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;

use crate::gate::BlockingGate;
use crate::id::ExecutionId;
use crate::journal::{FlushGuard, FlushLock, Journal, Write};
use crate::report::ExecutionStatus;
use crate::store::{Ack, Event, EventKind, Lease, SagaStore, StoreError};

pub(super) struct JournalState {
    pub(super) next_seq: u64,
    /// Events written at the next flush: what follows a step's start is
    /// committed with the next start (a step transition) or the end.
    pub(super) buffer: Vec<Event>,
    /// Whether the first step's first start is in the log already (written
    /// with the execution).
    pub(super) preloaded: bool,
}

/// The executor's journal on a store: numbers events, buffers them, and
/// commits at every point after which an effect may happen.
///
/// An event that is only buffered (a success, a failure) is numbered under
/// a plain mutex and costs no await; a flush holds `flushing` across its
/// write, so that the writes of concurrent branches reach the store in
/// the order of their numbers.
pub(super) struct StoreJournal<C> {
    pub(super) store: Arc<dyn SagaStore>,
    pub(super) id: ExecutionId,
    pub(super) lease: Lease,
    pub(super) state: Mutex<JournalState>,
    /// Held by the flush under way, from the numbering of its event to its
    /// commit; with the run's cancellation, which a commit's answer may
    /// ask for.
    pub(super) flushing: FlushLock,
    /// The length of the context's last encoding: the next one starts with
    /// room for it, rather than growing (and copying) from a few bytes.
    pub(super) encoded_len: AtomicUsize,
    /// The engine's gate, for the run's sync steps when it is polled on a
    /// multi-thread runtime (`None` on a current-thread runtime).
    pub(super) gate: Option<Arc<BlockingGate>>,
    pub(super) _context: PhantomData<fn(&C)>,
}

/// `value` as JSON, in a buffer with room for a little more than `last`
/// bytes (the length of the previous encoding of its kind, which it
/// updates when it changed): a context of a steady size is written without
/// growing (and copying) the buffer from a few bytes. A buffer left much
/// larger than its text (a small context after a large one) is shrunk to
/// it, as the store may keep the text for as long as the execution.
pub(super) fn encode_sized(value: &impl Serialize, last: &AtomicUsize) -> Result<String, String> {
    let before = last.load(Ordering::Relaxed);
    let mut json = crate::json::write(Vec::with_capacity(before + before / 16 + 64), value)
        .map_err(|e| e.to_string())?;
    if json.len() != before {
        last.store(json.len(), Ordering::Relaxed);
    }
    if json.capacity() > 2 * json.len() + 4096 {
        json.shrink_to_fit();
    }
    String::from_utf8(json).map_err(|e| e.to_string())
}

impl<C> StoreJournal<C> {
    fn state(&self) -> MutexGuard<'_, JournalState> {
        // Plain numbers and a buffer: consistent whatever panicked.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Numbers `event` and buffers it, unless it is the first step's first
    /// start that the creation wrote already. Under the state's lock.
    fn push(state: &mut JournalState, mut event: Event) {
        let written = state.preloaded
            && event.kind == EventKind::StepStarted
            && event.step == Some(0)
            && event.attempt == 1;
        if written {
            state.preloaded = false;
            return;
        }
        event.seq = state.next_seq;
        state.next_seq += 1;
        state.buffer.push(event);
    }
}

impl<C: Serialize> Journal<C> for StoreJournal<C> {
    fn gate(&self) -> Option<&BlockingGate> {
        self.gate.as_deref()
    }

    fn encode_context(&self, ctx: &C) -> Result<String, StoreError> {
        encode_sized(ctx, &self.encoded_len).map_err(|detail| StoreError::Encode {
            what: format!("the context of execution `{}`", self.id),
            detail,
        })
    }

    fn last_context(&self) -> Option<String> {
        let state = self.state();
        let last = state.buffer.iter().rev().find_map(|e| e.context.as_ref());
        last.cloned()
    }

    fn record(&self, event: Event, status: ExecutionStatus) -> Write<'_> {
        let commit = match event.kind {
            EventKind::StepStarted | EventKind::CompensationStarted | EventKind::Finished => true,
            EventKind::StepFailed | EventKind::CompensationFailed => event.will_retry,
            _ => false,
        };
        if !commit {
            Self::push(&mut self.state(), event);
            return Write::Done;
        }
        self.commit(Some(event), status)
    }

    fn flush(&self, status: ExecutionStatus) -> Write<'_> {
        self.commit(None, status)
    }
}

impl<C> StoreJournal<C> {
    /// Commits the buffered events, and `event` after them: at once when
    /// no other commit is under way (the store's write is made at the
    /// call), after it otherwise.
    fn commit(&self, event: Option<Event>, status: ExecutionStatus) -> Write<'_> {
        match self.flushing.try_lock() {
            Some(flushing) => self.append(flushing, event, status),
            // The commit made inside tells of a cancellation itself.
            None => Write::Writing {
                write: Box::pin(async move {
                    let flushing = self.flushing.lock().await;
                    self.append(flushing, event, status).await?;
                    Ok(Ack::default())
                }),
                flushing: None,
            },
        }
    }

    /// Numbers `event`, takes the buffer with it and hands it to the
    /// store, under the flush lock `flushing` (held until the store
    /// answers).
    fn append<'a>(
        &'a self,
        flushing: FlushGuard<'a>,
        event: Option<Event>,
        status: ExecutionStatus,
    ) -> Write<'a> {
        let events = {
            let mut state = self.state();
            if let Some(event) = event {
                Self::push(&mut state, event);
            }
            std::mem::take(&mut state.buffer)
        };
        if events.is_empty() {
            return Write::Done;
        }
        Write::Writing {
            write: self.store.append(&self.id, &self.lease, events, status),
            flushing: Some(flushing),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoding_is_sized_from_the_last_and_shrunk_after_a_large_one() {
        let last = AtomicUsize::new(0);
        let large = "x".repeat(1 << 20);
        let json = encode_sized(&large, &last).unwrap();
        assert_eq!(last.load(Ordering::Relaxed), json.len());
        // The next one of a steady size fits the buffer made for it.
        let again = encode_sized(&large, &last).unwrap();
        assert_eq!(again, json);
        assert!(again.capacity() <= json.len() + json.len() / 16 + 64);
        // A small one after it does not keep the large buffer.
        let small = encode_sized(&"order-42", &last).unwrap();
        assert_eq!(small, "\"order-42\"");
        assert!(
            small.capacity() < 4096 + 2 * small.len(),
            "{}",
            small.capacity()
        );
        assert_eq!(last.load(Ordering::Relaxed), small.len());
    }
}
