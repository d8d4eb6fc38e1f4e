//! `#[saga_task(...)]` arguments, in the style of tracing-attributes:
//!
//! ```text
//! args    := (arg ("," arg)*)?
//! arg     := ("compensate" | "undo") "=" Path
//!          | "name" "=" LitStr
//!          | "retry" "(" retry ("," retry)* ")"
//!          | "undo_retry" "(" retry ("," retry)* ")"   // the compensation's retries
//!          | "timeout" "=" LitStr          // "2s", "250ms"
//!          | "pivot"
//!          | "metadata" "(" (Ident "=" LitStr),* ")"
//! retry   := "attempts" "=" LitInt | "forever"
//!          | "backoff" "=" LitStr | "max_backoff" "=" LitStr
//!          | "on" "=" Path                 // fn(&StepError) -> bool
//! ```

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Ident, LitInt, LitStr, Path, Token};

use crate::ast::{Attempts, Dur, MetaPair, duration_from_str};

/// The arguments `#[saga_task]` accepts.
pub const ARGS: &str = "`compensate` (or `undo`), `name`, `retry(..)`, `undo_retry(..)`, `timeout`, `pivot` or `metadata(..)`";
/// The arguments `retry(..)` accepts.
pub const RETRY_ARGS: &str = "`attempts`, `forever`, `backoff`, `max_backoff` or `on`";

/// The parsed arguments; each keeps its keyword for spans.
#[derive(Default)]
pub struct TaskArgs {
    pub compensate: Option<(Ident, Path)>,
    pub name: Option<(Ident, LitStr)>,
    pub retry: Option<RetryArgs>,
    pub undo_retry: Option<(Ident, RetryArgs)>,
    pub timeout: Option<(Ident, Dur)>,
    pub pivot: Option<Ident>,
    pub metadata: Option<(Ident, Vec<(Ident, LitStr)>)>,
    /// The first argument, where "takes no arguments" points.
    pub first: Option<Span>,
}

/// `retry(..)`.
pub struct RetryArgs {
    pub attempts: Option<Attempts>,
    pub backoff: Option<Dur>,
    pub max_backoff: Option<Dur>,
    pub on: Option<Path>,
}

fn duplicate(key: &Ident) -> syn::Error {
    syn::Error::new(
        key.span(),
        format!("duplicate argument `{key}`; give it once"),
    )
}

/// Sets `slot` once; a second occurrence is an error at the second.
fn set_once<T>(slot: &mut Option<T>, key: &Ident, value: T) -> syn::Result<()> {
    if slot.is_some() {
        return Err(duplicate(key));
    }
    *slot = Some(value);
    Ok(())
}

impl Parse for TaskArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = TaskArgs::default();
        let mut errors: Option<syn::Error> = None;
        loop {
            if input.is_empty() {
                break;
            }
            let key: Ident = syn::ext::IdentExt::parse_any(input)?;
            args.first.get_or_insert(key.span());
            let result = match key.to_string().as_str() {
                "compensate" | "undo" => {
                    input.parse::<Token![=]>()?;
                    let path: Path = input.parse()?;
                    set_once(&mut args.compensate, &key, (key.clone(), path))
                }
                "name" => {
                    input.parse::<Token![=]>()?;
                    let lit: LitStr = input.parse()?;
                    set_once(&mut args.name, &key, (key.clone(), lit))
                }
                "timeout" => {
                    input.parse::<Token![=]>()?;
                    let lit: LitStr = input.parse()?;
                    let dur = duration_from_str(&lit)?;
                    set_once(&mut args.timeout, &key, (key.clone(), dur))
                }
                "pivot" => set_once(&mut args.pivot, &key, key.clone()),
                "retry" => {
                    let content;
                    syn::parenthesized!(content in input);
                    let retry = parse_retry(&content)?;
                    set_once(&mut args.retry, &key, retry)
                }
                "undo_retry" => {
                    let content;
                    syn::parenthesized!(content in input);
                    let retry = parse_retry(&content)?;
                    set_once(&mut args.undo_retry, &key, (key.clone(), retry))
                }
                "metadata" => {
                    let content;
                    syn::parenthesized!(content in input);
                    let pairs = Punctuated::<MetaPair, Token![,]>::parse_terminated(&content)?;
                    let pairs = pairs.into_iter().map(|p| (p.key, p.value)).collect();
                    set_once(&mut args.metadata, &key, (key.clone(), pairs))
                }
                _ => {
                    skip_value(input)?;
                    Err(syn::Error::new(
                        key.span(),
                        format!("unknown argument `{key}`; expected {ARGS}"),
                    ))
                }
            };
            if let Err(e) = result {
                match &mut errors {
                    Some(all) => all.combine(e),
                    None => errors = Some(e),
                }
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        match errors {
            Some(e) => Err(e),
            None => Ok(args),
        }
    }
}

/// Skips what follows an unknown argument (`= value` or `(..)`), so the
/// error names the argument rather than the next token.
fn skip_value(input: ParseStream<'_>) -> syn::Result<()> {
    while !input.is_empty() && !input.peek(Token![,]) {
        input.parse::<proc_macro2::TokenTree>()?;
    }
    Ok(())
}

fn parse_retry(input: ParseStream<'_>) -> syn::Result<RetryArgs> {
    let mut retry = RetryArgs {
        attempts: None,
        backoff: None,
        max_backoff: None,
        on: None,
    };
    while !input.is_empty() {
        let key: Ident = syn::ext::IdentExt::parse_any(input)?;
        match key.to_string().as_str() {
            "attempts" => {
                input.parse::<Token![=]>()?;
                let n: LitInt = input.parse()?;
                set_once(&mut retry.attempts, &key, Attempts::Count(n))?;
            }
            "forever" => set_once(&mut retry.attempts, &key, Attempts::Forever(key.span()))?,
            "backoff" => {
                input.parse::<Token![=]>()?;
                let dur = duration_from_str(&input.parse()?)?;
                set_once(&mut retry.backoff, &key, dur)?;
            }
            "max_backoff" => {
                input.parse::<Token![=]>()?;
                let dur = duration_from_str(&input.parse()?)?;
                set_once(&mut retry.max_backoff, &key, dur)?;
            }
            "on" => {
                input.parse::<Token![=]>()?;
                set_once(&mut retry.on, &key, input.parse()?)?;
            }
            _ => {
                return Err(syn::Error::new(
                    key.span(),
                    format!("unknown `retry` argument `{key}`; expected {RETRY_ARGS}"),
                ));
            }
        }
        if input.is_empty() {
            break;
        }
        input.parse::<Token![,]>()?;
    }
    Ok(retry)
}
