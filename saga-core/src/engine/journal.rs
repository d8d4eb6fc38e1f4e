//! The executor's journal on a store: numbers events, buffers them, and
//! commits at every point after which an effect may happen.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;

use crate::cancel::CancellationToken;
use crate::id::ExecutionId;
use crate::journal::Journal;
use crate::report::ExecutionStatus;
use crate::step::BoxFuture;
use crate::store::{Event, EventKind, Lease, SagaStore, StoreError};

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
pub(super) struct StoreJournal<C> {
    pub(super) store: Arc<dyn SagaStore>,
    pub(super) id: ExecutionId,
    pub(super) lease: Lease,
    pub(super) state: tokio::sync::Mutex<JournalState>,
    pub(super) cancel: CancellationToken,
    pub(super) _context: PhantomData<fn(&C)>,
}

impl<C: Serialize> Journal<C> for StoreJournal<C> {
    fn encode_context(&self, ctx: &C) -> Result<String, StoreError> {
        serde_json::to_string(ctx).map_err(|e| StoreError::Encode {
            what: format!("the context of execution `{}`", self.id),
            detail: e.to_string(),
        })
    }

    fn record(
        &self,
        mut event: Event,
        status: ExecutionStatus,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            let written = state.preloaded
                && event.kind == EventKind::StepStarted
                && event.step == Some(0)
                && event.attempt == 1;
            if written {
                state.preloaded = false;
            } else {
                event.seq = state.next_seq;
                state.next_seq += 1;
            }
            let flush = matches!(
                event.kind,
                EventKind::StepStarted | EventKind::CompensationStarted | EventKind::Finished
            );
            if !written {
                state.buffer.push(event);
            }
            if !flush || state.buffer.is_empty() {
                return Ok(());
            }
            let events = std::mem::take(&mut state.buffer);
            let ack = self
                .store
                .append(&self.id, &self.lease, events, status)
                .await?;
            if ack.cancel_requested {
                self.cancel.cancel();
            }
            Ok(())
        })
    }
}
