//! The source's options: their JSON Schema, and reading them into typed settings.
//!
//! The host validates the options against [`schema`] before `connect` runs, so reading here
//! only applies defaults and checks what a schema cannot say (options that go together, a
//! bucket that is a name and not a URL).

use std::collections::BTreeMap;
use std::time::Duration;

use lodestar_connector_api::kit::format::{CsvOptions, FORMAT_NAMES, Format, csv_delimiter};
use lodestar_connector_api::kit::partition::TimePartition;
use lodestar_connector_api::kit::secret::Secret;
use lodestar_connector_api::serde_json::{Value, json};
use lodestar_connector_api::{BoxError, Options};

/// The JSON Schema of the options, as `lodestar connectors` and the host's validation see it.
pub fn schema() -> Value {
    let format = Format::schema();
    let time_partition = TimePartition::schema();
    json!({
        "type": "object",
        "properties": {
            "bucket": { "type": "string", "minLength": 1, "description": "Bucket name (without s3://)" },
            "prefix": { "type": "string", "description": "Key prefix the tables live under, such as `lake/events/`. Default: the bucket's root" },
            "region": { "type": "string", "description": "Bucket region, such as eu-west-1. Default: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1" },
            "endpoint": { "type": "string", "description": "URL of an S3-compatible service (MinIO, Ceph, Cloudflare R2, ...), such as http://localhost:9000. Default: AWS" },
            "allow_http": { "type": "boolean", "description": "Allow a plain-HTTP endpoint (default false)" },
            "virtual_hosted_style": { "type": "boolean", "description": "Address the bucket as a host name (https://BUCKET.ENDPOINT/KEY) instead of a path (https://ENDPOINT/BUCKET/KEY). Default false: path-style, which MinIO and most S3-compatible services need" },
            "skip_signature": { "type": "boolean", "description": "Send unsigned requests, for public buckets (default false)" },
            "access_key_id": { "type": "string", "minLength": 1, "description": "Access key id; use ${ENV} interpolation. Default: the AWS credential chain (environment, web identity, container or instance metadata)" },
            "secret_access_key": { "type": "string", "minLength": 1, "description": "Secret access key, with access_key_id; use ${ENV} interpolation. Never shown in messages" },
            "session_token": { "type": "string", "minLength": 1, "description": "Session token of temporary credentials, with the keys; use ${ENV} interpolation. Never shown in messages" },
            "format": format,
            "delimiter": { "type": "string", "minLength": 1, "maxLength": 2, "description": "CSV field delimiter: one character, or \\t. Default: a tab for .tsv files, a comma otherwise" },
            "has_header": { "type": "boolean", "description": "Whether CSV files start with a header row (default true)" },
            "tables": {
                "type": "object",
                "description": "The tables, by name. Default: every top-level folder under `prefix` is a table (and every data file directly under it)",
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "prefix": { "type": "string", "description": "Key prefix of the table's files, under the source's `prefix` (empty: the source's prefix itself). Default: the table's name" },
                        "format": format,
                        "time_partition": time_partition
                    },
                    "additionalProperties": false
                }
            },
            "time_partition": time_partition,
            "max_retries": { "type": "integer", "minimum": 0, "description": "Retries of a request that failed with a 5xx, a throttling answer or a connection error, with exponential backoff (default 10)" },
            "retry_timeout_secs": { "type": "number", "exclusiveMinimum": 0, "description": "Stop retrying a request this many seconds after its first attempt (default 180)" },
            "connect_timeout_secs": { "type": "number", "exclusiveMinimum": 0, "description": "Timeout to open a connection (default 5)" },
            "request_timeout_secs": { "type": "number", "exclusiveMinimum": 0, "description": "Timeout of one request, from sending it to the end of the answer (default 30)" },
            "listing_cache_secs": { "type": "integer", "minimum": 0, "description": "How long a table's file listing is reused by later queries of one process (default 60; 0: list on every query)" }
        },
        "required": ["bucket"],
        "additionalProperties": false
    })
}

/// A table named in `tables`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableOption {
    pub name: String,
    /// Relative to the source's prefix, ending with `/`.
    pub prefix: String,
    pub format: Option<Format>,
    pub time_partition: Option<TimePartition>,
}

/// The options, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub bucket: String,
    /// Empty (the bucket's root) or ending with `/`, never starting with one.
    pub prefix: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub allow_http: Option<bool>,
    pub virtual_hosted_style: Option<bool>,
    pub skip_signature: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    pub format: Option<Format>,
    pub csv: CsvOptions,
    /// `None`: list the tables under the prefix.
    pub tables: Option<Vec<TableOption>>,
    pub time_partition: Option<TimePartition>,
    pub max_retries: Option<usize>,
    pub retry_timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    pub request_timeout: Option<Duration>,
    pub listing_cache: Duration,
}

/// How long a listing is reused when `listing_cache_secs` is not set: long enough for the
/// queries of one command, short enough for a long-running server to see new files.
const DEFAULT_LISTING_CACHE: Duration = Duration::from_secs(60);

impl Settings {
    pub fn from_options(options: &Options) -> Result<Settings, BoxError> {
        let string = |key: &str| options.get(key).and_then(Value::as_str).map(str::to_string);
        let boolean = |key: &str| options.get(key).and_then(Value::as_bool);
        let seconds = |key: &str| -> Result<Option<Duration>, BoxError> {
            options
                .get(key)
                .and_then(Value::as_f64)
                .map(|s| {
                    Duration::try_from_secs_f64(s)
                        .map_err(|_| format!("`{key}` is not a usable number of seconds").into())
                })
                .transpose()
        };

        let bucket = string("bucket").ok_or("option `bucket` is required")?;
        if bucket.contains('/') || bucket.contains(':') {
            return Err(format!(
                "`bucket` must be a bucket name, not `{bucket}`; put the path in `prefix` (for s3://acme/lake/: bucket: acme, prefix: lake/)"
            )
            .into());
        }
        let access_key_id = string("access_key_id");
        let secret_access_key = string("secret_access_key").map(Secret::new);
        let session_token = string("session_token").map(Secret::new);
        if access_key_id.is_some() != secret_access_key.is_some() {
            return Err("`access_key_id` and `secret_access_key` go together: set both, or neither to use the AWS credential chain".into());
        }
        if session_token.is_some() && access_key_id.is_none() {
            return Err("`session_token` needs `access_key_id` and `secret_access_key`".into());
        }

        let format = string("format").map(|f| parse_format(&f)).transpose()?;
        let delimiter = string("delimiter").map(|d| csv_delimiter(&d)).transpose()?;
        let time_partition = options
            .get("time_partition")
            .map(parse_time_partition)
            .transpose()?;
        let tables = options
            .get("tables")
            .and_then(Value::as_object)
            .map(|tables| {
                // Sorted by name, whatever the map's order: listings and errors are stable.
                let sorted: BTreeMap<&String, &Value> = tables.iter().collect();
                sorted
                    .into_iter()
                    .map(|(name, table)| parse_table(name, table))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        if tables.as_ref().is_some_and(Vec::is_empty) {
            return Err("`tables` is empty: name at least one table, or leave it out to discover the tables".into());
        }

        Ok(Settings {
            bucket,
            prefix: folder(&string("prefix").unwrap_or_default()),
            region: string("region"),
            endpoint: string("endpoint"),
            allow_http: boolean("allow_http"),
            virtual_hosted_style: boolean("virtual_hosted_style"),
            skip_signature: boolean("skip_signature").unwrap_or(false),
            access_key_id,
            secret_access_key,
            session_token,
            format,
            csv: CsvOptions {
                delimiter,
                has_header: boolean("has_header").unwrap_or(true),
            },
            tables,
            time_partition,
            max_retries: options
                .get("max_retries")
                .and_then(Value::as_u64)
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            retry_timeout: seconds("retry_timeout_secs")?,
            connect_timeout: seconds("connect_timeout_secs")?,
            request_timeout: seconds("request_timeout_secs")?,
            listing_cache: options
                .get("listing_cache_secs")
                .and_then(Value::as_u64)
                .map_or(DEFAULT_LISTING_CACHE, Duration::from_secs),
        })
    }

    /// `s3://bucket/prefix`, for messages.
    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// The values that must never appear in a message.
    pub fn secrets(&self) -> Vec<String> {
        [&self.secret_access_key, &self.session_token]
            .into_iter()
            .flatten()
            .map(|s| s.expose().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

fn parse_format(name: &str) -> Result<Format, BoxError> {
    Format::from_name(name).ok_or_else(|| {
        format!(
            "unknown format `{name}`: expected {}",
            FORMAT_NAMES.join(", ")
        )
        .into()
    })
}

fn parse_time_partition(value: &Value) -> Result<TimePartition, BoxError> {
    Ok(TimePartition::from_json(value)?)
}

fn parse_table(name: &str, table: &Value) -> Result<TableOption, BoxError> {
    if name.is_empty() || name.contains(['.', '/']) {
        return Err(
            format!("`tables`: `{name}` is not a usable table name (no dots or slashes)").into(),
        );
    }
    let prefix = table.get("prefix").and_then(Value::as_str).unwrap_or(name);
    Ok(TableOption {
        name: name.to_string(),
        // Empty: the source's prefix itself is the table's folder.
        prefix: folder(prefix),
        format: table
            .get("format")
            .and_then(Value::as_str)
            .map(parse_format)
            .transpose()?,
        time_partition: table
            .get("time_partition")
            .map(parse_time_partition)
            .transpose()?,
    })
}

/// A key prefix as a folder: no leading `/`, a trailing `/` unless empty.
fn folder(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("{trimmed}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lodestar_connector_api::serde_json;

    fn options(value: Value) -> Options {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn defaults_and_prefixes_are_normalised() {
        let s = Settings::from_options(&options(
            json!({ "bucket": "acme", "prefix": "/lake/events" }),
        ))
        .unwrap();
        assert_eq!(s.prefix, "lake/events/");
        assert_eq!(s.location(), "s3://acme/lake/events/");
        assert!(s.csv.has_header);
        assert_eq!(s.listing_cache, DEFAULT_LISTING_CACHE);
        assert!(s.tables.is_none());
        assert!(s.secrets().is_empty());
    }

    #[test]
    fn tables_default_their_prefix_to_their_name() {
        let s = Settings::from_options(&options(json!({
            "bucket": "acme",
            "tables": { "users": { "format": "csv" }, "events": { "prefix": "raw/events" } }
        })))
        .unwrap();
        let tables = s.tables.unwrap();
        assert_eq!(tables[0].name, "events");
        assert_eq!(tables[0].prefix, "raw/events/");
        assert_eq!(tables[1].prefix, "users/");
        assert_eq!(tables[1].format, Some(Format::Csv));
    }

    #[test]
    fn keys_go_together_and_are_masked() {
        let err = Settings::from_options(&options(json!({ "bucket": "b", "access_key_id": "AK" })))
            .unwrap_err();
        assert!(err.to_string().contains("go together"), "{err}");
        let s = Settings::from_options(&options(json!({
            "bucket": "b", "access_key_id": "AK", "secret_access_key": "SK-123", "session_token": "TOK"
        })))
        .unwrap();
        assert_eq!(s.secrets(), ["SK-123", "TOK"]);
        assert!(!format!("{s:?}").contains("SK-123"));
    }

    #[test]
    fn a_bucket_url_is_refused_with_the_fix() {
        let err =
            Settings::from_options(&options(json!({ "bucket": "s3://acme/lake" }))).unwrap_err();
        assert!(err.to_string().contains("prefix"), "{err}");
    }

    /// The forms docs/connectors.md promises: `time` one column or a list, and every format
    /// name of the `files` connector.
    #[test]
    fn time_partition_lists_time_columns_and_formats_match_the_files_connector() {
        let s = Settings::from_options(&options(json!({
            "bucket": "acme",
            "format": "jsonl",
            "time_partition": { "column": "dt", "time": ["ts", "created_at"] },
            "tables": { "events": { "time_partition": { "column": "day", "time": "ts" } } }
        })))
        .unwrap();
        assert_eq!(s.format, Some(Format::Json));
        assert_eq!(
            s.time_partition,
            Some(TimePartition {
                column: "dt".into(),
                time: vec!["ts".into(), "created_at".into()]
            })
        );
        let tables = s.tables.unwrap();
        assert_eq!(
            tables[0].time_partition,
            Some(TimePartition {
                column: "day".into(),
                time: vec!["ts".into()]
            })
        );
        let err = Settings::from_options(&options(json!({
            "bucket": "acme", "time_partition": { "column": "dt", "time": [] }
        })))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`time_partition.time` must name a time column or list several, such as `event_time` or [event_time, created_at], not []"
        );
        let err = Settings::from_options(&options(json!({ "bucket": "acme", "format": "avro" })))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown format `avro`: expected parquet, csv, json, ndjson, jsonl"
        );
    }

    #[test]
    fn formats_come_from_extensions() {
        assert_eq!(
            Format::of_file("part-0.snappy.parquet"),
            Some((Format::Parquet, ".parquet"))
        );
        assert_eq!(Format::of_file("a.TSV"), Some((Format::Csv, ".tsv")));
        assert_eq!(Format::of_file("x.jsonl"), Some((Format::Json, ".jsonl")));
        assert_eq!(Format::of_file("day.pq"), Some((Format::Parquet, ".pq")));
        assert_eq!(Format::of_file("_SUCCESS"), None);
    }
}
