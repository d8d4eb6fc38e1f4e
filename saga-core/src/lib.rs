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
mod redact;
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
pub use saga_macros::saga_task;

/// Declares a saga from `#[saga_task]` functions; evaluates to a
/// `Saga<C, D>`, checked at compile time.
///
/// # Grammar
///
/// ```text
/// saga! {
///     name: "order",               // required
///     version: "2",                // optional, see below
///     context: OrderCtx,           // optional, default `saga_core::Context`
///     dependencies: Services,      // optional, default `()`
///     classify_errors: classify,   // optional, a `Fn(StepError) -> StepError`
///     step validate_cart;
///     step create_order => undo cancel_order;
///     step charge_payment => undo refund_payment, retry 3, timeout 2s;
///     parallel {                   // branches run at once, sharing `&OrderCtx`
///         step reserve_stock => undo release_stock, retry 3;
///         step book_courier => undo cancel_courier;
///     }
///     pivot ship_order;
///     step send_receipt, retry forever, backoff 1s;
/// }
/// ```
///
/// - `version: "2"` declares the definition's version
///   (`SagaBuilder::version`), part of its fingerprint: give a new one
///   when the context's type or a step's meaning changes but the steps
///   do not, so that old and new builds keep to their own executions.
/// - `dependencies: D` are the saga's tools (clients, pools), lent to an
///   in-memory run by `saga.using(&services)` and to a durable one by
///   `SagaEngine::with_dependencies`; every step is read as a
///   `Task<C, D>`, so a `#[saga_task]` function asking for `&T` needs
///   `D: Provides<T>` (a compile error naming the function, `T` and `D`
///   otherwise). See `#[saga_task]`'s example with dependencies.
///   `D` is a concrete type: `saga!` checks the saga with items, which
///   cannot see the type parameters of the function around it, so
///   `dependencies: D` with `D` a type parameter is rustc's E0401 ("can't
///   use generic parameters from outer item") at the `D`. A saga generic
///   over its dependencies takes the builder, which names the same
///   functions: `Saga::builder("checkout").task(charge {}).build()`.
/// - `classify_errors: f` is `SagaBuilder::classify_errors(f)`: `f`, a
///   function or a closure `Fn(StepError) -> StepError`, marks the errors
///   steps and compensations return unmarked (as `?` converts them):
///   a client's 5xx `outcome_unknown()`, its 4xx `permanent()`.
/// - `step path` adds the `#[saga_task]` function at `path`; `pivot path`
///   adds it as the pivot, the point of no return (a function whose
///   attribute says `pivot` is the pivot wherever it is listed).
/// - `=> undo path` (or `=> compensate path`) gives the step a
///   compensation, a `#[saga_task]` function taking the same context and
///   `Option<&T>`, `T` the step's output. It comes right after the step.
/// - Options, after commas, override the function's attribute:
///   - `retry 3` (attempts in all, at least 1) or `retry forever`;
///   - `backoff 100ms`, `max_backoff 5s`: delays between attempts;
///   - `retry_if path`: a `fn(&StepError) -> bool` choosing which errors
///     are retried (default: every error not marked `StepError::permanent`;
///     a predicate only narrows that);
///   - `undo_retry 5` (or `forever`): attempts of the step's compensation,
///     which otherwise gets `default_undo_retry()` (3 attempts,
///     every error retried); a step with no compensation cannot have it;
///   - `timeout 2s`: per attempt, for `async fn` steps only; it does not
///     apply to the step's compensation;
///   - `undo_timeout 5s`: per attempt of the step's compensation, for an
///     `async fn` compensation only; an attempt that runs longer is dropped
///     (its outcome unknown) and retried by `undo_retry`, and when those
///     run out the run ends stuck; a step with no compensation cannot
///     have it;
///   - `name "charge_again"`: the step's name (default: the attribute's
///     `name`, else the function's), so a function can run twice;
///   - `metadata(team = "payments")`.
/// - Durations are one token, a number and its unit: `250ms`, `2s`,
///   `1.5s`, `5m`, `1h`.
/// - `parallel { step a => undo ua; step b, retry 3; }` is a group of
///   branches that run at once (async ones concurrently; sync ones one
///   after another, a sync step cannot yield), each with the options of a
///   step. Branches share the context, so each one and its compensation
///   take it as `&C` (and `C: Sync`), and keep what their compensation
///   needs in their output. When a branch fails, the group stops its
///   siblings' retries, waits for the running ones, then compensates every
///   branch that took effect (or may have), at once, before the steps
///   ahead of the group. The pivot cannot be a branch; a group is not
///   empty and holds no other group.
///
/// # Compile-time checks
///
/// Everything `SagaBuilder::build` would reject is a compile error at the
/// token to change: no steps, a duplicate step name (at the second), a
/// second pivot, a compensation on or after the pivot, a compensation
/// given both here and in the attribute, a timeout on a sync step, an
/// `undo_timeout` on a sync compensation or on a step without one, a zero
/// timeout, zero attempts; and beyond it: `undo_retry` on a step without
/// compensation,
/// a compensation whose context or output type does not match its step, a step that is not a `#[saga_task]` function
/// of the saga's context, an unknown option; in a `parallel` group, a
/// branch or compensation taking `&mut C`, a pivot (by keyword or by
/// attribute), an empty or nested group. Since no `BuildError` remains
/// possible, `saga!` evaluates to the `Saga<C, D>` itself (`D` the
/// `dependencies:` type, `()` without one).
///
/// A `step` names a type implementing `Task`: a `#[saga_task]` function's
/// or one written by hand (its name, action and compensation are the
/// trait's consts).
///
/// # Example
///
/// ```
/// use saga_core::{saga, saga_task, StepError};
///
/// #[derive(Default)]
/// struct Shop { stock: u32, orders: Vec<u64>, log: Vec<String> }
///
/// #[saga_task]
/// fn check_stock(shop: &Shop) -> Result<(), StepError> {
///     if shop.stock == 0 { return Err("out of stock".into()) }
///     Ok(())
/// }
///
/// #[saga_task(undo = cancel_order)]
/// fn create_order(shop: &mut Shop) -> Result<u64, StepError> {
///     shop.orders.push(42);
///     Ok(42)
/// }
///
/// #[saga_task]
/// fn cancel_order(shop: &mut Shop, order: Option<&u64>) -> Result<(), StepError> {
///     shop.orders.retain(|o| Some(o) != order);
///     Ok(())
/// }
///
/// #[saga_task]
/// fn charge(shop: &mut Shop) -> Result<(), StepError> {
///     shop.log.push("charge".into());
///     Err("card declined".into())
/// }
///
/// let order = saga! {
///     name: "order",
///     context: Shop,
///     step check_stock;
///     step create_order;
///     step charge, retry 2, backoff 1ms;
/// };
///
/// let mut shop = Shop { stock: 1, ..Shop::default() };
/// let err = order.run_blocking(&mut shop).unwrap_err();
/// assert_eq!(shop.orders, Vec::<u64>::new());   // compensated
/// assert_eq!(shop.log, ["charge", "charge"]);    // a plain error is retried
/// assert_eq!(err.to_string(), "saga `order` failed at step `charge` and was rolled back (compensated: create_order)");
/// ```
///
/// Async steps, a timeout and a pivot:
///
/// ```
/// use saga_core::{saga, saga_task, StepError, StepInfo};
///
/// #[derive(Default)]
/// struct Trip { booked: Vec<String> }
///
/// #[saga_task]
/// async fn book_flight(trip: &mut Trip, info: &StepInfo<'_>) -> Result<String, StepError> {
///     let seat = format!("seat for {}", info.idempotency_key());
///     trip.booked.push(seat.clone());
///     Ok(seat)
/// }
///
/// #[saga_task]
/// async fn cancel_flight(trip: &mut Trip, seat: Option<&String>) -> Result<(), StepError> {
///     trip.booked.retain(|s| Some(s) != seat);
///     Ok(())
/// }
///
/// #[saga_task(pivot)]
/// fn issue_tickets(_trip: &mut Trip) -> Result<(), StepError> {
///     Ok(())
/// }
///
/// let trip = saga! {
///     name: "trip",
///     context: Trip,
///     step book_flight => undo cancel_flight, timeout 2s, retry 3;
///     step issue_tickets;
/// };
/// let mut state = Trip::default();
/// let report = trip.run_blocking(&mut state).unwrap();
/// assert_eq!(report.status, saga_core::ExecutionStatus::Completed);
/// assert_eq!(state.booked.len(), 1);
/// ```
///
/// A parallel group, whose branches meet: run one after the other, the
/// first would wait at the barrier forever.
///
/// ```
/// use std::sync::Mutex;
/// use saga_core::{saga, saga_task, StepError};
/// use tokio::sync::Barrier;
///
/// struct Trip { barrier: Barrier, booked: Mutex<Vec<String>> }
///
/// #[saga_task(undo = cancel_hotel)]
/// async fn book_hotel(trip: &Trip) -> Result<String, StepError> {
///     trip.barrier.wait().await;
///     trip.booked.lock().unwrap().push("hotel".into());
///     Ok("room 12".into())
/// }
///
/// #[saga_task]
/// fn cancel_hotel(trip: &Trip, room: Option<&String>) -> Result<(), StepError> {
///     trip.booked.lock().unwrap().retain(|b| b != "hotel");
///     Ok(())
/// }
///
/// #[saga_task]
/// async fn book_flight(trip: &Trip) -> Result<(), StepError> {
///     trip.barrier.wait().await;
///     Err("no seats".into())
/// }
///
/// let trip = saga! {
///     name: "trip",
///     context: Trip,
///     parallel {
///         step book_hotel;
///         step book_flight, retry 1;
///     }
/// };
/// let mut state = Trip { barrier: Barrier::new(2), booked: Mutex::new(vec![]) };
/// let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// let err = runtime.block_on(trip.run(&mut state)).unwrap_err();
/// assert_eq!(state.booked.lock().unwrap().len(), 0); // the hotel was cancelled
/// assert_eq!(err.to_string(), "saga `trip` failed at step `book_flight` and was rolled back (compensated: book_hotel)");
/// ```
///
/// # Paths
///
/// `saga!` finds saga-core by itself wherever it is reached from: under a
/// renamed dependency (`sc = { package = "saga-core" }`) or through a
/// crate that re-exports it (`pub use saga_core::{saga, saga_task}`);
/// a `#[saga_task]` function there says where with `crate = ..`.
#[macro_export]
macro_rules! saga {
    ($($input:tt)*) => {
        $crate::__private::saga! { [$crate] $($input)* }
    };
}
