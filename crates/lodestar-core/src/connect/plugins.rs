//! Connector plugins: finding a connector's library, checking a source's options against the
//! schema the plugin declares, and connecting through the plugin's constructor.
//!
//! A source with `connector: NAME` loads `liblodestar_connector_NAME.so` (`.dylib`, `.dll`)
//! from the first directory that has it, searched in this order:
//! 1. each directory of `LODESTAR_PLUGIN_PATH` (a path list, like `PATH`),
//! 2. `plugins/` beside the project file,
//! 3. the directory of the running `lodestar` binary.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::catalog::SchemaProvider;
use datafusion::execution::TaskContextProvider;
use datafusion::prelude::SessionContext;
use datafusion_ffi::proto::logical_extension_codec::FFI_LogicalExtensionCodec;
use jsonschema::error::ValidationErrorKind;
use lodestar_connector_api::host::{self, LoadError, Plugin};

use crate::project::error::{Error, Result};
use crate::project::model::SourceDef;

/// The environment variable listing extra plugin directories.
pub const PLUGIN_PATH_VAR: &str = "LODESTAR_PLUGIN_PATH";

/// Where plugins are looked for, in order.
pub fn search_path(project_root: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os(PLUGIN_PATH_VAR)
        .map(|paths| std::env::split_paths(&paths).collect())
        .unwrap_or_default();
    if let Some(root) = project_root {
        dirs.push(root.join("plugins"));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        dirs.push(dir);
    }
    dirs.retain(|d| !d.as_os_str().is_empty());
    dirs
}

/// A connector library found on the search path.
#[derive(Debug)]
pub struct Found {
    pub name: String,
    pub path: PathBuf,
    /// The plugin, or why it cannot be used.
    pub plugin: std::result::Result<Arc<Plugin>, LoadError>,
}

/// Every connector library on the search path (the first of each name), loaded and checked.
pub fn find(dirs: &[PathBuf]) -> Vec<Found> {
    let mut found: Vec<Found> = Vec::new();
    for dir in dirs {
        let Ok(entries) = fs_err::read_dir(dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(host::connector_of_file)
            else {
                continue;
            };
            if found.iter().any(|f| f.name == name) {
                continue;
            }
            let plugin = host::load(&path);
            found.push(Found { name, path, plugin });
        }
    }
    found
}

/// Connects a source whose connector is a plugin; returns its tables and the plugin's
/// version. With `expected_version`, a plugin of another version is refused first.
pub(crate) fn connect(
    ctx: &Arc<SessionContext>,
    source: &SourceDef,
    project_root: &Path,
    expected_version: Option<&str>,
) -> Result<(Arc<dyn SchemaProvider>, String)> {
    let dirs = search_path(Some(project_root));
    let file_name = host::library_file_name(&source.connector);
    let Some(path) = dirs
        .iter()
        .map(|d| d.join(&file_name))
        .find(|p| p.is_file())
    else {
        return Err(unknown_connector(source, &dirs));
    };
    let plugin = host::load(&path).map_err(|e| Error::Invalid {
        location: source.location.clone(),
        subject: crate::project::error::Subject::Source(source.name.clone()),
        message: e.to_string(),
        hint: Some(e.hint()),
    })?;
    if plugin.name != source.connector {
        return Err(source_error(
            source,
            format!(
                "{} declares connector `{}`, not `{}`",
                path.display(),
                plugin.name,
                source.connector
            ),
        ));
    }
    if let Some(expected) = expected_version
        && plugin.version != expected
    {
        return Err(source_error(
            source,
            format!(
                "connector `{}` is version {} here ({}), and version {expected} where the query was planned",
                plugin.name,
                plugin.version,
                path.display()
            ),
        ));
    }
    check_options(source, &plugin)?;
    // The codec holds the context weakly: the engine keeps it alive while tables are in use.
    let provider: Arc<dyn TaskContextProvider> = Arc::clone(ctx) as Arc<dyn TaskContextProvider>;
    let codec = FFI_LogicalExtensionCodec::new_default(&provider);
    tracing::debug!(source = %source.name, plugin = %path.display(), "connecting");
    let schema = plugin.connect(&source.options, codec).map_err(|message| {
        source_error(source, format!("connector `{}`: {message}", plugin.name))
    })?;
    Ok((schema, plugin.version.clone()))
}

fn source_error(source: &SourceDef, message: String) -> Error {
    Error::Source {
        location: source.location.clone(),
        source_name: source.name.clone(),
        message,
        source: None,
    }
}

fn unknown_connector(source: &SourceDef, dirs: &[PathBuf]) -> Error {
    let mut names: Vec<String> = super::BUILT_IN.iter().map(|s| s.to_string()).collect();
    names.extend(find(dirs).into_iter().map(|f| f.name));
    let hint =
        crate::project::error::did_you_mean(&source.connector, names.iter().map(String::as_str))
            .map(|h| format!(" ({h})"))
            .unwrap_or_default();
    let searched = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Error::Invalid {
        location: source.location.clone(),
        subject: crate::project::error::Subject::Source(source.name.clone()),
        message: format!(
            "unknown connector `{}`{hint}; available: {}",
            source.connector,
            names.join(", ")
        ),
        hint: Some(format!(
            "a plugin connector is a file named {} in one of: {searched} (set {PLUGIN_PATH_VAR} to add directories; `cargo xtask plugins` builds the bundled ones)",
            host::library_file_name(&source.connector)
        )),
    }
}

/// Option names whose values are never repeated in a message.
fn is_secret(option: &str) -> bool {
    let option = option.to_ascii_lowercase();
    ["password", "secret", "token", "key", "credential", "url"]
        .iter()
        .any(|s| option.contains(s))
}

/// Whether a message may quote the value at `path` (the option's keys from the top): only a
/// scalar written directly under the source, under a name that is not secret-like, for an
/// option that is not a group of settings. A nested value (`api: { secret_key: … }`), an
/// object or a list, or text written where a group was expected (`api: <the key>`) may be a
/// secret whatever its name, so its message says what was expected without repeating it.
fn may_echo(path: &[String], value: &serde_json::Value, schema: &serde_json::Value) -> bool {
    let container = |v: Option<&serde_json::Value>| {
        v.is_some_and(|t| t == "object" || t == "array")
            || v.and_then(|t| t.as_array())
                .is_some_and(|ts| ts.iter().any(|t| t == "object" || t == "array"))
    };
    path.len() == 1
        && !is_secret(&path[0])
        && !matches!(
            value,
            serde_json::Value::Object(_) | serde_json::Value::Array(_)
        )
        && !container(schema_at(schema, path).and_then(|s| s.get("type")))
}

/// What the schema expected, in words that never include the value that failed.
fn expectation(kind: &ValidationErrorKind) -> String {
    use jsonschema::error::TypeKind;
    match kind {
        ValidationErrorKind::Type { kind } => {
            let types: Vec<String> = match kind {
                TypeKind::Single(t) => vec![t.to_string()],
                TypeKind::Multiple(set) => set.iter().map(|t| t.to_string()).collect(),
            };
            format!("must be of type {}", types.join(" or "))
        }
        ValidationErrorKind::Enum { options } => format!("must be one of {options}"),
        ValidationErrorKind::Constant { expected_value } => format!("must be {expected_value}"),
        ValidationErrorKind::MinLength { limit } => {
            format!("must be at least {limit} characters long")
        }
        ValidationErrorKind::MaxLength { limit } => {
            format!("must be at most {limit} characters long")
        }
        ValidationErrorKind::Minimum { limit } => format!("must be at least {limit}"),
        ValidationErrorKind::Maximum { limit } => format!("must be at most {limit}"),
        ValidationErrorKind::Pattern { pattern } => format!("must match `{pattern}`"),
        ValidationErrorKind::Format { format } => format!("must be a valid {format}"),
        other => format!(
            "does not satisfy the options schema's `{}` rule",
            other.keyword()
        ),
    }
}

/// The schema of the value at `path`, following `properties` from the root.
fn schema_at<'a>(schema: &'a serde_json::Value, path: &[String]) -> Option<&'a serde_json::Value> {
    path.iter()
        .try_fold(schema, |schema, key| schema.get("properties")?.get(key))
}

/// Checks the options against the plugin's JSON Schema, before its constructor runs. Values
/// are quoted back only where [`may_echo`] allows: a secret can sit at any depth.
fn check_options(source: &SourceDef, plugin: &Plugin) -> Result<()> {
    let validator = jsonschema::validator_for(&plugin.options_schema).map_err(|e| {
        source_error(
            source,
            format!(
                "connector `{}` declares an invalid options schema: {e}",
                plugin.name
            ),
        )
    })?;
    let instance = serde_json::Value::Object(source.options.clone());
    let Some(error) = validator.iter_errors(&instance).next() else {
        return Ok(());
    };
    let mut path: Vec<String> = error
        .instance_path()
        .as_str()
        .split('/')
        .filter(|s| !s.is_empty())
        // JSON Pointer escapes (RFC 6901).
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    let (message, hint) = match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let known: Vec<&str> = schema_at(&plugin.options_schema, &path)
                .and_then(|s| s.get("properties"))
                .and_then(|p| p.as_object())
                .map(|p| p.keys().map(String::as_str).collect())
                .unwrap_or_default();
            let option = unexpected.first().cloned().unwrap_or_default();
            let close = crate::project::error::did_you_mean(&option, known.iter().copied());
            path.push(option);
            let message = format!(
                "unknown option `{}` for connector `{}`",
                path.join("."),
                plugin.name
            );
            let hint = close.unwrap_or_else(|| {
                let place = if path.len() > 1 {
                    format!(" under `{}`", path[..path.len() - 1].join("."))
                } else {
                    String::new()
                };
                format!(
                    "connector `{}` takes{place}: {}",
                    plugin.name,
                    known.join(", ")
                )
            });
            (message, Some(hint))
        }
        ValidationErrorKind::Required { property } => {
            path.push(property.as_str().unwrap_or_default().to_string());
            let message = format!(
                "option `{}` is required by connector `{}`",
                path.join("."),
                plugin.name
            );
            (message, None)
        }
        kind if path.is_empty() => {
            let message = format!(
                "the options do not have the form connector `{}` expects: they {}",
                plugin.name,
                expectation(kind)
            );
            (message, None)
        }
        _ if may_echo(&path, error.instance(), &plugin.options_schema) => {
            (format!("option `{}`: {error}", path[0]), None)
        }
        kind => {
            let message = format!(
                "option `{}` {} (its value is not repeated here: it may be secret)",
                path.join("."),
                expectation(kind)
            );
            (message, None)
        }
    };
    let location = match path.first() {
        Some(option) => source.location_of(option).clone(),
        None => source.location.clone(),
    };
    Err(Error::Invalid {
        location,
        subject: crate::project::error::Subject::Source(source.name.clone()),
        message,
        hint,
    })
}
