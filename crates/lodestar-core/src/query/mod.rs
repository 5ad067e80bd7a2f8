//! The query: a request's vocabulary and bounds, the engine that holds the connected sources,
//! the SQL text of scans, and computing a metric series (planning the scans, running them,
//! assembling the parts on a time spine).
//!
//! It imports `project` and `connect`; its entry point `Engine::compute` also reads and
//! writes through the result `cache`.

pub mod bounds;
pub mod compute;
pub mod engine;
pub mod request;
pub(crate) mod sql;
