//! The analyses built on computed series and on their own queries: the metric tree and its
//! comparisons, decomposition of a change, segments, targets, guardrails, retention and the
//! discovery of value moments.
//!
//! The top layer: it may import every other layer, and none imports it (except that the
//! cache stores the retention metric's series, which `analysis::retention` computes).

pub mod decompose;
pub mod discovery;
pub mod guardrails;
pub mod retention;
pub mod segments;
pub mod targets;
pub mod tree;
