//! Checks, one rule per `check_*` function; each returns its errors so that
//! independent mistakes are reported together.
//!
//! What a macro can see is checked here, at the user's tokens. What only
//! the type system can see (another item's attribute, a compensation's
//! types) is left to the bounds and rule checks (`saga_core::checks`) of
//! `expand/`.

use std::collections::HashMap;

use proc_macro2::Span;
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, Ident, ItemFn, Path, PathArguments, ReturnType, Type};

use crate::ast::{Attempts, Dur, GroupDef, OptionValue, SagaDef, StepDef};
use crate::attr::TaskArgs;

/// Collects errors; `finish` combines them into one.
#[derive(Default)]
pub struct Errors(Option<syn::Error>);

impl Errors {
    pub fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub fn error(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }

    pub fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// A `#[saga_task]` function as the expansion needs it.
pub struct TaskFn {
    /// The context type `C` of `&mut C` or `&C`.
    pub context: Type,
    /// Whether it takes `&C`: a shared step or compensation, which a
    /// `parallel` group can run.
    pub shared: bool,
    /// `T` of an `Option<&T>` parameter: the function is a compensation.
    pub output_param: Option<Type>,
    /// The parameters after the context, in the function's order.
    pub params: Vec<Param>,
    /// `T` of `Result<T, E>`.
    pub ok: Type,
    /// Where the error type is written (`E` of `Result<T, E>`, else the
    /// return type).
    pub error_span: proc_macro2::Span,
    pub is_async: bool,
}

/// A parameter after the context.
pub enum Param {
    /// `Option<&T>`, a compensation's step output.
    Output,
    /// `&StepInfo<'_>` or `StepInfo<'_>` (`by_ref` tells which), with
    /// the dependencies `D` of `StepInfo<'_, D>` if written: the step then
    /// reaches them (or the part of the saga's that `D` is) through
    /// `info.dependencies()`.
    Info {
        by_ref: bool,
        dependencies: Option<Box<Type>>,
    },
    /// `&T`, a dependency: the saga's dependencies provide the `T`.
    Dependency(Box<Type>),
}

impl TaskFn {
    /// The types of the dependency parameters, in order.
    pub fn dependencies(&self) -> impl Iterator<Item = &Type> {
        self.params.iter().filter_map(|p| match p {
            Param::Dependency(ty) => Some(&**ty),
            _ => None,
        })
    }

    /// The `D` of a `StepInfo<'_, D>` parameter.
    pub fn info_dependencies(&self) -> Option<&Type> {
        self.params.iter().find_map(|p| match p {
            Param::Info {
                dependencies: Some(ty),
                ..
            } => Some(&**ty),
            _ => None,
        })
    }

    /// Whether it can be a step: no output parameter.
    pub fn is_step(&self) -> bool {
        self.output_param.is_none()
    }

    /// Whether it can be a compensation: an output parameter, or none and
    /// returning `Result<(), E>` (a compensation of a step without output).
    pub fn is_compensation(&self) -> bool {
        self.output_param.is_some() || is_unit(&self.ok)
    }
}

const SHAPES: &str = "a step is `fn(ctx: &mut C) -> Result<T, E>`, a compensation `fn(ctx: &mut C, output: Option<&T>) -> Result<(), E>`; after the context either may take `info: &StepInfo<'_>` (or `&StepInfo<'_, D>`, `D` the saga's dependencies) and dependencies as `&T`, be `async` and take `&C` instead of `&mut C`";

/// The function's shape: context first, then in any order an optional
/// `Option<&T>`, an optional `&StepInfo<'_>` (or `StepInfo<'_, D>`, by
/// reference or by value) and `&T` dependencies;
/// returns `Result<T, E>`; not generic, no `self`.
pub fn check_task_fn(item: &ItemFn) -> syn::Result<TaskFn> {
    let mut errors = Errors::default();
    let sig = &item.sig;
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            "a `#[saga_task]` function cannot be generic: a saga names it as one step with one context type",
        ));
    }
    let mut inputs = sig.inputs.iter().peekable();
    let mut context = None;
    let mut shared = false;
    // The parameters after `self` are read as they would be in the free
    // function: a context there is no second mistake.
    let receiver = match inputs.peek() {
        Some(FnArg::Receiver(receiver)) => {
            errors.push(syn::Error::new_spanned(
                receiver,
                "`#[saga_task]` cannot take `self`: write a free function taking the saga's context first, as `ctx: &mut C` or `ctx: &C`",
            ));
            inputs.next();
            true
        }
        _ => false,
    };
    match inputs.next() {
        Some(FnArg::Receiver(receiver)) => errors.push(syn::Error::new_spanned(
            receiver,
            "`#[saga_task]` cannot take `self`: write a free function taking the saga's context first, as `ctx: &mut C` or `ctx: &C`",
        )),
        Some(FnArg::Typed(arg)) => match &*arg.ty {
            Type::Reference(r) if !is_step_info(&r.elem) => {
                shared = r.mutability.is_none();
                context = Some((*r.elem).clone());
            }
            other => errors.push(syn::Error::new_spanned(
                other,
                "the first parameter of a `#[saga_task]` function is the saga's context, as `ctx: &mut C` or `ctx: &C`",
            )),
        },
        None if receiver => {}
        None => errors.error(
            sig.paren_token.span.join(),
            "a `#[saga_task]` function takes the saga's context first, as `ctx: &mut C` or `ctx: &C`",
        ),
    }
    let mut output_param = None;
    let mut info = false;
    let mut params = Vec::new();
    for arg in inputs {
        let ty = match arg {
            FnArg::Typed(arg) => &*arg.ty,
            FnArg::Receiver(r) => {
                errors.push(syn::Error::new_spanned(
                    r,
                    "`#[saga_task]` cannot take `self`",
                ));
                continue;
            }
        };
        if let Type::Reference(r) = ty {
            if r.mutability.is_some() && !is_step_info(&r.elem) {
                errors.push(syn::Error::new_spanned(ty, mut_after_first(r, shared)));
                continue;
            }
        }
        let shared_ref = match ty {
            Type::Reference(r) if r.mutability.is_none() => Some(r),
            _ => None,
        };
        let step_info = match shared_ref {
            Some(r) => step_info(&r.elem).map(|deps| (true, deps)),
            None => step_info(ty).map(|deps| (false, deps)),
        };
        match (shared_ref, option_ref(ty)) {
            _ if step_info.is_some() => {
                if info {
                    errors.push(syn::Error::new_spanned(
                        ty,
                        "a second `&StepInfo<'_>`: take it once",
                    ));
                }
                info = true;
                if let Some((by_ref, dependencies)) = step_info {
                    params.push(Param::Info {
                        by_ref,
                        dependencies: dependencies.cloned().map(Box::new),
                    });
                }
            }
            (Some(r), _) => match impl_trait(&r.elem) {
                Some(found) => errors.push(syn::Error::new_spanned(
                    found,
                    format!(
                        "a dependency cannot be `{}`: a saga lends its steps one value of each tool type, so the function cannot be generic over it; take a concrete type (`&HttpClient`), or a tool type without generics that holds the trait object (a struct with a `Box<dyn Trait + Send + Sync>` field)",
                        found.to_token_stream().to_string().replace(" ,", ",")
                    ),
                )),
                None => params.push(Param::Dependency(r.elem.clone())),
            },
            (None, Some(inner)) => {
                if output_param.is_some() {
                    errors.push(syn::Error::new_spanned(
                        ty,
                        "a second `Option<&T>`: a compensation receives one step output",
                    ));
                }
                output_param = Some(inner.clone());
                params.push(Param::Output);
            }
            (None, None) => errors.push(syn::Error::new_spanned(
                ty,
                format!("unexpected parameter: {SHAPES}"),
            )),
        }
    }
    let ok = match &sig.output {
        ReturnType::Type(_, ty) => result_ok(ty).cloned(),
        ReturnType::Default => None,
    };
    if ok.is_none() {
        match &sig.output {
            ReturnType::Type(_, ty) if sig.asyncness.is_none() && names_future(ty) => {
                errors.push(syn::Error::new_spanned(ty, FUTURE_NOT_ASYNC));
            }
            ReturnType::Type(_, ty) => errors.push(syn::Error::new_spanned(ty, NOT_RESULT)),
            ReturnType::Default => errors.error(sig.paren_token.span.join(), NOT_RESULT),
        }
    }
    errors.finish()?;
    match (context, ok) {
        (Some(context), Some(ok)) => Ok(TaskFn {
            context,
            shared,
            output_param,
            params,
            ok,
            error_span: error_span(&sig.output),
            is_async: sig.asyncness.is_some(),
        }),
        // Each `None` pushed an error above.
        _ => Err(syn::Error::new(sig.ident.span(), SHAPES)),
    }
}

fn error_span(output: &ReturnType) -> Span {
    let ReturnType::Type(_, ty) = output else {
        return output.span();
    };
    let Type::Path(p) = &**ty else {
        return ty.span();
    };
    let error = p
        .path
        .segments
        .last()
        .and_then(|last| match &last.arguments {
            PathArguments::AngleBracketed(args) => args
                .args
                .iter()
                .filter(|a| matches!(a, GenericArgument::Type(_)))
                .nth(1),
            _ => None,
        });
    error.map_or_else(|| ty.span(), Spanned::span)
}

/// `StepInfo` or `StepInfo<'_>` (any path ending so).
fn is_step_info(ty: &Type) -> bool {
    step_info(ty).is_some()
}

/// `Some(D)` for `StepInfo<'_, D>`, `Some(None)` for `StepInfo<'_>` or
/// `StepInfo` (any path ending so), `None` for any other type.
fn step_info(ty: &Type) -> Option<Option<&Type>> {
    let Type::Path(p) = ty else { return None };
    if p.qself.is_some() || p.path.segments.last().is_none_or(|s| s.ident != "StepInfo") {
        return None;
    }
    Some(first_generic(ty))
}

/// A `&mut T` after the first parameter: the context written after a
/// dependency (when the first parameter is a shared `&U`, which may be
/// either), or a dependency taken `&mut`.
fn mut_after_first(r: &syn::TypeReference, first_shared: bool) -> String {
    let elem = &r.elem;
    let elem = quote::quote!(#elem).to_string().replace(' ', "");
    if first_shared {
        format!(
            "`&mut {elem}` after the first parameter: if `{elem}` is the saga's context, put it first (the context comes first, then dependencies as `&T`); if it is a dependency, take `&{elem}`, since dependencies are shared"
        )
    } else {
        format!(
            "dependencies are shared by every step that runs at once: take `&{elem}`, and change it through interior mutability (a `Mutex`, an atomic, or a client whose methods take `&self`); only the context, first, is `&mut`"
        )
    }
}

/// Whether a return type names a future (`impl Future<..>`,
/// `Pin<Box<dyn Future<..>>>`, `BoxFuture<..>`).
fn names_future(ty: &Type) -> bool {
    fn has_future(tokens: proc_macro2::TokenStream) -> bool {
        tokens.into_iter().any(|tree| match tree {
            proc_macro2::TokenTree::Ident(ident) => ident.to_string().ends_with("Future"),
            proc_macro2::TokenTree::Group(group) => has_future(group.stream()),
            _ => false,
        })
    }
    has_future(quote::quote!(#ty))
}

const FUTURE_NOT_ASYNC: &str = "a `#[saga_task]` function returning a future is written `async fn` returning `Result<T, E>`: `async fn charge(ctx: &mut C) -> Result<T, E>`, and the attribute boxes its future";

const NOT_RESULT: &str = "a `#[saga_task]` function returns `Result<T, E>` (or an alias named `Result`), with `E` any error that converts into `StepError`";

/// `T` of `Option<&T>`.
fn option_ref(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    if p.path.segments.last().is_none_or(|s| s.ident != "Option") {
        return None;
    }
    match first_generic(ty)? {
        Type::Reference(r) if r.mutability.is_none() => Some(&r.elem),
        _ => None,
    }
}

/// `T` of `Result<T, E>`, `io::Result<T>` or any alias named `Result`:
/// what a macro can tell apart (the type system checks the rest).
fn result_ok(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    if p.path.segments.last().is_none_or(|s| s.ident != "Result") {
        return None;
    }
    first_generic(ty)
}

fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(t) if t.elems.is_empty())
}

/// An `impl Trait` in `ty` (`impl Http`, `Box<impl Http>`), which makes
/// the function generic.
pub fn impl_trait(ty: &Type) -> Option<&Type> {
    match ty {
        Type::ImplTrait(_) => Some(ty),
        Type::Reference(r) => impl_trait(&r.elem),
        Type::Paren(p) => impl_trait(&p.elem),
        Type::Group(g) => impl_trait(&g.elem),
        Type::Slice(s) => impl_trait(&s.elem),
        Type::Array(a) => impl_trait(&a.elem),
        Type::Ptr(p) => impl_trait(&p.elem),
        Type::Tuple(t) => t.elems.iter().find_map(impl_trait),
        Type::Path(p) => p
            .path
            .segments
            .iter()
            .find_map(|segment| match &segment.arguments {
                PathArguments::AngleBracketed(args) => args.args.iter().find_map(|arg| match arg {
                    GenericArgument::Type(ty) => impl_trait(ty),
                    _ => None,
                }),
                _ => None,
            }),
        _ => None,
    }
}

/// The first generic type argument of a path type's last segment.
fn first_generic(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    args.args.iter().find_map(|a| match a {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    })
}

/// The attribute's arguments against the function they annotate.
pub fn check_task_args(args: &TaskArgs, task: &TaskFn, ident: &Ident) -> syn::Result<()> {
    let mut errors = Errors::default();
    if !task.is_step() {
        if let Some(first) = args.first {
            errors.error(
                first,
                "a compensation's `#[saga_task]` takes no arguments: give its timeout and retries to the step it undoes, as `undo_timeout` and `undo_retry` (the step's own `timeout` and `retry` do not apply to its compensation)",
            );
        }
        return errors.finish();
    }
    if let (Some(_), Some((keyword, _))) = (&args.pivot, &args.compensate) {
        errors.error(
            keyword.span(),
            "the pivot has no compensation: it is the point of no return; drop `pivot` or the compensation",
        );
    }
    match &args.timeout {
        Some((keyword, _)) if !task.is_async => errors.error(
            keyword.span(),
            "`timeout` needs an `async fn`: a sync step cannot be interrupted",
        ),
        _ => {}
    }
    if let Some((_, name)) = &args.name {
        check_name(name, &mut errors);
    }
    match &args.compensate {
        Some((_, undo)) if syn::ext::IdentExt::unraw(ident) == path_text(undo) => {
            undo_is_step(undo, &mut errors);
        }
        _ => {}
    }
    if let Some((keyword, timeout)) = &args.timeout {
        check_timeout(keyword, timeout, &mut errors);
    }
    if let Some((keyword, timeout)) = &args.undo_timeout {
        check_timeout(keyword, timeout, &mut errors);
    }
    let retries = [
        args.retry.as_ref(),
        args.undo_retry.as_ref().map(|(_, r)| r),
    ];
    for retry in retries.into_iter().flatten() {
        if let Some(Attempts::Count(n)) = &retry.attempts {
            check_attempts(n, &mut errors);
        }
    }
    errors.finish()
}

fn check_name(name: &syn::LitStr, errors: &mut Errors) {
    let value = name.value();
    if value.is_empty() {
        errors.error(name.span(), "a step name cannot be empty");
    } else if value.contains('/') {
        errors.error(
            name.span(),
            "a step name cannot contain `/`: a step's idempotency key is `{execution_id}/{step}`, and the step must be what follows the last `/`; rename the step, and if an older build ran this saga, finish its in-flight executions with that build first (a renamed step gets new keys)",
        );
    }
}

/// `step charge => undo charge`: rollback would run the step again.
fn undo_is_step(undo: &Path, errors: &mut Errors) {
    let name = path_text(undo);
    errors.error(
        undo.span(),
        format!(
            "`{name}` cannot undo itself: on rollback it would run `{name}` again; name the function that reverses it, as `step charge => undo refund`"
        ),
    );
}

/// A `timeout` or `undo_timeout` (`keyword`) of zero.
fn check_timeout(keyword: &Ident, timeout: &Dur, errors: &mut Errors) {
    if timeout.value.is_zero() {
        let attempts = if keyword == "undo_timeout" {
            "every attempt of the compensation"
        } else {
            "every attempt"
        };
        errors.error(
            timeout.span,
            format!(
                "a timeout of zero would fail {attempts} before it starts; give a positive duration, or no `{keyword}`"
            ),
        );
    }
}

/// A path as written, without spaces: `shop::create_order`.
fn path_text(path: &Path) -> String {
    quote::quote!(#path).to_string().replace(' ', "")
}

fn check_attempts(n: &syn::LitInt, errors: &mut Errors) {
    match n.base10_parse::<u32>() {
        Ok(0) => errors.error(
            n.span(),
            "zero attempts would never run it; use at least 1 (`retry 1` is no retry)",
        ),
        Ok(_) => {}
        Err(e) => errors.push(e),
    }
}

/// All checks of a `saga!` that its tokens allow.
pub fn check_saga(saga: &SagaDef) -> syn::Result<()> {
    let mut errors = Errors::default();
    check_has_steps(saga, &mut errors);
    check_has_name(saga, &mut errors);
    let steps = saga.steps();
    check_unique_names(&steps, &mut errors);
    check_one_pivot(&steps, &mut errors);
    check_no_compensation_from_pivot(&steps, &mut errors);
    for group in saga.groups() {
        check_group_not_empty(group, &mut errors);
        check_no_pivot_in_group(group, &mut errors);
    }
    for step in &steps {
        check_options(step, &mut errors);
        check_free_function(&step.task, &mut errors);
        if let Some((_, undo)) = &step.undo {
            check_free_function(undo, &mut errors);
        }
        match &step.undo {
            Some((_, undo)) if path_text(undo) == path_text(&step.task) => {
                undo_is_step(undo, &mut errors);
            }
            _ => {}
        }
    }
    errors.finish()
}

/// `step Payments::charge`: a path through a type (a segment before the
/// last in UpperCamelCase, as types are named) names an associated
/// function, which `#[saga_task]` cannot make a step: its twin type
/// cannot go in an `impl` block.
fn check_free_function(path: &Path, errors: &mut Errors) {
    let segments: Vec<_> = path.segments.iter().collect();
    let Some((last, prefix)) = segments.split_last() else {
        return;
    };
    let through_type = prefix.iter().find(|segment| {
        let name = syn::ext::IdentExt::unraw(&segment.ident).to_string();
        name.starts_with(|c: char| c.is_uppercase()) && name != "Self"
    });
    if let Some(owner) = through_type {
        let name = path_text(path);
        let owner = &owner.ident;
        let function = &last.ident;
        errors.push(syn::Error::new_spanned(
            path,
            format!(
                "`{name}` is a function of `{owner}`: a saga step is a free function, so move `{function}` out of the `impl` block and name it by its module path (`#[saga_task]` cannot go in an `impl`)"
            ),
        ));
    }
}

fn check_has_steps(saga: &SagaDef, errors: &mut Errors) {
    if saga.entries.is_empty() {
        errors.error(
            saga.span,
            "a saga needs at least one step: `step function_name;`",
        );
    }
}

fn check_has_name(saga: &SagaDef, errors: &mut Errors) {
    match &saga.name {
        None => errors.error(
            saga.span,
            "a saga needs a name: start with `name: \"...\",`",
        ),
        Some(name) if name.value().is_empty() => {
            errors.error(name.span(), "a saga name cannot be empty")
        }
        Some(_) => {}
    }
}

/// The name a step has by its tokens: `name "..."`, else its path (the
/// attribute's `name` is checked by the `UniqueName` rule).
fn written_name(step: &StepDef) -> String {
    step.options
        .iter()
        .find_map(|o| match &o.value {
            OptionValue::Name(lit) => Some(lit.value()),
            _ => None,
        })
        .unwrap_or_else(|| path_text(&step.task))
}

fn check_unique_names(steps: &[&StepDef], errors: &mut Errors) {
    let mut seen = HashMap::new();
    for step in steps {
        let name = written_name(step);
        if seen.insert(name.clone(), ()).is_some() {
            errors.error(
                step.task.span(),
                format!(
                    "duplicate step `{name}`: step names identify steps in reports and idempotency keys; to run a function twice, give the second `name \"...\"`"
                ),
            );
        }
    }
}

fn check_one_pivot(steps: &[&StepDef], errors: &mut Errors) {
    let mut first = None;
    for step in steps.iter().filter(|s| s.pivot) {
        match &first {
            None => first = Some(written_name(step)),
            Some(first) => errors.error(
                step.keyword.span(),
                format!("a saga has one pivot, and `{first}` already is; make this one a `step`"),
            ),
        }
    }
}

fn check_no_compensation_from_pivot(steps: &[&StepDef], errors: &mut Errors) {
    let mut pivot: Option<String> = None;
    for step in steps {
        if step.pivot && pivot.is_none() {
            pivot = Some(written_name(step));
            if let Some((keyword, _)) = &step.undo {
                errors.error(
                    keyword.span(),
                    "the pivot has no compensation: it is the point of no return; make it a `step`, or drop the compensation",
                );
            }
        } else if let (Some(pivot), Some((keyword, _))) = (&pivot, &step.undo) {
            errors.error(
                keyword.span(),
                format!(
                    "a step after the pivot `{pivot}` has no compensation: once the pivot succeeds the saga only goes forward (retry this step instead)"
                ),
            );
        }
    }
}

fn check_group_not_empty(group: &GroupDef, errors: &mut Errors) {
    if group.branches.is_empty() {
        errors.error(
            group.keyword.span(),
            "a `parallel` group needs at least one step: `parallel { step a; step b; }`",
        );
    }
}

fn check_no_pivot_in_group(group: &GroupDef, errors: &mut Errors) {
    for branch in group.branches.iter().filter(|b| b.pivot) {
        errors.error(
            branch.keyword.span(),
            "the pivot cannot be a `parallel` branch: its siblings could fail after it succeeded, and nothing may roll back past the pivot; make it a `step` before or after the group",
        );
    }
}

fn check_options(step: &StepDef, errors: &mut Errors) {
    let mut seen: HashMap<String, ()> = HashMap::new();
    for option in &step.options {
        let key = option.keyword.to_string();
        if seen.insert(key.clone(), ()).is_some() {
            errors.error(
                option.keyword.span(),
                format!("duplicate option `{key}`; give it once"),
            );
        }
        match &option.value {
            OptionValue::Retry(Attempts::Count(n)) | OptionValue::UndoRetry(Attempts::Count(n)) => {
                check_attempts(n, errors)
            }
            OptionValue::Name(name) => check_name(name, errors),
            OptionValue::Timeout(timeout) | OptionValue::UndoTimeout(timeout) => {
                check_timeout(&option.keyword, timeout, errors)
            }
            _ => {}
        }
    }
}
