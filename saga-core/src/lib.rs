//! # saga-core: sagas for Rust services
//!
//! A service that must change several systems (its database, a payment
//! provider, an inventory service) with no distributed transaction runs a
//! *saga*: local steps in order; when one fails, the steps that took effect
//! are undone by their *compensations*, in reverse order.
//!
//! ```
//! use saga_core::{saga, saga_task, StepError};
//!
//! #[derive(Default)]
//! struct Order { id: Option<u64>, stock: u32 }
//!
//! #[saga_task(undo = cancel_order)]
//! fn create_order(o: &mut Order) -> Result<u64, StepError> {
//!     o.id = Some(42);
//!     Ok(42)
//! }
//!
//! #[saga_task]
//! fn cancel_order(o: &mut Order, _id: Option<&u64>) -> Result<(), StepError> {
//!     o.id = None;
//!     Ok(())
//! }
//!
//! #[saga_task(undo = release_stock)]
//! fn reserve_stock(o: &mut Order) -> Result<(), StepError> {
//!     o.stock -= 1;
//!     Ok(())
//! }
//!
//! #[saga_task]
//! fn release_stock(o: &mut Order, _: Option<&()>) -> Result<(), StepError> {
//!     o.stock += 1;
//!     Ok(())
//! }
//!
//! #[saga_task]
//! fn charge_payment(_o: &mut Order) -> Result<(), StepError> {
//!     Err("card declined".into())
//! }
//!
//! let order = saga! {
//!     name: "order",
//!     context: Order,
//!     step create_order;
//!     step reserve_stock;
//!     step charge_payment, retry 3, backoff 10ms;
//! };
//! let mut o = Order { id: None, stock: 5 };
//! let err = order.run_blocking(&mut o).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "saga `order` failed at step `charge_payment` and was rolled back \
//!      (compensated: reserve_stock, create_order)"
//! );
//! assert_eq!((o.id, o.stock), (None, 5));
//! ```
//!
//! - [`saga!`] declares a saga from `#[saga_task]` functions, checked at
//!   compile time; [`Saga::builder`] builds the same from [`Step`]s
//!   (closures, sync or async) or [`Task`] types, at run time.
//! - What steps use but the log must not hold (clients, pools,
//!   configuration) are the saga's dependencies, `Saga<C, D>`: a step
//!   reaches them with [`StepInfo::dependencies`]; an in-memory run gets
//!   them from [`Saga::using`], a durable one from
//!   [`SagaEngine::with_dependencies`].
//! - Each step returns `Result<T, E>`: its output `T` is handed to its
//!   compensation, `E` is any error (or a [`StepError`] marked
//!   [`permanent`](StepError::permanent) or
//!   [`outcome_unknown`](StepError::outcome_unknown)); a retry policy
//!   retries every error not marked permanent.
//! - Run it with [`Saga::run`] (async) or [`Saga::run_blocking`] (no runtime
//!   needed for sync steps); the result is a [`SagaReport`] or a
//!   [`SagaError`] telling compensated, stuck and cancelled apart.
//! - Retries ([`RetryPolicy`]), timeouts, a pivot (the point of no return),
//!   cancellation ([`CancellationToken`]), logs (target `saga`) and
//!   observers ([`SagaObserver`]).
//! - Make it durable with a [`SagaEngine`] on a [`store`]
//!   (`SqliteStore`, one file): every step's start and end is logged. A
//!   service's one call at startup, after registering its sagas, is
//!   `Worker::new(engine).spawn()` ([`Worker`], on every store): it
//!   carries on what a crash left unfinished, carries out the resumes an
//!   operator requests, and purges old executions
//!   ([`SagaEngine::recover`] does the first of these once: the one-shot
//!   call the worker is built on). Steps run *at least once*: one cut
//!   off by a crash runs again with the same
//!   [`idempotency_key`](StepInfo::idempotency_key), so pass the key to
//!   the services you call.
//! - With the `postgres` feature, N worker processes share one
//!   PostgreSQL database and take over each other's executions.
//!
//! The guides: [the design and its failure semantics](guide::design),
//! [what the macros expand to](guide::macros) and
//! [running sagas in production](guide::operations).
//!
//! ## Features
//!
//! | Feature    | Default | What it adds |
//! |------------|---------|--------------|
//! | `sqlite`   | yes     | `store::SqliteStore`, the embedded durable store: one SQLite file (bundled, no system library) |
//! | `postgres` | no      | `store::PostgresStore`, the store many [`Worker`] processes share |
//! | `tracing`  | no      | a `tracing` span per execution (`saga`) and per step or compensation attempt (`step`, `compensation`), so a saga shows as one trace |
//! | `testkit`  | no      | `saga_core::testkit`: run your sagas against failures at every step and compensation, repeated steps, and crashes at every commit of their undisturbed, longest-rollback and retry paths |
//!
//! Items that need a feature say so in these docs.
//!
//! ## Without the macros
//!
//! The builder, with closures:
//!
//! ```
//! use saga_core::{Saga, Step, StepError, StepInfo};
//!
//! #[derive(Default)]
//! struct Shop { stock: u32, charged: u32 }
//!
//! let saga = Saga::builder("buy")
//!     .step(Step::new("reserve", |s: &mut Shop, _: &StepInfo<'_>| {
//!         s.stock -= 1;
//!         Ok::<_, StepError>(())
//!     })
//!     .undo(|s: &mut Shop, _: Option<&()>, _: &StepInfo<'_>| {
//!         s.stock += 1;
//!         Ok::<_, StepError>(())
//!     }))
//!     .step(Step::new("charge", |s: &mut Shop, _: &StepInfo<'_>| {
//!         s.charged += 10;
//!         Ok::<_, StepError>(s.charged)
//!     }))
//!     .build()
//!     .expect("a valid saga");
//!
//! let mut shop = Shop { stock: 5, charged: 0 };
//! let report = saga.run_blocking(&mut shop).expect("both steps succeed");
//! assert_eq!(report.status, saga_core::ExecutionStatus::Completed);
//! assert_eq!((shop.stock, shop.charged), (4, 10));
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms)]
// On docs.rs (and in CI's docs.rs-like build), mark each feature-gated
// item with the feature it needs ("Available on crate feature `postgres`
// only"); `doc_cfg` derives the marks from the `#[cfg]`s.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
// rustc's notes name an item by its shortest public path, and never by a
// path through a `#[doc(hidden)]` module: these re-exports keep
// `__private` out of `saga!`'s compile errors.
#[doc(hidden)]
pub use __private::StepFuture;
pub use __private::checks;
#[doc(hidden)]
pub use __private::step_future;
mod blocking;
mod cancel;
pub mod clock;
mod context;
pub mod diagram;
mod engine;
mod error;
pub mod escape;
mod executor;
mod gate;
pub mod guide;
mod id;
mod journal;
mod json;
mod logged;
pub mod logging;
mod name;
mod observer;
mod policy;
mod report;
mod saga;
#[cfg(feature = "tracing")]
mod spans;
mod status;
mod step;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
mod worker;

pub use cancel::CancellationToken;
pub use context::Context;
pub use context::ContextError;
pub use engine::EngineError;
pub use engine::ExecutionView;
#[allow(deprecated)]
pub use engine::Recovery;
pub use engine::RecoveryReport;
pub use engine::SagaEngine;
pub use engine::WaitError;
pub use error::BoxError;
pub use error::BuildError;
pub use error::Failure;
pub use error::Interrupted;
pub use error::Panicked;
pub use error::SagaError;
pub use error::StepError;
pub use error::StuckPhase;
pub use error::Timeout;
pub use executor::Using;
pub use id::ExecutionId;
pub use logged::LoggedError;
pub use name::Name;
pub use observer::RunInfo;
pub use observer::SagaEvent;
pub use observer::SagaObserver;
pub use policy::RetryOn;
pub use policy::RetryPolicy;
pub use report::ExecutionStatus;
pub use report::Outcome;
pub use report::SagaReport;
pub use report::StepReport;
pub use report::StepStatus;
pub use saga::Parallel;
pub use saga::RunOptions;
pub use saga::Saga;
pub use saga::SagaBuilder;
pub use saga::StepShape;
#[allow(deprecated)]
pub use saga::default_compensation_retry;
pub use step::BoxFuture;
pub use step::Metadata;
pub use step::Provides;
pub use step::RetrySpec;
pub use step::Step;
pub use step::StepInfo;
pub use step::StepKind;
pub use step::Task;
pub use step::TaskFn;
pub use step::TaskFuture;
pub use step::UndoFn;
pub use step::default_undo_retry;
pub use worker::Worker;
pub use worker::WorkerHandle;
pub use worker::WorkerStats;

#[doc(inline)]
pub use saga_macros::{saga, saga_task};
