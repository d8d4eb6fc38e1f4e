//! [`Context`]: the default context, a typed key-value map that a durable
//! saga can store.

use std::any::{Any, type_name};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A typed key-value map, the default context of a saga.
///
/// For users who like the dynamic style of the original package: steps put
/// values in by key and read them back by key and type. A missing key or a
/// wrong type is an error value ([`ContextError`]), never a panic, and it
/// converts into a step error with `?`. Any user type works as a context
/// just as well; a struct is usually clearer.
///
/// Values must be `Serialize + Deserialize`, so that a durable saga can log
/// the context: it serializes as a JSON object mapping each key to
/// `{"type": <the Rust type's name>, "value": <the value>}`. A context read
/// back from the log holds its values encoded and decodes each on its first
/// typed read (`get::<T>`); the stored type name only serves error
/// messages, decoding decides.
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
///
/// // Through JSON and back, as a durable saga's log does.
/// ctx.insert("sku", String::from("book-7"));
/// let json = serde_json::to_string(&ctx).unwrap();
/// let back: Context = serde_json::from_str(&json).unwrap();
/// assert_eq!(back.get::<String>("sku").map(String::as_str), Ok("book-7"));
/// ```
#[derive(Default)]
pub struct Context {
    values: HashMap<String, Entry>,
}

type Encode = fn(&(dyn Any + Send + Sync)) -> Result<Value, String>;

struct Entry {
    /// The value, once inserted or decoded.
    value: OnceLock<Box<dyn Any + Send + Sync>>,
    /// The value as read from the log, until a typed read decodes it.
    encoded: Option<Value>,
    /// The Rust type's name, for messages.
    type_name: String,
    /// Encodes `value`; set by every typed write.
    encode: Option<Encode>,
}

fn encoder<T: Serialize + 'static>() -> Encode {
    |value| match value.downcast_ref::<T>() {
        Some(value) => serde_json::to_value(value).map_err(|e| e.to_string()),
        None => Err(format!("internal error: not a `{}`", type_name::<T>())),
    }
}

impl Entry {
    /// The value as a `T`, decoding it on the first read. The first typed
    /// read of an encoded value fixes its type.
    fn typed<T: DeserializeOwned + Send + Sync + 'static>(
        &self,
        key: &str,
    ) -> Result<&T, ContextError> {
        let undecoded = match &self.encoded {
            Some(encoded) if self.value.get().is_none() => Some(encoded),
            _ => None,
        };
        if let Some(encoded) = undecoded {
            let decoded = serde_json::from_value::<T>(encoded.clone()).map_err(|e| {
                ContextError::Undecodable {
                    key: key.to_owned(),
                    expected: type_name::<T>(),
                    found: self.type_name.clone(),
                    detail: crate::redact::decode_message(&e.to_string()),
                }
            })?;
            let _ = self.value.set(Box::new(decoded));
        }
        self.value
            .get()
            .and_then(|v| v.downcast_ref::<T>())
            .ok_or_else(|| wrong_type::<T>(key, &self.type_name))
    }
}

impl Context {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value` under `key`, replacing (and returning whether there
    /// was) an earlier value of any type.
    pub fn insert<T>(&mut self, key: impl Into<String>, value: T) -> bool
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let entry = Entry {
            value: OnceLock::from(Box::new(value) as Box<dyn Any + Send + Sync>),
            encoded: None,
            type_name: type_name::<T>().to_owned(),
            encode: Some(encoder::<T>()),
        };
        self.values.insert(key.into(), entry).is_some()
    }

    /// The value under `key`.
    ///
    /// # Errors
    /// [`ContextError::Missing`] if there is none, [`ContextError::WrongType`]
    /// if it is not a `T`, [`ContextError::Undecodable`] if a value read
    /// back from a durable log does not decode as a `T`.
    pub fn get<T>(&self, key: &str) -> Result<&T, ContextError>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        self.values
            .get(key)
            .ok_or_else(|| missing(key))?
            .typed::<T>(key)
    }

    /// The value under `key`, mutably.
    ///
    /// # Errors
    /// As [`get`](Context::get).
    pub fn get_mut<T>(&mut self, key: &str) -> Result<&mut T, ContextError>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let entry = self.values.get_mut(key).ok_or_else(|| missing(key))?;
        entry.typed::<T>(key)?;
        // From now on the value, which may change, is the truth.
        entry.encoded = None;
        entry.encode = Some(encoder::<T>());
        let found = &entry.type_name;
        let error = wrong_type::<T>(key, found);
        entry
            .value
            .get_mut()
            .and_then(|v| v.downcast_mut::<T>())
            .ok_or(error)
    }

    /// Takes the value under `key` out of the context. A value of another
    /// type stays where it is.
    ///
    /// # Errors
    /// As [`get`](Context::get).
    pub fn remove<T>(&mut self, key: &str) -> Result<T, ContextError>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        self.get::<T>(key)?;
        let entry = self.values.remove(key).ok_or_else(|| missing(key))?;
        let found = entry.type_name.clone();
        entry
            .value
            .into_inner()
            .ok_or_else(|| missing(key))?
            .downcast::<T>()
            .map(|b| *b)
            .map_err(|_| wrong_type::<T>(key, &found))
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
        let mut keys: Vec<(&String, &str)> = self
            .values
            .iter()
            .map(|(k, e)| (k, e.type_name.as_str()))
            .collect();
        keys.sort();
        f.debug_map().entries(keys).finish()
    }
}

/// One value as stored: its type's name and its JSON.
#[derive(Serialize, Deserialize)]
struct Tagged {
    #[serde(rename = "type")]
    type_name: String,
    value: Value,
}

impl Serialize for Context {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut sorted = BTreeMap::new();
        for (key, entry) in &self.values {
            let value = match (entry.value.get(), entry.encode, &entry.encoded) {
                (_, _, Some(encoded)) => encoded.clone(),
                (Some(value), Some(encode), None) => encode(&**value).map_err(|e| {
                    serde::ser::Error::custom(format!("context value `{key}`: {e}"))
                })?,
                _ => {
                    return Err(serde::ser::Error::custom(format!(
                        "context value `{key}` cannot be encoded"
                    )));
                }
            };
            sorted.insert(
                key.as_str(),
                Tagged {
                    type_name: entry.type_name.clone(),
                    value,
                },
            );
        }
        sorted.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Context {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = HashMap::<String, Tagged>::deserialize(deserializer)?;
        let values = stored
            .into_iter()
            .map(|(key, tagged)| {
                let entry = Entry {
                    value: OnceLock::new(),
                    encoded: Some(tagged.value),
                    type_name: tagged.type_name,
                    encode: None,
                };
                (key, entry)
            })
            .collect();
        Ok(Context { values })
    }
}

fn missing(key: &str) -> ContextError {
    ContextError::Missing {
        key: key.to_owned(),
    }
}

fn wrong_type<T>(key: &str, found: &str) -> ContextError {
    ContextError::WrongType {
        key: key.to_owned(),
        expected: type_name::<T>(),
        found: found.to_owned(),
    }
}

/// A [`Context`] lookup that found nothing usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
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
        found: String,
    },
    /// A value read back from a durable log that does not decode as the
    /// type asked for (its type changed since it was stored, say).
    #[error(
        "context value `{key}` (stored as a `{found}`) does not decode as a `{expected}`: {detail}"
    )]
    Undecodable {
        /// The key asked for.
        key: String,
        /// The type asked for.
        expected: &'static str,
        /// The type name stored with it.
        found: String,
        /// The decoder's error, without the stored values it quotes (the
        /// kind of value, what was expected, field names are kept).
        detail: String,
    },
}
