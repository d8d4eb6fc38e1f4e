//! Arguments: the command line the `saga` tool and embedding binaries parse.

use std::ffi::OsString;

use clap::{Parser, Subcommand};
use saga_core::ExecutionStatus;
use saga_core::store::ListCursor;

use crate::CliError;

/// Inspect and mend durable saga executions.
#[derive(Debug, Parser)]
#[command(
    name = "saga",
    version,
    about,
    long_about = None,
    after_help = "The store comes from `--store`, else from `SAGA_STORE`. Colour: on a terminal, unless `NO_COLOR` is set.\nExit codes: 0 done; 1 refused, failed, or a dry run (`resume`, `abandon`, `cancel` without `--yes`: nothing was done); 2 bad arguments.\nExample: SAGA_STORE=sagas.db saga list --status stuck"
)]
pub(crate) struct Cli {
    /// The store: an SQLite file path (never created by this tool) or a
    /// `postgres://user@host:port/database` URL; without it, `SAGA_STORE`.
    #[arg(long, global = true, value_name = "PATH|URL")]
    pub(crate) store: Option<String>,
    /// The PostgreSQL schema holding the saga tables (default `saga`, as
    /// `PostgresStore` uses); never created: a schema without a store is an
    /// error.
    #[arg(long, global = true, value_name = "NAME", default_value = "saga")]
    pub(crate) pg_schema: String,
    /// Print JSON instead of text, for scripts.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Skip SQLite's `quick_check` on open (it reads the whole file; for
    /// very large stores you trust).
    #[arg(long, global = true)]
    pub(crate) no_integrity_check: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List executions, oldest first.
    #[command(
        after_help = "Example: saga --store sagas.db list --status stuck --since 1d --limit 20"
    )]
    List {
        /// Only executions with this status (running, compensating,
        /// completed, compensated, cancelled, stuck, abandoned).
        #[arg(long, value_parser = parse_status)]
        status: Option<ExecutionStatus>,
        /// Only executions of this saga (a name no execution has gets a
        /// hint on stderr; the exit code stays 0).
        #[arg(long)]
        saga: Option<String>,
        /// Only executions created since then: a time ago (`90s`, `15m`,
        /// `2h`, `7d`) or a UTC date (`2026-12-01`, `2026-12-01 09:30`).
        #[arg(long, value_name = "WHEN", value_parser = parse_since)]
        since: Option<Since>,
        /// At most N executions (the oldest N that match).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Only executions after this cursor: the next page of a listing
        /// cut by `--limit`, which prints the cursor to give.
        #[arg(long, value_name = "CURSOR")]
        after: Option<ListCursor>,
    },
    /// Show one execution: its steps and its log as a timeline.
    #[command(
        after_help = "Example: saga --store sagas.db show 0193a5f2-7c1e-7d40-9a6b-3f2e1d0c9b8a"
    )]
    Show {
        /// The execution's id.
        id: String,
        /// Also print its context and its steps' outputs (escaped). They
        /// can hold personal data: without this flag only their sizes are
        /// shown, and `--json` has them as `null`.
        #[arg(long)]
        context: bool,
    },
    /// Print a definition as a diagram, from the shape the store keeps.
    #[command(
        after_help = "Example: saga --store sagas.db diagram order --dot | dot -Tsvg > order.svg"
    )]
    Diagram {
        /// A saga's name (its newest definition in the store) or a
        /// definition's fingerprint (or its first 8 or more hex digits).
        saga: String,
        /// Graphviz DOT instead of Mermaid.
        #[arg(long)]
        dot: bool,
    },
    /// Follow one execution until it ends, or (without an id) the store.
    #[command(
        after_help = "Example: saga --store sagas.db watch 0193a5f2-7c1e-7d40-9a6b-3f2e1d0c9b8a"
    )]
    Watch {
        /// The execution's id; without, every execution that appears or
        /// changes status is printed until Ctrl-C. With `--json`: one JSON document a line.
        id: Option<String>,
        /// How often to look at the store, in milliseconds. A PostgreSQL
        /// store also says when an execution starts, changes status or
        /// ends, and those show at once. While the store cannot be
        /// reached, the watch says so once and looks again at this pace.
        #[arg(long, value_name = "MS", default_value_t = 500)]
        interval: u64,
    },
    /// Resume a stuck execution once its cause is fixed.
    #[command(
        after_help = "Example: saga --store sagas.db resume 0193a5f2-7c1e-7d40-9a6b-3f2e1d0c9b8a --yes"
    )]
    Resume {
        /// The execution's id.
        id: String,
        /// Do it. Without, a dry run: the command says what it would do,
        /// changes nothing and exits with code 1.
        #[arg(long)]
        yes: bool,
    },
    /// Give an execution up for good: marked abandoned, nothing compensated.
    #[command(
        after_help = "Example: saga --store sagas.db abandon 0193a5f2-7c1e-7d40-9a6b-3f2e1d0c9b8a --yes"
    )]
    Abandon {
        /// The execution's id.
        id: String,
        /// Do it. Without, a dry run: the command says what it would do,
        /// changes nothing and exits with code 1.
        #[arg(long)]
        yes: bool,
    },
    /// Cancel a running execution: before its pivot it rolls back.
    #[command(
        after_help = "Example: saga --store sagas.db cancel 0193a5f2-7c1e-7d40-9a6b-3f2e1d0c9b8a --yes"
    )]
    Cancel {
        /// The execution's id.
        id: String,
        /// Do it. Without, a dry run: the command says what it would do,
        /// changes nothing and exits with code 1.
        #[arg(long)]
        yes: bool,
    },
}

impl Command {
    /// Whether the command writes to the store (an operator command with
    /// `--yes`); the others, and a dry run, open it read-only.
    pub(crate) fn writes(&self) -> bool {
        match self {
            Command::Resume { yes, .. }
            | Command::Abandon { yes, .. }
            | Command::Cancel { yes, .. } => *yes,
            Command::List { .. }
            | Command::Show { .. }
            | Command::Diagram { .. }
            | Command::Watch { .. } => false,
        }
    }
}

/// A `--since` bound: a time ago or an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Since {
    /// So many milliseconds before now.
    Ago(i64),
    /// Milliseconds since the Unix epoch.
    At(i64),
}

impl Since {
    /// The bound in milliseconds since the Unix epoch, `now_ms` being now.
    pub(crate) fn at_ms(self, now_ms: i64) -> i64 {
        match self {
            Since::Ago(ms) => now_ms.saturating_sub(ms),
            Since::At(ms) => ms,
        }
    }
}

pub(crate) fn parse_since(text: &str) -> Result<Since, String> {
    let text = text.trim();
    let unit = |u: char| match u {
        's' => Some(1_000),
        'm' => Some(60_000),
        'h' => Some(3_600_000),
        'd' => Some(86_400_000),
        _ => None,
    };
    let ago = text.chars().last().and_then(unit).and_then(|scale| {
        let n = text[..text.len() - 1].parse::<i64>().ok()?;
        Some(n.saturating_mul(scale))
    });
    if let Some(ms) = ago {
        return Ok(Since::Ago(ms));
    }
    crate::output::parse_utc(text).map(Since::At).ok_or_else(|| {
        "give a time ago (`90s`, `15m`, `2h`, `7d`) or a UTC date (`2026-12-01`, `2026-12-01 09:30`)"
            .to_owned()
    })
}

pub(crate) fn parse_status(text: &str) -> Result<ExecutionStatus, String> {
    ExecutionStatus::from_label(text).ok_or_else(|| {
        let labels: Vec<&str> = ExecutionStatus::ALL.iter().map(|s| s.label()).collect();
        format!("expected one of: {}", labels.join(", "))
    })
}

/// Where the commands run: the standalone tool (no user code) or a user's
/// binary (its sagas registered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The standalone `saga` tool: no user code.
    Tool,
    /// A user's binary, its sagas registered.
    Embedded,
}

pub(crate) fn parse<I, T>(args: I) -> Result<Cli, CliError>
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
