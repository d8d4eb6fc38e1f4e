//! [`Context`]: the default context, a typed key-value map.

use std::any::{Any, type_name};
use std::collections::HashMap;
use std::fmt;

/// A typed key-value map, the default context of a saga.
///
/// For users who like the dynamic style of the original package: steps put
/// values in by key and read them back by key and type. A missing key or a
/// wrong type is an error value ([`ContextError`]), never a panic, and it
/// converts into a step error with `?`. Any user type works as a context
/// just as well; a struct is usually clearer.
///
/// ```
/// use saga_core::{Context, ContextError};
///
/// let mut ctx = Context::new();
/// ctx.insert("order_id", 42_u64);
/// assert_eq!(ctx.get::<u64>("order_id"), Ok(&42));
/// *ctx.get_mut::<u64>("order_id").unwrap() += 1;
/// assert_eq!(ctx.remove::<u64>("order_id"), Ok(43));
/// assert!(matches!(ctx.get::<u64>("order_id"), Err(ContextError::Missing { .. })));
/// ```
#[derive(Default)]
pub struct Context {
    values: HashMap<String, Entry>,
}

struct Entry {
    value: Box<dyn Any + Send + Sync>,
    type_name: &'static str,
}

impl Context {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value` under `key`, replacing (and returning whether there
    /// was) an earlier value of any type.
    pub fn insert<T: Any + Send + Sync>(&mut self, key: impl Into<String>, value: T) -> bool {
        let entry = Entry {
            value: Box::new(value),
            type_name: type_name::<T>(),
        };
        self.values.insert(key.into(), entry).is_some()
    }

    /// The value under `key`.
    ///
    /// # Errors
    /// [`ContextError::Missing`] if there is none, [`ContextError::WrongType`]
    /// if it is not a `T`.
    pub fn get<T: Any>(&self, key: &str) -> Result<&T, ContextError> {
        let entry = self.values.get(key).ok_or_else(|| missing(key))?;
        entry
            .value
            .downcast_ref::<T>()
            .ok_or_else(|| wrong_type::<T>(key, entry.type_name))
    }

    /// The value under `key`, mutably.
    ///
    /// # Errors
    /// As [`get`](Context::get).
    pub fn get_mut<T: Any>(&mut self, key: &str) -> Result<&mut T, ContextError> {
        let entry = self.values.get_mut(key).ok_or_else(|| missing(key))?;
        let found = entry.type_name;
        entry
            .value
            .downcast_mut::<T>()
            .ok_or_else(|| wrong_type::<T>(key, found))
    }

    /// Takes the value under `key` out of the context. A value of another
    /// type stays where it is.
    ///
    /// # Errors
    /// As [`get`](Context::get).
    pub fn remove<T: Any>(&mut self, key: &str) -> Result<T, ContextError> {
        self.get::<T>(key)?;
        let entry = self.values.remove(key).ok_or_else(|| missing(key))?;
        entry
            .value
            .downcast::<T>()
            .map(|b| *b)
            .map_err(|_| wrong_type::<T>(key, entry.type_name))
    }

    /// Whether there is a value under `key`, of any type.
    pub fn contains_key(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the context holds no values.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<(&String, &str)> =
            self.values.iter().map(|(k, e)| (k, e.type_name)).collect();
        keys.sort();
        f.debug_map().entries(keys).finish()
    }
}

fn missing(key: &str) -> ContextError {
    ContextError::Missing {
        key: key.to_owned(),
    }
}

fn wrong_type<T>(key: &str, found: &'static str) -> ContextError {
    ContextError::WrongType {
        key: key.to_owned(),
        expected: type_name::<T>(),
        found,
    }
}

/// A [`Context`] lookup that found nothing usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    /// No value under the key.
    #[error("context has no value under `{key}`")]
    Missing {
        /// The key asked for.
        key: String,
    },
    /// A value of another type under the key.
    #[error("context value `{key}` is a `{found}`, not a `{expected}`")]
    WrongType {
        /// The key asked for.
        key: String,
        /// The type asked for.
        expected: &'static str,
        /// The type stored.
        found: &'static str,
    },
}
