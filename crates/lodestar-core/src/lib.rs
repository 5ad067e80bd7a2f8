//! The Lodestar engine: metric definitions in, Arrow tables out.
//!
//! [`config::load`] reads a project file into a [`model::Project`]; [`Engine::open`] connects
//! its sources to a DataFusion context; [`Engine::compute`] answers a [`MetricRequest`].

pub mod atomic;
pub mod bounds;
pub mod compute;
pub mod config;
pub mod connect;
pub mod decompose;
pub mod discovery;
pub mod engine;
pub mod error;
// For crates/lodestar-fuzz only: a few internal parsers as plain functions (see the module).
pub mod cache;
#[doc(hidden)]
pub mod fuzzing;
pub mod guardrails;
pub mod model;
pub mod periods;
pub mod request;
pub mod retention;
pub mod segments;
mod sql;
pub mod targets;
pub mod tree;

pub use compute::{CacheUse, MetricRequest, MetricTable, Scanned};
pub use datafusion;
pub use engine::Engine;
pub use error::{Error, Result};
pub use segments::{Segment, SegmentAnalysis, SegmentMethod, SegmentRequest};
pub use tree::{Compare, GuardrailStatus, Link, MetricTree, TreeNode, TreeRequest};
