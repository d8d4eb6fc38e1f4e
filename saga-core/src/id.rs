//! [`ExecutionId`]: names one run of a saga.

use std::cmp::Ordering as Order;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The id of one execution (one run) of a saga; part of every step's
/// idempotency key. Cheap to clone.
///
/// Generated ids are 32 hex digits, unique across processes with
/// overwhelming likelihood (a per-process random seed and a counter).
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

    /// A fresh id.
    pub fn generate() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let seed = *SEED.get_or_init(process_seed);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let hi = mix(seed ^ n.rotate_left(17));
        let lo = mix(seed.wrapping_add(n));
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
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
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

/// splitmix64's finalizer: spreads a counter over all 64 bits.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn process_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS's randomness: a portable source of
    // entropy without another dependency. This is for uniqueness, never for
    // anything stored and compared later.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(t.as_nanos());
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_digits_match_format() {
        for (hi, lo) in [
            (0, 0),
            (1, 0xf),
            (u64::MAX, 0x0123_4567_89ab_cdef),
            (mix(7), mix(8)),
            (0xfedc_ba98_7654_3210, 0xa9a9_0909_afaf_9f9f),
        ]
        .into_iter()
        .chain((0..1000).map(|n| (mix(n), mix(n ^ 0xff))))
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
}
