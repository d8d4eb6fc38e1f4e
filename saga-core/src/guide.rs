//! The guides, as in the repository's `docs/` folder (copied into this
//! package by `scripts/sync-docs.sh`, so they are here on docs.rs too).

#[doc = include_str!("../docs/DESIGN.md")]
pub mod design {}

#[doc = include_str!("../docs/MACROS.md")]
pub mod macros {}

#[doc = include_str!("../docs/OPERATIONS.md")]
pub mod operations {}
