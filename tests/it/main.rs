//! The end-to-end tests: the `lodestar` binary run as a user runs it, on fixture projects.
//!
//! One test binary for the whole crate (as ripgrep and uv keep one), with modules:
//! `cases` (data-driven: `tests/cases/*`), `errors` (`tests/errors/*`, with snapshots of
//! the messages in `snapshots/`), `cli` (each subcommand and option), `plugins` (connector
//! plugins loaded from real shared libraries), `s3` (the S3 connector against an in-process S3
//! server), `postgres` (the Postgres connector against a throwaway
//! cluster that `postgres_server` runs), `amplitude` (the Amplitude connector against an
//! Export API server on loopback, export files and the S3 server), `report` (the HTML report,
//! rendered in headless Chromium), `server` (`lodestar serve` over HTTP), `support` (helpers).

mod amplitude;
mod cases;
mod cli;
mod dashboard;
mod discover;
mod errors;
mod plugins;
mod postgres;
mod postgres_server;
mod report;
mod retention;
mod s3;
mod segments;
mod server;
mod support;
