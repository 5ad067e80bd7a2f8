//! The Lodestar engine.
pub mod config;
pub mod connect;
pub mod error;
pub mod model;
pub mod periods;
pub use error::{Error, Result};
pub use datafusion;

