//! The expansion of `saga!`: the builder calls for each step and parallel
//! group, with the aliases that tell an annotated function from a plain one.

use super::*;

/// The saga's context `C` and dependencies `D`: as tokens, the context
/// (what the rules and compensations name); `Task<C, D>` through `task`.
pub(super) struct SagaTypes {
    pub ctx: TokenStream,
    pub deps: TokenStream,
}

impl SagaTypes {
    /// `Task<C, D>`.
    fn task(&self) -> TokenStream {
        let p = private();
        let (ctx, deps) = (&self.ctx, &self.deps);
        quote!(#p::Task<#ctx, #deps>)
    }
}

impl ToTokens for SagaTypes {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        self.ctx.to_tokens(tokens);
    }
}

pub(super) fn types_of(saga: &SagaDef) -> SagaTypes {
    SagaTypes {
        ctx: match &saga.context {
            Some(ty) => ty.to_token_stream(),
            None => quote!(::saga_core::Context),
        },
        deps: match &saga.dependencies {
            Some(ty) => ty.to_token_stream(),
            None => quote!(()),
        },
    }
}

/// `saga!` next to its compile errors: a value of the right type, so that
/// the uses of the saga do not add errors.
pub fn saga_stub(context: Option<&Type>, dependencies: Option<&Type>) -> TokenStream {
    let p = private();
    let context = context.map_or_else(|| quote!(_), ToTokens::to_token_stream);
    let dependencies = dependencies.map_or_else(|| quote!(_), ToTokens::to_token_stream);
    quote!(#p::stub::<#context, #dependencies>())
}

/// What `<K as Task<C>>` says of `item`, spanned at the step's path:
/// every mention of a step has the same span and names the one trait, so
/// a step that is not a task gives one error, not one per mention.
pub(super) fn step_of(step: &StepDef, ctx: &SagaTypes, item: &str) -> TokenStream {
    let path = &step.alias;
    let span = step.task.span();
    let p = private();
    let task = ctx.task();
    let task = quote_spanned!(span=> <#path as #task>);
    match item {
        "IS_ASYNC" => quote_spanned!(span=> #task::ACTION.is_async()),
        "SHARED" => quote_spanned!(span=> #task::ACTION.is_shared()),
        "HAS_COMPENSATION" => quote_spanned!(span=> #task::UNDO.is_some()),
        "UNDO_SHARED" => quote_spanned!(span=> #p::undo_shared(&#task::UNDO)),
        _ => {
            let item = Ident::new(item, span);
            quote_spanned!(span=> #task::#item)
        }
    }
}

pub(super) fn dsl_name(step: &StepDef) -> Option<&LitStr> {
    step.options.iter().find_map(|o| match &o.value {
        OptionValue::Name(lit) => Some(lit),
        _ => None,
    })
}

/// The step's name as a `const` expression.
pub(super) fn name_expr(step: &StepDef, ctx: &SagaTypes) -> TokenStream {
    match dsl_name(step) {
        Some(lit) => quote!(#lit),
        None => step_of(step, ctx, "NAME"),
    }
}

/// Whether the step is a pivot, as a `const` expression.
pub(super) fn pivot_expr(step: &StepDef, ctx: &SagaTypes) -> TokenStream {
    let k_pivot = step_of(step, ctx, "PIVOT");
    let dsl = step.pivot;
    quote!((#dsl || #k_pivot))
}

pub(super) fn path_text(path: &Path) -> String {
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
///           let s = <<<cancel_order as UndoContext<Shop>>::Checked as UndoOutput<..>>::Received
///                       as checks::UndoReceives<..>>::Undo as UndoOf<..>>::attach(s);
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
    let ctx = types_of(saga);
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
    let deps = &ctx.deps;
    quote! {{
        #aliases
        #checks
        let __saga_builder = #p::Saga::<#ctx, #deps>::builder(#name);
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
pub(super) fn aliases(steps: &[&StepDef]) -> TokenStream {
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
pub(super) fn parallel(group: &GroupDef, ctx: &SagaTypes) -> TokenStream {
    let p = private();
    let branches = group.branches.iter().map(|b| push(b, ctx, Target::Group));
    let deps = &ctx.deps;
    let add = quote_spanned!(group.keyword.span()=> __saga_builder.parallel(__saga_group));
    quote! {{
        let __saga_group = #p::Parallel::<#ctx, #deps>::new();
        #(let __saga_group = #branches;)*
        #add
    }}
}

fn push(step: &StepDef, ctx: &SagaTypes, into: Target) -> TokenStream {
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
        let checked = compensation(&step.undo_alias, undo.span(), &step.alias, ctx, &output);
        let deps = &ctx.deps;
        let undo = quote_spanned! {undo.span()=>
            <#checked as #p::UndoOf<#ctx, #output, #deps>>
        };
        quote!(let __saga_step = #undo::attach(__saga_step);)
    });
    // The whole calls carry the step's span, so that an error about the
    // step points at it rather than at the whole macro.
    let span = step.task.span();
    let step_call = step_of(step, ctx, "__saga_step");
    let step_call = quote_spanned!(span=> #step_call(&__saga_dsl));
    let push_call = match into {
        Target::Builder => {
            let pivot = step_of(step, ctx, "PIVOT");
            quote_spanned!(span=> #p::push(__saga_builder, __saga_step, __saga_dsl.pivot || #pivot))
        }
        Target::Group => quote_spanned!(span=> __saga_group.step(__saga_step)),
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
