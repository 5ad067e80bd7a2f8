//! Where a scan's hourly files come from: a directory (of zip archives and `*.json.gz`
//! files), an S3 bucket written by Amplitude's S3 export, or the Export API through its
//! per-hour cache (a directory of the same layout).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::api::ExportApi;
use crate::layout::{self, Hour};

/// Hours from the first to the last, both included; `None`: every hour there is.
pub type HourRange = Option<(Hour, Hour)>;

/// One hourly file: its name for messages, its hour and part, and its gzipped bytes.
#[derive(Debug)]
pub struct HourData {
    pub name: String,
    pub hour: Hour,
    pub part: u32,
    pub gz: Vec<u8>,
}

/// The place a source reads.
#[derive(Debug)]
pub enum Source {
    Files(PathBuf),
    S3 {
        store: Arc<dyn ObjectStore>,
        bucket: String,
        prefix: String,
    },
    Api(ExportApi),
}

fn in_range(hour: Hour, range: HourRange) -> bool {
    range.is_none_or(|(lo, hi)| lo <= hour && hour <= hi)
}

impl Source {
    /// The files of the hours in `range`, in upload order (hour, then part, then name).
    pub async fn read(&self, range: HourRange) -> Result<Vec<HourData>, String> {
        let mut files = match self {
            Source::Files(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || read_dir(&dir, range))
                    .await
                    .map_err(|e| format!("reading export files failed: {e}"))??
            }
            Source::S3 {
                store,
                bucket,
                prefix,
            } => read_s3(store, bucket, prefix, range).await?,
            Source::Api(api) => {
                let cache = api.fetch(range).await?;
                let range = api.clamp(range)?;
                tokio::task::spawn_blocking(move || read_dir(&cache, range))
                    .await
                    .map_err(|e| format!("reading cached exports failed: {e}"))??
            }
        };
        files.sort_by(|a, b| (a.hour, a.part, &a.name).cmp(&(b.hour, b.part, &b.name)));
        Ok(files)
    }
}

/// Every export file under `dir`, in any sub-folder: hourly `*.json.gz` files, and the entries
/// of `*.zip` archives.
pub fn read_dir(dir: &Path, range: HourRange) -> Result<Vec<HourData>, String> {
    if !dir.is_dir() {
        return Err(format!(
            "`{}` is not a directory of Amplitude export files",
            dir.display()
        ));
    }
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        let entries = std::fs::read_dir(&folder)
            .map_err(|e| format!("cannot list `{}`: {e}", folder.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot list `{}`: {e}", folder.display()))?;
            let path = entry.path();
            let name = path.to_string_lossy().to_string();
            if path.is_dir() {
                // The cache's markers, and hidden folders, hold no exports.
                if !entry.file_name().to_string_lossy().starts_with(['_', '.']) {
                    stack.push(path);
                }
            } else if let Some(file) = layout::parse_name(&name) {
                if in_range(file.hour, range) {
                    let gz =
                        std::fs::read(&path).map_err(|e| format!("cannot read `{name}`: {e}"))?;
                    out.push(HourData {
                        name,
                        hour: file.hour,
                        part: file.part,
                        gz,
                    });
                }
            } else if name.ends_with(".zip") {
                read_zip(&path, range, &mut out)?;
            }
        }
    }
    Ok(out)
}

/// The hourly files of an Export API zip archive.
fn read_zip(path: &Path, range: HourRange, out: &mut Vec<HourData>) -> Result<(), String> {
    use std::io::Read;
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open `{shown}`: {e}"))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| format!("`{shown}` is not a zip archive: {e}"))?;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| format!("cannot read entry {i} of `{shown}`: {e}"))?;
        let entry_name = entry
            .name()
            .map_err(|e| format!("cannot read entry {i} of `{shown}`: {e}"))?
            .to_string();
        let Some(file) = layout::parse_name(&entry_name) else {
            continue;
        };
        if !in_range(file.hour, range) {
            continue;
        }
        let name = format!("{shown}!{entry_name}");
        let mut gz = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0));
        entry
            .read_to_end(&mut gz)
            .map_err(|e| format!("cannot read `{name}`: {e}"))?;
        out.push(HourData {
            name,
            hour: file.hour,
            part: file.part,
            gz,
        });
    }
    Ok(())
}

/// The S3 export's objects under the prefix, for the hours of `range`.
async fn read_s3(
    store: &Arc<dyn ObjectStore>,
    bucket: &str,
    prefix: &str,
    range: HourRange,
) -> Result<Vec<HourData>, String> {
    let list_prefix = (!prefix.is_empty()).then(|| StorePath::from(prefix));
    let objects: Vec<_> = store
        .list(list_prefix.as_ref())
        .try_collect()
        .await
        .map_err(|e| format!("cannot list s3://{bucket}/{prefix}: {e}"))?;
    let wanted: Vec<_> = objects
        .into_iter()
        .filter_map(|meta| {
            let file = layout::parse_name(meta.location.as_ref())?;
            in_range(file.hour, range).then_some((meta.location, file))
        })
        .collect();
    futures::stream::iter(wanted)
        .map(|(location, file)| async move {
            let name = format!("s3://{bucket}/{location}");
            let bytes = store
                .get(&location)
                .await
                .map_err(|e| format!("cannot read {name}: {e}"))?
                .bytes()
                .await
                .map_err(|e| format!("cannot read {name}: {e}"))?;
            Ok(HourData {
                name,
                hour: file.hour,
                part: file.part,
                gz: bytes.to_vec(),
            })
        })
        .buffered(8)
        .try_collect()
        .await
}
