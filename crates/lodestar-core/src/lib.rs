//! The Lodestar engine: metric definitions in, Arrow tables out.
//!
//! [`config::load`] reads a project file into a [`model::Project`]; [`Engine::open`] connects
//! its sources to a DataFusion context; [`Engine::compute`] answers a [`MetricRequest`].
//!
//! The core is in layers, each importing only those before it (docs/architecture.md):
//! [`project`] (the definitions, errors, periods), [`connect`] (sources as DataFusion
//! schemas), [`cluster`] (those sources on a Ballista cluster's nodes), [`query`] (requests, the engine, computing series), [`cache`] (the result cache)
//! and [`analysis`] (tree, decomposition, segments, targets, guardrails, retention, discovery).

pub mod analysis;
pub mod cache;
pub mod cluster;
pub mod connect;
// Numbers as text for people; imports nothing, so every layer and front-end shares it.
pub mod format;
// For crates/lodestar-fuzz only: a few internal parsers as plain functions (see the module).
#[doc(hidden)]
pub mod fuzzing;
pub mod project;
pub mod query;

// The short paths the front-ends use (`lodestar_core::config`, `lodestar_core::tree`, ...).
pub use analysis::{decompose, discovery, guardrails, retention, segments, targets, tree};
pub use project::{atomic, config, error, model, periods};
pub use query::{bounds, compute, engine, request};

pub use datafusion;
pub use error::{Error, Result};
pub use query::compute::{CacheUse, MetricRequest, MetricTable, Read, Scanned};
pub use query::engine::Engine;
pub use segments::{Segment, SegmentAnalysis, SegmentMethod, SegmentRequest};
pub use tree::{Compare, GuardrailStatus, Link, MetricTree, TreeNode, TreeRequest};
