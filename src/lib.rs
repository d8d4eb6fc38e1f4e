//! The workspace's own package: it owns `examples/` and `tests/` and is
//! never published. Depend on `saga-core` instead.

// The README's code runs as a doctest, so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
