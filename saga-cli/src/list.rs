//! `saga list`: a table of executions, filtered by status, saga, time and count.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use saga_core::escape::user_text;
use saga_core::store::{ExecutionSummary, ListCursor, ListQuery};
use saga_core::{ExecutionId, ExecutionStatus, SagaEngine};
use serde::Serialize;

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
    let mut records = matching(engine, filter, since).await?;
    // One more than `limit` was read if there is a next page.
    let more = filter.limit.is_some_and(|n| records.len() > n);
    if let Some(limit) = filter.limit {
        records.truncate(limit);
    }
    if let (true, Some(saga)) = (records.is_empty() && !more, filter.saga) {
        notes.extend(unknown_saga(engine, saga).await?);
    }
    let stuck = records
        .iter()
        .filter(|r| r.status == ExecutionStatus::Stuck)
        .count();
    if json {
        let declared = declared_versions(engine, &records).await;
        let rows: Vec<ListedJson<'_>> = records
            .iter()
            .map(|r| ListedJson {
                execution: summary_json(r),
                version: declared.get(r.fingerprint.as_str()).cloned().flatten(),
            })
            .collect();
        return Ok(to_json(&rows));
    }
    // Ids whole, however long: an operator copies them into `saga show`.
    // A version column only where a saga's executions listed have more
    // than one (a deploy under way): a fingerprint's first characters,
    // which `saga diagram` takes, after the version its definition
    // declared if any (`2 (0e8b2f7a)`).
    let versions = mixed_versions(&records);
    let declared = if versions {
        declared_versions(engine, &records).await
    } else {
        HashMap::new()
    };
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
            let short = short_version(&r.fingerprint);
            let cell = match declared.get(r.fingerprint.as_str()) {
                Some(Some(version)) => format!("{version} ({short})"),
                _ => short.to_owned(),
            };
            row.push((user_text(&cell).into_owned(), None));
        }
        row.extend([
            (r.status.label().to_owned(), Style::status(r.status)),
            (utc(r.updated_at_ms, false), None),
        ]);
        table.row(row);
    }
    let mut out = table.render(style.colour);
    let shown = records.len();
    let noun = if shown == 1 {
        "execution"
    } else {
        "executions"
    };
    if more {
        if let Some(last) = records.last() {
            let cursor = last.cursor().to_string();
            let _ = writeln!(out, "next page: `--after {}`", user_text(&cursor));
        }
        let _ = write!(out, "{shown} {noun} shown, more match");
    } else {
        let _ = write!(out, "{shown} {noun}");
    }
    if stuck > 0 && filter.status != Some(ExecutionStatus::Stuck) {
        let _ = write!(out, " ({stuck} stuck: `saga show <id>`)");
    }
    out.push('\n');
    Ok(out)
}

/// A listed execution as `--json` prints it: the execution, then the
/// version its definition declared, absent without one.
#[derive(Serialize)]
struct ListedJson<'a> {
    #[serde(flatten)]
    execution: ExecutionJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
}

/// Each listed definition's declared version, if it has one: one read
/// of the store per distinct fingerprint. A definition the store cannot
/// give counts as undeclared (the listing still prints).
async fn declared_versions<'a>(
    engine: &SagaEngine,
    records: &'a [ExecutionSummary],
) -> HashMap<&'a str, Option<String>> {
    let mut declared: HashMap<&str, Option<String>> = HashMap::new();
    for r in records {
        if !declared.contains_key(r.fingerprint.as_str()) {
            let version = match engine.store().definition(&r.fingerprint).await {
                Ok(Some(definition)) => definition.version().ok().flatten(),
                _ => None,
            };
            declared.insert(&r.fingerprint, version);
        }
    }
    declared
}

/// How many summaries a listing filtered by saga or time reads at a
/// time.
const PAGE: usize = 5_000;

/// The executions `filter` selects, oldest first: with a limit, one more
/// than it if there are more (so the caller can tell a next page exists),
/// and no more read than that. Without `--saga` or `--since` the store
/// selects them all; with either, pages are read and filtered here until
/// enough passed.
async fn matching(
    engine: &SagaEngine,
    filter: &Filter<'_>,
    since: Option<i64>,
) -> Result<Vec<ExecutionSummary>, CliError> {
    let mut query = ListQuery::new();
    query.status = filter.status;
    query.after = filter.after.cloned();
    if let Some(since) = since {
        // Created at `since` or later: listed from just before it (an id
        // sorts after the empty one), unless the cursor given is later.
        let from = ListCursor {
            created_at_ms: since.saturating_sub(1),
            id: ExecutionId::new(""),
        };
        let later = query.after.as_ref().is_some_and(|after| {
            (after.created_at_ms, after.id.as_str()) >= (from.created_at_ms, from.id.as_str())
        });
        if !later {
            query.after = Some(from);
        }
    }
    let filtered = filter.saga.is_some() || since.is_some();
    let wanted = filter.limit.map(|n| n.saturating_add(1));
    let mut records: Vec<ExecutionSummary> = Vec::new();
    loop {
        query.limit = if filtered {
            Some(PAGE)
        } else {
            wanted.map(|n| n - records.len())
        };
        let page = engine.store().list_summaries(query.clone()).await?;
        let last = page.last().map(ExecutionSummary::cursor);
        let full = query.limit.is_some_and(|n| page.len() == n);
        records.extend(
            page.into_iter()
                .filter(|r| filter.saga.is_none_or(|s| r.saga == s))
                .filter(|r| since.is_none_or(|t| r.created_at_ms >= t)),
        );
        if let Some(wanted) = wanted {
            if records.len() >= wanted {
                records.truncate(wanted);
                return Ok(records);
            }
        }
        match last {
            Some(cursor) if full => query.after = Some(cursor),
            _ => return Ok(records),
        }
    }
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
    // Each name once, in order; the reading stops at the first
    // execution of `saga`.
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut query = ListQuery::new().with_limit(PAGE);
    loop {
        let page = engine.store().list_summaries(query.clone()).await?;
        let last = page.last().map(ExecutionSummary::cursor);
        let full = page.len() == PAGE;
        for r in page {
            if r.saga == saga {
                return Ok(None);
            }
            names.insert(r.saga);
        }
        match last {
            Some(cursor) if full => query = query.with_after(cursor),
            _ => break,
        }
    }
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
