//! Procedural macros for `saga-core`: `saga!` and
//! [`#[saga_task]`](macro@saga_task).
//!
//! Use them through `saga_core`, which re-exports both (`saga!` as a
//! `macro_rules!` wrapper of the `saga` here); the expansions name
//! `saga_core::__private` (as `$crate`, as `#[saga_task(crate = ..)]`
//! says, or `::saga_core`), so this crate is never used alone.

use proc_macro::TokenStream;
use quote::{ToTokens, quote};

mod ast;
mod attr;
mod expand;
mod manifest;
mod validate;

/// `saga_core::saga!`'s implementation: use `saga!` through `saga_core`
/// (or a crate that re-exports it), whose `macro_rules!` wrapper passes
/// saga-core's path (`$crate`) before the input, so that the expansion
/// finds it under any name. Its grammar and examples are on `saga!`.
#[doc(hidden)]
#[proc_macro]
pub fn saga(input: TokenStream) -> TokenStream {
    let (krate, input) = crate_prefix(input.into());
    // Called from `saga_core::saga!`, this macro's call site is inside
    // that `macro_rules!`, whose hygiene would keep the locals it
    // declares at the call site from the user's spans that name them:
    // every name resolves at the user's first token instead.
    let user = match (&krate, input.clone().into_iter().next()) {
        (Some(_), Some(token)) => Some(token.span()),
        _ => None,
    };
    let output = expand::with_crate(krate, false, || saga_with(input));
    match user {
        Some(user) => resolved_at(output, user).into(),
        None => output.into(),
    }
}

/// `tokens` with every identifier but `$crate` resolved at `site`.
fn resolved_at(
    tokens: proc_macro2::TokenStream,
    site: proc_macro2::Span,
) -> proc_macro2::TokenStream {
    use proc_macro2::TokenTree;
    tokens
        .into_iter()
        .map(|token| match token {
            TokenTree::Ident(mut ident) if ident != "$crate" => {
                ident.set_span(ident.span().resolved_at(site));
                TokenTree::Ident(ident)
            }
            TokenTree::Group(group) => {
                let mut inner =
                    proc_macro2::Group::new(group.delimiter(), resolved_at(group.stream(), site));
                inner.set_span(group.span());
                TokenTree::Group(inner)
            }
            other => other,
        })
        .collect()
}

/// `saga_core::saga!` passes its `$crate` in brackets before the user's
/// input: `[$crate] name: ..`.
fn crate_prefix(
    input: proc_macro2::TokenStream,
) -> (Option<proc_macro2::TokenStream>, proc_macro2::TokenStream) {
    let mut tokens = input.clone().into_iter();
    match tokens.next() {
        Some(proc_macro2::TokenTree::Group(group))
            if group.delimiter() == proc_macro2::Delimiter::Bracket =>
        {
            (Some(group.stream()), tokens.collect())
        }
        _ => (None, input),
    }
}

fn saga_with(input: proc_macro2::TokenStream) -> proc_macro2::TokenStream {
    let def = match syn::parse2::<ast::SagaDef>(input) {
        Ok(def) => def,
        Err(e) => {
            let error = e.to_compile_error();
            let stub = expand::saga_stub(None, None);
            return quote!({ #error #stub });
        }
    };
    match validate::check_saga(&def) {
        Ok(()) => expand::saga(&def),
        Err(e) => {
            let error = e.to_compile_error();
            let stub = expand::saga_stub(def.context.as_ref(), def.dependencies.as_ref());
            quote!({ #error #stub })
        }
    }
}

/// Turns a function into a saga step (or a compensation) that
/// `saga!` can name; the function stays callable exactly as
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
/// arguments but `crate = ..`.
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
///     crate = platform::saga_core,        // where saga-core is (any function may say it)
/// )]
/// ```
///
/// `crate = ..` is for a crate that reaches saga-core through another
/// crate (a company facade re-exporting it): the expansion names the
/// runtime by this path. Without it, the attribute uses `::saga_core`, or
/// the name of a renamed dependency (`sc = { package = "saga-core" }`)
/// found in the package's `Cargo.toml`; a package whose manifest never
/// mentions saga-core gets an error saying to write `crate = ..`.
/// `saga!` needs none of this.
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
    let user = matches!(&args, Ok(args) if args.krate.is_some());
    let krate = match &args {
        Ok(attr::TaskArgs {
            krate: Some((_, path)),
            ..
        }) => Some(path.to_token_stream()),
        _ => match manifest::saga_core() {
            manifest::SagaCore::Default => None,
            manifest::SagaCore::Renamed(name) => {
                let name = proc_macro2::Ident::new(&name, proc_macro2::Span::call_site());
                Some(quote!(::#name))
            }
            manifest::SagaCore::Absent if args.is_ok() => {
                // The function alone: a `saga!` naming it then adds that
                // it has no `#[saga_task]` (a twin type would need
                // saga-core's traits to stay quiet).
                let error = syn::Error::new(
                    proc_macro2::Span::call_site(),
                    "`saga_core` is not a dependency of this package: if it is reached through another crate or under another name, say where with `#[saga_task(crate = path::to::saga_core)]`",
                )
                .to_compile_error();
                return quote!(#error #item2).into();
            }
            manifest::SagaCore::Absent => None,
        },
    };
    expand::with_crate(krate, user, || task_with(func, args)).into()
}

fn task_with(func: syn::ItemFn, args: syn::Result<attr::TaskArgs>) -> proc_macro2::TokenStream {
    let shape = validate::check_task_fn(&func);
    let checked = match (&args, &shape) {
        (Ok(args), Ok(shape)) => validate::check_task_args(args, shape, &func.sig.ident),
        _ => Ok(()),
    };
    match (args, shape, checked) {
        (Ok(args), Ok(shape), Ok(())) => expand::task(&func, &args, &shape),
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
            quote!(#error #stub)
        }
    }
}
