//! Opening a store: the SQLite file or PostgreSQL URL named by `--store`.

use std::path::Path;
use std::sync::Arc;

use saga_core::store::{SagaStore, SqliteOptions, SqliteStore};

use crate::CliError;

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
