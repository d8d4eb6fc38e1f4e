//! Connections of the PostgreSQL store: opening one on the store's schema,
//! its prepared statements, and what a client error means.

use std::collections::HashMap;

use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, Row, Statement};

use super::tls::{SslMode, Tls, certificate_refused};
use crate::store::{StoreError, StoreResult};

/// Where and how a store connects: the client's configuration (without
/// the TLS parameters it does not know) and the TLS connector.
pub(super) struct Target {
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: Tls,
    /// Every session is read-only (`default_transaction_read_only`): the
    /// server itself refuses a write, whatever the code tries.
    pub(super) read_only: bool,
}

/// A connection with its prepared statements.
pub(super) struct Session {
    pub(super) client: Client,
    pub(super) statements: tokio::sync::Mutex<HashMap<&'static str, Statement>>,
}

impl Session {
    pub(super) async fn statement(
        &self,
        sql: &'static str,
    ) -> Result<Statement, tokio_postgres::Error> {
        let mut statements = self.statements.lock().await;
        if let Some(statement) = statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        statements.insert(sql, statement.clone());
        Ok(statement)
    }

    pub(super) async fn query(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.client.query(&statement, params).await
    }

    pub(super) async fn query_opt(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.client.query_opt(&statement, params).await
    }

    pub(super) async fn execute(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.client.execute(&statement, params).await
    }
}

/// Maps a client error: a lost or refused connection is
/// [`StoreError::Unavailable`]; a missing privilege is
/// [`StoreError::Misconfigured`] saying which the store needs; anything
/// else the database said is [`StoreError::Backend`].
pub(super) fn sql_error(store: &str, what: &str, e: tokio_postgres::Error) -> StoreError {
    use tokio_postgres::error::SqlState;
    if unreachable(&e) {
        StoreError::Unavailable {
            store: store.to_owned(),
            what: what.to_owned(),
            source: Box::new(e),
        }
    } else if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
        StoreError::Misconfigured {
            store: store.to_owned(),
            problem: format!(
                "{what} was refused: the user of the URL lacks a privilege the store needs (USAGE on its schema, SELECT on its tables to read them, INSERT, UPDATE and DELETE to write them, CREATE on the schema to migrate it)"
            ),
            source: Some(Box::new(e)),
        }
    } else {
        StoreError::Backend {
            store: store.to_owned(),
            what: what.to_owned(),
            source: Box::new(ServerSaid::from(e)),
        }
    }
}

/// A client error that displays what the server said. tokio_postgres
/// displays a server's error as "db error" alone and keeps the message
/// in its source, while [`StoreError::Backend`]'s text (what the engine
/// and the worker log) ends with its source's text only: "creating an
/// execution failed: db error" told an operator nothing. This displays
/// the server's message and SQLSTATE (`index row requires 11464 bytes,
/// maximum size is 8191 (SQLSTATE 54000)`). The server's DETAIL (and
/// its WHERE) is left out everywhere, its source chain and `Debug`
/// included: it can quote a row's values (a unique or check violation's),
/// contexts included. A client error that is not the server's (a lost
/// connection) stays the source.
pub(super) struct ServerSaid {
    text: String,
    client: Option<tokio_postgres::Error>,
}

impl From<tokio_postgres::Error> for ServerSaid {
    fn from(e: tokio_postgres::Error) -> Self {
        let text = error_text(&e);
        let client = e.as_db_error().is_none().then_some(e);
        ServerSaid { text, client }
    }
}

impl std::fmt::Debug for ServerSaid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSaid")
            .field("text", &self.text)
            .field("client", &self.client)
            .finish()
    }
}

impl std::fmt::Display for ServerSaid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for ServerSaid {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.client
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A client error's text as [`ServerSaid`] displays it: for a log record,
/// or a copy of the error.
pub(super) fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// Maps a failed connection: refused credentials (or a password the
/// server asks for and the URL lacks) are [`StoreError::Unauthorized`], a
/// database that does not exist or may not be connected to is
/// [`StoreError::Misconfigured`] (neither is an outage: retrying cannot
/// help), a refused server certificate is [`StoreError::Backend`] saying
/// so, anything else [`StoreError::Unavailable`].
fn connect_error(target: &Target, describe: &str, e: tokio_postgres::Error) -> StoreError {
    let config = &target.config;
    use tokio_postgres::error::SqlState;
    let refused = [
        SqlState::INVALID_PASSWORD,
        SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
    ];
    let user = config.get_user().unwrap_or_default();
    // The server's default: a database named after the user.
    let database = config.get_dbname().unwrap_or(user);
    if certificate_refused(&e) {
        let mode = match target.tls.mode {
            SslMode::VerifyFull => "verify-full",
            SslMode::VerifyCa => "verify-ca",
            // Never refused: these take any certificate.
            SslMode::Disable | SslMode::Prefer | SslMode::Require => "require",
        };
        StoreError::Backend {
            store: describe.to_owned(),
            what: format!(
                "connecting with sslmode={mode} (the server's certificate was refused: name its CA with `sslrootcert=<file>`, and connect by a host name the certificate has)"
            ),
            source: Box::new(e),
        }
    } else if e.code().is_some_and(|code| refused.contains(code)) {
        StoreError::Unauthorized {
            store: describe.to_owned(),
            user: user.to_owned(),
            what: "connecting".to_owned(),
            source: Box::new(e),
        }
    } else if password_missing(&e) {
        StoreError::Unauthorized {
            store: describe.to_owned(),
            user: user.to_owned(),
            what: "connecting (the server asks for a password and the URL has none)".to_owned(),
            source: Box::new(e),
        }
    } else if e.code() == Some(&SqlState::INVALID_CATALOG_NAME) {
        StoreError::Misconfigured {
            store: describe.to_owned(),
            problem: format!(
                "the server has no database `{database}`; check the database name of the URL (`postgres://user@host:port/database`)"
            ),
            source: Some(Box::new(e)),
        }
    } else if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
        StoreError::Misconfigured {
            store: describe.to_owned(),
            problem: format!(
                "user `{user}` may not connect to database `{database}`; grant it `CONNECT` on the database, or connect as another user"
            ),
            source: Some(Box::new(e)),
        }
    } else {
        StoreError::Unavailable {
            store: describe.to_owned(),
            what: "connecting".to_owned(),
            source: Box::new(e),
        }
    }
}

/// Whether the server asked for a password and the configuration has
/// none: the client says so only in words (its error kind is private).
fn password_missing(e: &tokio_postgres::Error) -> bool {
    e.code().is_none()
        && std::error::Error::source(e).is_some_and(|cause| cause.to_string() == "password missing")
}

/// `error` of a connection opened for `what`, naming that operation.
pub(super) fn while_doing(error: StoreError, what: &str) -> StoreError {
    match error {
        StoreError::Unavailable { store, source, .. } => StoreError::Unavailable {
            store,
            what: what.to_owned(),
            source,
        },
        StoreError::Unauthorized {
            store,
            user,
            source,
            ..
        } => StoreError::Unauthorized {
            store,
            user,
            what: what.to_owned(),
            source,
        },
        other => other,
    }
}

/// Whether the error means the server is gone (or going): the connection
/// closed, an I/O error, or the server shutting down.
pub(super) fn unreachable(e: &tokio_postgres::Error) -> bool {
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
pub(super) async fn open_session(
    target: &Target,
    describe: &str,
    schema: &str,
    listen: bool,
) -> StoreResult<Session> {
    Ok(open(target, describe, schema, listen).await?.0)
}

pub(super) type Notifications = mpsc::UnboundedReceiver<tokio_postgres::Notification>;

pub(super) async fn open(
    target: &Target,
    describe: &str,
    schema: &str,
    listen: bool,
) -> StoreResult<(Session, Notifications)> {
    let (client, mut connection) = target
        .config
        .connect(target.tls.connector.clone())
        .await
        .map_err(|e| connect_error(target, describe, e))?;
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
    // A checked identifier, quoted: a keyword (`user`) is a name too.
    let read_only = if target.read_only {
        "; SET default_transaction_read_only = on"
    } else {
        ""
    };
    client
        .batch_execute(&format!(
            "SET search_path TO \"{schema}\"; SET application_name TO 'saga'{read_only}"
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
