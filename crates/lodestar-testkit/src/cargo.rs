//! Cargo started from inside a cargo command: `cargo xtask` running the test suite, a test
//! building the `lodestar` binary or the plugins.
//!
//! `cargo run` and `cargo test` give the program they start its package's variables
//! (`CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`, …). Build scripts read some of them (`ring`
//! declares `rerun-if-env-changed` on `CARGO_PKG_NAME` and others), and cargo compares them
//! with its own environment: a nested build that inherits them reruns those scripts and
//! rebuilds what depends on them, half of DataFusion, and the next build from a shell rebuilds
//! it all again. A nested cargo leaves them out, so that every build of a package, nested or
//! not, is the same one.
//!
//! xtask uses this file too (by path: it depends on nothing of the workspace), so it stays
//! free of dependencies.

use std::process::Command;

/// Whether `cargo run` or `cargo test` sets `key` for the program it starts.
pub fn is_set_by_cargo(key: &str) -> bool {
    key == "CARGO"
        || key == "CARGO_PRIMARY_PACKAGE"
        || [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|prefix| key.starts_with(prefix))
}

/// `cargo`: the one that started this process (`$CARGO`, so the same toolchain), else the
/// one on `PATH`, without the variables of [`is_set_by_cargo`].
pub fn command() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(program);
    clear_package_variables(&mut command);
    command
}

/// Removes the variables of [`is_set_by_cargo`] from what `command` inherits.
pub fn clear_package_variables(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if let Some(key) = key.to_str()
            && is_set_by_cargo(key)
        {
            command.env_remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_variables_are_cleared_and_others_kept() {
        for key in [
            "CARGO",
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_LINKS",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
            "CARGO_PRIMARY_PACKAGE",
        ] {
            assert!(is_set_by_cargo(key), "{key}");
        }
        for key in [
            "CARGO_TARGET_DIR",
            "CARGO_HOME",
            "CARGO_INCREMENTAL",
            "PATH",
            "RUSTFLAGS",
        ] {
            assert!(!is_set_by_cargo(key), "{key}");
        }
    }
}
