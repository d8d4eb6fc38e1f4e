//! Options of the PostgreSQL store: its schema, batch size, and whether
//! connecting may create or migrate it.

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
    pub(super) create_schema: bool,
    pub(super) migrate: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            schema: "saga".to_owned(),
            max_batch: 256,
            create_schema: true,
            migrate: true,
        }
    }
}

impl PostgresOptions {
    /// The defaults: schema `saga`, batches of up to 256 writes, the store
    /// created if there is none, an older schema migrated.
    pub fn new() -> Self {
        Self::default()
    }

    /// The PostgreSQL schema (namespace) the store's tables live in
    /// (default `saga`); created if missing (unless
    /// [`with_create_schema(false)`](Self::with_create_schema)). Lowercase letters, digits and
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

    /// Whether connecting creates the store when there is none: the schema
    /// if it does not exist, the tables in a schema that has none (default
    /// `true`, as a service starting on a fresh database wants). With
    /// `false`, such a schema is [`StoreError::NoStore`] and nothing is
    /// created, so a misspelt schema or a URL to the wrong database is an
    /// error rather than a new, empty store; an existing store of an
    /// older version is still migrated (unless
    /// [`with_migrate(false)`](Self::with_migrate)). Tools that mend a
    /// store (the `saga` command's `resume`, `abandon` and `cancel`)
    /// connect so.
    ///
    /// [`StoreError::NoStore`]: crate::store::StoreError::NoStore
    #[must_use]
    pub fn with_create_schema(mut self, create: bool) -> Self {
        self.create_schema = create;
        self
    }

    /// Whether connecting migrates a store of an older schema version
    /// (default: yes, as a service's own workers want: the first connection
    /// of a new version brings the schema up to date, under an advisory
    /// lock). With `false`, such a store is refused with
    /// [`StoreError::OlderSchema`] and left as it was. Tools that mend a
    /// store (the `saga` command's `resume`, `abandon` and `cancel`)
    /// connect so, and leave the migration to the service. Creating a
    /// store where there is none is
    /// [`with_create_schema`](Self::with_create_schema)'s business.
    ///
    /// [`StoreError::OlderSchema`]: crate::store::StoreError::OlderSchema
    #[must_use]
    pub fn with_migrate(mut self, yes: bool) -> Self {
        self.migrate = yes;
        self
    }
}
