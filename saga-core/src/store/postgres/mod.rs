//! [`PostgresStore`]: one PostgreSQL database shared by many worker
//! processes.

/// `format!` for SQL text known when compiling, as a `&'static str`: the
/// text is leaked once per call site (a handful of statements).
macro_rules! const_format {
    ($($arg:tt)*) => {{
        static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        TEXT.get_or_init(|| format!($($arg)*)).as_str()
    }};
}

mod listen;
mod ops;
mod options;
mod rows;
mod schema;
mod session;
mod tls;
mod writer;
mod writes;

use std::str::FromStr;
use std::sync::Arc;

use tokio::sync::{Notify, mpsc, oneshot, watch};

use self::listen::listener_loop;
pub use self::options::PostgresOptions;
use self::schema::{check_and_migrate, check_read_only};
use self::session::{Session, Target, open_session, sql_error, while_doing};
use self::writer::{Job, Op, Reply, writer_loop};
use super::{StoreError, StoreResult};
use crate::step::BoxFuture;

/// The channel of the work notifications; the payload is the schema.
const CHANNEL: &str = "saga_work";

/// The channel of status notifications (an execution changed status or
/// had a cancel requested; its step events do not notify, see
/// [`change_signal`](super::SagaStore::change_signal)); the payload is the
/// schema.
const STATUS_CHANNEL: &str = "saga_status";

/// Now, in milliseconds since the Unix epoch, by the database's clock:
/// every lease expiry is computed and compared on it, so the workers'
/// clocks do not matter.
const NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

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
/// concurrent executions share commits; a batch of appends goes to the
/// server pipelined, one round trip per commit, the appends to distinct
/// executions as one statement (each row fenced on its own). Reads use a
/// second connection.
/// [`claim_next`](super::SagaStore::claim_next) takes executions with `FOR UPDATE
/// SKIP LOCKED`, so claimers never wait for each other. A third connection
/// `LISTEN`s for new work ([`work_signal`](super::SagaStore::work_signal)).
///
/// **A server that goes away.** A call made while the server is down (or
/// restarting) fails with [`StoreError::Unavailable`] and writes nothing;
/// the next call connects again. A commit whose answer was lost with the
/// connection fails too, though it may have happened: the engine then
/// stops the run, and whoever takes the execution over reads the log.
///
/// **Reading only.** [`connect_read_only`](Self::connect_read_only) is for
/// tools that inspect a store (the `saga` command's `list`, `show`,
/// `diagram` and `watch`): it creates and migrates nothing, needs only
/// `USAGE` on the schema and `SELECT` on its tables, and its sessions are
/// read-only on the server (`default_transaction_read_only`). A schema
/// that does not exist or holds no table is [`StoreError::NoStore`] there,
/// never a new empty store; a missing privilege is
/// [`StoreError::Misconfigured`] naming it.
///
/// **Bad input.** Connecting checks the schema before writing anything: a
/// schema holding tables of another application gives
/// [`StoreError::ForeignSchema`], one written by a newer, incompatible
/// version gives [`StoreError::IncompatibleSchema`], and both are left as
/// they were. An older schema is migrated (additive migrations only, under
/// an advisory lock, so that old and new workers can run side by side
/// during a rolling upgrade), unless [`PostgresOptions::with_migrate`]
/// says not to. PostgreSQL's `text` cannot hold a NUL character: a step
/// error message with one is logged with U+FFFD in its place (the run's
/// own report keeps the message as it was).
///
/// **TLS.** `sslmode` and `sslrootcert` in the connection string have
/// libpq's meanings: `disable`, `prefer` (the default: TLS if the server
/// offers it, certificate not checked), `require` (always TLS, certificate
/// not checked), `verify-ca` (signed by a trusted CA) and `verify-full`
/// (and names the host). The trusted CAs are `sslrootcert`'s PEM file, else
/// the operating system's. A refused certificate is a
/// [`StoreError::Backend`] naming the host and the mode. The guide
/// [operations](crate::guide::operations) has the details.
///
/// ```no_run
/// use saga_core::store::PostgresStore;
///
/// # async fn demo() -> Result<(), saga_core::store::StoreError> {
/// let store = PostgresStore::connect("postgres://saga@db.internal/orders").await?;
/// // A managed database: encrypted, and the server proven to be the one named.
/// let managed = PostgresStore::connect(
///     "postgres://saga@db.example.com/orders?sslmode=verify-full&sslrootcert=/etc/saga/db-ca.pem",
/// )
/// .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    describe: String,
    target: Target,
    schema: String,
    /// The writer's queue; `None` for a read-only store.
    writes: Option<mpsc::UnboundedSender<Job>>,
    reads: tokio::sync::Mutex<Option<Arc<Session>>>,
    signal: watch::Sender<u64>,
    /// Bumped on every work and status notification.
    changes: watch::Sender<u64>,
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

impl PostgresStore {
    /// Connects to the database at `url` (a `postgres://` URL or a
    /// `key=value` string), with the default options; checks and migrates
    /// the schema, and creates it if there is none. Must be called inside
    /// a tokio runtime: the store's connections run on it.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the server cannot be reached, at
    /// once: a service that may start before its database retries the
    /// first connect itself (the guide
    /// [operations](crate::guide::operations) has a loop with backoff and
    /// a deadline for it), where a running [`Worker`](crate::Worker)
    /// rides out an outage by itself;
    /// [`StoreError::Unauthorized`] for refused credentials (or a password
    /// the server asks for and the URL lacks);
    /// [`StoreError::Misconfigured`] for a database the server does not
    /// have, or a privilege the user lacks (to connect, to use or create
    /// the schema, to migrate it);
    /// [`StoreError::ForeignSchema`] or [`StoreError::IncompatibleSchema`]
    /// if the schema cannot be used (it is left as it was), or
    /// [`StoreError::Backend`] for a malformed URL, an unknown `sslmode`,
    /// an unreadable `sslrootcert`, a refused server certificate or a
    /// failed migration.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with(url, PostgresOptions::new()).await
    }

    /// Connects with `options`.
    ///
    /// # Errors
    /// As [`connect`](Self::connect), [`StoreError::Backend`] for a schema
    /// name that is not a plain identifier, and [`StoreError::NoStore`]
    /// for a schema that does not exist or holds no table when `options`
    /// say not to create one
    /// ([`with_create_schema(false)`](PostgresOptions::with_create_schema)),
    /// [`StoreError::OlderSchema`] for a store of an older schema version
    /// when they say not to migrate it
    /// ([`with_migrate(false)`](PostgresOptions::with_migrate)); either is
    /// left as it was.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> StoreResult<Self> {
        let (target, describe) = target(url, &options, false)?;
        let schema = options.schema.clone();
        let session = open_session(&target, &describe, &schema, false).await?;
        check_and_migrate(&session, &describe, &options).await?;
        Ok(Self::start(
            target,
            describe,
            schema,
            Some((session, options.max_batch)),
            None,
        ))
    }

    /// Connects for reading only, as tools that inspect a store do:
    /// creates nothing, migrates nothing, writes nothing. The store must
    /// exist in `options`' schema, be of this build's schema version (or a
    /// newer compatible one), and the user needs only `USAGE` on the
    /// schema and `SELECT` on its tables. Every session of the store is
    /// read-only on the server; the store's writes fail with
    /// [`StoreError::Backend`] without reaching it. Its work and change
    /// signals work as in a store connected to write.
    /// [`with_create_schema`](PostgresOptions::with_create_schema) plays
    /// no part here: nothing is ever created.
    ///
    /// ```no_run
    /// use saga_core::store::{PostgresOptions, PostgresStore, SagaStore};
    ///
    /// # async fn demo() -> Result<(), saga_core::store::StoreError> {
    /// let store = PostgresStore::connect_read_only(
    ///     "postgres://auditor@db.internal/orders",
    ///     PostgresOptions::new().with_schema("orders_saga"),
    /// )
    /// .await?;
    /// let stuck = store.list(Some(saga_core::ExecutionStatus::Stuck)).await?;
    /// # let _ = stuck;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`connect_with`](Self::connect_with), and:
    /// [`StoreError::NoStore`] for a schema that does not exist or holds
    /// no table (nothing is created); [`StoreError::Misconfigured`] naming
    /// the privilege the user lacks (`USAGE` on the schema, `SELECT` on a
    /// table); [`StoreError::OlderSchema`] for a store of an older schema
    /// version, which only a connection that may migrate it can bring up
    /// to date.
    pub async fn connect_read_only(url: &str, options: PostgresOptions) -> StoreResult<Self> {
        let (target, describe) = target(url, &options, true)?;
        let schema = options.schema.clone();
        let session = open_session(&target, &describe, &schema, false).await?;
        check_read_only(&session, &describe, &schema).await?;
        // The checking session reads from now on.
        Ok(Self::start(target, describe, schema, None, Some(session)))
    }

    /// Starts the store's tasks on a checked schema: the writer on
    /// `writer`'s session (none for a read-only store) and the listener;
    /// reads go to `reader`, if given, until it is lost.
    fn start(
        target: Target,
        describe: String,
        schema: String,
        writer: Option<(Session, usize)>,
        reader: Option<Session>,
    ) -> Self {
        let (signal, _) = watch::channel(0);
        let (changes, _) = watch::channel(0);
        let stop = Arc::new(Notify::new());
        let (writes, writer) = match writer {
            Some((session, max_batch)) => {
                let (writes, receiver) = mpsc::unbounded_channel();
                (Some(writes), Some((session, receiver, max_batch)))
            }
            None => (None, None),
        };
        let inner = Arc::new(Inner {
            describe,
            target,
            schema,
            writes,
            reads: tokio::sync::Mutex::new(reader.map(Arc::new)),
            signal,
            changes,
            stop: Arc::clone(&stop),
        });
        if let Some((session, receiver, max_batch)) = writer {
            tokio::spawn(writer_loop(
                Arc::downgrade(&inner),
                Some(session),
                receiver,
                max_batch,
            ));
        }
        tokio::spawn(listener_loop(Arc::downgrade(&inner), stop));
        PostgresStore { inner }
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
        let Some(writes) = &self.inner.writes else {
            let refused = StoreError::Backend {
                store: self.inner.describe.clone(),
                what: op.what().to_owned(),
                source: "the store was opened read-only (`PostgresStore::connect_read_only`)"
                    .into(),
            };
            return Box::pin(std::future::ready(Err(refused)));
        };
        let (reply, answer) = oneshot::channel();
        let sent = writes.send(Job { op, reply });
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
            &self.inner.target,
            &self.inner.describe,
            &self.inner.schema,
            false,
        )
        .await
        .map_err(|e| while_doing(e, what))?;
        let session = Arc::new(session);
        *slot = Some(Arc::clone(&session));
        Ok(session)
    }

    fn db(&self, what: &str) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
        let what = what.to_owned();
        move |e| sql_error(&self.inner.describe, &what, e)
    }
}

/// Where `url` and `options` say to connect, and the store's name for
/// messages; checks the schema name.
fn target(url: &str, options: &PostgresOptions, read_only: bool) -> StoreResult<(Target, String)> {
    let url_error = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Backend {
        store: "the PostgreSQL store".to_owned(),
        what: "reading the connection URL (expected `postgres://user@host:port/database`)"
            .to_owned(),
        source,
    };
    // `sslmode` and `sslrootcert` first: tokio-postgres refuses the
    // `verify-*` modes.
    let parsed = tls::parse(url).map_err(|e| url_error(e.into()))?;
    let mut config =
        tokio_postgres::Config::from_str(&parsed.rest).map_err(|e| url_error(Box::new(e)))?;
    let describe = describe(&config, &options.schema);
    let tls = tls::connector(&parsed).map_err(|e| StoreError::Backend {
        store: describe.clone(),
        what: "setting up TLS".to_owned(),
        source: e.into(),
    })?;
    config.ssl_mode(tls.client_mode);
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
    let target = Target {
        config,
        tls,
        read_only,
    };
    Ok((target, describe))
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
        // The server's default: a database named after the user.
        config
            .get_dbname()
            .or(config.get_user())
            .unwrap_or("postgres"),
    )
}
