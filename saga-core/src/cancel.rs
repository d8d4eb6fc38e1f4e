//! [`CancellationToken`]: asks an in-memory run to stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Asks a run to stop. Cheap to clone; every clone is the same token.
///
/// The run checks the token between steps (and between retries). Before the
/// pivot, a cancelled run compensates what took effect and ends
/// [`Cancelled`](crate::SagaError::Cancelled); after the pivot the request is
/// recorded in the report and ignored. An async step in flight is dropped
/// only if it was marked [`cancel_safe`](crate::Step::cancel_safe) (its
/// outcome is then unknown, so it is compensated).
///
/// ```
/// use saga_core::CancellationToken;
///
/// let token = CancellationToken::new();
/// let clone = token.clone();
/// clone.cancel();
/// assert!(token.is_cancelled());
/// ```
#[derive(Debug, Clone, Default)]
pub struct CancellationToken {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    cancelled: AtomicBool,
    notify: Notify,
}

impl crate::journal::Cancel for Inner {
    fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
}

impl CancellationToken {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels: every run holding this token stops at its next check.
    pub fn cancel(&self) {
        crate::journal::Cancel::cancel(&*self.inner);
    }

    /// The token as a durable run's journal holds it (no allocation: the
    /// token's own).
    pub(crate) fn shared(&self) -> Arc<dyn crate::journal::Cancel> {
        self.inner.clone()
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Completes once the token is cancelled.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}
