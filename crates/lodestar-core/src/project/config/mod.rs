//! Reading `lodestar.yaml`: finding it, parsing it with source positions, `${ENV}`
//! interpolation and the small value parsers (days, sizes, fractions). The YAML shapes are in
//! `raw`, turning them into the model in `build`, the structural checks that need no data
//! (names, references, cycles, north stars) in `checks`.

mod build;
mod checks;
mod raw;

use std::path::{Path, PathBuf};

use crate::project::error::{Error, Location, Result};
pub use crate::project::model::CacheSettings;
use crate::project::model::Project;

use build::Builder;
use raw::RawProject;

/// The name `lodestar` looks for.
pub const PROJECT_FILE: &str = "lodestar.yaml";

/// At most this many north stars: a team that needs more has not chosen one.
pub const MAX_NORTH_STARS: usize = 3;

/// Finds `lodestar.yaml` in `start` or the nearest parent directory that has one.
pub fn find_project_file(start: &Path) -> Result<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join(PROJECT_FILE))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| Error::ProjectNotFound {
            start: start.to_path_buf(),
        })
}

/// Reads and checks a project file, taking `${VAR}` values from the process environment.
pub fn load(path: &Path) -> Result<Project> {
    let text = match fs_err::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::request_hint(
                format!("project file {} does not exist", path.display()),
                crate::query::request::Action::ChooseProject,
            ));
        }
        Err(e) => return Err(e.into()),
    };
    parse(&text, path, &|name| std::env::var(name).ok())
}

/// Parses project text. `path` is used for error locations and to resolve relative paths;
/// `env` answers `${VAR}` look-ups.
pub fn parse(text: &str, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Project> {
    let raw: RawProject = serde_saphyr::from_str(text).map_err(|e| syntax_error(&e, path))?;
    Builder { path, env }.build(raw)
}

fn syntax_error(e: &serde_saphyr::Error, path: &Path) -> Error {
    let (line, column) = e
        .location()
        .map(|l| (l.line() as u32, l.column() as u32))
        .unwrap_or((0, 0));
    let message = e.without_snippet().to_string();
    // serde-saphyr ends its messages with the position, which our prefix already says.
    let message = match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message,
    };
    // The parser's advice names its own options, which a project author cannot set.
    let message = match message.strip_prefix("duplicate mapping key: ") {
        Some(rest) => {
            let key = rest
                .split(", set DuplicateKeyPolicy")
                .next()
                .unwrap_or(rest);
            format!("`{key}` is defined twice; a name may appear once in its mapping")
        }
        None => message,
    };
    Error::Syntax {
        location: Location {
            file: path.to_path_buf(),
            line,
            column,
        },
        message,
    }
}

/// The cache directory when `cache:` does not name one.
pub const DEFAULT_CACHE_DIR: &str = ".lodestar-cache";

/// The look-back when `cache:` does not give one, in days.
pub const DEFAULT_CACHE_LOOKBACK: u32 = 3;

/// `${VAR}` and `${VAR:-default}`; `$$` is a literal `$`. Returns the missing variable's name.
fn interpolate_str(
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{')
            && let Some(end) = body.find('}')
        {
            let spec = &body[..end];
            let (var, default) = match spec.split_once(":-") {
                Some((v, d)) => (v, Some(d)),
                None => (spec, None),
            };
            match env(var)
                .filter(|v| !v.is_empty())
                .or(default.map(str::to_string))
            {
                Some(value) => out.push_str(&value),
                None => return Err(var.to_string()),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `5%`, `0.05` or `5 %` as a fraction.
fn parse_fraction(value: &serde_json::Value) -> Option<f64> {
    let fraction = match value {
        serde_json::Value::Number(n) => n.as_f64()?,
        serde_json::Value::String(s) => match s.trim().strip_suffix('%') {
            Some(percent) => percent.trim().parse::<f64>().ok()? / 100.0,
            None => s.trim().parse().ok()?,
        },
        _ => return None,
    };
    (fraction.is_finite() && fraction >= 0.0).then_some(fraction)
}

/// `28d`, `4w`, or a bare number of days.
fn parse_days(s: &str) -> Option<u32> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], s[i..].trim()),
        None => (s, "d"),
    };
    let n: u32 = num.parse().ok().filter(|n| *n > 0)?;
    match unit {
        "d" | "day" | "days" => Some(n),
        "w" | "week" | "weeks" => n.checked_mul(7),
        _ => None,
    }
}

/// A look-back: `3d`, `1w`, `0d`, or a bare number of days (0 allowed).
fn parse_lookback(value: &serde_json::Value) -> Option<u32> {
    match value {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => {
            let zero = matches!(s.trim(), "0" | "0d" | "0w" | "0 days");
            if zero { Some(0) } else { parse_days(s) }
        }
        _ => None,
    }
}

/// A YAML scalar as written, without JSON quotes.
fn plain(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A size: `512MiB`, `4GiB`, `2GB`, or bytes (as `engine.memory_limit` is written).
pub fn parse_bytes(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let num: f64 = s[..split].parse().ok()?;
    let mult: f64 = match s[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0_f64.powi(4),
        _ => return None,
    };
    Some((num * mult) as usize)
}

/// Environment look-ups for tests.
#[cfg(test)]
pub(crate) fn env_from(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_env_with_defaults_and_escapes() {
        let env = env_from(&[("HOST", "db.internal")]);
        assert_eq!(
            interpolate_str("pg://${HOST}:${PORT:-5432}/x$$y", &env).unwrap(),
            "pg://db.internal:5432/x$y"
        );
        assert_eq!(interpolate_str("${NOPE}", &env).unwrap_err(), "NOPE");
    }

    #[test]
    fn reads_windows_and_sizes() {
        assert_eq!(parse_days("28d"), Some(28));
        assert_eq!(parse_days("4w"), Some(28));
        assert_eq!(parse_days("0d"), None);
        assert_eq!(parse_days("3h"), None);
        assert_eq!(parse_bytes("2GiB"), Some(2 << 30));
        assert_eq!(parse_bytes("512MiB"), Some(512 << 20));
        assert_eq!(parse_bytes("lots"), None);
    }

    #[test]
    fn cluster_settings_are_ballista_keys_with_values_of_their_type() {
        let path = Path::new("lodestar.yaml");
        let env = env_from(&[]);
        let project = parse(
            "engine:\n  cluster_settings:\n    ballista.optimizer.broadcast_join_threshold_bytes: 0\n    ballista.job.name: nightly\n",
            path,
            &env,
        )
        .unwrap();
        assert_eq!(
            project
                .engine
                .cluster_settings
                .into_iter()
                .collect::<Vec<_>>(),
            [
                (
                    "ballista.optimizer.broadcast_join_threshold_bytes".to_string(),
                    "0".to_string()
                ),
                ("ballista.job.name".to_string(), "nightly".to_string())
            ]
        );
        let refused = |yaml: &str| parse(yaml, path, &env).unwrap_err().to_string();
        let message =
            refused("engine:\n  cluster_settings:\n    datafusion.execution.batch_size: 1\n");
        assert!(
            message.contains("lodestar.yaml:3")
                && message.contains("`datafusion.execution.batch_size` is not a Ballista setting"),
            "{message}"
        );
        let message = refused("engine:\n  cluster_settings:\n    ballista.no_such_thing: 1\n");
        assert!(message.contains("ballista.no_such_thing"), "{message}");
        let message = refused(
            "engine:\n  cluster_settings:\n    ballista.optimizer.broadcast_join_threshold_bytes: lots\n",
        );
        assert!(message.contains("lots"), "{message}");
    }

    #[test]
    fn reads_cache_settings_relative_to_the_project_file() {
        let path = Path::new("/srv/metrics/lodestar.yaml");
        let env = env_from(&[]);
        let project = parse(
            "cache:\n  dir: .cache/lodestar\n  lookback: 1w\n",
            path,
            &env,
        )
        .unwrap();
        assert_eq!(
            project.cache,
            Some(CacheSettings {
                dir: PathBuf::from("/srv/metrics/.cache/lodestar"),
                lookback: 7
            })
        );
        let project = parse("cache: { lookback: 0d }\n", path, &env).unwrap();
        assert_eq!(
            project.cache.map(|c| (c.dir, c.lookback)),
            Some((PathBuf::from("/srv/metrics/.lodestar-cache"), 0))
        );
        assert!(
            parse("timezone: UTC\n", path, &env)
                .unwrap()
                .cache
                .is_none()
        );

        let message = parse("timezone: UTC\ncache:\n  lookback: soon\n", path, &env)
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with(
                "/srv/metrics/lodestar.yaml:3:13: project: cannot read cache lookback `soon`"
            ),
            "{message}"
        );
        let message = parse("cache:\n  directory: x\n", path, &env)
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("/srv/metrics/lodestar.yaml:2:"),
            "{message}"
        );
    }
}
