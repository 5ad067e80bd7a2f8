//! Writing result tables: as a text table, CSV, JSON or Parquet, to stdout or to a file.
//!
//! A file is written next to its destination and renamed into place, so a failed run never
//! leaves a half-written result behind.

use std::io::Write;
use std::path::Path;

use anyhow::bail;
use clap::ValueEnum;
use lodestar_core::datafusion::arrow::array::RecordBatch;
use lodestar_core::datafusion::arrow::datatypes::SchemaRef;
use lodestar_core::datafusion::arrow::{csv, json, util::pretty};
use lodestar_core::datafusion::parquet::arrow::ArrowWriter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned text table, for people.
    Table,
    /// CSV with a header row.
    Csv,
    /// A JSON array of row objects; nulls are written out.
    Json,
    /// Apache Parquet (needs --output).
    Parquet,
}

/// Writes `batches` in `format` to `output`, or to stdout.
pub fn write(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    format: Format,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    match output {
        None => {
            if format == Format::Parquet {
                bail!("Parquet is binary: give a file with --output to write it to");
            }
            let mut out = std::io::BufWriter::new(std::io::stdout());
            encode(schema, batches, format, &mut out)?;
            out.flush()?;
            Ok(())
        }
        Some(path) => write_atomically(path, |file| encode(schema, batches, format, file)),
    }
}

/// Writes one result table in `format` to stdout: what the analyses print with `--format`.
pub fn write_batch(batch: &RecordBatch, format: Format) -> anyhow::Result<()> {
    write(&batch.schema(), std::slice::from_ref(batch), format, None)
}

/// Writes a file through `fill` with [`lodestar_core::atomic::write_atomically`]: into a
/// temporary file beside `path`, then renamed over it, so a failed run leaves the previous
/// file as it was and no temporary one. Checks the directory first, for a clearer message.
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<fs_err::File>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        bail!(
            "cannot write {}: directory {} does not exist",
            path.display(),
            dir.display()
        );
    }
    if path.is_dir() {
        bail!(
            "cannot write {}: it is a directory; give a file name",
            path.display()
        );
    }
    lodestar_core::atomic::write_atomically(path, fill).map_err(|e| {
        let hint = if is_out_of_space(&e) {
            format!(
                "\n  hint: the disk may be full (or a file-size limit reached); {} was left as it was",
                path.display()
            )
        } else {
            String::new()
        };
        e.context(format!("could not write {}{hint}", path.display()))
    })
}

/// Whether a write failed for want of space: a full disk, a quota, a file-size limit.
fn is_out_of_space(e: &anyhow::Error) -> bool {
    use std::io::ErrorKind;
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| {
            matches!(
                io.kind(),
                ErrorKind::StorageFull | ErrorKind::FileTooLarge | ErrorKind::QuotaExceeded
            )
        })
        || e.chain().any(|c| {
            let text = c.to_string();
            ["os error 27)", "os error 28)", "os error 122)"]
                .iter()
                .any(|code| text.contains(code))
        })
}

fn encode<W: Write + Send>(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    format: Format,
    out: &mut W,
) -> anyhow::Result<()> {
    match format {
        Format::Table => {
            let table = if batches.iter().all(|b| b.num_rows() == 0) {
                pretty::pretty_format_batches_with_schema(schema.clone(), &[])?.to_string()
            } else {
                pretty::pretty_format_batches(batches)?.to_string()
            };
            writeln!(out, "{table}")?;
        }
        Format::Csv => {
            let mut writer = csv::WriterBuilder::new().with_header(true).build(out);
            if batches.is_empty() {
                writer.write(&RecordBatch::new_empty(schema.clone()))?;
            }
            for batch in batches {
                writer.write(batch)?;
            }
        }
        Format::Json => {
            let mut writer = json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, json::writer::JsonArray>(&mut *out);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
            drop(writer);
            writeln!(out)?;
        }
        Format::Parquet => {
            let mut writer = ArrowWriter::try_new(out, schema.clone(), None)?;
            for batch in batches {
                writer.write(batch)?;
            }
            writer.close()?;
        }
    }
    Ok(())
}
