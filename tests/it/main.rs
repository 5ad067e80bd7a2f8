//! The end-to-end tests: the `lodestar` binary run as a user runs it, on fixture projects.
//!
//! One test binary for the whole crate (as ripgrep and uv keep one), with modules:
//! `cases` (data-driven: `tests/cases/*`), `errors` (`tests/errors/*`, with snapshots of
//! the messages in `snapshots/`), `cli` (each subcommand and option), `plugins` (connector
//! plugins loaded from real shared libraries), `support` (helpers).

mod cases;
mod cli;
mod errors;
mod plugins;
mod retention;
mod support;
