//! Sources: turning each `sources:` entry into a DataFusion schema of tables.
//!
//! Table `orders` of source `crm` is `crm.orders` in SQL. The `files` connector is built in;
//! every other connector name is looked up among the plugins.

mod files;
pub(crate) mod partition;
pub mod plugins;

use std::path::Path;
use std::sync::Arc;

use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::prelude::SessionContext;
use lodestar_connector_api::kit::partition::TimePartition;

use crate::project::error::{Error, Result};
use crate::project::model::{Project, SourceDef, TableRef};

/// Connectors compiled into Lodestar.
pub const BUILT_IN: &[&str] = &["files"];

/// Options of the built-in `files` connector.
pub use files::OPTIONS as FILES_OPTIONS;

/// Registers the source's tables as schema `source.name` of the context's default catalog.
/// `project_root` is where the project file is: relative paths and the `plugins/` directory
/// are found from there. Returns the version of the plugin that connected it (`None` for a
/// built-in connector).
pub async fn connect(
    ctx: &Arc<SessionContext>,
    source: &SourceDef,
    project_root: &Path,
) -> Result<Option<String>> {
    let (schema, version) = open(ctx, source, project_root, None).await?;
    let catalog = ctx
        .catalog(&ctx.state().config().options().catalog.default_catalog)
        .expect("the default catalog always exists");
    catalog.register_schema(&source.name, schema)?;
    Ok(version)
}

/// The source's tables as a schema, without registering it, and the version of the plugin
/// that connected it. With `plugin_version`, a plugin of another version is refused before it
/// connects (a cluster node reopening a client's source, docs/cluster.md).
pub(crate) async fn open(
    ctx: &Arc<SessionContext>,
    source: &SourceDef,
    project_root: &Path,
    plugin_version: Option<&str>,
) -> Result<(Arc<dyn SchemaProvider>, Option<String>)> {
    match source.connector.as_str() {
        "files" => {
            let schema = Arc::new(MemorySchemaProvider::new());
            files::register(ctx, source, schema.as_ref()).await?;
            Ok((schema, None))
        }
        _ => {
            let (schema, version) = plugins::connect(ctx, source, project_root, plugin_version)?;
            Ok((schema, Some(version)))
        }
    }
}

/// Reads an option that must be a string, if present.
pub(crate) fn string_option<'a>(source: &'a SourceDef, key: &str) -> Result<Option<&'a str>> {
    match source.options.get(key) {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(option_error(
            source,
            format!("option `{key}` must be a string, not {other}"),
        )),
    }
}

pub(crate) fn option_error(source: &SourceDef, message: String) -> Error {
    Error::Source {
        location: source.location.clone(),
        source_name: source.name.clone(),
        message,
        source: None,
    }
}

/// Refuses options the connector does not know, so a typo is not silently ignored.
pub(crate) fn check_known_options(source: &SourceDef, known: &[&str]) -> Result<()> {
    for key in source.options.keys() {
        if !known.contains(&key.as_str()) {
            let hint = crate::project::error::did_you_mean(key, known.iter().copied())
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
            return Err(option_error(
                source,
                format!(
                    "unknown option `{key}` for connector `{}`{hint}; it takes: {}",
                    source.connector,
                    known.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Whether `table`'s files are partitioned by the date of `time`: the `time_partition`
/// option (`{ column: dt, time: event_time }`, `time` one column or a list) of the `files`
/// and `s3` connectors, given for the source or, with `s3`, for the table under `tables:`.
/// A plugin that prunes partitions the same way declares the same option.
pub(crate) fn partitioned_by(project: &Project, table: &TableRef, time: &str) -> bool {
    let Some(source) = project.sources.get(&table.source) else {
        return false;
    };
    let table_option = source
        .options
        .get("tables")
        .and_then(|tables| tables.get(&table.table))
        .and_then(|t| t.get("time_partition"));
    [source.options.get("time_partition"), table_option]
        .into_iter()
        .flatten()
        .filter_map(|value| TimePartition::from_json(value).ok())
        .any(|tp| tp.time.iter().any(|t| t == time))
}
