//! Listing the tables under the source's prefix: their files, format and hive partitions.
//!
//! Without `tables`, every top-level folder under the prefix is a table (one `LIST` with a
//! delimiter), and so is every data file directly under it. Each table's files are then listed
//! once, to learn its format (from the extensions, unless set), its partition columns (from
//! the `key=value` folders of a file's path) and the files to read its schema from.
//!
//! Only the files DataFusion's listing table will read count: files directly in the table's
//! folder or in `key=value` folders below it, not empty, with the table's extension.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};

use lodestar_connector_api::kit::format::Format;
use lodestar_connector_api::kit::partition::TimePartition;

use crate::options::Settings;
use crate::store::S3Errors;

/// A table found, ready to be opened.
#[derive(Debug, Clone)]
pub struct Found {
    pub name: String,
    /// The table's key prefix (ending with `/`), or the key of a single-file table.
    pub key: String,
    pub format: Format,
    /// Files must end with it; empty when the format was given and no file has its extension.
    pub extension: String,
    pub partitions: Vec<String>,
    /// The first and last data file (by key): the schema is read from them, so that columns
    /// added over time are seen.
    pub sample: Vec<ObjectMeta>,
    pub time_partition: Option<TimePartition>,
}

/// Why a folder is not a table.
#[derive(Debug)]
enum Skip {
    /// No files DataFusion would read.
    Empty,
    /// A hard error: the table was asked for, or its files are ambiguous.
    Error(String),
}

/// The source's tables.
pub async fn tables(
    store: &dyn ObjectStore,
    settings: &Settings,
    errors: &S3Errors,
) -> Result<Vec<Found>, String> {
    match &settings.tables {
        Some(tables) => {
            let mut found = Vec::new();
            for table in tables {
                let key = format!("{}{}", settings.prefix, table.prefix);
                let format = table.format.or(settings.format);
                let wanted = match (&table.time_partition, &settings.time_partition) {
                    (Some(t), _) => Wanted::Table(t.clone()),
                    (None, Some(t)) => Wanted::Source(t.clone()),
                    (None, None) => Wanted::None,
                };
                match folder_table(store, errors, &table.name, &key, format, wanted).await {
                    Ok(t) => found.push(t),
                    Err(Skip::Empty) => {
                        return Err(format!(
                            "table `{}`: found no {} files under s3://{}/{key}",
                            table.name,
                            format.map_or("Parquet, CSV or NDJSON", |f| f.name()),
                            settings.bucket
                        ));
                    }
                    Err(Skip::Error(message)) => return Err(message),
                }
            }
            Ok(found)
        }
        None => list_tables(store, settings, errors).await,
    }
}

/// Every top-level folder and data file under the prefix.
async fn list_tables(
    store: &dyn ObjectStore,
    settings: &Settings,
    errors: &S3Errors,
) -> Result<Vec<Found>, String> {
    let location = settings.location();
    let root = (!settings.prefix.is_empty()).then(|| Path::from(settings.prefix.as_str()));
    let listing = store
        .list_with_delimiter(root.as_ref())
        .await
        .map_err(|e| errors.explain(&format!("listing {location}"), &e))?;
    if listing.common_prefixes.is_empty() && listing.objects.is_empty() {
        return Err(format!(
            "found no files under {location}; check `bucket` and `prefix`"
        ));
    }
    let folders: Vec<&Path> = listing
        .common_prefixes
        .iter()
        .filter(|p| p.filename().is_some_and(|n| !is_hidden(n)))
        .collect();
    if !folders.is_empty()
        && folders
            .iter()
            .all(|p| p.filename().is_some_and(|n| n.contains('=')))
    {
        return Err(format!(
            "the folders under {location} are partitions ({}, ...), not tables; set `prefix` to the folder above them, or name the table in `tables` with `prefix: \"\"`",
            folders[0].filename().unwrap_or_default()
        ));
    }
    let mut found = Vec::new();
    for folder in folders {
        let name = folder.filename().unwrap_or_default().to_string();
        let key = format!("{folder}/");
        let wanted = settings
            .time_partition
            .clone()
            .map_or(Wanted::None, Wanted::Source);
        match folder_table(store, errors, &name, &key, settings.format, wanted).await {
            Ok(table) => found.push(table),
            Err(Skip::Empty) => {}
            Err(Skip::Error(message)) => return Err(message),
        }
    }
    for object in &listing.objects {
        let Some(file_name) = object.location.filename() else {
            continue;
        };
        if is_hidden(file_name) || object.size == 0 {
            continue;
        }
        let Some((format, extension)) = Format::of_file(file_name) else {
            continue;
        };
        if settings.format.is_some_and(|f| f != format) {
            continue;
        }
        let name = file_name.split('.').next().unwrap_or_default().to_string();
        if found.iter().any(|t: &Found| t.name == name) {
            return Err(format!(
                "two tables would be named `{name}` under {location} (a folder and a file, or two files); name them in `tables`"
            ));
        }
        found.push(Found {
            name,
            key: object.location.to_string(),
            format,
            extension: extension.to_string(),
            partitions: Vec::new(),
            sample: vec![object.clone()],
            time_partition: None,
        });
    }
    if found.is_empty() {
        return Err(format!(
            "found no Parquet, CSV or NDJSON files under {location}; check `prefix`, or set `format` for files without a known extension"
        ));
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// The table whose files are under `key` (a folder, ending with `/`).
async fn folder_table(
    store: &dyn ObjectStore,
    errors: &S3Errors,
    name: &str,
    key: &str,
    format: Option<Format>,
    time_partition: Wanted,
) -> Result<Found, Skip> {
    let path = Path::from(key);
    let mut files: Vec<ObjectMeta> = store.list(Some(&path)).try_collect().await.map_err(|e| {
        Skip::Error(errors.explain(&format!("listing table `{name}` at {key}"), &e))
    })?;
    files.sort_by(|a, b| a.location.cmp(&b.location));
    // The path below the table's folder of each file DataFusion would consider.
    let readable: Vec<(ObjectMeta, Vec<String>)> = files
        .into_iter()
        .filter(|f| f.size > 0)
        .filter_map(|f| {
            let below: Vec<String> = f
                .location
                .prefix_match(&path)?
                .map(|part| part.as_ref().to_string())
                .collect();
            let plain = below.iter().filter(|s| !s.contains('=')).count();
            (plain == 1 && !below.iter().any(|s| is_hidden(s))).then_some((f, below))
        })
        .collect();

    let (format, extension) = match format {
        Some(format) => {
            let extension = most_common_extension(&readable, Some(format)).unwrap_or_default();
            (format, extension)
        }
        None => {
            let formats: BTreeMap<Format, usize> =
                readable.iter().fold(BTreeMap::new(), |mut m, (f, _)| {
                    if let Some((format, _)) = f.location.filename().and_then(Format::of_file) {
                        *m.entry(format).or_default() += 1;
                    }
                    m
                });
            match formats.len() {
                0 => return Err(Skip::Empty),
                1 => {
                    let format = *formats.keys().next().expect("one format");
                    let extension =
                        most_common_extension(&readable, Some(format)).unwrap_or_default();
                    (format, extension)
                }
                _ => {
                    let names: Vec<&str> = formats.keys().map(|f| f.name()).collect();
                    return Err(Skip::Error(format!(
                        "table `{name}` at {key} mixes {} files; set its `format` in `tables`",
                        names.join(" and ")
                    )));
                }
            }
        }
    };
    let data: Vec<&(ObjectMeta, Vec<String>)> = readable
        .iter()
        .filter(|(f, _)| f.location.as_ref().ends_with(extension.as_str()))
        .collect();
    let (Some(first), Some(last)) = (data.first(), data.last()) else {
        return Err(Skip::Empty);
    };
    let partitions: Vec<String> = first.1[..first.1.len() - 1]
        .iter()
        .filter_map(|segment| segment.split_once('=').map(|(k, _)| k.to_string()))
        .collect();
    let mut sample = vec![first.0.clone()];
    if last.0.location != first.0.location {
        sample.push(last.0.clone());
    }
    let mut found = Found {
        name: name.to_string(),
        key: key.to_string(),
        format,
        extension,
        partitions,
        sample,
        time_partition: None,
    };
    // Checked here, while the listing is at hand.
    let paths: Vec<&[String]> = data.iter().map(|(_, below)| below.as_slice()).collect();
    found.time_partition =
        check_time_partition(&found, &paths, time_partition).map_err(Skip::Error)?;
    Ok(found)
}

/// A `time_partition` to apply to a table.
#[derive(Debug, Clone)]
enum Wanted {
    None,
    /// Set on the table: a table without the partition column is an error.
    Table(TimePartition),
    /// Set on the source: applies to the tables that have the partition column.
    Source(TimePartition),
}

/// The time partition of a table, if the one wanted applies to it. Every value of the
/// partition column must be an ISO date, or comparing them as text would prune wrongly.
fn check_time_partition(
    table: &Found,
    paths: &[&[String]],
    wanted: Wanted,
) -> Result<Option<TimePartition>, String> {
    let (wanted, explicit) = match wanted {
        Wanted::None => return Ok(None),
        Wanted::Table(t) => (t, true),
        Wanted::Source(t) => (t, false),
    };
    if !table.partitions.contains(&wanted.column) {
        if explicit {
            return Err(format!(
                "table `{}`: `time_partition` names partition `{}`, but its partitions are: {}",
                table.name,
                wanted.column,
                if table.partitions.is_empty() {
                    "none".to_string()
                } else {
                    table.partitions.join(", ")
                }
            ));
        }
        return Ok(None);
    }
    let prefix = format!("{}=", wanted.column);
    let bad = paths
        .iter()
        .flat_map(|below| below.iter())
        .filter_map(|segment| segment.strip_prefix(&prefix))
        .find(|value| !is_iso_date(value));
    if let Some(value) = bad {
        return Err(format!(
            "table `{}`: `time_partition` needs `{}` values like 2026-05-01, but one is `{value}`",
            table.name, wanted.column
        ));
    }
    Ok(Some(wanted))
}

/// `YYYY-MM-DD`.
pub fn is_iso_date(value: &str) -> bool {
    let b = value.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// Files and folders starting with `.` or `_` are metadata (`_SUCCESS`, `_delta_log`, `.crc`).
fn is_hidden(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_')
}

/// The extension of `format` most files have.
fn most_common_extension(
    files: &[(ObjectMeta, Vec<String>)],
    format: Option<Format>,
) -> Option<String> {
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (file, _) in files {
        if let Some((f, ext)) = file.location.filename().and_then(Format::of_file)
            && format.is_none_or(|want| want == f)
        {
            *counts.entry(ext).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(ext, _)| ext.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates_are_recognised() {
        assert!(is_iso_date("2026-05-01"));
        assert!(!is_iso_date("2026-5-1"));
        assert!(!is_iso_date("20260501"));
        assert!(!is_iso_date("2026-05-01T00"));
    }
}
