//! [`SagaEngine`]: durable execution. A registry of saga definitions by
//! name, joined to a [`SagaStore`] that logs every execution, so that a
//! crashed process's sagas are carried on by the next one.
//!
//! The engine runs each execution on the tokio runtime it is called from;
//! its methods must be called inside one.
//!
//! It joins the executor (which knows no store) and a store (which knows no
//! executor) through the log's vocabulary in `crate::journal`:
//!
//! - `mod.rs`: [`SagaEngine`], its registry, start / submit / wait / recover
//! - `error.rs`: [`EngineError`]
//! - `live.rs`: the live set; claiming and launching runs
//! - `ended.rs`: the ends of runs completed lately, for `wait`
//! - `operator.rs`: resume, abandon, cancel, purge, and the reads tools use
//! - `replay.rs`: a log folded back into step states; rebuilt reports
//! - `runner.rs`: a registered definition, erased over its context
//! - `keeper.rs`: the lease keeper, which renews the leases of the runs
//! - `journal.rs`: the executor's journal on a store
//! - `shape.rs`: a definition's shape and fingerprint

use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cancel::CancellationToken;
use crate::id::ExecutionId;
use crate::report::{ExecutionStatus, SagaReport};
use crate::saga::Saga;
use crate::store::{
    Created, DefinitionRecord, Event, EventKind, ExecutionRecord, Lease, ListQuery, NewExecution,
    SagaStore, StoreError,
};
use tokio::sync::watch;

mod crash;
mod ended;
mod error;
mod journal;
mod keeper;
mod live;
mod operator;
mod outage;
mod replay;
mod runner;
mod shape;

pub use error::{EngineError, WaitError};
use journal::{JournalState, StoreJournal};
use live::{Claiming, Live};
pub(crate) use live::{Done, Stopped, declared};
use replay::{fold, resume_requested, took_before};
use runner::{Job, Runner, Typed};
use shape::{Shape, describe, kind_from_label};

/// What [`SagaEngine::recover`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Executions this engine took over and is running again.
    pub resumed: Vec<ExecutionId>,
    /// Executions whose lease another live owner holds (a crashed owner's
    /// lease frees itself when it expires: recover again then).
    pub busy: Vec<ExecutionId>,
    /// Executions it refused to run, and why; their records are untouched.
    pub refused: Vec<(ExecutionId, EngineError)>,
}

/// [`EngineError::DuplicateFingerprint`] if `registry` holds `fingerprint`
/// over another context type than `C`.
fn duplicate<C: 'static>(
    registry: &Registry,
    saga: &str,
    fingerprint: &str,
) -> Result<(), EngineError> {
    let clash = registry
        .by_fingerprint
        .get(fingerprint)
        .filter(|r| r.context_type() != TypeId::of::<C>());
    match clash {
        Some(registered) => Err(EngineError::DuplicateFingerprint {
            saga: saga.to_owned(),
            fingerprint: fingerprint.to_owned(),
            registered: registered.context_type_name(),
            given: type_name::<C>(),
        }),
        None => Ok(()),
    }
}

/// Runs `work` in a task of its own on the current runtime and awaits it:
/// a caller that stops awaiting does not cut it short (between a store's
/// commit of a claim and the launch of the run, say). A panic inside is
/// resumed in the caller; with the `tracing` feature, it runs in the
/// caller's current span.
async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, EngineError>> + Send + 'static,
) -> Result<T, EngineError> {
    let handle = tokio::runtime::Handle::try_current().map_err(|_| EngineError::NoRuntime)?;
    // In the caller's span: a fresh start's run hangs under it.
    #[cfg(feature = "tracing")]
    let work = tracing::Instrument::in_current_span(work);
    match handle.spawn(work).await {
        Ok(done) => done,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        // Cancelled: the runtime is shutting down.
        Err(_) => Err(EngineError::NoRuntime),
    }
}

/// A caller-given id for a new execution, checked.
fn given(id: ExecutionId) -> Result<ExecutionId, EngineError> {
    match id.unfit() {
        Some(problem) => Err(EngineError::InvalidId {
            execution_id: id,
            problem,
        }),
        None => Ok(id),
    }
}

/// [`RecoveryReport`]'s name in 0.1.
#[deprecated(since = "0.2.0", note = "renamed `RecoveryReport`")]
pub type Recovery = RecoveryReport;

/// An execution and its log, as [`SagaEngine::get`] shows it.
#[derive(Debug, Clone)]
pub struct ExecutionView {
    /// The execution.
    pub record: ExecutionRecord,
    /// Its log, in order.
    pub events: Vec<Event>,
}

/// Runs durable sagas: every execution is logged in a [`SagaStore`], and
/// after a crash a [`Worker`](crate::Worker) (`Worker::new(engine).spawn()`,
/// the one call a service makes at startup, on every store) carries each
/// unfinished one on from its log; [`recover`](Self::recover) does it
/// once.
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
/// A clone is a handle to the same engine (its runs and owner id, and its
/// registrations until one of them calls
/// [`with_dependencies`](Self::with_dependencies)), but the settings of its `with_*` methods belong to the value
/// they are called on and the clones made after it: configure the engine
/// first, then clone it (`Worker::new(engine.clone())`). A worker given a
/// clone made before [`with_retention`](Self::with_retention) purges with
/// the default 7 days. [`with_sync_steps_at_once`](Self::with_sync_steps_at_once)
/// is the exception: one limit shared by every clone.
///
/// ```
/// use saga_core::{Context, SagaEngine, Saga, Step, StepError, StepInfo};
/// use saga_core::store::MemoryStore;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
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
    /// How many starts of one step attempt without an end make a
    /// take-over end the execution stuck (a crash loop).
    crash_limit: u32,
    /// How many sync steps of its durable runs leave their worker threads
    /// at once (see [`with_sync_steps_at_once`](Self::with_sync_steps_at_once)).
    gate: Arc<crate::gate::BlockingGate>,
    /// The dependencies sagas may declare, one value per type (see
    /// [`with_dependencies`](Self::with_dependencies)).
    dependencies: Dependencies,
    /// The registered definitions: shared by clones, an engine's own from
    /// its last [`with_dependencies`](Self::with_dependencies).
    registry: Arc<RwLock<Registry>>,
}

/// The engine's dependencies: one value per type, each shared with the
/// registered sagas that declare it for the engine's life.
#[derive(Clone, Default)]
struct Dependencies(HashMap<TypeId, (&'static str, Arc<dyn Any + Send + Sync>)>);

impl Dependencies {
    /// The names of the types given, sorted (for an error message).
    fn given(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.0.values().map(|(name, _)| *name).collect();
        names.sort_unstable();
        names
    }

    /// The value of type `D`: `()` is always there.
    fn get<D: Send + Sync + 'static>(&self) -> Option<Arc<D>> {
        if TypeId::of::<D>() == TypeId::of::<()>() {
            let unit: Arc<dyn Any + Send + Sync> = Arc::new(());
            return unit.downcast::<D>().ok();
        }
        self.0
            .get(&TypeId::of::<D>())?
            .1
            .clone()
            .downcast::<D>()
            .ok()
    }
}

struct EngineInner {
    store: Arc<dyn SagaStore>,
    owner: String,
    /// The executions this engine is claiming or running, at most one
    /// entry (so one run) per id: an entry is made before the first await
    /// of whatever may lead to a run, and removed only by whoever made it.
    live: Mutex<HashMap<ExecutionId, Live>>,
    /// The next [`Live::slot`].
    slots: AtomicU64,
    /// The ends of the runs this engine completed lately, for `wait`.
    ended: Mutex<ended::Ended>,
    /// Renews the leases of this engine's runs.
    keeper: keeper::LeaseKeeper,
    /// The `wait`s retrying through an outage of the store, and when
    /// they were last warned of.
    wait_outage: outage::WaitOutage,
    /// Debug builds: the run tasks alive per execution, counted by the
    /// tasks themselves, so the one-live-run rule is checked on what runs,
    /// not on the bookkeeping that is meant to ensure it.
    #[cfg(debug_assertions)]
    tasks: Mutex<HashMap<ExecutionId, u32>>,
}

#[derive(Default, Clone)]
struct Registry {
    /// The latest version registered under each name.
    by_name: HashMap<String, Arc<dyn Runner>>,
    by_fingerprint: HashMap<String, Arc<dyn Runner>>,
}

impl EngineInner {
    /// The ends of the runs completed lately, locked.
    fn ended(&self) -> std::sync::MutexGuard<'_, ended::Ended> {
        self.ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

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
                keeper: keeper::LeaseKeeper::new(Arc::clone(&store)),
                store,
                owner,
                live: Mutex::new(HashMap::new()),
                slots: AtomicU64::new(0),
                ended: Mutex::default(),
                wait_outage: outage::WaitOutage::default(),
                #[cfg(debug_assertions)]
                tasks: Mutex::new(HashMap::new()),
            }),
            lease_ttl: Duration::from_secs(10),
            retention: Duration::from_secs(7 * 24 * 3600),
            crash_limit: 3,
            gate: Arc::new(crate::gate::BlockingGate::new(
                crate::gate::BlockingGate::DEFAULT_STEPS,
            )),
            dependencies: Dependencies::default(),
            registry: Arc::default(),
        }
    }

    /// Gives the engine `deps`, the dependencies (clients, pools,
    /// configuration) of the sagas that declare their type `D`
    /// (`Saga<C, D>`): one value per type, a second call with the same
    /// type replacing the first. Register the sagas after this call: each
    /// keeps its dependencies from its registration for the engine's life,
    /// and every run of it borrows them (no clone per run or per step).
    /// They are never logged, and not part of a saga's fingerprint.
    ///
    /// The engine it returns has a registry of its own, starting with the
    /// definitions registered so far (each with the dependencies it was
    /// registered with): a saga registered on it afterwards is not seen by
    /// the engine it was made from, nor by that engine's other clones, and
    /// the other way round. So `base.clone().with_dependencies(a)` and
    /// `base.clone().with_dependencies(b)` are two engines that may each
    /// register the same saga with their own dependencies, and each runs
    /// the executions it starts with its own. They still share the store,
    /// the owner id and the runs in flight ([`wait`](Self::wait),
    /// [`Worker`](crate::Worker) shutdown): a run carried on by a
    /// [`recover`](Self::recover) or a worker gets the dependencies of the
    /// engine that carries it on. Plain clones share one registry.
    ///
    /// ```
    /// use saga_core::{SagaEngine, Saga, Step, StepError, StepInfo};
    /// use saga_core::store::MemoryStore;
    ///
    /// struct Mailer { from: &'static str }
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let saga = Saga::<String, Mailer>::builder("welcome")
    ///     .step(Step::new("mail", |sent: &mut String, info: &StepInfo<'_, Mailer>| {
    ///         *sent = format!("from {}", info.dependencies().from);
    ///         Ok::<_, StepError>(())
    ///     }))
    ///     .build()?;
    /// let engine = SagaEngine::new(MemoryStore::new()).with_dependencies(Mailer { from: "shop" });
    /// engine.register(saga).await?;
    /// let id = engine.start("welcome", String::new()).await?;
    /// engine.wait(&id).await?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    #[must_use]
    pub fn with_dependencies<D: Send + Sync + 'static>(self, deps: D) -> Self {
        self.with_shared_dependencies(Arc::new(deps))
    }

    /// [`with_dependencies`](Self::with_dependencies) with a value shared
    /// already: a service's `Arc<AppState>` gives the engine the same
    /// value its request handlers use, with no second copy. The sagas
    /// declare `D` (`Saga<C, AppState>`, `dependencies: AppState`), not
    /// `Arc<D>`: `with_dependencies(arc)` would give the engine
    /// dependencies of type `Arc<AppState>`, which no such saga takes.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use saga_core::{SagaEngine, Saga, Step, StepError, StepInfo};
    /// use saga_core::store::MemoryStore;
    ///
    /// struct AppState { greeting: &'static str }
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let state = Arc::new(AppState { greeting: "hello" });
    /// let saga = Saga::<String, AppState>::builder("greet")
    ///     .step(Step::new("greet", |said: &mut String, info: &StepInfo<'_, AppState>| {
    ///         *said = info.dependencies().greeting.to_owned();
    ///         Ok::<_, StepError>(())
    ///     }))
    ///     .build()?;
    /// let engine = SagaEngine::new(MemoryStore::new()).with_shared_dependencies(Arc::clone(&state));
    /// engine.register(saga).await?;
    /// let id = engine.start("greet", String::new()).await?;
    /// engine.wait(&id).await?;
    /// assert_eq!(engine.context::<String>(&id).await?, "hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    #[must_use]
    pub fn with_shared_dependencies<D: Send + Sync + 'static>(mut self, deps: Arc<D>) -> Self {
        self.dependencies
            .0
            .insert(TypeId::of::<D>(), (type_name::<D>(), deps));
        let registered = self.registry().clone();
        self.registry = Arc::new(RwLock::new(registered));
        self
    }

    /// Sets how long an owner's lease on an execution lasts without a
    /// write or renewal (default 10 s; renewed every third of it while the
    /// execution runs, the first time a third to a half of it after the
    /// run began). After a crash, another owner can take an execution
    /// over once its lease expired. At least 30 ms.
    ///
    /// Renewal runs in a task of its own, one per engine and runtime
    /// that renews the leases of all the engine's runs on that runtime. On
    /// a multi-thread runtime it goes on while sync steps run, however
    /// long and however many: the engine runs each sync step of a durable
    /// run in [`tokio::task::block_in_place`], so the runtime's timers and
    /// I/O stay driven (a few microseconds per sync step), a bounded
    /// number at once, the others waiting for their turn without holding
    /// a thread (see [`with_sync_steps_at_once`](Self::with_sync_steps_at_once)).
    /// Async steps blocking every worker thread at once, or a blocked
    /// thread of a current-thread runtime, stop it (for every run on that
    /// runtime), so a step that blocks longer than the ttl there loses its
    /// lease and another owner may run it again meanwhile: give such steps
    /// a multi-thread runtime (and async steps their async clients), or a
    /// ttl longer than they run.
    #[must_use]
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(30));
        self
    }

    /// Sets how many sync steps (and sync compensations) of this engine's
    /// durable runs may block their threads at once on a multi-thread
    /// runtime (default 256, at least 1); the others wait for their turn.
    ///
    /// On a multi-thread runtime each sync step of a durable run runs in
    /// [`tokio::task::block_in_place`], which hands its worker thread's
    /// duties (the runtime's timers and I/O, its other tasks) to a thread
    /// of the runtime's blocking pool, so that the lease keeper and the
    /// store go on while the step blocks (see
    /// [`with_lease_ttl`](Self::with_lease_ttl)). Once that pool is at its
    /// size (tokio's `max_blocking_threads`, 512 by default, shared with
    /// `spawn_blocking` and file I/O) the hand-over cannot happen: the
    /// worker just blocks, and with enough such steps at once every worker
    /// blocks, no timer fires and leases expire mid-step. So at most this
    /// many are in `block_in_place` at once; a step past it waits
    /// asynchronously (holding no thread) for one to end, its start
    /// logged already and its lease renewed meanwhile. The default, 256,
    /// is half tokio's default pool: lower it below your runtime's
    /// `max_blocking_threads` (less what else blocks there) if you build
    /// the runtime with fewer. Engines that share a runtime each have
    /// their own limit, and their steps add up on its pool.
    ///
    /// The limit is the engine's and its clones' (one limit they share),
    /// for every saga registered on them, before or after it is set;
    /// steps already blocking when it is lowered finish, and no new one
    /// starts until fewer than the new limit block. Async steps,
    /// in-memory runs and current-thread runtimes are not bounded by it.
    #[must_use]
    pub fn with_sync_steps_at_once(self, steps: usize) -> Self {
        self.gate.set_steps(steps);
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
    /// fingerprint, and it becomes the version that `start(name, ..)` runs
    /// (of several versions of one saga, the last registered). Registering
    /// an older version too lets this engine's workers (and `recover`)
    /// carry on executions started with it. To roll a deploy back while
    /// the newer version's executions are in flight, deploy the newer
    /// build with the newer version registered first and the older one
    /// last (the newer keeping its own context type and step code):
    /// new executions start on the older, the newer's carry on. Returns
    /// the fingerprint.
    ///
    /// The fingerprint sees the steps, not the context's type nor the
    /// steps' code: declare a version ([`SagaBuilder::version`](crate::SagaBuilder::version))
    /// when those change, or old and new builds run each other's
    /// executions.
    ///
    /// A saga with dependencies (`Saga<C, D>`) is registered only on an
    /// engine given a `D` ([`with_dependencies`](Self::with_dependencies)),
    /// so that an engine (or a [`Worker`](crate::Worker)) that could not
    /// run its executions never takes them.
    ///
    /// # Errors
    /// [`EngineError::MissingDependencies`] for a saga whose dependencies
    /// this engine lacks; [`EngineError::DuplicateFingerprint`] for a
    /// definition whose fingerprint is registered over another context
    /// type (declare versions: [`SagaBuilder::version`](crate::SagaBuilder::version));
    /// [`EngineError::OutputNotDurable`] for a step
    /// whose output cannot be logged; [`EngineError::Store`] if the store
    /// fails. Nothing is registered then.
    pub async fn register<C, D>(&self, saga: Saga<C, D>) -> Result<String, EngineError>
    where
        C: Serialize + DeserializeOwned + Send + 'static,
        D: Send + Sync + 'static,
    {
        let Some(deps) = self.dependencies.get::<D>() else {
            return Err(EngineError::MissingDependencies {
                saga: saga.name().to_owned(),
                dependencies: type_name::<D>(),
                given: self.dependencies.given(),
            });
        };
        if let Some(step) = saga.inner.steps.iter().find(|s| s.codec.is_none()) {
            return Err(EngineError::OutputNotDurable {
                saga: saga.name().to_owned(),
                step: step.name.to_string(),
                output: step.output_type,
            });
        }
        let (shape, text, fingerprint) = describe(&saga);
        // Checked before the store's write and again under the registry's
        // lock: another `register` may have come in meanwhile.
        duplicate::<C>(&self.registry(), saga.name(), &fingerprint)?;
        self.inner
            .store
            .put_definition(DefinitionRecord {
                fingerprint: fingerprint.clone(),
                saga: saga.name().to_owned(),
                shape: text,
            })
            .await?;
        let sync_step = saga
            .inner
            .steps
            .iter()
            .find(|step| {
                !step.action.is_async() || step.undo.as_ref().is_some_and(|undo| !undo.is_async())
            })
            .map(|step| step.name.clone());
        let runner: Arc<dyn Runner> = Arc::new(Typed {
            saga,
            deps,
            shape,
            fingerprint: fingerprint.clone(),
            context_len: AtomicUsize::new(0),
            keeper: self.inner.keeper.clone(),
            gate: Arc::clone(&self.gate),
            sync_step,
            one_thread_told: std::sync::atomic::AtomicBool::new(false),
        });
        let mut registry = self.registry_mut();
        duplicate::<C>(&registry, runner.name(), &fingerprint)?;
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
    /// The start goes on in a task of its own: a caller that stops awaiting
    /// it (a request timed out, a `select!` took another branch) does not
    /// cut it between the store's commit and the run's launch. Once the
    /// execution is recorded, its run goes on whether or not the future is
    /// still awaited, so a retry with the same id finds it running (or
    /// ended), and [`wait`](Self::wait) gives its end. Only a runtime shut
    /// down under it stops it (then, as after a crash, a
    /// [`recover`](Self::recover) or a [`Worker`](crate::Worker) carries it
    /// on).
    ///
    /// Two starts of one id at once, in one engine or several, record it
    /// once and run it once: both return the id (or one of them
    /// [`EngineError::IdTaken`], for two sagas).
    ///
    /// # Errors
    /// As [`start`](Self::start), and [`EngineError::InvalidId`] for an
    /// empty id or one holding a control character (nothing is recorded);
    /// [`EngineError::IdTaken`] if the id
    /// belongs to another saga's execution; [`EngineError::NoRuntime`] if
    /// the runtime shut down under the start; [`EngineError::Busy`] (with
    /// this engine as the owner) if the start recorded the execution but
    /// another call of this engine on the same id (a start whose store call
    /// does not answer) held it longer than the lease's time to live: the
    /// lease is given back, and a [`Worker`](crate::Worker) or
    /// [`recover`](Self::recover) runs the execution (its first step
    /// counts as started once, its outcome unknown).
    pub async fn start_with_id<C>(
        &self,
        name: &str,
        id: impl Into<ExecutionId>,
        ctx: C,
    ) -> Result<ExecutionId, EngineError>
    where
        C: Serialize + DeserializeOwned + Send + 'static,
    {
        let id = given(id.into())?;
        let handle = tokio::runtime::Handle::try_current().map_err(|_| EngineError::NoRuntime)?;
        // Encoded here: the task owns the context, and needs no `C: Sync`.
        let new = self.encode_new(name, &ctx)?;
        let engine = self.clone();
        let name = name.to_owned();
        let (tell, told) = tokio::sync::oneshot::channel();
        let (give_task, task) = tokio::sync::oneshot::channel();
        let work = engine.start_and_run(name, id, new, ctx, task, tell);
        // In the caller's span: a fresh start's run hangs under it.
        #[cfg(feature = "tracing")]
        let work = tracing::Instrument::in_current_span(work);
        let _ = give_task.send(handle.spawn(work).abort_handle());
        match told.await {
            Ok(Ok(started)) => started,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            // Its task dropped untold: the runtime is shutting down.
            Err(_) => Err(EngineError::NoRuntime),
        }
    }

    /// The task of a start: records the execution, tells `tell` (or the
    /// panic that stopped it), and then runs it, `task` being this task's
    /// abort handle. A panic in the run is the task's, as a spawned run's.
    async fn start_and_run<C>(
        self,
        name: String,
        id: ExecutionId,
        new: (Arc<dyn Runner>, String),
        ctx: C,
        task: tokio::sync::oneshot::Receiver<tokio::task::AbortHandle>,
        tell: tokio::sync::oneshot::Sender<std::thread::Result<Result<ExecutionId, EngineError>>>,
    ) where
        C: Serialize + DeserializeOwned + Send + 'static,
    {
        use std::panic::{AssertUnwindSafe, catch_unwind};
        // Boxed, and dropped before the run: the task spawned is small
        // (tokio copies it whole into its cell), and holds one at a time.
        let started = {
            let mut starting = Box::pin(self.start_here(&name, id, new, ctx, task));
            std::future::poll_fn(|cx| {
                match catch_unwind(AssertUnwindSafe(|| starting.as_mut().poll(cx))) {
                    Ok(poll) => poll.map(Ok),
                    Err(panic) => std::task::Poll::Ready(Err(panic)),
                }
            })
            .await
        };
        let (told, run) = match started {
            Ok(Ok((id, run))) => (Ok(Ok(id)), run),
            Ok(Err(error)) => (Ok(Err(error)), None),
            Err(panic) => (Err(panic), None),
        };
        // A caller gone meanwhile does not stop the run.
        let _ = tell.send(told);
        if let Some(run) = run {
            run.await;
        }
    }

    /// [`start_with_id`](Self::start_with_id) up to its run, in the
    /// caller's task (whose abort handle `task` gives): the id, and the
    /// run to await if this start launched one.
    async fn start_here<C>(
        &self,
        name: &str,
        id: ExecutionId,
        new: (Arc<dyn Runner>, String),
        ctx: C,
        task: tokio::sync::oneshot::Receiver<tokio::task::AbortHandle>,
    ) -> Result<
        (
            ExecutionId,
            Option<impl Future<Output = ()> + Send + 'static>,
        ),
        EngineError,
    >
    where
        C: Serialize + DeserializeOwned + Send + 'static,
    {
        // The first step's start is committed with the creation: one commit
        // fewer per execution. The journal knows it is there already.
        let mut first = Event::new(1, EventKind::StepStarted);
        first.step = Some(0);
        first.attempt = 1;
        // `None` if this engine runs it already (then it exists, and the
        // creation below writes nothing), or another start of the same id
        // is under way.
        let claiming = self.enter(&id);
        let created = self.create_encoded(name, &id, new, vec![first]).await?;
        if let Some((runner, lease, context_len)) = created {
            let claiming = match claiming {
                Some(claiming) => claiming,
                // A new execution, so the entry in the way is no run of it
                // but another start of the same id, before its creation:
                // that one finds this creation and launches nothing, and
                // its entry goes once its store call answers. This start
                // runs what it created if that entry goes within a third
                // of the lease's ttl: its lease then lasts until the
                // keeper's first renewal (a third to a half of the ttl
                // after the launch). Later, it could have expired before
                // its first renewal, and the first step run beside a
                // take-over with no write to fence it.
                None => match self.enter_after_start(&id).await {
                    Some(claiming) => claiming,
                    None => {
                        log::warn!(target: "saga", execution:% = crate::escape::Escaped(id.as_str()), waited:? = self.lease_ttl / 3; "start gave up waiting for another start of its id; its lease is given back");
                        let _ = self.inner.store.release(&id, &lease).await;
                        return Err(self.busy_here(&id));
                    }
                },
            };
            let job = Job {
                id: id.clone(),
                // A fresh start runs on `ctx` itself: nothing to decode.
                initial_context: String::new(),
                context_len,
                events: Vec::new(),
                fresh: Some(Box::new(ctx)),
                lease,
                cancel: CancellationToken::new(),
                after_stuck: false,
            };
            // Sent by the caller as soon as it spawned this task.
            let task = task.await.map_err(|_| EngineError::NoRuntime)?;
            let run = self.launch_here(runner, job, claiming, task)?;
            return Ok((id, Some(run)));
        }
        Ok((id, None))
    }

    /// Waits for the entry of another start of `id` to go, and enters in
    /// its place; `None` if it is still there once a third of the lease
    /// ttl has passed (its store call does not answer). Looks every
    /// millisecond at first, then less often, up to every 50 ms.
    async fn enter_after_start(&self, id: &ExecutionId) -> Option<Claiming> {
        use tokio::time::Instant;
        // `None`: a ttl too long for the clock, never reached.
        let deadline = Instant::now().checked_add(self.lease_ttl / 3);
        let mut pause = Duration::from_millis(1);
        loop {
            let next = Instant::now() + pause;
            tokio::time::sleep_until(deadline.map_or(next, |d| d.min(next))).await;
            if let Some(claiming) = self.enter(id) {
                return Some(claiming);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// The registered definition of `name` and `ctx` encoded for a new
    /// execution of it, checked before anything is written.
    fn encode_new<C>(&self, name: &str, ctx: &C) -> Result<(Arc<dyn Runner>, String), EngineError>
    where
        C: Serialize + 'static,
    {
        let runner = self.by_name(name)?;
        if runner.context_type() != TypeId::of::<C>() {
            let other = self
                .registry()
                .by_fingerprint
                .values()
                .filter(|r| r.name() == name && r.context_type() == TypeId::of::<C>())
                // The same one every time, if several take it.
                .min_by(|a, b| a.fingerprint().cmp(b.fingerprint()))
                .map(|r| {
                    let version = r.shape().version.as_deref();
                    format!("{}{}", r.fingerprint(), declared(version))
                });
            return Err(EngineError::ContextType {
                saga: name.to_owned(),
                expected: runner.context_type_name(),
                found: type_name::<C>(),
                other,
            });
        }
        // Sized as this saga's last new context was.
        let context = journal::encode_sized(ctx, runner.context_len()).map_err(|detail| {
            StoreError::Encode {
                what: format!("the context of a new `{name}` execution"),
                detail,
            }
        })?;
        Ok((runner, context))
    }

    /// Records a new execution with its first `events` and takes its
    /// lease, its context encoded by [`encode_new`](Self::encode_new)
    /// (before any await: a future that held the context by reference
    /// across one would not be `Send` for a context that is not `Sync`):
    /// the registered definition, the lease and the length of the encoded
    /// context; `None` if an execution of this saga with that id exists
    /// (nothing was written).
    async fn create_encoded(
        &self,
        name: &str,
        id: &ExecutionId,
        (runner, context): (Arc<dyn Runner>, String),
        events: Vec<Event>,
    ) -> Result<Option<(Arc<dyn Runner>, Lease, usize)>, EngineError> {
        let context_len = context.len();
        let created = self
            .inner
            .store
            .create(
                NewExecution {
                    id: id.clone(),
                    saga: name.to_owned(),
                    fingerprint: runner.fingerprint().to_owned(),
                    context,
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
            Created::New(lease) => {
                // A new execution under an id whose earlier one was purged.
                self.ended().forget(id);
                Ok(Some((runner, lease, context_len)))
            }
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
        let id = given(id.into())?;
        // No step has started: the worker that claims it logs the first.
        let new = self.encode_new(name, &ctx)?;
        if let Some((_, lease, _)) = self.create_encoded(name, &id, new, Vec::new()).await? {
            // Were this release lost, the lease would expire and a
            // worker's poll would find the execution then.
            self.inner.store.release(&id, &lease).await?;
        }
        Ok(id)
    }

    /// Waits for an execution to end (in this process or another) and
    /// returns how it ended, as an in-memory [`Saga::run`] does: its report
    /// if it completed, [`WaitError::Saga`] with the [`SagaError`](crate::SagaError) if it
    /// ended compensated, stuck, cancelled or abandoned. The report is the
    /// run's own if this engine is running it when `wait` is called, or
    /// completed it in the last 10 seconds and its record, read once, says
    /// it completed (at most 1024 such runs are kept; should another engine
    /// purge it and another start the id again, and that run complete,
    /// within those seconds, the earlier run's report is given); otherwise
    /// one rebuilt from the log (statuses, outcomes, attempts and
    /// errors; durations from the log's timestamps, to the millisecond,
    /// including any time spent waiting for recovery). The errors inside a
    /// `SagaError` are always read from the log, in their logged form
    /// ([`LoggedError`](crate::LoggedError)), so this engine, another one on
    /// the same store and a later `wait` all give the same error.
    ///
    /// `wait` ends when the execution does, whoever runs it: a run another
    /// owner holds, one [submitted](Self::submit) that no one has run yet,
    /// one whose owner stopped (a worker shut down and released it, or a
    /// process died and its lease expired), and one whose lease this
    /// engine lost to another owner are all waited for until a
    /// [`Worker`](crate::Worker) (of any process, this one included) or a
    /// [`recover`](Self::recover) has carried them to their end, or an
    /// operator [abandoned](Self::abandon) them ([`SagaError::Abandoned`](crate::SagaError::Abandoned)).
    /// A [cancelled](Self::cancel) one ends cancelled once a run picks it
    /// up. A stuck one whose resume an operator
    /// [requested](Self::request_resume) is waited for until a worker has
    /// run it again; a request no worker carries out (no process registers
    /// its definition, or a worker refused it: see
    /// [`WorkerStats::refused`](crate::WorkerStats::refused) and the log)
    /// keeps the wait going until an operator resumes or abandons the
    /// execution. With no worker and no recovery for its saga, the wait does not
    /// end; bound it with [`tokio::time::timeout`] where that can happen.
    /// While this engine does not run it, `wait` reads the record again
    /// when the store signals a change of status
    /// ([`SagaStore::change_signal`]: PostgreSQL's `LISTEN`), at most every
    /// 50 ms and at least once a second; on a store without the signal
    /// (SQLite, memory), every 50 ms.
    ///
    /// [`Saga::run`]: crate::Saga::run
    ///
    /// # Errors
    /// [`WaitError::Saga`] for an execution that ended and did not
    /// complete; [`WaitError::Engine`] with [`EngineError::NotFound`] for
    /// an unknown id, [`EngineError::RunLost`] if this engine's run stopped
    /// because its log could not be written, other than by an outage or a
    /// lost lease (another engine's `wait` goes on waiting for a
    /// recovery), and store errors other than an outage:
    /// while the store cannot be reached ([`StoreError::Unavailable`], a
    /// database restarting), `wait` reads again every 250 ms, as a
    /// [`Worker`](crate::Worker) does, with one warning per engine every
    /// 30 s (`store unavailable while waiting; retrying`, its `waits`
    /// saying how many of the engine's waits retry), and a run
    /// of this engine that the outage stopped is waited for until a
    /// worker (or a recovery) carries it on. An outage that never ends
    /// (a server gone for good) is waited through for good: bound the
    /// wait with [`tokio::time::timeout`].
    pub async fn wait(&self, id: &ExecutionId) -> Result<SagaReport, WaitError> {
        // Once this engine's run ended other than completed, lost its
        // lease or was stopped by an outage, its entry tells nothing more:
        // the record does.
        let mut read_record = false;
        // The run's own report, of a run of this engine that ended other
        // than completed.
        let mut own: Option<SagaReport> = None;
        // Counted among the engine's waits retrying through an outage,
        // from this wait's first failed read to its next read that works.
        let mut retrying: Option<outage::Retrying<'_>> = None;
        // Subscribed before the first read, so no change after it is missed.
        let mut changes = self.store().change_signal();
        loop {
            let live = if read_record {
                None
            } else {
                self.live()
                    .get(id)
                    .and_then(|l| l.run.as_ref())
                    .map(|run| run.done.clone())
            };
            if let Some(mut done) = live {
                let finished = done
                    .wait_for(Option::is_some)
                    .await
                    .map(|v| v.clone())
                    .ok()
                    .flatten();
                match finished {
                    // The run's own end: a completed run's last write
                    // committed its status, so there is nothing to read.
                    Some(Ok(report)) if report.status == ExecutionStatus::Completed => {
                        return Ok(report);
                    }
                    Some(Ok(report)) => own = Some(report),
                    Some(Err(stopped)) if stopped.lease_lost || stopped.outage => {}
                    Some(Err(stopped)) => {
                        return Err(EngineError::RunLost {
                            execution_id: id.clone(),
                            detail: stopped.detail,
                        }
                        .into());
                    }
                    // Its task is gone (dropped with the runtime it ran
                    // on): a recovery or a worker carries it on, as after
                    // a crash; the record tells when it ends.
                    None => {}
                }
                read_record = true;
            }
            let read = self.record(id).await;
            if read.is_ok() {
                retrying = None;
            }
            let outcome = match read {
                // Stuck, with a resume an operator requested: a worker runs
                // it again, and its end is what is waited for.
                Ok(record) if record.status.is_finished() => {
                    match self.resume_pending(&record).await {
                        Ok(true) => {
                            own = None;
                            until_worth_reading(&mut changes).await;
                            continue;
                        }
                        Ok(false) => {
                            // The run's own report if this engine ran it: one
                            // that ended here, or completed here lately.
                            let report = own.clone().or_else(|| {
                                (record.status == ExecutionStatus::Completed)
                                    .then(|| self.ended().report(id))
                                    .flatten()
                            });
                            self.outcome(&record, report).await
                        }
                        Err(error) => Err(error.into()),
                    }
                }
                // Run by another owner, or waiting for one to take it: read
                // again once it may have changed.
                Ok(_) => {
                    until_worth_reading(&mut changes).await;
                    continue;
                }
                Err(error) => Err(error.into()),
            };
            match outcome {
                // An outage (a database restarting): the execution goes on
                // where its owner is, or is carried on by a worker once the
                // store is back; it is waited for, as workers wait for the
                // store. Logged once per engine every 30 s while it
                // lasts, with the number of its waits that retry (this
                // one an example), not once per wait.
                Err(WaitError::Engine(EngineError::Store(
                    error @ StoreError::Unavailable { .. },
                ))) => {
                    let due = retrying
                        .get_or_insert_with(|| self.inner.wait_outage.retrying())
                        .failed();
                    if let Some(waits) = due {
                        log::warn!(target: "saga", owner:% = crate::escape::Escaped(self.owner()), waits, execution:% = crate::escape::Escaped(id.as_str()), error:% = crate::escape::Escaped(&error.to_string()); "store unavailable while waiting; retrying");
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                outcome => return outcome,
            }
        }
    }

    /// Whether `record` is stuck with a [resume request](Self::request_resume)
    /// that no worker has carried out yet (the last event of its log), or
    /// was read just before its log moved on (a worker carrying the request
    /// out between the two reads): either way, not an end yet.
    async fn resume_pending(&self, record: &ExecutionRecord) -> Result<bool, EngineError> {
        if record.status != ExecutionStatus::Stuck {
            return Ok(false);
        }
        let events = self.inner.store.events(&record.id).await?;
        let moved_on = events.last().is_some_and(|e| e.seq > record.last_seq);
        Ok(moved_on || resume_requested(&events))
    }

    /// The last context the log of an execution holds (the initial one if
    /// no event logged a context yet), decoded as a `C`: a handler's way to
    /// read what a durable run left in its context.
    ///
    /// # Errors
    /// [`EngineError::NotFound`] for an unknown id;
    /// [`EngineError::Undecodable`] if the stored context is not a `C`;
    /// store errors.
    pub async fn context<C: DeserializeOwned>(&self, id: &ExecutionId) -> Result<C, EngineError> {
        let json =
            self.inner
                .store
                .latest_context(id)
                .await?
                .ok_or_else(|| EngineError::NotFound {
                    execution_id: id.clone(),
                })?;
        serde_json::from_str(&json).map_err(|e| EngineError::Undecodable {
            execution_id: id.clone(),
            what: format!("the context (as `{}`)", std::any::type_name::<C>()),
            detail: crate::redact::decode_message(&e.to_string()),
        })
    }

    /// Carries on, once, every unfinished execution whose lease is free or
    /// expired and whose definition is registered here, from its log, and
    /// every stuck one whose resume was [requested](Self::request_resume).
    /// Executions this engine runs already are left alone, and so are
    /// those whose lease is still held (a crashed owner's until it
    /// expires: they are in [`RecoveryReport::busy`]).
    ///
    /// The one-shot call a [`Worker`](crate::Worker) is built on: a
    /// service starts a worker at startup and needs no loop of `recover`
    /// (a loop beside live runs is what the worker's claims do safely). A
    /// take-over that finds a crash loop ends the execution stuck (see
    /// [`Worker::with_crash_limit`](crate::Worker::with_crash_limit); 3
    /// starts here).
    ///
    /// Runs of this engine whose task is gone (dropped with a runtime shut
    /// down mid-step, the engine kept and called on another runtime) are
    /// taken over too, at once: their lease is this engine's own. One
    /// whose lease the store fails to take back (an outage) is in
    /// [`RecoveryReport::refused`] with the store's error, its lease kept
    /// for the next recovery (or worker) to give back.
    ///
    /// Recovery goes on in a task of its own: a caller that stops awaiting
    /// it does not leave an execution claimed and not run; what it took
    /// over runs on.
    ///
    /// # Errors
    /// Store errors while listing; errors of single executions are in
    /// [`RecoveryReport::refused`]; [`EngineError::NoRuntime`] if the
    /// runtime shut down under it.
    pub async fn recover(&self) -> Result<RecoveryReport, EngineError> {
        let engine = self.clone();
        detached(async move { engine.recover_here().await }).await
    }

    /// [`recover`](Self::recover), in the caller's task.
    async fn recover_here(&self) -> Result<RecoveryReport, EngineError> {
        let mut recovery = RecoveryReport::default();
        // Summaries: no context is read until an execution is taken over.
        let store = &self.inner.store;
        let mut unfinished = store
            .list_summaries(ListQuery::new().with_status(ExecutionStatus::Running))
            .await?;
        unfinished.extend(
            store
                .list_summaries(ListQuery::new().with_status(ExecutionStatus::Compensating))
                .await?,
        );
        for summary in unfinished {
            let id = summary.id;
            let Some(claiming) = self.enter(&id) else {
                continue;
            };
            self.recover_one(id, None, claiming, &mut recovery).await;
        }
        // Stuck executions an operator asked to resume from a tool that
        // does not hold the saga's code (`request_resume`); a stuck
        // execution no one asked to resume is left free for an operator's
        // command of this engine.
        for summary in store.resume_requests().await? {
            let id = summary.id;
            let Some(claiming) = self.enter(&id) else {
                continue;
            };
            let mark = Some(EventKind::Resumed);
            self.recover_one(id, mark, claiming, &mut recovery).await;
        }
        Ok(recovery)
    }

    /// Takes over one listed execution for [`recover`](Self::recover): an
    /// unfinished one (`mark` none), or a stuck one whose resume was
    /// requested (`mark` [`EventKind::Resumed`]). Its record (with its
    /// context) is read only now; one purged since the listing is skipped.
    async fn recover_one(
        &self,
        id: ExecutionId,
        mark: Option<EventKind>,
        claiming: Claiming,
        recovery: &mut RecoveryReport,
    ) {
        let record = match self.inner.store.get(&id).await {
            Ok(Some(record)) => record,
            Ok(None) => return,
            Err(error) => {
                recovery.refused.push((id, error.into()));
                return;
            }
        };
        match self
            .take_over(&record, mark, mark.is_some(), claiming)
            .await
        {
            Ok(Some(_)) => recovery.resumed.push(id),
            Ok(None) => recovery.busy.push(id),
            Err(error) => {
                log::error!(target: "saga", saga:% = crate::escape::Escaped(&record.saga), execution:% = crate::escape::Escaped(id.as_str()), error:% = crate::escape::Escaped(&error.to_string()); "recovery refused an execution");
                recovery.refused.push((id, error));
            }
        }
    }

    /// Carries out a pending [`request_resume`](Self::request_resume) of a
    /// stuck execution, for a [`Worker`](crate::Worker): returns where the
    /// resumed run's end will be told, `None` if it is no longer pending
    /// (another owner carried it out, or it is gone) or this engine runs
    /// it already.
    pub(crate) async fn carry_out_resume_request(
        &self,
        id: &ExecutionId,
    ) -> Result<Option<watch::Receiver<Option<Done>>>, EngineError> {
        let Some(mut claiming) = self.enter(id) else {
            return Ok(None);
        };
        claiming.by_worker = true;
        let Some(record) = self.inner.store.get(id).await? else {
            return Ok(None);
        };
        self.take_over(&record, Some(EventKind::Resumed), true, claiming)
            .await
    }

    /// How many times one step attempt may be started without an end
    /// before a take-over ends the execution stuck (at least 1).
    pub(crate) fn set_crash_limit(&mut self, starts: u32) {
        self.crash_limit = starts.max(1);
    }
}

/// Until the record of an execution another owner runs is worth reading
/// again: where the store signals changes of status, once one may have
/// happened (at most every 50 ms, however many executions change: each
/// change wakes every wait) or a second has passed (a notification lost);
/// elsewhere 50 ms.
async fn until_worth_reading(changes: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    tokio::time::sleep(Duration::from_millis(50)).await;
    if let Some(signal) = changes {
        // A change during the sleep above is seen at once.
        let waited = tokio::time::timeout(Duration::from_millis(950), signal.changed()).await;
        if matches!(waited, Ok(Err(_))) {
            // The store dropped its signal: every 50 ms from now on.
            *changes = None;
        }
    }
}
