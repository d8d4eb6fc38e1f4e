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
    let k = krate();
    SagaTypes {
        ctx: match &saga.context {
            Some(ty) => alias_of(ty, "__SagaContext"),
            None => quote!(#k::Context),
        },
        // Not aliased: a type parameter there (which `saga!` does not
        // take, see its docs) would get rustc's help to give the alias a
        // generic parameter.
        deps: match &saga.dependencies {
            Some(ty) => ty.to_token_stream(),
            None => quote!(()),
        },
    }
}

/// The name by which the expansion names the user's `context:` type, at
/// the user's type: an alias that [`type_aliases`]
/// declares once, so that a type that names nothing is one error (rustc
/// reports it once per item that names it, and the checks are items).
fn alias_of(ty: &Type, name: &str) -> TokenStream {
    Ident::new(name, ty.span()).to_token_stream()
}

/// `type __SagaContext = Order;`, see `alias_of`.
pub(super) fn type_aliases(saga: &SagaDef) -> TokenStream {
    let context = saga.context.as_ref().map(|ty| {
        let alias = alias_of(ty, "__SagaContext");
        quote!(type #alias = #ty;)
    });
    quote!(#context)
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
/// Output: a block with the fallbacks of `aliases`, and in it a block with
/// the imports and the rule checks across items (below), then
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
    let Aliases { fallbacks, imports } = aliases(&steps);
    let deps = &ctx.deps;
    let version = saga.version.as_ref().map(|v| {
        quote! { let __saga_builder = __saga_builder.version(#v); }
    });
    // Given to the builder as written: a closure's parameter takes its
    // type from `classify_errors`'s bound, and a mistake is rustc's, at
    // the user's expression.
    let classify = saga.classify.as_ref().map(|f| {
        quote! { let __saga_builder = __saga_builder.classify_errors(#f); }
    });
    let types = type_aliases(saga);
    quote! {{
        #types
        #fallbacks
        {
            #imports
            #checks
            let __saga_builder = #p::Saga::<#ctx, #deps>::builder(#name);
            #version
            #classify
            #(let __saga_builder = #pushes;)*
            #p::finish(__saga_builder)
        }
    }}
}

/// The two halves of `aliases`: the fallback types, which go in the
/// saga's outer block, and the imports and checks, in its inner block.
pub(super) struct Aliases {
    pub fallbacks: TokenStream,
    pub imports: TokenStream,
}

/// Input: `step create_order => undo cancel_order;` (the first step).
/// Output:
/// ```text
/// // outer block: fallbacks
/// struct __saga_step_0 {} /* __SAGA_PLAIN, stubs */  mod __saga_step_0_generic {}
/// {   // inner block
///     use __saga_generic_create_order as __saga_step_0_generic; // (after an empty
///                                                   // `macro_rules!` of that name)
///     static __SAGA_STEP_0: () = <checks::Plain<{
///         { use __saga_step_0_generic::*; let _ = create_order; }
///         __saga_step_0::__SAGA_PLAIN
///     }> as checks::Annotated>::OK;
///     macro_rules! create_order { () => {}; }
///     use create_order as __saga_step_0;
///     .. (the same for `cancel_order`)
/// }
/// ```
/// The rest of the expansion names the aliases. A `#[saga_task]` function
/// has a twin type, which the import brings into the inner block and
/// which shadows the outer block's fallback; a plain function fills only
/// the value namespace, so the alias is the fallback type, whose
/// `__SAGA_PLAIN` fails the check in our words (see `NotPlain`), and whose
/// stub impls add no other error.
///
/// A path that names nothing is one error, rustc's, at the user's token:
/// a failed import binds its alias to an error in every namespace of the
/// inner block (never to the fallback, which lives outside it), so nothing
/// that names the alias reports again; rustc says "no `chrage` in
/// `payments`" and suggests a similar name. A path of one segment would
/// get "no external crate" instead, without a suggestion, so its import
/// never fails (the empty `macro_rules!` of its name fills the macro
/// namespace) and the check names it itself (`mention`), in a block that
/// rustc resolves with suggestions: "cannot find value `charge_paymnet`",
/// "a function with a similar name exists". That error taints the check's
/// constant, which then adds none.
pub(super) fn aliases(steps: &[&StepDef]) -> Aliases {
    let pairs = steps.iter().flat_map(|step| {
        let undo = step.undo.as_ref().map(|(_, undo)| (undo, &step.undo_alias));
        std::iter::once((&step.task, &step.alias)).chain(undo)
    });
    path_aliases(pairs)
}

/// `aliases` for `(path, alias)` pairs; `#[saga_task(undo = ..)]` names
/// its compensation through one too.
pub(super) fn path_aliases<'a>(pairs: impl IntoIterator<Item = (&'a Path, &'a Ident)>) -> Aliases {
    let p = private();
    let mut out = Aliases {
        fallbacks: TokenStream::new(),
        imports: quote! {
            #[allow(unused_imports)]
            use #p::NotPlain as _;
        },
    };
    for (path, alias) in pairs {
        let stubs = stub_impls(alias, &path_text(path));
        out.fallbacks.extend(quote! {
            #[allow(non_camel_case_types)]
            struct #alias {}
            impl #alias {
                const __SAGA_PLAIN: bool = true;
            }
            #stubs
        });
        let single = single_ident(path);
        let mention = single.map(|ident| mention(ident, alias, &mut out));
        // A `static` rather than a `const _`: rustc would suggest a const
        // parameter on the item for an unknown name in a `const`.
        let check = Ident::new(&alias.to_string().to_uppercase(), Span::call_site());
        // Every token at the user's path, where the error points.
        let k = krate();
        out.imports.extend(located_at(
            quote! {
                #[allow(dead_code)]
                static #check: () = <#k::checks::Plain<{ #mention #alias::__SAGA_PLAIN }>
                    as #k::checks::Annotated>::OK;
            },
            path.span(),
        ));
        // After the check, which must not see it.
        if let Some(ident) = single {
            out.imports.extend(quote! {
                #[allow(unused_macros)]
                macro_rules! #ident { () => {}; }
            });
        }
        // Spanned at the path's last segment, so that rustc's error for a
        // path that names nothing covers the whole path.
        let last = path
            .segments
            .last()
            .map_or(alias.span(), |s| s.ident.span());
        let alias = Ident::new(&alias.to_string(), last);
        out.imports.extend(quote! {
            #[allow(unused_imports)]
            use #path as #alias;
        });
    }
    out
}

/// The check's own mention of a path of one segment: as a type when it
/// starts in uppercase (`Charge`, a type implementing `Task` by hand,
/// which may have no value), as a value otherwise (a function's name).
///
/// rustc cannot name a generic function as a value without its type
/// arguments ("type annotations needed"), and `#[saga_task]` refuses one
/// with its own error: its attribute then also emits a module
/// `__saga_generic_<name>` holding a plain value of the name, which the
/// mention's glob import brings in to stand for the function. Without
/// such a module, the glob imports from the empty fallback.
fn mention(ident: &Ident, alias: &Ident, out: &mut Aliases) -> TokenStream {
    if starts_uppercase(ident) {
        return quote!(let _ = ::core::marker::PhantomData::<#ident>;);
    }
    let generic = generic_module(alias);
    let probe = format_ident!("__saga_generic_{}", syn::ext::IdentExt::unraw(ident));
    out.fallbacks.extend(quote! {
        #[allow(non_snake_case)]
        mod #generic {}
    });
    out.imports.extend(quote! {
        #[allow(unused_macros)]
        macro_rules! #probe { () => {}; }
        #[allow(unused_imports)]
        use #probe as #generic;
    });
    quote!({
        #[allow(unused_imports)]
        use #generic::*;
        let _ = #ident;
    })
}

/// `__saga_step_0_generic`: where the value of a generic function's name
/// comes from, for the check of the step named by `alias`.
fn generic_module(alias: &Ident) -> Ident {
    format_ident!("{}_generic", alias)
}

/// The identifier of a path of one segment (`charge`, not `crate`).
fn single_ident(path: &Path) -> Option<&Ident> {
    path.get_ident().filter(|ident| {
        !matches!(
            ident.to_string().as_str(),
            "self" | "super" | "crate" | "Self"
        )
    })
}

/// Whether a name is a type's (`Charge`) rather than a function's.
fn starts_uppercase(ident: &Ident) -> bool {
    let name = syn::ext::IdentExt::unraw(ident).to_string();
    name.starts_with(|c: char| c.is_uppercase())
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
    let mut undo_timeout = None;
    let mut meta: &[(Ident, LitStr)] = &[];
    for option in &step.options {
        match &option.value {
            OptionValue::Retry(a) => attempts = Some(a),
            OptionValue::UndoRetry(a) => undo_attempts = Some(a),
            OptionValue::Backoff(d) => backoff = Some(d),
            OptionValue::MaxBackoff(d) => max_backoff = Some(d),
            OptionValue::RetryIf(path) => retry_if = Some(path),
            OptionValue::Timeout(d) => timeout = Some(d),
            OptionValue::UndoTimeout(d) => undo_timeout = Some(d),
            OptionValue::Name(_) => {}
            OptionValue::Metadata(pairs) => meta = pairs,
        }
    }
    let name = some_or_none(dsl_name(step), |lit| quote!(#lit));
    let retry = retry_spec(attempts, backoff, max_backoff, retry_if);
    let undo_retry = retry_spec(undo_attempts, None, None, None);
    let timeout = some_or_none(timeout, duration);
    let undo_timeout = some_or_none(undo_timeout, duration);
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
            undo_timeout: #undo_timeout,
            metadata: #metadata,
            pivot: #pivot,
        };
        let __saga_step = #step_call;
        #undo
        #push_call
    }}
}
