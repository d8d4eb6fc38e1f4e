//! Code generation only: everything here was validated before, so nothing
//! here rejects. The runtime is reached as `<crate>::__private::..` (see
//! [`krate`]), std by absolute paths, and the names we introduce start
//! with `__saga_`.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, ItemFn, LitStr, Path, Type};

use crate::ast::{Attempts, Dur, Entry, GroupDef, OptionValue, SagaDef, StepDef, StepOption};
use crate::attr::{RetryArgs, TaskArgs};
use crate::validate::{Param, TaskFn};

mod checks;
mod saga;
mod task;

use checks::*;
use saga::*;
pub use saga::{saga, saga_stub};
use task::*;
pub use task::{task, task_stub};

thread_local! {
    /// The path of saga-core in the expansion being written, when it is
    /// not `::saga_core`: `$crate` from `saga!`'s `macro_rules!` wrapper,
    /// or `#[saga_task(crate = ..)]`'s path. A thread-local rather than a
    /// parameter of every function below, each of which reaches the
    /// runtime; set by [`with_crate`] around one macro call.
    static CRATE: std::cell::RefCell<Option<TokenStream>> = const { std::cell::RefCell::new(None) };
    /// Whether [`CRATE`] is a path the user wrote (`crate = ..`).
    static USER_CRATE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` (one macro's expansion) with saga-core at `path`
/// (`::saga_core` when `None`), which the user wrote if `user`.
/// Restored by a guard, so that an expansion that panics does not leave
/// its path to the next macro call on the thread.
pub fn with_crate<R>(path: Option<TokenStream>, user: bool, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Option<TokenStream>>, bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            let (previous, user) = (self.0.take(), self.1);
            CRATE.with(|c| c.replace(previous.flatten()));
            USER_CRATE.with(|c| c.replace(user));
        }
    }
    let _restore = Restore(
        Some(CRATE.with(|c| c.replace(path))),
        USER_CRATE.with(|c| c.replace(user)),
    );
    f()
}

/// saga-core's path: `::saga_core` unless [`with_crate`] says otherwise.
pub(super) fn krate() -> TokenStream {
    CRATE
        .with(|c| c.borrow().clone())
        .unwrap_or_else(|| quote!(::saga_core))
}

/// [`krate`] at `span`, where an error that names it points (`$crate`
/// keeps resolving to saga-core: only its location moves). A path the
/// user wrote (`crate = ..`) stays where it is written, so that a wrong
/// one is reported there once.
pub(super) fn krate_at(span: Span) -> TokenStream {
    match USER_CRATE.with(std::cell::Cell::get) {
        true => krate(),
        false => located_at(krate(), span),
    }
}

/// `tokens`, each at `span` but resolving as before. Through `saga!`'s
/// `macro_rules!` wrapper, `$crate` and the call site are in saga-core's
/// expansion: an error spanned across them and the user's tokens would
/// cover the whole `saga! { .. }` rather than the token to change.
pub(super) fn located_at(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|token| match token {
            proc_macro2::TokenTree::Group(group) => {
                let mut relocated =
                    proc_macro2::Group::new(group.delimiter(), located_at(group.stream(), span));
                relocated.set_span(group.span().located_at(span));
                proc_macro2::TokenTree::Group(relocated)
            }
            mut token => {
                token.set_span(token.span().located_at(span));
                token
            }
        })
        .collect()
}

pub(super) fn private() -> TokenStream {
    let krate = krate();
    quote!(#krate::__private)
}

pub(super) fn duration(d: &Dur) -> TokenStream {
    let (secs, nanos) = (d.value.as_secs(), d.value.subsec_nanos());
    quote_spanned!(d.span=> ::core::time::Duration::new(#secs, #nanos))
}

pub(super) fn some_or_none<T>(value: Option<T>, f: impl FnOnce(T) -> TokenStream) -> TokenStream {
    match value {
        Some(v) => {
            let v = f(v);
            quote!(::core::option::Option::Some(#v))
        }
        None => quote!(::core::option::Option::None),
    }
}

pub(super) fn attempts(a: &Attempts) -> TokenStream {
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

pub(super) fn retry_spec(
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

pub(super) fn retry_args(args: Option<&RetryArgs>) -> TokenStream {
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

pub(super) fn metadata<'a>(pairs: impl IntoIterator<Item = &'a (Ident, LitStr)>) -> TokenStream {
    let pairs = pairs.into_iter().map(|(key, value)| {
        let key = key.to_string();
        quote!((#key, #value))
    });
    quote!(&[#(#pairs),*])
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
            super::saga_stub(None, None).to_string(),
            ":: saga_core :: __private :: stub :: < _ , _ > ()"
        );
    }
}

/// `docs/MACROS.md` shows an expansion; this keeps it true.
#[cfg(test)]
mod docs_expansion {
    use quote::ToTokens;

    fn expansion() -> String {
        let create: syn::ItemFn = syn::parse_quote! {
            fn create_order(order: &mut Order, orders: &OrdersClient) -> Result<u64, StepError> {
                let id = orders.create(order)?;
                order.id = Some(id);
                Ok(id)
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
            dependencies: Services,
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
        let doc = include_str!("../../../docs/MACROS.md");
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
