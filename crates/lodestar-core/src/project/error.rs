//! The engine's error type: every variant carries what a user needs to find and fix the problem.

use std::fmt;
use std::path::PathBuf;

use datafusion::error::DataFusionError;

use crate::query::request::{Action, RequestError, Spelling, Wording};

/// A place in the project file, 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
        }
    }
}

/// What the error is about, shown before the message: `metric `x``, `source `y``.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Metric(String),
    Source(String),
    Project,
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Metric(name) => write!(f, "metric `{name}`"),
            Subject::Source(name) => write!(f, "source `{name}`"),
            Subject::Project => f.write_str("project"),
        }
    }
}

pub(crate) fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_ref()
        .map(|h| format!("\n  hint: {h}"))
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed; the path is in the io error (fs-err).
    #[error(transparent)]
    Io(#[from] std::io::Error),

    /// No project file where one was looked for; a front-end says how to name one
    /// ([`Action::ChooseProject`]).
    #[error("no lodestar.yaml found in {start} or any parent directory")]
    ProjectNotFound { start: PathBuf },

    /// The file is not valid YAML, or a value has the wrong shape.
    #[error("{location}: {message}")]
    Syntax { location: Location, message: String },

    /// The definitions parse but say something impossible.
    #[error("{location}: {subject}: {message}{}", hint_suffix(hint))]
    Invalid {
        location: Location,
        subject: Subject,
        message: String,
        hint: Option<String>,
    },

    /// A SQL fragment of a definition does not plan against the sources.
    #[error(
        "{location}: {subject}: {field} does not compile: {source}{}",
        hint_suffix(hint)
    )]
    Sql {
        location: Location,
        subject: Subject,
        field: &'static str,
        #[source]
        source: Box<DataFusionError>,
        hint: Option<String>,
    },

    /// A source could not be opened.
    #[error("{location}: source `{source_name}`: {message}")]
    Source {
        location: Location,
        source_name: String,
        message: String,
        #[source]
        source: Option<Box<DataFusionError>>,
    },

    /// A request (from the CLI or the server) asks for something that does not exist or fit;
    /// each front-end spells its fields ([`RequestError::spelled`], [`Error::spelled`]).
    #[error(transparent)]
    Request(#[from] RequestError),

    /// A request over one of the caps of [`crate::query::bounds::Bounds`].
    #[error(transparent)]
    OverCap(#[from] crate::query::bounds::OverCap),

    /// The query engine failed while running a valid request.
    #[error("query failed: {0}")]
    DataFusion(#[from] Box<DataFusionError>),
}

impl Error {
    /// Whether a query failed because it needed more memory than its engine's limit
    /// ([`crate::Engine::with_memory_limit`], `engine.memory_limit` of the project).
    pub fn is_memory_exhausted(&self) -> bool {
        let datafusion = match self {
            Error::DataFusion(e) | Error::Sql { source: e, .. } => Some(&**e),
            Error::Source {
                source: Some(e), ..
            } => Some(&**e),
            _ => None,
        };
        datafusion.is_some_and(|e| {
            matches!(e.find_root(), DataFusionError::ResourcesExhausted(_))
                // Errors that crossed a boundary as text (a plugin, a spawned task).
                || e.to_string().contains("Resources exhausted")
        })
    }
}

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        Error::DataFusion(Box::new(e))
    }
}

impl From<datafusion::arrow::error::ArrowError> for Error {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        Error::DataFusion(Box::new(e.into()))
    }
}

impl Error {
    /// Whether the user can fix this by changing their input (exit code 1) rather than a
    /// failure of Lodestar or its environment, or a request over a cap (exit code 2).
    pub fn is_user_error(&self) -> bool {
        match self {
            Error::Io(_) | Error::DataFusion(_) | Error::OverCap(_) => false,
            Error::ProjectNotFound { .. }
            | Error::Syntax { .. }
            | Error::Invalid { .. }
            | Error::Sql { .. }
            | Error::Source { .. }
            | Error::Request(_) => true,
        }
    }

    pub fn request(message: impl Into<Wording>) -> Self {
        Error::Request(RequestError::new(message))
    }

    pub fn request_hint(message: impl Into<Wording>, hint: impl Into<Wording>) -> Self {
        Error::Request(RequestError::new(message).with_fix(hint))
    }

    /// The message as a front-end shows it: the request's fields and the actions of hints in
    /// `spelling`'s words. Errors that name no field read as their [`fmt::Display`].
    pub fn spelled(&self, spelling: &dyn Spelling) -> String {
        match self {
            Error::Request(request) => request.spelled(spelling),
            Error::OverCap(over) => over.spelled(spelling),
            Error::ProjectNotFound { .. } => {
                format!(
                    "{self}{}",
                    hint_suffix(&spelling.action(Action::ChooseProject))
                )
            }
            _ => self.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// "did you mean" for a misspelled name, if one candidate is close enough.
pub(crate) fn did_you_mean<'a>(
    wanted: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(wanted, c), c))
        .filter(|(d, c)| *d <= (wanted.len().max(c.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let names = ["bookings", "nights_booked", "signups"];
        assert_eq!(
            did_you_mean("bookngs", names).as_deref(),
            Some("did you mean `bookings`?")
        );
        assert_eq!(did_you_mean("revenue", names), None);
    }
}
