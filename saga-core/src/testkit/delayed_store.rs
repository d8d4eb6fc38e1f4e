//! The test kit's delegating store: a store in front of another, answering
//! late and calling hooks around each call.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::id::ExecutionId;
use crate::report::ExecutionStatus;
use crate::step::BoxFuture;
use crate::store::{
    Ack, ClaimRequest, Claimed, ClaimedWithLog, Created, DefinitionRecord, Event, EventKind,
    ExecutionRecord, ExecutionSummary, Lease, ListQuery, NewExecution, SagaStore, StoreError,
    StoreResult,
};

/// Which [`SagaStore`] method a [`StoreCall`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreOp {
    /// [`SagaStore::put_definition`].
    PutDefinition,
    /// [`SagaStore::definition`].
    Definition,
    /// [`SagaStore::create`]: a commit of the log (the execution with its
    /// first events).
    Create,
    /// [`SagaStore::claim`].
    Claim,
    /// [`SagaStore::claim_next`], or
    /// [`SagaStore::claim_next_with_log`].
    ClaimNext,
    /// [`SagaStore::append`]: a commit of the log.
    Append,
    /// [`SagaStore::renew`].
    Renew,
    /// [`SagaStore::release`].
    Release,
    /// [`SagaStore::get`].
    Get,
    /// [`SagaStore::events`].
    Events,
    /// [`SagaStore::list`].
    List,
    /// [`SagaStore::list_summaries`].
    ListSummaries,
    /// [`SagaStore::context`].
    Context,
    /// [`SagaStore::latest_context`].
    LatestContext,
    /// [`SagaStore::events_without_contexts`].
    EventsWithoutContexts,
    /// [`SagaStore::request_cancel`].
    RequestCancel,
    /// [`SagaStore::purge`].
    Purge,
}

impl StoreOp {
    /// The method's name, e.g. `append`.
    pub fn label(self) -> &'static str {
        match self {
            StoreOp::PutDefinition => "put_definition",
            StoreOp::Definition => "definition",
            StoreOp::Create => "create",
            StoreOp::Claim => "claim",
            StoreOp::ClaimNext => "claim_next",
            StoreOp::Append => "append",
            StoreOp::Renew => "renew",
            StoreOp::Release => "release",
            StoreOp::Get => "get",
            StoreOp::Events => "events",
            StoreOp::List => "list",
            StoreOp::ListSummaries => "list_summaries",
            StoreOp::Context => "context",
            StoreOp::LatestContext => "latest_context",
            StoreOp::EventsWithoutContexts => "events_without_contexts",
            StoreOp::RequestCancel => "request_cancel",
            StoreOp::Purge => "purge",
        }
    }
}

/// One call through a [`DelayedStore`], as its hooks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreCall {
    /// The method called.
    pub op: StoreOp,
    /// The execution it is about, if one.
    pub execution_id: Option<ExecutionId>,
    /// For a commit of the log ([`StoreOp::Create`], [`StoreOp::Append`]):
    /// its number, from 1, counted over the wrapper and its clones.
    pub commit: Option<usize>,
    /// The kinds of the events a commit writes, in order (empty for other
    /// calls).
    pub events: Vec<EventKind>,
}

/// A hook called before each call reaches the inner store.
type Before = dyn Fn(&StoreCall) -> StoreResult<()> + Send + Sync;
/// A hook called after the inner store answered.
type After = dyn Fn(&StoreCall, Result<(), &StoreError>) -> StoreResult<()> + Send + Sync;

/// A store in front of another: every operation goes to the inner store,
/// its answer comes back `delay` later (as a store across a network
/// answers), and hooks see each call before and after it.
///
/// The delay is for racing your own code (two callers of one operation, a
/// [`Worker`](crate::Worker) next to operator commands) with the latency
/// that makes races show: a race that needs 1 ms to show is still a race.
///
/// The hooks are for watching and breaking the log's commits:
/// [`before_call`](Self::before_call) runs before the inner store sees the
/// call, and an error it returns is the answer (the call never reaches the
/// store: a commit lost, a store refusing); [`after_call`](Self::after_call)
/// runs once the inner store answered, and an error it returns replaces
/// the answer (the commit was written, but its writer never heard: a crash
/// just after it). Each [`StoreCall`] numbers the log's commits
/// ([`create`](SagaStore::create) with the first events, then each
/// [`append`](SagaStore::append)) from 1. The test kit's crash mode is
/// built on them.
///
/// Every [`SagaStore`] method is passed on, including
/// [`claim_next`](SagaStore::claim_next) and
/// [`claim_next_with_log`](SagaStore::claim_next_with_log) (the inner
/// store's own, so a PostgreSQL store keeps its one-statement claim) and
/// [`work_signal`](SagaStore::work_signal) (not delayed and not hooked: it
/// is a signal, not an answer).
///
/// ```
/// use std::time::Duration;
/// use saga_core::SagaEngine;
/// use saga_core::store::MemoryStore;
/// use saga_core::testkit::DelayedStore;
///
/// let store = DelayedStore::new(MemoryStore::new(), Duration::from_millis(1));
/// let engine = SagaEngine::new(store);
/// # let _ = engine;
/// ```
///
/// A store whose third commit is lost, and whose commits are counted:
///
/// ```
/// use std::time::Duration;
/// use saga_core::store::{MemoryStore, StoreError};
/// use saga_core::testkit::DelayedStore;
///
/// let store = DelayedStore::new(MemoryStore::new(), Duration::ZERO).before_call(|call| {
///     if call.commit == Some(3) {
///         return Err(StoreError::Backend {
///             store: "the test store".into(),
///             what: "appending events".into(),
///             source: "disk full".into(),
///         });
///     }
///     Ok(())
/// });
/// assert_eq!(store.commits(), 0);
/// ```
#[derive(Clone)]
pub struct DelayedStore {
    inner: Arc<dyn SagaStore>,
    delay: Duration,
    before: Option<Arc<Before>>,
    after: Option<Arc<After>>,
    commits: Arc<AtomicUsize>,
}

impl fmt::Debug for DelayedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelayedStore")
            .field("inner", &self.inner.describe())
            .field("delay", &self.delay)
            .field("before_call", &self.before.is_some())
            .field("after_call", &self.after.is_some())
            .field("commits", &self.commits())
            .finish()
    }
}

impl DelayedStore {
    /// `inner`, answering `delay` after it does (zero: at once, through
    /// the wrapper all the same, after yielding to the runtime once, so
    /// racing callers interleave even on a store that never awaits).
    pub fn new(inner: impl SagaStore, delay: Duration) -> Self {
        Self::shared(Arc::new(inner), delay)
    }

    /// A shared `inner`, answering `delay` after it does.
    pub fn shared(inner: Arc<dyn SagaStore>, delay: Duration) -> Self {
        DelayedStore {
            inner,
            delay,
            before: None,
            after: None,
            commits: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Calls `hook` before each call reaches the inner store (in the
    /// caller's task, when the call is made); an error it returns is the
    /// call's answer, and the inner store never sees the call. Replaces
    /// an earlier `before_call` hook.
    #[must_use]
    pub fn before_call(
        mut self,
        hook: impl Fn(&StoreCall) -> StoreResult<()> + Send + Sync + 'static,
    ) -> Self {
        self.before = Some(Arc::new(hook));
        self
    }

    /// Calls `hook` with each answer of the inner store (`Ok(())` for any
    /// success), before the delay; an error it returns replaces the
    /// answer. A [`create`](SagaStore::create) whose answer is replaced
    /// after it took a lease gives the lease back, standing for its
    /// expiry: its caller never learnt it held one. Replaces an earlier
    /// `after_call` hook.
    #[must_use]
    pub fn after_call(
        mut self,
        hook: impl Fn(&StoreCall, Result<(), &StoreError>) -> StoreResult<()> + Send + Sync + 'static,
    ) -> Self {
        self.after = Some(Arc::new(hook));
        self
    }

    /// How many commits of the log ([`create`](SagaStore::create) and
    /// [`append`](SagaStore::append) calls) were made through it and its
    /// clones, refused ones included.
    pub fn commits(&self) -> usize {
        self.commits.load(Ordering::SeqCst)
    }

    /// The store it wraps.
    pub fn inner(&self) -> &Arc<dyn SagaStore> {
        &self.inner
    }

    /// How late it answers.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// The call as the hooks see it (`None` without hooks); numbers a
    /// commit either way.
    fn call(&self, op: StoreOp, id: Option<&ExecutionId>, events: &[Event]) -> Option<StoreCall> {
        let commit = matches!(op, StoreOp::Create | StoreOp::Append)
            .then(|| self.commits.fetch_add(1, Ordering::SeqCst) + 1);
        (self.before.is_some() || self.after.is_some()).then(|| StoreCall {
            op,
            execution_id: id.cloned(),
            commit,
            events: events.iter().map(|e| e.kind).collect(),
        })
    }

    /// The before hook's refusal of `call`, if it refuses it.
    fn refusal(&self, call: Option<&StoreCall>) -> Option<StoreError> {
        let (call, before) = (call?, self.before.as_ref()?);
        before(call).err()
    }

    /// `forward()` (unless the before hook refuses the call), its answer
    /// shown to the after hook, then held back by the delay.
    fn through<'a, T: Send + 'a>(
        &self,
        call: Option<StoreCall>,
        forward: impl FnOnce() -> BoxFuture<'a, StoreResult<T>>,
    ) -> BoxFuture<'a, StoreResult<T>> {
        if let Some(refused) = self.refusal(call.as_ref()) {
            return Box::pin(std::future::ready(Err(refused)));
        }
        let answer = forward();
        let after = call.zip(self.after.clone());
        let delay = self.delay;
        Box::pin(async move {
            let mut answer = answer.await;
            let replaced =
                after.and_then(|(call, after)| after(&call, answer.as_ref().map(|_| ())).err());
            if let Some(replaced) = replaced {
                answer = Err(replaced);
            }
            late(delay).await;
            answer
        })
    }
}

/// Waits `delay` before an answer is handed back; at zero it still yields
/// to the runtime once, so callers racing on a store that answers at once
/// (memory) interleave as they would on any store that does I/O.
async fn late(delay: Duration) {
    if delay.is_zero() {
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(delay).await;
    }
}

impl SagaStore for DelayedStore {
    fn describe(&self) -> String {
        if self.delay.is_zero() {
            return self.inner.describe();
        }
        format!(
            "{} (answering {:?} late)",
            self.inner.describe(),
            self.delay
        )
    }

    fn put_definition(&self, definition: DefinitionRecord) -> BoxFuture<'_, StoreResult<()>> {
        let call = self.call(StoreOp::PutDefinition, None, &[]);
        self.through(call, || self.inner.put_definition(definition))
    }

    fn definition(
        &self,
        fingerprint: &str,
    ) -> BoxFuture<'_, StoreResult<Option<DefinitionRecord>>> {
        let call = self.call(StoreOp::Definition, None, &[]);
        self.through(call, || self.inner.definition(fingerprint))
    }

    fn create(
        &self,
        execution: NewExecution,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Created>> {
        let call = self.call(StoreOp::Create, Some(&execution.id), &execution.events);
        if let Some(refused) = self.refusal(call.as_ref()) {
            return Box::pin(std::future::ready(Err(refused)));
        }
        let id = execution.id.clone();
        let answer = self.inner.create(execution, owner, ttl);
        let after = call.zip(self.after.clone());
        Box::pin(async move {
            let mut answer = answer.await;
            let replaced =
                after.and_then(|(call, after)| after(&call, answer.as_ref().map(|_| ())).err());
            if let Some(replaced) = replaced {
                // Nothing else would release the lease: it expires.
                if let Ok(Created::New(lease)) = &answer {
                    let _ = self.inner.release(&id, lease).await;
                }
                answer = Err(replaced);
            }
            late(self.delay).await;
            answer
        })
    }

    fn claim(
        &self,
        id: &ExecutionId,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Option<Lease>>> {
        let call = self.call(StoreOp::Claim, Some(id), &[]);
        self.through(call, || self.inner.claim(id, owner, ttl))
    }

    fn append<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
        events: Vec<Event>,
        status: ExecutionStatus,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        let call = self.call(StoreOp::Append, Some(id), &events);
        self.through(call, || self.inner.append(id, lease, events, status))
    }

    fn renew<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        let call = self.call(StoreOp::Renew, Some(id), &[]);
        self.through(call, || self.inner.renew(id, lease))
    }

    fn release<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<()>> {
        let call = self.call(StoreOp::Release, Some(id), &[]);
        self.through(call, || self.inner.release(id, lease))
    }

    fn get<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> BoxFuture<'a, StoreResult<Option<ExecutionRecord>>> {
        let call = self.call(StoreOp::Get, Some(id), &[]);
        self.through(call, || self.inner.get(id))
    }

    fn events<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<Vec<Event>>> {
        let call = self.call(StoreOp::Events, Some(id), &[]);
        self.through(call, || self.inner.events(id))
    }

    fn list(
        &self,
        status: Option<ExecutionStatus>,
    ) -> BoxFuture<'_, StoreResult<Vec<ExecutionRecord>>> {
        let call = self.call(StoreOp::List, None, &[]);
        self.through(call, || self.inner.list(status))
    }

    fn list_summaries(
        &self,
        query: ListQuery,
    ) -> BoxFuture<'_, StoreResult<Vec<ExecutionSummary>>> {
        let call = self.call(StoreOp::ListSummaries, None, &[]);
        self.through(call, || self.inner.list_summaries(query))
    }

    fn context<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<Option<String>>> {
        let call = self.call(StoreOp::Context, Some(id), &[]);
        self.through(call, || self.inner.context(id))
    }

    fn events_without_contexts<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> BoxFuture<'a, StoreResult<Vec<Event>>> {
        let call = self.call(StoreOp::EventsWithoutContexts, Some(id), &[]);
        self.through(call, || self.inner.events_without_contexts(id))
    }

    fn latest_context<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> BoxFuture<'a, StoreResult<Option<String>>> {
        let call = self.call(StoreOp::LatestContext, Some(id), &[]);
        self.through(call, || self.inner.latest_context(id))
    }

    fn request_cancel<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<bool>> {
        let call = self.call(StoreOp::RequestCancel, Some(id), &[]);
        self.through(call, || self.inner.request_cancel(id))
    }

    fn claim_next(&self, request: ClaimRequest) -> BoxFuture<'_, StoreResult<Vec<Claimed>>> {
        let call = self.call(StoreOp::ClaimNext, None, &[]);
        self.through(call, || self.inner.claim_next(request))
    }

    fn claim_next_with_log(
        &self,
        request: ClaimRequest,
    ) -> BoxFuture<'_, StoreResult<Vec<ClaimedWithLog>>> {
        let call = self.call(StoreOp::ClaimNext, None, &[]);
        self.through(call, || self.inner.claim_next_with_log(request))
    }

    fn work_signal(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.work_signal()
    }

    fn change_signal(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.change_signal()
    }

    fn purge(&self, before_ms: i64) -> BoxFuture<'_, StoreResult<u64>> {
        let call = self.call(StoreOp::Purge, None, &[]);
        self.through(call, || self.inner.purge(before_ms))
    }
}
