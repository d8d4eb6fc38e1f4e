//! # saga-cli: inspect and mend durable saga executions
//!
//! The `saga` command works on the store your service writes (an SQLite
//! file; a PostgreSQL URL once saga-core has its PostgreSQL store):
//!
//! ```text
//! saga --store sagas.db list [--status stuck]     # a table of executions
//! saga --store sagas.db show <id>                 # one execution as a timeline
//! saga --store sagas.db diagram <saga|fingerprint> [--dot]
//! saga --store sagas.db resume  <id> --yes        # a stuck execution: try again
//! saga --store sagas.db abandon <id> --yes        # give it up, compensate nothing
//! saga --store sagas.db cancel  <id> --yes        # roll it back (before the pivot)
//! ```
//!
//! Every command takes `--json` for scripts. The tool holds none of your
//! code, so it cannot run a step: `resume` and `cancel` write a durable
//! request that your workers (the processes whose
//! [`SagaEngine`] has the saga registered) carry out — a resume at their
//! next [`recover`](SagaEngine::recover), a cancel at the owner's next
//! log write. `abandon` needs no code and is done at once.
//!
//! The same commands embed in your own binary, next to your registered
//! sagas, where `resume` runs the execution right there:
//!
//! ```no_run
//! # async fn my_engine() -> saga_core::SagaEngine { unimplemented!() }
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     let engine = my_engine().await; // your store, your sagas registered
//!     saga_cli::main(engine).await
//! }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms)]

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use saga_core::store::{
    Event, EventKind, ExecutionRecord, SagaStore, SqliteOptions, SqliteStore, StoreError,
    logged_durations,
};
use saga_core::{EngineError, ExecutionId, ExecutionStatus, SagaEngine, SagaReport, diagram};
use serde::Serialize;

/// An error of the CLI: each says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The arguments did not parse; the text says why, with the usage.
    #[error("{0}")]
    Usage(String),
    /// Not an error: `--help` or `--version` was asked for; the text is
    /// the answer.
    #[error("{0}")]
    Help(String),
    /// No `--store` was given to the standalone tool.
    #[error(
        "no store given; pass `--store <path>` with the SQLite file your service writes (e.g. `--store sagas.db`)"
    )]
    NoStore,
    /// `--store` was given to a binary that embeds the CLI.
    #[error("this binary works on its own store; drop `--store`")]
    StoreEmbedded,
    /// The SQLite file does not exist.
    #[error(
        "`{}` does not exist; the saga CLI never creates a store: give the path of the database your service writes",
        .0.display()
    )]
    Missing(PathBuf),
    /// The path is a directory.
    #[error("`{}` is a directory; give the path of the SQLite file in it", .0.display())]
    Directory(PathBuf),
    /// A URL of a database this build does not support.
    #[error("`{0}` is not a store this build supports; give an SQLite file path")]
    UnsupportedUrl(String),
    /// A PostgreSQL URL to a build without PostgreSQL support.
    #[error(
        "this build of `saga` has no PostgreSQL support; rebuild it with `--features postgres`, or give an SQLite file path"
    )]
    NoPostgres,
    /// The store failed (including a file that is not a saga store).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine refused or failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// No execution with that id.
    #[error("no execution `{0}` in the store; `saga list` shows them")]
    NoExecution(String),
    /// No definition matches a name or fingerprint.
    #[error(
        "no definition `{0}` in the store: give a saga's name (one with an execution in the store) or a definition's fingerprint (`saga show <id>` prints it)"
    )]
    NoDefinition(String),
    /// A command that changes an execution, without `--yes`.
    #[error("{0}; run it again with `--yes` to do it")]
    NeedsYes(String),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// Inspect and mend durable saga executions.
#[derive(Debug, Parser)]
#[command(name = "saga", version, about, long_about = None)]
struct Cli {
    /// The store: an SQLite file path (never created by this tool) or a
    /// `postgres://user@host:port/database` URL.
    #[arg(long, global = true, value_name = "PATH|URL")]
    store: Option<String>,
    /// The PostgreSQL schema holding the saga tables (default `saga`, as
    /// `PostgresStore` uses).
    #[arg(long, global = true, value_name = "NAME", default_value = "saga")]
    pg_schema: String,
    /// Print JSON instead of text, for scripts.
    #[arg(long, global = true)]
    json: bool,
    /// Skip SQLite's `quick_check` on open (it reads the whole file; for
    /// very large stores you trust).
    #[arg(long, global = true)]
    no_integrity_check: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List executions, oldest first.
    List {
        /// Only executions with this status (running, compensating,
        /// completed, compensated, cancelled, stuck, abandoned).
        #[arg(long, value_parser = parse_status)]
        status: Option<ExecutionStatus>,
        /// Only executions of this saga.
        #[arg(long)]
        saga: Option<String>,
    },
    /// Show one execution: its steps and its log as a timeline.
    Show {
        /// The execution's id.
        id: String,
    },
    /// Print a definition as a diagram, from the shape the store keeps.
    Diagram {
        /// A saga's name (its newest definition in the store) or a
        /// definition's fingerprint.
        saga: String,
        /// Graphviz DOT instead of Mermaid.
        #[arg(long)]
        dot: bool,
    },
    /// Resume a stuck execution once its cause is fixed.
    Resume {
        /// The execution's id.
        id: String,
        /// Do it (without, the command says what it would do).
        #[arg(long)]
        yes: bool,
    },
    /// Give an execution up for good: marked abandoned, nothing compensated.
    Abandon {
        /// The execution's id.
        id: String,
        /// Do it (without, the command says what it would do).
        #[arg(long)]
        yes: bool,
    },
    /// Cancel a running execution: before its pivot it rolls back.
    Cancel {
        /// The execution's id.
        id: String,
        /// Do it (without, the command says what it would do).
        #[arg(long)]
        yes: bool,
    },
}

fn parse_status(text: &str) -> Result<ExecutionStatus, String> {
    ExecutionStatus::from_label(text).ok_or_else(|| {
        let labels: Vec<&str> = ExecutionStatus::ALL.iter().map(|s| s.label()).collect();
        format!("expected one of: {}", labels.join(", "))
    })
}

/// Where the commands run: the standalone tool (no user code) or a user's
/// binary (its sagas registered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Tool,
    Embedded,
}

/// The CLI embedded in your binary: parses the process's arguments, runs
/// the command on `engine` (whose store and registered sagas it uses),
/// prints to stdout (errors to stderr) and returns the exit code: 0 done,
/// 1 refused or failed, 2 bad arguments. `resume` runs the execution in
/// this process and waits for it.
pub async fn main(engine: SagaEngine) -> ExitCode {
    finish(run(&engine, std::env::args_os()).await)
}

/// The `saga` binary: opens the store given by `--store` and runs the
/// command. Exit codes as [`main`].
pub async fn tool_main() -> ExitCode {
    finish(run_tool(std::env::args_os()).await)
}

fn finish(result: Result<String, CliError>) -> ExitCode {
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(CliError::Help(text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(CliError::Usage(text)) => {
            eprint!("{text}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one command (`args` as a process gets them, the program name
/// first) on `engine`, as [`main`] does, and returns its output.
///
/// # Errors
/// A [`CliError`] saying what went wrong and what to do.
pub async fn run<I, T>(engine: &SagaEngine, args: I) -> Result<String, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = parse(args)?;
    if cli.store.is_some() {
        return Err(CliError::StoreEmbedded);
    }
    execute(engine, &cli, Mode::Embedded).await
}

/// Runs one command as the standalone `saga` tool does: the store comes
/// from `--store`.
///
/// # Errors
/// A [`CliError`] saying what went wrong and what to do.
pub async fn run_tool<I, T>(args: I) -> Result<String, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = parse(args)?;
    let spec = cli.store.as_deref().ok_or(CliError::NoStore)?;
    let store = open_store(spec, !cli.no_integrity_check, &cli.pg_schema).await?;
    let engine = SagaEngine::with_store(store);
    execute(&engine, &cli, Mode::Tool).await
}

fn parse<I, T>(args: I) -> Result<Cli, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    Cli::try_parse_from(args).map_err(|e| match e.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
            CliError::Help(e.render().to_string())
        }
        _ => CliError::Usage(e.render().to_string()),
    })
}

/// Opens the store named on the command line, never creating one: an
/// SQLite file (`integrity_check` runs SQLite's `quick_check` first) or,
/// in a build with the `postgres` feature, a PostgreSQL URL whose saga
/// tables are in `pg_schema`.
///
/// # Errors
/// [`CliError::Missing`] for a file that does not exist, and the store's
/// own errors for a file that is not a saga store or a server that cannot
/// be reached.
pub async fn open_store(
    spec: &str,
    integrity_check: bool,
    pg_schema: &str,
) -> Result<Arc<dyn SagaStore>, CliError> {
    if let Some((scheme, _)) = spec.split_once("://") {
        return match scheme {
            "postgres" | "postgresql" => open_postgres(spec, pg_schema).await,
            _ => Err(CliError::UnsupportedUrl(spec.to_owned())),
        };
    }
    let path = Path::new(spec);
    if path.is_dir() {
        return Err(CliError::Directory(path.to_owned()));
    }
    if !path.exists() {
        return Err(CliError::Missing(path.to_owned()));
    }
    let options = SqliteOptions::new().with_integrity_check(integrity_check);
    Ok(Arc::new(SqliteStore::open_with(path, options)?))
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str, schema: &str) -> Result<Arc<dyn SagaStore>, CliError> {
    use saga_core::store::{PostgresOptions, PostgresStore};
    let options = PostgresOptions::new().with_schema(schema);
    Ok(Arc::new(PostgresStore::connect_with(url, options).await?))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_url: &str, _schema: &str) -> Result<Arc<dyn SagaStore>, CliError> {
    Err(CliError::NoPostgres)
}

async fn execute(engine: &SagaEngine, cli: &Cli, mode: Mode) -> Result<String, CliError> {
    match &cli.command {
        Command::List { status, saga } => list(engine, *status, saga.as_deref(), cli.json).await,
        Command::Show { id } => show(engine, id, cli.json).await,
        Command::Diagram { saga, dot } => diagram_of(engine, saga, *dot, cli.json).await,
        Command::Resume { id, yes } => resume(engine, id, *yes, cli.json, mode).await,
        Command::Abandon { id, yes } => abandon(engine, id, *yes, cli.json).await,
        Command::Cancel { id, yes } => cancel(engine, id, *yes, cli.json).await,
    }
}

/// An execution, as `--json` prints it.
#[derive(Serialize)]
struct ExecutionJson<'a> {
    id: &'a str,
    saga: &'a str,
    fingerprint: &'a str,
    status: &'a str,
    created_at_ms: i64,
    updated_at_ms: i64,
    owner: Option<&'a str>,
    lease_expires_at_ms: Option<i64>,
    cancel_requested: bool,
    resume_requested: bool,
}

fn execution_json<'a>(record: &'a ExecutionRecord, resume_requested: bool) -> ExecutionJson<'a> {
    ExecutionJson {
        id: record.id.as_str(),
        saga: &record.saga,
        fingerprint: &record.fingerprint,
        status: record.status.label(),
        created_at_ms: record.created_at_ms,
        updated_at_ms: record.updated_at_ms,
        owner: record.owner.as_deref(),
        lease_expires_at_ms: record.lease_expires_at_ms,
        cancel_requested: record.cancel_requested,
        resume_requested,
    }
}

fn to_json(value: &impl Serialize) -> String {
    // Serializing strings, numbers and booleans cannot fail.
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// Cuts `text` to `width` characters, ending in `…` when cut.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

async fn list(
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
            fit(r.id.as_str(), 32),
            fit(&r.saga, 13),
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

async fn record(engine: &SagaEngine, id: &str) -> Result<(ExecutionRecord, Vec<Event>), CliError> {
    let view = engine
        .get(&ExecutionId::from(id))
        .await?
        .ok_or_else(|| CliError::NoExecution(id.to_owned()))?;
    Ok((view.record, view.events))
}

fn seconds(ms: Option<i64>) -> String {
    ms.map_or_else(
        || "-".to_owned(),
        |ms| format!("{:.3}s", ms as f64 / 1000.0),
    )
}

#[derive(Serialize)]
struct StepJson<'a> {
    name: &'a str,
    kind: &'a str,
    status: &'a str,
    outcome: &'a str,
    attempts: u32,
    compensation_attempts: u32,
    duration_ms: Option<i64>,
    compensation_duration_ms: Option<i64>,
    last_error: Option<&'a str>,
}

#[derive(Serialize)]
struct EventJson<'a> {
    seq: u64,
    kind: &'a str,
    step: Option<&'a str>,
    attempt: u32,
    at_ms: i64,
    error: Option<&'a str>,
    outcome_unknown: bool,
    will_retry: bool,
}

#[derive(Serialize)]
struct ShowJson<'a> {
    execution: ExecutionJson<'a>,
    steps: Vec<StepJson<'a>>,
    events: Vec<EventJson<'a>>,
}

fn resume_pending(events: &[Event]) -> bool {
    events.last().map(|e| e.kind) == Some(EventKind::ResumeRequested)
}

async fn show(engine: &SagaEngine, id: &str, json: bool) -> Result<String, CliError> {
    let (record, events) = record(engine, id).await?;
    let report: SagaReport = engine.report(&record.id).await?;
    let times = logged_durations(report.steps.len(), &events);
    let step_name = |e: &Event| {
        e.step
            .and_then(|s| report.steps.get(s as usize))
            .map(|s| &*s.name)
    };
    if json {
        let doc = ShowJson {
            execution: execution_json(&record, resume_pending(&events)),
            steps: report
                .steps
                .iter()
                .zip(&times)
                .map(|(s, (action, undo))| StepJson {
                    name: &s.name,
                    kind: s.kind.label(),
                    status: s.status.label(),
                    outcome: s.outcome.label(),
                    attempts: s.attempts,
                    compensation_attempts: s.compensation_attempts,
                    duration_ms: *action,
                    compensation_duration_ms: *undo,
                    last_error: s.last_error.as_deref(),
                })
                .collect(),
            events: events
                .iter()
                .map(|e| EventJson {
                    seq: e.seq,
                    kind: e.kind.label(),
                    step: step_name(e),
                    attempt: e.attempt,
                    at_ms: e.at_ms,
                    error: e.error.as_deref(),
                    outcome_unknown: e.outcome_unknown,
                    will_retry: e.will_retry,
                })
                .collect(),
        };
        return Ok(to_json(&doc));
    }
    let mut out = String::new();
    let _ = writeln!(out, "execution  {}", record.id);
    let _ = writeln!(out, "saga       {}", record.saga);
    let _ = writeln!(out, "definition {}", record.fingerprint);
    let _ = writeln!(out, "status     {}", record.status);
    let _ = writeln!(out, "created    {}", utc(record.created_at_ms, true));
    let _ = writeln!(out, "updated    {}", utc(record.updated_at_ms, true));
    match (&record.owner, record.lease_expires_at_ms) {
        (Some(owner), Some(until)) => {
            let _ = writeln!(out, "lease      {owner}, until {}", utc(until, true));
        }
        _ => {
            let _ = writeln!(out, "lease      free");
        }
    }
    if record.cancel_requested {
        let _ = writeln!(out, "requested  cancel");
    }
    if resume_pending(&events) {
        let _ = writeln!(
            out,
            "requested  resume (a worker with this definition carries it out at its next `recover()`)"
        );
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "{:<20}  {:<11}  {:<19}  {:>5}  {:>5}  {:>9}",
        "STEP", "KIND", "STATUS", "TRIES", "UNDOS", "TIME"
    );
    for (s, (action, _)) in report.steps.iter().zip(&times) {
        let _ = writeln!(
            out,
            "{:<20}  {:<11}  {:<19}  {:>5}  {:>5}  {:>9}",
            fit(&s.name, 20),
            s.kind.label(),
            s.status.label(),
            s.attempts,
            s.compensation_attempts,
            seconds(*action)
        );
    }
    for s in report.steps.iter().filter(|s| s.last_error.is_some()) {
        let _ = writeln!(
            out,
            "error of `{}`: {}",
            s.name,
            s.last_error.as_deref().unwrap_or_default()
        );
    }
    out.push('\n');
    let _ = writeln!(out, "TIMELINE (seconds since the start)");
    for e in &events {
        let offset = (e.at_ms - record.created_at_ms) as f64 / 1000.0;
        let mut line = format!("{offset:>9.3}  {:<22}", e.kind.label());
        if let Some(step) = step_name(e) {
            let _ = write!(line, "  {step}");
        }
        if e.attempt > 0 {
            let _ = write!(line, " #{}", e.attempt);
        }
        if let Some(error) = &e.error {
            let _ = write!(line, ": {error}");
        }
        if e.outcome_unknown {
            line.push_str(" (outcome unknown)");
        }
        if e.will_retry {
            line.push_str(" (will retry)");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    Ok(out)
}

fn is_fingerprint(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[derive(Serialize)]
struct DiagramJson<'a> {
    saga: &'a str,
    fingerprint: &'a str,
    format: &'a str,
    diagram: &'a str,
}

async fn diagram_of(
    engine: &SagaEngine,
    wanted: &str,
    dot: bool,
    json: bool,
) -> Result<String, CliError> {
    let store = engine.store();
    let fingerprint = if is_fingerprint(wanted) {
        wanted.to_owned()
    } else {
        // The newest execution of that saga names its newest definition.
        engine
            .list(None)
            .await?
            .into_iter()
            .rev()
            .find(|r| r.saga == wanted)
            .map(|r| r.fingerprint)
            .ok_or_else(|| CliError::NoDefinition(wanted.to_owned()))?
    };
    let definition = store
        .definition(&fingerprint)
        .await?
        .ok_or_else(|| CliError::NoDefinition(wanted.to_owned()))?;
    let steps = definition.steps()?;
    let text = if dot {
        diagram::dot(&definition.saga, &steps)
    } else {
        diagram::mermaid(&definition.saga, &steps)
    };
    if json {
        return Ok(to_json(&DiagramJson {
            saga: &definition.saga,
            fingerprint: &definition.fingerprint,
            format: if dot { "dot" } else { "mermaid" },
            diagram: &text,
        }));
    }
    let mut text = text;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

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
        text + "\n"
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

async fn resume(
    engine: &SagaEngine,
    id: &str,
    yes: bool,
    json: bool,
    mode: Mode,
) -> Result<String, CliError> {
    let (record, _) = record(engine, id).await?;
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
                "resume of `{id}` requested: a worker with saga `{}` (definition {}) registered carries it out at its next `recover()`; `saga show {id}` follows it",
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
            let report = engine.wait(&record.id).await?;
            let text = format!("resumed `{id}`: it ended {}", report.status);
            Ok(command_out(json, id, "resume", "done", report.status, text))
        }
    }
}

async fn abandon(engine: &SagaEngine, id: &str, yes: bool, json: bool) -> Result<String, CliError> {
    let (record, _) = record(engine, id).await?;
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

async fn cancel(engine: &SagaEngine, id: &str, yes: bool, json: bool) -> Result<String, CliError> {
    let (record, _) = record(engine, id).await?;
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
        "cancel of `{id}` requested: its owner sees it at its next log write (or a worker at its next `recover()`)"
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

/// `ms` since the Unix epoch as `YYYY-MM-DD HH:MM` (UTC), with seconds and
/// milliseconds when `precise`.
fn utc(ms: i64, precise: bool) -> String {
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000,
    );
    if precise {
        format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}.{milli:03} UTC")
    } else {
        format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0, true), "1970-01-01 00:00:00.000 UTC");
        // 2024-02-29 23:59:59.999, a leap day.
        assert_eq!(utc(1_709_251_199_999, true), "2024-02-29 23:59:59.999 UTC");
        assert_eq!(utc(1_764_159_720_000, false), "2025-11-26 12:22");
    }

    #[test]
    fn fit_cuts_with_an_ellipsis() {
        assert_eq!(fit("order", 13), "order");
        assert_eq!(fit("a-very-long-saga-name", 13), "a-very-long-…");
        assert_eq!(fit("a-very-long-…", 13).chars().count(), 13);
    }
}
