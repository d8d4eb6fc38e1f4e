//! Opening a store: the SQLite file or PostgreSQL URL named by `--store`.

use std::path::Path;
use std::sync::Arc;

use saga_core::store::{SagaStore, SqliteOptions, SqliteStore};

use crate::CliError;

/// Opens the store named on the command line to write (as `resume`,
/// `abandon` and `cancel` with `--yes` do), never creating one and never
/// migrating one: an SQLite file (`integrity_check` runs SQLite's
/// `quick_check` first) or, in a build with the `postgres` feature, a
/// PostgreSQL URL or key/value connection string (`host=db user=saga
/// dbname=sagas`) whose saga tables are in `pg_schema`
/// (`PostgresOptions::with_create_schema(false)`: a schema that does not
/// exist or has no tables is an error, not a new store). A store of an
/// older schema version is refused and left as it was
/// (`SqliteOptions::with_migrate(false)`,
/// `PostgresOptions::with_migrate(false)`): the service's own workers
/// migrate it when the new version first opens it, and until then the
/// processes of the old version can still open it. No error repeats a
/// password given in `spec`.
///
/// # Errors
/// [`CliError::Missing`] for a file that does not exist,
/// [`CliError::NoPgStore`] for a PostgreSQL schema without a store,
/// `StoreError::OlderSchema` for a store of an older schema version, and
/// the store's own errors for a file that is not a saga store or a server
/// that cannot be reached.
pub async fn open_store(
    spec: &str,
    integrity_check: bool,
    pg_schema: &str,
) -> Result<Arc<dyn SagaStore>, CliError> {
    if is_postgres(spec)? {
        return open_postgres(spec, pg_schema, false).await;
    }
    let path = existing_file(spec)?;
    let options = SqliteOptions::new()
        .with_integrity_check(integrity_check)
        .with_migrate(false);
    Ok(Arc::new(SqliteStore::open_with(path, options)?))
}

/// Opens the store named on the command line for reading only, as `list`,
/// `show`, `diagram`, `watch` and the dry runs of `resume`, `abandon` and
/// `cancel` (without `--yes`) do: an SQLite file is opened read-only
/// ([`SqliteStore::open_read_only`]: no migration, no full check, and no
/// write access needed to the file or its directory), so inspecting a
/// store never changes a byte of it. A PostgreSQL store is connected to
/// read only (`PostgresStore::connect_read_only`: nothing created or
/// migrated, and `USAGE` on the schema with `SELECT` on its tables is all
/// the user needs).
///
/// # Errors
/// As [`open_store`] (a store of an older schema version included: a
/// read-only connection does not migrate it).
pub async fn open_store_read_only(
    spec: &str,
    pg_schema: &str,
) -> Result<Arc<dyn SagaStore>, CliError> {
    if is_postgres(spec)? {
        return open_postgres(spec, pg_schema, true).await;
    }
    let path = existing_file(spec)?;
    Ok(Arc::new(SqliteStore::open_read_only(path)?))
}

/// Whether `spec` names a PostgreSQL store (a URL or a key/value
/// connection string); an error for a URL of another database.
fn is_postgres(spec: &str) -> Result<bool, CliError> {
    match spec.split_once("://") {
        Some(("postgres" | "postgresql", _)) => Ok(true),
        Some(_) => Err(CliError::UnsupportedUrl(redacted(spec))),
        None => Ok(is_key_value(spec)),
    }
}

/// `spec` as the path of an existing file: the CLI never creates a store.
fn existing_file(spec: &str) -> Result<&Path, CliError> {
    let path = Path::new(spec);
    // What is not a file may be a connection string with a typo: the
    // error shows it masked.
    if path.is_dir() {
        return Err(CliError::Directory(masked(spec).into()));
    }
    if !path.exists() {
        return Err(CliError::Missing(masked(spec).into()));
    }
    Ok(path)
}

/// Connects to the PostgreSQL store at `url` in `schema`, read-only or
/// to write; neither creates a store.
#[cfg(feature = "postgres")]
async fn open_postgres(
    url: &str,
    schema: &str,
    read_only: bool,
) -> Result<Arc<dyn SagaStore>, CliError> {
    use saga_core::store::{PostgresOptions, PostgresStore, StoreError};
    let options = PostgresOptions::new().with_schema(schema);
    let store = if read_only {
        PostgresStore::connect_read_only(url, options).await
    } else {
        let options = options.with_create_schema(false).with_migrate(false);
        PostgresStore::connect_with(url, options).await
    };
    match store {
        Ok(store) => Ok(Arc::new(store)),
        Err(StoreError::NoStore { store, detail }) => Err(CliError::NoPgStore {
            store,
            detail,
            schema: schema.to_owned(),
        }),
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(
    url: &str,
    _schema: &str,
    _read_only: bool,
) -> Result<Arc<dyn SagaStore>, CliError> {
    Err(CliError::NoPostgres(redacted(url)))
}

/// The keys of libpq's key/value connection strings that `tokio-postgres`
/// reads: a `--store` starting with one of them followed by `=` is a
/// PostgreSQL connection string, not a file name.
const CONNECTION_KEYS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "sslmode",
    "connect_timeout",
    "keepalives",
    "keepalives_idle",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

/// Whether `spec` is a PostgreSQL key/value connection string.
fn is_key_value(spec: &str) -> bool {
    let spec = spec.trim_start();
    CONNECTION_KEYS.iter().any(|key| {
        spec.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    })
}

/// `spec` (a URL or a key/value connection string) with its password, if
/// any, replaced by `***`, for error messages. A URL's user information
/// is taken to end at its last `@` (before its query, if the query has
/// none): a password with an unencoded `/`, `?` or `#` is masked too.
pub(crate) fn redacted(spec: &str) -> String {
    match spec.split_once("://") {
        Some((scheme, rest)) => {
            let (userinfo, after) = match userinfo_end(rest) {
                Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
                None => (None, rest),
            };
            let userinfo = match userinfo {
                Some(userinfo) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:***@"),
                    None => format!("{userinfo}@"),
                },
                None => String::new(),
            };
            let end = after.find(['/', '?', '#']).unwrap_or(after.len());
            let (host, tail) = after.split_at(end);
            let tail = match tail.split_once('?') {
                Some((path, query)) => {
                    let query: Vec<String> = query
                        .split('&')
                        .map(|pair| match pair.split_once('=') {
                            Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                                format!("{key}=***")
                            }
                            _ => pair.to_owned(),
                        })
                        .collect();
                    format!("{path}?{}", query.join("&"))
                }
                None => tail.to_owned(),
            };
            format!("{scheme}://{userinfo}{host}{tail}")
        }
        None => redacted_key_value(spec),
    }
}

/// Where the user information of a URL's `rest` (what follows `://`)
/// ends: its last `@` before the query or fragment, or, if there is none
/// there, its last `@` at all (a `?` or `#` in the password). Masking too
/// much of a URL is better than echoing part of a password.
fn userinfo_end(rest: &str) -> Option<usize> {
    let cut = rest.find(['?', '#']).unwrap_or(rest.len());
    rest[..cut].rfind('@').or_else(|| rest.rfind('@'))
}

/// `spec` as an error may show it when it is taken for a file name: a
/// `password=` or `sslpassword=` value in it (a connection string with a
/// misspelt first key, say) replaced by `***`, a URL masked as
/// [`redacted`] does, and what looks like user information without a
/// `://` (`postgresql:/u:pw@host`, `u:pw@host:5432/db`) masked from its
/// first `:` to its last `@`. It may mask more than a password: a file
/// name with both in it is rare, a password shown is not taken back.
pub(crate) fn masked(spec: &str) -> String {
    if spec.contains("://") {
        return masked_pairs(&redacted(spec));
    }
    let userinfo = spec
        .rfind('@')
        .and_then(|at| Some((spec[..at].find(':')?, at)));
    match userinfo {
        Some((colon, at)) => masked_pairs(&format!("{}:***{}", &spec[..colon], &spec[at..])),
        None => masked_pairs(spec),
    }
}

/// `text` with the value of every `password=` (any case, spaces around
/// the `=`, at the start or after a space) replaced by `***`; a value may
/// be quoted with `'` and hold `\'`. The rest is kept byte for byte.
fn masked_pairs(text: &str) -> String {
    const KEYS: [&str; 2] = ["password", "sslpassword"];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut at_boundary = true;
    while let Some(c) = rest.chars().next() {
        let value = KEYS.iter().find_map(|key_name| {
            rest.get(..key_name.len())
                .filter(|key| at_boundary && key.eq_ignore_ascii_case(key_name))
                .and_then(|key| rest[key.len()..].trim_start().strip_prefix('='))
        });
        if let Some(value) = value {
            // The key, the spaces and the `=`, as written.
            out.push_str(&rest[..rest.len() - value.len()]);
            let spaces = value.len() - value.trim_start().len();
            out.push_str(&value[..spaces]);
            out.push_str("***");
            rest = skip_value(value.trim_start());
            at_boundary = false;
            continue;
        }
        out.push(c);
        at_boundary = c.is_whitespace();
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// `text` after the connection-string value it starts with: quoted with
/// `'` (with `\'` inside), or up to the next space.
fn skip_value(text: &str) -> &str {
    let Some(quoted) = text.strip_prefix('\'') else {
        let end = text.find(char::is_whitespace).unwrap_or(text.len());
        return &text[end..];
    };
    let mut chars = quoted.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '\'' => return &quoted[at + 1..],
            _ => {}
        }
    }
    ""
}

/// A key/value connection string with the value of `password` replaced by
/// `***` (values may be quoted with `'` and hold `\'`).
fn redacted_key_value(spec: &str) -> String {
    let mut out = String::new();
    let mut chars = spec.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut key = String::new();
        while let Some(c) = chars.next_if(|&c| c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        if key.is_empty() && chars.peek().is_none() {
            return out;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'=').is_some() {
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            if chars.next_if_eq(&'\'').is_some() {
                value.push('\'');
                while let Some(c) = chars.next() {
                    value.push(c);
                    match c {
                        '\\' => value.extend(chars.next()),
                        '\'' => break,
                        _ => {}
                    }
                }
            } else {
                while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                    value.push(c);
                }
            }
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&key);
        out.push('=');
        out.push_str(if key == "password" { "***" } else { &value });
        if key.is_empty() {
            // A stray `=`: nothing more to read as pairs.
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked_in_urls_and_key_value_strings() {
        assert_eq!(
            redacted("mysql://root:pw@db:3306/x"),
            "mysql://root:***@db:3306/x"
        );
        assert_eq!(redacted("mysql://root@db/x"), "mysql://root@db/x");
        assert_eq!(redacted("redis://:pw@db"), "redis://:***@db");
        assert_eq!(
            redacted("pg://db/x?sslmode=require&PASSWORD=pw"),
            "pg://db/x?sslmode=require&PASSWORD=***"
        );
        assert_eq!(
            redacted("host=db password='a \\' b' user=saga"),
            "host=db password=*** user=saga"
        );
        assert_eq!(redacted("password = pw"), "password=***");
        // A `/`, `?` or `#` in an unencoded password, of any scheme.
        assert_eq!(
            redacted("postgress://u:Hunter2/Secret@host/db"),
            "postgress://u:***@host/db"
        );
        assert_eq!(
            redacted("postgres://u:a?b#c@host/db?sslmode=require"),
            "postgres://u:***@host/db?sslmode=require"
        );
        assert_eq!(
            redacted("postgres://u:p@ss@host/db?application_name=a@b"),
            "postgres://u:***@host/db?application_name=a@b"
        );
        assert_eq!(
            redacted("postgres://host/db?application_name=a@b"),
            "postgres://host/db?application_name=a@b"
        );
        assert!(is_key_value("host=db dbname=x"));
        assert!(is_key_value(" user = saga"));
        assert!(!is_key_value("sagas.db"));
        assert!(!is_key_value("hostname=x.db"));
    }

    #[test]
    fn a_password_in_what_is_taken_for_a_path_is_masked() {
        assert_eq!(
            masked("hots=127.0.0.1 password=Hunter2 user=x"),
            "hots=127.0.0.1 password=*** user=x"
        );
        assert_eq!(
            masked("hots=db Password = 'a \\' b' user=x"),
            "hots=db Password = *** user=x"
        );
        assert_eq!(masked("sagas.db"), "sagas.db");
        assert_eq!(masked("/srv/my sagas.db"), "/srv/my sagas.db");
        assert_eq!(masked("/srv/passwords.db"), "/srv/passwords.db");
        assert_eq!(masked("x password="), "x password=***");
        assert_eq!(
            masked("see postgress://u:Hunter2/x@host/db"),
            "see postgress://u:***@host/db"
        );
        // User information without `://`, and libpq's other password key.
        assert_eq!(
            masked("postgresql:/saga:Hunter2@db.internal/sagas"),
            "postgresql:***@db.internal/sagas"
        );
        assert_eq!(
            masked("saga:Hunter2@db.internal:5432/sagas"),
            "saga:***@db.internal:5432/sagas"
        );
        assert_eq!(
            masked("hots=db sslpassword=Hunter2 user=x"),
            "hots=db sslpassword=*** user=x"
        );
        assert_eq!(masked("/srv/me@host.db"), "/srv/me@host.db");
    }
}
