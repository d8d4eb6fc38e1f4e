//! Runners: a registered definition, type-erased over its context, that
//! decodes a log and makes the run to spawn.

use std::any::{Any, TypeId, type_name};
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::keeper::LeaseKeeper;
use super::{Done, EngineError, JournalState, Shape, Stopped, StoreJournal, fold, took_before};
use crate::cancel::CancellationToken;
use crate::executor::{self, Run};
use crate::gate::BlockingGate;
use crate::id::ExecutionId;
use crate::journal::{FlushLock, Resume};
use crate::name::Name;
use crate::saga::{RunOptions, Saga};
use crate::step::{BoxFuture, Output};
use crate::store::{Event, Lease, SagaStore, StoreError};

/// What a run needs: its log so far and its lease.
pub(super) struct Job {
    pub(super) id: ExecutionId,
    pub(super) initial_context: String,
    /// The length of the last context the log holds (or of the caller's,
    /// encoded at a fresh start): the first encoding's starting room.
    pub(super) context_len: usize,
    /// The log so far; empty for a fresh start, whose log holds only its
    /// first step's start (seq 1), written with the execution.
    pub(super) events: Vec<Event>,
    /// The caller's context, for a fresh start (no decoding needed).
    pub(super) fresh: Option<Box<dyn Any + Send>>,
    pub(super) lease: Lease,
    pub(super) cancel: CancellationToken,
    /// This run appended an operator's resume of the stuck execution: it
    /// is the one to tell `SagaResumed { after_stuck: true }` (a later
    /// take-over of a log ending with that resume is not).
    pub(super) after_stuck: bool,
}

/// A registered definition, type-erased over its context.
pub(super) trait Runner: Send + Sync {
    fn name(&self) -> &str;
    /// [`name`](Self::name) to keep (a literal's is copied, not counted).
    fn saga_name(&self) -> Name;
    fn fingerprint(&self) -> &str;
    /// The canonical description its fingerprint hashes.
    fn shape(&self) -> &Shape;
    fn steps(&self) -> usize;
    /// The name of step `index`.
    fn step_name(&self, index: usize) -> String;
    fn context_type(&self) -> TypeId;
    fn context_type_name(&self) -> &'static str;
    /// The length of the last context a start encoded: the next start's
    /// starting room.
    fn context_len(&self) -> &AtomicUsize;
    /// Tells the log and the definition's observers that execution `id`
    /// ended with `status` without a run (a take-over found a crash loop).
    fn tell_ended_unrun(&self, id: &ExecutionId, status: crate::ExecutionStatus);
    /// Decodes a log without running anything.
    fn check(&self, id: &ExecutionId, initial: &str, events: &[Event]) -> Result<(), EngineError>;
    /// Decodes the log and returns the run, ready to spawn.
    fn prepare(
        self: Arc<Self>,
        store: Arc<dyn SagaStore>,
        job: Job,
    ) -> Result<BoxFuture<'static, Done>, EngineError>;
}

pub(super) struct Typed<C, D> {
    pub(super) saga: Saga<C, D>,
    /// The dependencies, taken from the engine at registration: each run
    /// borrows them.
    pub(super) deps: Arc<D>,
    /// Its canonical description, as stored with the fingerprint.
    pub(super) shape: Shape,
    pub(super) fingerprint: String,
    /// See [`Runner::context_len`].
    pub(super) context_len: AtomicUsize,
    /// The engine's lease keeper, which renews each run's lease.
    pub(super) keeper: LeaseKeeper,
    /// The engine's gate, which its runs' sync steps pass on a
    /// multi-thread runtime.
    pub(super) gate: Arc<BlockingGate>,
    /// Its first step with a sync action or compensation, if any: what a
    /// run on a current-thread runtime is warned of.
    pub(super) sync_step: Option<crate::Name>,
    /// Whether a run of it was found on a current-thread runtime with
    /// `sync_step`, and told (once per registration).
    pub(super) one_thread_told: std::sync::atomic::AtomicBool,
}

impl<C, D> Typed<C, D>
where
    C: Serialize + DeserializeOwned + Send + 'static,
    D: Send + Sync + 'static,
{
    /// The gate a run polled here passes its sync steps through: the
    /// engine's on a multi-thread runtime. On a current-thread one there
    /// is none, and a sync step holds the only thread: no lease is renewed
    /// while it runs, so one longer than the lease is taken over and run
    /// again by another process (documented, but silent until a crash loop
    /// ends it stuck): said once per registration, at the first such run.
    fn gate_here(&self) -> Option<Arc<BlockingGate>> {
        let gate = BlockingGate::of_current_runtime(&self.gate);
        let Some(step) = self.sync_step.as_ref().filter(|_| gate.is_none()) else {
            return gate;
        };
        let one_thread = tokio::runtime::Handle::try_current().is_ok_and(|handle| {
            handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread
        });
        if one_thread
            && !self
                .one_thread_told
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            log::warn!(target: "saga", saga:% = crate::escape::Escaped(self.saga.name()), step:% = crate::escape::Escaped(step); "sync step on a current-thread runtime: while it runs nothing else on the runtime runs, lease renewals included, so a step longer than the lease is taken over and run again by another process; run durable sagas with sync steps on a multi-thread runtime");
        }
        gate
    }

    /// The context and the resume state a log records.
    pub(super) fn decode(
        &self,
        id: &ExecutionId,
        initial: &str,
        events: &[Event],
    ) -> Result<(C, Option<Resume>), EngineError> {
        let mut folded = fold(id, self.steps(), events)?;
        let ctx = serde_json::from_str::<C>(folded.context.as_deref().unwrap_or(initial)).map_err(
            |e| EngineError::Undecodable {
                execution_id: id.clone(),
                what: format!("the context (a `{}`)", type_name::<C>()),
                detail: crate::redact::decode_message(&e.to_string()),
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
                            detail: crate::redact::decode_message(&detail),
                        })?,
                    )
                }
                _ => None,
            };
            outputs.push(output);
        }
        let took = took_before(&mut folded.steps, events, crate::store::now_ms());
        Ok((
            ctx,
            Some(Resume {
                took,
                steps: folded.steps,
                outputs,
                phase: folded.phase,
                cancel_ignored: folded.cancel_ignored,
                after_stuck: false,
            }),
        ))
    }
}

impl<C, D> Runner for Typed<C, D>
where
    C: Serialize + DeserializeOwned + Send + 'static,
    D: Send + Sync + 'static,
{
    fn name(&self) -> &str {
        self.saga.name()
    }

    fn saga_name(&self) -> Name {
        self.saga.inner.name.clone()
    }

    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn shape(&self) -> &Shape {
        &self.shape
    }

    fn steps(&self) -> usize {
        self.saga.inner.steps.len()
    }

    fn step_name(&self, index: usize) -> String {
        self.saga
            .inner
            .steps
            .get(index)
            .map_or_else(|| format!("#{index}"), |step| step.name.to_string())
    }

    fn context_type(&self) -> TypeId {
        TypeId::of::<C>()
    }

    fn context_type_name(&self) -> &'static str {
        type_name::<C>()
    }

    fn context_len(&self) -> &AtomicUsize {
        &self.context_len
    }

    fn check(&self, id: &ExecutionId, initial: &str, events: &[Event]) -> Result<(), EngineError> {
        self.decode(id, initial, events).map(|_| ())
    }

    fn tell_ended_unrun(&self, id: &ExecutionId, status: crate::ExecutionStatus) {
        let run = || crate::RunInfo {
            saga: &self.saga.inner.name,
            execution_id: id,
        };
        let event = crate::SagaEvent::SagaFinished {
            status,
            elapsed: Duration::ZERO,
        };
        crate::logging::log_event(run, &event, || Duration::ZERO);
        crate::logging::tell(self.saga.inner.observers.iter(), &run(), &event);
    }

    fn prepare(
        self: Arc<Self>,
        store: Arc<dyn SagaStore>,
        job: Job,
    ) -> Result<BoxFuture<'static, Done>, EngineError> {
        // A fresh start's span hangs under its caller's, current now (this
        // runs inside `start`); a claimed run's is a root.
        #[cfg(feature = "tracing")]
        let origin = match job.fresh {
            Some(_) => crate::spans::Origin::Caller(tracing::Span::current()),
            None => crate::spans::Origin::Claimed {
                resumed: !job.events.is_empty(),
            },
        };
        let fresh = job.fresh.map(|b| b.downcast::<C>());
        // A fresh start's log holds its first step's start, written with
        // the execution.
        let preloaded = matches!(fresh, Some(Ok(_)));
        let (mut ctx, mut resume) = match fresh {
            Some(Ok(ctx)) => (*ctx, None),
            _ => self.decode(&job.id, &job.initial_context, &job.events)?,
        };
        if let Some(resume) = &mut resume {
            resume.after_stuck = job.after_stuck;
        }
        let next_seq = match job.events.last() {
            Some(last) => last.seq + 1,
            None if preloaded => 2,
            None => 1,
        };
        Ok(Box::pin(async move {
            let journal = StoreJournal::<C> {
                store: Arc::clone(&store),
                id: job.id.clone(),
                lease: job.lease.clone(),
                state: std::sync::Mutex::new(JournalState {
                    next_seq,
                    buffer: Vec::new(),
                    preloaded,
                }),
                flushing: FlushLock::new(job.cancel.shared()),
                encoded_len: AtomicUsize::new(job.context_len),
                // Where the run is polled: the runtime it was spawned on.
                gate: self.gate_here(),
                _context: PhantomData,
            };
            let options = RunOptions::new()
                .with_execution_id(job.id.clone())
                .with_cancellation(job.cancel.clone());
            let run = executor::execute(
                &self.saga.inner,
                &*self.deps,
                &mut ctx,
                Run {
                    journal: Some(&journal),
                    resume,
                    #[cfg(feature = "tracing")]
                    origin,
                    ..Run::new(options)
                },
            );
            // Renewed by the engine's keeper, a task of its own, so that on
            // a multi-thread runtime a step that blocks its thread does not
            // stop it.
            let kept = self
                .keeper
                .keep(
                    self.saga.inner.name.clone(),
                    job.id.clone(),
                    job.lease.clone(),
                    job.cancel.clone(),
                )
                .await;
            let result = run.await;
            kept.stop().await;
            match result {
                Ok(report) => Ok(report),
                Err(crate::SagaError::Store { error, .. }) => {
                    let (lease_lost, outage) = (
                        matches!(*error, StoreError::LeaseLost { .. }),
                        matches!(*error, StoreError::Unavailable { .. }),
                    );
                    let detail = error.to_string();
                    let (saga, execution, cause) = (
                        crate::escape::Escaped(&self.saga.inner.name),
                        crate::escape::Escaped(job.id.as_str()),
                        crate::escape::Escaped(&detail),
                    );
                    // Its record still says running: say why it stopped.
                    if lease_lost || outage {
                        log::warn!(target: "saga", saga:% = saga, execution:% = execution, error:% = cause; "run stopped: its log could not be written; it is carried on from its log (by its new owner, or once the store is back)");
                    } else {
                        log::error!(target: "saga", saga:% = saga, execution:% = execution, error:% = cause; "run stopped: its log could not be written; the execution stays running until the cause is fixed and it is taken over");
                    }
                    Err(Stopped {
                        lease_lost,
                        outage,
                        detail,
                    })
                }
                Err(error) => Ok(error.report().clone()),
            }
        }))
    }
}
