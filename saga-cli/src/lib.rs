//! # saga-cli: inspect and mend durable saga executions
//!
//! The `saga` command works on the store your service writes: an SQLite
//! file, or a PostgreSQL URL in a build with the `postgres` feature:
//!
//! ```text
//! saga --store sagas.db list [--status stuck]     # a table of executions
//! saga --store sagas.db show <id>                 # one execution as a timeline
//! saga --store sagas.db diagram <saga|fingerprint> [--dot]
//! saga --store sagas.db resume  <id> --yes        # a stuck execution: try again
//! saga --store sagas.db abandon <id> --yes        # give it up, compensate nothing
//! saga --store sagas.db cancel  <id> --yes        # roll it back (before the pivot)
//! saga --store sagas.db watch [<id>]               # follow one execution, or the store
//! ```
//!
//! Every command takes `--json` for scripts. The tool holds none of your
//! code, so it cannot run a step: `resume` and `cancel` write a durable
//! request that your workers (the processes whose
//! [`SagaEngine`] has the saga registered) carry out — a resume at a
//! [`Worker`](saga_core::Worker)'s next poll (5 s by default), a cancel at
//! the owner's next log write. `abandon` needs no code and is done at once.
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

mod args;
mod commands;
mod diagram;
mod list;
mod open;
mod output;
mod show;
mod watch;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use saga_core::escape::user_text;
use saga_core::store::{Event, ExecutionRecord, StoreError};
use saga_core::{EngineError, ExecutionId, SagaEngine};

use args::{Cli, Command, Mode, parse};
pub use open::{open_store, open_store_read_only};
use output::Style;

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
    /// No `--store` was given to the standalone tool, and `SAGA_STORE` is
    /// not set.
    #[error(
        "no store given; pass `--store <path>` or set `SAGA_STORE` to the SQLite file your service writes (e.g. `--store sagas.db`) or its PostgreSQL URL"
    )]
    NoStore,
    /// `--store` was given empty (`--store "$STORE"` with the variable
    /// unset).
    #[error(
        "`--store` is empty (an unset shell variable?); give the SQLite file your service writes or its PostgreSQL URL"
    )]
    EmptyStore,
    /// `--store` was given to a binary that embeds the CLI.
    #[error("this binary works on its own store; drop `--store`")]
    StoreEmbedded,
    /// The SQLite file does not exist.
    #[error(
        "`{}` does not exist; the saga CLI never creates a store: give the path of the database your service writes",
        .0.display()
    )]
    Missing(PathBuf),
    /// The PostgreSQL schema holds no saga store (it does not exist, or has
    /// no tables): a misspelt `--pg-schema`, or a URL to another database.
    /// Nothing was created.
    #[error(
        "{store} holds no saga store ({detail}); the saga CLI never creates one: check `--pg-schema` (now `{schema}`, default `saga`) and the database of the URL"
    )]
    NoPgStore {
        /// The store, as it names itself.
        store: String,
        /// What was found instead.
        detail: String,
        /// The schema asked for.
        schema: String,
    },
    /// The path is a directory.
    #[error("`{}` is a directory; give the path of the SQLite file in it", .0.display())]
    Directory(PathBuf),
    /// A URL of a database this build does not support (its password, if
    /// any, masked).
    #[error(
        "`{0}` is not a store this build supports; give an SQLite file path or a `postgres://` URL"
    )]
    UnsupportedUrl(String),
    /// A PostgreSQL URL or connection string (its password masked) to a
    /// build without PostgreSQL support.
    #[error(
        "`{0}` is a PostgreSQL store, and this build of `saga` has no PostgreSQL support; rebuild it with `--features postgres`, or give an SQLite file path"
    )]
    NoPostgres(String),
    /// The store failed (including a file that is not a saga store).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine refused or failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// No execution with that id.
    #[error("no execution `{id}` in {store}; `saga list` shows them")]
    NoExecution {
        /// The id asked for.
        id: String,
        /// The store, as it names itself (for SQLite: its file).
        store: String,
    },
    /// No definition matches a name or fingerprint.
    #[error(
        "no definition `{wanted}` in {store}: give a saga's name (one with an execution in the store) or a definition's fingerprint (`saga show <id>` prints it)"
    )]
    NoDefinition {
        /// The name or fingerprint asked for.
        wanted: String,
        /// The store, as it names itself (for SQLite: its file).
        store: String,
    },
    /// A command that changes an execution, without `--yes`: a dry run,
    /// not a failure. The text says what the command would do; nothing
    /// was changed. The binaries print it as a plain notice on stderr
    /// (no `error:`), and exit with code 1 (nothing was done).
    #[error("{0}; run it again with `--yes` to do it")]
    NeedsYes(String),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// The CLI embedded in your binary: parses the process's arguments, runs
/// the command on `engine` (whose store and registered sagas it uses),
/// prints to stdout (errors, hints and dry runs to stderr) and returns
/// the exit code: 0 done, 1 refused, failed, or a dry run (`resume`,
/// `abandon` or `cancel` without `--yes`: nothing was done), 2 bad
/// arguments. `resume` runs the execution in this process and waits for
/// it. Statuses are coloured when stdout is a terminal and `NO_COLOR` is
/// not set.
pub async fn main(engine: SagaEngine) -> ExitCode {
    let mut stdout = std::io::stdout();
    let mut notes = Vec::new();
    let result = run_embedded(
        &engine,
        std::env::args_os(),
        Style::for_stdout(),
        &mut stdout,
        &mut notes,
    )
    .await;
    finish(result, &notes)
}

/// The `saga` binary: opens the store given by `--store` (or
/// `SAGA_STORE`) and runs the command. Exit codes and colour as [`main`].
pub async fn tool_main() -> ExitCode {
    let mut stdout = std::io::stdout();
    let mut notes = Vec::new();
    let result = run_standalone(
        std::env::args_os(),
        Style::for_stdout(),
        &mut stdout,
        &mut notes,
    )
    .await;
    finish(result, &notes)
}

/// Prints the command's output (and its `notes`, hints for the operator,
/// on stderr) or its error, and says the exit code. A reader that stopped
/// reading (`saga list | head`) ends the output quietly, with the
/// command's own code: not a failure of the command, nor a panic. Any
/// other failure to write the output (a full disk) is an error, code 1.
fn finish(result: Result<String, CliError>, notes: &[String]) -> ExitCode {
    let code = match result {
        Ok(out) => match print_out(&out) {
            Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
                print_err(&format!("error: {}\n", CliError::Output(error)));
                ExitCode::FAILURE
            }
            _ => ExitCode::SUCCESS,
        },
        // A dry run: what the command would do, not an error.
        Err(error @ CliError::NeedsYes(_)) => {
            print_err(&format!("{}\n", user_text(&error.to_string())));
            ExitCode::FAILURE
        }
        Err(CliError::Help(text)) => {
            let _ = print_out(&text);
            ExitCode::SUCCESS
        }
        Err(CliError::Usage(text)) => {
            print_err(&text);
            ExitCode::from(2)
        }
        // Bad arguments too: no store named, or one named where the
        // binary has its own.
        Err(error @ (CliError::NoStore | CliError::EmptyStore | CliError::StoreEmbedded)) => {
            print_err(&format!("error: {error}\n"));
            ExitCode::from(2)
        }
        // `watch` writes as it goes: its reader went away.
        Err(CliError::Output(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(error) => {
            print_err(&format!("error: {}\n", user_text(&chain(&error))));
            ExitCode::FAILURE
        }
    };
    for note in notes {
        print_err(&format!("{}\n", user_text(note)));
    }
    code
}

/// `text` on stdout (where `print!` would panic on a closed pipe).
fn print_out(text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

/// `text` on stderr; nowhere else to tell a failure to write it.
fn print_err(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// `error`'s message followed by each of its causes, `: `-separated
/// ("... listing executions failed: <why>: <why>"); a cause whose text
/// the message already holds is not repeated.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let why = cause.to_string();
        if !why.is_empty() && !text.contains(&why) {
            text.push_str(": ");
            text.push_str(&why);
        }
        source = cause.source();
    }
    text
}

/// Runs one command (`args` as a process gets them, the program name
/// first) on `engine`, as [`main`] does, and returns its output (without
/// colour; `watch` returns what it printed once the execution ends). The
/// hints [`main`] prints on stderr (a `list --saga` naming no saga of the
/// store) are not part of it.
///
/// # Errors
/// A [`CliError`] saying what went wrong and what to do.
pub async fn run<I, T>(engine: &SagaEngine, args: I) -> Result<String, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut streamed = Vec::new();
    let text = run_embedded(
        engine,
        args,
        Style::default(),
        &mut streamed,
        &mut Vec::new(),
    )
    .await?;
    Ok(String::from_utf8_lossy(&streamed).into_owned() + &text)
}

/// Runs one command as the standalone `saga` tool does: the store comes
/// from `--store`, else from the environment variable `SAGA_STORE`. Its
/// output as [`run`]'s.
///
/// # Errors
/// A [`CliError`] saying what went wrong and what to do.
pub async fn run_tool<I, T>(args: I) -> Result<String, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut streamed = Vec::new();
    let text = run_standalone(args, Style::default(), &mut streamed, &mut Vec::new()).await?;
    Ok(String::from_utf8_lossy(&streamed).into_owned() + &text)
}

async fn run_embedded<I, T>(
    engine: &SagaEngine,
    args: I,
    style: Style,
    stream: &mut dyn Write,
    notes: &mut Vec<String>,
) -> Result<String, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = parse(args)?;
    if cli.store.is_some() {
        return Err(CliError::StoreEmbedded);
    }
    execute(engine, &cli, Mode::Embedded, style, stream, notes).await
}

async fn run_standalone<I, T>(
    args: I,
    style: Style,
    stream: &mut dyn Write,
    notes: &mut Vec<String>,
) -> Result<String, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = parse(args)?;
    if cli.store.as_deref() == Some("") {
        return Err(CliError::EmptyStore);
    }
    let from_env = std::env::var("SAGA_STORE").ok().filter(|s| !s.is_empty());
    let spec = cli
        .store
        .as_deref()
        .or(from_env.as_deref())
        .ok_or(CliError::NoStore)?;
    let store = if cli.command.writes() {
        open_store(spec, !cli.no_integrity_check, &cli.pg_schema).await?
    } else {
        open_store_read_only(spec, &cli.pg_schema).await?
    };
    let engine = SagaEngine::with_store(store);
    execute(&engine, &cli, Mode::Tool, style, stream, notes).await
}

/// Runs the parsed command. Commands return their whole output; `watch`
/// writes to `stream` as events arrive; hints for the operator go to
/// `notes`.
async fn execute(
    engine: &SagaEngine,
    cli: &Cli,
    mode: Mode,
    style: Style,
    stream: &mut dyn Write,
    notes: &mut Vec<String>,
) -> Result<String, CliError> {
    match &cli.command {
        Command::List {
            status,
            saga,
            since,
            limit,
            after,
        } => {
            let filter = list::Filter {
                status: *status,
                saga: saga.as_deref(),
                since: *since,
                limit: *limit,
                after: after.as_ref(),
            };
            list::list(engine, &filter, cli.json, style, notes).await
        }
        Command::Show { id, context } => show::show(engine, id, cli.json, *context, style).await,
        Command::Diagram { saga, dot } => diagram::diagram_of(engine, saga, *dot, cli.json).await,
        Command::Watch { id, interval } => {
            let every = std::time::Duration::from_millis((*interval).max(1));
            match id {
                Some(id) => watch::execution(engine, id, every, cli.json, style, stream).await,
                None => watch::store(engine, every, cli.json, style, stream).await,
            }
        }
        Command::Resume { id, yes } => commands::resume(engine, id, *yes, cli.json, mode).await,
        Command::Abandon { id, yes } => commands::abandon(engine, id, *yes, cli.json).await,
        Command::Cancel { id, yes } => commands::cancel(engine, id, *yes, cli.json).await,
    }
}

/// The execution `id` and its log without the contexts (read alone, with
/// `latest_context`, where one is shown), or [`CliError::NoExecution`].
async fn record(engine: &SagaEngine, id: &str) -> Result<(ExecutionRecord, Vec<Event>), CliError> {
    let record = execution_record(engine, id).await?;
    let events = engine.store().events_without_contexts(&record.id).await?;
    Ok((record, events))
}

/// The execution `id`'s record, or [`CliError::NoExecution`].
async fn execution_record(engine: &SagaEngine, id: &str) -> Result<ExecutionRecord, CliError> {
    engine
        .store()
        .get(&ExecutionId::from(id))
        .await?
        .ok_or_else(|| CliError::NoExecution {
            id: id.to_owned(),
            store: engine.store().describe(),
        })
}
