//! The project: what a `lodestar.yaml` says (its metrics, sources, tree, targets and cache
//! settings), the errors of the whole core, calendar periods, and atomic file writes.
//!
//! This layer imports nothing else of the core; every other layer may import it.

pub mod atomic;
pub mod config;
pub mod error;
pub mod model;
pub mod periods;
