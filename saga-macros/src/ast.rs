//! The `saga!` DSL: its model and its `Parse` impls.
//!
//! ```text
//! saga    := field* entry+
//! field   := "name" ":" LitStr ","
//!          | "context" ":" Type ","
//!          | "dependencies" ":" Type ","
//!          | "version" ":" LitStr ","
//!          | "classify_errors" ":" Expr ","     // SagaBuilder::classify_errors
//! entry   := step | group
//! step    := ("step" | "pivot") Path ("=>" ("undo" | "compensate") Path)? ("," option)* ";"
//! group   := "parallel" "{" step* "}"      // branches: `step` only, taking `&C`
//! option  := "retry" (LitInt | "forever")
//!          | "undo_retry" (LitInt | "forever")     // the compensation's attempts
//!          | "backoff" duration | "max_backoff" duration
//!          | "retry_if" Path
//!          | "timeout" duration
//!          | "undo_timeout" duration              // each attempt of the compensation
//!          | "name" LitStr
//!          | "metadata" "(" (Ident "=" LitStr),* ")"
//! duration:= an integer or decimal with a unit suffix: 250ms, 2s, 1.5s, 5m, 1h
//! ```
//!
//! The parser accepts `pivot` and an empty group inside `parallel { .. }`
//! so that `validate.rs` can say what is wrong at the token.

use std::time::Duration;

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Ident, LitFloat, LitInt, LitStr, Path, Token, Type};

mod kw {
    syn::custom_keyword!(name);
    syn::custom_keyword!(context);
    syn::custom_keyword!(step);
    syn::custom_keyword!(pivot);
    syn::custom_keyword!(undo);
    syn::custom_keyword!(compensate);
    syn::custom_keyword!(forever);
    syn::custom_keyword!(parallel);
}

/// The saga's header fields.
pub const FIELDS: &str = "`name`, `version`, `context`, `dependencies` or `classify_errors`";
/// The options a step accepts in `saga!`.
pub const STEP_OPTIONS: &str = "`retry`, `backoff`, `max_backoff`, `retry_if`, `undo_retry`, `timeout`, `undo_timeout`, `name` or `metadata`";

/// A whole `saga! { .. }`.
pub struct SagaDef {
    pub name: Option<LitStr>,
    /// `version: "2"`: the definition's declared version.
    pub version: Option<LitStr>,
    pub context: Option<Type>,
    /// `dependencies: D`, the saga's tools (`Saga<C, D>`).
    pub dependencies: Option<Type>,
    /// `classify_errors: f`, given to `SagaBuilder::classify_errors`.
    pub classify: Option<syn::Expr>,
    pub entries: Vec<Entry>,
    /// Where an error about the whole saga points.
    pub span: Span,
}

/// One line of the saga.
pub enum Entry {
    Step(StepDef),
    Parallel(GroupDef),
}

/// `parallel { step a => undo ua; step b; }`.
pub struct GroupDef {
    /// The `parallel` keyword.
    pub keyword: Ident,
    pub branches: Vec<StepDef>,
}

/// `step path => undo path, options;` or `pivot path, options;`.
pub struct StepDef {
    /// The `step` or `pivot` keyword.
    pub keyword: Ident,
    pub pivot: bool,
    pub task: Path,
    /// The `undo` (or `compensate`) keyword and the compensation.
    pub undo: Option<(Ident, Path)>,
    pub options: Vec<StepOption>,
    /// What the expansion names the step's type by, `__saga_step_N`, and
    /// its compensation's, `__saga_undo_N` (set once the saga is parsed,
    /// N being the step's index; see `expand::aliases`).
    pub alias: Ident,
    pub undo_alias: Ident,
}

/// One option of a step, with its keyword kept for spans.
pub struct StepOption {
    pub keyword: Ident,
    pub value: OptionValue,
}

pub enum OptionValue {
    Retry(Attempts),
    UndoRetry(Attempts),
    Backoff(Dur),
    MaxBackoff(Dur),
    RetryIf(Path),
    Timeout(Dur),
    UndoTimeout(Dur),
    Name(LitStr),
    Metadata(Vec<(Ident, LitStr)>),
}

/// `retry 3` or `retry forever`.
#[derive(Clone)]
pub enum Attempts {
    Count(LitInt),
    Forever(Span),
}

/// A parsed duration and where it was written.
#[derive(Clone)]
pub struct Dur {
    pub value: Duration,
    pub span: Span,
}

impl SagaDef {
    /// Every step in order, a group's branches in theirs.
    pub fn steps(&self) -> Vec<&StepDef> {
        self.entries
            .iter()
            .flat_map(|e| match e {
                Entry::Step(s) => std::slice::from_ref(s),
                Entry::Parallel(g) => g.branches.as_slice(),
            })
            .collect()
    }

    /// The `parallel` groups.
    pub fn groups(&self) -> impl Iterator<Item = &GroupDef> {
        self.entries.iter().filter_map(|e| match e {
            Entry::Parallel(g) => Some(g),
            Entry::Step(_) => None,
        })
    }
}

impl Parse for SagaDef {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let span = input.span();
        let mut def = SagaDef {
            name: None,
            version: None,
            context: None,
            dependencies: None,
            classify: None,
            entries: Vec::new(),
            span,
        };
        while input.peek(Ident) && input.peek2(Token![:]) && !input.peek2(Token![::]) {
            parse_field(input, &mut def)?;
        }
        while !input.is_empty() {
            def.entries.push(input.parse()?);
        }
        let steps = def.entries.iter_mut().flat_map(|e| match e {
            Entry::Step(s) => std::slice::from_mut(s),
            Entry::Parallel(g) => g.branches.as_mut_slice(),
        });
        for (i, step) in steps.enumerate() {
            step.alias = Ident::new(&format!("__saga_step_{i}"), step.task.span());
            let undo_span = step
                .undo
                .as_ref()
                .map_or(step.task.span(), |(_, u)| u.span());
            step.undo_alias = Ident::new(&format!("__saga_undo_{i}"), undo_span);
        }
        Ok(def)
    }
}

fn parse_field(input: ParseStream<'_>, def: &mut SagaDef) -> syn::Result<()> {
    let key: Ident = syn::ext::IdentExt::parse_any(input)?;
    input.parse::<Token![:]>()?;
    let duplicate = |what: &str| {
        syn::Error::new(
            key.span(),
            format!("duplicate saga field `{what}`; give it once"),
        )
    };
    if key == "name" {
        if def.name.is_some() {
            return Err(duplicate("name"));
        }
        def.name = Some(input.parse()?);
    } else if key == "version" {
        if def.version.is_some() {
            return Err(duplicate("version"));
        }
        let version: LitStr = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "`version` takes a string literal such as \"2\"; for a value computed in code, build the saga with `SagaBuilder::version`",
            )
        })?;
        if version.value().trim().is_empty() {
            return Err(syn::Error::new(
                version.span(),
                "a saga's version is a label such as \"2\": give a non-empty one, or no `version`",
            ));
        }
        def.version = Some(version);
    } else if key == "context" {
        if def.context.is_some() {
            return Err(duplicate("context"));
        }
        def.context = Some(input.parse()?);
    } else if key == "dependencies" {
        if def.dependencies.is_some() {
            return Err(duplicate("dependencies"));
        }
        def.dependencies = Some(input.parse()?);
    } else if key == "classify_errors" {
        if def.classify.is_some() {
            return Err(duplicate("classify_errors"));
        }
        def.classify = Some(input.parse()?);
    } else {
        return Err(syn::Error::new(
            key.span(),
            format!("unknown saga field `{key}`; expected {FIELDS}"),
        ));
    }
    input.parse::<Token![,]>()?;
    Ok(())
}

impl Parse for Entry {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let lookahead = input.lookahead1();
        if lookahead.peek(kw::step) || lookahead.peek(kw::pivot) {
            input.parse().map(Entry::Step)
        } else if lookahead.peek(kw::parallel) {
            input.parse().map(Entry::Parallel)
        } else {
            Err(lookahead.error())
        }
    }
}

impl Parse for GroupDef {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let keyword: Ident = input.parse()?;
        let content;
        syn::braced!(content in input);
        let mut branches = Vec::new();
        while !content.is_empty() {
            let lookahead = content.lookahead1();
            if lookahead.peek(kw::step) || lookahead.peek(kw::pivot) {
                branches.push(content.parse()?);
            } else if lookahead.peek(kw::parallel) {
                return Err(content.error(
                    "a `parallel` group cannot contain another: list every branch in one `parallel { .. }`",
                ));
            } else {
                return Err(lookahead.error());
            }
        }
        Ok(GroupDef { keyword, branches })
    }
}

impl Parse for StepDef {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let pivot = input.peek(kw::pivot);
        let keyword: Ident = input.parse()?;
        let task: Path = input.parse()?;
        let undo = if input.peek(Token![=>]) {
            input.parse::<Token![=>]>()?;
            let lookahead = input.lookahead1();
            if !(lookahead.peek(kw::undo) || lookahead.peek(kw::compensate)) {
                return Err(lookahead.error());
            }
            let keyword: Ident = input.parse()?;
            Some((keyword, input.parse()?))
        } else {
            None
        };
        let mut options = Vec::new();
        while input.peek(Token![,]) {
            input.parse::<Token![,]>()?;
            options.push(input.parse()?);
        }
        let lookahead = input.lookahead1();
        if !lookahead.peek(Token![;]) {
            return Err(if lookahead.peek(Token![=>]) {
                syn::Error::new(
                    input.span(),
                    "put `=> undo ..` right after the step's function, before its options",
                )
            } else {
                lookahead.error()
            });
        }
        input.parse::<Token![;]>()?;
        let alias = Ident::new("__saga_step", task.span());
        Ok(StepDef {
            keyword,
            pivot,
            task,
            undo,
            options,
            undo_alias: alias.clone(),
            alias,
        })
    }
}

impl Parse for StepOption {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let keyword: Ident = syn::ext::IdentExt::parse_any(input)?;
        let known = [
            "retry",
            "undo_retry",
            "backoff",
            "max_backoff",
            "retry_if",
            "timeout",
            "undo_timeout",
            "name",
            "metadata",
        ];
        if input.peek(Token![=]) && known.iter().any(|k| keyword == k) {
            return Err(option_with_eq(input, &keyword));
        }
        let value = match keyword.to_string().as_str() {
            "retry" => OptionValue::Retry(parse_attempts(input, &keyword)?),
            "undo_retry" => OptionValue::UndoRetry(parse_attempts(input, &keyword)?),
            "backoff" => OptionValue::Backoff(parse_duration(input, &keyword)?),
            "max_backoff" => OptionValue::MaxBackoff(parse_duration(input, &keyword)?),
            "retry_if" => OptionValue::RetryIf(input.parse()?),
            "timeout" => OptionValue::Timeout(parse_duration(input, &keyword)?),
            "undo_timeout" => OptionValue::UndoTimeout(parse_duration(input, &keyword)?),
            "name" => OptionValue::Name(input.parse()?),
            "metadata" => {
                let content;
                syn::parenthesized!(content in input);
                let pairs = Punctuated::<MetaPair, Token![,]>::parse_terminated(&content)?;
                OptionValue::Metadata(pairs.into_iter().map(|p| (p.key, p.value)).collect())
            }
            _ => {
                return Err(syn::Error::new(
                    keyword.span(),
                    format!("unknown step option `{keyword}`; expected {STEP_OPTIONS}"),
                ));
            }
        };
        Ok(StepOption { keyword, value })
    }
}

/// `timeout = "2s"`, the attribute's form, in `saga!`: an error at the
/// `=` and its value that shows the option as `saga!` takes it.
fn option_with_eq(input: ParseStream<'_>, keyword: &Ident) -> syn::Error {
    let mut value = proc_macro2::TokenStream::new();
    let mut shown = String::new();
    while !input.is_empty() && !input.peek(Token![,]) && !input.peek(Token![;]) {
        match input.parse::<proc_macro2::TokenTree>() {
            Ok(tree) => {
                if !matches!(&tree, proc_macro2::TokenTree::Punct(p) if p.as_char() == '=') {
                    shown.push_str(&unquoted(&tree, keyword));
                }
                value.extend([tree]);
            }
            Err(e) => return e,
        }
    }
    syn::Error::new_spanned(
        value,
        format!(
            "a `saga!` option takes no `=`: write `{keyword} {shown}` (`=` is the `#[saga_task(..)]` attribute's form)"
        ),
    )
}

/// A duration's string without its quotes (`"2s"` as `2s`), any other
/// token as written.
fn unquoted(tree: &proc_macro2::TokenTree, keyword: &Ident) -> String {
    let durations = ["timeout", "undo_timeout", "backoff", "max_backoff"];
    if let proc_macro2::TokenTree::Literal(lit) = tree {
        if durations.iter().any(|d| keyword == d) {
            if let Ok(lit) = syn::parse2::<LitStr>(tree.clone().into()) {
                return lit.value();
            }
        }
        return lit.to_string();
    }
    tree.to_string()
}

/// `3` or `forever`, after `retry` or `undo_retry`.
fn parse_attempts(input: ParseStream<'_>, keyword: &Ident) -> syn::Result<Attempts> {
    if input.peek(kw::forever) {
        let forever: kw::forever = input.parse()?;
        Ok(Attempts::Forever(forever.span))
    } else if input.peek(LitInt) {
        Ok(Attempts::Count(input.parse()?))
    } else if input.peek(syn::token::Paren) {
        let content;
        let parens = syn::parenthesized!(content in input);
        let _ = content.parse::<proc_macro2::TokenStream>();
        Err(syn::Error::new(
            parens.span.join(),
            format!(
                "in `saga!`, write `{keyword} 3` or `{keyword} forever` (`{keyword}(attempts = 3)` is the `#[saga_task(..)]` attribute's form)"
            ),
        ))
    } else if input.peek(Ident) {
        // A const (`retry MAX_ATTEMPTS`): the macro sees only its name.
        let path: syn::Path = input.parse()?;
        Err(syn::Error::new_spanned(
            &path,
            format!(
                "`{keyword}` takes a literal number of attempts such as `{keyword} 3`, or `{keyword} forever`; for a value computed in code, build the step with `Step::retry(RetryPolicy::attempts(..))`"
            ),
        ))
    } else {
        Err(input.error(format!(
            "expected a number of attempts or `forever` after `{keyword}`, as in `{keyword} 3`"
        )))
    }
}

/// `key = "value"` in `metadata(..)`.
pub struct MetaPair {
    pub key: Ident,
    pub value: LitStr,
}

impl Parse for MetaPair {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let key = syn::ext::IdentExt::parse_any(input)?;
        input.parse::<Token![=]>()?;
        Ok(MetaPair {
            key,
            value: input.parse()?,
        })
    }
}

const DURATION_HELP: &str =
    "write a number and its unit together, as in `250ms`, `2s`, `1.5s`, `5m` or `1h`";

/// A duration written as one literal token: `250ms`, `2s`, `1.5s`; the
/// attribute's quoted `"2s"` is an error that shows it unquoted.
fn parse_duration(input: ParseStream<'_>, keyword: &Ident) -> syn::Result<Dur> {
    if input.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        return Err(syn::Error::new(
            lit.span(),
            format!(
                "in `saga!`, a duration is not quoted: write `{keyword} {}` (the `#[saga_task(..)]` attribute quotes it: `{keyword} = \"{}\"`)",
                lit.value(),
                lit.value()
            ),
        ));
    }
    let (digits, suffix, span) = if input.peek(LitInt) {
        let lit: LitInt = input.parse()?;
        (
            lit.base10_digits().to_owned(),
            lit.suffix().to_owned(),
            lit.span(),
        )
    } else if input.peek(LitFloat) {
        let lit: LitFloat = input.parse()?;
        (
            lit.base10_digits().to_owned(),
            lit.suffix().to_owned(),
            lit.span(),
        )
    } else {
        return Err(input.error(format!("expected a duration: {DURATION_HELP}")));
    };
    // `2 sec`: a number, then a separate word (never valid after a duration).
    if input.peek(Ident) {
        let word: Ident = input.fork().parse()?;
        return Err(syn::Error::new(
            span.join(word.span()).unwrap_or(span),
            format!("malformed duration `{digits}{suffix} {word}`: {DURATION_HELP}"),
        ));
    }
    let value = duration_from_parts(&digits, &suffix).map_err(|e| syn::Error::new(span, e))?;
    Ok(Dur { value, span })
}

/// A duration from a string, as attributes write it: `"250ms"`, `"2s"`.
pub fn duration_from_str(lit: &LitStr) -> syn::Result<Dur> {
    let text = lit.value();
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(trimmed.len());
    let (digits, suffix) = trimmed.split_at(split);
    if suffix.starts_with(' ') || text != trimmed {
        return Err(syn::Error::new(
            lit.span(),
            format!("malformed duration `{text}`: {DURATION_HELP}"),
        ));
    }
    let value = duration_from_parts(&digits.replace('_', ""), suffix)
        .map_err(|e| syn::Error::new(lit.span(), e))?;
    Ok(Dur {
        value,
        span: lit.span(),
    })
}

fn duration_from_parts(digits: &str, unit: &str) -> Result<Duration, String> {
    let malformed = || format!("malformed duration `{digits}{unit}`: {DURATION_HELP}");
    if unit.is_empty() {
        return Err(format!("duration `{digits}` has no unit: {DURATION_HELP}"));
    }
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(malformed()),
    };
    let number: f64 = digits.parse().map_err(|_| malformed())?;
    Duration::try_from_secs_f64(number * scale).map_err(|_| malformed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(
            duration_from_parts("250", "ms"),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            duration_from_parts("1.5", "s"),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(duration_from_parts("2", "m"), Ok(Duration::from_secs(120)));
        assert!(duration_from_parts("2", "sec").is_err());
        assert!(duration_from_parts("2", "").is_err());
    }

    #[test]
    fn duration_strings() {
        let ok = |s: &str| duration_from_str(&LitStr::new(s, Span::call_site())).map(|d| d.value);
        assert_eq!(ok("100ms").ok(), Some(Duration::from_millis(100)));
        assert_eq!(ok("1_000ms").ok(), Some(Duration::from_secs(1)));
        assert!(ok("2 sec").is_err());
        assert!(ok("2 s").is_err());
        assert!(ok("s").is_err());
        assert!(ok("").is_err());
    }
}
