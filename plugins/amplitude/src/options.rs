//! The source's options: their JSON Schema, and reading them into typed settings.
//!
//! A source reads from exactly one place: the Export API (`api`), a directory of export files
//! (`path`), or Amplitude's S3 export (`s3`). The host validates the options against
//! [`schema`] first; reading here applies defaults and checks what a schema cannot say.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::NaiveDate;
use lodestar_connector_api::kit::secret::Secret;
use lodestar_connector_api::serde_json::{Value, json};
use lodestar_connector_api::{BoxError, Options};

use crate::rows::{BUILTIN_COLUMNS, Scope};

/// The JSON Schema of the options.
pub fn schema() -> Value {
    let api = json!({
        "type": "object",
        "description": "Read through Amplitude's Export API (GET /api/2/export), caching each hour fetched",
        "properties": {
            "api_key": { "type": "string", "minLength": 1, "description": "The project's API key (the basic-auth user)" },
            "secret_key": { "type": "string", "minLength": 1, "description": "The project's secret key (the basic-auth password); write it as ${ENV}" },
            "residency": { "enum": ["us", "eu"], "description": "Where the project's data lives: us (https://amplitude.com, the default) or eu (https://analytics.eu.amplitude.com)" },
            "base_url": { "type": "string", "minLength": 1, "description": "The API's base URL, overriding `residency` (a proxy, a test server)" },
            "start": { "type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$", "description": "The first day (YYYY-MM-DD, UTC) a query without a time range reads; queries with a time range read only their hours" },
            "cache_dir": { "type": "string", "minLength": 1, "description": "Where fetched hours are kept. Default: ~/.cache/lodestar/amplitude/<hash of base URL and API key>" },
            "max_retries": { "type": "integer", "minimum": 0, "description": "Retries of a request answered 429 (rate limited), 500, 502, 503 or 504, or failing to connect (default 8)" },
            "backoff_ms": { "type": "integer", "minimum": 0, "description": "First wait before a retry, doubling each time, with jitter; a Retry-After header wins (default 1000)" },
            "max_retry_wait_ms": { "type": "integer", "minimum": 0, "description": "The longest wait before one retry, a server's Retry-After included (default 60000)" },
            "timeout_secs": { "type": "integer", "minimum": 1, "description": "Time limit of one export request (default 900)" }
        },
        "required": ["api_key", "secret_key"],
        "additionalProperties": false
    });
    let s3 = json!({
        "type": "object",
        "description": "Read Amplitude's S3 export (<prefix>/<project_id>/<project_id>_<date>_<H>#<n>.json.gz)",
        "properties": {
            "bucket": { "type": "string", "minLength": 1, "description": "Bucket name (without s3://)" },
            "prefix": { "type": "string", "description": "Key prefix the export writes under. Default: the bucket's root" },
            "region": { "type": "string", "description": "Bucket region. Default: AWS_REGION, else us-east-1" },
            "endpoint": { "type": "string", "description": "URL of an S3-compatible service. Default: AWS" },
            "allow_http": { "type": "boolean", "description": "Allow a plain-HTTP endpoint (default false)" },
            "access_key_id": { "type": "string", "description": "Access key id. Default: the environment's AWS credentials" },
            "secret_access_key": { "type": "string", "description": "Secret access key; write it as ${ENV}" }
        },
        "required": ["bucket"],
        "additionalProperties": false
    });
    json!({
        "type": "object",
        "properties": {
            "api": api,
            "path": { "type": "string", "minLength": 1, "description": "A directory of export files: the Export API's zip archives and/or the hourly *.json.gz files, in any sub-folders" },
            "s3": s3,
            "late_hours": { "type": "integer", "minimum": 0, "description": "Hours of files after a query's time range also read, for events uploaded late (files are named by upload time). Default 24" },
            "bad_lines": { "enum": ["fail", "skip"], "description": "A malformed line fails the query (`fail`, the default) or is skipped and reported on stderr with its file and line (`skip`)" },
            "properties": {
                "type": "object",
                "description": "Extra text columns taken from the event's properties: `column: event_properties.<name>` (or user_properties, group_properties)",
                "additionalProperties": { "type": "string", "pattern": "^(event|user|group)_properties\\..+$" }
            }
        },
        "additionalProperties": false
    })
}

/// Where the exports come from.
#[derive(Debug, Clone)]
pub enum Origin {
    Api(Api),
    Files(PathBuf),
    S3(S3),
}

/// The Export API's settings.
#[derive(Debug, Clone)]
pub struct Api {
    pub api_key: String,
    pub secret_key: Secret,
    /// Without a trailing slash.
    pub base_url: String,
    pub start: Option<NaiveDate>,
    pub cache_dir: PathBuf,
    pub max_retries: u32,
    pub backoff: Duration,
    /// The cap of every wait between attempts, `Retry-After` included.
    pub max_retry_wait: Duration,
    pub timeout: Duration,
}

/// The S3 export's settings.
#[derive(Debug, Clone)]
pub struct S3 {
    pub bucket: String,
    pub prefix: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub allow_http: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
}

/// What to do with a malformed line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadLines {
    Fail,
    Skip,
}

/// A column flattened from properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flattened {
    pub column: String,
    pub scope: Scope,
    pub key: String,
}

/// The source's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub origin: Origin,
    pub late_hours: i64,
    pub bad_lines: BadLines,
    pub properties: Vec<Flattened>,
}

impl Settings {
    pub fn from_options(options: &Options) -> Result<Settings, BoxError> {
        let given: Vec<&str> = ["api", "path", "s3"]
            .into_iter()
            .filter(|k| options.contains_key(*k))
            .collect();
        let origin = match given.as_slice() {
            ["api"] => Origin::Api(api(&options["api"])?),
            ["path"] => Origin::Files(PathBuf::from(text(options, "path").unwrap_or_default())),
            ["s3"] => Origin::S3(s3(&options["s3"])),
            [] => {
                return Err(
                    "say where the exports are: `api` (the Export API), `path` (a directory of export files) or `s3` (Amplitude's S3 export)"
                        .into(),
                );
            }
            _ => {
                return Err(format!(
                    "options {} exclude each other: a source reads from one place; use one source per place",
                    given
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                )
                .into());
            }
        };
        let late_hours = options
            .get("late_hours")
            .and_then(Value::as_i64)
            .unwrap_or(24);
        let bad_lines = match text(options, "bad_lines").as_deref() {
            Some("skip") => BadLines::Skip,
            _ => BadLines::Fail,
        };
        let mut properties = Vec::new();
        if let Some(Value::Object(map)) = options.get("properties") {
            let map: BTreeMap<&String, &Value> = map.iter().collect();
            for (column, path) in map {
                let path = path.as_str().unwrap_or_default();
                let (scope, key) = path.split_once('.').unwrap_or((path, ""));
                let scope = match scope {
                    "event_properties" => Scope::Event,
                    "user_properties" => Scope::User,
                    "group_properties" => Scope::Group,
                    _ => {
                        return Err(format!(
                            "`properties.{column}`: `{path}` is not `event_properties.<name>`, `user_properties.<name>` or `group_properties.<name>`"
                        )
                        .into());
                    }
                };
                if BUILTIN_COLUMNS.contains(&column.as_str()) {
                    return Err(format!(
                        "`properties.{column}`: `{column}` is already a column of `events`; choose another name"
                    )
                    .into());
                }
                properties.push(Flattened {
                    column: column.clone(),
                    scope,
                    key: key.to_string(),
                });
            }
        }
        Ok(Settings {
            origin,
            late_hours,
            bad_lines,
            properties,
        })
    }

    /// The secret values, to mask in any text shown.
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets = Vec::new();
        match &self.origin {
            Origin::Api(api) => secrets.push(api.secret_key.expose().to_string()),
            Origin::S3(s3) => {
                secrets.extend(s3.secret_access_key.iter().map(|s| s.expose().to_string()))
            }
            Origin::Files(_) => {}
        }
        secrets.retain(|s| !s.is_empty());
        secrets
    }
}

fn text(options: &Options, key: &str) -> Option<String> {
    options.get(key).and_then(Value::as_str).map(str::to_string)
}

fn api(value: &Value) -> Result<Api, BoxError> {
    let options = value.as_object().cloned().unwrap_or_default();
    let api_key = text(&options, "api_key").unwrap_or_default();
    let secret_key = Secret::new(text(&options, "secret_key").unwrap_or_default());
    let base_url = match (
        text(&options, "base_url"),
        text(&options, "residency").as_deref(),
    ) {
        (Some(url), _) => url,
        (None, Some("eu")) => "https://analytics.eu.amplitude.com".to_string(),
        (None, _) => "https://amplitude.com".to_string(),
    };
    let base_url = base_url.trim_end_matches('/').to_string();
    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
        return Err(format!("`api.base_url` `{base_url}` is not an http(s) URL").into());
    }
    let start = match text(&options, "start") {
        Some(day) => Some(
            NaiveDate::parse_from_str(&day, "%Y-%m-%d")
                .map_err(|_| format!("`api.start` `{day}` is not a date (YYYY-MM-DD)"))?,
        ),
        None => None,
    };
    let cache_dir = match text(&options, "cache_dir") {
        Some(dir) => PathBuf::from(dir),
        None => default_cache_dir(&base_url, &api_key),
    };
    let number =
        |key: &str, default: u64| options.get(key).and_then(Value::as_u64).unwrap_or(default);
    Ok(Api {
        api_key,
        secret_key,
        base_url,
        start,
        cache_dir,
        max_retries: u32::try_from(number("max_retries", 8)).unwrap_or(u32::MAX),
        backoff: Duration::from_millis(number("backoff_ms", 1000)),
        max_retry_wait: Duration::from_millis(number("max_retry_wait_ms", 60_000)),
        timeout: Duration::from_secs(number("timeout_secs", 900)),
    })
}

fn s3(value: &Value) -> S3 {
    let options = value.as_object().cloned().unwrap_or_default();
    let mut prefix = text(&options, "prefix").unwrap_or_default();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    S3 {
        bucket: text(&options, "bucket").unwrap_or_default(),
        prefix: prefix.trim_start_matches('/').to_string(),
        region: text(&options, "region"),
        endpoint: text(&options, "endpoint"),
        allow_http: options
            .get("allow_http")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        access_key_id: text(&options, "access_key_id"),
        secret_access_key: text(&options, "secret_access_key").map(Secret::new),
    }
}

/// `~/.cache/lodestar/amplitude/<hash>`: one folder per project (base URL and API key), named
/// by a hash so that not even the API key is written in a path.
fn default_cache_dir(base_url: &str, api_key: &str) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("lodestar")
        .join("amplitude")
        .join(format!("{:016x}", fnv1a(&format!("{base_url}\n{api_key}"))))
}

/// FNV-1a, 64 bits: a hash that stays the same across Rust versions (std's does not promise to).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lodestar_connector_api::serde_json;

    fn settings(value: Value) -> Result<Settings, BoxError> {
        Settings::from_options(&serde_json::from_value(value).unwrap())
    }

    #[test]
    fn one_origin_with_defaults() {
        let s =
            settings(json!({"api": {"api_key": "k", "secret_key": "s3cr3t", "residency": "eu"}}))
                .unwrap();
        let Origin::Api(api) = &s.origin else {
            panic!("{s:?}")
        };
        assert_eq!(api.base_url, "https://analytics.eu.amplitude.com");
        assert!(!format!("{s:?}").contains("s3cr3t"));
        assert_eq!(s.secrets(), ["s3cr3t"]);
        assert_eq!(s.late_hours, 24);
        assert_eq!(s.bad_lines, BadLines::Fail);
        let dir = api.cache_dir.to_string_lossy().to_string();
        assert!(!dir.contains("s3cr3t") && !dir.ends_with("/k"), "{dir}");

        let e = settings(json!({"path": "x", "s3": {"bucket": "b"}})).unwrap_err();
        assert!(e.to_string().contains("`path` and `s3` exclude"), "{e}");
        assert!(settings(json!({})).is_err());
    }

    #[test]
    fn properties_are_flattened_by_scope() {
        let s = settings(json!({"path": "x", "properties": {
            "plan": "event_properties.plan", "tier": "user_properties.account.tier"}}))
        .unwrap();
        assert_eq!(
            s.properties,
            [
                Flattened {
                    column: "plan".into(),
                    scope: Scope::Event,
                    key: "plan".into()
                },
                Flattened {
                    column: "tier".into(),
                    scope: Scope::User,
                    key: "account.tier".into()
                }
            ]
        );
        let e = settings(json!({"path": "x", "properties": {"country": "event_properties.c"}}))
            .unwrap_err();
        assert!(e.to_string().contains("already a column"), "{e}");
    }
}
