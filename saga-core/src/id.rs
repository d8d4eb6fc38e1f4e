//! [`ExecutionId`]: names one run of a saga.

use std::cell::Cell;
use std::cmp::Ordering as Order;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The id of one execution (one run) of a saga; part of every step's
/// idempotency key. Cheap to clone.
///
/// Generated ids are 32 lowercase hex digits laid out as a uuid v7 (RFC
/// 9562) in its simple form: 48 bits of Unix time in milliseconds, then
/// the version and variant bits around 74 random bits from a per-thread
/// generator seeded from the OS. Two processes started together get
/// different ids; ids generated later sort after earlier ones (at
/// millisecond grain), which keeps index inserts in stores local. The id
/// of an in-memory run on the system clock is made at its start, its time
/// read from the instant the run starts at: the thread's last system clock
/// reading (at most a second old) plus the monotonic time since.
///
/// Ids compare, order and hash as their text, whether chosen or generated.
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
        Self::with_millis(unix_millis())
    }

    /// A fresh id as [`generate`](Self::generate) makes it, for a run that
    /// started at `now`, a reading of [`Instant::now`] just taken: its Unix
    /// time is `now`'s distance from a per-thread anchor (a system clock
    /// reading and the instant it was taken, renewed once it is a second
    /// old), so a run does not read the system clock for its id, only
    /// the monotonic clock it reads for its report anyway. Nothing is
    /// shared between threads.
    pub(crate) fn generate_at(now: Instant) -> Self {
        Self::with_millis(ANCHOR.with(|anchor| {
            // (std's subtraction, once a run: `crate::clock::elapsed` is in
            // a layer above this one.)
            let since = anchor.get().and_then(|(at, millis)| {
                now.checked_duration_since(at).map(|since| (since, millis))
            });
            if let Some((since, millis)) = since.filter(|(since, _)| *since < ANCHOR_LIFE) {
                return millis + u64::from(since.subsec_millis());
            }
            let millis = unix_millis();
            anchor.set(Some((now, millis)));
            millis
        }))
    }

    /// The id an in-memory run holds until its first poll, where
    /// [`generate_at`](Self::generate_at) makes its own (its text is not
    /// hex digits, so it is never mistaken for a generated one).
    pub(crate) const UNSET: ExecutionId = ExecutionId(Repr::Generated([0; 32]));

    /// Whether this is [`UNSET`](Self::UNSET).
    pub(crate) fn is_unset(&self) -> bool {
        matches!(&self.0, Repr::Generated(text) if text[0] == 0)
    }

    /// A uuid v7 of Unix time `millis`, with fresh random bits.
    fn with_millis(millis: u64) -> Self {
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
        f.write_str(self.as_str())
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

/// How long a thread's anchor of [`ExecutionId::generate_at`] serves: the
/// system clock is read again after it (under a second, so an id's time
/// is the anchor's plus the instant's sub-second part).
const ANCHOR_LIFE: Duration = Duration::from_secs(1);

thread_local! {
    /// The thread's last system clock reading for ids, in Unix
    /// milliseconds, and the instant it was taken.
    static ANCHOR: Cell<Option<(Instant, u64)>> = const { Cell::new(None) };
}

/// The system clock in Unix milliseconds.
fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
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
    fn ids_generated_at_a_run_start_are_uuid_v7_of_that_time() {
        let millis = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis()
        };
        // On a thread of its own: the first id reads the system clock (the
        // anchor), the others derive their time from it.
        let (before, ids, after) = std::thread::spawn(move || {
            let before = millis();
            let ids: Vec<ExecutionId> = (0..1000)
                .map(|_| ExecutionId::generate_at(Instant::now()))
                .collect();
            (before, ids, millis())
        })
        .join()
        .unwrap();
        let mut last = 0;
        for id in &ids {
            assert!(!id.is_unset(), "{id}");
            let uuid = uuid::Uuid::parse_str(id.as_str()).unwrap();
            assert_eq!(uuid.get_version_num(), 7, "{id}");
            assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122, "{id}");
            let stamp = u128::from_str_radix(&id.as_str()[..12], 16).unwrap();
            assert!(
                (before..=after).contains(&stamp),
                "{id}: {before}..={after}"
            );
            // Made later on one thread, never earlier in time.
            assert!(stamp >= last, "{id}");
            last = stamp;
        }
        let distinct: std::collections::HashSet<&str> = ids.iter().map(|id| id.as_str()).collect();
        assert_eq!(distinct.len(), ids.len());
    }

    #[test]
    fn an_instant_before_the_anchor_or_past_its_life_renews_it() {
        std::thread::spawn(|| {
            let now = Instant::now();
            let stamp = |id: &ExecutionId| u64::from_str_radix(&id.as_str()[..12], 16).unwrap();
            let anchored = stamp(&ExecutionId::generate_at(now));
            // Half a second on: derived from the anchor.
            let later = stamp(&ExecutionId::generate_at(now + Duration::from_millis(500)));
            assert_eq!(later, anchored + 500);
            // Past the anchor's life, or before it: the system clock again.
            for at in [now + Duration::from_secs(5), now - Duration::from_millis(1)] {
                let before = unix_millis();
                let renewed = stamp(&ExecutionId::generate_at(at));
                assert!((before..=unix_millis()).contains(&renewed));
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_unset_id_is_not_a_generated_one() {
        assert!(ExecutionId::UNSET.is_unset());
        assert!(!ExecutionId::generate().is_unset());
        assert!(!ExecutionId::new("order-42").is_unset());
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
