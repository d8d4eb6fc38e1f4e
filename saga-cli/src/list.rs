//! `saga list`: a table of executions.

use std::fmt::Write as _;

use saga_core::escape::user_text;
use saga_core::store::ExecutionRecord;
use saga_core::{ExecutionStatus, SagaEngine};

use crate::CliError;
use crate::output::{ExecutionJson, execution_json, fit, to_json, utc};

pub(crate) async fn list(
    engine: &SagaEngine,
    status: Option<ExecutionStatus>,
    saga: Option<&str>,
    json: bool,
) -> Result<String, CliError> {
    let records: Vec<ExecutionRecord> = engine
        .list(status)
        .await?
        .into_iter()
        .filter(|r| saga.is_none_or(|s| r.saga == s))
        .collect();
    if json {
        let rows: Vec<ExecutionJson<'_>> =
            records.iter().map(|r| execution_json(r, false)).collect();
        return Ok(to_json(&rows));
    }
    // 32 + 13 + 12 + 16 columns and three gaps of 2: 79, for an 80-column
    // terminal. Generated ids are 32 characters; longer ones are cut
    // (`--json` has them whole).
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32}  {:<13}  {:<12}  UPDATED (UTC)",
        "ID", "SAGA", "STATUS"
    );
    for r in &records {
        let _ = writeln!(
            out,
            "{:<32}  {:<13}  {:<12}  {}",
            fit(&user_text(r.id.as_str()), 32),
            fit(&user_text(&r.saga), 13),
            r.status.label(),
            utc(r.updated_at_ms, false)
        );
    }
    let stuck = records
        .iter()
        .filter(|r| r.status == ExecutionStatus::Stuck)
        .count();
    let noun = if records.len() == 1 {
        "execution"
    } else {
        "executions"
    };
    let _ = write!(out, "{} {noun}", records.len());
    if stuck > 0 && status != Some(ExecutionStatus::Stuck) {
        let _ = write!(out, " ({stuck} stuck: `saga show <id>`)");
    }
    out.push('\n');
    Ok(out)
}
