//! The engine's errors: what went wrong with a durable execution, and what
//! to do about it.

use crate::error::SagaError;
use crate::id::ExecutionId;
use crate::report::ExecutionStatus;
use crate::store::StoreError;

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
    #[error("execution `{execution_id}` of saga `{saga}` was started with definition {fingerprint}, which this process has not registered ({}); register that version of the saga to carry it on, or `abandon` it (which compensates nothing); the record was left untouched", if .registered.is_empty() { "no version of it is registered".to_owned() } else { format!("registered versions: {}", .registered.join(", ")) })]
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
    /// traits, a [`Step`](crate::Step) built without
    /// [`durable`](crate::Step::durable), or a hand-written
    /// [`Task`](crate::Task) added with `.task(..)` or `saga!` (which
    /// cannot make it durable: add `Step::from_task(task).durable()`).
    #[error(
        "step `{step}` of saga `{saga}` returns a `{output}` and has no codec to log it, which a durable saga needs: a `#[saga_task]` step gets one by itself when its output implements `serde::Serialize` and `serde::Deserialize`; a `Step` built by hand from `.durable()`; a hand-written `Task` from `.step(Step::from_task(task).durable())` in place of `.task(task)` or `saga!`; or return `()` and keep the value in the context"
    )]
    OutputNotDurable {
        /// The saga.
        saga: String,
        /// The step.
        step: String,
        /// The step's output type.
        output: &'static str,
    },
    /// A saga declares dependencies of a type the engine was not given:
    /// a worker that cannot run it must not claim its executions. Nothing
    /// was registered.
    #[error(
        "saga `{saga}` needs dependencies of type `{dependencies}`, which this engine was not given ({}); build the engine with `.with_dependencies(..)` of that type (`.with_shared_dependencies(arc)` for an `Arc` of it) before registering the saga",
        given_types(.given)
    )]
    MissingDependencies {
        /// The saga.
        saga: String,
        /// The type of its dependencies.
        dependencies: &'static str,
        /// The types of the dependencies the engine was given, sorted.
        given: Vec<&'static str>,
    },
    /// `register` was given a definition whose fingerprint is registered
    /// already with another context type: the same steps over two
    /// contexts, which one fingerprint cannot tell apart in a log.
    #[error(
        "saga `{saga}` is registered already with the same fingerprint ({fingerprint}) over a context of type `{registered}`, so it cannot be registered over `{given}` too: give the definitions different versions (`SagaBuilder::version`, or `version:` in `saga!`)"
    )]
    DuplicateFingerprint {
        /// The saga.
        saga: String,
        /// The fingerprint both have.
        fingerprint: String,
        /// The context type registered with it.
        registered: &'static str,
        /// The context type of the definition refused.
        given: &'static str,
    },
    /// `start` was given a context of another type than the saga's (the
    /// version of it registered last).
    #[error("saga `{saga}` takes a context of type `{expected}`, not `{found}`{}", other_version(.saga, .found, .other))]
    ContextType {
        /// The saga.
        saga: String,
        /// Its context type.
        expected: &'static str,
        /// The type given.
        found: &'static str,
        /// Another registered version of the saga that takes `found`: its
        /// fingerprint, and ` (version ..)` if it declared one. `start`
        /// runs the version registered last.
        other: Option<String>,
    },
    /// A stored context or output no longer decodes (its type changed).
    /// The record was left untouched.
    #[error(
        "{what} of execution `{execution_id}` no longer decodes: {detail}; make the type accept the stored JSON (serde `default`, `alias`), carry it on with the build that started it, or `abandon` the execution (which compensates nothing); the record was left untouched"
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
    /// A caller-given id no new execution may have: an empty one, or one
    /// holding a control character (see [`ExecutionId`]). Nothing was
    /// recorded.
    #[error(
        "`{}` cannot be an execution id: {problem}; give another id, or let `start` generate one",
        crate::escape::Escaped(.execution_id.as_str())
    )]
    InvalidId {
        /// The id given.
        execution_id: ExecutionId,
        /// What is wrong with it.
        problem: String,
    },
    /// This engine's run of the execution stopped because its log could
    /// not be written (see [`SagaError::Store`](crate::SagaError::Store));
    /// recovery carries it on once the store works. (0.1 called it
    /// `Interrupted`, a word now kept for a cancel-safe step dropped by a
    /// cancellation.)
    #[error("execution `{execution_id}` stopped: {detail}")]
    RunLost {
        /// The execution.
        execution_id: ExecutionId,
        /// Why.
        detail: String,
    },
    /// The engine was called outside a tokio runtime.
    #[error("the saga engine must be called inside a tokio runtime")]
    NoRuntime,
}

/// Why [`SagaEngine::wait`](crate::SagaEngine::wait) gives no
/// [`SagaReport`](crate::SagaReport) of a completed execution.
///
/// ```
/// # use saga_core::{EngineError, ExecutionId, SagaError, WaitError};
/// fn status(outcome: Result<saga_core::SagaReport, WaitError>) -> String {
///     match outcome {
///         Ok(report) => report.status.to_string(),
///         // Compensated, stuck, cancelled or abandoned: the report is in it.
///         Err(WaitError::Saga(failed)) => failed.report().status.to_string(),
///         Err(other) => format!("could not wait: {other}"),
///     }
/// }
/// let unknown = EngineError::NotFound { execution_id: ExecutionId::new("x") };
/// assert_eq!(status(Err(unknown.into())), "could not wait: no execution `x`");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The execution ended, and not completed: compensated, stuck,
    /// cancelled or abandoned. The same error an in-memory run gives, its
    /// step errors in their logged form.
    #[error(transparent)]
    Saga(#[from] SagaError),
    /// The execution could not be waited for: an unknown id, a store
    /// error, or this engine's run lost its log
    /// ([`EngineError::RunLost`]).
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl WaitError {
    /// The execution's report, when it ended ([`WaitError::Saga`]).
    pub fn report(&self) -> Option<&crate::SagaReport> {
        match self {
            WaitError::Saga(error) => Some(error.report()),
            WaitError::Engine(_) => None,
        }
    }
}

impl From<StoreError> for WaitError {
    fn from(error: StoreError) -> Self {
        WaitError::Engine(error.into())
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// The end of a [`EngineError::ContextType`] message when another
/// registered version takes the context given.
fn other_version(saga: &str, found: &str, other: &Option<String>) -> String {
    match other {
        Some(other) => format!(
            "; definition {other} of `{saga}`, also registered, takes `{found}`, but `start` runs the version registered last: register the one new executions should start on last"
        ),
        None => String::new(),
    }
}

/// "it was given `A`, `B`", or "it was given none".
fn given_types(given: &[&'static str]) -> String {
    if given.is_empty() {
        return "it was given none".to_owned();
    }
    let names: Vec<String> = given.iter().map(|name| format!("`{name}`")).collect();
    format!("it was given {}", names.join(", "))
}
