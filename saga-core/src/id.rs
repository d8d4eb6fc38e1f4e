//! [`ExecutionId`]: names one run of a saga.

use std::fmt;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The id of one execution (one run) of a saga; part of every step's
/// idempotency key. Cheap to clone.
///
/// Generated ids are 32 hex digits, unique across processes with
/// overwhelming likelihood (a per-process random seed and a counter).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExecutionId(Arc<str>);

impl ExecutionId {
    /// An id of the caller's choosing (an order number, a request id), so a
    /// retried start names the same execution.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        ExecutionId(id.into())
    }

    /// A fresh id.
    pub fn generate() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let seed = *SEED.get_or_init(process_seed);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let hi = mix(seed ^ n.rotate_left(17));
        let lo = mix(seed.wrapping_add(n));
        ExecutionId(format!("{hi:016x}{lo:016x}").into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExecutionId({})", self.0)
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
