//! The expansion of `#[saga_task]`: the function unchanged, its twin type
//! and the `Task` impl that calls it (or a stub next to an error).

use super::*;

/// The call of the function from a closure of `(ctx, info)` for a step,
/// `(ctx, output, info)` for a compensation (`undo`): the parameters after
/// the context in the function's order, each dependency `&T` borrowed
/// from the saga's dependencies `d` (`info.dependencies()`). The function's
/// `StepInfo<'_>` is the same information without the dependencies (its
/// type is `StepInfo<'_, ()>`), and its `StepInfo<'_, X>` the same with the
/// `X` that the saga's dependencies provide (every type provides itself),
/// made next to the call: an async call then runs in an `async move` block
/// that owns it.
pub(super) fn call(item: &ItemFn, task: &TaskFn, undo: bool, d: &Ident) -> TokenStream {
    let ident = &item.sig.ident;
    let p = private();
    let k = krate_at(task.error_span);
    let args = task.params.iter().map(|param| match param {
        Param::Output if undo => quote!(__saga_output),
        // A step has no output parameter (`is_step`).
        Param::Output => quote!(::core::option::Option::None),
        Param::Info { by_ref: true, .. } => quote!(&__saga_plain_info),
        Param::Info { by_ref: false, .. } => quote!(__saga_plain_info),
        Param::Dependency(ty) => quote_spanned! {ty.span()=>
            <#d as #p::Provides<#ty>>::provide(__saga_info.dependencies())
        },
    });
    let call = quote!(#ident(__saga_ctx, #(#args),*));
    let has_info = task.params.iter().any(|p| matches!(p, Param::Info { .. }));
    let info_deps = match task.info_dependencies() {
        Some(ty) => quote_spanned! {ty.span()=>
            <#d as #p::Provides<#ty>>::provide(__saga_info.dependencies())
        },
        None => quote!(&()),
    };
    let plain_info = has_info
        .then(|| quote!(let __saga_plain_info = __saga_info.with_dependencies(#info_deps);));
    // The error converts at the error type, so that a wrong one is
    // reported there, once, in `checks::StepErrorType`'s words (rustc's
    // own `Into<StepError>` reports each missing bound of a
    // `Box<dyn Error>` apart: `Send`, `Sync`, `Sized`). The conversion is
    // a closure rather than a path, which would be checked again at the
    // call, at the attribute: see `allow_call`.
    let error = quote_spanned! {task.error_span=>
        |__saga_error| #k::checks::StepErrorType::__saga_into(__saga_error)
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
            quote_spanned!(ok.span()=> |__saga_ok: #ok| __saga_ok)
        };
        let call = match plain_info {
            Some(plain_info) => quote!(async move {
                #plain_info
                #call.await
            }),
            None => call,
        };
        quote!({
            let __saga_future = #call;
            #p::step_future(#future, #output, #error)
        })
    } else {
        quote!({
            #plain_info
            let __saga_result = #call;
            __saga_result.map_err(#error)
        })
    }
}

/// On the consts that call the function: the error's conversion (see
/// `call`) is a closure that clippy would have the user's code replace by
/// a path, since it carries the user's spans; and a `#[deprecated]`
/// function (a step kept while old executions drain) is called by its own
/// attribute, which the user's `#[allow(deprecated)]` cannot reach.
pub(super) fn allow_call() -> TokenStream {
    quote!(#[allow(clippy::redundant_closure, deprecated)])
}

/// Input:
/// ```text
/// #[saga_task(undo = cancel_order, retry(attempts = 3))]
/// fn create_order(ctx: &mut Shop) -> Result<u64, E> { .. }
/// ```
/// Output: the function unchanged, its twin `struct create_order {}`, and
/// `impl Task<Shop> for create_order` (consts for what the attribute
/// says; `ACTION` calls the function; `UNDO` is `cancel_order`'s, read
/// through `UndoContext`/`UndoOutput`; `__saga_codec` makes the step
/// durable when its output implements serde's traits (`Codec`)). A
/// function that can be a compensation also gets the `Undo*` impls,
/// `UndoOf::UNDO` calling it (`UndoOutput` for every `T` when it takes
/// `Option<&R>`, for `T = ()` only when it does not).
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
        let d = deps_param(item, args);
        let call = call(item, task, true, &d);
        let t = param_name(item, args, "T", "__SagaT");
        let closure = quote! {
            |__saga_ctx, __saga_output, __saga_info| {
                let __saga_output = #p::received::<#t, #output>(__saga_output);
                let _ = (&__saga_output, &__saga_info);
                #call
            }
        };
        let shape = shape(task, true);
        let shared = task.shared;
        let is_async = task.is_async;
        let allow = allow_call();
        let bounds = dependency_bounds(ident, task, true);
        // Without an `Option<&R>`, it undoes only a step whose output is
        // `()`: for any other, the bound fails in `UndoOutput`'s words.
        let step = param_name(item, args, "Step", "__SagaStep");
        let output_impl = if task.output_param.is_some() {
            quote! {
                impl<#t, #step: ?::core::marker::Sized> #p::UndoOutput<#ctx, #t, #step> for #ident {
                    type Received = #output;
                }
            }
        } else {
            quote! {
                impl<#step: ?::core::marker::Sized> #p::UndoOutput<#ctx, (), #step> for #ident {
                    type Received = ();
                }
            }
        };
        out.extend(quote! {
            impl #p::UndoContext<#ctx> for #ident {
                type Checked = #ident;
                const SHARED: bool = #shared;
                const ASYNC: bool = #is_async;
            }
            #output_impl
            impl<#t: 'static, #d> #p::UndoOf<#ctx, #t, #d> for #ident
            where
                #d: #bounds,
            {
                #allow
                const UNDO: #p::UndoFn<#ctx, #d, #t> = #shape(#closure);
            }
        });
    }
    out
}

pub(super) fn step_impl(item: &ItemFn, args: &TaskArgs, task: &TaskFn) -> TokenStream {
    let p = private();
    let ident = &item.sig.ident;
    let ctx = &task.context;
    let ok = &task.ok;
    let name = match &args.name {
        Some((_, lit)) => lit.value(),
        None => syn::ext::IdentExt::unraw(ident).to_string(),
    };
    let pivot = args.pivot.is_some();
    let retry = retry_args(args.retry.as_ref());
    let undo_retry = retry_args(args.undo_retry.as_ref().map(|(_, r)| r));
    let timeout = some_or_none(args.timeout.as_ref(), |(_, d)| duration(d));
    let undo_timeout = some_or_none(args.undo_timeout.as_ref(), |(_, d)| duration(d));
    let metadata = metadata(args.metadata.iter().flat_map(|(_, pairs)| pairs));
    let d = deps_param(item, args);
    let call = call(item, task, false, &d);
    let allow = allow_call();
    // Spanned at the output type: an output that serde can log only when it
    // borrows `'static` data (`&'static str`) fails here, and the error
    // should point at that type.
    let codec = quote_spanned!(ok.span()=> (&#p::Codec::<#ok>::NEW).__saga_codec(__saga_step));
    let shape = shape(task, false);
    let bounds = dependency_bounds(ident, task, false);
    // An undo named by the attribute: its context and output are checked
    // in `UNDO`, once, at the attribute's `undo = ..`, whatever the
    // dependencies; the impl's bound is what the undo asks of them
    // (`UndoOf`, which holds for every output), so that the task serves
    // the sagas whose dependencies provide what both functions ask for,
    // and a wrong output is not reported again wherever `saga!` names the
    // step.
    //
    // The compensation is named through an alias, as `saga!` names its
    // steps (`aliases`), so that a plain function is one error in our
    // words ("add `#[saga_task]`") rather than rustc's "expected type,
    // found function": the impl goes in a block that holds the fallback.
    let alias = args.compensate.as_ref().map(|(_, undo)| {
        let last = undo.segments.last().map_or(undo.span(), |s| s.ident.span());
        (undo, Ident::new("__saga_undo", last))
    });
    let (undo, undo_bound) = match &alias {
        Some((path, undo)) => {
            let checked = compensation(undo, path.span(), ident, ctx, &quote!(#ok));
            let of = quote_spanned!(path.span()=> #p::UndoOf<#ctx, #ok, #d>);
            (
                quote!(::core::option::Option::Some(<#checked as #of>::UNDO)),
                quote_spanned!(undo.span()=> #undo: #of,),
            )
        }
        None => (quote!(::core::option::Option::None), TokenStream::new()),
    };
    let task_impl = quote! {
        impl<#d> #p::Task<#ctx, #d> for #ident
        where
            #d: #bounds,
            #undo_bound
        {
            type Output = #ok;
            const NAME: &'static str = #name;
            const PIVOT: bool = #pivot;
            const RETRY: #p::RetrySpec = #retry;
            const UNDO_RETRY: #p::RetrySpec = #undo_retry;
            const TIMEOUT: ::core::option::Option<::core::time::Duration> = #timeout;
            const UNDO_TIMEOUT: ::core::option::Option<::core::time::Duration> = #undo_timeout;
            const METADATA: &'static [(&'static str, &'static str)] = #metadata;
            #allow
            const ACTION: #p::TaskFn<#ctx, #d, #ok> = #shape(|__saga_ctx, __saga_info| {
                let _ = &__saga_info;
                #call
            });
            const UNDO: ::core::option::Option<#p::UndoFn<#ctx, #d, #ok>> = #undo;

            fn __saga_codec(
                __saga_step: #p::Step<#ctx, #ok, #d>,
            ) -> #p::Step<#ctx, #ok, #d> {
                use #p::{Durable as _, InMemory as _};
                #codec
            }
        }
    };
    match &alias {
        Some((path, alias)) => {
            let Aliases { fallbacks, imports } = path_aliases([(*path, alias)]);
            quote! {
                // The attribute's use of a deprecated compensation is not
                // the user's to allow.
                #[allow(deprecated)]
                const _: () = {
                    #fallbacks
                    {
                        #imports
                        #task_impl
                    }
                };
            }
        }
        None => task_impl,
    }
}

/// The name of the impls' parameter for the saga's dependencies: `D`, as
/// in `Task<C, D>` (see `param_name`).
pub(super) fn deps_param(item: &ItemFn, args: &TaskArgs) -> Ident {
    param_name(item, args, "D", "__SagaD")
}

/// The name of a type parameter of the generated impls: `short` (`D`, as
/// in `Task<C, D>`), so that rustc's notes ("the trait `Task<Order, D>` is
/// implemented for `charge`") name nothing the user did not write, unless
/// the function or the attribute names a `short` of its own, which the
/// parameter would shadow; then `fallback`.
pub(super) fn param_name(item: &ItemFn, args: &TaskArgs, short: &str, fallback: &str) -> Ident {
    fn names(tokens: TokenStream, name: &str) -> bool {
        tokens.into_iter().any(|tree| match tree {
            proc_macro2::TokenTree::Ident(ident) => ident == name,
            proc_macro2::TokenTree::Group(group) => names(group.stream(), name),
            _ => false,
        })
    }
    let mut tokens = item.sig.to_token_stream();
    if let Some((_, undo)) = &args.compensate {
        undo.to_tokens(&mut tokens);
    }
    for retry in [
        args.retry.as_ref(),
        args.undo_retry.as_ref().map(|(_, r)| r),
    ]
    .into_iter()
    .flatten()
    {
        retry.on.to_tokens(&mut tokens);
    }
    let name = if names(tokens, short) {
        fallback
    } else {
        short
    };
    Ident::new(name, proc_macro2::Span::call_site())
}

/// The variant of `TaskFn` (or `UndoFn`) for the function's shape:
/// `&mut C` or `&C`, sync or async.
fn shape(task: &TaskFn, undo: bool) -> TokenStream {
    let p = private();
    let kind = if undo { quote!(UndoFn) } else { quote!(TaskFn) };
    let variant = match (task.shared, task.is_async) {
        (false, false) => quote!(Exclusive),
        (false, true) => quote!(ExclusiveAsync),
        (true, false) => quote!(Shared),
        (true, true) => quote!(SharedAsync),
    };
    quote!(#p::#kind::#variant)
}

/// What the impl of a function asks of the saga's dependencies `D`:
/// `Send + Sync + 'static` and, for each `&T` parameter, the rule
/// `checks::Dependency<f, T>` (that is, `Provides<T>`, in words that name
/// the function; `checks::UndoDependency<f, T>` for a compensation, whose
/// words add that its step's output comes as `Option<&T>`), spanned at the
/// parameter; for a `StepInfo<'_, X>` parameter,
/// `checks::InfoDependencies<f, X>`, spanned at the `X`.
pub(super) fn dependency_bounds(ident: &Ident, task: &TaskFn, undo: bool) -> TokenStream {
    let rule = if undo {
        quote!(UndoDependency)
    } else {
        quote!(Dependency)
    };
    let tools = task.dependencies().map(|ty| {
        let k = krate_at(ty.span());
        quote_spanned!(ty.span()=> + #k::checks::#rule<#ident, #ty>)
    });
    let info = task.info_dependencies().map(|ty| {
        let k = krate_at(ty.span());
        quote_spanned!(ty.span()=> + #k::checks::InfoDependencies<#ident, #ty>)
    });
    quote!(::core::marker::Send + ::core::marker::Sync + 'static #(#tools)* #info)
}

/// The compensation `undo` of `step`, checked, as a type:
/// `<<<undo as UndoContext<C>>::Checked as UndoOutput<C, T, step>>::Received
/// as checks::UndoReceives<step, undo, T>>::Undo`, spanned at the
/// compensation so that a mismatch points there. The context is checked
/// first; a failure there hides the output check, and a failure of either
/// hides what is asked of the type it names (`UndoOf`), so that a wrong
/// compensation is one error.
pub(super) fn compensation(
    undo: &dyn ToTokens,
    span: proc_macro2::Span,
    step: &dyn ToTokens,
    ctx: &dyn ToTokens,
    output: &TokenStream,
) -> TokenStream {
    let p = private();
    let k = krate_at(span);
    quote_spanned! {span=>
        <<<#undo as #p::UndoContext<#ctx>>::Checked as #p::UndoOutput<#ctx, #output, #step>>::Received
            as #k::checks::UndoReceives<#step, #undo, #output>>::Undo
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
    // `saga!` checks that a step's name exists by naming it as a value,
    // which rustc cannot do for a generic function without its type
    // arguments; it looks for a value of the name in this module first.
    // `impl Trait` in a parameter makes it generic too.
    let impl_trait = item.sig.inputs.iter().any(|arg| match arg {
        syn::FnArg::Typed(arg) => crate::validate::impl_trait(&arg.ty).is_some(),
        syn::FnArg::Receiver(_) => false,
    });
    let generic = (!item.sig.generics.params.is_empty() || impl_trait).then(|| {
        let module = format_ident!("__saga_generic_{}", name);
        quote! {
            #[allow(non_snake_case)]
            #[doc(hidden)]
            #vis mod #module {
                #[allow(non_upper_case_globals, dead_code)]
                pub const #ident: () = ();
            }
        }
    });
    quote! {
        #item
        #[allow(non_camel_case_types)]
        #[doc(hidden)]
        #vis struct #ident {}
        #impls
        #generic
    }
}

/// Impls of every trait `saga!` names a step or compensation by, for any
/// context and output, so that a type that stands in for one after an
/// error adds no errors of its own.
pub(super) fn stub_impls(ident: &Ident, name: &str) -> TokenStream {
    let p = private();
    // Without `#[diagnostic::do_not_recommend]`, which a
    // `#![no_implicit_prelude]` module cannot name (the `diagnostic` tool
    // module is in the prelude): rustc then offers the fallback of
    // `saga!`'s first step in a help of `tests/ui/step-is-compensation.rs`.
    quote! {
        impl<__SagaC: 'static, __SagaD> #p::Task<__SagaC, __SagaD> for #ident {
            type Output = ();
            const NAME: &'static str = #name;
            const ACTION: #p::TaskFn<__SagaC, __SagaD, ()> =
                #p::TaskFn::SharedAsync(|_, _| ::core::unreachable!());
        }
        impl<__SagaC> #p::UndoContext<__SagaC> for #ident {
            type Checked = #ident;
            const SHARED: bool = true;
            const ASYNC: bool = true;
        }
        impl<__SagaC, __SagaT, __SagaStep: ?::core::marker::Sized>
            #p::UndoOutput<__SagaC, __SagaT, __SagaStep> for #ident
        {
            type Received = __SagaT;
        }
        impl<__SagaC, __SagaT, __SagaD> #p::UndoOf<__SagaC, __SagaT, __SagaD> for #ident {
            const UNDO: #p::UndoFn<__SagaC, __SagaD, __SagaT> =
                #p::UndoFn::SharedAsync(|_, _, _| ::core::unreachable!());
        }
    }
}
