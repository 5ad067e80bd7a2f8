//! Replays the committed fuzz inputs on stable Rust: every file of `fuzz/seeds/<target>/` and
//! `fuzz/regressions/<target>/` through the target's function. A crash the fuzzer found stays
//! fixed because its input lives in `fuzz/regressions/` and runs here with `cargo test`.

use std::fs;
use std::panic::catch_unwind;
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Names of the entries of `dir` (sorted), with their paths.
fn entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(read) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut entries: Vec<(String, PathBuf)> = read
        .map(|e| {
            let path = e.expect("a readable directory entry").path();
            let name = path
                .file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            (name, path)
        })
        .collect();
    entries.sort();
    entries
}

/// Replays every input under `dir/<target>/`; returns how many ran, and the failures.
fn replay(dir: &Path) -> (usize, Vec<String>) {
    let mut ran = 0;
    let mut failures = Vec::new();
    for (target, path) in entries(dir).into_iter().filter(|(_, p)| p.is_dir()) {
        let Some(function) = lodestar_fuzz::target(&target) else {
            failures.push(format!(
                "{}: no target `{target}` in lodestar_fuzz::TARGETS",
                path.display()
            ));
            continue;
        };
        for (_, input) in entries(&path).into_iter().filter(|(_, p)| p.is_file()) {
            let data = fs::read(&input).expect("a readable input");
            ran += 1;
            if catch_unwind(|| function(&data)).is_err() {
                failures.push(format!("{}: `{target}` panicked", input.display()));
            }
        }
    }
    (ran, failures)
}

#[test]
fn every_regression_input_runs_without_a_panic() {
    let (ran, failures) = replay(&fuzz_dir().join("regressions"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("{ran} regression inputs replayed");
}

#[test]
fn every_seed_input_runs_without_a_panic() {
    let (ran, failures) = replay(&fuzz_dir().join("seeds"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        ran > 0,
        "no seed inputs under {}",
        fuzz_dir().join("seeds").display()
    );
}

/// The fuzz targets, `TARGETS`, the `[[bin]]`s of `fuzz/Cargo.toml` and the seed
/// directories name the same targets, so that `cargo xtask fuzz` (which lists
/// `fuzz/fuzz_targets/`) runs every function and every function has a target.
#[test]
fn targets_agree_with_the_fuzz_crate() {
    let dir = fuzz_dir();
    let files: Vec<String> = entries(&dir.join("fuzz_targets"))
        .into_iter()
        .filter_map(|(name, _)| name.strip_suffix(".rs").map(str::to_string))
        .collect();
    let mut functions: Vec<String> = lodestar_fuzz::TARGETS
        .iter()
        .map(|(name, _)| name.to_string())
        .collect();
    functions.sort();
    assert_eq!(
        files, functions,
        "fuzz/fuzz_targets/*.rs against lodestar_fuzz::TARGETS"
    );
    let manifest = fs::read_to_string(dir.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for name in &files {
        assert!(
            manifest.contains(&format!(
                "name = \"{name}\"\npath = \"fuzz_targets/{name}.rs\""
            )),
            "fuzz/Cargo.toml has no [[bin]] for `{name}`"
        );
        assert!(
            !entries(&dir.join("seeds").join(name)).is_empty(),
            "no seed inputs in fuzz/seeds/{name}/"
        );
        let target = format!("lodestar_fuzz::{name}(data)");
        let source = fs::read_to_string(dir.join("fuzz_targets").join(format!("{name}.rs")))
            .expect("the target's file");
        assert!(
            source.contains(&target),
            "fuzz_targets/{name}.rs does not call {target}"
        );
    }
}
