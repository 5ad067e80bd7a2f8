//! The connector's errors: each names the server and database, what was being done and, where
//! one helps, what to do; never the password.
//!
//! Errors cross the plugin boundary as one line of text, so the reason a server or driver gave is
//! rendered into the message here, once, rather than left to a `source()` chain that the
//! boundary would print a second time.

use std::io;

use lodestar_connector_api::datafusion::error::DataFusionError;
use lodestar_connector_api::kit::error::chain;
use tokio_postgres::error::SqlState;

use crate::settings::Target;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening a connection failed: refused, timed out, login refused, no such database, TLS.
    #[error("cannot connect to {target}: {reason}{}", hint_line(hint))]
    Connect {
        target: String,
        reason: String,
        hint: Option<String>,
    },

    /// A statement failed, or the connection was lost while it ran.
    #[error("{target}: {action}: {reason}{}", hint_line(hint))]
    Query {
        target: String,
        action: String,
        reason: String,
        hint: Option<String>,
    },

    /// A value read from the server cannot be represented in its Arrow column.
    #[error(
        "{target}: reading table `{table}`: column `{column}`: {message}{}",
        hint_line(hint)
    )]
    Value {
        target: String,
        table: String,
        column: String,
        message: String,
        hint: Option<String>,
    },

    /// The server's data did not have the shape of the binary COPY format.
    #[error("{target}: reading table `{table}`: malformed COPY data: {message}")]
    Protocol {
        target: String,
        table: String,
        message: String,
    },

    /// Something the user asked for is not there (a schema).
    #[error("{target}: {message}{}", hint_line(hint))]
    Invalid {
        target: String,
        message: String,
        hint: Option<String>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn hint_line(hint: &Option<String>) -> String {
    hint.as_ref()
        .map(|h| format!("\n  hint: {h}"))
        .unwrap_or_default()
}

impl From<Error> for DataFusionError {
    fn from(e: Error) -> Self {
        DataFusionError::External(Box::new(e))
    }
}

/// The reason a driver error gives, in words a user can act on.
fn reason(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = db.message().to_string();
        if let Some(detail) = db.detail() {
            text.push_str(" (");
            text.push_str(detail);
            text.push(')');
        }
        return text;
    }
    if let Some(io) = io_error(e) {
        return match io.kind() {
            io::ErrorKind::ConnectionRefused => "connection refused".into(),
            io::ErrorKind::TimedOut => "timed out".into(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof => {
                "the connection was lost (reset by the server or the network)".into()
            }
            _ => io.to_string(),
        };
    }
    if e.is_closed() {
        return "the connection was lost (the server closed it)".into();
    }
    // The driver's message, then its causes ("error performing TLS handshake: server does
    // not support TLS").
    chain(e)
}

fn io_error(e: &tokio_postgres::Error) -> Option<&io::Error> {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<io::Error>() {
            return Some(io);
        }
        cause = c.source();
    }
    None
}

fn code(e: &tokio_postgres::Error) -> Option<&SqlState> {
    e.code()
}

/// An error opening a connection to `target`.
pub fn connect(target: &Target, e: &tokio_postgres::Error) -> Error {
    let reason = reason(e);
    let hint = match code(e) {
        Some(c) if *c == SqlState::INVALID_PASSWORD || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => Some(
            "check the user and password (in `url`, or PGUSER and PGPASSWORD) and the server's pg_hba.conf"
                .to_string(),
        ),
        Some(c) if *c == SqlState::INVALID_CATALOG_NAME => {
            Some("check the database name in `url` or PGDATABASE".to_string())
        }
        Some(c) if *c == SqlState::TOO_MANY_CONNECTIONS => {
            Some("lower `pool_size`, or raise the server's max_connections".to_string())
        }
        _ if reason == "connection refused" => Some(format!(
            "is PostgreSQL running and accepting TCP connections on {}:{}? check the host and port in `url`, or PGHOST and PGPORT",
            target.host, target.port
        )),
        _ if reason.contains("does not support TLS") => Some(
            "the server has TLS turned off and this source requires it: turn `ssl = on` on the server, or (on a trusted network only) use `tls: disable`".to_string(),
        ),
        _ if reason.contains("UnknownIssuer") || reason.contains("BadSignature") => Some(
            "the server's certificate is not signed by a trusted authority: give its CA's PEM file as `sslrootcert` (or PGSSLROOTCERT)".to_string(),
        ),
        _ if reason.contains("NotValidForName") || reason.contains("not valid for name") => Some(
            format!("the server's certificate does not name `{}`: connect with a host name the certificate lists, or use `tls: verify-ca` to check the chain only", target.host),
        ),
        _ if reason.contains("invalid peer certificate") => Some(
            "the server's certificate did not pass verification (`tls: verify-ca` or `verify-full`): check `sslrootcert` and the certificate's dates".to_string(),
        ),
        _ if reason.contains("timed out") || reason.contains("timeout") => Some(format!(
            "is {} reachable from here? a firewall may drop the connection",
            target.host
        )),
        _ => None,
    };
    Error::Connect {
        target: target.to_string(),
        reason,
        hint,
    }
}

/// An error of a statement run while doing `action` (“reading table `public.orders`”).
pub fn query(target: &Target, action: impl Into<String>, e: &tokio_postgres::Error) -> Error {
    let reason = reason(e);
    let lost = e.is_closed()
        || io_error(e).is_some()
        || matches!(code(e), Some(c) if *c == SqlState::ADMIN_SHUTDOWN || *c == SqlState::CRASH_SHUTDOWN);
    let hint = match code(e) {
        Some(c) if *c == SqlState::QUERY_CANCELED => Some(
            "the statement ran longer than `statement_timeout` or was cancelled: raise the timeout or narrow the query"
                .to_string(),
        ),
        Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => Some(format!(
            "user `{}` needs SELECT on the table (GRANT SELECT ON ... TO {})",
            target.user, target.user
        )),
        Some(c) if *c == SqlState::UNDEFINED_TABLE => {
            Some("the table was dropped or renamed since the query was planned".to_string())
        }
        _ if lost => Some(
            "the connection to the server was lost mid-query (server restart, a session ended by an administrator, or a network failure); run the query again"
                .to_string(),
        ),
        _ => None,
    };
    let reason = if lost && !reason.starts_with("the connection was lost") {
        format!("the connection was lost: {reason}")
    } else {
        reason
    };
    Error::Query {
        target: target.to_string(),
        action: action.into(),
        reason,
        hint,
    }
}
