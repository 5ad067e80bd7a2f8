//! A source's options, with libpq's defaults: the connection (a URL or `PG*` variables), TLS
//! mode, pool size, statement timeout, schemas and how scans are split.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use lodestar_connector_api::serde_json::Value;
use lodestar_connector_api::{BoxError, Options};
use tokio_postgres::config::{Host, SslMode};

/// Connections a source keeps open at most (in use or idle) when `pool_size` is not given.
pub const DEFAULT_POOL_SIZE: usize = 4;
/// A plain table is split into parallel ranges of at least this many 8 KiB pages (8 MiB), so
/// small tables are read on one connection and large ones on several.
pub const DEFAULT_PAGES_PER_PARTITION: u32 = 1024;
/// libpq waits forever by default; a metric run should say what is wrong instead.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Shown in `pg_stat_activity` so a DBA can tell Lodestar's scans apart.
const DEFAULT_APPLICATION_NAME: &str = "lodestar";

/// The JSON Schema of the options, checked by the host before `connect` runs.
pub fn options_schema() -> Value {
    lodestar_connector_api::serde_json::json!({
        "type": "object",
        "properties": {
            "url": {
                "type": "string",
                "description": "libpq connection URL (postgres://user:password@host:5432/db?sslmode=require) or key=value string; what it leaves out comes from PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE, PGAPPNAME, PGCONNECT_TIMEOUT"
            },
            "schemas": {
                "anyOf": [
                    { "type": "string" },
                    { "type": "array", "items": { "type": "string" }, "minItems": 1 }
                ],
                "description": "Schema, or schemas searched in order like search_path, whose tables and views are exposed (default public)"
            },
            "tls": {
                "enum": ["disable", "prefer", "require", "verify-ca", "verify-full"],
                "description": "TLS mode, as libpq's sslmode: verify-full checks the server's certificate chain and name, verify-ca only its chain; prefer (the default) and require encrypt without checking who answers, and prefer falls back to plain text (default: the URL's sslmode, else PGSSLMODE, else prefer)"
            },
            "sslrootcert": {
                "type": "string", "minLength": 1,
                "description": "PEM file of the certificate authorities verify-ca and verify-full trust (default: PGSSLROOTCERT, else the system's roots)"
            },
            "pool_size": {
                "type": "integer", "minimum": 1, "maximum": 64,
                "description": "Connections the source opens at most, so parallel ranges of a scan (default 4)"
            },
            "statement_timeout": {
                "type": ["string", "integer"],
                "description": "Longest a query may run: milliseconds, or a number with ms, s, min, h or d (30s, 5min); default: the server's"
            },
            "pages_per_partition": {
                "type": "integer", "minimum": 1,
                "description": "Smallest range of table pages (8 KiB each) read by one connection of a parallel scan (default 1024)"
            }
        },
        "additionalProperties": false
    })
}

/// TLS as libpq's `sslmode`. `Prefer` and `Require` encrypt without checking the server's
/// certificate (as libpq does without a root certificate); `Prefer` connects in plain text to a
/// server without TLS, so an attacker on the path can downgrade it. `VerifyCa` checks the
/// certificate chain against the trusted roots, `VerifyFull` also that the certificate names
/// the host connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl TlsMode {
    fn parse(text: &str) -> Option<TlsMode> {
        match text {
            "disable" => Some(TlsMode::Disable),
            // libpq's `allow` tries without TLS first; tokio-postgres has no such mode, and
            // trying with TLS first only changes which attempt succeeds.
            "prefer" | "allow" => Some(TlsMode::Prefer),
            "require" => Some(TlsMode::Require),
            "verify-ca" => Some(TlsMode::VerifyCa),
            "verify-full" => Some(TlsMode::VerifyFull),
            _ => None,
        }
    }

    /// tokio-postgres' mode: the verifying modes require TLS, and the certificate is checked
    /// by the connector's verifier (`pool.rs`).
    pub fn ssl_mode(self) -> SslMode {
        match self {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
        }
    }

    /// Whether the server's certificate is checked.
    pub fn verifies(self) -> bool {
        matches!(self, TlsMode::VerifyCa | TlsMode::VerifyFull)
    }
}

/// Everything a source needs, read from its options and the environment.
#[derive(Clone)]
pub struct Settings {
    pub config: tokio_postgres::Config,
    pub tls: TlsMode,
    /// The roots `verify-ca` and `verify-full` trust: a PEM file, else the system's.
    pub root_cert: Option<PathBuf>,
    pub pool_size: usize,
    pub schemas: Vec<String>,
    pub pages_per_partition: u32,
    /// Where the source connects, for messages: never the password.
    pub target: Target,
    /// The password, only to scrub it from messages that might echo it.
    pub password: Option<String>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The config holds the password: show only where it points.
        f.debug_struct("Settings")
            .field("target", &self.target)
            .field("tls", &self.tls)
            .field("pool_size", &self.pool_size)
            .field("schemas", &self.schemas)
            .finish_non_exhaustive()
    }
}

/// `host:port/database` as user: how messages name the server, without secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PostgreSQL {}:{}/{} (user `{}`)",
            self.host, self.port, self.database, self.user
        )
    }
}

/// Reads the environment; a function so tests can give their own.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, with empty values taken as unset, as libpq does.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Settings {
    /// Reads options already checked against [`options_schema`].
    pub fn from_options(options: &Options, env: Env<'_>) -> Result<Settings, BoxError> {
        let url = options.get("url").and_then(Value::as_str);
        let url_sslmode = url.and_then(sslmode_of);
        // tokio-postgres knows no verifying modes: it is told `require`, and the connector
        // checks the certificate itself.
        let parsed = url.map(|url| match url_sslmode.as_deref() {
            Some("verify-ca" | "verify-full") => with_sslmode_require(url),
            _ => url.to_string(),
        });
        let mut config = match parsed.as_deref() {
            // The parser's message names the part that is wrong, never the text around it, so
            // a password in the URL is not repeated.
            Some(url) => url.parse::<tokio_postgres::Config>().map_err(|e| {
                format!(
                    "option `url` is not a PostgreSQL connection URL or key=value string: {e}\n  hint: write postgres://USER:PASSWORD@HOST:PORT/DATABASE"
                )
            })?,
            None => tokio_postgres::Config::new(),
        };
        // libpq semantics: the environment supplies what the connection string leaves out.
        if config.get_hosts().is_empty() {
            let hosts = env("PGHOST").unwrap_or_else(|| "localhost".into());
            for host in hosts.split(',') {
                config.host(host.trim());
            }
        }
        if config.get_ports().is_empty() {
            let port = match env("PGPORT") {
                Some(text) => text
                    .trim()
                    .parse::<u16>()
                    .map_err(|_| format!("PGPORT is not a port number: `{text}`"))?,
                None => 5432,
            };
            config.port(port);
        }
        if config.get_user().is_none() {
            // libpq falls back to the operating system's user name.
            let user = env("PGUSER")
                .or_else(|| env("USER"))
                .or_else(|| env("USERNAME"))
                .ok_or("no user: give one in `url` or set PGUSER")?;
            config.user(&user);
        }
        if config.get_password().is_none()
            && let Some(password) = env("PGPASSWORD")
        {
            config.password(password);
        }
        if config.get_dbname().is_none() {
            // The server's default too, but messages should name it.
            let database = env("PGDATABASE").unwrap_or_else(|| {
                config
                    .get_user()
                    .expect("the user was set above")
                    .to_string()
            });
            config.dbname(&database);
        }
        if config.get_application_name().is_none() {
            config.application_name(
                env("PGAPPNAME")
                    .as_deref()
                    .unwrap_or(DEFAULT_APPLICATION_NAME),
            );
        }
        if config.get_connect_timeout().is_none() {
            let timeout = match env("PGCONNECT_TIMEOUT") {
                Some(text) => Duration::from_secs(text.trim().parse::<u64>().map_err(|_| {
                    format!("PGCONNECT_TIMEOUT is not a number of seconds: `{text}`")
                })?),
                None => DEFAULT_CONNECT_TIMEOUT,
            };
            config.connect_timeout(timeout);
        }

        let tls = match options.get("tls").and_then(Value::as_str) {
            Some(mode) => TlsMode::parse(mode).ok_or_else(|| format!("unknown tls mode `{mode}`"))?,
            None => match url_sslmode.or_else(|| env("PGSSLMODE")) {
                Some(mode) => TlsMode::parse(&mode).ok_or_else(|| {
                    format!(
                        "sslmode `{mode}` is not supported: use disable, prefer, require, verify-ca or verify-full"
                    )
                })?,
                None => TlsMode::Prefer,
            },
        };
        config.ssl_mode(tls.ssl_mode());
        let root_cert = options
            .get("sslrootcert")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| env("PGSSLROOTCERT"))
            .map(PathBuf::from);

        let statement_timeout = match options.get("statement_timeout") {
            None => None,
            Some(value) => Some(parse_duration(value).ok_or_else(|| {
                format!(
                    "option `statement_timeout`: `{value}` is not a duration such as 30s, 5min or 1500 (milliseconds)"
                )
            })?),
        };
        if let Some(timeout) = statement_timeout {
            // A startup option applies to every statement of every pooled connection.
            let mut startup = config.get_options().unwrap_or_default().to_string();
            if !startup.is_empty() {
                startup.push(' ');
            }
            startup.push_str(&format!("-c statement_timeout={}", timeout.as_millis()));
            config.options(startup);
        }

        let schemas = match options.get("schemas") {
            None => vec!["public".to_string()],
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Some(_) => return Err("option `schemas` must be a string or a list of strings".into()),
        };
        let pool_size = options
            .get("pool_size")
            .and_then(Value::as_u64)
            .map_or(DEFAULT_POOL_SIZE, |n| n.clamp(1, 64) as usize);
        let pages_per_partition = options
            .get("pages_per_partition")
            .and_then(Value::as_u64)
            .map_or(DEFAULT_PAGES_PER_PARTITION, |n| {
                u32::try_from(n.max(1)).unwrap_or(u32::MAX)
            });

        let target = Target {
            host: match config.get_hosts().first() {
                Some(Host::Tcp(host)) => host.clone(),
                #[cfg(unix)]
                Some(Host::Unix(path)) => path.display().to_string(),
                None => "localhost".into(),
            },
            port: config.get_ports().first().copied().unwrap_or(5432),
            database: config.get_dbname().unwrap_or_default().to_string(),
            user: config.get_user().unwrap_or_default().to_string(),
        };
        let password = config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        Ok(Settings {
            config,
            tls,
            root_cert,
            pool_size,
            schemas,
            pages_per_partition,
            target,
            password,
        })
    }

    /// `message` with the password (if it could appear) replaced: a last line of defence, the
    /// messages built here never include it.
    pub fn scrub(&self, message: String) -> String {
        match &self.password {
            // A very short password would match ordinary text; none of ours quotes it anyway.
            Some(password) if password.len() >= 4 && message.contains(password.as_str()) => {
                message.replace(password.as_str(), "********")
            }
            _ => message,
        }
    }
}

/// The `sslmode` a URL or key=value string asks for, if any (tokio-postgres parses it but
/// cannot say whether it was given or defaulted).
fn sslmode_of(url: &str) -> Option<String> {
    let lower = url.to_ascii_lowercase();
    let start = lower.find("sslmode=")? + "sslmode=".len();
    let value: String = lower[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    (!value.is_empty()).then_some(value)
}

/// `url` with its `sslmode=` value replaced by `require` (ASCII case-insensitive, in a URL
/// or a key=value string).
fn with_sslmode_require(url: &str) -> String {
    let lower = url.to_ascii_lowercase();
    let Some(at) = lower.find("sslmode=") else {
        return url.to_string();
    };
    let start = at + "sslmode=".len();
    let len = lower[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .count();
    format!("{}require{}", &url[..start], &url[start + len..])
}

/// A duration option: milliseconds as a number, or a number with a unit as Postgres writes them.
fn parse_duration(value: &Value) -> Option<Duration> {
    if let Some(ms) = value.as_u64() {
        return Some(Duration::from_millis(ms));
    }
    let text = value.as_str()?.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "" | "ms" => number / 1000.0,
        "s" | "sec" | "secs" | "second" | "seconds" => number,
        "min" | "mins" | "minute" | "minutes" => number * 60.0,
        "h" | "hour" | "hours" => number * 3600.0,
        "d" | "day" | "days" => number * 86_400.0,
        _ => return None,
    };
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lodestar_connector_api::serde_json::json;

    fn options(value: Value) -> Options {
        match value {
            Value::Object(map) => map,
            other => panic!("options are an object, not {other}"),
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn a_url_gives_everything() {
        let s = Settings::from_options(
            &options(
                json!({ "url": "postgres://alice:s3cret-pw@db.example:6543/shop?sslmode=require" }),
            ),
            &no_env,
        )
        .unwrap();
        assert_eq!(
            s.target,
            Target {
                host: "db.example".into(),
                port: 6543,
                database: "shop".into(),
                user: "alice".into()
            }
        );
        assert_eq!(s.tls, TlsMode::Require);
        assert_eq!(s.schemas, ["public"]);
        assert_eq!(s.pool_size, DEFAULT_POOL_SIZE);
        assert!(!format!("{s:?}").contains("s3cret"));
        assert_eq!(
            s.scrub("bad s3cret-pw here".into()),
            "bad ******** here".to_string()
        );
    }

    #[test]
    fn the_environment_fills_what_the_url_leaves_out() {
        let env = |name: &str| match name {
            "PGHOST" => Some("10.0.0.5".to_string()),
            "PGPORT" => Some("5433".to_string()),
            "PGUSER" => Some("bob".to_string()),
            "PGPASSWORD" => Some("pw".to_string()),
            "PGDATABASE" => Some("crm".to_string()),
            "PGSSLMODE" => Some("disable".to_string()),
            _ => None,
        };
        let s = Settings::from_options(&options(json!({})), &env).unwrap();
        assert_eq!(
            s.target.to_string(),
            "PostgreSQL 10.0.0.5:5433/crm (user `bob`)"
        );
        assert_eq!(s.tls, TlsMode::Disable);
        assert_eq!(s.config.get_password(), Some(&b"pw"[..]));
        // The URL wins over the environment (a URL's host comes with port 5432 unless it
        // names one); the tls option over both.
        let s = Settings::from_options(
            &options(json!({ "url": "postgres://carol@h/x", "tls": "require" })),
            &env,
        )
        .unwrap();
        assert_eq!(s.target.to_string(), "PostgreSQL h:5432/x (user `carol`)");
        assert_eq!(s.tls, TlsMode::Require);
    }

    #[test]
    fn options_are_read() {
        let s = Settings::from_options(
            &options(json!({
                "url": "host=h user=u dbname=d",
                "schemas": ["app", "public"],
                "pool_size": 2,
                "statement_timeout": "5min",
                "pages_per_partition": 7
            })),
            &no_env,
        )
        .unwrap();
        assert_eq!(s.schemas, ["app", "public"]);
        assert_eq!(s.pool_size, 2);
        assert_eq!(s.pages_per_partition, 7);
        assert_eq!(s.config.get_options(), Some("-c statement_timeout=300000"));
        assert_eq!(s.tls, TlsMode::Prefer);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(
            parse_duration(&json!(1500)),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_duration(&json!("30s")), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_duration(&json!("250ms")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            parse_duration(&json!("2h")),
            Some(Duration::from_secs(7200))
        );
        assert_eq!(parse_duration(&json!("soon")), None);
    }

    #[test]
    fn a_bad_url_is_not_echoed() {
        let e = Settings::from_options(
            &options(json!({ "url": "postgres://u:hunter2@h:notaport/d" })),
            &no_env,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("option `url`"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn verifying_modes_come_from_the_url_the_environment_or_the_option() {
        let s = Settings::from_options(
            &options(
                json!({ "url": "postgres://u:pw@h/d?sslmode=Verify-Full&application_name=x" }),
            ),
            &no_env,
        )
        .unwrap();
        assert_eq!(s.tls, TlsMode::VerifyFull);
        assert_eq!(s.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(s.config.get_application_name(), Some("x"));
        assert_eq!(s.root_cert, None);

        let env = |name: &str| match name {
            "PGSSLMODE" => Some("verify-ca".to_string()),
            "PGSSLROOTCERT" => Some("/etc/ca.pem".to_string()),
            _ => None,
        };
        let s = Settings::from_options(&options(json!({ "url": "host=h user=u" })), &env).unwrap();
        assert_eq!(s.tls, TlsMode::VerifyCa);
        assert_eq!(s.root_cert, Some(PathBuf::from("/etc/ca.pem")));

        let s = Settings::from_options(
            &options(
                json!({ "url": "host=h user=u", "tls": "verify-full", "sslrootcert": "ca.crt" }),
            ),
            &env,
        )
        .unwrap();
        assert_eq!(s.tls, TlsMode::VerifyFull);
        assert_eq!(s.root_cert, Some(PathBuf::from("ca.crt")));
    }

    #[test]
    fn unsupported_sslmodes_are_refused() {
        let e = Settings::from_options(
            &options(json!({ "url": "host=h user=u" })),
            &|name: &str| (name == "PGSSLMODE").then(|| "verify-everything".to_string()),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("sslmode `verify-everything` is not supported"),
            "{e}"
        );
        assert!(e.contains("verify-full"), "{e}");
    }
}
