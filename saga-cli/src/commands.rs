//! Operator commands: `resume`, `abandon` and `cancel`, each only with `--yes`.

use saga_core::escape::Escaped;
use saga_core::store::ExecutionRecord;
use saga_core::{EngineError, ExecutionStatus, SagaEngine, WaitError};
use serde::Serialize;

use crate::args::Mode;
use crate::output::to_json;
use crate::{CliError, execution_record};

#[derive(Serialize)]
struct CommandJson<'a> {
    id: &'a str,
    command: &'a str,
    /// `requested` (a worker carries it out) or `done`.
    result: &'a str,
    status: &'a str,
}

fn command_out(
    json: bool,
    id: &str,
    command: &str,
    result: &str,
    status: ExecutionStatus,
    text: String,
) -> String {
    if json {
        to_json(&CommandJson {
            id,
            command,
            result,
            status: status.label(),
        })
    } else {
        format!("{}\n", Escaped(&text))
    }
}

fn wrong_status(
    record: &ExecutionRecord,
    operation: &'static str,
    applies: &'static str,
) -> CliError {
    CliError::Engine(EngineError::WrongStatus {
        execution_id: record.id.clone(),
        status: record.status,
        operation,
        applies,
    })
}

pub(crate) async fn resume(
    engine: &SagaEngine,
    id: &str,
    yes: bool,
    json: bool,
    mode: Mode,
) -> Result<String, CliError> {
    let record = execution_record(engine, id).await?;
    if record.status != ExecutionStatus::Stuck {
        return Err(wrong_status(&record, "resume", "stuck executions"));
    }
    if !yes {
        return Err(CliError::NeedsYes(format!(
            "this would resume stuck execution `{id}` of saga `{}`: the step or compensation that failed for good runs again",
            record.saga
        )));
    }
    match mode {
        Mode::Tool => {
            engine.request_resume(&record.id).await?;
            let text = format!(
                "resume of `{id}` requested: a worker with saga `{}` (definition {}) registered carries it out at its next poll; `saga show {id}` follows it",
                record.saga, record.fingerprint
            );
            Ok(command_out(
                json,
                id,
                "resume",
                "requested",
                ExecutionStatus::Stuck,
                text,
            ))
        }
        Mode::Embedded => {
            engine.resume(&record.id).await?;
            // A resumed run that ends stuck again (or compensated) is
            // still an answer: its status is what the operator asked.
            let report = match engine.wait(&record.id).await {
                Ok(report) => report,
                Err(WaitError::Saga(ended)) => ended.report().clone(),
                Err(WaitError::Engine(error)) => return Err(error.into()),
                Err(other) => {
                    return Err(EngineError::RunLost {
                        execution_id: record.id.clone(),
                        detail: other.to_string(),
                    }
                    .into());
                }
            };
            let text = format!("resumed `{id}`: it ended {}", report.status);
            Ok(command_out(json, id, "resume", "done", report.status, text))
        }
    }
}

pub(crate) async fn abandon(
    engine: &SagaEngine,
    id: &str,
    yes: bool,
    json: bool,
) -> Result<String, CliError> {
    let record = execution_record(engine, id).await?;
    if record.status.is_finished() && record.status != ExecutionStatus::Stuck {
        return Err(wrong_status(
            &record,
            "abandon",
            "stuck or unfinished executions",
        ));
    }
    if !yes {
        return Err(CliError::NeedsYes(format!(
            "this would abandon {} execution `{id}` of saga `{}` for good: nothing is compensated, and what its steps did stays as it is",
            record.status, record.saga
        )));
    }
    // Needs no user code: done here, at once.
    engine.abandon(&record.id).await?;
    let text = format!("abandoned `{id}`; nothing was compensated");
    Ok(command_out(
        json,
        id,
        "abandon",
        "done",
        ExecutionStatus::Abandoned,
        text,
    ))
}

pub(crate) async fn cancel(
    engine: &SagaEngine,
    id: &str,
    yes: bool,
    json: bool,
) -> Result<String, CliError> {
    let record = execution_record(engine, id).await?;
    if record.status.is_finished() {
        return Err(wrong_status(
            &record,
            "cancel",
            "running or compensating executions",
        ));
    }
    if !yes {
        return Err(CliError::NeedsYes(format!(
            "this would cancel {} execution `{id}` of saga `{}`: before its pivot it rolls back, after it the request is recorded and ignored",
            record.status, record.saga
        )));
    }
    engine.cancel(&record.id).await?;
    let text = format!(
        "cancel of `{id}` requested: its owner sees it at its next log write (or, if its owner died, the worker that takes it over)"
    );
    Ok(command_out(
        json,
        id,
        "cancel",
        "requested",
        record.status,
        text,
    ))
}
