//! `project_file`: the project-file loader (YAML, `${VAR}` interpolation, the checks, the
//! formulas it parses) on arbitrary text, with a fixed small environment.

use std::path::Path;

use lodestar_core::config;
use lodestar_core::decompose::Formula;

/// The environment `${VAR}` reads: fixed, so that a run is reproducible.
fn env(name: &str) -> Option<String> {
    match name {
        "DATA_DIR" => Some("data".into()),
        "TOKEN" => Some("s3cret".into()),
        "EMPTY" => Some(String::new()),
        "DOLLAR" => Some("$".into()),
        "NESTED" => Some("${TOKEN}".into()),
        _ => None,
    }
}

/// Loads `data` as a project file. The loader reads the disk only for the file itself, which
/// is given as text here. An accepted project must load the same way twice, and every
/// formula it accepted must parse on its own.
pub fn project_file(data: &[u8]) {
    // The loader reads the file as UTF-8 text; other bytes never reach the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/fuzz/project/lodestar.yaml");
    match config::parse(text, path, &env) {
        Ok(project) => {
            let again = config::parse(text, path, &env).expect("accepted once, accepted again");
            assert_eq!(
                format!("{project:?}"),
                format!("{again:?}"),
                "not deterministic"
            );
            for (name, metric) in &project.metrics {
                if let Some(formula) = &metric.formula {
                    assert!(
                        Formula::parse(formula).is_ok(),
                        "metric `{name}`: the loader accepted formula `{formula}`, which does not parse"
                    );
                }
            }
        }
        Err(e) => {
            // Rendering the error (what a user sees) must not panic either.
            let _ = e.to_string();
        }
    }
}
