//! Procedural macros for `saga-core`: [`saga!`](macro@saga) and
//! [`#[saga_task]`](macro@saga_task).
//!
//! Use them through `saga_core`, which re-exports both; the expansions name
//! `::saga_core::__private`, so this crate is never used alone.

use proc_macro::TokenStream;
use quote::quote;

mod ast;
mod attr;
mod expand;
mod validate;

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
#[proc_macro]
pub fn saga(input: TokenStream) -> TokenStream {
    let def = match syn::parse::<ast::SagaDef>(input) {
        Ok(def) => def,
        Err(e) => {
            let error = e.to_compile_error();
            let stub = expand::saga_stub(None, None);
            return quote!({ #error #stub }).into();
        }
    };
    match validate::check_saga(&def) {
        Ok(()) => expand::saga(&def).into(),
        Err(e) => {
            let error = e.to_compile_error();
            let stub = expand::saga_stub(def.context.as_ref(), def.dependencies.as_ref());
            quote!({ #error #stub }).into()
        }
    }
}

/// Turns a function into a saga step (or a compensation) that
/// [`saga!`](macro@saga) can name; the function stays callable exactly as
/// written, so it can be unit-tested alone.
///
/// # Shapes
///
/// ```text
/// [async] fn step(ctx: &mut C [, info: &StepInfo<'_>] [, tool: &T]..) -> Result<T, E>
/// [async] fn compensation(ctx: &mut C, output: Option<&T> [, info: &StepInfo<'_>] [, tool: &T]..) -> Result<(), E>
/// ```
///
/// After the context, the parameters come in any order. Any `&T` other
/// than `&StepInfo<'_>` asks the saga's dependencies for a `T` (an HTTP
/// client, a pool): the generated `Task` impl serves every saga whose
/// dependencies `D` implement `Provides<T>` for each such `T` (every type
/// provides itself), and a `saga!` whose `dependencies:` lack one is a
/// compile error naming the function, `T` and `D`. A function without
/// such parameters fits any saga.
///
/// `info` may also be taken by value (`StepInfo<'_>`), and either way
/// with the saga's dependencies, `StepInfo<'_, D>`, to reach the whole
/// dependency struct through `info.dependencies()`: the function then
/// fits the sagas whose dependencies are `D` (or provide it). Without
/// them, `StepInfo<'_>` is `StepInfo<'_, ()>`.
///
/// `&C` may replace `&mut C`: the function then only reads the context
/// (mutating through its own locks or atomics), and can be a branch of a
/// `parallel` group in `saga!`, which needs it; `E` is any error that converts into
/// `StepError` (any `std::error::Error + Send + Sync`, a `String`, a
/// `StepError`). A compensation receives its step's output as `Option<&T>`:
/// `None` when the step's outcome is unknown (it timed out, panicked, or
/// failed with an error marked `outcome_unknown`), so it must find out
/// what to undo by itself; a compensation of a step whose output is `()`
/// may leave that parameter out. A compensation's attribute takes no
/// arguments.
///
/// # Durable sagas
///
/// A step whose output type `T` implements serde's `Serialize` and
/// `DeserializeOwned` (`#[derive(Serialize, Deserialize)]`; `()`, numbers,
/// `String` do) gets a codec by itself, as `Step::durable` would give it:
/// its saga can run in a durable `SagaEngine`, which logs the output and
/// hands it back to the compensation after a crash. A step whose output
/// does not implement them still runs in memory; `SagaEngine::register`
/// refuses its saga with an error naming the type to derive them on. An
/// output that serde can read only by borrowing (`&'static str`, or a
/// struct with such a field) does not compile as a step's output: return
/// an owned type (`String`, `Cow<'static, str>`).
///
/// # Arguments (of a step)
///
/// ```text
/// #[saga_task(
///     compensate = cancel_order,          // or `undo = ..`: a `#[saga_task]` compensation
///     name = "create",                    // default: the function's name
///     retry(attempts = 3, backoff = "100ms", max_backoff = "5s", on = is_transient),
///     retry(forever),                     // instead of `attempts`
///     undo_retry(attempts = 5, backoff = "1s"), // the compensation's retries (same arguments)
///     timeout = "2s",                     // async functions only
///     undo_timeout = "5s",                // each attempt of the compensation (an async one)
///     pivot,                              // the point of no return, no compensation
///     metadata(team = "payments"),
/// )]
/// ```
///
/// Durations are strings here (`timeout = "2s"`), where `saga!` writes
/// them unquoted (`timeout 2s`); paths are not quoted (`undo = refund`).
/// `saga!` options override these, except a compensation, which is given
/// in one place only. A compensation's own `#[saga_task]` takes no
/// arguments: its retries and timeout are the step's `undo_retry` and
/// `undo_timeout`. Alongside the function, the attribute emits a
/// hidden type of the same name (types and functions live in different
/// namespaces) through which `saga!` reads these arguments.
///
/// # Example
///
/// ```
/// use saga_core::{saga, saga_task, StepError, StepInfo};
///
/// #[derive(Debug)]
/// struct Gateway { calls: u32, charged: Vec<String> }
///
/// fn transient(e: &StepError) -> bool {
///     e.to_string().contains("busy")
/// }
///
/// #[saga_task(undo = refund, retry(attempts = 3, backoff = "1ms", on = transient))]
/// fn charge(gw: &mut Gateway, info: &StepInfo<'_>) -> Result<String, StepError> {
///     gw.calls += 1;
///     if gw.calls < 2 { return Err("gateway busy".into()) }
///     gw.charged.push(info.idempotency_key());
///     Ok(info.idempotency_key())
/// }
///
/// #[saga_task]
/// fn refund(gw: &mut Gateway, payment: Option<&String>) -> Result<(), StepError> {
///     gw.charged.retain(|p| Some(p) != payment);
///     Ok(())
/// }
///
/// // Still a plain function:
/// let mut gw = Gateway { calls: 1, charged: vec![] };
/// let id = saga_core::ExecutionId::from("test");
/// let info = StepInfo::new("unit", &id, "charge", 1);
/// assert_eq!(charge(&mut gw, &info).unwrap(), "test/charge");
///
/// let pay = saga! { name: "pay", context: Gateway, step charge; };
/// let mut gw = Gateway { calls: 0, charged: vec![] };
/// let report = pay.run_blocking(&mut gw).unwrap();
/// assert_eq!(report.steps[0].attempts, 2);
/// ```
///
/// # Example with dependencies
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use saga_core::{saga, saga_task, Provides, StepError};
///
/// struct Payments { next: AtomicU64 }
/// struct Mailer { sent: AtomicU64 }
/// struct Services { payments: Payments, mailer: Mailer }
///
/// impl Provides<Payments> for Services {
///     fn provide(&self) -> &Payments { &self.payments }
/// }
/// impl Provides<Mailer> for Services {
///     fn provide(&self) -> &Mailer { &self.mailer }
/// }
///
/// #[derive(Default)]
/// struct Order { payment: Option<u64> }
///
/// #[saga_task]
/// fn charge(order: &mut Order, payments: &Payments, mailer: &Mailer) -> Result<u64, StepError> {
///     let id = payments.next.fetch_add(1, Ordering::SeqCst);
///     mailer.sent.fetch_add(1, Ordering::SeqCst);
///     order.payment = Some(id);
///     Ok(id)
/// }
///
/// let checkout = saga! {
///     name: "checkout",
///     context: Order,
///     dependencies: Services,
///     step charge;
/// };
/// let services = Services {
///     payments: Payments { next: AtomicU64::new(7) },
///     mailer: Mailer { sent: AtomicU64::new(0) },
/// };
/// let mut order = Order::default();
/// checkout.using(&services).run_blocking(&mut order).unwrap();
/// assert_eq!(order.payment, Some(7));
/// assert_eq!(services.mailer.sent.load(Ordering::SeqCst), 1);
/// ```
#[proc_macro_attribute]
pub fn saga_task(args: TokenStream, item: TokenStream) -> TokenStream {
    let item2 = proc_macro2::TokenStream::from(item.clone());
    let func = match syn::parse::<syn::ItemFn>(item) {
        Ok(func) => func,
        Err(_) => {
            let what = match syn::parse2::<syn::Item>(item2.clone()) {
                Ok(syn::Item::Struct(_)) => "a struct",
                Ok(syn::Item::Enum(_)) => "an enum",
                Ok(syn::Item::Impl(_)) => "an impl block",
                Ok(syn::Item::Mod(_)) => "a module",
                Ok(syn::Item::Const(_)) => "a const",
                Ok(syn::Item::Static(_)) => "a static",
                Ok(syn::Item::Trait(_)) => "a trait",
                _ => "this item",
            };
            let error = syn::Error::new(
                proc_macro2::Span::call_site(),
                format!("`#[saga_task]` applies to a function, not to {what}"),
            )
            .to_compile_error();
            return quote!(#error #item2).into();
        }
    };
    let args = syn::parse::<attr::TaskArgs>(args);
    let shape = validate::check_task_fn(&func);
    let checked = match (&args, &shape) {
        (Ok(args), Ok(shape)) => validate::check_task_args(args, shape, &func.sig.ident),
        _ => Ok(()),
    };
    match (args, shape, checked) {
        (Ok(args), Ok(shape), Ok(())) => expand::task(&func, &args, &shape).into(),
        (args, shape, checked) => {
            let mut errors = validate::Errors::default();
            for e in [args.err(), shape.err(), checked.err()]
                .into_iter()
                .flatten()
            {
                errors.push(e);
            }
            let error = match errors.finish() {
                Err(e) => e.to_compile_error(),
                Ok(()) => proc_macro2::TokenStream::new(),
            };
            let stub = expand::task_stub(&func);
            quote!(#error #stub).into()
        }
    }
}
