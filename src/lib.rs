//! The workspace's own package: it owns `tests/` and `benches/` and is
//! never published (the examples are the `saga-examples` package, in
//! `examples/`). Depend on `saga-core` instead.

// The README's code runs as a doctest, so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
