//! `saga list`: a table of executions, filtered by status, saga, time and count.

use std::fmt::Write as _;

use saga_core::escape::user_text;
use saga_core::store::ExecutionRecord;
use saga_core::{ExecutionStatus, SagaEngine};

use crate::CliError;
use crate::args::Since;
use crate::output::{ExecutionJson, Style, Table, execution_json, now_ms, to_json, utc};

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
}

// TODO-design: `--limit` cuts the store's whole listing here; keyset paging
// (`--after <cursor>`) waits for a paged listing in `SagaStore`.
pub(crate) async fn list(
    engine: &SagaEngine,
    filter: &Filter<'_>,
    json: bool,
    style: Style,
) -> Result<String, CliError> {
    let since = filter.since.map(|s| s.at_ms(now_ms()));
    let mut records: Vec<ExecutionRecord> = engine
        .list(filter.status)
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
        let rows: Vec<ExecutionJson<'_>> =
            records.iter().map(|r| execution_json(r, false)).collect();
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
