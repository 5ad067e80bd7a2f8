//! The query: a request's vocabulary and bounds, the engine that holds the connected sources,
//! the SQL text of scans, and computing a metric series (planning the scans, running them,
//! assembling the parts on a time spine).
//!
//! It imports `project` and `connect`; its entry point `Engine::compute` also reads and
//! writes through the result `cache`.

pub(crate) mod assemble;
pub mod bounds;
pub mod compute;
pub(crate) mod distinct;
pub mod engine;
pub(crate) mod parse;
pub(crate) mod plan;
pub mod request;
pub(crate) mod scan;
pub(crate) mod sql;
pub(crate) mod table;
pub(crate) mod window;
