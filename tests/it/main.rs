//! The end-to-end tests: the `lodestar` binary run as a user runs it, on fixture projects.
//!
//! One test binary for the whole crate (as ripgrep and uv keep one), with modules:
//! `cases` (data-driven: `tests/cases/*`), `errors` (`tests/errors/*`, with snapshots of
//! the messages in `snapshots/`), `cli` (each subcommand and option), `plugins` (connector
//! plugins loaded from real shared libraries), `s3` (the S3 connector against an in-process S3
//! server), `postgres` (the Postgres connector against a throwaway
//! cluster that `postgres_server` runs), `amplitude` (the Amplitude connector against an
//! Export API server on loopback, export files and the S3 server), `report` (the HTML report,
//! rendered in headless Chromium), `refresh` (incremental refresh through the result
//! cache), `reliability` (corrupt Parquet, a full disk while writing a report, an output
//! file or the cache; docs/reliability.md is the catalogue), `server` (`lodestar serve` over
//! HTTP), `server_ops` (its memory limit, background refresh, graceful stop, and a
//! Postgres-backed project), `server_bounds` (the caps on what a request may ask, and what a
//! read token may see), `server_report` (the HTML report and the dashboard's overview over
//! HTTP), `server_load` (a bounded load test on loopback that prints
//! throughput and latency), `support` (helpers).

mod amplitude;
mod cases;
mod cli;
mod dashboard;
mod discover;
mod errors;
mod files_partitions;
mod plugins;
mod postgres;
mod postgres_server;
mod refresh;
mod reliability;
mod report;
mod retention;
mod s3;
mod segments;
mod server;
mod server_bounds;
mod server_load;
mod server_ops;
mod server_report;
mod support;
