//! Writing a file whole or not at all: the one helper behind every file Lodestar writes (the
//! CLI's `--output` files and reports, the result cache), so that a failed write — a full
//! disk, a file-size limit, an error while encoding — leaves the previous file intact.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Writes `path` through `fill`: into a temporary file in the same directory (so the rename
/// stays on one file system), flushed and synced, then renamed over `path`. Readers see the
/// old file or the new one, never a part. On any error the temporary file is removed and
/// `path` is left as it was.
pub fn write_atomically<E: From<std::io::Error>>(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<fs_err::File>) -> Result<(), E>,
) -> Result<(), E> {
    let temporary = temporary_path(path);
    let result = (|| -> Result<(), E> {
        let mut file = BufWriter::new(fs_err::File::create(&temporary)?);
        fill(&mut file)?;
        file.flush()?;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs_err::rename(&temporary, path)?;
        Ok(())
    })();
    match result {
        Ok(()) => {
            // The rename is durable once the directory is synced; a failure to sync it loses
            // nothing that the rename did not already make visible, so it is not an error.
            if let Some(dir) = parent(path)
                && let Ok(dir) = std::fs::File::open(dir)
            {
                let _ = dir.sync_all();
            }
            Ok(())
        }
        Err(e) => {
            let _ = fs_err::remove_file(&temporary);
            Err(e)
        }
    }
}

/// `.<name>.<pid>.<random>.tmp` beside `path`: hidden, unique per process and call, and
/// recognisable as a temporary file (the cache's `clear` removes leftovers by that shape).
pub fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    path.with_file_name(format!(
        ".{name}.{}.{:016x}.tmp",
        std::process::id(),
        fastrand::u64(..)
    ))
}

fn parent(path: &Path) -> Option<&Path> {
    match path.parent() {
        Some(dir) if dir.as_os_str().is_empty() => Some(Path::new(".")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn leftovers(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs_err::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_failed_write_leaves_the_previous_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.html");
        fs_err::write(&path, "previous").unwrap();
        let result: std::io::Result<()> = write_atomically(&path, |file| {
            file.write_all(b"half of the new")?;
            Err(std::io::Error::other("the disk is full"))
        });
        assert_eq!(result.unwrap_err().to_string(), "the disk is full");
        assert_eq!(fs_err::read_to_string(&path).unwrap(), "previous");
        assert_eq!(leftovers(dir.path()), ["report.html"]);

        let written: std::io::Result<()> = write_atomically(&path, |file| file.write_all(b"new"));
        written.unwrap();
        assert_eq!(fs_err::read_to_string(&path).unwrap(), "new");
        assert_eq!(leftovers(dir.path()), ["report.html"]);
    }
}
