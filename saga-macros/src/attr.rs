//! `#[saga_task(...)]` arguments, in the style of tracing-attributes:
//!
//! ```text
//! args    := (arg ("," arg)*)?
//! arg     := ("compensate" | "undo") "=" Path
//!          | "name" "=" LitStr
//!          | "retry" "(" retry ("," retry)* ")"
//!          | "undo_retry" "(" retry ("," retry)* ")"   // the compensation's retries
//!          | "timeout" "=" LitStr          // "2s", "250ms"
//!          | "undo_timeout" "=" LitStr     // each attempt of the compensation
//!          | "pivot"
//!          | "metadata" "(" (Ident "=" LitStr),* ")"
//!          | "crate" "=" Path              // saga-core's path, default `::saga_core`
//! retry   := "attempts" "=" LitInt | "forever"
//!          | "backoff" "=" LitStr | "max_backoff" "=" LitStr
//!          | "on" "=" Path                 // fn(&StepError) -> bool
//! ```

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Ident, LitFloat, LitInt, LitStr, Path, Token};

use crate::ast::{Attempts, Dur, MetaPair, duration_from_str};

/// The arguments `#[saga_task]` accepts.
pub const ARGS: &str = "`compensate` (or `undo`), `name`, `retry(..)`, `undo_retry(..)`, `timeout`, `undo_timeout`, `pivot`, `metadata(..)` or `crate`";
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
    pub undo_timeout: Option<(Ident, Dur)>,
    pub pivot: Option<Ident>,
    pub metadata: Option<(Ident, Vec<(Ident, LitStr)>)>,
    /// `crate = path::to::saga_core`, for a crate that does not know
    /// saga-core as `saga_core` (a facade); any function may have it.
    pub krate: Option<(Ident, Path)>,
    /// The first argument other than `crate`, where "takes no arguments"
    /// points.
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
            if key != "crate" {
                args.first.get_or_insert(key.span());
            }
            let result = match key.to_string().as_str() {
                "crate" => {
                    parse_eq(input, &key, "crate = platform::saga_core")?;
                    let path = parse_path(input, &key, "saga-core's")?;
                    set_once(&mut args.krate, &key, (key.clone(), path))
                }
                "compensate" | "undo" => {
                    parse_eq(input, &key, &format!("{key} = refund"))?;
                    let path = parse_path(input, &key, "the compensation's")?;
                    set_once(&mut args.compensate, &key, (key.clone(), path))
                }
                "name" => {
                    parse_eq(input, &key, "name = \"charge\"")?;
                    let lit = parse_name(input)?;
                    set_once(&mut args.name, &key, (key.clone(), lit))
                }
                "timeout" => {
                    parse_eq(input, &key, "timeout = \"2s\"")?;
                    let dur = parse_duration(input, &key)?;
                    set_once(&mut args.timeout, &key, (key.clone(), dur))
                }
                "undo_timeout" => {
                    parse_eq(input, &key, "undo_timeout = \"5s\"")?;
                    let dur = parse_duration(input, &key)?;
                    set_once(&mut args.undo_timeout, &key, (key.clone(), dur))
                }
                "pivot" => {
                    no_value(input, &key)?;
                    set_once(&mut args.pivot, &key, key.clone())
                }
                "retry" => {
                    let content = parenthesized(input, &key, "retry(attempts = 3)")?;
                    let retry = parse_retry(&content, &key)?;
                    set_once(&mut args.retry, &key, retry)
                }
                "undo_retry" => {
                    let content = parenthesized(input, &key, "undo_retry(attempts = 3)")?;
                    let retry = parse_retry(&content, &key)?;
                    set_once(&mut args.undo_retry, &key, (key.clone(), retry))
                }
                "metadata" => {
                    let content = parenthesized(input, &key, "metadata(team = \"payments\")")?;
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
fn skip_value(input: ParseStream<'_>) -> syn::Result<proc_macro2::TokenStream> {
    let mut skipped = proc_macro2::TokenStream::new();
    while !input.is_empty() && !input.peek(Token![,]) {
        skipped.extend([input.parse::<proc_macro2::TokenTree>()?]);
    }
    Ok(skipped)
}

/// The `=` after `key`, or an error that shows the argument's form.
fn parse_eq(input: ParseStream<'_>, key: &Ident, example: &str) -> syn::Result<()> {
    if input.peek(Token![=]) {
        input.parse::<Token![=]>()?;
        return Ok(());
    }
    Err(input.error(format!("expected `=` after `{key}`, as in `{example}`")))
}

/// `pivot`, which takes no value: `pivot = true` is an error at `= true`.
fn no_value(input: ParseStream<'_>, key: &Ident) -> syn::Result<()> {
    if input.is_empty() || input.peek(Token![,]) {
        return Ok(());
    }
    let value = skip_value(input)?;
    Err(syn::Error::new_spanned(
        value,
        format!("`{key}` takes no value: write `{key}` alone"),
    ))
}

/// The parentheses after `retry`, `undo_retry` or `metadata`; `retry = 3`
/// is an error at `= 3` that shows `retry(attempts = 3)`.
fn parenthesized<'a>(
    input: ParseStream<'a>,
    key: &Ident,
    example: &str,
) -> syn::Result<syn::parse::ParseBuffer<'a>> {
    if input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in input);
        return Ok(content);
    }
    let fork = input.fork();
    let count = match (fork.parse::<Token![=]>(), fork.parse::<LitInt>()) {
        (Ok(_), Ok(n)) if fork.is_empty() || fork.peek(Token![,]) => Some(n),
        _ => None,
    };
    let example = match count {
        Some(n) if key != "metadata" => format!("{key}(attempts = {n})"),
        _ => example.to_owned(),
    };
    let value = skip_value(input)?;
    let message = format!("`{key}` takes its settings in parentheses: write `{example}`");
    Err(if value.is_empty() {
        syn::Error::new(key.span(), message)
    } else {
        syn::Error::new_spanned(value, message)
    })
}

/// A path (`refund`, `payments::refund`); a string is an error that shows
/// the path without its quotes.
fn parse_path(input: ParseStream<'_>, key: &Ident, whose: &str) -> syn::Result<Path> {
    if input.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        return Err(syn::Error::new(
            lit.span(),
            format!(
                "write {whose} name without quotes: `{key} = {}`",
                lit.value()
            ),
        ));
    }
    input.parse()
}

/// A step name, a string; a bare name is an error that shows it quoted.
fn parse_name(input: ParseStream<'_>) -> syn::Result<LitStr> {
    if input.peek(LitStr) {
        return input.parse();
    }
    let value = skip_value(input)?;
    let text = value.to_string().replace(' ', "");
    Err(syn::Error::new_spanned(
        value,
        format!("a step name is a string: write `name = \"{text}\"`"),
    ))
}

/// A duration in a string, `"2s"`; an unquoted `2s` (the form `saga!`
/// takes) is an error that shows it quoted.
fn parse_duration(input: ParseStream<'_>, key: &Ident) -> syn::Result<Dur> {
    if input.peek(LitStr) {
        return duration_from_str(&input.parse()?);
    }
    let number = if input.peek(LitInt) {
        let lit: LitInt = input.parse()?;
        Some((lit.to_string(), lit.suffix().is_empty(), lit.span()))
    } else if input.peek(LitFloat) {
        let lit: LitFloat = input.parse()?;
        Some((lit.to_string(), lit.suffix().is_empty(), lit.span()))
    } else {
        None
    };
    match number {
        Some((text, no_unit, span)) => {
            let text = if no_unit { format!("{text}ms") } else { text };
            Err(syn::Error::new(
                span,
                format!(
                    "the attribute takes a duration in a string, with its unit: write `{key} = \"{text}\"` (`saga!` takes it unquoted: `{key} {text}`)"
                ),
            ))
        }
        None => Err(input.error(format!(
            "expected a duration in a string, as in `{key} = \"2s\"`"
        ))),
    }
}

/// A number of attempts; `"3"` is an error that shows it unquoted.
fn parse_attempts(input: ParseStream<'_>) -> syn::Result<LitInt> {
    if input.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        return Err(syn::Error::new(
            lit.span(),
            format!(
                "the number of attempts is not quoted: write `attempts = {}`",
                lit.value()
            ),
        ));
    }
    if input.peek(LitInt) {
        return input.parse();
    }
    if input.peek(Ident) {
        // A const (`attempts = MAX_ATTEMPTS`): the macro sees only its name.
        let path: Path = input.parse()?;
        return Err(syn::Error::new_spanned(
            path,
            "`attempts` takes a literal number such as `attempts = 3`; for a value computed in code, build the step with `Step::retry(RetryPolicy::attempts(..))`",
        ));
    }
    Err(input.error("expected a number of attempts, as in `attempts = 3`"))
}

fn parse_retry(input: ParseStream<'_>, retry_key: &Ident) -> syn::Result<RetryArgs> {
    let mut retry = RetryArgs {
        attempts: None,
        backoff: None,
        max_backoff: None,
        on: None,
    };
    while !input.is_empty() {
        if input.peek(LitInt) {
            let n: LitInt = input.parse()?;
            return Err(syn::Error::new(
                n.span(),
                format!(
                    "write the number of attempts as `attempts = {n}`: `{retry_key}(attempts = {n})`"
                ),
            ));
        }
        let key: Ident = syn::ext::IdentExt::parse_any(input)?;
        match key.to_string().as_str() {
            "attempts" => {
                parse_eq(input, &key, "attempts = 3")?;
                let n = parse_attempts(input)?;
                set_once(&mut retry.attempts, &key, Attempts::Count(n))?;
            }
            "forever" => set_once(&mut retry.attempts, &key, Attempts::Forever(key.span()))?,
            "backoff" => {
                parse_eq(input, &key, "backoff = \"100ms\"")?;
                let dur = parse_duration(input, &key)?;
                set_once(&mut retry.backoff, &key, dur)?;
            }
            "max_backoff" => {
                parse_eq(input, &key, "max_backoff = \"5s\"")?;
                let dur = parse_duration(input, &key)?;
                set_once(&mut retry.max_backoff, &key, dur)?;
            }
            "on" => {
                parse_eq(input, &key, "on = is_transient")?;
                let path = parse_path(input, &key, "the predicate's")?;
                set_once(&mut retry.on, &key, path)?;
            }
            _ => {
                return Err(syn::Error::new(
                    key.span(),
                    format!("unknown `{retry_key}` argument `{key}`; expected {RETRY_ARGS}"),
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
