//! Options of the PostgreSQL store: its schema and batch size.

/// Options of a [`PostgresStore`](super::PostgresStore).
///
/// ```
/// use saga_core::store::PostgresOptions;
///
/// let options = PostgresOptions::new().with_schema("orders_saga");
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    pub(super) schema: String,
    pub(super) max_batch: usize,
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
