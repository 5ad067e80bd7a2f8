//! Secrets in options (keys, tokens, passwords) and the redactor that keeps them out of every
//! message a connector sends to the host.

use std::fmt;

use datafusion::error::DataFusionError;

use crate::BoxError;
use crate::kit::error::chain;

/// What a secret is replaced with in messages.
pub const MASK: &str = "****";

/// An option value never shown: its `Debug` is a mask.
///
/// ```
/// use lodestar_connector_api::kit::secret::Secret;
///
/// let key = Secret::new("s3cr3t");
/// assert_eq!(format!("{key:?}"), "Secret(****)");
/// assert_eq!(key.expose(), "s3cr3t");
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, to hand to a client library; never to a message.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

/// Masks a source's secret values in messages.
///
/// ```
/// use lodestar_connector_api::kit::secret::{Redactor, Secret};
///
/// let key = Secret::new("s3cr3t");
/// let redactor = Redactor::new([key.expose()]);
/// assert_eq!(redactor.text("denied for s3cr3t"), "denied for ****");
/// assert_eq!(redactor.error("denied for s3cr3t").to_string(), "denied for ****");
/// ```
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Redactor(****)")
    }
}

impl Redactor {
    /// A redactor of these secret values (empty ones are left out: they would match
    /// everywhere).
    pub fn new<S: Into<String>>(secrets: impl IntoIterator<Item = S>) -> Redactor {
        Redactor {
            secrets: secrets
                .into_iter()
                .map(Into::into)
                .filter(|s: &String| !s.is_empty())
                .collect(),
        }
    }

    /// Whether `text` holds a secret.
    pub fn reveals(&self, text: &str) -> bool {
        self.secrets.iter().any(|s| text.contains(s.as_str()))
    }

    /// `text` with every secret value masked.
    pub fn text(&self, text: &str) -> String {
        self.secrets
            .iter()
            .fold(text.to_string(), |t, s| t.replace(s.as_str(), MASK))
    }

    /// An error of `text`, masked.
    pub fn error(&self, text: &str) -> BoxError {
        Box::new(Message(self.text(text)))
    }

    /// A DataFusion error of `text`, masked.
    pub fn datafusion_error(&self, text: &str) -> DataFusionError {
        DataFusionError::External(self.error(text))
    }

    /// `error` as it was if no secret shows in its chain, else its chain's text, masked.
    pub fn datafusion(&self, error: DataFusionError) -> DataFusionError {
        let text = chain(&error);
        if self.reveals(&text) {
            self.datafusion_error(&text)
        } else {
            error
        }
    }
}

/// An error message that has been through a [`Redactor`].
#[derive(Debug)]
pub struct Message(pub String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_in_text_and_errors() {
        let (key, token, empty) = (
            Secret::new("s3cr3t-value"),
            Secret::new("tok-en"),
            Secret::default(),
        );
        let r = Redactor::new([key.expose(), token.expose(), empty.expose()]);
        assert_eq!(
            r.text("boom: s3cr3t-value and tok-en, s3cr3t-value"),
            "boom: **** and ****, ****"
        );
        assert_eq!(r.text("nothing to hide"), "nothing to hide");
        assert!(r.reveals("x tok-en"));
        assert!(!r.reveals("x"));
        assert_eq!(format!("{r:?}"), "Redactor(****)");
        assert_eq!(format!("{token:?}"), "Secret(****)");
    }

    #[test]
    fn datafusion_errors_are_masked_only_when_they_reveal_a_secret() {
        let r = Redactor::new(["s3cr3t"]);
        let masked = r.datafusion(DataFusionError::Execution("bad key s3cr3t".into()));
        assert_eq!(
            masked.to_string(),
            "External error: Execution error: bad key ****"
        );
        let kept = r.datafusion(DataFusionError::Execution("no route".into()));
        assert!(
            matches!(kept, DataFusionError::Execution(ref m) if m == "no route"),
            "{kept}"
        );
    }
}
