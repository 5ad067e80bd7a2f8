//! The built-in `files` connector: local Parquet, CSV and NDJSON files as tables.
//!
//! `path` names a directory (each file or sub-directory in it becomes a table named after it),
//! a single file, or a glob (then `table` names it). A directory table reads every file below
//! it, and `key=value` directory names become partition columns (hive style).
//!
//! `time_partition: { column: dt, time: event_time }` says a table's `dt=YYYY-MM-DD` folders
//! hold the UTC days of its `time` column: a query's time range then skips the other days'
//! folders (`partition.rs`), and the table's schema is read from its first and last files
//! only, so opening a year of days does not read every footer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::SessionContext;
use lodestar_connector_api::kit::format::{CsvOptions, Format, csv_delimiter};
use lodestar_connector_api::kit::partition::TimePartition;

use super::partition::TimePartitioned;
use super::{check_known_options, option_error, string_option};
use crate::project::error::{Error, Result};
use crate::project::model::SourceDef;

pub const OPTIONS: &[&str] = &[
    "path",
    "table",
    "format",
    "delimiter",
    "has_header",
    "time_partition",
];

fn time_partition_option(source: &SourceDef) -> Result<Option<TimePartition>> {
    let Some(value) = source.options.get("time_partition") else {
        return Ok(None);
    };
    TimePartition::from_json(value)
        .map(Some)
        .map_err(|e| option_error(source, e.to_string()))
}

/// The format of a file, from its extension.
fn format_of(path: &Path) -> Option<Format> {
    Format::of_file(path.file_name()?.to_str()?).map(|(format, _)| format)
}

/// A table to register: its name, where its files are, and their format.
struct TableSpec {
    name: String,
    location: String,
    /// Only files with this ending are read, so stray files in a table's folder are skipped.
    extension: String,
    format: Format,
}

pub(super) async fn register(
    ctx: &SessionContext,
    source: &SourceDef,
    schema: &dyn SchemaProvider,
) -> Result<()> {
    check_known_options(source, OPTIONS)?;
    let path = string_option(source, "path")?.ok_or_else(|| {
        option_error(
            source,
            "the files connector needs `path`: a directory, a file or a glob".into(),
        )
    })?;
    let forced = string_option(source, "format")?
        .map(|f| {
            Format::from_name(f).ok_or_else(|| {
                option_error(
                    source,
                    format!("unknown format `{f}`: expected parquet, csv or json"),
                )
            })
        })
        .transpose()?;
    let settings = CsvOptions {
        delimiter: string_option(source, "delimiter")?
            .map(|d| csv_delimiter(d).map_err(|message| option_error(source, message)))
            .transpose()?,
        has_header: match source.options.get("has_header") {
            None => true,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(other) => {
                return Err(option_error(
                    source,
                    format!("`has_header` must be true or false, not {other}"),
                ));
            }
        },
    };

    let base = source.location.file.parent().unwrap_or(Path::new("."));
    let resolved = base.join(path);
    let specs = table_specs(source, &resolved, path, forced)?;
    if specs.is_empty() {
        return Err(option_error(
            source,
            format!(
                "found no Parquet, CSV or NDJSON files in {}",
                resolved.display()
            ),
        ));
    }
    let time_partition = time_partition_option(source)?;
    let mut partitioned = 0;
    for spec in specs {
        // A partitioned lake has many files: its schema comes from the first and last.
        let samples = match &time_partition {
            Some(_) if spec.location.ends_with('/') => Some(first_and_last_files(
                Path::new(&spec.location),
                &spec.extension,
            )),
            _ => None,
        };
        let table = listing_table(ctx, &spec, &settings, samples)
            .await
            .map_err(|e| Error::Source {
                location: source.location.clone(),
                source_name: source.name.clone(),
                message: format!("cannot read table `{}` at {}", spec.name, spec.location),
                source: Some(Box::new(e)),
            })?;
        let provider: Arc<dyn TableProvider> = match &time_partition {
            Some(tp) => {
                let folder = (Path::new(&spec.location), spec.extension.as_str());
                match TimePartitioned::new(table.clone(), folder, tp) {
                    Some(pruned) => {
                        partitioned += 1;
                        Arc::new(pruned)
                    }
                    None => Arc::new(table),
                }
            }
            None => Arc::new(table),
        };
        schema.register_table(spec.name, provider)?;
    }
    if let Some(tp) = &time_partition
        && partitioned == 0
    {
        // A typo would silently prune nothing.
        return Err(Error::Source {
            location: source.location_of("time_partition").clone(),
            source_name: source.name.clone(),
            message: format!(
                "`time_partition`: no table of the source has both the partition column `{}` (a `{}=YYYY-MM-DD` folder) and a time column named {}",
                tp.column,
                tp.column,
                tp.time_names()
            ),
            source: None,
        });
    }
    Ok(())
}

/// The data files below `dir` with `extension`, by path: not hidden, not empty.
fn data_files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, extension: &str, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs_err::read_dir(dir) else {
            return;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| !is_hidden(p))
            .collect();
        paths.sort();
        for path in paths {
            if path.is_dir() {
                walk(&path, extension, out);
            } else if path.to_string_lossy().ends_with(extension)
                && path.metadata().is_ok_and(|m| m.len() > 0)
            {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, extension, &mut files);
    files
}

/// The first and last data files below `dir` (by path), with `extension`.
fn first_and_last_files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let files = data_files(dir, extension);
    match (files.first(), files.last()) {
        (Some(first), Some(last)) if first != last => vec![first.clone(), last.clone()],
        (Some(first), _) => vec![first.clone()],
        _ => Vec::new(),
    }
}

fn table_specs(
    source: &SourceDef,
    resolved: &Path,
    written: &str,
    forced: Option<Format>,
) -> Result<Vec<TableSpec>> {
    let is_glob = written.contains(['*', '?', '[']);
    let table_option = string_option(source, "table")?;
    if is_glob || resolved.is_file() {
        let name = match (table_option, is_glob) {
            (Some(name), _) => name.to_string(),
            (None, false) => table_name_of(resolved),
            (None, true) => {
                return Err(option_error(
                    source,
                    format!("`path` is a glob ({written}): add `table: NAME` to name its table"),
                ));
            }
        };
        let format = forced.or_else(|| format_of(resolved)).ok_or_else(|| {
            option_error(
                source,
                format!(
                    "cannot tell the format of {written}: add `format: parquet`, `csv` or `json`"
                ),
            )
        })?;
        let extension = if is_glob {
            String::new()
        } else {
            extension_of(resolved)
        };
        return Ok(vec![TableSpec {
            name,
            location: resolved.to_string_lossy().into_owned(),
            extension,
            format,
        }]);
    }
    if !resolved.is_dir() {
        return Err(option_error(
            source,
            format!("`path` {} does not exist", resolved.display()),
        ));
    }
    if let Some(name) = table_option {
        // The whole directory is one table.
        let (format, extension) = directory_format(resolved, forced).ok_or_else(|| {
            option_error(
                source,
                format!("found no data files below {}", resolved.display()),
            )
        })?;
        return Ok(vec![TableSpec {
            name: name.to_string(),
            location: dir_url(resolved),
            extension,
            format,
        }]);
    }
    let mut entries: Vec<PathBuf> = fs_err::read_dir(resolved)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !is_hidden(p))
        .collect();
    entries.sort();
    let mut specs = Vec::new();
    for entry in entries {
        let name = table_name_of(&entry);
        if entry.is_dir() {
            if let Some((format, extension)) = directory_format(&entry, forced) {
                specs.push(TableSpec {
                    name,
                    location: dir_url(&entry),
                    extension,
                    format,
                });
            }
        } else if let Some(format) = format_of(&entry) {
            if forced.is_some_and(|f| f != format) {
                continue;
            }
            if specs.iter().any(|s: &TableSpec| s.name == name) {
                return Err(option_error(
                    source,
                    format!(
                        "two files in {} would both be table `{name}`",
                        resolved.display()
                    ),
                ));
            }
            specs.push(TableSpec {
                name,
                location: entry.to_string_lossy().into_owned(),
                extension: extension_of(&entry),
                format,
            });
        }
    }
    Ok(specs)
}

/// The format of the first data file found below `dir` (depth first, sorted).
fn directory_format(dir: &Path, forced: Option<Format>) -> Option<(Format, String)> {
    let mut entries: Vec<PathBuf> = fs_err::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !is_hidden(p))
        .collect();
    entries.sort();
    for entry in entries {
        let found = if entry.is_dir() {
            directory_format(&entry, forced)
        } else {
            format_of(&entry)
                .filter(|f| forced.is_none_or(|forced| forced == *f))
                .map(|f| (f, extension_of(&entry)))
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// Files and folders starting with `.` or `_` are metadata (`_SUCCESS`, `.crc`), not data.
fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.') || n.starts_with('_'))
}

fn table_name_of(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.split('.').next().unwrap_or_default().to_string()
}

fn extension_of(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.find('.') {
        Some(dot) => name[dot..].to_string(),
        None => String::new(),
    }
}

fn dir_url(dir: &Path) -> String {
    let mut s = dir.to_string_lossy().into_owned();
    if !s.ends_with('/') {
        s.push('/');
    }
    s
}

async fn listing_table(
    ctx: &SessionContext,
    spec: &TableSpec,
    settings: &CsvOptions,
    samples: Option<Vec<PathBuf>>,
) -> datafusion::error::Result<ListingTable> {
    let format = spec.format.file_format(*settings, &spec.extension);
    let url = ListingTableUrl::parse(&spec.location)?;
    let options = ListingOptions::new(format).with_file_extension(&spec.extension);
    let state = ctx.state();
    let config = ListingTableConfig::new(url).with_listing_options(options.clone());
    let config = match samples.filter(|s| !s.is_empty()) {
        Some(files) => {
            let mut schemas = Vec::new();
            for file in files {
                let url = ListingTableUrl::parse(file.to_string_lossy())?;
                let schema = options
                    .infer_schema(&state, &url)
                    .await
                    .map_err(|e| e.context(format!("file {}", file.display())))?;
                schemas.push(schema.as_ref().clone());
            }
            config.with_schema(Arc::new(Schema::try_merge(schemas)?))
        }
        None => match config.clone().infer_schema(&state).await {
            Ok(config) => config,
            Err(e) => return Err(name_the_file(&state, &options, spec, e).await),
        },
    };
    let config = config.infer_partitions_from_path(&state).await?;
    ListingTable::try_new(config)
}

/// A directory table's schema could not be read: DataFusion's error (a truncated or corrupt
/// Parquet footer, say) does not say which of the files it was, so each file is read alone
/// to name the first that fails. Only on this error path; the original error if none does.
async fn name_the_file(
    state: &datafusion::execution::SessionState,
    options: &ListingOptions,
    spec: &TableSpec,
    error: datafusion::error::DataFusionError,
) -> datafusion::error::DataFusionError {
    if !spec.location.ends_with('/') {
        return error.context(format!("file {}", spec.location));
    }
    for file in data_files(Path::new(&spec.location), &spec.extension) {
        let Ok(url) = ListingTableUrl::parse(file.to_string_lossy()) else {
            continue;
        };
        if let Err(e) = options.infer_schema(state, &url).await {
            return e.context(format!("file {}", file.display()));
        }
    }
    error
}
