//! File formats: Parquet, CSV and newline-delimited JSON, by name (the `format` option) and
//! by a file's extension, and the DataFusion reader of each.

use std::sync::Arc;

use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use serde_json::{Value, json};

/// A file format a connector reads.
///
/// ```
/// use lodestar_connector_api::kit::format::Format;
///
/// assert_eq!(Format::from_name("ndjson"), Some(Format::Json));
/// assert_eq!(Format::of_file("part-0.snappy.parquet"), Some((Format::Parquet, ".parquet")));
/// assert_eq!(Format::of_file("_SUCCESS"), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    Parquet,
    Csv,
    /// Newline-delimited JSON.
    Json,
}

/// The names the `format` option takes.
pub const FORMAT_NAMES: &[&str] = &["parquet", "csv", "json", "ndjson", "jsonl"];

/// File endings and their formats; `.tsv` is CSV with tabs.
const EXTENSIONS: &[(&str, Format)] = &[
    (".parquet", Format::Parquet),
    (".pq", Format::Parquet),
    (".csv", Format::Csv),
    (".tsv", Format::Csv),
    (".ndjson", Format::Json),
    (".jsonl", Format::Json),
    (".json", Format::Json),
];

/// How CSV files are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvOptions {
    /// `None`: a tab for `.tsv` files, a comma otherwise.
    pub delimiter: Option<u8>,
    pub has_header: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: None,
            has_header: true,
        }
    }
}

impl Format {
    /// The format a `format` option names (any case): `parquet`, `csv`, `json`, `ndjson`,
    /// `jsonl`.
    pub fn from_name(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "parquet" => Some(Format::Parquet),
            "csv" => Some(Format::Csv),
            "json" | "ndjson" | "jsonl" => Some(Format::Json),
            _ => None,
        }
    }

    /// The format of a file, from its name's extension (any case), and the extension
    /// (`.snappy.parquet` counts as `.parquet`).
    pub fn of_file(name: &str) -> Option<(Format, &'static str)> {
        let lower = name.to_ascii_lowercase();
        EXTENSIONS
            .iter()
            .find(|(ext, _)| lower.ends_with(ext))
            .map(|(ext, format)| (*format, *ext))
    }

    /// The format's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }

    /// The `format` option's JSON Schema, for a connector's options schema.
    pub fn schema() -> Value {
        json!({
            "enum": FORMAT_NAMES,
            "description": "File format: parquet, csv or json (newline-delimited; `ndjson` and `jsonl` are the same). Default: from the files' extensions (.parquet/.pq, .csv/.tsv, .json/.ndjson/.jsonl)"
        })
    }

    /// DataFusion's reader of the format, for files ending with `extension` (a `.tsv` file's
    /// CSV delimiter is a tab unless `csv` says otherwise).
    pub fn file_format(self, csv: CsvOptions, extension: &str) -> Arc<dyn FileFormat> {
        match self {
            Format::Parquet => Arc::new(ParquetFormat::default()),
            Format::Csv => {
                let tab = extension.to_ascii_lowercase().ends_with("tsv");
                Arc::new(
                    CsvFormat::default()
                        .with_has_header(csv.has_header)
                        .with_delimiter(csv.delimiter.unwrap_or(if tab { b'\t' } else { b',' })),
                )
            }
            Format::Json => Arc::new(JsonFormat::default()),
        }
    }
}

/// The `delimiter` option: one character, or `\t` written out.
pub fn csv_delimiter(text: &str) -> Result<u8, String> {
    match text {
        "\\t" => Ok(b'\t'),
        d if d.len() == 1 => Ok(d.as_bytes()[0]),
        d => Err(format!(
            "`delimiter` must be one character or \\t, not `{d}`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::datasource::file_format::csv::CsvFormat;

    use super::*;

    #[test]
    fn formats_come_from_extensions() {
        let of = Format::of_file;
        assert_eq!(
            of("part-0.snappy.parquet"),
            Some((Format::Parquet, ".parquet"))
        );
        assert_eq!(of("day.pq"), Some((Format::Parquet, ".pq")));
        assert_eq!(of("a.TSV"), Some((Format::Csv, ".tsv")));
        assert_eq!(of("a.csv"), Some((Format::Csv, ".csv")));
        assert_eq!(of("x.jsonl"), Some((Format::Json, ".jsonl")));
        assert_eq!(of("x.ndjson"), Some((Format::Json, ".ndjson")));
        assert_eq!(of("x.json"), Some((Format::Json, ".json")));
        assert_eq!(of("_SUCCESS"), None);
        assert_eq!(of("notes.txt"), None);
        assert_eq!(of("parquet"), None);
    }

    #[test]
    fn formats_come_from_names() {
        for (name, format) in [
            ("parquet", Format::Parquet),
            ("CSV", Format::Csv),
            ("json", Format::Json),
            ("ndjson", Format::Json),
            ("jsonl", Format::Json),
        ] {
            assert_eq!(Format::from_name(name), Some(format), "{name}");
        }
        assert_eq!(Format::from_name("pq"), None);
        assert_eq!(Format::from_name("avro"), None);
        // The schema's names are exactly those `from_name` reads.
        assert!(FORMAT_NAMES.iter().all(|n| Format::from_name(n).is_some()));
        assert_eq!(Format::schema()["enum"], json!(FORMAT_NAMES));
    }

    #[test]
    fn delimiters_are_one_character_or_a_written_tab() {
        assert_eq!(csv_delimiter(";"), Ok(b';'));
        assert_eq!(csv_delimiter("\\t"), Ok(b'\t'));
        assert_eq!(
            csv_delimiter("||"),
            Err("`delimiter` must be one character or \\t, not `||`".into())
        );
    }

    #[test]
    fn tsv_files_are_read_with_tabs() {
        let delimiter = |csv: CsvOptions, extension: &str| {
            let format = Format::Csv.file_format(csv, extension);
            format
                .downcast_ref::<CsvFormat>()
                .unwrap()
                .options()
                .delimiter
        };
        assert_eq!(delimiter(CsvOptions::default(), ".tsv"), b'\t');
        assert_eq!(delimiter(CsvOptions::default(), ".csv"), b',');
        let semicolon = CsvOptions {
            delimiter: Some(b';'),
            has_header: false,
        };
        assert_eq!(delimiter(semicolon, ".tsv"), b';');
    }
}
