//! Driving a run to completion from sync code.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

/// Drives a future that is ready at its first poll: a run whose steps are
/// all sync (its backoff sleeps block the thread instead of awaiting). One
/// poll with a no-op waker, no runtime, no allocation; should the future
/// ever wait anyway, the thread parks until it is woken.
///
/// Pinned by the caller, where the future is made: taken by value, a run's
/// future (some hundreds of bytes) would be copied once more into place.
pub(crate) fn block_on_ready<F: Future>(mut future: Pin<&mut F>) -> F::Output {
    if let Poll::Ready(out) = future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        return out;
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        thread::park();
    }
}

/// Drives a future on a private current-thread tokio runtime with timers.
pub(crate) fn block_on_runtime<F: Future>(future: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(runtime) => runtime.block_on(future),
        // Building a current-thread runtime only fails if the OS refuses a
        // timer resource; there is no run to report on yet, so say so
        // plainly.
        Err(e) => panic!("saga: cannot start a tokio runtime for an async step: {e}"),
    }
}

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}
