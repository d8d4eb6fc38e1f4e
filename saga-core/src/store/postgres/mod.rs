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
use self::schema::check_and_migrate;
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
/// server pipelined, one round trip per commit. Reads use a second
/// connection.
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
/// **Bad input.** Connecting checks the schema before writing anything: a
/// schema holding tables of another application gives
/// [`StoreError::ForeignSchema`], one written by a newer, incompatible
/// version gives [`StoreError::IncompatibleSchema`], and both are left as
/// they were. An older schema is migrated (additive migrations only, under
/// an advisory lock, so that old and new workers can run side by side
/// during a rolling upgrade). PostgreSQL's `text` cannot hold a NUL
/// character: a step error message with one is logged with U+FFFD in its
/// place (the run's own report keeps the message as it was).
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
    writes: mpsc::UnboundedSender<Job>,
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
    /// the schema. Must be called inside a tokio runtime: the store's
    /// connections run on it.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the server cannot be reached,
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
    /// As [`connect`](Self::connect), and [`StoreError::Backend`] for a
    /// schema name that is not a plain identifier.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> StoreResult<Self> {
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
        let target = Target { config, tls };
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
        let session = open_session(&target, &describe, &schema, false).await?;
        check_and_migrate(&session, &describe, &schema).await?;
        let (writes, receiver) = mpsc::unbounded_channel();
        let (signal, _) = watch::channel(0);
        let (changes, _) = watch::channel(0);
        let stop = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            describe,
            target,
            schema,
            writes,
            reads: tokio::sync::Mutex::new(None),
            signal,
            changes,
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
