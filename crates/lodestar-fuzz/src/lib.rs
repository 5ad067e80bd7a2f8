//! Fuzz targets as plain functions, one per parser that reads outside input.
//!
//! Each target takes arbitrary bytes and must not panic on any of them: returning an error is
//! fine, a panic (or a failed invariant, which is an `assert!`) is a bug in the parser. The
//! cargo-fuzz crate in `fuzz/` calls these functions from `fuzz/fuzz_targets/<name>.rs`, and
//! `tests/regressions.rs` replays the committed inputs of `fuzz/seeds/<name>/` and
//! `fuzz/regressions/<name>/` through them on stable Rust, as part of `cargo test`.
//!
//! Adding a target: a function here, its entry in [`TARGETS`], `fuzz/fuzz_targets/<name>.rs`
//! with its `[[bin]]` in `fuzz/Cargo.toml`, and a few seed inputs in `fuzz/seeds/<name>/`.
//! The regression test checks that these agree.

mod amplitude;
mod bytes;
mod formula;
mod partition;
mod project;
mod server;

pub use amplitude::amplitude_line;
pub use formula::formula;
pub use partition::time_partition;
pub use project::project_file;
pub use server::server_params;

/// A target: arbitrary bytes in, a panic only on a bug.
pub type Target = fn(&[u8]);

/// Every target by the name of its file in `fuzz/fuzz_targets/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("amplitude_line", amplitude_line),
    ("formula", formula),
    ("project_file", project_file),
    ("server_params", server_params),
    ("time_partition", time_partition),
];

/// The target named `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}
