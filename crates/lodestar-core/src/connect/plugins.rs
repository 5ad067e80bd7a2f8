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

use crate::error::{Error, Result};
use crate::model::SourceDef;

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
pub fn discover(dirs: &[PathBuf]) -> Vec<Found> {
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

/// Connects a source whose connector is a plugin.
pub(crate) fn connect(
    ctx: &Arc<SessionContext>,
    source: &SourceDef,
    project_root: &Path,
) -> Result<Arc<dyn SchemaProvider>> {
    let dirs = search_path(Some(project_root));
    let file_name = host::library_file_name(&source.connector);
    let Some(path) = dirs
        .iter()
        .map(|d| d.join(&file_name))
        .find(|p| p.is_file())
    else {
        return Err(unknown_connector(source, &dirs));
    };
    let plugin = host::load(&path).map_err(|e| source_error(source, e.to_string()))?;
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
    check_options(source, &plugin)?;
    // The codec holds the context weakly: the engine keeps it alive while tables are in use.
    let provider: Arc<dyn TaskContextProvider> = Arc::clone(ctx) as Arc<dyn TaskContextProvider>;
    let codec = FFI_LogicalExtensionCodec::new_default(&provider);
    tracing::debug!(source = %source.name, plugin = %path.display(), "connecting");
    plugin
        .connect(&source.options, codec)
        .map_err(|message| source_error(source, format!("connector `{}`: {message}", plugin.name)))
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
    names.extend(discover(dirs).into_iter().map(|f| f.name));
    let hint = crate::error::did_you_mean(&source.connector, names.iter().map(String::as_str))
        .map(|h| format!(" ({h})"))
        .unwrap_or_default();
    let searched = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Error::Invalid {
        location: source.location.clone(),
        subject: crate::error::Subject::Source(source.name.clone()),
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

/// Checks the options against the plugin's JSON Schema, before its constructor runs.
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
    let known = || -> String {
        plugin
            .options_schema
            .get("properties")
            .and_then(|p| p.as_object())
            .map(|p| p.keys().cloned().collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    let first_segment = error
        .instance_path()
        .as_str()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let (option, message, hint) = match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let option = unexpected.first().cloned().unwrap_or_default();
            let close = crate::error::did_you_mean(
                &option,
                plugin
                    .options_schema
                    .get("properties")
                    .and_then(|p| p.as_object())
                    .into_iter()
                    .flat_map(|p| p.keys().map(String::as_str)),
            );
            let message = format!("unknown option `{option}` for connector `{}`", plugin.name);
            let hint =
                close.unwrap_or_else(|| format!("connector `{}` takes: {}", plugin.name, known()));
            (option, message, Some(hint))
        }
        ValidationErrorKind::Required { property } => {
            let option = property.as_str().unwrap_or_default().to_string();
            let message = format!(
                "option `{option}` is required by connector `{}`",
                plugin.name
            );
            (option, message, None)
        }
        ValidationErrorKind::Type { .. } | ValidationErrorKind::Enum { .. }
            if !is_secret(&first_segment) =>
        {
            let message = format!("option `{first_segment}`: {error}");
            (first_segment, message, None)
        }
        _ if is_secret(&first_segment) => {
            // The validator's message quotes the value; this option's value stays unsaid.
            let message = format!(
                "option `{first_segment}` does not have the form connector `{}` expects",
                plugin.name
            );
            (first_segment, message, None)
        }
        _ => {
            let message = format!("option `{first_segment}`: {error}");
            (first_segment, message, None)
        }
    };
    let location = if option.is_empty() {
        source.location.clone()
    } else {
        source.location_of(&option).clone()
    };
    Err(Error::Invalid {
        location,
        subject: crate::error::Subject::Source(source.name.clone()),
        message,
        hint,
    })
}
