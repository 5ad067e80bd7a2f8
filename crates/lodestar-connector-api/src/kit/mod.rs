//! The connector kit: plain Rust that the built-in `files` connector and every plugin share,
//! beside the ABI and independent of it (nothing here crosses the plugin boundary).
//!
//! - [`partition`]: the `time_partition` option (`time` one column or a list) and the
//!   rewrite of a filter on a time column into one on its `dt=YYYY-MM-DD` partitions;
//! - [`format`]: the file formats (Parquet, CSV, NDJSON), by name and by extension, and
//!   their DataFusion readers;
//! - [`secret`]: [`secret::Secret`] option values and the [`secret::Redactor`] that keeps
//!   them out of messages;
//! - [`error`]: an error and its `source()` chain as one line of text;
//! - [`plan`]: [`plan::WrapExec`], the one execution plan that wraps a connector's scan
//!   (another runtime, error mapping, panic guards).
//!
//! The host's side of the contract lives here too: the host reads a source's
//! `time_partition` with the same [`partition::TimePartition::from_json`] to know which time
//! columns prune partitions, so a plugin that declares the option must use this parser
//! (docs/connectors.md, "The connector kit").

pub mod error;
pub mod format;
pub mod partition;
pub mod plan;
pub mod secret;
