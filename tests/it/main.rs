//! The end-to-end tests: the `lodestar` binary run as a user runs it, on fixture projects.
//!
//! One test binary for the whole crate (as ripgrep and uv keep one), with a module per area;
//! `tests/README.md` lists them and what each checks.

mod amplitude;
mod cases;
mod cli;
mod cluster;
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
