//! [`PostgresStore`]: one PostgreSQL database shared by many worker
//! processes.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, NoTls, Row, Statement};

use super::{
    Ack, ClaimRequest, Claimed, Created, DefinitionRecord, Event, EventKind, ExecutionRecord,
    Lease, NewExecution, SagaStore, StoreError, StoreResult, status_from_label, ttl_ms,
};
use crate::id::ExecutionId;
use crate::report::ExecutionStatus;
use crate::step::BoxFuture;

/// `format!` for SQL text known when compiling, as a `&'static str`: the
/// text is leaked once per call site (a handful of statements).
macro_rules! const_format {
    ($($arg:tt)*) => {{
        static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        TEXT.get_or_init(|| format!($($arg)*)).as_str()
    }};
}

/// The migrations, in order: `MIGRATIONS[n]` takes the schema from version
/// `n` to `n + 1`, inside the store's schema (`search_path` is set to it).
///
/// Rolling upgrades: while old and new workers run side by side, a newer
/// worker migrates the schema and the older ones keep working on it. So a
/// migration is *additive only*: new tables, new nullable (or defaulted)
/// columns, new indexes; never a rename, a drop, or a changed meaning. A
/// migration that old code could not live with must raise
/// [`MIN_COMPATIBLE`] to its own version: older workers then refuse the
/// schema with [`StoreError::IncompatibleSchema`] instead of misreading it.
const MIGRATIONS: &[&str] = &[
    // 1: definitions, executions, their logs and leases. Times are
    // milliseconds since the Unix epoch by the database's clock.
    "CREATE TABLE saga_schema (
        singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
        version BIGINT NOT NULL,
        min_compatible BIGINT NOT NULL
    );
    CREATE TABLE definitions (
        fingerprint TEXT PRIMARY KEY,
        saga TEXT NOT NULL,
        shape TEXT NOT NULL,
        registered_at BIGINT NOT NULL
    );
    CREATE TABLE executions (
        id TEXT PRIMARY KEY,
        saga TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        status TEXT NOT NULL,
        context TEXT NOT NULL,
        last_seq BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        cancel_requested BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX executions_by_status ON executions (status, created_at);
    CREATE INDEX executions_unfinished ON executions (created_at, id)
        WHERE status IN ('running', 'compensating');
    CREATE TABLE events (
        execution_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        at BIGINT NOT NULL,
        kind TEXT NOT NULL,
        step BIGINT,
        attempt BIGINT NOT NULL,
        output TEXT,
        context TEXT,
        error TEXT,
        outcome_unknown BOOLEAN NOT NULL,
        will_retry BOOLEAN NOT NULL,
        PRIMARY KEY (execution_id, seq)
    );
    CREATE TABLE leases (
        execution_id TEXT PRIMARY KEY,
        owner TEXT,
        token BIGINT NOT NULL,
        expires_at BIGINT
    );",
];

/// The newest schema version this build knows.
const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The oldest schema version a build must understand to work on a schema
/// this build wrote (see [`MIGRATIONS`]).
const MIN_COMPATIBLE: i64 = 1;

/// The channel of the work notifications; the payload is the schema.
const CHANNEL: &str = "saga_work";

/// Now, in milliseconds since the Unix epoch, by the database's clock:
/// every lease expiry is computed and compared on it, so the workers'
/// clocks do not matter.
const NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Options of a [`PostgresStore`].
///
/// ```
/// use saga_core::store::PostgresOptions;
///
/// let options = PostgresOptions::new().with_schema("orders_saga");
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    schema: String,
    max_batch: usize,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            schema: "saga".to_owned(),
            max_batch: 256,
        }
    }
}

impl PostgresOptions {
    /// The defaults: schema `saga`, batches of up to 256 writes.
    pub fn new() -> Self {
        Self::default()
    }

    /// The PostgreSQL schema (namespace) the store's tables live in
    /// (default `saga`); created if missing. Lowercase letters, digits and
    /// `_`, starting with a letter or `_`, at most 63 characters. Stores on
    /// different schemas of one database are independent.
    #[must_use]
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The most writes one transaction groups (at least 1).
    #[must_use]
    pub fn with_max_batch(mut self, writes: usize) -> Self {
        self.max_batch = writes.max(1);
        self
    }
}

/// The store many workers share: one PostgreSQL database (tested on
/// PostgreSQL 15), in a schema of its own.
///
/// **Ownership.** Leases expire by the database's clock (`now` is the
/// server's `clock_timestamp()`), and every write of a log checks the
/// lease's fencing token in the same statement as the write (`UPDATE ...
/// WHERE execution_id = $1 AND token = $2`), so a worker whose lease was
/// taken over (it stalled, or was partitioned away) writes nothing more:
/// it gets [`StoreError::LeaseLost`]. Fencing guards the *log*, not the
/// outside world: a stalled worker that wakes up may still be inside a
/// step and call a remote service once more before its next write is
/// refused. That is why steps pass their
/// [`idempotency_key`](crate::StepInfo::idempotency_key) to the services
/// they call, and why those services must ignore a repeated key.
///
/// **Group commit.** Writes go through one connection, whose task groups
/// the writes that arrive while it commits into one transaction, so
/// concurrent executions share commits. Reads use a second connection.
/// [`claim_next`](SagaStore::claim_next) takes executions with `FOR UPDATE
/// SKIP LOCKED`, so claimers never wait for each other. A third connection
/// `LISTEN`s for new work ([`work_signal`](SagaStore::work_signal)).
///
/// **A server that goes away.** A call made while the server is down (or
/// restarting) fails with [`StoreError::Unavailable`] and writes nothing;
/// the next call connects again. A commit whose answer was lost with the
/// connection fails too, though it may have happened: the engine then
/// stops the run, and whoever takes the execution over reads the log.
///
/// **Bad input.** Connecting checks the schema before writing anything: a
/// schema holding tables of another application gives
/// [`StoreError::ForeignSchema`], one written by a newer, incompatible
/// version gives [`StoreError::IncompatibleSchema`], and both are left as
/// they were. An older schema is migrated (additive migrations only, under
/// an advisory lock, so that old and new workers can run side by side
/// during a rolling upgrade).
///
/// ```no_run
/// use saga_core::store::PostgresStore;
///
/// # async fn demo() -> Result<(), saga_core::store::StoreError> {
/// let store = PostgresStore::connect("postgres://saga@db.internal/orders").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    describe: String,
    config: tokio_postgres::Config,
    schema: String,
    writes: mpsc::UnboundedSender<Job>,
    reads: tokio::sync::Mutex<Option<Arc<Session>>>,
    signal: watch::Sender<u64>,
    stop: Arc<Notify>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The listener's task ends; the writer's ends when the channel
        // closes, right after this.
        self.stop.notify_one();
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("store", &self.inner.describe)
            .finish()
    }
}

/// A connection with its prepared statements.
struct Session {
    client: Client,
    statements: tokio::sync::Mutex<HashMap<&'static str, Statement>>,
}

impl Session {
    async fn statement(&self, sql: &'static str) -> Result<Statement, tokio_postgres::Error> {
        let mut statements = self.statements.lock().await;
        if let Some(statement) = statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        statements.insert(sql, statement.clone());
        Ok(statement)
    }

    async fn query(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.client.query(&statement, params).await
    }

    async fn query_opt(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.client.query_opt(&statement, params).await
    }

    async fn execute(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.client.execute(&statement, params).await
    }
}

/// A write for the writer's task, and where its answer goes.
struct Job {
    op: Op,
    reply: oneshot::Sender<StoreResult<Reply>>,
}

enum Op {
    PutDefinition(DefinitionRecord),
    Create {
        execution: NewExecution,
        owner: String,
        ttl: Duration,
    },
    Claim {
        id: ExecutionId,
        owner: String,
        ttl: Duration,
    },
    ClaimNext(ClaimRequest),
    Append {
        id: ExecutionId,
        lease: Lease,
        events: Vec<Event>,
        status: ExecutionStatus,
    },
    Renew {
        id: ExecutionId,
        lease: Lease,
    },
    Release {
        id: ExecutionId,
        lease: Lease,
    },
    RequestCancel(ExecutionId),
    Purge(i64),
}

impl Op {
    fn what(&self) -> &'static str {
        match self {
            Op::PutDefinition(_) => "recording a definition",
            Op::Create { .. } => "creating an execution",
            Op::Claim { .. } => "claiming an execution",
            Op::ClaimNext(_) => "claiming executions",
            Op::Append { .. } => "appending events",
            Op::Renew { .. } => "renewing a lease",
            Op::Release { .. } => "releasing a lease",
            Op::RequestCancel(_) => "requesting a cancellation",
            Op::Purge(_) => "purging executions",
        }
    }

    /// Whether it may make work claimable (other workers are told).
    fn signals_work(&self) -> bool {
        matches!(self, Op::Create { .. } | Op::Release { .. })
    }
}

enum Reply {
    Done,
    Created(Created),
    Lease(Option<Lease>),
    Claimed(Vec<Claimed>),
    Ack(Ack),
    Changed(bool),
    Count(u64),
}

/// Why an operation failed: the database refused a statement (the
/// transaction is aborted), or the operation found it must not write
/// (nothing was written, the transaction goes on).
enum Failure {
    Sql(tokio_postgres::Error),
    Refused(StoreError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Sql(e)
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (a `postgres://` URL or a
    /// `key=value` string), with the default options; checks and migrates
    /// the schema. Must be called inside a tokio runtime: the store's
    /// connections run on it.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the server cannot be reached,
    /// [`StoreError::ForeignSchema`] or [`StoreError::IncompatibleSchema`]
    /// if the schema cannot be used (it is left as it was), or
    /// [`StoreError::Backend`] for a malformed URL or a failed migration.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with(url, PostgresOptions::new()).await
    }

    /// Connects with `options`.
    ///
    /// # Errors
    /// As [`connect`](Self::connect), and [`StoreError::Backend`] for a
    /// schema name that is not a plain identifier.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> StoreResult<Self> {
        let config = tokio_postgres::Config::from_str(url).map_err(|e| StoreError::Backend {
            store: "the PostgreSQL store".to_owned(),
            what: "reading the connection URL (expected `postgres://user@host:port/database`)"
                .to_owned(),
            source: Box::new(e),
        })?;
        let describe = describe(&config, &options.schema);
        if !valid_schema(&options.schema) {
            return Err(StoreError::Backend {
                store: describe,
                what: format!(
                    "choosing the schema (`{}` is not a plain schema name: use lowercase letters, digits and `_`, starting with a letter or `_`, at most 63 characters)",
                    options.schema
                ),
                source: "invalid schema name".into(),
            });
        }
        let schema = options.schema.clone();
        let session = open_session(&config, &describe, &schema, false).await?;
        check_and_migrate(&session, &describe, &schema).await?;
        let (writes, receiver) = mpsc::unbounded_channel();
        let (signal, _) = watch::channel(0);
        let stop = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            describe,
            config,
            schema,
            writes,
            reads: tokio::sync::Mutex::new(None),
            signal,
            stop: Arc::clone(&stop),
        });
        tokio::spawn(writer_loop(
            Arc::downgrade(&inner),
            Some(session),
            receiver,
            options.max_batch,
        ));
        tokio::spawn(listener_loop(Arc::downgrade(&inner), stop));
        Ok(PostgresStore { inner })
    }

    /// The schema the store's tables live in.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    fn closed(&self) -> StoreError {
        StoreError::Closed {
            store: self.inner.describe.clone(),
        }
    }

    fn write(&self, op: Op) -> BoxFuture<'_, StoreResult<Reply>> {
        let (reply, answer) = oneshot::channel();
        let sent = self.inner.writes.send(Job { op, reply });
        Box::pin(async move {
            sent.map_err(|_| self.closed())?;
            answer.await.map_err(|_| self.closed())?
        })
    }

    /// The reading connection, opened again if it was lost.
    async fn reader(&self, what: &str) -> StoreResult<Arc<Session>> {
        let mut slot = self.inner.reads.lock().await;
        if let Some(session) = slot.as_ref().filter(|s| !s.client.is_closed()) {
            return Ok(Arc::clone(session));
        }
        let session = open_session(
            &self.inner.config,
            &self.inner.describe,
            &self.inner.schema,
            false,
        )
        .await
        .map_err(|e| match e {
            StoreError::Unavailable { store, source, .. } => StoreError::Unavailable {
                store,
                what: what.to_owned(),
                source,
            },
            other => other,
        })?;
        let session = Arc::new(session);
        *slot = Some(Arc::clone(&session));
        Ok(session)
    }

    fn db(&self, what: &str) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
        let what = what.to_owned();
        move |e| sql_error(&self.inner.describe, &what, e)
    }
}

fn valid_schema(schema: &str) -> bool {
    let mut chars = schema.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && schema.len() <= 63
}

/// Names the store without its password: hosts, ports, database, schema.
fn describe(config: &tokio_postgres::Config, schema: &str) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    format!(
        "the PostgreSQL store `{}:{}/{}` (schema `{schema}`)",
        hosts.join(","),
        if ports.is_empty() {
            "5432".to_owned()
        } else {
            ports.join(",")
        },
        config.get_dbname().unwrap_or("postgres"),
    )
}

/// Maps a client error: a lost or refused connection is
/// [`StoreError::Unavailable`]; anything else the database said is
/// [`StoreError::Backend`].
fn sql_error(store: &str, what: &str, e: tokio_postgres::Error) -> StoreError {
    if unreachable(&e) {
        StoreError::Unavailable {
            store: store.to_owned(),
            what: what.to_owned(),
            source: Box::new(e),
        }
    } else {
        StoreError::Backend {
            store: store.to_owned(),
            what: what.to_owned(),
            source: Box::new(e),
        }
    }
}

/// Whether the error means the server is gone (or going): the connection
/// closed, an I/O error, or the server shutting down.
fn unreachable(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        return [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::CONNECTION_FAILURE,
            SqlState::CONNECTION_EXCEPTION,
            SqlState::CONNECTION_DOES_NOT_EXIST,
        ]
        .contains(code);
    }
    // No SQL state: the error came from the socket or the protocol.
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Opens a connection on `schema` (its connection task runs on the
/// runtime). With `listen`, notifications are forwarded on the returned
/// channel instead of dropped.
async fn open_session(
    config: &tokio_postgres::Config,
    describe: &str,
    schema: &str,
    listen: bool,
) -> StoreResult<Session> {
    Ok(open(config, describe, schema, listen).await?.0)
}

type Notifications = mpsc::UnboundedReceiver<tokio_postgres::Notification>;

async fn open(
    config: &tokio_postgres::Config,
    describe: &str,
    schema: &str,
    listen: bool,
) -> StoreResult<(Session, Notifications)> {
    let (client, mut connection) =
        config
            .connect(NoTls)
            .await
            .map_err(|e| StoreError::Unavailable {
                store: describe.to_owned(),
                what: "connecting".to_owned(),
                source: Box::new(e),
            })?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) if listen => {
                    let _ = tx.send(n);
                }
                Some(Ok(_)) => {}
                // The client sees the connection closed at its next call.
                Some(Err(_)) | None => break,
            }
        }
    });
    // The schema is a checked identifier, so it can be spliced in.
    client
        .batch_execute(&format!(
            "SET search_path TO {schema}; SET application_name TO 'saga'"
        ))
        .await
        .map_err(|e| sql_error(describe, "setting the schema", e))?;
    Ok((
        Session {
            client,
            statements: tokio::sync::Mutex::new(HashMap::new()),
        },
        rx,
    ))
}

/// Validates the schema, then migrates it, in one transaction under an
/// advisory lock (two workers starting together migrate once). Nothing is
/// written to a schema that is not ours or is too new.
async fn check_and_migrate(session: &Session, store: &str, schema: &str) -> StoreResult<()> {
    let err = |e| sql_error(store, "migrating the schema", e);
    let client = &session.client;
    client.batch_execute("BEGIN").await.map_err(err)?;
    let result = migrate(client, store, schema).await;
    match result {
        Ok(()) => client.batch_execute("COMMIT").await.map_err(err),
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

async fn migrate(client: &Client, store: &str, schema: &str) -> StoreResult<()> {
    let err = |e| sql_error(store, "migrating the schema", e);
    client
        .execute(
            "SELECT pg_advisory_xact_lock(hashtext('saga-schema:' || $1::text))",
            &[&schema],
        )
        .await
        .map_err(err)?;
    // The schema is a checked identifier, so it can be spliced in.
    client
        .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .await
        .map_err(err)?;
    let tables: Vec<String> = client
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY 1",
            &[&schema],
        )
        .await
        .map_err(err)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let (version, min_compatible) = if tables.iter().any(|t| t == "saga_schema") {
        let row = client
            .query_opt("SELECT version, min_compatible FROM saga_schema", &[])
            .await
            .map_err(err)?;
        match row {
            Some(row) => (row.get::<_, i64>(0), row.get::<_, i64>(1)),
            None => {
                return Err(StoreError::ForeignSchema {
                    store: store.to_owned(),
                    detail: "its table `saga_schema` is empty".to_owned(),
                });
            }
        }
    } else if !tables.is_empty() {
        let shown: Vec<&str> = tables.iter().take(5).map(String::as_str).collect();
        return Err(StoreError::ForeignSchema {
            store: store.to_owned(),
            detail: format!("tables: {}", shown.join(", ")),
        });
    } else {
        (0, 0)
    };
    if min_compatible > SCHEMA_VERSION {
        return Err(StoreError::IncompatibleSchema {
            store: store.to_owned(),
            found: version,
            required: min_compatible,
            supported: SCHEMA_VERSION,
        });
    }
    if version >= SCHEMA_VERSION {
        // Ours, as new as this build or newer but compatible.
        return Ok(());
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        client.batch_execute(sql).await.map_err(err)?;
        log::info!(target: "saga", "postgres store migrated schema={schema} version={}", from + 1);
    }
    client
        .execute(
            "INSERT INTO saga_schema (singleton, version, min_compatible) VALUES (TRUE, $1, $2)
             ON CONFLICT (singleton) DO UPDATE
             SET version = $1, min_compatible = GREATEST(saga_schema.min_compatible, $2)",
            &[&SCHEMA_VERSION, &MIN_COMPATIBLE],
        )
        .await
        .map_err(err)?;
    Ok(())
}

/// The writer: one transaction per batch of the writes waiting. A write
/// that fails in the database aborts the transaction; the batch is then
/// run again one write per transaction, so only that write fails.
async fn writer_loop(
    inner: Weak<Inner>,
    mut session: Option<Session>,
    mut receiver: mpsc::UnboundedReceiver<Job>,
    max_batch: usize,
) {
    let mut batch = Vec::new();
    while receiver.recv_many(&mut batch, max_batch).await > 0 {
        let Some(store) = inner.upgrade() else {
            return;
        };
        let live = match session.take().filter(|s| !s.client.is_closed()) {
            Some(s) => Ok(s),
            None => open_session(&store.config, &store.describe, &store.schema, false).await,
        };
        let s = match live {
            Ok(s) => s,
            Err(error) => {
                log::warn!(target: "saga", "postgres store unreachable; writes fail until it is back store={} error={error}", store.describe);
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(unavailable(&store, &job.op, &error)));
                }
                continue;
            }
        };
        let jobs = std::mem::take(&mut batch);
        match run_batch(&s, &store, &jobs).await {
            Ok(replies) => {
                for (job, reply) in jobs.into_iter().zip(replies) {
                    let _ = job.reply.send(reply);
                }
            }
            Err(e) if unreachable(&e) || s.client.is_closed() => {
                log::warn!(target: "saga", "postgres store connection lost; a commit's outcome is unknown store={} error={e}", store.describe);
                for job in jobs {
                    let _ = job.reply.send(Err(StoreError::Unavailable {
                        store: store.describe.clone(),
                        what: job.op.what().to_owned(),
                        source: Box::new(clone_error(&e)),
                    }));
                }
                continue;
            }
            Err(_) => {
                for job in jobs {
                    let reply = run_batch(&s, &store, std::slice::from_ref(&job))
                        .await
                        .map_err(|e| sql_error(&store.describe, job.op.what(), e))
                        .and_then(|mut r| r.pop().unwrap_or_else(|| Err(store_closed(&store))));
                    let _ = job.reply.send(reply);
                }
            }
        }
        session = Some(s);
    }
}

/// A client error cannot be cloned; its text can.
fn clone_error(e: &tokio_postgres::Error) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

fn store_closed(store: &Inner) -> StoreError {
    StoreError::Closed {
        store: store.describe.clone(),
    }
}

fn unavailable(store: &Inner, op: &Op, error: &StoreError) -> StoreError {
    StoreError::Unavailable {
        store: store.describe.clone(),
        what: op.what().to_owned(),
        source: error.to_string().into(),
    }
}

/// Runs `jobs` in one transaction. `Err` if the database refused a
/// statement (the transaction was rolled back); otherwise each job's
/// answer, committed.
async fn run_batch(
    s: &Session,
    store: &Inner,
    jobs: &[Job],
) -> Result<Vec<StoreResult<Reply>>, tokio_postgres::Error> {
    s.client.batch_execute("BEGIN").await?;
    let mut replies = Vec::with_capacity(jobs.len());
    let mut signal = false;
    for job in jobs {
        match run_op(s, store, &job.op).await {
            Ok(reply) => {
                signal |= job.op.signals_work();
                replies.push(Ok(reply));
            }
            Err(Failure::Refused(error)) => replies.push(Err(error)),
            Err(Failure::Sql(e)) => {
                let _ = s.client.batch_execute("ROLLBACK").await;
                return Err(e);
            }
        }
    }
    if signal {
        // Delivered to the listeners when the transaction commits.
        if let Err(e) = s
            .execute("SELECT pg_notify($1, current_schema())", &[&CHANNEL])
            .await
        {
            let _ = s.client.batch_execute("ROLLBACK").await;
            return Err(e);
        }
    }
    s.client.batch_execute("COMMIT").await?;
    Ok(replies)
}

async fn run_op(s: &Session, store: &Inner, op: &Op) -> Result<Reply, Failure> {
    match op {
        Op::PutDefinition(d) => {
            s.execute(
                const_format!(
                    "INSERT INTO definitions (fingerprint, saga, shape, registered_at)
                     VALUES ($1, $2, $3, {NOW}) ON CONFLICT (fingerprint) DO NOTHING"
                ),
                &[&d.fingerprint, &d.saga, &d.shape],
            )
            .await?;
            Ok(Reply::Done)
        }
        Op::Create {
            execution,
            owner,
            ttl,
        } => {
            let id = execution.id.as_str();
            let inserted = s
                .execute(
                    const_format!(
                        "INSERT INTO executions (id, saga, fingerprint, status, context, last_seq,
                            created_at, updated_at)
                         VALUES ($1, $2, $3, 'running', $4, $5, {NOW}, {NOW})
                         ON CONFLICT (id) DO NOTHING"
                    ),
                    &[
                        &id,
                        &execution.saga,
                        &execution.fingerprint,
                        &execution.context,
                        &i64::try_from(execution.events.len()).unwrap_or(i64::MAX),
                    ],
                )
                .await?;
            if inserted == 0 {
                return match get_execution(s, store, id).await? {
                    Some(existing) => Ok(Reply::Created(Created::Existing(existing))),
                    None => Err(Failure::Refused(StoreError::NotFound {
                        execution_id: execution.id.clone(),
                    })),
                };
            }
            let row = s
                .query_opt(
                    const_format!(
                        "INSERT INTO leases (execution_id, owner, token, expires_at)
                         VALUES ($1, $2, 1, {NOW} + $3)
                         ON CONFLICT (execution_id) DO UPDATE
                         SET owner = $2, token = leases.token + 1, expires_at = {NOW} + $3
                         RETURNING token"
                    ),
                    &[&id, owner, &ttl_ms(*ttl)],
                )
                .await?;
            let token = row.map_or(1, |r| r.get(0));
            if !execution.events.is_empty() {
                let c = Columns::of(&execution.events);
                s.execute(
                    const_format!(
                        "INSERT INTO events (execution_id, seq, at, kind, step, attempt, output,
                            context, error, outcome_unknown, will_retry)
                         SELECT $1, u.seq, {NOW}, u.kind, u.step, u.attempt, u.output,
                            u.context, u.error, u.unknown, u.retry
                         FROM {UNNEST_EVENTS}"
                    ),
                    &[
                        &id,
                        &c.seqs,
                        &c.kinds,
                        &c.steps,
                        &c.attempts,
                        &c.outputs,
                        &c.contexts,
                        &c.errors,
                        &c.unknown,
                        &c.retry,
                    ],
                )
                .await?;
            }
            Ok(Reply::Created(Created::New(Lease {
                owner: owner.as_str().into(),
                token,
                ttl: *ttl,
            })))
        }
        Op::Claim { id, owner, ttl } => {
            let row = s
                .query_opt(
                    const_format!(
                        "UPDATE leases SET owner = $2, token = token + 1, expires_at = {NOW} + $3
                         WHERE execution_id = $1
                           AND (owner IS NULL OR expires_at IS NULL OR expires_at <= {NOW})
                         RETURNING token"
                    ),
                    &[&id.as_str(), owner, &ttl_ms(*ttl)],
                )
                .await?;
            match row {
                Some(row) => Ok(Reply::Lease(Some(Lease {
                    owner: owner.as_str().into(),
                    token: row.get(0),
                    ttl: *ttl,
                }))),
                None if get_execution(s, store, id.as_str()).await?.is_none() => {
                    Err(Failure::Refused(StoreError::NotFound {
                        execution_id: id.clone(),
                    }))
                }
                None => Ok(Reply::Lease(None)),
            }
        }
        Op::ClaimNext(request) => {
            let exclude: Vec<&str> = request.exclude.iter().map(ExecutionId::as_str).collect();
            let limit = i64::try_from(request.limit).unwrap_or(i64::MAX);
            let rows = s
                .query(
                    const_format!(
                        "WITH picked AS (
                            SELECT l.execution_id FROM leases l
                            JOIN executions e ON e.id = l.execution_id
                            WHERE e.status IN ('running', 'compensating')
                              AND e.fingerprint = ANY($1)
                              AND NOT (e.id = ANY($5))
                              AND (l.owner IS NULL OR l.expires_at IS NULL
                                   OR l.expires_at <= {NOW})
                            ORDER BY e.created_at, e.id
                            LIMIT $4
                            FOR UPDATE OF l SKIP LOCKED
                        ), claimed AS (
                            UPDATE leases l SET owner = $2, token = l.token + 1,
                                expires_at = {NOW} + $3
                            FROM picked WHERE l.execution_id = picked.execution_id
                            RETURNING l.execution_id, l.owner, l.token, l.expires_at
                        )
                        SELECT e.id, e.saga, e.fingerprint, e.status, e.context, e.last_seq,
                            e.created_at, e.updated_at, c.owner, c.expires_at,
                            e.cancel_requested, c.token
                        FROM claimed c JOIN executions e ON e.id = c.execution_id
                        ORDER BY e.created_at, e.id"
                    ),
                    &[
                        &request.fingerprints,
                        &request.owner,
                        &ttl_ms(request.ttl),
                        &limit,
                        &exclude,
                    ],
                )
                .await?;
            let mut claimed = Vec::with_capacity(rows.len());
            for row in rows {
                let token: i64 = row.get(11);
                claimed.push(Claimed {
                    record: execution(store, &row).map_err(Failure::Refused)?,
                    lease: Lease {
                        owner: request.owner.as_str().into(),
                        token,
                        ttl: request.ttl,
                    },
                });
            }
            Ok(Reply::Claimed(claimed))
        }
        Op::Append {
            id,
            lease,
            events,
            status,
        } => append(s, store, id, lease, events, *status).await,
        Op::Renew { id, lease } => {
            let row = s
                .query_opt(
                    const_format!(
                        "UPDATE leases SET expires_at = {NOW} + $4
                         WHERE execution_id = $1 AND token = $2 AND owner = $3
                         RETURNING (SELECT cancel_requested FROM executions WHERE id = $1)"
                    ),
                    &[
                        &id.as_str(),
                        &lease.token,
                        &&*lease.owner,
                        &ttl_ms(lease.ttl),
                    ],
                )
                .await?;
            match row {
                Some(row) => Ok(Reply::Ack(Ack {
                    cancel_requested: row.get::<_, Option<bool>>(0).unwrap_or(false),
                })),
                None => Err(Failure::Refused(lease_lost(id))),
            }
        }
        Op::Release { id, lease } => {
            s.execute(
                "UPDATE leases SET owner = NULL, expires_at = NULL
                 WHERE execution_id = $1 AND token = $2 AND owner = $3",
                &[&id.as_str(), &lease.token, &&*lease.owner],
            )
            .await?;
            Ok(Reply::Done)
        }
        Op::RequestCancel(id) => {
            let changed = s
                .execute(
                    "UPDATE executions SET cancel_requested = TRUE WHERE id = $1",
                    &[&id.as_str()],
                )
                .await?;
            Ok(Reply::Changed(changed == 1))
        }
        Op::Purge(before) => {
            s.execute(
                "DELETE FROM events WHERE execution_id IN (SELECT id FROM executions
                    WHERE status IN ('completed', 'compensated', 'cancelled', 'abandoned')
                      AND updated_at <= $1)",
                &[before],
            )
            .await?;
            s.execute(
                "DELETE FROM leases WHERE execution_id IN (SELECT id FROM executions
                    WHERE status IN ('completed', 'compensated', 'cancelled', 'abandoned')
                      AND updated_at <= $1)",
                &[before],
            )
            .await?;
            let purged = s
                .execute(
                    "DELETE FROM executions
                     WHERE status IN ('completed', 'compensated', 'cancelled', 'abandoned')
                       AND updated_at <= $1",
                    &[before],
                )
                .await?;
            Ok(Reply::Count(purged))
        }
    }
}

/// The events' fields as arrays, for `unnest`.
struct Columns<'a> {
    seqs: Vec<i64>,
    kinds: Vec<&'static str>,
    steps: Vec<Option<i64>>,
    attempts: Vec<i64>,
    outputs: Vec<Option<&'a str>>,
    contexts: Vec<Option<&'a str>>,
    errors: Vec<Option<&'a str>>,
    unknown: Vec<bool>,
    retry: Vec<bool>,
}

impl<'a> Columns<'a> {
    fn of(events: &'a [Event]) -> Self {
        Columns {
            seqs: events
                .iter()
                .map(|e| i64::try_from(e.seq).unwrap_or(i64::MAX))
                .collect(),
            kinds: events.iter().map(|e| e.kind.label()).collect(),
            steps: events.iter().map(|e| e.step.map(i64::from)).collect(),
            attempts: events.iter().map(|e| i64::from(e.attempt)).collect(),
            outputs: events.iter().map(|e| e.output.as_deref()).collect(),
            contexts: events.iter().map(|e| e.context.as_deref()).collect(),
            errors: events.iter().map(|e| e.error.as_deref()).collect(),
            unknown: events.iter().map(|e| e.outcome_unknown).collect(),
            retry: events.iter().map(|e| e.will_retry).collect(),
        }
    }
}

/// The rows of `unnest`ed event columns `$2`..`$10` (see [`Columns`]).
const UNNEST_EVENTS: &str = "unnest($2::bigint[], $3::text[], $4::bigint[], $5::bigint[],
    $6::text[], $7::text[], $8::text[], $9::bool[], $10::bool[])
    AS u(seq, kind, step, attempt, output, context, error, unknown, retry)";

/// Appends events in one statement: the lease's fence, the sequence check
/// and the writes together, so a lost lease or a gap writes nothing. A
/// finished status releases the lease in the same statement.
async fn append(
    s: &Session,
    store: &Inner,
    id: &ExecutionId,
    lease: &Lease,
    events: &[Event],
    status: ExecutionStatus,
) -> Result<Reply, Failure> {
    let first = events.first().map_or(0, |e| e.seq);
    let last = events.last().map_or(0, |e| e.seq);
    let prev = first.saturating_sub(1);
    let new_last = if events.is_empty() { prev } else { last };
    let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let c = Columns::of(events);
    let row = s
        .query_opt(
            const_format!(
                "WITH lease AS (
                    UPDATE leases SET
                        owner = CASE WHEN $17 THEN NULL ELSE owner END,
                        expires_at = CASE WHEN $17 THEN NULL ELSE {NOW} + $4 END
                    WHERE execution_id = $1 AND token = $2 AND owner = $3
                    RETURNING execution_id
                ), moved AS (
                    UPDATE executions SET status = $5, last_seq = $6, updated_at = {NOW}
                    WHERE id = $1 AND last_seq = $7 AND EXISTS (SELECT 1 FROM lease)
                    RETURNING cancel_requested
                ), written AS (
                    INSERT INTO events (execution_id, seq, at, kind, step, attempt, output,
                        context, error, outcome_unknown, will_retry)
                    SELECT $1, u.seq, {NOW}, u.kind, u.step, u.attempt, u.output, u.context,
                        u.error, u.unknown, u.retry
                    FROM unnest($8::bigint[], $9::text[], $10::bigint[], $11::bigint[],
                        $12::text[], $13::text[], $14::text[], $15::bool[], $16::bool[])
                        AS u(seq, kind, step, attempt, output, context, error, unknown, retry)
                    WHERE EXISTS (SELECT 1 FROM moved)
                    RETURNING 1
                )
                SELECT (SELECT cancel_requested FROM moved),
                    (SELECT count(*) FROM lease),
                    (SELECT count(*) FROM written)"
            ),
            &[
                &id.as_str(),
                &lease.token,
                &&*lease.owner,
                &ttl_ms(lease.ttl),
                &status.label(),
                &as_i64(new_last),
                &as_i64(prev),
                &c.seqs,
                &c.kinds,
                &c.steps,
                &c.attempts,
                &c.outputs,
                &c.contexts,
                &c.errors,
                &c.unknown,
                &c.retry,
                &status.is_finished(),
            ],
        )
        .await?;
    let (cancel, held, written) = match row {
        Some(row) => (
            row.get::<_, Option<bool>>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2),
        ),
        None => (None, 0, 0),
    };
    if let Some(cancel_requested) = cancel
        && usize::try_from(written).ok() == Some(events.len())
    {
        return Ok(Reply::Ack(Ack { cancel_requested }));
    }
    if held == 0 {
        return Err(Failure::Refused(
            match get_execution(s, store, id.as_str()).await? {
                None => StoreError::NotFound {
                    execution_id: id.clone(),
                },
                Some(_) => lease_lost(id),
            },
        ));
    }
    let found = get_execution(s, store, id.as_str())
        .await?
        .map_or(0, |r| r.last_seq);
    Err(Failure::Refused(StoreError::BadRecord {
        store: store.describe.clone(),
        what: format!("event {first} of execution `{id}`"),
        detail: format!("the log ends at {found}, expected {prev}"),
    }))
}

fn lease_lost(id: &ExecutionId) -> StoreError {
    StoreError::LeaseLost {
        execution_id: id.clone(),
    }
}

const SELECT_EXECUTION: &str =
    "SELECT e.id, e.saga, e.fingerprint, e.status, e.context, e.last_seq,
        e.created_at, e.updated_at, l.owner, l.expires_at, e.cancel_requested
    FROM executions e LEFT JOIN leases l ON l.execution_id = e.id";

fn execution(store: &Inner, row: &Row) -> StoreResult<ExecutionRecord> {
    let id: String = row.get(0);
    let status: String = row.get(3);
    let status = status_from_label(&status).ok_or_else(|| StoreError::BadRecord {
        store: store.describe.clone(),
        what: format!("execution `{id}`"),
        detail: format!("unknown status `{status}`"),
    })?;
    Ok(ExecutionRecord {
        id: ExecutionId::new(id),
        saga: row.get(1),
        fingerprint: row.get(2),
        status,
        context: row.get(4),
        last_seq: u64::try_from(row.get::<_, i64>(5)).unwrap_or(0),
        created_at_ms: row.get(6),
        updated_at_ms: row.get(7),
        owner: row.get(8),
        lease_expires_at_ms: row.get(9),
        cancel_requested: row.get(10),
    })
}

async fn get_execution(
    s: &Session,
    store: &Inner,
    id: &str,
) -> Result<Option<ExecutionRecord>, Failure> {
    let row = s
        .query_opt(const_format!("{SELECT_EXECUTION} WHERE e.id = $1"), &[&id])
        .await?;
    row.map(|row| execution(store, &row))
        .transpose()
        .map_err(Failure::Refused)
}

/// The listener: `LISTEN`s on its own connection and bumps the work
/// signal on each notification of this schema; reconnects with backoff
/// when the connection is lost (and bumps the signal then, since
/// notifications sent meanwhile were missed).
async fn listener_loop(inner: Weak<Inner>, stop: Arc<Notify>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(store) = inner.upgrade() else {
            return;
        };
        let opened = open(&store.config, &store.describe, &store.schema, true).await;
        let (session, mut notifications) = match opened {
            Ok(opened) => opened,
            Err(error) => {
                log::warn!(target: "saga", "postgres store unreachable; listening again in {backoff:?} store={} error={error}", store.describe);
                drop(store);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.notified() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if let Err(e) = session
            .client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
        {
            log::warn!(target: "saga", "postgres store listen failed store={} error={e}", store.describe);
            drop(store);
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stop.notified() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            continue;
        }
        backoff = Duration::from_millis(100);
        store.signal.send_modify(|n| *n = n.wrapping_add(1));
        let schema = store.schema.clone();
        drop(store);
        loop {
            tokio::select! {
                n = notifications.recv() => match n {
                    Some(n) if n.payload() == schema => {
                        let Some(store) = inner.upgrade() else { return };
                        store.signal.send_modify(|n| *n = n.wrapping_add(1));
                    }
                    Some(_) => {}
                    None => break,
                },
                () = stop.notified() => return,
            }
        }
        if let Some(store) = inner.upgrade() {
            log::warn!(target: "saga", "postgres store listener lost its connection; reconnecting store={}", store.describe);
        }
    }
}

fn expect_reply<T>(
    store: &PostgresStore,
    reply: StoreResult<Reply>,
    pick: impl FnOnce(Reply) -> Option<T>,
) -> StoreResult<T> {
    pick(reply?).ok_or_else(|| StoreError::Closed {
        store: store.inner.describe.clone(),
    })
}

impl SagaStore for PostgresStore {
    fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    fn put_definition(&self, definition: DefinitionRecord) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            let reply = self.write(Op::PutDefinition(definition)).await;
            expect_reply(self, reply, |r| matches!(r, Reply::Done).then_some(()))
        })
    }

    fn definition(
        &self,
        fingerprint: &str,
    ) -> BoxFuture<'_, StoreResult<Option<DefinitionRecord>>> {
        let fingerprint = fingerprint.to_owned();
        Box::pin(async move {
            let what = "reading a definition";
            let s = self.reader(what).await?;
            let row = s
                .query_opt(
                    "SELECT saga, shape FROM definitions WHERE fingerprint = $1",
                    &[&fingerprint],
                )
                .await
                .map_err(self.db(what))?;
            Ok(row.map(|row| DefinitionRecord {
                fingerprint: fingerprint.clone(),
                saga: row.get(0),
                shape: row.get(1),
            }))
        })
    }

    fn create(
        &self,
        execution: NewExecution,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Created>> {
        let op = Op::Create {
            execution,
            owner: owner.to_owned(),
            ttl,
        };
        Box::pin(async move {
            let reply = self.write(op).await;
            expect_reply(self, reply, |r| match r {
                Reply::Created(c) => Some(c),
                _ => None,
            })
        })
    }

    fn claim(
        &self,
        id: &ExecutionId,
        owner: &str,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Option<Lease>>> {
        let op = Op::Claim {
            id: id.clone(),
            owner: owner.to_owned(),
            ttl,
        };
        Box::pin(async move {
            let reply = self.write(op).await;
            expect_reply(self, reply, |r| match r {
                Reply::Lease(l) => Some(l),
                _ => None,
            })
        })
    }

    fn claim_next(&self, request: ClaimRequest) -> BoxFuture<'_, StoreResult<Vec<Claimed>>> {
        Box::pin(async move {
            if request.limit == 0 || request.fingerprints.is_empty() {
                return Ok(Vec::new());
            }
            let reply = self.write(Op::ClaimNext(request)).await;
            expect_reply(self, reply, |r| match r {
                Reply::Claimed(c) => Some(c),
                _ => None,
            })
        })
    }

    fn append<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
        events: Vec<Event>,
        status: ExecutionStatus,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        let op = Op::Append {
            id: id.clone(),
            lease: lease.clone(),
            events,
            status,
        };
        Box::pin(async move {
            let reply = self.write(op).await;
            expect_reply(self, reply, |r| match r {
                Reply::Ack(a) => Some(a),
                _ => None,
            })
        })
    }

    fn renew<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<Ack>> {
        let op = Op::Renew {
            id: id.clone(),
            lease: lease.clone(),
        };
        Box::pin(async move {
            let reply = self.write(op).await;
            expect_reply(self, reply, |r| match r {
                Reply::Ack(a) => Some(a),
                _ => None,
            })
        })
    }

    fn release<'a>(
        &'a self,
        id: &'a ExecutionId,
        lease: &'a Lease,
    ) -> BoxFuture<'a, StoreResult<()>> {
        let op = Op::Release {
            id: id.clone(),
            lease: lease.clone(),
        };
        Box::pin(async move {
            let reply = self.write(op).await;
            expect_reply(self, reply, |r| matches!(r, Reply::Done).then_some(()))
        })
    }

    fn get<'a>(
        &'a self,
        id: &'a ExecutionId,
    ) -> BoxFuture<'a, StoreResult<Option<ExecutionRecord>>> {
        Box::pin(async move {
            let what = "reading an execution";
            let s = self.reader(what).await?;
            let row = s
                .query_opt(
                    const_format!("{SELECT_EXECUTION} WHERE e.id = $1"),
                    &[&id.as_str()],
                )
                .await
                .map_err(self.db(what))?;
            row.map(|row| execution(&self.inner, &row)).transpose()
        })
    }

    fn events<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<Vec<Event>>> {
        Box::pin(async move {
            let what = "reading events";
            let s = self.reader(what).await?;
            let rows = s
                .query(
                    "SELECT seq, kind, step, attempt, output, context, error, outcome_unknown,
                        will_retry, at
                     FROM events WHERE execution_id = $1 ORDER BY seq",
                    &[&id.as_str()],
                )
                .await
                .map_err(self.db(what))?;
            let bad = |seq: i64, detail: String| StoreError::BadRecord {
                store: self.inner.describe.clone(),
                what: format!("event {seq} of execution `{id}`"),
                detail,
            };
            let mut events = Vec::with_capacity(rows.len());
            for row in rows {
                let seq: i64 = row.get(0);
                let kind: String = row.get(1);
                let kind = EventKind::from_label(&kind)
                    .ok_or_else(|| bad(seq, format!("unknown kind `{kind}`")))?;
                let step = row
                    .get::<_, Option<i64>>(2)
                    .map(u32::try_from)
                    .transpose()
                    .map_err(|_| bad(seq, "step index out of range".to_owned()))?;
                let attempt = u32::try_from(row.get::<_, i64>(3))
                    .map_err(|_| bad(seq, "attempt out of range".to_owned()))?;
                events.push(Event {
                    seq: u64::try_from(seq).map_err(|_| bad(seq, "negative seq".to_owned()))?,
                    kind,
                    step,
                    attempt,
                    output: row.get(4),
                    context: row.get(5),
                    error: row.get(6),
                    outcome_unknown: row.get(7),
                    will_retry: row.get(8),
                    at_ms: row.get(9),
                });
            }
            Ok(events)
        })
    }

    fn list(
        &self,
        status: Option<ExecutionStatus>,
    ) -> BoxFuture<'_, StoreResult<Vec<ExecutionRecord>>> {
        Box::pin(async move {
            let what = "listing executions";
            let s = self.reader(what).await?;
            let label = status.map(ExecutionStatus::label);
            let rows = s
                .query(
                    const_format!(
                        "{SELECT_EXECUTION} WHERE $1::text IS NULL OR e.status = $1
                         ORDER BY e.created_at, e.id"
                    ),
                    &[&label],
                )
                .await
                .map_err(self.db(what))?;
            rows.iter().map(|row| execution(&self.inner, row)).collect()
        })
    }

    fn request_cancel<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, StoreResult<bool>> {
        Box::pin(async move {
            let reply = self.write(Op::RequestCancel(id.clone())).await;
            expect_reply(self, reply, |r| match r {
                Reply::Changed(c) => Some(c),
                _ => None,
            })
        })
    }

    fn work_signal(&self) -> Option<watch::Receiver<u64>> {
        Some(self.inner.signal.subscribe())
    }

    fn purge(&self, before_ms: i64) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(async move {
            let reply = self.write(Op::Purge(before_ms)).await;
            expect_reply(self, reply, |r| match r {
                Reply::Count(n) => Some(n),
                _ => None,
            })
        })
    }
}
