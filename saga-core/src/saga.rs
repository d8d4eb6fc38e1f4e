//! [`Saga`]: an immutable saga definition, its [`SagaBuilder`], and the
//! [`RunOptions`] of one run.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use crate::cancel::CancellationToken;
use crate::clock::Clock;
use crate::context::Context;
use crate::error::{BuildError, StepError};
use crate::id::ExecutionId;
use crate::observer::SagaObserver;
use crate::policy::RetryPolicy;
pub use crate::step::default_undo_retry;
use crate::step::{Name, Step, StepDef, StepKind, Task};

/// A saga definition: a name and an ordered list of steps.
///
/// Immutable once built, `Send + Sync`, cheap to clone (an `Arc`), and run
/// any number of times, concurrently: every run keeps its state to itself.
///
/// ```
/// use saga_core::{Saga, Step, StepError, StepInfo};
///
/// #[derive(Default)]
/// struct Order { log: Vec<&'static str> }
///
/// let saga = Saga::builder("order")
///     .step(Step::new("create", |o: &mut Order, _: &StepInfo<'_>| {
///         o.log.push("created");
///         Ok::<_, StepError>(())
///     })
///     .undo(|o: &mut Order, _: Option<&()>, _: &StepInfo<'_>| {
///         o.log.push("cancelled");
///         Ok::<_, StepError>(())
///     }))
///     .step(Step::new("charge", |_: &mut Order, _: &StepInfo<'_>| {
///         Err::<(), _>("card declined")
///     }))
///     .build()?;
///
/// let mut order = Order::default();
/// let err = saga.run_blocking(&mut order).unwrap_err();
/// assert_eq!(order.log, ["created", "cancelled"]);
/// assert_eq!(err.to_string(), "saga `order` failed at step `charge` and was rolled back (compensated: create)");
/// // The step's own error is the source.
/// use std::error::Error;
/// assert_eq!(err.source().unwrap().to_string(), "card declined");
/// # Ok::<(), saga_core::BuildError>(())
/// ```
pub struct Saga<C = Context, D = ()> {
    pub(crate) inner: Arc<SagaInner<C, D>>,
}

pub(crate) struct SagaInner<C, D> {
    pub(crate) name: Name,
    /// The version the user declared ([`SagaBuilder::version`]).
    pub(crate) version: Option<Box<str>>,
    /// Every step, group branches included, in definition order; reports
    /// and outputs are indexed the same way.
    pub(crate) steps: Vec<StepDef<C, D>>,
    /// The order of execution: single steps and parallel groups.
    pub(crate) nodes: Vec<Node<C>>,
    pub(crate) observers: Vec<Arc<dyn SagaObserver>>,
    pub(crate) undo_retry: RetryPolicy,
    pub(crate) continue_on_compensation_failure: bool,
    pub(crate) has_async: bool,
    /// Marks the errors that come unmarked ([`SagaBuilder::classify_errors`]).
    pub(crate) classify: Option<Classify>,
}

/// A saga's error classifier ([`SagaBuilder::classify_errors`]).
pub(crate) type Classify = Arc<dyn Fn(StepError) -> StepError + Send + Sync>;

impl<C, D> SagaInner<C, D> {
    /// Gives `error`, the error of a step's or a compensation's attempt, to
    /// the saga's classifier if it carries no mark (neither permanent nor
    /// of unknown outcome: a timeout, a panic and an interruption are of
    /// unknown outcome already).
    pub(crate) fn classify(&self, error: &mut StepError) {
        let Some(classify) = &self.classify else {
            return;
        };
        if error.is_permanent() || error.is_outcome_unknown() {
            return;
        }
        let unmarked = std::mem::replace(error, StepError::interrupted());
        *error = classify(unmarked);
    }
}

impl<C, D> Clone for Saga<C, D> {
    fn clone(&self) -> Self {
        Saga {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C, D> fmt::Debug for Saga<C, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let steps: Vec<(&str, &str)> = self
            .inner
            .steps
            .iter()
            .map(|s| (&*s.name, s.kind.label()))
            .collect();
        f.debug_struct("Saga")
            .field("name", &self.inner.name)
            .field("steps", &steps)
            .finish()
    }
}

/// One node of a definition: a step, or a group of steps run at once.
pub(crate) enum Node<C> {
    Step(usize),
    Group {
        range: Range<usize>,
        ops: GroupOps<C>,
    },
}

/// How a parallel group's branches share the context: made where `C: Sync`
/// is known (the builder's [`parallel`](SagaBuilder::parallel)), so the
/// executor itself needs only `C: Send`. It hands the branches a
/// [`SharedContext`], which is `Sync` whatever the executor knows of `C`.
///
/// `run` serves the branches' actions, `compensate` their compensations:
/// the same function today, in two fields so a definition copied field by
/// field (the test kit's) names both uses.
pub(crate) struct GroupOps<C> {
    pub(crate) run: Share<C>,
    pub(crate) compensate: Share<C>,
}

/// A group's context as its branches get it (see [`GroupOps`]).
pub(crate) type Share<C> = for<'a> fn(&'a C) -> &'a dyn SharedContext<C>;

impl<C: Sync> GroupOps<C> {
    pub(crate) fn new() -> Self {
        GroupOps {
            run: share::<C>,
            compensate: share::<C>,
        }
    }
}

fn share<C: Sync>(ctx: &C) -> &dyn SharedContext<C> {
    ctx
}

/// The context of a parallel group's branches: `&C` behind a trait object
/// that is `Sync`, made only where `C: Sync` (see [`GroupOps`]).
pub(crate) trait SharedContext<C>: Sync {
    fn context(&self) -> &C;
}

impl<C: Sync> SharedContext<C> for C {
    fn context(&self) -> &C {
        self
    }
}

/// A group of steps that run at once: the branches of a saga's fork.
///
/// Branches share the context (`&C`), so a data race is impossible by
/// construction; build them with [`Step::shared`] or [`Step::shared_async`]
/// and give them compensations with [`Step::undo_shared`] (or its
/// async twin). A branch keeps what its compensation needs in its own
/// output. Async branches run concurrently; sync branches run one after
/// another, each to completion (a sync step cannot yield).
///
/// When a branch fails, the group stops its siblings' retries, drops the
/// siblings marked [`cancel_safe`](Step::cancel_safe) (their outcome becomes
/// unknown) and waits for the others; then the rollback compensates, at
/// once, every branch that took effect or may have, and then the steps
/// before the group in reverse order.
///
/// ```
/// use saga_core::{Parallel, Saga, Step, StepError, StepInfo};
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// #[derive(Default)]
/// struct Trip { booked: AtomicU32 }
///
/// let book = |name: &'static str| {
///     Step::shared(name, |t: &Trip, _: &StepInfo<'_>| {
///         t.booked.fetch_add(1, Ordering::SeqCst);
///         Ok::<_, StepError>(())
///     })
///     .undo_shared(|t: &Trip, _: Option<&()>, _: &StepInfo<'_>| {
///         t.booked.fetch_sub(1, Ordering::SeqCst);
///         Ok::<_, StepError>(())
///     })
/// };
/// let saga = Saga::builder("trip")
///     .parallel(Parallel::new().step(book("hotel")).step(book("flight")))
///     .build()
///     .unwrap();
/// let mut trip = Trip::default();
/// saga.run_blocking(&mut trip).unwrap();
/// assert_eq!(trip.booked.load(Ordering::SeqCst), 2);
/// ```
pub struct Parallel<C, D = ()> {
    steps: Vec<StepDef<C, D>>,
}

impl<C: 'static, D: 'static> Default for Parallel<C, D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: 'static, D: 'static> Parallel<C, D> {
    /// An empty group; an empty group is a [`BuildError::EmptyGroup`].
    pub fn new() -> Self {
        Parallel { steps: Vec::new() }
    }

    /// Adds a branch.
    #[must_use]
    pub fn step<T: Send + Sync + 'static>(mut self, step: Step<C, T, D>) -> Self {
        self.steps.push(step.into_def());
        self
    }

    /// Adds the branch a [`Task`] describes (see [`Step::from_task`]).
    #[must_use]
    pub fn task<K: Task<C, D>>(self, task: K) -> Self {
        self.step(Step::from_task(task))
    }
}

/// A step of a definition as tools see it: name, kind, and what it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepShape {
    /// The step's name.
    pub name: String,
    /// Its kind.
    pub kind: StepKind,
    /// Whether it is async.
    pub is_async: bool,
    /// Its metadata.
    pub metadata: crate::step::Metadata,
    /// The parallel group it is a branch of (numbered from 0 in definition
    /// order), if any.
    pub group: Option<usize>,
}

impl<C, D> Saga<C, D> {
    /// Starts a definition named `name`.
    pub fn builder(name: impl Into<Name>) -> SagaBuilder<C, D> {
        SagaBuilder {
            name: name.into(),
            version: None,
            steps: Vec::new(),
            nodes: Vec::new(),
            observers: Vec::new(),
            undo_retry: default_undo_retry(),
            continue_on_compensation_failure: false,
            classify: None,
        }
    }

    /// The saga's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The version declared with [`SagaBuilder::version`], if any.
    pub fn version(&self) -> Option<&str> {
        self.inner.version.as_deref()
    }

    /// The steps in order, as tools see them.
    pub fn shape(&self) -> Vec<StepShape> {
        let mut groups = vec![None; self.inner.steps.len()];
        let ranges = self.inner.nodes.iter().filter_map(|node| match node {
            Node::Group { range, .. } => Some(range.clone()),
            Node::Step(_) => None,
        });
        for (group, range) in ranges.enumerate() {
            for slot in &mut groups[range] {
                *slot = Some(group);
            }
        }
        self.inner
            .steps
            .iter()
            .zip(groups)
            .map(|(s, group)| StepShape {
                name: s.name.to_string(),
                kind: s.kind,
                is_async: s.action.is_async(),
                metadata: s.metadata.clone(),
                group,
            })
            .collect()
    }
}

/// Builds a [`Saga`]; [`build`](SagaBuilder::build) checks the definition.
pub struct SagaBuilder<C, D = ()> {
    name: Name,
    version: Option<Box<str>>,
    steps: Vec<StepDef<C, D>>,
    nodes: Vec<Node<C>>,
    observers: Vec<Arc<dyn SagaObserver>>,
    undo_retry: RetryPolicy,
    continue_on_compensation_failure: bool,
    classify: Option<Classify>,
}

/// Renamed to [`default_undo_retry`].
#[deprecated(since = "0.2.0", note = "renamed to `default_undo_retry`")]
pub fn default_compensation_retry() -> RetryPolicy {
    default_undo_retry()
}

impl<C: 'static, D: 'static> SagaBuilder<C, D> {
    /// Adds a step: compensable if it has a compensation, one with nothing
    /// to undo otherwise, retriable if it comes after the pivot.
    #[must_use]
    pub fn step<T: Send + Sync + 'static>(mut self, step: Step<C, T, D>) -> Self {
        self.nodes.push(Node::Step(self.steps.len()));
        self.steps.push(step.into_def());
        self
    }

    /// Adds a group of steps that run at once (see [`Parallel`]).
    #[must_use]
    pub fn parallel(mut self, group: Parallel<C, D>) -> Self
    where
        C: Send + Sync,
    {
        let start = self.steps.len();
        self.steps.extend(group.steps);
        self.nodes.push(Node::Group {
            range: start..self.steps.len(),
            ops: GroupOps::new(),
        });
        self
    }

    /// Adds the pivot: the point of no return. It has no compensation; once
    /// it succeeds the saga only goes forward.
    #[must_use]
    pub fn pivot<T: Send + Sync + 'static>(mut self, step: Step<C, T, D>) -> Self {
        self.nodes.push(Node::Step(self.steps.len()));
        self.steps.push(step.into_pivot());
        self
    }

    /// Adds the step a [`Task`] describes (see [`Step::from_task`]): the
    /// pivot if it says `PIVOT`.
    #[must_use]
    pub fn task<K: Task<C, D>>(self, task: K) -> Self {
        self.step(Step::from_task(task))
    }

    /// Declares the definition's version, a label of your choosing (`"2"`,
    /// `"2026-12-07"`), made part of its [fingerprint](Saga::fingerprint).
    ///
    /// The fingerprint sees the saga's name and its steps' names, kinds,
    /// order and groups, not the context's type nor what a step's code
    /// does. A durable execution runs only under a definition with its
    /// fingerprint, so a change that keeps the steps but changes the
    /// context (a field added, renamed or removed) or a step's meaning
    /// needs a new version: without one, a process of the old build and
    /// one of the new run each other's executions during a rolling
    /// upgrade (the old build dropping the new fields it does not know).
    /// Bump it with such a change, and register the old definition beside
    /// the new one while executions of it are in flight (see
    /// [`SagaEngine::register`](crate::SagaEngine::register)).
    ///
    /// A saga without a version keeps the fingerprint it had before
    /// versions existed. Give a version of the saga, not of the service
    /// (`env!("CARGO_PKG_VERSION")` would change the fingerprint at every
    /// release, leaving the executions in flight to the build before).
    #[must_use]
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into().into_boxed_str());
        self
    }

    /// Sets the retry policy of compensations that have none of their own
    /// (default: [`default_undo_retry`]). A policy that does not set its
    /// number of attempts keeps the default's 3.
    #[must_use]
    pub fn undo_retry(mut self, policy: RetryPolicy) -> Self {
        self.undo_retry = policy.or_attempts(default_undo_retry().max_attempts());
        self
    }

    /// Renamed to [`undo_retry`](Self::undo_retry).
    #[deprecated(since = "0.2.0", note = "renamed to `SagaBuilder::undo_retry`")]
    #[must_use]
    pub fn compensation_retry(self, policy: RetryPolicy) -> Self {
        self.undo_retry(policy)
    }

    /// When a compensation fails for good: `false` (the default) halts the
    /// rollback there, leaving the remaining compensations in order for an
    /// operator; `true` attempts the remaining ones anyway. The run ends
    /// stuck either way.
    #[must_use]
    pub fn continue_on_compensation_failure(mut self, yes: bool) -> Self {
        self.continue_on_compensation_failure = yes;
        self
    }

    /// Marks, in one place, the errors the saga's steps and compensations
    /// return without a mark: `classify` is given each error of an attempt
    /// that is neither [`permanent`](StepError::permanent) nor of
    /// [unknown outcome](StepError::outcome_unknown) (a timeout, a panic
    /// and an interruption are of unknown outcome already) and returns it
    /// marked as the service's errors need, or as it is, before the retry
    /// policy reads it. `?` converts any error into an unmarked
    /// [`StepError`], which reads "did not take effect, retry": a
    /// classifier keeps a remote call's "maybe applied" (a 5xx, a lost
    /// connection) from being rolled back as if nothing happened, without
    /// every step remembering a `map_err` (see `docs/DESIGN.md`,
    /// "Classifying a remote call's errors"). Errors a step marked itself
    /// are not given to it.
    ///
    /// ```
    /// use saga_core::{Saga, Step, StepError, StepInfo};
    ///
    /// #[derive(Debug, thiserror::Error)]
    /// #[error("payment provider answered {0}")]
    /// struct Http(u16);
    ///
    /// let saga = Saga::builder("order")
    ///     .step(Step::new("charge", |_: &mut u32, _: &StepInfo<'_>| -> Result<(), StepError> {
    ///         Err(Http(400))?
    ///     }))
    ///     .classify_errors(|error| match error.downcast_ref::<Http>() {
    ///         Some(Http(status)) if *status >= 500 => error.outcome_unknown(),
    ///         Some(Http(_)) => error.permanent(),
    ///         None => error,
    ///     })
    ///     .build()?;
    /// let failed = saga.run_blocking(&mut 0).unwrap_err();
    /// let charge = failed.report().step("charge").unwrap();
    /// assert_eq!(charge.last_error.as_deref(), Some("payment provider answered 400"));
    /// # Ok::<(), saga_core::BuildError>(())
    /// ```
    #[must_use]
    pub fn classify_errors(
        mut self,
        classify: impl Fn(StepError) -> StepError + Send + Sync + 'static,
    ) -> Self {
        self.classify = Some(Arc::new(classify));
        self
    }

    /// Attaches an observer to every run of the saga.
    #[must_use]
    pub fn observer(mut self, observer: Arc<dyn SagaObserver>) -> Self {
        self.observers.push(observer);
        self
    }

    /// Checks the definition and builds the saga.
    ///
    /// # Errors
    /// A [`BuildError`] for an empty saga name or version, no steps, an empty or
    /// duplicate step name, a step name containing `/` (it would make
    /// idempotency keys ambiguous), two pivots, a compensation on or after
    /// the pivot, a timeout on a sync step or of zero, an undo timeout on a
    /// step without a compensation, on a sync compensation or of zero, or
    /// a retry policy of zero attempts.
    pub fn build(mut self) -> Result<Saga<C, D>, BuildError> {
        if self.name.is_empty() {
            return Err(BuildError::EmptySagaName);
        }
        if self.version.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(BuildError::EmptyVersion {
                saga: self.name.to_string(),
            });
        }
        let saga = || self.name.to_string();
        for node in &self.nodes {
            let Node::Group { range, .. } = node else {
                continue;
            };
            if range.is_empty() {
                return Err(BuildError::EmptyGroup { saga: saga() });
            }
            for step in &self.steps[range.clone()] {
                if step.pivot {
                    return Err(BuildError::PivotInGroup {
                        saga: saga(),
                        step: step.name.to_string(),
                    });
                }
                if !step.action.is_shared() || step.undo.as_ref().is_some_and(|u| !u.is_shared()) {
                    return Err(BuildError::ExclusiveContextInGroup {
                        saga: saga(),
                        step: step.name.to_string(),
                    });
                }
            }
        }
        if self.steps.is_empty() {
            return Err(BuildError::NoSteps { saga: saga() });
        }
        let mut names = HashSet::new();
        let mut pivot: Option<Name> = None;
        for step in &self.steps {
            let name = || step.name.to_string();
            if step.name.is_empty() {
                return Err(BuildError::EmptyName { saga: saga() });
            }
            if step.name.contains('/') {
                return Err(BuildError::SlashInStepName {
                    saga: saga(),
                    step: name(),
                });
            }
            if !names.insert(step.name.clone()) {
                return Err(BuildError::DuplicateStep {
                    saga: saga(),
                    step: name(),
                });
            }
            if let (true, Some(first)) = (step.pivot, &pivot) {
                return Err(BuildError::SecondPivot {
                    saga: saga(),
                    first: first.to_string(),
                    second: name(),
                });
            }
            if step.pivot {
                pivot = Some(step.name.clone());
            }
            if let (true, Some(pivot)) = (step.undo.is_some(), &pivot) {
                return Err(BuildError::CompensationAfterPivot {
                    saga: saga(),
                    step: name(),
                    pivot: pivot.to_string(),
                });
            }
            if step.timeout == Some(Duration::ZERO) {
                return Err(BuildError::ZeroTimeout {
                    saga: saga(),
                    step: name(),
                });
            }
            if step.timeout.is_some() && !step.action.is_async() {
                return Err(BuildError::TimeoutOnSyncStep {
                    saga: saga(),
                    step: name(),
                });
            }
            if let Some(timeout) = step.undo_timeout {
                let error = match &step.undo {
                    None => Some(BuildError::UndoTimeoutWithoutUndo {
                        saga: saga(),
                        step: name(),
                    }),
                    Some(_) if timeout.is_zero() => Some(BuildError::ZeroUndoTimeout {
                        saga: saga(),
                        step: name(),
                    }),
                    Some(undo) if !undo.is_async() => Some(BuildError::UndoTimeoutOnSyncUndo {
                        saga: saga(),
                        step: name(),
                    }),
                    Some(_) => None,
                };
                if let Some(error) = error {
                    return Err(error);
                }
            }
            let undo_attempts = step.undo_retry.as_ref().map(RetryPolicy::max_attempts);
            if step.retry.max_attempts() == 0 || undo_attempts == Some(0) {
                return Err(BuildError::ZeroAttempts {
                    saga: saga(),
                    step: name(),
                });
            }
        }
        if self.undo_retry.max_attempts() == 0 {
            return Err(BuildError::ZeroAttempts {
                saga: saga(),
                step: "(compensation default)".to_owned(),
            });
        }
        let mut after_pivot = false;
        for step in &mut self.steps {
            step.kind = if step.pivot {
                after_pivot = true;
                StepKind::Pivot
            } else if after_pivot {
                StepKind::Retriable
            } else if step.undo.is_some() {
                StepKind::Compensable
            } else {
                StepKind::NoUndo
            };
            // A policy that set no number of attempts gets its place's:
            // forever after the pivot (giving up there means stuck), and
            // for a compensation the saga's compensation default; what
            // else it sets (a backoff, `retry_if`) stays.
            if step.kind == StepKind::Retriable {
                step.retry =
                    std::mem::take(&mut step.retry).or_attempts(RetryPolicy::FOREVER_ATTEMPTS);
            }
            if let Some(undo) = step.undo_retry.take() {
                step.undo_retry = Some(undo.or_attempts(self.undo_retry.max_attempts()));
            }
        }
        let has_async = self
            .steps
            .iter()
            .any(|s| s.action.is_async() || s.undo.as_ref().is_some_and(|u| u.is_async()));
        Ok(Saga {
            inner: Arc::new(SagaInner {
                name: self.name,
                version: self.version,
                steps: self.steps,
                nodes: self.nodes,
                observers: self.observers,
                undo_retry: self.undo_retry,
                continue_on_compensation_failure: self.continue_on_compensation_failure,
                has_async,
                classify: self.classify,
            }),
        })
    }
}

/// Options of one run: an execution id, a clock, a cancellation token,
/// observers. The default has none of them and allocates nothing.
///
/// ```
/// use saga_core::{CancellationToken, RunOptions};
/// use saga_core::clock::TestClock;
///
/// let token = CancellationToken::new();
/// let options = RunOptions::new()
///     .with_execution_id("order-42")
///     .with_clock(TestClock::new())
///     .with_cancellation(token.clone());
/// # let _ = options;
/// ```
#[derive(Clone, Default)]
pub struct RunOptions {
    pub(crate) execution_id: Option<ExecutionId>,
    pub(crate) clock: Option<Arc<dyn Clock>>,
    pub(crate) cancel: Option<CancellationToken>,
    pub(crate) observers: Vec<Arc<dyn SagaObserver>>,
}

impl RunOptions {
    /// No options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Names the execution (default: a generated id). Idempotency keys are
    /// `{execution_id}/{step}`.
    #[must_use]
    pub fn with_execution_id(mut self, id: impl Into<ExecutionId>) -> Self {
        self.execution_id = Some(id.into());
        self
    }

    /// Reads time and sleeps through `clock` (default:
    /// [`SystemClock`](crate::clock::SystemClock)).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Lets `token` cancel the run.
    #[must_use]
    pub fn with_cancellation(mut self, token: CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Attaches an observer to this run only.
    #[must_use]
    pub fn with_observer(mut self, observer: Arc<dyn SagaObserver>) -> Self {
        self.observers.push(observer);
        self
    }
}

impl fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunOptions")
            .field("execution_id", &self.execution_id)
            .field("clock", &self.clock.as_ref().map(|_| ".."))
            .field("cancel", &self.cancel)
            .field("observers", &self.observers.len())
            .finish()
    }
}
