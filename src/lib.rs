//! The workspace's own package: it owns `examples/` and `tests/` and is
//! never published. Depend on `saga-core` instead.
