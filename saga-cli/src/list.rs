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
    let mut table = Table::new(vec!["ID", "SAGA", "STATUS", "UPDATED (UTC)"]);
    for r in &records {
        table.row(vec![
            (user_text(r.id.as_str()).into_owned(), None),
            (user_text(&r.saga).into_owned(), None),
            (r.status.label().to_owned(), Style::status(r.status)),
            (utc(r.updated_at_ms, false), None),
        ]);
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
