//! Code generation only: everything here was validated before, so nothing
//! here rejects. The runtime is reached as `::saga_core::__private::..`,
//! std by absolute paths, and the names we introduce start with `__saga_`.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, ItemFn, LitStr, Path, Type};

use crate::ast::{Attempts, Dur, Entry, GroupDef, OptionValue, SagaDef, StepDef};
use crate::attr::{RetryArgs, TaskArgs};
use crate::validate::TaskFn;

fn private() -> TokenStream {
    quote!(::saga_core::__private)
}

fn duration(d: &Dur) -> TokenStream {
    let (secs, nanos) = (d.value.as_secs(), d.value.subsec_nanos());
    quote_spanned!(d.span=> ::core::time::Duration::new(#secs, #nanos))
}

fn some_or_none<T>(value: Option<T>, f: impl FnOnce(T) -> TokenStream) -> TokenStream {
    match value {
        Some(v) => {
            let v = f(v);
            quote!(::core::option::Option::Some(#v))
        }
        None => quote!(::core::option::Option::None),
    }
}

fn attempts(a: &Attempts) -> TokenStream {
    match a {
        Attempts::Count(n) => {
            let n = n.base10_parse::<u32>().unwrap_or(1);
            quote!(#n)
        }
        Attempts::Forever(span) => {
            let p = private();
            quote_spanned!(*span=> #p::RetryPolicy::FOREVER_ATTEMPTS)
        }
    }
}

fn retry_spec(
    attempts_: Option<&Attempts>,
    backoff: Option<&Dur>,
    max_backoff: Option<&Dur>,
    retry_if: Option<&Path>,
) -> TokenStream {
    let p = private();
    let attempts_ = some_or_none(attempts_, attempts);
    let backoff = some_or_none(backoff, duration);
    let max_backoff = some_or_none(max_backoff, duration);
    let retry_if = some_or_none(
        retry_if,
        |path| quote_spanned!(path.span()=> #path as fn(&#p::StepError) -> bool),
    );
    quote! {
        #p::RetrySpec {
            attempts: #attempts_,
            backoff: #backoff,
            max_backoff: #max_backoff,
            retry_if: #retry_if,
        }
    }
}

fn retry_args(args: Option<&RetryArgs>) -> TokenStream {
    match args {
        Some(RetryArgs {
            attempts,
            backoff,
            max_backoff,
            on,
        }) => retry_spec(
            attempts.as_ref(),
            backoff.as_ref(),
            max_backoff.as_ref(),
            on.as_ref(),
        ),
        None => {
            let p = private();
            quote!(#p::RetrySpec::NONE)
        }
    }
}

fn metadata<'a>(pairs: impl IntoIterator<Item = &'a (Ident, LitStr)>) -> TokenStream {
    let pairs = pairs.into_iter().map(|(key, value)| {
        let key = key.to_string();
        quote!((#key, #value))
    });
    quote!(&[#(#pairs),*])
}

/// The call of the function from a closure of `(ctx, info)` for a step,
/// `(ctx, output, info)` for a compensation (`undo`).
fn call(item: &ItemFn, task: &TaskFn, undo: bool) -> TokenStream {
    let ident = &item.sig.ident;
    let output = (undo && task.output_param.is_some()).then(|| quote!(__saga_output,));
    let info = task.info.then(|| quote!(__saga_info));
    let call = quote!(#ident(__saga_ctx, #output #info));
    // The error converts at the error type, so that a wrong one is
    // reported there, once, as rustc's "the trait bound `E: Into<StepError>`
    // is not satisfied". The conversion is a closure rather than the path
    // `Into::into`, which would be checked again at the call, at the
    // attribute: see `allow_closure`.
    let p = private();
    let error = quote_spanned! {task.error_span=>
        |__saga_error| ::core::convert::Into::<#p::StepError>::into(__saga_error)
    };
    if task.is_async {
        // One boxed future, made by `step_future` around the function's
        // own. Each part is spanned where its check is reported: the
        // future at the `async` (not `Send`), the output's boxing at the
        // output type (not `Send + Sync`), the error's conversion at the
        // error type.
        let future = quote_spanned!(item.sig.span()=> __saga_future);
        let output = if undo {
            quote!(|__saga_ok: ()| __saga_ok)
        } else {
            let ok = &task.ok;
            quote_spanned! {ok.span()=>
                |__saga_ok: #ok| -> #p::Erased { ::std::boxed::Box::new(__saga_ok) }
            }
        };
        quote!({
            let __saga_future = #call;
            #p::step_future(#future, #output, #error)
        })
    } else {
        quote!({
            let __saga_result = #call;
            __saga_result.map_err(#error)
        })
    }
}

/// The error's conversion in a function's call (see `call`) is a closure
/// that clippy would have the user's code replace by a path, since it
/// carries the user's spans.
fn allow_closure() -> TokenStream {
    quote!(#[allow(clippy::redundant_closure)])
}

/// Input:
/// ```text
/// #[saga_task(undo = cancel_order, retry(attempts = 3))]
/// fn create_order(ctx: &mut Shop) -> Result<u64, E> { .. }
/// ```
/// Output: the function unchanged, its twin `struct create_order {}`, and
/// `impl StepOf<Shop> for create_order` (consts for what the attribute
/// says; `action` wraps the function in a `Step`, made durable when its
/// output implements serde's traits (`Codec`); `with_compensation`
/// attaches `cancel_order` through `UndoContext`/`UndoOutput`). A function
/// that can be a compensation also gets the `Undo*` impls.
pub fn task(item: &ItemFn, args: &TaskArgs, task: &TaskFn) -> TokenStream {
    let p = private();
    let ident = &item.sig.ident;
    let vis = &item.vis;
    let ctx = &task.context;
    let mut out = quote! {
        #item
        #[allow(non_camel_case_types)]
        #[doc(hidden)]
        #vis struct #ident {}
    };
    if task.is_step() {
        out.extend(step_impl(item, args, task));
    }
    if task.is_compensation() {
        let output = task
            .output_param
            .as_ref()
            .map_or_else(|| quote!(()), ToTokens::to_token_stream);
        let call = call(item, task, true);
        let closure = quote! {
            |__saga_ctx, __saga_output, __saga_info| {
                let _ = (&__saga_output, &__saga_info);
                #call
            }
        };
        // Async ones through `__private`, which boxes their futures once.
        let attach = match (task.shared, task.is_async) {
            (false, false) => quote!(step.compensate(#closure)),
            (false, true) => quote!(#p::compensate_async(step, #closure)),
            (true, false) => quote!(step.compensate_shared(#closure)),
            (true, true) => quote!(#p::compensate_shared_async(step, #closure)),
        };
        let shared = task.shared;
        let allow = allow_closure();
        out.extend(quote! {
            impl #p::UndoContext<#ctx> for #ident {
                type Checked = #ident;
                const SHARED: bool = #shared;
            }
            impl #p::UndoOutput<#ctx, #output> for #ident {
                #allow
                fn attach(step: #p::Step<#ctx, #output>) -> #p::Step<#ctx, #output> {
                    #attach
                }
            }
        });
    }
    out
}

fn step_impl(item: &ItemFn, args: &TaskArgs, task: &TaskFn) -> TokenStream {
    let p = private();
    let ident = &item.sig.ident;
    let ctx = &task.context;
    let ok = &task.ok;
    let name = match &args.name {
        Some((_, lit)) => lit.value(),
        None => syn::ext::IdentExt::unraw(ident).to_string(),
    };
    let is_async = task.is_async;
    let pivot = args.pivot.is_some();
    let has_compensation = args.compensate.is_some();
    let retry = retry_args(args.retry.as_ref());
    let undo_retry = retry_args(args.undo_retry.as_ref().map(|(_, r)| r));
    let timeout = some_or_none(args.timeout.as_ref(), |(_, d)| duration(d));
    let metadata = metadata(args.metadata.iter().flat_map(|(_, pairs)| pairs));
    let call = call(item, task, false);
    let allow = allow_closure();
    // Spanned at the output type: an output that serde can log only when it
    // borrows `'static` data (`&'static str`) fails here, and the error
    // should point at that type.
    let codec = quote_spanned!(ok.span()=> (&#p::Codec::<#ok>::NEW).__saga_codec(__saga_step));
    // A `&C` function is a shared step, so that it can be a `parallel`
    // branch; it runs as an ordinary step as well.
    let shared = task.shared;
    // Async ones through `__private`, which boxes their futures once.
    let constructor = match (shared, is_async) {
        (false, false) => quote!(#p::Step::new),
        (false, true) => quote!(#p::step_async),
        (true, false) => quote!(#p::Step::shared),
        (true, true) => quote!(#p::step_shared_async),
    };
    let undo_shared = match &args.compensate {
        Some((_, undo)) => {
            let undo = quote_spanned!(undo.span()=> <#undo as #p::UndoContext<#ctx>>::SHARED);
            quote!(#undo)
        }
        None => quote!(true),
    };
    let with_compensation = args.compensate.as_ref().map(|(_, undo)| {
        let undo = compensation(undo, undo.span(), ctx, &quote!(#ok));
        quote! {
            fn with_compensation(step: #p::Step<#ctx, #ok>) -> #p::Step<#ctx, #ok> {
                #undo::attach(step)
            }
        }
    });
    quote! {
        impl #p::StepOf<#ctx> for #ident {
            type Output = #ok;
            const NAME: &'static str = #name;
            const IS_ASYNC: bool = #is_async;
            const SHARED: bool = #shared;
            const UNDO_SHARED: bool = #undo_shared;
            const PIVOT: bool = #pivot;
            const HAS_COMPENSATION: bool = #has_compensation;
            const RETRY: #p::RetrySpec = #retry;
            const UNDO_RETRY: #p::RetrySpec = #undo_retry;
            const TIMEOUT: ::core::option::Option<::core::time::Duration> = #timeout;
            const METADATA: &'static [(&'static str, &'static str)] = #metadata;

            #allow
            fn action(name: &'static str) -> #p::Step<#ctx, #ok> {
                use #p::{Durable as _, InMemory as _};
                let __saga_step = #constructor(name, |__saga_ctx, __saga_info| {
                    let _ = &__saga_info;
                    #call
                });
                #codec
            }

            #with_compensation
        }
    }
}

/// `<<undo as UndoContext<C>>::Checked as UndoOutput<C, T>>`, spanned at
/// the compensation so that a mismatch points there; the context is
/// checked first and a failure there hides the output check.
fn compensation(
    undo: &dyn ToTokens,
    span: proc_macro2::Span,
    ctx: &dyn ToTokens,
    output: &TokenStream,
) -> TokenStream {
    let p = private();
    quote_spanned! {span=>
        <<#undo as #p::UndoContext<#ctx>>::Checked as #p::UndoOutput<#ctx, #output>>
    }
}

/// On an error in `#[saga_task]`: the function and a twin that satisfies
/// every bound, so that the one error is not followed by others wherever
/// `saga!` names the function.
pub fn task_stub(item: &ItemFn) -> TokenStream {
    let ident = &item.sig.ident;
    let vis = &item.vis;
    let name = syn::ext::IdentExt::unraw(ident).to_string();
    let has_self = matches!(item.sig.inputs.first(), Some(syn::FnArg::Receiver(_)));
    if has_self {
        // Likely inside an `impl` block, where a struct cannot go.
        return item.to_token_stream();
    }
    let impls = stub_impls(ident, &name);
    quote! {
        #item
        #[allow(non_camel_case_types)]
        #[doc(hidden)]
        #vis struct #ident {}
        #impls
    }
}

/// Impls of every trait `saga!` names a step or compensation by, for any
/// context and output, so that a type that stands in for one after an
/// error adds no errors of its own.
fn stub_impls(ident: &Ident, name: &str) -> TokenStream {
    let p = private();
    // Never offered by rustc as "the trait is implemented for ..".
    quote! {
        #[diagnostic::do_not_recommend]
        impl<__SagaC: 'static> #p::StepOf<__SagaC> for #ident {
            type Output = ();
            const NAME: &'static str = #name;
            const IS_ASYNC: bool = true;
            const SHARED: bool = true;
            const UNDO_SHARED: bool = true;
            const PIVOT: bool = false;
            const HAS_COMPENSATION: bool = false;
            const RETRY: #p::RetrySpec = #p::RetrySpec::NONE;
            const UNDO_RETRY: #p::RetrySpec = #p::RetrySpec::NONE;
            const TIMEOUT: ::core::option::Option<::core::time::Duration> = ::core::option::Option::None;
            const METADATA: &'static [(&'static str, &'static str)] = &[];
            fn action(_: &'static str) -> #p::Step<__SagaC, ()> {
                ::core::unreachable!()
            }
        }
        #[diagnostic::do_not_recommend]
        impl<__SagaC> #p::UndoContext<__SagaC> for #ident {
            type Checked = #ident;
            const SHARED: bool = true;
        }
        #[diagnostic::do_not_recommend]
        impl<__SagaC, __SagaT> #p::UndoOutput<__SagaC, __SagaT> for #ident {
            fn attach(step: #p::Step<__SagaC, __SagaT>) -> #p::Step<__SagaC, __SagaT> {
                step
            }
        }
    }
}

fn context_of(saga: &SagaDef) -> TokenStream {
    match &saga.context {
        Some(ty) => ty.to_token_stream(),
        None => quote!(::saga_core::Context),
    }
}

/// `saga!` next to its compile errors: a value of the right type, so that
/// the uses of the saga do not add errors.
pub fn saga_stub(context: Option<&Type>) -> TokenStream {
    let p = private();
    let context = context.map_or_else(|| quote!(_), ToTokens::to_token_stream);
    quote!(#p::stub::<#context>())
}

/// `<K as StepOf<C>>`, spanned at the step's path: every mention of a
/// step has the same span, so a step that is not a saga task gives one
/// error, not one per mention.
fn step_of(step: &StepDef, ctx: &TokenStream, item: &str) -> TokenStream {
    let path = &step.alias;
    let span = step.task.span();
    let p = private();
    let item = Ident::new(item, span);
    quote_spanned!(span=> <#path as #p::StepOf<#ctx>>::#item)
}

fn dsl_name(step: &StepDef) -> Option<&LitStr> {
    step.options.iter().find_map(|o| match &o.value {
        OptionValue::Name(lit) => Some(lit),
        _ => None,
    })
}

/// The step's name as a `const` expression.
fn name_expr(step: &StepDef, ctx: &TokenStream) -> TokenStream {
    match dsl_name(step) {
        Some(lit) => quote!(#lit),
        None => step_of(step, ctx, "NAME"),
    }
}

/// Whether the step is a pivot, as a `const` expression.
fn pivot_expr(step: &StepDef, ctx: &TokenStream) -> TokenStream {
    let k_pivot = step_of(step, ctx, "PIVOT");
    let dsl = step.pivot;
    quote!((#dsl || #k_pivot))
}

fn path_text(path: &Path) -> String {
    path.to_token_stream().to_string().replace(' ', "")
}

/// Input:
/// ```text
/// saga! { name: "order", context: Shop,
///         step create_order => undo cancel_order, retry 3;
///         parallel { step reserve => undo release; step book; }
///         pivot ship; }
/// ```
/// Output: a block with the rule checks across items (below), then
/// ```text
/// let b = Saga::<Shop>::builder("order");
/// let b = { let dsl = Dsl { .. }; let s = step_of::<Shop, create_order>(&dsl);
///           let s = <<cancel_order as UndoContext<Shop>>::Checked as UndoOutput<..>>::attach(s);
///           push::<Shop, create_order>(b, s, &dsl) };
/// let b = { let g = Parallel::<Shop>::new();
///           let g = { .. <reserve as StepOf<Shop>>::branch(g, s, &dsl) };
///           let g = { .. };
///           b.parallel(g) };
/// ..
/// finish(b)
/// ```
pub fn saga(saga: &SagaDef) -> TokenStream {
    let p = private();
    let ctx = context_of(saga);
    let name = saga.name.as_ref().map(LitStr::value).unwrap_or_default();
    let steps = saga.steps();
    let mut checks = checks(&steps, &ctx);
    for group in saga.groups() {
        checks.extend(group_checks(group, &ctx));
    }
    let pushes = saga.entries.iter().map(|entry| match entry {
        Entry::Step(step) => push(step, &ctx, Target::Builder),
        Entry::Parallel(group) => parallel(group, &ctx),
    });
    let aliases = aliases(&steps);
    quote! {{
        #aliases
        #checks
        let __saga_builder = #p::Saga::<#ctx>::builder(#name);
        #(let __saga_builder = #pushes;)*
        #p::finish(__saga_builder)
    }}
}

/// Input: `step create_order => undo cancel_order;` (the first step).
/// Output:
/// ```text
/// use create_order as __saga_step_0;  use cancel_order as __saga_undo_0;
/// use __saga_plain::*;                // fallbacks, shadowed by the above
/// mod __saga_plain { pub struct __saga_step_0 {} /* __SAGA_PLAIN, stubs */ .. }
/// const _: () = <checks::Plain<{ __saga_step_0::__SAGA_PLAIN }> as checks::Annotated>::OK;
/// ```
/// The rest of the expansion names the aliases. A `#[saga_task]` function
/// has a twin type, which the explicit import brings and which shadows the
/// glob's fallback; a plain function fills only the value namespace, so
/// the alias is the fallback type, whose `__SAGA_PLAIN` fails the check in
/// our words (see `NotPlain`), and whose stub impls add no other error.
fn aliases(steps: &[&StepDef]) -> TokenStream {
    let p = private();
    let mut uses = TokenStream::new();
    let mut fallbacks = TokenStream::new();
    let mut checks = TokenStream::new();
    let pairs = steps.iter().flat_map(|step| {
        let undo = step.undo.as_ref().map(|(_, undo)| (undo, &step.undo_alias));
        std::iter::once((&step.task, &step.alias)).chain(undo)
    });
    for (path, alias) in pairs {
        let name = path_text(path);
        let stubs = stub_impls(alias, &name);
        uses.extend(quote! {
            #[allow(unused_imports)]
            use #path as #alias;
        });
        fallbacks.extend(quote! {
            #[allow(non_camel_case_types)]
            pub struct #alias {}
            impl #alias {
                pub const __SAGA_PLAIN: bool = true;
            }
            #stubs
        });
        // Every token at the user's path, where the error points.
        checks.extend(quote_spanned! {path.span()=>
            const _: () = <::saga_core::checks::Plain<{ #alias::__SAGA_PLAIN }>
                as ::saga_core::checks::Annotated>::OK;
        });
    }
    quote! {
        #[allow(unused_imports)]
        use __saga_plain::*;
        #[allow(unused_imports)]
        use #p::NotPlain as _;
        #uses
        mod __saga_plain {
            #fallbacks
        }
        #checks
    }
}

/// Where `push` adds a step.
#[derive(Clone, Copy)]
enum Target {
    /// The saga's builder, `__saga_builder`.
    Builder,
    /// A `parallel` group, `__saga_group`.
    Group,
}

/// A `parallel { .. }` group: its branches added to a `Parallel`, which is
/// added to the builder. `SagaBuilder::parallel` needs `C: Send + Sync`;
/// the call carries the `parallel` keyword's span, so a context that is
/// not `Sync` is reported there.
fn parallel(group: &GroupDef, ctx: &TokenStream) -> TokenStream {
    let p = private();
    let branches = group.branches.iter().map(|b| push(b, ctx, Target::Group));
    let add = quote_spanned!(group.keyword.span()=> __saga_builder.parallel(__saga_group));
    quote! {{
        let __saga_group = #p::Parallel::<#ctx>::new();
        #(let __saga_group = #branches;)*
        #add
    }}
}

fn push(step: &StepDef, ctx: &TokenStream, into: Target) -> TokenStream {
    let p = private();
    let mut attempts = None;
    let mut undo_attempts = None;
    let mut backoff = None;
    let mut max_backoff = None;
    let mut retry_if = None;
    let mut timeout = None;
    let mut meta: &[(Ident, LitStr)] = &[];
    for option in &step.options {
        match &option.value {
            OptionValue::Retry(a) => attempts = Some(a),
            OptionValue::UndoRetry(a) => undo_attempts = Some(a),
            OptionValue::Backoff(d) => backoff = Some(d),
            OptionValue::MaxBackoff(d) => max_backoff = Some(d),
            OptionValue::RetryIf(path) => retry_if = Some(path),
            OptionValue::Timeout(d) => timeout = Some(d),
            OptionValue::Name(_) => {}
            OptionValue::Metadata(pairs) => meta = pairs,
        }
    }
    let name = some_or_none(dsl_name(step), |lit| quote!(#lit));
    let retry = retry_spec(attempts, backoff, max_backoff, retry_if);
    let undo_retry = retry_spec(undo_attempts, None, None, None);
    let timeout = some_or_none(timeout, duration);
    let metadata = metadata(meta);
    let pivot = step.pivot;
    let undo = step.undo.as_ref().map(|(_, undo)| {
        let output = step_of(step, ctx, "Output");
        let undo = compensation(&step.undo_alias, undo.span(), ctx, &output);
        quote!(let __saga_step = #undo::attach(__saga_step);)
    });
    // The whole calls carry the step's span, so that an error about the
    // step points at it rather than at the whole macro.
    let span = step.task.span();
    let step_call = step_of(step, ctx, "step");
    let step_call = quote_spanned!(span=> #step_call(&__saga_dsl));
    let push_call = match into {
        Target::Builder => {
            let push = step_of(step, ctx, "push");
            quote_spanned!(span=> #push(__saga_builder, __saga_step, &__saga_dsl))
        }
        Target::Group => {
            let branch = step_of(step, ctx, "branch");
            quote_spanned!(span=> #branch(__saga_group, __saga_step, &__saga_dsl))
        }
    };
    quote! {{
        let __saga_dsl = #p::Dsl {
            name: #name,
            retry: #retry,
            undo_retry: #undo_retry,
            timeout: #timeout,
            metadata: #metadata,
            pivot: #pivot,
        };
        let __saga_step = #step_call;
        #undo
        #push_call
    }}
}

/// Checks of what only the types know: another item's `name`, `pivot`,
/// compensation, retries and asyncness, as rules of `saga_core::checks`
/// (see `rule`). Each is spanned at the token the user should change; one
/// function per rule below.
fn checks(steps: &[&StepDef], ctx: &TokenStream) -> TokenStream {
    let mut out = TokenStream::new();
    for (i, step) in steps.iter().enumerate() {
        let earlier = &steps[..i];
        out.extend(compensation_given_twice(step, ctx));
        out.extend(timeout_needs_async(step, ctx));
        out.extend(undo_retry_needs_compensation(step, ctx));
        out.extend(one_pivot(step, earlier, ctx));
        out.extend(no_compensation_from_pivot(step, earlier, ctx));
        out.extend(unique_names(step, earlier, ctx));
    }
    out
}

/// `const _: () = <Step as checks::Rule<Params.., { holds }>>::OK;`, with
/// `Step` the step's alias: each rule is implemented for every type when
/// `holds` is `true` only, so a broken rule is a compile error in the
/// rule's words (its `on_unimplemented`, which names the step as
/// `{Self}`), every token of it at `span`, where the error points.
fn rule(
    span: Span,
    step: &StepDef,
    rule: &str,
    params: &[&dyn ToTokens],
    holds: TokenStream,
) -> TokenStream {
    let alias = Ident::new(&step.alias.to_string(), span);
    let rule = Ident::new(rule, span);
    quote_spanned! {span=>
        const _: () = <#alias as ::saga_core::checks::#rule<#(#params,)* { #holds }>>::OK;
    }
}

/// A group's branches: each takes the context shared, and so does its
/// compensation, and none is a pivot by its attribute (the `pivot`
/// keyword is rejected by `validate.rs`).
fn group_checks(group: &GroupDef, ctx: &TokenStream) -> TokenStream {
    let mut out = TokenStream::new();
    for step in &group.branches {
        let span = step.task.span();
        let shared = step_of(step, ctx, "SHARED");
        out.extend(rule(span, step, "SharedBranch", &[ctx], shared));
        let (span, undo_shared) = match &step.undo {
            Some((_, undo)) => {
                let p = private();
                let alias = &step.undo_alias;
                let shared =
                    quote_spanned!(undo.span()=> <#alias as #p::UndoContext<#ctx>>::SHARED);
                (undo.span(), shared)
            }
            None => (span, step_of(step, ctx, "UNDO_SHARED")),
        };
        out.extend(rule(
            span,
            step,
            "SharedBranchCompensation",
            &[ctx],
            undo_shared,
        ));
        let pivot = step_of(step, ctx, "PIVOT");
        out.extend(rule(
            step.task.span(),
            step,
            "PivotNotBranch",
            &[],
            quote!(!#pivot),
        ));
    }
    out
}

/// Whether the step has a compensation, as a `const` expression.
fn has_compensation(step: &StepDef, ctx: &TokenStream) -> TokenStream {
    let dsl = step.undo.is_some();
    let attr = step_of(step, ctx, "HAS_COMPENSATION");
    quote!((#dsl || #attr))
}

fn compensation_given_twice(step: &StepDef, ctx: &TokenStream) -> TokenStream {
    let Some((keyword, undo)) = &step.undo else {
        return TokenStream::new();
    };
    let span = keyword.span().join(undo.span()).unwrap_or(keyword.span());
    let attr = step_of(step, ctx, "HAS_COMPENSATION");
    rule(span, step, "OneCompensation", &[], quote!(!#attr))
}

fn timeout_needs_async(step: &StepDef, ctx: &TokenStream) -> TokenStream {
    let Some(option) = step
        .options
        .iter()
        .find(|o| matches!(o.value, OptionValue::Timeout(_)))
    else {
        return TokenStream::new();
    };
    let is_async = step_of(step, ctx, "IS_ASYNC");
    rule(
        option.keyword.span(),
        step,
        "TimeoutNeedsAsync",
        &[],
        is_async,
    )
}

fn undo_retry_needs_compensation(step: &StepDef, ctx: &TokenStream) -> TokenStream {
    let option = step
        .options
        .iter()
        .find(|o| matches!(o.value, OptionValue::UndoRetry(_)));
    let dsl = option.is_some();
    let attr = step_of(step, ctx, "UNDO_RETRY");
    let has_compensation = has_compensation(step, ctx);
    let span = option.map_or(step.task.span(), |o| o.keyword.span());
    let holds = quote!(!((#dsl || #attr.is_set()) && !#has_compensation));
    rule(span, step, "UndoRetryNeedsCompensation", &[], holds)
}

fn one_pivot(step: &StepDef, earlier: &[&StepDef], ctx: &TokenStream) -> TokenStream {
    if earlier.is_empty() {
        return TokenStream::new();
    }
    let this = pivot_expr(step, ctx);
    let earlier = earlier.iter().map(|s| pivot_expr(s, ctx));
    let holds = quote!(!(#this && (false #(|| #earlier)*)));
    rule(step.task.span(), step, "OnePivot", &[], holds)
}

fn no_compensation_from_pivot(
    step: &StepDef,
    earlier: &[&StepDef],
    ctx: &TokenStream,
) -> TokenStream {
    let this = pivot_expr(step, ctx);
    let earlier = earlier.iter().map(|s| pivot_expr(s, ctx));
    let has_compensation = has_compensation(step, ctx);
    let holds = quote!(!(#has_compensation && (#this #(|| #earlier)*)));
    rule(
        step.task.span(),
        step,
        "NoCompensationFromPivot",
        &[],
        holds,
    )
}

fn unique_names(step: &StepDef, earlier: &[&StepDef], ctx: &TokenStream) -> TokenStream {
    let p = private();
    let name = name_expr(step, ctx);
    earlier
        .iter()
        .map(|other| {
            let other_name = name_expr(other, ctx);
            let holds = quote!(!#p::str_eq(#other_name, #name));
            rule(step.task.span(), step, "UniqueName", &[&other.alias], holds)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn path_text_has_no_spaces() {
        let path: syn::Path = syn::parse_quote!(shop::create_order);
        assert_eq!(super::path_text(&path), "shop::create_order");
    }

    #[test]
    fn stub_context_defaults_to_inference() {
        assert_eq!(
            super::saga_stub(None).to_string(),
            ":: saga_core :: __private :: stub :: < _ > ()"
        );
    }
}

/// `docs/MACROS.md` shows an expansion; this keeps it true.
#[cfg(test)]
mod docs_expansion {
    use quote::ToTokens;

    fn expansion() -> String {
        let create: syn::ItemFn = syn::parse_quote! {
            fn create_order(order: &mut Order) -> Result<u64, StepError> {
                order.id = Some(1001);
                Ok(1001)
            }
        };
        let cancel: syn::ItemFn = syn::parse_quote! {
            fn cancel_order(order: &mut Order, id: Option<&u64>) -> Result<(), StepError> {
                order.id = None;
                Ok(())
            }
        };
        let create_args: crate::attr::TaskArgs =
            syn::parse_quote!(undo = cancel_order, retry(attempts = 3, backoff = "100ms"));
        let cancel_args: crate::attr::TaskArgs = syn::parse_quote!();
        let saga: crate::ast::SagaDef = syn::parse_quote! {
            name: "order",
            context: Order,
            step create_order, retry 5;
            pivot ship_order;
        };
        let create_fn = crate::validate::check_task_fn(&create).unwrap();
        let cancel_fn = crate::validate::check_task_fn(&cancel).unwrap();
        let create = super::task(&create, &create_args, &create_fn);
        let cancel = super::task(&cancel, &cancel_args, &cancel_fn);
        let saga = super::saga(&saga);
        let file: syn::File = syn::parse_quote! {
            #create
            #cancel
            fn main() { let order = #saga; }
        };
        file.to_token_stream().to_string()
    }

    #[test]
    fn the_documented_expansion_is_the_real_one() {
        let doc = include_str!("../../docs/MACROS.md");
        let start = doc.find("## Output\n\n```rust,ignore\n").unwrap()
            + "## Output\n\n```rust,ignore\n".len();
        let end = start + doc[start..].find("```").unwrap();
        let documented: syn::File = syn::parse_str(&doc[start..end]).unwrap();
        assert_eq!(
            squash(&documented.to_token_stream().to_string()),
            squash(&expansion())
        );
    }

    /// Without what `rustfmt` may change inside macro arguments and
    /// argument lists: spacing, trailing commas, redundant parentheses.
    fn squash(code: &str) -> String {
        code.chars()
            .filter(|c| !c.is_whitespace() && !matches!(c, ',' | '(' | ')'))
            .collect()
    }
}
