//! The rule checks `saga!` emits: what only the types know (another item's
//! name, pivot, compensation, retries, asyncness), each as a bound of
//! `saga_core::checks` spanned at the token the user should change.

use super::*;

/// Checks of what only the types know: another item's `name`, `pivot`,
/// compensation, retries and asyncness, as rules of `saga_core::checks`
/// (see `rule`). Each is spanned at the token the user should change; one
/// function per rule below.
pub(super) fn checks(steps: &[&StepDef], ctx: &SagaTypes) -> TokenStream {
    let mut out = TokenStream::new();
    for (i, step) in steps.iter().enumerate() {
        let earlier = &steps[..i];
        out.extend(compensation_given_twice(step, ctx));
        out.extend(timeout_needs_async(step, ctx));
        out.extend(undo_retry_needs_compensation(step, ctx));
        out.extend(undo_timeout_needs_compensation(step, ctx));
        out.extend(undo_timeout_needs_async_undo(step, ctx));
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
pub(super) fn rule(
    span: Span,
    step: &StepDef,
    rule: &str,
    params: &[&dyn ToTokens],
    holds: TokenStream,
) -> TokenStream {
    let alias = Ident::new(&step.alias.to_string(), span);
    let rule = Ident::new(rule, span);
    let k = krate_at(span);
    quote_spanned! {span=>
        const _: () = <#alias as #k::checks::#rule<#(#params,)* { #holds }>>::OK;
    }
}

/// A group's branches: each takes the context shared, and so does its
/// compensation, and none is a pivot by its attribute (the `pivot`
/// keyword is rejected by `validate.rs`).
pub(super) fn group_checks(group: &GroupDef, ctx: &SagaTypes) -> TokenStream {
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
pub(super) fn has_compensation(step: &StepDef, ctx: &SagaTypes) -> TokenStream {
    let dsl = step.undo.is_some();
    let attr = step_of(step, ctx, "HAS_COMPENSATION");
    quote!((#dsl || #attr))
}

pub(super) fn compensation_given_twice(step: &StepDef, ctx: &SagaTypes) -> TokenStream {
    let Some((keyword, undo)) = &step.undo else {
        return TokenStream::new();
    };
    let span = keyword.span().join(undo.span()).unwrap_or(keyword.span());
    let attr = step_of(step, ctx, "HAS_COMPENSATION");
    rule(span, step, "OneCompensation", &[], quote!(!#attr))
}

pub(super) fn timeout_needs_async(step: &StepDef, ctx: &SagaTypes) -> TokenStream {
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

pub(super) fn undo_retry_needs_compensation(step: &StepDef, ctx: &SagaTypes) -> TokenStream {
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

/// The `undo_timeout` given in `saga!`, if any.
fn undo_timeout_option(step: &StepDef) -> Option<&StepOption> {
    step.options
        .iter()
        .find(|o| matches!(o.value, OptionValue::UndoTimeout(_)))
}

/// Whether the step has an undo timeout, from `saga!` or its attribute, as
/// a `const` expression.
fn has_undo_timeout(step: &StepDef, ctx: &SagaTypes) -> TokenStream {
    let dsl = undo_timeout_option(step).is_some();
    let attr = step_of(step, ctx, "UNDO_TIMEOUT");
    quote!((#dsl || #attr.is_some()))
}

pub(super) fn undo_timeout_needs_compensation(step: &StepDef, ctx: &SagaTypes) -> TokenStream {
    let option = undo_timeout_option(step);
    let span = option.map_or(step.task.span(), |o| o.keyword.span());
    let timed = has_undo_timeout(step, ctx);
    let has_compensation = has_compensation(step, ctx);
    let holds = quote!(!(#timed && !#has_compensation));
    rule(span, step, "UndoTimeoutNeedsCompensation", &[], holds)
}

/// The compensation given in `saga!` is checked by its own `UndoContext`
/// (spanned at it); one from the attribute through the step's `UNDO`.
/// Without a compensation the rule holds: the rule above reports it.
pub(super) fn undo_timeout_needs_async_undo(step: &StepDef, ctx: &SagaTypes) -> TokenStream {
    let option = undo_timeout_option(step);
    let timed = has_undo_timeout(step, ctx);
    let (span, is_async) = match &step.undo {
        Some((_, undo)) => {
            let p = private();
            let alias = &step.undo_alias;
            let is_async = quote_spanned!(undo.span()=> <#alias as #p::UndoContext<#ctx>>::ASYNC);
            (option.map_or(undo.span(), |o| o.keyword.span()), is_async)
        }
        None => {
            let p = private();
            let undo = step_of(step, ctx, "UNDO");
            let span = option.map_or(step.task.span(), |o| o.keyword.span());
            (span, quote!(#p::undo_async(&#undo)))
        }
    };
    let holds = quote!(!(#timed && !#is_async));
    rule(span, step, "UndoTimeoutNeedsAsyncUndo", &[], holds)
}

pub(super) fn one_pivot(step: &StepDef, earlier: &[&StepDef], ctx: &SagaTypes) -> TokenStream {
    if earlier.is_empty() {
        return TokenStream::new();
    }
    let this = pivot_expr(step, ctx);
    let earlier = earlier.iter().map(|s| pivot_expr(s, ctx));
    let holds = quote!(!(#this && (false #(|| #earlier)*)));
    rule(step.task.span(), step, "OnePivot", &[], holds)
}

pub(super) fn no_compensation_from_pivot(
    step: &StepDef,
    earlier: &[&StepDef],
    ctx: &SagaTypes,
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

pub(super) fn unique_names(step: &StepDef, earlier: &[&StepDef], ctx: &SagaTypes) -> TokenStream {
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
