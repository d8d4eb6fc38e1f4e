//! [`SagaEngine`]: durable execution. A registry of saga definitions by
//! name, joined to a [`SagaStore`] that logs every execution, so that a
//! crashed process's sagas are carried on by the next one.
//!
//! The engine runs each execution on the tokio runtime it is called from;
//! its methods must be called inside one.

use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::cancel::CancellationToken;
use crate::executor;
use crate::id::ExecutionId;
use crate::journal::{Journal, Resume, ResumePhase, ResumeStep};
use crate::report::{ExecutionStatus, Outcome, SagaReport, StepReport, StepStatus};
use crate::saga::{RunOptions, Saga, StepShape};
use crate::step::{BoxFuture, Output, StepKind};
use crate::store::{
    Claimed, Created, DefinitionRecord, Event, EventKind, ExecutionRecord, Lease, NewExecution,
    SagaStore, StoreError, logged_durations, now_ms,
};

/// An error of the engine. Each says what to do; none comes with a record
/// deleted or overwritten.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No saga of that name is registered in this process.
    #[error("no saga named `{name}` is registered (registered: {}); register it with `engine.register(saga)` first", list(.registered))]
    UnknownSaga {
        /// The name asked for.
        name: String,
        /// The names registered.
        registered: Vec<String>,
    },
    /// An execution was started with a definition (by fingerprint) that
    /// this process has not registered: the saga changed since. The record
    /// was left untouched.
    #[error("execution `{execution_id}` of saga `{saga}` was started with definition {fingerprint}, which this process has not registered ({}); register that version of the saga to carry it on, or `abandon` it; the record was left untouched", if .registered.is_empty() { "no version of it is registered".to_owned() } else { format!("registered versions: {}", .registered.join(", ")) })]
    UnknownDefinition {
        /// The execution.
        execution_id: ExecutionId,
        /// Its saga's name.
        saga: String,
        /// The fingerprint it recorded.
        fingerprint: String,
        /// The fingerprints registered under that name here.
        registered: Vec<String>,
    },
    /// A step returns a value without a codec, so a durable saga could not
    /// log it: a `#[saga_task]` step whose output type lacks serde's
    /// traits, or a [`Step`](crate::Step) built without
    /// [`durable`](crate::Step::durable).
    #[error(
        "step `{step}` of saga `{saga}` returns a `{output}`, which a durable saga cannot log; derive `serde::Serialize` and `serde::Deserialize` on that type (a `#[saga_task]` step then logs it by itself; a `Step` built by hand also needs `.durable()`), or return `()` and keep the value in the context"
    )]
    OutputNotDurable {
        /// The saga.
        saga: String,
        /// The step.
        step: String,
        /// The step's output type.
        output: &'static str,
    },
    /// `start` was given a context of another type than the saga's.
    #[error("saga `{saga}` takes a context of type `{expected}`, not `{found}`")]
    ContextType {
        /// The saga.
        saga: String,
        /// Its context type.
        expected: &'static str,
        /// The type given.
        found: &'static str,
    },
    /// A stored context or output no longer decodes (its type changed).
    /// The record was left untouched.
    #[error(
        "{what} of execution `{execution_id}` no longer decodes: {detail}; make the type accept the stored JSON (serde `default`, `alias`), or `abandon` the execution; the record was left untouched"
    )]
    Undecodable {
        /// The execution.
        execution_id: ExecutionId,
        /// What failed to decode.
        what: String,
        /// The decoder's error.
        detail: String,
    },
    /// A log that does not fit its definition (a step index out of range).
    #[error(
        "the log of execution `{execution_id}` does not fit its definition: {detail}; the record was left untouched"
    )]
    BadLog {
        /// The execution.
        execution_id: ExecutionId,
        /// What is wrong.
        detail: String,
    },
    /// No execution with that id.
    #[error("no execution `{execution_id}`")]
    NotFound {
        /// The id.
        execution_id: ExecutionId,
    },
    /// Another owner (another process, or this one) runs the execution.
    #[error("execution `{execution_id}` is being run by `{owner}`; wait for it, or cancel it")]
    Busy {
        /// The execution.
        execution_id: ExecutionId,
        /// Its lease's holder.
        owner: String,
    },
    /// The operation does not apply to an execution with that status.
    #[error("execution `{execution_id}` is {status}; `{operation}` applies to {applies}")]
    WrongStatus {
        /// The execution.
        execution_id: ExecutionId,
        /// Its status.
        status: ExecutionStatus,
        /// The operation.
        operation: &'static str,
        /// The statuses it applies to.
        applies: &'static str,
    },
    /// A caller-given id names an execution of another saga.
    #[error(
        "execution `{execution_id}` exists already, of saga `{existing}`, not `{requested}`; choose another id"
    )]
    IdTaken {
        /// The id.
        execution_id: ExecutionId,
        /// The saga it belongs to.
        existing: String,
        /// The saga asked for.
        requested: String,
    },
    /// The run stopped because its log could not be written (see
    /// [`SagaError::Store`](crate::SagaError::Store)); recovery carries it on
    /// once the store works.
    #[error("execution `{execution_id}` stopped: {detail}")]
    Interrupted {
        /// The execution.
        execution_id: ExecutionId,
        /// Why.
        detail: String,
    },
    /// The engine was called outside a tokio runtime.
    #[error("the saga engine must be called inside a tokio runtime")]
    NoRuntime,
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// What [`SagaEngine::recover`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Recovery {
    /// Executions this engine took over and is running again.
    pub resumed: Vec<ExecutionId>,
    /// Executions whose lease another live owner holds (a crashed owner's
    /// lease frees itself when it expires: recover again then).
    pub busy: Vec<ExecutionId>,
    /// Executions it refused to run, and why; their records are untouched.
    pub refused: Vec<(ExecutionId, EngineError)>,
}

/// An execution and its log, as [`SagaEngine::get`] shows it.
#[derive(Debug, Clone)]
pub struct ExecutionView {
    /// The execution.
    pub record: ExecutionRecord,
    /// Its log, in order.
    pub events: Vec<Event>,
}

/// Runs durable sagas: every execution is logged in a [`SagaStore`], and
/// after a crash [`recover`](Self::recover) carries each unfinished one on
/// from its log.
///
/// Delivery is *at least once*: a step (or compensation) that started and
/// never recorded its end is run again after a crash, with the same
/// [`idempotency_key`](crate::StepInfo::idempotency_key); its outcome then
/// counts as unknown. An effect happens once when the step honours its key
/// (the remote service, or the step's own table, ignores a repeated key).
///
/// Durable sagas need `C: Serialize + DeserializeOwned` (the default
/// [`Context`](crate::Context) is), and every step returning a value other
/// than `()` must be made [`durable`](crate::Step::durable) (a
/// `#[saga_task]` step is, when its output type implements
/// `Serialize + DeserializeOwned`).
///
/// ```
/// use saga_core::{Context, SagaEngine, Saga, Step, StepError, StepInfo};
/// use saga_core::store::MemoryStore;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let saga = Saga::<Context>::builder("greet")
///     .step(Step::new("hello", |ctx: &mut Context, _: &StepInfo<'_>| {
///         ctx.insert("greeted", true);
///         Ok::<_, StepError>(())
///     }))
///     .build()?;
/// let engine = SagaEngine::new(MemoryStore::new());
/// engine.register(saga).await?;
/// let id = engine.start("greet", Context::new()).await?;
/// let report = engine.wait(&id).await?;
/// assert_eq!(report.status, saga_core::ExecutionStatus::Completed);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct SagaEngine {
    inner: Arc<EngineInner>,
    /// The lease this engine takes on the executions it runs.
    lease_ttl: Duration,
    /// How long finished executions stay.
    retention: Duration,
}

struct EngineInner {
    store: Arc<dyn SagaStore>,
    owner: String,
    registry: RwLock<Registry>,
    /// The executions this engine is claiming or running, at most one
    /// entry (so one run) per id: an entry is made before the first await
    /// of whatever may lead to a run, and removed only by whoever made it.
    live: Mutex<HashMap<ExecutionId, Live>>,
    /// The next [`Live::slot`].
    slots: AtomicU64,
}

#[derive(Default)]
struct Registry {
    /// The latest version registered under each name.
    by_name: HashMap<String, Arc<dyn Runner>>,
    by_fingerprint: HashMap<String, Arc<dyn Runner>>,
}

/// An entry of the live set.
struct Live {
    /// Who made the entry: only they remove or replace it.
    slot: u64,
    /// The run, once launched; `None` while its maker is still claiming
    /// (or, for an operator's command, writing under the lease).
    run: Option<LiveRun>,
}

impl Live {
    /// Whether the entry stands for work going on (a claim, or a run that
    /// has not ended), as opposed to a run that stopped and stays listed
    /// for `wait`.
    fn active(&self) -> bool {
        self.run
            .as_ref()
            .is_none_or(|run| run.done.borrow().is_none())
    }
}

/// A run of this engine.
struct LiveRun {
    cancel: CancellationToken,
    done: watch::Receiver<Option<Done>>,
    task: tokio::task::AbortHandle,
    lease: Lease,
}

/// A claiming entry in the live set, made by [`SagaEngine::enter`]: while
/// it stands, nothing else in this engine claims or runs its execution.
/// Dropped without a launch, it removes its entry (and only its own).
struct Claiming {
    inner: Arc<EngineInner>,
    id: ExecutionId,
    slot: u64,
    launched: bool,
}

impl Drop for Claiming {
    fn drop(&mut self) {
        if self.launched {
            return;
        }
        let mut live = self
            .inner
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if live.get(&self.id).is_some_and(|l| l.slot == self.slot) {
            live.remove(&self.id);
        }
    }
}

/// How a run in this process ended: its report, or why it stopped.
pub(crate) type Done = Result<SagaReport, String>;

impl std::fmt::Debug for SagaEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaEngine")
            .field("store", &self.inner.store.describe())
            .field("owner", &self.inner.owner)
            .finish()
    }
}

impl SagaEngine {
    /// An engine on `store`, with a 10 s lease and a 7-day retention.
    pub fn new(store: impl SagaStore) -> Self {
        Self::with_store(Arc::new(store))
    }

    /// An engine on a shared store.
    pub fn with_store(store: Arc<dyn SagaStore>) -> Self {
        let owner = format!("pid{}-{}", std::process::id(), ExecutionId::generate());
        SagaEngine {
            inner: Arc::new(EngineInner {
                store,
                owner,
                registry: RwLock::new(Registry::default()),
                live: Mutex::new(HashMap::new()),
                slots: AtomicU64::new(0),
            }),
            lease_ttl: Duration::from_secs(10),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }

    /// Sets how long an owner's lease on an execution lasts without a
    /// write or renewal (default 10 s; renewed every third of it while the
    /// execution runs). After a crash, another owner can take an execution
    /// over once its lease expired. At least 30 ms.
    #[must_use]
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(30));
        self
    }

    /// Sets how long finished executions stay in the store before
    /// [`purge`](Self::purge) deletes them (default 7 days).
    #[must_use]
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// The id this engine writes in the leases it holds.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SagaStore> {
        &self.inner.store
    }

    /// Registers a definition: its shape is recorded in the store under its
    /// fingerprint, and it becomes the version that `start(name, ..)` runs.
    /// Registering an older version too lets `recover` carry on executions
    /// started with it. Returns the fingerprint.
    ///
    /// # Errors
    /// [`EngineError::OutputNotDurable`] for a step whose output cannot be
    /// logged; [`EngineError::Store`] if the store fails.
    pub async fn register<C>(&self, saga: Saga<C>) -> Result<String, EngineError>
    where
        C: Serialize + DeserializeOwned + Send + 'static,
    {
        if let Some(step) = saga.inner.steps.iter().find(|s| s.codec.is_none()) {
            return Err(EngineError::OutputNotDurable {
                saga: saga.name().to_owned(),
                step: step.name.to_string(),
                output: step.output_type,
            });
        }
        let (shape, fingerprint) = describe(&saga);
        self.inner
            .store
            .put_definition(DefinitionRecord {
                fingerprint: fingerprint.clone(),
                saga: saga.name().to_owned(),
                shape,
            })
            .await?;
        let runner: Arc<dyn Runner> = Arc::new(Typed {
            saga,
            fingerprint: fingerprint.clone(),
        });
        let mut registry = self.registry_mut();
        registry
            .by_name
            .insert(runner.name().to_owned(), Arc::clone(&runner));
        registry.by_fingerprint.insert(fingerprint.clone(), runner);
        Ok(fingerprint)
    }

    /// Starts an execution of the saga registered as `name` on `ctx`, with
    /// a fresh id; returns at once with the id (see [`wait`](Self::wait)).
    ///
    /// # Errors
    /// [`EngineError::UnknownSaga`], [`EngineError::ContextType`], or a
    /// store error.
    pub async fn start<C>(&self, name: &str, ctx: C) -> Result<ExecutionId, EngineError>
    where
        C: Serialize + DeserializeOwned + Send + 'static,
    {
        self.start_with_id(name, ExecutionId::generate(), ctx).await
    }

    /// Starts an execution with the caller's id (an order number, a request
    /// id). Idempotent: if an execution of this saga with that id exists,
    /// nothing starts and its id is returned.
    ///
    /// # Errors
    /// As [`start`](Self::start), and [`EngineError::IdTaken`] if the id
    /// belongs to another saga's execution.
    pub async fn start_with_id<C>(
        &self,
        name: &str,
        id: impl Into<ExecutionId>,
        ctx: C,
    ) -> Result<ExecutionId, EngineError>
    where
        C: Serialize + DeserializeOwned + Send + 'static,
    {
        let id = id.into();
        tokio::runtime::Handle::try_current().map_err(|_| EngineError::NoRuntime)?;
        // The first step's start is committed with the creation: one commit
        // fewer per execution. The journal knows it is there already.
        let mut first = Event::new(1, EventKind::StepStarted);
        first.step = Some(0);
        first.attempt = 1;
        // `None` if this engine runs it already: then it exists, and the
        // creation below writes nothing.
        let claiming = self.enter(&id);
        let created = self.create(name, &id, &ctx, vec![first.clone()]).await?;
        if let Some((runner, context, lease)) = created {
            let Some(claiming) = claiming else {
                self.inner.store.release(&id, &lease).await?;
                return Err(EngineError::Busy {
                    execution_id: id,
                    owner: self.inner.owner.clone(),
                });
            };
            let job = Job {
                id: id.clone(),
                initial_context: context,
                events: vec![first],
                fresh: Some(Box::new(ctx)),
                lease,
                cancel: CancellationToken::new(),
            };
            self.launch(runner, job, claiming)?;
        }
        Ok(id)
    }

    /// Records a new execution with its first `events` and takes its
    /// lease: the registered definition, the context as logged, and the
    /// lease; `None` if an
    /// execution of this saga with that id exists (nothing was written).
    async fn create<C>(
        &self,
        name: &str,
        id: &ExecutionId,
        ctx: &C,
        events: Vec<Event>,
    ) -> Result<Option<(Arc<dyn Runner>, String, Lease)>, EngineError>
    where
        C: Serialize + 'static,
    {
        let runner = self.by_name(name)?;
        if runner.context_type() != TypeId::of::<C>() {
            return Err(EngineError::ContextType {
                saga: name.to_owned(),
                expected: runner.context_type_name(),
                found: type_name::<C>(),
            });
        }
        let context = serde_json::to_string(ctx).map_err(|e| StoreError::Encode {
            what: format!("the context of a new `{name}` execution"),
            detail: e.to_string(),
        })?;
        let created = self
            .inner
            .store
            .create(
                NewExecution {
                    id: id.clone(),
                    saga: name.to_owned(),
                    fingerprint: runner.fingerprint().to_owned(),
                    context: context.clone(),
                    events,
                },
                &self.inner.owner,
                self.lease_ttl,
            )
            .await?;
        match created {
            Created::Existing(existing) if existing.saga != name => Err(EngineError::IdTaken {
                execution_id: id.clone(),
                existing: existing.saga,
                requested: name.to_owned(),
            }),
            Created::Existing(_) => Ok(None),
            Created::New(lease) => Ok(Some((runner, context, lease))),
        }
    }

    /// Submits an execution of the saga registered as `name` for a
    /// [`Worker`](crate::Worker) to run (this process or another): it is
    /// recorded, and its lease left free at once. Returns its id.
    ///
    /// [`wait`](Self::wait) on it waits until a worker (or a
    /// [`recover`](Self::recover)) has run it to its end, however long no
    /// one claims it.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub async fn submit<C>(&self, name: &str, ctx: C) -> Result<ExecutionId, EngineError>
    where
        C: Serialize + DeserializeOwned + Send + 'static,
    {
        self.submit_with_id(name, ExecutionId::generate(), ctx)
            .await
    }

    /// Submits an execution with the caller's id. Idempotent, as
    /// [`start_with_id`](Self::start_with_id).
    ///
    /// # Errors
    /// As [`start_with_id`](Self::start_with_id).
    pub async fn submit_with_id<C>(
        &self,
        name: &str,
        id: impl Into<ExecutionId>,
        ctx: C,
    ) -> Result<ExecutionId, EngineError>
    where
        C: Serialize + DeserializeOwned + Send + 'static,
    {
        let id = id.into();
        // No step has started: the worker that claims it logs the first.
        if let Some((_, _, lease)) = self.create(name, &id, &ctx, Vec::new()).await? {
            // Were this release lost, the lease would expire and a
            // worker's poll would find the execution then.
            self.inner.store.release(&id, &lease).await?;
        }
        Ok(id)
    }

    /// Waits for an execution to end (in this process or another) and
    /// returns its report: the run's own if this engine is running it when
    /// `wait` is called, otherwise one rebuilt from the log (statuses,
    /// outcomes, attempts and errors; durations from the log's timestamps,
    /// to the millisecond, including any time spent waiting for recovery).
    ///
    /// `wait` ends when the execution does, whoever runs it: a run another
    /// owner holds, one [submitted](Self::submit) that no one has run yet,
    /// and one whose owner stopped (a worker shut down and released it,
    /// or a process died and its lease expired) are all waited for until a
    /// [`Worker`](crate::Worker) (of any process, this one included) or a
    /// [`recover`](Self::recover) has carried them to their end, or an
    /// operator [abandoned](Self::abandon) them (the report then says
    /// `abandoned`). A [cancelled](Self::cancel) one ends `cancelled` once
    /// a run picks it up. With no worker and no recovery for its saga, the
    /// wait does not end; bound it with [`tokio::time::timeout`] where that
    /// can happen. While this engine does not run it, `wait` reads the
    /// record every 50 ms.
    ///
    /// # Errors
    /// [`EngineError::NotFound`] for an unknown id;
    /// [`EngineError::Interrupted`] if this engine's run stopped because its
    /// log could not be written (another engine's `wait` goes on waiting
    /// for a recovery); store errors.
    pub async fn wait(&self, id: &ExecutionId) -> Result<SagaReport, EngineError> {
        loop {
            let live = self
                .live()
                .get(id)
                .and_then(|l| l.run.as_ref())
                .map(|run| run.done.clone());
            if let Some(mut done) = live {
                let finished = done
                    .wait_for(Option::is_some)
                    .await
                    .map(|v| v.clone())
                    .ok()
                    .flatten();
                return match finished {
                    Some(Ok(report)) => Ok(report),
                    Some(Err(detail)) => Err(EngineError::Interrupted {
                        execution_id: id.clone(),
                        detail,
                    }),
                    None => Err(EngineError::Interrupted {
                        execution_id: id.clone(),
                        detail: "its run was dropped".to_owned(),
                    }),
                };
            }
            let record = self.record(id).await?;
            if record.status.is_finished() {
                return self.rebuilt_report(&record).await;
            }
            // Run by another owner, or waiting for one to take it: poll.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Carries on every unfinished execution whose lease is free or
    /// expired and whose definition is registered here, from its log.
    /// Executions this engine runs already are left alone.
    ///
    /// # Errors
    /// Store errors while listing; errors of single executions are in
    /// [`Recovery::refused`].
    pub async fn recover(&self) -> Result<Recovery, EngineError> {
        tokio::runtime::Handle::try_current().map_err(|_| EngineError::NoRuntime)?;
        let mut recovery = Recovery::default();
        let mut unfinished = self
            .inner
            .store
            .list(Some(ExecutionStatus::Running))
            .await?;
        unfinished.extend(
            self.inner
                .store
                .list(Some(ExecutionStatus::Compensating))
                .await?,
        );
        for record in unfinished {
            let id = record.id.clone();
            let Some(claiming) = self.enter(&id) else {
                continue;
            };
            match self.take_over(&record, None, false, claiming).await {
                Ok(true) => recovery.resumed.push(id),
                Ok(false) => recovery.busy.push(id),
                Err(error) => {
                    log::error!(target: "saga", "recovery refused execution_id={id} error={error}");
                    recovery.refused.push((id, error));
                }
            }
        }
        // Stuck executions an operator asked to resume from a tool that
        // does not hold the saga's code (`request_resume`).
        for record in self.inner.store.list(Some(ExecutionStatus::Stuck)).await? {
            let id = record.id.clone();
            // One unreadable log must not stop the others' recovery.
            let events = match self.inner.store.events(&id).await {
                Ok(events) => events,
                Err(error) => {
                    recovery.refused.push((id, error.into()));
                    continue;
                }
            };
            if !resume_requested(&events) {
                continue;
            }
            // Only now: a stuck execution no one asked to resume is left
            // free for an operator's command of this engine.
            let Some(claiming) = self.enter(&id) else {
                continue;
            };
            match self
                .take_over(&record, Some(EventKind::Resumed), true, claiming)
                .await
            {
                Ok(true) => recovery.resumed.push(id),
                Ok(false) => recovery.busy.push(id),
                Err(error) => {
                    log::error!(target: "saga", "requested resume refused execution_id={id} error={error}");
                    recovery.refused.push((id, error));
                }
            }
        }
        Ok(recovery)
    }

    /// Asks for a stuck execution to be resumed by whichever worker holds
    /// its definition: records the request in its log, for the next
    /// [`recover`](Self::recover) of such a worker to carry out (as
    /// [`resume`](Self::resume) would). For tools that do not hold the
    /// saga's code, such as the `saga` CLI; an engine with the definition
    /// registered can call `resume` directly.
    ///
    /// # Errors
    /// [`EngineError::NotFound`], [`EngineError::WrongStatus`] if it is not
    /// stuck, [`EngineError::Busy`] if an owner holds it, store errors.
    pub async fn request_resume(&self, id: &ExecutionId) -> Result<(), EngineError> {
        self.operator_event(
            id,
            EventKind::ResumeRequested,
            ExecutionStatus::Stuck,
            resumable,
        )
        .await
    }

    /// Writes an operator's event under the execution's lease, leaving it
    /// `status`, if `applies` holds of it before the claim and again once
    /// the lease is held (its owner may have moved it on meanwhile).
    async fn operator_event(
        &self,
        id: &ExecutionId,
        kind: EventKind,
        status: ExecutionStatus,
        applies: impl Fn(&ExecutionRecord) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        // Held until the lease is given up again.
        let Some(_claiming) = self.enter(id) else {
            return Err(self.busy_here(id));
        };
        applies(&self.record(id).await?)?;
        let store = &self.inner.store;
        let Some(lease) = store.claim(id, &self.inner.owner, self.lease_ttl).await? else {
            return Err(self.busy(id).await);
        };
        let appended = match self.record(id).await {
            Ok(record) => match applies(&record) {
                Ok(()) => {
                    let event = Event::new(record.last_seq + 1, kind);
                    store
                        .append(id, &lease, vec![event], status)
                        .await
                        .map(|_| ())
                        .map_err(EngineError::from)
                }
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        store.release(id, &lease).await?;
        appended
    }

    /// An execution's report, rebuilt from its log and its definition's
    /// stored shape, whatever its status (statuses, outcomes, attempts and
    /// errors; durations from the log's timestamps, to the millisecond,
    /// including any time spent waiting for recovery). Needs no registered
    /// definition: for tools.
    ///
    /// # Errors
    /// [`EngineError::NotFound`], store errors (a definition missing from
    /// the store is a [`StoreError::BadRecord`]).
    pub async fn report(&self, id: &ExecutionId) -> Result<SagaReport, EngineError> {
        let record = self.record(id).await?;
        self.rebuilt_report(&record).await
    }

    /// Executions with `status` (all for `None`), oldest first.
    ///
    /// # Errors
    /// Store errors.
    pub async fn list(
        &self,
        status: Option<ExecutionStatus>,
    ) -> Result<Vec<ExecutionRecord>, EngineError> {
        Ok(self.inner.store.list(status).await?)
    }

    /// An execution and its log.
    ///
    /// # Errors
    /// Store errors.
    pub async fn get(&self, id: &ExecutionId) -> Result<Option<ExecutionView>, EngineError> {
        let Some(record) = self.inner.store.get(id).await? else {
            return Ok(None);
        };
        let events = self.inner.store.events(id).await?;
        Ok(Some(ExecutionView { record, events }))
    }

    /// Runs a stuck execution again, once an operator fixed the cause: the
    /// step (or compensation) that failed for good gets a fresh retry
    /// budget, and the run goes on in the direction it was going.
    ///
    /// # Errors
    /// [`EngineError::WrongStatus`] if it is not stuck, [`EngineError::Busy`]
    /// if another owner holds it, and the errors of
    /// [`recover`](Self::recover).
    pub async fn resume(&self, id: &ExecutionId) -> Result<(), EngineError> {
        let Some(claiming) = self.enter(id) else {
            return Err(self.busy_here(id));
        };
        let record = self.record(id).await?;
        resumable(&record)?;
        match self
            .take_over(&record, Some(EventKind::Resumed), false, claiming)
            .await?
        {
            true => Ok(()),
            false => Err(self.busy(id).await),
        }
    }

    /// Gives an execution up for good: it is marked abandoned and never
    /// run again; nothing is compensated. For a stuck execution that an
    /// operator settled by hand, or one whose definition is gone.
    ///
    /// # Errors
    /// [`EngineError::WrongStatus`] if it ended otherwise,
    /// [`EngineError::Busy`] if an owner is running it.
    pub async fn abandon(&self, id: &ExecutionId) -> Result<(), EngineError> {
        self.operator_event(id, EventKind::Abandoned, ExecutionStatus::Abandoned, |r| {
            if r.status.is_finished() && r.status != ExecutionStatus::Stuck {
                return Err(EngineError::WrongStatus {
                    execution_id: r.id.clone(),
                    status: r.status,
                    operation: "abandon",
                    applies: "stuck or unfinished executions",
                });
            }
            Ok(())
        })
        .await
    }

    /// Asks an execution to cancel. Its owner (this process or another)
    /// sees the request at its next log write: before the pivot the run
    /// rolls back and ends cancelled; after it the request is recorded and
    /// ignored.
    ///
    /// # Errors
    /// [`EngineError::NotFound`], store errors.
    pub async fn cancel(&self, id: &ExecutionId) -> Result<(), EngineError> {
        if !self.inner.store.request_cancel(id).await? {
            return Err(EngineError::NotFound {
                execution_id: id.clone(),
            });
        }
        if let Some(run) = self.live().get(id).and_then(|l| l.run.as_ref()) {
            run.cancel.cancel();
        }
        Ok(())
    }

    /// Deletes executions that finished (completed, compensated, cancelled
    /// or abandoned; never stuck ones) longer ago than the retention;
    /// returns how many.
    ///
    /// # Errors
    /// Store errors.
    pub async fn purge(&self) -> Result<u64, EngineError> {
        let retention = i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
        let before = now_ms().saturating_sub(retention);
        Ok(self.inner.store.purge(before).await?)
    }

    fn registry_mut(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.inner
            .registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn registry(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.inner
            .registry
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<ExecutionId, Live>> {
        self.inner
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes a claiming entry for `id` in the live set, to be made before
    /// the first await of anything that may lead to a run of it; `None` if
    /// this engine is claiming or running it already. Replaces the entry of
    /// a run that stopped (kept for `wait`).
    fn enter(&self, id: &ExecutionId) -> Option<Claiming> {
        let mut live = self.live();
        if live.get(id).is_some_and(Live::active) {
            return None;
        }
        let slot = self.inner.slots.fetch_add(1, Ordering::Relaxed);
        live.insert(id.clone(), Live { slot, run: None });
        Some(Claiming {
            inner: Arc::clone(&self.inner),
            id: id.clone(),
            slot,
            launched: false,
        })
    }

    /// The answer to a command on an execution this engine is claiming or
    /// running.
    fn busy_here(&self, id: &ExecutionId) -> EngineError {
        EngineError::Busy {
            execution_id: id.clone(),
            owner: self.inner.owner.clone(),
        }
    }

    fn by_name(&self, name: &str) -> Result<Arc<dyn Runner>, EngineError> {
        let registry = self.registry();
        registry
            .by_name
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::UnknownSaga {
                name: name.to_owned(),
                registered: sorted(registry.by_name.keys()),
            })
    }

    async fn record(&self, id: &ExecutionId) -> Result<ExecutionRecord, EngineError> {
        self.inner
            .store
            .get(id)
            .await?
            .ok_or_else(|| EngineError::NotFound {
                execution_id: id.clone(),
            })
    }

    async fn busy(&self, id: &ExecutionId) -> EngineError {
        let owner = match self.inner.store.get(id).await {
            Ok(Some(record)) => record.owner.unwrap_or_default(),
            _ => String::new(),
        };
        EngineError::Busy {
            execution_id: id.clone(),
            owner,
        }
    }

    /// Claims an execution and runs it from its log, after checking (before
    /// any write) that its definition is registered and its log decodes.
    /// `mark` is an event to log first (an operator's resume). `false` if
    /// another owner holds its lease.
    /// `requested`: carry out a pending [`request_resume`](Self::request_resume)
    /// (skipped if it is no longer pending).
    async fn take_over(
        &self,
        record: &ExecutionRecord,
        mark: Option<EventKind>,
        requested: bool,
        claiming: Claiming,
    ) -> Result<bool, EngineError> {
        let id = &record.id;
        let runner = self.runner_for(record)?;
        let store = &self.inner.store;
        // A dry run of the decoding, so that a log this build cannot read
        // is refused before the lease is touched.
        let events = store.events(id).await?;
        runner.check(id, &record.context, &events)?;
        let Some(lease) = store.claim(id, &self.inner.owner, self.lease_ttl).await? else {
            return Ok(false);
        };
        // Another owner may have carried it on between the listing and the
        // claim: recovery is for unfinished executions, a resume for stuck
        // ones (and a requested one only while the request is pending).
        let still = move |record: &ExecutionRecord, events: &[Event]| match mark {
            None => !record.status.is_finished(),
            Some(_) => {
                record.status == ExecutionStatus::Stuck && (!requested || resume_requested(events))
            }
        };
        if self
            .launch_claimed(runner, id, lease, mark, still, claiming)
            .await?
            .is_none()
        {
            return Ok(false);
        }
        Ok(true)
    }

    /// The registered definition an execution was started with.
    fn runner_for(&self, record: &ExecutionRecord) -> Result<Arc<dyn Runner>, EngineError> {
        let id = &record.id;
        let registry = self.registry();
        match registry.by_fingerprint.get(&record.fingerprint) {
            Some(runner) => Ok(Arc::clone(runner)),
            None if !registry.by_name.contains_key(&record.saga)
                && !registry
                    .by_fingerprint
                    .values()
                    .any(|r| r.name() == record.saga) =>
            {
                Err(EngineError::UnknownSaga {
                    name: record.saga.clone(),
                    registered: sorted(registry.by_name.keys()),
                })
            }
            None => {
                let mut registered: Vec<String> = registry
                    .by_fingerprint
                    .values()
                    .filter(|r| r.name() == record.saga)
                    .map(|r| r.fingerprint().to_owned())
                    .collect();
                registered.sort();
                Err(EngineError::UnknownDefinition {
                    execution_id: id.clone(),
                    saga: record.saga.clone(),
                    fingerprint: record.fingerprint.clone(),
                    registered,
                })
            }
        }
    }

    /// Runs an execution whose lease this engine holds, from its log (read
    /// again under the lease: it may have grown since it was listed).
    /// `mark` is an event to log first (an operator's resume). `None` if
    /// `still` finds, under the lease, that the run no longer applies.
    /// Gives the lease up if the run does not start.
    async fn launch_claimed(
        &self,
        runner: Arc<dyn Runner>,
        id: &ExecutionId,
        lease: Lease,
        mark: Option<EventKind>,
        still: impl FnOnce(&ExecutionRecord, &[Event]) -> bool,
        claiming: Claiming,
    ) -> Result<Option<watch::Receiver<Option<Done>>>, EngineError> {
        let store = &self.inner.store;
        let started = async {
            let mut events = store.events(id).await?;
            let record = self.record(id).await?;
            if !still(&record, &events) {
                return Ok(None);
            }
            if let Some(kind) = mark {
                let event = Event::new(record.last_seq + 1, kind);
                let phase = fold(id, runner.steps(), &events)?.phase;
                let status = match phase {
                    ResumePhase::Forward => ExecutionStatus::Running,
                    ResumePhase::Rollback { .. } => ExecutionStatus::Compensating,
                };
                store
                    .append(id, &lease, vec![event.clone()], status)
                    .await?;
                events.push(event);
            }
            let cancel = CancellationToken::new();
            if record.cancel_requested {
                cancel.cancel();
            }
            let job = Job {
                id: id.clone(),
                initial_context: record.context.clone(),
                events,
                fresh: None,
                lease: lease.clone(),
                cancel,
            };
            self.launch(runner, job, claiming).map(Some)
        }
        .await;
        if !matches!(started, Ok(Some(_))) {
            let _ = store.release(id, &lease).await;
        }
        started
    }

    /// Runs an execution a worker claimed (see
    /// [`SagaStore::claim_next`](crate::store::SagaStore::claim_next));
    /// returns where its end will be told (`None` if it finished
    /// meanwhile). Gives the lease up if the run does not start (its definition is not registered, its log does not
    /// decode).
    pub(crate) async fn run_claimed(
        &self,
        claimed: Claimed,
    ) -> Result<Option<watch::Receiver<Option<Done>>>, EngineError> {
        let Claimed { record, lease } = claimed;
        let Some(claiming) = self.enter(&record.id) else {
            // Claimed or run by another entry point of this engine: the
            // store's claim makes that one fail or this one stale.
            let _ = self.inner.store.release(&record.id, &lease).await;
            return Ok(None);
        };
        let runner = match self.runner_for(&record) {
            Ok(runner) => runner,
            Err(error) => {
                let _ = self.inner.store.release(&record.id, &lease).await;
                return Err(error);
            }
        };
        // `None` if another owner finished it since the claim's listing.
        self.launch_claimed(
            runner,
            &record.id,
            lease,
            None,
            |r, _| !r.status.is_finished(),
            claiming,
        )
        .await
    }

    /// The fingerprints of every registered definition.
    pub(crate) fn fingerprints(&self) -> Vec<String> {
        sorted(self.registry().by_fingerprint.keys())
    }

    /// The executions this engine runs now.
    pub(crate) fn running(&self) -> Vec<ExecutionId> {
        self.live()
            .iter()
            .filter(|(_, live)| live.active())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The lease time to live.
    pub(crate) fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    /// Stops a run of this engine where it is (as a crash would) and gives
    /// its lease up, so another owner carries it on from its log at once.
    pub(crate) async fn abort_run(&self, id: &ExecutionId) {
        let run = {
            let mut live = self.live();
            match live.get(id) {
                Some(Live { run: Some(_), .. }) => live.remove(id).and_then(|l| l.run),
                _ => None,
            }
        };
        if let Some(run) = run {
            run.task.abort();
            if let Err(error) = self.inner.store.release(id, &run.lease).await {
                log::warn!(target: "saga", "releasing an aborted run's lease failed execution_id={id} error={error}");
            }
        }
    }

    /// Prepares a run (decoding its log) and spawns it, in the place of
    /// its claiming entry; returns where its end will be told.
    fn launch(
        &self,
        runner: Arc<dyn Runner>,
        job: Job,
        mut claiming: Claiming,
    ) -> Result<watch::Receiver<Option<Done>>, EngineError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| EngineError::NoRuntime)?;
        let id = job.id.clone();
        let lease = job.lease.clone();
        let cancel = job.cancel.clone();
        let run = runner.prepare(Arc::clone(&self.inner.store), job)?;
        let (tx, rx) = watch::channel(None);
        let inner = Arc::clone(&self.inner);
        let done = rx.clone();
        let task_lease = lease.clone();
        let task_id = id.clone();
        let slot = claiming.slot;
        // Spawned under the lock, so the task's own removal (which takes
        // the lock) comes after its entry exists.
        let mut live = self.live();
        // One live run per execution: the entry is still the claiming one
        // this run was claimed under.
        debug_assert!(
            live.get(&id)
                .is_some_and(|l| l.slot == slot && l.run.is_none()),
            "a second live run of execution {id}"
        );
        let task = handle.spawn(async move {
            let done = run.await;
            // The final write released the lease already.
            let finished = matches!(&done, Ok(report) if report.status.is_finished());
            if !finished {
                let _ = inner.store.release(&task_id, &task_lease).await;
            }
            // A run stopped by its store stays listed with its error, for
            // `wait`, until a recovery (or a worker) runs it again.
            let interrupted = done.is_err();
            let _ = tx.send(Some(done));
            if !interrupted {
                let mut live = inner.live.lock().unwrap_or_else(PoisonError::into_inner);
                if live.get(&task_id).is_some_and(|l| l.slot == slot) {
                    live.remove(&task_id);
                }
            }
        });
        live.insert(
            id,
            Live {
                slot,
                run: Some(LiveRun {
                    cancel,
                    done: rx,
                    task: task.abort_handle(),
                    lease,
                }),
            },
        );
        drop(live);
        claiming.launched = true;
        Ok(done)
    }

    /// The report of a finished execution, rebuilt from its log and its
    /// definition's stored shape.
    async fn rebuilt_report(&self, record: &ExecutionRecord) -> Result<SagaReport, EngineError> {
        let store = &self.inner.store;
        let shape = match store.definition(&record.fingerprint).await? {
            Some(definition) => serde_json::from_str::<Shape>(&definition.shape).map_err(|e| {
                StoreError::BadRecord {
                    store: store.describe(),
                    what: format!("the definition {}", record.fingerprint),
                    detail: e.to_string(),
                }
            })?,
            None => {
                return Err(StoreError::BadRecord {
                    store: store.describe(),
                    what: format!("execution `{}`", record.id),
                    detail: format!("its definition {} is not stored", record.fingerprint),
                }
                .into());
            }
        };
        let events = store.events(&record.id).await?;
        let folded = fold(&record.id, shape.steps.len(), &events)?;
        let rolled_back = matches!(folded.phase, ResumePhase::Rollback { .. });
        // Durations by the log's timestamps; zero where a span is missing
        // or the clock went back.
        let since = |ms: Option<i64>| Duration::from_millis(ms.map_or(0, |ms| ms.max(0) as u64));
        let spans = logged_durations(shape.steps.len(), &events);
        let run = events
            .first()
            .zip(events.last())
            .map(|(first, last)| last.at_ms - first.at_ms);
        let steps = shape
            .steps
            .iter()
            .zip(folded.steps)
            .zip(spans)
            .map(|((s, f), (action, undo))| StepReport {
                name: s.name.as_str().into(),
                kind: kind_from_label(&s.kind),
                // A rollback passes over a step with nothing to undo that
                // took effect (the log has no event for it), as a live
                // rollback reports it (whether it succeeded or its outcome is
                // unknown).
                status: if rolled_back
                    && kind_from_label(&s.kind) == StepKind::NoUndo
                    && f.outcome.needs_compensation()
                {
                    StepStatus::Skipped
                } else {
                    f.status
                },
                outcome: f.outcome,
                attempts: f.attempts,
                compensation_attempts: f.compensation_attempts,
                duration: since(action),
                compensation_duration: since(undo),
                last_error: f.last_error,
            })
            .collect();
        Ok(SagaReport {
            saga: record.saga.as_str().into(),
            execution_id: record.id.clone(),
            status: record.status,
            steps,
            cancel_ignored: events.iter().any(|e| e.kind == EventKind::CancelIgnored),
            duration: since(run),
        })
    }
}

/// `resume` applies to stuck executions only.
fn resumable(record: &ExecutionRecord) -> Result<(), EngineError> {
    if record.status == ExecutionStatus::Stuck {
        Ok(())
    } else {
        Err(EngineError::WrongStatus {
            execution_id: record.id.clone(),
            status: record.status,
            operation: "resume",
            applies: "stuck executions",
        })
    }
}

/// Whether the last event of a log is a pending resume request.
fn resume_requested(events: &[Event]) -> bool {
    events.last().map(|e| e.kind) == Some(EventKind::ResumeRequested)
}

fn sorted<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut names: Vec<String> = names.cloned().collect();
    names.sort();
    names
}

fn kind_from_label(label: &str) -> StepKind {
    match label {
        "compensable" => StepKind::Compensable,
        "pivot" => StepKind::Pivot,
        "retriable" => StepKind::Retriable,
        _ => StepKind::NoUndo,
    }
}

/// A definition's canonical description: what its fingerprint hashes.
#[derive(Serialize, Deserialize)]
struct Shape {
    /// The description's own format, so it can evolve without colliding.
    format: u32,
    saga: String,
    steps: Vec<ShapeStep>,
}

#[derive(Serialize, Deserialize)]
struct ShapeStep {
    name: String,
    kind: String,
    /// The parallel group it is a branch of.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    group: Option<usize>,
}

/// The canonical description of a definition (JSON: name, steps in order
/// with their kinds and groups) and its fingerprint: SHA-256 of that text,
/// hex. Stable across builds, platforms and compilers; retry policies,
/// timeouts and metadata are not part of it (changing them does not change
/// what a log means).
fn describe<C>(saga: &Saga<C>) -> (String, String) {
    let shape = Shape {
        format: 1,
        saga: saga.name().to_owned(),
        steps: saga
            .shape()
            .into_iter()
            .map(|s| ShapeStep {
                name: s.name,
                kind: s.kind.label().to_owned(),
                group: s.group,
            })
            .collect(),
    };
    // Serializing plain strings and numbers cannot fail.
    let text = serde_json::to_string(&shape).unwrap_or_default();
    let digest = Sha256::digest(text.as_bytes());
    let hex = digest.iter().map(|b| format!("{b:02x}")).collect();
    (text, hex)
}

impl DefinitionRecord {
    /// The steps of the stored shape, in order, as
    /// [`diagram::mermaid`](crate::diagram::mermaid) and tools take them.
    /// The shape keeps names, kinds and parallel groups only: metadata is
    /// empty and `is_async` false.
    ///
    /// # Errors
    /// [`StoreError::BadRecord`] if the stored shape does not parse.
    pub fn steps(&self) -> Result<Vec<StepShape>, StoreError> {
        let shape: Shape =
            serde_json::from_str(&self.shape).map_err(|e| StoreError::BadRecord {
                store: "the store".to_owned(),
                what: format!("the definition {}", self.fingerprint),
                detail: e.to_string(),
            })?;
        Ok(shape
            .steps
            .into_iter()
            .map(|s| StepShape {
                kind: kind_from_label(&s.kind),
                name: s.name,
                is_async: false,
                metadata: crate::step::Metadata::new(),
                group: s.group,
            })
            .collect())
    }
}

impl<C> Saga<C> {
    /// The definition's fingerprint: SHA-256 (hex) of its canonical
    /// description (name, steps in order, their kinds and parallel groups).
    /// A durable execution records it; recovery runs an execution only
    /// under a registered definition with the same fingerprint.
    pub fn fingerprint(&self) -> String {
        describe(self).1
    }
}

/// What a run needs: its log so far and its lease.
struct Job {
    id: ExecutionId,
    initial_context: String,
    events: Vec<Event>,
    /// The caller's context, for a fresh start (no decoding needed).
    fresh: Option<Box<dyn Any + Send>>,
    lease: Lease,
    cancel: CancellationToken,
}

/// A registered definition, type-erased over its context.
trait Runner: Send + Sync {
    fn name(&self) -> &str;
    fn fingerprint(&self) -> &str;
    fn steps(&self) -> usize;
    fn context_type(&self) -> TypeId;
    fn context_type_name(&self) -> &'static str;
    /// Decodes a log without running anything.
    fn check(&self, id: &ExecutionId, initial: &str, events: &[Event]) -> Result<(), EngineError>;
    /// Decodes the log and returns the run, ready to spawn.
    fn prepare(
        self: Arc<Self>,
        store: Arc<dyn SagaStore>,
        job: Job,
    ) -> Result<BoxFuture<'static, Done>, EngineError>;
}

struct Typed<C> {
    saga: Saga<C>,
    fingerprint: String,
}

impl<C> Typed<C>
where
    C: Serialize + DeserializeOwned + Send + 'static,
{
    /// The context and the resume state a log records.
    fn decode(
        &self,
        id: &ExecutionId,
        initial: &str,
        events: &[Event],
    ) -> Result<(C, Option<Resume>), EngineError> {
        let folded = fold(id, self.steps(), events)?;
        let ctx = serde_json::from_str::<C>(folded.context.as_deref().unwrap_or(initial)).map_err(
            |e| EngineError::Undecodable {
                execution_id: id.clone(),
                what: format!("the context (a `{}`)", type_name::<C>()),
                detail: e.to_string(),
            },
        )?;
        if events.is_empty() {
            return Ok((ctx, None));
        }
        let mut outputs: Vec<Option<Output>> = Vec::with_capacity(self.steps());
        for (step, json) in self.saga.inner.steps.iter().zip(&folded.outputs) {
            let output = match (json, &step.codec) {
                (Some(json), Some(codec)) => {
                    Some(
                        (codec.decode)(json).map_err(|detail| EngineError::Undecodable {
                            execution_id: id.clone(),
                            what: format!("the output of step `{}`", step.name),
                            detail,
                        })?,
                    )
                }
                _ => None,
            };
            outputs.push(output);
        }
        Ok((
            ctx,
            Some(Resume {
                steps: folded.steps,
                outputs,
                phase: folded.phase,
            }),
        ))
    }
}

impl<C> Runner for Typed<C>
where
    C: Serialize + DeserializeOwned + Send + 'static,
{
    fn name(&self) -> &str {
        self.saga.name()
    }

    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn steps(&self) -> usize {
        self.saga.inner.steps.len()
    }

    fn context_type(&self) -> TypeId {
        TypeId::of::<C>()
    }

    fn context_type_name(&self) -> &'static str {
        type_name::<C>()
    }

    fn check(&self, id: &ExecutionId, initial: &str, events: &[Event]) -> Result<(), EngineError> {
        self.decode(id, initial, events).map(|_| ())
    }

    fn prepare(
        self: Arc<Self>,
        store: Arc<dyn SagaStore>,
        job: Job,
    ) -> Result<BoxFuture<'static, Done>, EngineError> {
        let fresh = job.fresh.map(|b| b.downcast::<C>());
        // A fresh start's log holds its first step's start, written with
        // the execution.
        let preloaded = matches!(fresh, Some(Ok(_)));
        let (mut ctx, resume) = match fresh {
            Some(Ok(ctx)) => (*ctx, None),
            _ => self.decode(&job.id, &job.initial_context, &job.events)?,
        };
        let next_seq = job.events.last().map_or(1, |e| e.seq + 1);
        Ok(Box::pin(async move {
            let journal = StoreJournal::<C> {
                store: Arc::clone(&store),
                id: job.id.clone(),
                lease: job.lease.clone(),
                state: tokio::sync::Mutex::new(JournalState {
                    next_seq,
                    buffer: Vec::new(),
                    preloaded,
                }),
                cancel: job.cancel.clone(),
                _context: PhantomData,
            };
            let options = RunOptions::new()
                .with_execution_id(job.id.clone())
                .with_cancellation(job.cancel.clone());
            let run = executor::execute_durable(
                &self.saga.inner,
                &mut ctx,
                options,
                false,
                Some(&journal),
                resume,
                None,
            );
            let mut run = std::pin::pin!(run);
            let period = job.lease.ttl / 3;
            let mut renewals =
                tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            let result = loop {
                tokio::select! {
                    result = &mut run => break result,
                    _ = renewals.tick() => match store.renew(&job.id, &job.lease).await {
                        Ok(ack) if ack.cancel_requested => job.cancel.cancel(),
                        Ok(_) => {}
                        // A lost lease fails the run's next write.
                        Err(error) => log::warn!(target: "saga", "lease renewal failed execution_id={} error={error}", job.id),
                    },
                }
            };
            match result {
                Ok(report) => Ok(report),
                Err(crate::SagaError::Store { error, .. }) => Err(error.to_string()),
                Err(error) => Ok(error.report().clone()),
            }
        }))
    }
}

struct JournalState {
    next_seq: u64,
    /// Events written at the next flush: what follows a step's start is
    /// committed with the next start (a step transition) or the end.
    buffer: Vec<Event>,
    /// Whether the first step's first start is in the log already (written
    /// with the execution).
    preloaded: bool,
}

/// The executor's journal on a store: numbers events, buffers them, and
/// commits at every point after which an effect may happen.
struct StoreJournal<C> {
    store: Arc<dyn SagaStore>,
    id: ExecutionId,
    lease: Lease,
    state: tokio::sync::Mutex<JournalState>,
    cancel: CancellationToken,
    _context: PhantomData<fn(&C)>,
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

/// What a log says of an execution.
struct Folded {
    steps: Vec<ResumeStep>,
    outputs: Vec<Option<String>>,
    context: Option<String>,
    phase: ResumePhase,
}

/// Reads a log: each step's state, outputs, the latest context and the
/// direction. A step or compensation that started and never ended is set
/// up to run again as the same attempt, its outcome unknown. After an
/// operator's resume, what failed for good gets a fresh budget.
fn fold(id: &ExecutionId, steps: usize, events: &[Event]) -> Result<Folded, EngineError> {
    let mut folded = Folded {
        steps: (0..steps)
            .map(|_| ResumeStep {
                status: StepStatus::Pending,
                outcome: Outcome::NotStarted,
                attempts: 0,
                compensation_attempts: 0,
                last_error: None,
            })
            .collect(),
        outputs: vec![None; steps],
        context: None,
        phase: ResumePhase::Forward,
    };
    let mut in_flight = vec![false; steps];
    for event in events {
        if event.context.is_some() {
            folded.context.clone_from(&event.context);
        }
        let index = match event.step {
            Some(i) if (i as usize) < steps => Some(i as usize),
            Some(i) => {
                return Err(EngineError::BadLog {
                    execution_id: id.clone(),
                    detail: format!(
                        "event {} names step {i}, but the saga has {steps} steps",
                        event.seq
                    ),
                });
            }
            None => None,
        };
        let step = index.map(|i| (&mut folded.steps[i], &mut in_flight[i]));
        match (event.kind, step) {
            (EventKind::StepStarted, Some((s, flying))) => {
                s.status = StepStatus::Running;
                s.attempts = event.attempt;
                *flying = true;
            }
            (EventKind::StepSucceeded, Some((s, flying))) => {
                s.status = StepStatus::Succeeded;
                s.outcome = Outcome::Applied;
                s.attempts = event.attempt;
                *flying = false;
                folded.outputs[index.unwrap_or_default()].clone_from(&event.output);
            }
            (EventKind::StepFailed, Some((s, flying))) => {
                *flying = false;
                s.attempts = event.attempt;
                if event.outcome_unknown {
                    s.outcome = Outcome::Unknown;
                } else if s.outcome != Outcome::Unknown {
                    s.outcome = Outcome::NotApplied;
                }
                if !event.will_retry {
                    s.status = StepStatus::Failed;
                    s.last_error.clone_from(&event.error);
                }
            }
            (EventKind::RollbackStarted, _) => {
                // A step whose start is followed by the rollback without an
                // end of its own was stopped by a cancellation before it
                // ran (the start's commit brought the request).
                for (s, flying) in folded.steps.iter_mut().zip(&mut in_flight) {
                    if *flying && s.status == StepStatus::Running {
                        *flying = false;
                        s.attempts = s.attempts.saturating_sub(1);
                        s.status = if s.attempts == 0 {
                            StepStatus::Pending
                        } else {
                            StepStatus::Failed
                        };
                    }
                }
                folded.phase = ResumePhase::Rollback {
                    cause: index.map(|i| (i, event.error.clone().unwrap_or_default())),
                };
            }
            (EventKind::CompensationStarted, Some((s, flying))) => {
                s.status = StepStatus::Compensating;
                s.compensation_attempts = event.attempt;
                *flying = true;
            }
            (EventKind::CompensationSucceeded, Some((s, flying))) => {
                s.status = StepStatus::Compensated;
                *flying = false;
            }
            (EventKind::CompensationFailed, Some((s, flying))) => {
                *flying = false;
                s.compensation_attempts = event.attempt;
                if !event.will_retry {
                    s.status = StepStatus::CompensationFailed;
                    s.last_error.clone_from(&event.error);
                }
            }
            (EventKind::Resumed, _) => {
                // Exactly what the resumed phase runs again: going forward,
                // the steps that failed for good; rolling back, the
                // compensations that did (the step whose failure started
                // the rollback stays failed: it is not run again).
                let forward = matches!(folded.phase, ResumePhase::Forward);
                for s in &mut folded.steps {
                    match s.status {
                        StepStatus::Failed if forward => {
                            s.status = StepStatus::Running;
                            s.attempts = 0;
                        }
                        StepStatus::CompensationFailed if !forward => {
                            s.status = StepStatus::Compensating;
                            s.compensation_attempts = 0;
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    // Cut off by a crash: run the same attempt again; it may have taken
    // effect, so its outcome is unknown (sticky, as for a timeout).
    for (s, flying) in folded.steps.iter_mut().zip(in_flight) {
        if !flying {
            continue;
        }
        match s.status {
            StepStatus::Running => {
                s.attempts = s.attempts.saturating_sub(1);
                s.outcome = Outcome::Unknown;
            }
            StepStatus::Compensating => {
                s.compensation_attempts = s.compensation_attempts.saturating_sub(1);
            }
            _ => {}
        }
    }
    Ok(folded)
}
