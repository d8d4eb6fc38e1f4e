//! [`ExecutionId`]: names one run of a saga.

use std::cmp::Ordering as Order;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The id of one execution (one run) of a saga; part of every step's
/// idempotency key. Cheap to clone.
///
/// Generated ids are 32 lowercase hex digits laid out as a uuid v7 (RFC
/// 9562) in its simple form: 48 bits of Unix time in milliseconds, then
/// the version and variant bits around 74 random bits from a per-thread
/// generator seeded from the OS. Two processes started together get
/// different ids; ids generated later sort after earlier ones (at
/// millisecond grain), which keeps index inserts in stores local.
///
/// Ids compare, order and hash as their text, whether chosen or generated.
///
/// A chosen id is any text but an empty one or one holding a control
/// character (NUL, a newline, an escape): [`SagaEngine::start_with_id`]
/// and [`SagaEngine::submit_with_id`] refuse those with
/// [`EngineError::InvalidId`]. Every other call takes any id, so an
/// execution stored under one by 0.1, which took any text, stays
/// reachable.
///
/// [`SagaEngine::start_with_id`]: crate::SagaEngine::start_with_id
/// [`SagaEngine::submit_with_id`]: crate::SagaEngine::submit_with_id
/// [`EngineError::InvalidId`]: crate::EngineError::InvalidId
#[derive(Clone)]
pub struct ExecutionId(Repr);

#[derive(Clone)]
enum Repr {
    /// Chosen by the caller.
    Given(Arc<str>),
    /// Generated: its 32 hex digits inline, so a run's start allocates
    /// nothing for its id (an `Arc<str>` costs an allocation, its free and
    /// a UTF-8 check on every run).
    Generated([u8; 32]),
}

impl ExecutionId {
    /// An id of the caller's choosing (an order number, a request id), so a
    /// retried start names the same execution.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        ExecutionId(Repr::Given(id.into()))
    }

    /// A fresh id: a uuid v7, written as 32 hex digits.
    pub fn generate() -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        // Ten random bytes from the thread's own generator: no lock and no
        // shared write (`Uuid::now_v7` takes a process-wide lock for its
        // counter on every id).
        let mut random = [0u8; 10];
        random[..8].copy_from_slice(&fastrand::u64(..).to_le_bytes());
        random[8..].copy_from_slice(&fastrand::u16(..).to_le_bytes());
        let (hi, lo) = uuid::Builder::from_unix_timestamp_millis(millis, &random)
            .into_uuid()
            .as_u64_pair();
        // Written by hand: `format!` then `Arc<str>` costs two allocations
        // and a reallocation on every run's start.
        ExecutionId(Repr::Generated(hex_digits(hi, lo)))
    }

    /// Why no new execution may be given this id, if none may: an empty
    /// id, or one holding a control character (C0 with NUL, newline and
    /// escape; DEL; C1), which PostgreSQL (NUL), log lines, terminals and
    /// the services that receive idempotency keys (HTTP headers) cannot
    /// all carry as they are. Only new executions are checked: one stored
    /// under such an id (0.1 took any text) stays reachable by it.
    pub(crate) fn unfit(&self) -> Option<String> {
        let Repr::Given(id) = &self.0 else {
            return None;
        };
        if id.is_empty() {
            return Some("it is empty".to_owned());
        }
        let control = id.chars().find(|c| c.is_control())?;
        Some(format!(
            "it holds a control character (`\\u{{{:x}}}`)",
            u32::from(control)
        ))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Given(id) => id,
            // Hex digits are ASCII: the check cannot fail (checked here, on
            // use, as the crate has no `unsafe` to skip it).
            Repr::Generated(text) => std::str::from_utf8(text).expect("hex digits are ascii"),
        }
    }
}

impl PartialEq for ExecutionId {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Repr::Generated(a), Repr::Generated(b)) => a == b,
            _ => self.as_str() == other.as_str(),
        }
    }
}

impl Eq for ExecutionId {}

impl Hash for ExecutionId {
    /// As its text hashes (`str`'s bytes, then `0xff`), without the UTF-8
    /// check of [`as_str`](Self::as_str): a store's map hashes the id on
    /// every write.
    fn hash<H: Hasher>(&self, state: &mut H) {
        let bytes: &[u8] = match &self.0 {
            Repr::Given(id) => id.as_bytes(),
            Repr::Generated(text) => text,
        };
        state.write(bytes);
        state.write_u8(0xff);
    }
}

impl PartialOrd for ExecutionId {
    fn partial_cmp(&self, other: &Self) -> Option<Order> {
        Some(self.cmp(other))
    }
}

impl Ord for ExecutionId {
    fn cmp(&self, other: &Self) -> Order {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl fmt::Debug for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExecutionId({})", self.as_str())
    }
}

impl From<&str> for ExecutionId {
    fn from(id: &str) -> Self {
        ExecutionId::new(id)
    }
}

impl From<String> for ExecutionId {
    fn from(id: String) -> Self {
        ExecutionId::new(id)
    }
}

/// Any text is an id (what [`ExecutionId::new`] takes), so parsing never
/// fails: `"order-42".parse::<ExecutionId>()`, or an axum `Path<ExecutionId>`.
impl std::str::FromStr for ExecutionId {
    type Err = std::convert::Infallible;

    fn from_str(id: &str) -> Result<Self, Self::Err> {
        Ok(ExecutionId::new(id))
    }
}

/// Serialized as its text.
impl serde::Serialize for ExecutionId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ExecutionId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(ExecutionId::from)
    }
}

/// `{hi:016x}{lo:016x}`, without the formatting machinery.
fn hex_digits(hi: u64, lo: u64) -> [u8; 32] {
    let mut text = [0u8; 32];
    text[..16].copy_from_slice(&hex_word(hi).to_be_bytes());
    text[16..].copy_from_slice(&hex_word(lo).to_be_bytes());
    text
}

/// The 16 lowercase hex digits of `x`, most significant first in the
/// big-endian bytes: all digits at once (SWAR), no loop, no table.
fn hex_word(x: u64) -> u128 {
    const ONES: u128 = u128::MAX / 0xff; // 0x0101...01
    // Spread the nibbles, one to a byte: nibble i goes to byte i.
    let mut y = u128::from(x);
    y = (y | (y << 32)) & 0x0000_0000_ffff_ffff_0000_0000_ffff_ffff;
    y = (y | (y << 16)) & 0x0000_ffff_0000_ffff_0000_ffff_0000_ffff;
    y = (y | (y << 8)) & 0x00ff_00ff_00ff_00ff_00ff_00ff_00ff_00ff;
    y = (y | (y << 4)) & (ONES * 0x0f);
    // A byte d is at most 15, so d + 6 carries into bit 4 exactly when
    // d >= 10, and never into the next byte.
    let letters = ((y + ONES * 6) >> 4) & ONES;
    // '0' + d for a digit, 'a' + d - 10 = '0' + d + 0x27 for a letter.
    y + ONES * u128::from(b'0') + letters * 0x27
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_hashes_as_its_text_does() {
        use std::collections::hash_map::DefaultHasher;
        let hash = |value: &dyn Fn(&mut DefaultHasher)| {
            let mut hasher = DefaultHasher::new();
            value(&mut hasher);
            hasher.finish()
        };
        let generated = ExecutionId::generate();
        let given = ExecutionId::new("order-42");
        for (id, text) in [(&generated, generated.as_str()), (&given, "order-42")] {
            assert_eq!(hash(&|h| id.hash(h)), hash(&|h| text.hash(h)), "{text}");
        }
    }

    #[test]
    fn hex_digits_match_format() {
        for (hi, lo) in [
            (0, 0),
            (1, 0xf),
            (u64::MAX, 0x0123_4567_89ab_cdef),
            (0xfedc_ba98_7654_3210, 0xa9a9_0909_afaf_9f9f),
        ]
        .into_iter()
        .chain((0..1000).map(|_| (fastrand::u64(..), fastrand::u64(..))))
        {
            let text = hex_digits(hi, lo);
            assert_eq!(
                std::str::from_utf8(&text).unwrap(),
                format!("{hi:016x}{lo:016x}")
            );
        }
    }

    #[test]
    fn generated_and_given_ids_compare_and_hash_as_their_text() {
        use std::collections::hash_map::DefaultHasher;
        let hash = |id: &ExecutionId| {
            let mut hasher = DefaultHasher::new();
            id.hash(&mut hasher);
            hasher.finish()
        };
        let generated = ExecutionId::generate();
        let given = ExecutionId::new(generated.as_str());
        assert_eq!(generated, given);
        assert_eq!(given, generated);
        assert_eq!(generated.cmp(&given), Order::Equal);
        assert_eq!(hash(&generated), hash(&given));
        assert_eq!(
            hash(&generated),
            hash(&ExecutionId::from(generated.as_str()))
        );
        assert_eq!(generated.to_string(), given.to_string());
        assert_eq!(format!("{generated:?}"), format!("{given:?}"));
        let other = ExecutionId::generate();
        assert_ne!(generated, other);
        assert_eq!(
            generated.cmp(&other),
            generated.as_str().cmp(other.as_str())
        );
        for text in ["", "0", "zzzz", "order-17"] {
            let id = ExecutionId::from(text);
            assert_eq!(id.cmp(&generated), text.cmp(generated.as_str()), "{text}");
            assert_eq!(generated.cmp(&id), generated.as_str().cmp(text), "{text}");
            assert_ne!(id, generated);
        }
    }

    #[test]
    fn generated_ids_are_32_lowercase_hex_digits_and_distinct() {
        let a = ExecutionId::generate();
        let b = ExecutionId::generate();
        assert_ne!(a, b);
        for id in [&a, &b] {
            assert_eq!(id.as_str().len(), 32, "{id}");
            assert!(
                id.as_str()
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
                "{id}"
            );
        }
    }

    #[test]
    fn generated_ids_are_uuid_v7_with_distinct_halves() {
        let millis = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis()
        };
        let before = millis();
        let ids: Vec<ExecutionId> = (0..1000).map(|_| ExecutionId::generate()).collect();
        let after = millis();
        for id in &ids {
            let text = id.as_str();
            let (hi, lo) = text.split_at(16);
            assert_ne!(hi, lo, "{id}");
            let uuid = uuid::Uuid::parse_str(text).unwrap();
            assert_eq!(uuid.get_version_num(), 7, "{id}");
            assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122, "{id}");
            // The first 48 bits are the Unix time in milliseconds.
            let stamp = u128::from_str_radix(&text[..12], 16).unwrap();
            assert!(
                (before..=after).contains(&stamp),
                "{id}: {before}..={after}"
            );
        }
        let distinct: std::collections::HashSet<&str> = ids.iter().map(|id| id.as_str()).collect();
        assert_eq!(distinct.len(), ids.len());
    }
}
