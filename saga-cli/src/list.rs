//! `saga list`: a table of executions, filtered by status, saga, time and count.

use std::fmt::Write as _;

use saga_core::escape::user_text;
use saga_core::store::{ExecutionSummary, ListCursor, ListQuery};
use saga_core::{ExecutionStatus, SagaEngine};

use crate::CliError;
use crate::args::Since;
use crate::output::{ExecutionJson, Style, Table, now_ms, summary_json, to_json, utc};

/// Which executions `list` prints.
#[derive(Debug, Default)]
pub(crate) struct Filter<'a> {
    /// Only this status (the store filters).
    pub(crate) status: Option<ExecutionStatus>,
    /// Only this saga.
    pub(crate) saga: Option<&'a str>,
    /// Only those created since then.
    pub(crate) since: Option<Since>,
    /// At most this many, the oldest first.
    pub(crate) limit: Option<usize>,
    /// Only those after this cursor (the store pages).
    pub(crate) after: Option<&'a ListCursor>,
}

pub(crate) async fn list(
    engine: &SagaEngine,
    filter: &Filter<'_>,
    json: bool,
    style: Style,
    notes: &mut Vec<String>,
) -> Result<String, CliError> {
    let since = filter.since.map(|s| s.at_ms(now_ms()));
    // Summaries: a listing reads no context.
    let mut query = ListQuery::new();
    query.status = filter.status;
    query.after = filter.after.cloned();
    let mut records: Vec<ExecutionSummary> = engine
        .store()
        .list_summaries(query)
        .await?
        .into_iter()
        .filter(|r| filter.saga.is_none_or(|s| r.saga == s))
        .filter(|r| since.is_none_or(|t| r.created_at_ms >= t))
        .collect();
    let matched = records.len();
    if let (0, Some(saga)) = (matched, filter.saga) {
        notes.extend(unknown_saga(engine, saga).await?);
    }
    let stuck = records
        .iter()
        .filter(|r| r.status == ExecutionStatus::Stuck)
        .count();
    if let Some(limit) = filter.limit {
        records.truncate(limit);
    }
    if json {
        let rows: Vec<ExecutionJson<'_>> = records.iter().map(summary_json).collect();
        return Ok(to_json(&rows));
    }
    // Ids whole, however long: an operator copies them into `saga show`.
    // A version column only where a saga's executions listed have more
    // than one (a deploy under way): a fingerprint's first characters,
    // which `saga diagram` takes.
    let versions = mixed_versions(&records);
    let mut header = vec!["ID", "SAGA"];
    if versions {
        header.push("VERSION");
    }
    header.extend(["STATUS", "UPDATED (UTC)"]);
    let mut table = Table::new(header);
    for r in &records {
        let mut row = vec![
            (user_text(r.id.as_str()).into_owned(), None),
            (user_text(&r.saga).into_owned(), None),
        ];
        if versions {
            row.push((user_text(short_version(&r.fingerprint)).into_owned(), None));
        }
        row.extend([
            (r.status.label().to_owned(), Style::status(r.status)),
            (utc(r.updated_at_ms, false), None),
        ]);
        table.row(row);
    }
    let mut out = table.render(style.colour);
    let noun = if matched == 1 {
        "execution"
    } else {
        "executions"
    };
    if records.len() < matched {
        if let Some(last) = records.last() {
            let cursor = last.cursor().to_string();
            let _ = writeln!(out, "next page: `--after {}`", user_text(&cursor));
        }
        let _ = write!(out, "{} of {matched} {noun} shown", records.len());
    } else {
        let _ = write!(out, "{matched} {noun}");
    }
    if stuck > 0 && filter.status != Some(ExecutionStatus::Stuck) {
        let _ = write!(out, " ({stuck} stuck: `saga show <id>`)");
    }
    out.push('\n');
    Ok(out)
}

/// How many characters of a fingerprint the version column shows: as
/// many as `saga diagram` needs at least.
const VERSION_SHOWN: usize = 8;

/// Whether some saga has executions of more than one version in `records`.
fn mixed_versions(records: &[ExecutionSummary]) -> bool {
    let mut seen: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    records
        .iter()
        .any(|r| *seen.entry(&r.saga).or_insert(&r.fingerprint) != r.fingerprint)
}

/// A fingerprint's first characters, to tell versions apart.
fn short_version(fingerprint: &str) -> &str {
    fingerprint
        .char_indices()
        .nth(VERSION_SHOWN)
        .map_or(fingerprint, |(end, _)| &fingerprint[..end])
}

/// How many saga names a hint lists at most.
const NAMES_SHOWN: usize = 10;

/// A hint when no execution of any status has saga `saga` (a misspelt
/// `--saga` must not look like a quiet store), naming the sagas that have
/// some; `None` if it has executions (of another status, or older).
async fn unknown_saga(engine: &SagaEngine, saga: &str) -> Result<Option<String>, CliError> {
    let mut names: Vec<String> = engine
        .store()
        .list_summaries(ListQuery::new())
        .await?
        .into_iter()
        .map(|r| r.saga)
        .collect();
    if names.iter().any(|name| name == saga) {
        return Ok(None);
    }
    names.sort();
    names.dedup();
    let mut hint = format!("hint: no execution in the store has saga `{saga}`");
    if names.is_empty() {
        hint.push_str(" (the store has no executions)");
    } else {
        let shown: Vec<String> = names
            .iter()
            .take(NAMES_SHOWN)
            .map(|name| format!("`{name}`"))
            .collect();
        let _ = write!(hint, "; sagas with executions: {}", shown.join(", "));
        let more = names.len().saturating_sub(NAMES_SHOWN);
        if more > 0 {
            let _ = write!(hint, " and {more} more");
        }
    }
    Ok(Some(hint))
}
