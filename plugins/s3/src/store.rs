//! The S3 client, and what its errors tell a user.
//!
//! The store is object_store's `AmazonS3`, configured from the environment's AWS variables
//! first (`AmazonS3Builder::from_env`: keys, region, web identity, container credentials,
//! instance metadata), then from the source's options, which win. Its errors carry the HTTP
//! answer of the service, and a `SignatureDoesNotMatch` answer may quote the signed request,
//! session token included: so errors are classified (missing bucket, access denied) into
//! messages of our own, and any other error text is searched for the secret values before it
//! is shown.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lodestar_connector_api::BoxError;
use lodestar_connector_api::datafusion::error::DataFusionError;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsCredential};
use object_store::{ClientConfigKey, RetryConfig, StaticCredentialProvider};

use lodestar_connector_api::kit::error::chain;
use lodestar_connector_api::kit::secret::{Message, Redactor};

use crate::options::Settings;

/// Builds the client. Nothing is sent yet.
pub fn build(settings: &Settings) -> Result<AmazonS3, BoxError> {
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(&settings.bucket);
    if let Some(region) = &settings.region {
        builder = builder.with_region(region);
    }
    if let Some(endpoint) = &settings.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(allow) = settings.allow_http {
        builder = builder.with_allow_http(allow);
    }
    if let Some(virtual_hosted) = settings.virtual_hosted_style {
        builder = builder.with_virtual_hosted_style_request(virtual_hosted);
    }
    if settings.skip_signature {
        builder = builder.with_skip_signature(true);
    }
    if let (Some(id), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) {
        // A provider of its own, so that no part of the environment's credentials (a
        // leftover AWS_SESSION_TOKEN) mixes with the keys given here.
        builder =
            builder.with_credentials(Arc::new(StaticCredentialProvider::new(AwsCredential {
                key_id: id.clone(),
                secret_key: secret.expose().to_string(),
                token: settings
                    .session_token
                    .as_ref()
                    .map(|t| t.expose().to_string()),
            })));
    }
    let mut retry = RetryConfig::default();
    if let Some(max) = settings.max_retries {
        retry.max_retries = max;
    }
    if let Some(timeout) = settings.retry_timeout {
        retry.retry_timeout = timeout;
    }
    builder = builder.with_retry(retry);
    // Set one client option at a time: `with_client_options` would replace those the
    // environment set (such as AWS_ALLOW_HTTP).
    if let Some(timeout) = settings.connect_timeout {
        builder = builder.with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
            millis(timeout),
        );
    }
    if let Some(timeout) = settings.request_timeout {
        builder = builder.with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
            millis(timeout),
        );
    }
    builder
        .build()
        .map_err(|e| S3Errors::new(settings).boxed(&format!("cannot set up the S3 client: {e}")))
}

fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// Where the credentials come from, for messages (never the values).
pub fn credential_source(settings: &Settings) -> &'static str {
    if settings.skip_signature {
        "unsigned requests (`skip_signature`)"
    } else if settings.access_key_id.is_some() {
        "the access key in the source's options"
    } else if std::env::var_os("AWS_ACCESS_KEY_ID").is_some() {
        "the access key in AWS_ACCESS_KEY_ID"
    } else if std::env::var_os("AWS_WEB_IDENTITY_TOKEN_FILE").is_some() {
        "the web identity in AWS_WEB_IDENTITY_TOKEN_FILE"
    } else {
        "the container or instance credentials (no keys in the options or the environment)"
    }
}

/// What went wrong talking to the service, as far as a user needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    NoSuchBucket,
    /// With the S3 error code when the answer had one (`SignatureDoesNotMatch`, ...).
    AccessDenied(Option<String>),
    Other,
}

/// S3 error codes that mean the credentials are wrong or not allowed.
const DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AllAccessDisabled",
];

/// Classifies an error by the S3 answer in its text.
pub fn classify(text: &str) -> Problem {
    let code = s3_code(text);
    match code.as_deref() {
        Some("NoSuchBucket") => Problem::NoSuchBucket,
        Some(c) if DENIED_CODES.contains(&c) => Problem::AccessDenied(code),
        _ if text.contains("403 Forbidden") || text.contains("401 Unauthorized") => {
            Problem::AccessDenied(None)
        }
        _ => Problem::Other,
    }
}

/// The `<Code>` of an S3 XML error answer quoted in `text`.
fn s3_code(text: &str) -> Option<String> {
    let start = text.find("<Code>")? + "<Code>".len();
    let len = text[start..].find("</Code>")?;
    let code = &text[start..start + len];
    code.chars()
        .all(|c| c.is_ascii_alphanumeric())
        .then(|| code.to_string())
}

/// Turns errors into messages that name the place and never hold a secret: S3's answers
/// classified, the rest masked by the kit's [`Redactor`].
#[derive(Clone)]
pub struct S3Errors {
    mask: Redactor,
    bucket: String,
    endpoint: Option<String>,
    region: Option<String>,
    credentials: &'static str,
}

impl fmt::Debug for S3Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Errors")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl S3Errors {
    pub fn new(settings: &Settings) -> S3Errors {
        S3Errors {
            mask: Redactor::new(settings.secrets()),
            bucket: settings.bucket.clone(),
            endpoint: settings.endpoint.clone(),
            region: settings.region.clone(),
            credentials: credential_source(settings),
        }
    }

    /// `text` with every secret value masked.
    pub fn text(&self, text: &str) -> String {
        self.mask.text(text)
    }

    pub fn boxed(&self, text: &str) -> BoxError {
        self.mask.error(text)
    }

    /// The message for a failure while `doing` (such as "listing s3://b/p/"), classified.
    pub fn explain(&self, doing: &str, error: &(dyn std::error::Error + 'static)) -> String {
        let text = chain(error);
        match classify(&text) {
            Problem::NoSuchBucket => {
                let at = match (&self.endpoint, &self.region) {
                    (Some(endpoint), _) => format!(" at {endpoint}"),
                    (None, Some(region)) => format!(" in region {region}"),
                    (None, None) => String::new(),
                };
                format!(
                    "bucket `{}` does not exist{at} (while {doing}); check `bucket`, `region` and `endpoint`",
                    self.bucket
                )
            }
            Problem::AccessDenied(code) => {
                let code = code.map(|c| format!(" ({c})")).unwrap_or_default();
                format!(
                    "access denied{code} while {doing}, with {}; check the access key and secret key, and that they may list and read this bucket and prefix (s3:ListBucket, s3:GetObject)",
                    self.credentials
                )
            }
            Problem::Other => self.text(&format!("error while {doing}: {text}")),
        }
    }

    /// A query-time error, explained when it is the service refusing, and masked.
    pub fn datafusion(&self, error: DataFusionError) -> DataFusionError {
        let text = chain(&error);
        let denied = matches!(classify(&text), Problem::AccessDenied(_));
        let missing = classify(&text) == Problem::NoSuchBucket;
        if denied || missing {
            return DataFusionError::External(Box::new(Message(
                self.explain("reading from S3", &error),
            )));
        }
        self.mask.datafusion(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lodestar_connector_api::kit::secret::Secret;
    use lodestar_connector_api::serde_json::{self, json};

    fn settings() -> Settings {
        let options = serde_json::from_value(json!({
            "bucket": "acme", "endpoint": "http://127.0.0.1:9000",
            "access_key_id": "AKID", "secret_access_key": "s3cr3t-value", "session_token": "tok-en"
        }))
        .unwrap();
        Settings::from_options(&options).unwrap()
    }

    #[test]
    fn s3_answers_are_classified() {
        let denied = "Generic S3 error: Error performing list request: Server returned non-2xx status code: 403 Forbidden: <Error><Code>SignatureDoesNotMatch</Code><Message>...</Message></Error>";
        assert_eq!(
            classify(denied),
            Problem::AccessDenied(Some("SignatureDoesNotMatch".into()))
        );
        assert_eq!(
            classify("404 Not Found: <Error><Code>NoSuchBucket</Code></Error>"),
            Problem::NoSuchBucket
        );
        assert_eq!(classify("connection refused"), Problem::Other);
    }

    #[test]
    fn secrets_are_masked_everywhere() {
        let settings = settings();
        assert_eq!(
            settings.secret_access_key,
            Some(Secret::new("s3cr3t-value"))
        );
        let r = S3Errors::new(&settings);
        let e = Message("boom: s3cr3t-value and tok-en".into());
        let text = r.explain("listing", &e);
        assert!(
            !text.contains("s3cr3t") && !text.contains("tok-en"),
            "{text}"
        );
        let denied = Message("<Code>AccessDenied</Code> tok-en".into());
        let text = r.explain("listing", &denied);
        assert!(text.starts_with("access denied (AccessDenied)"), "{text}");
        assert!(!text.contains("tok-en"), "{text}");
        let df = r.datafusion(DataFusionError::Execution("x s3cr3t-value".into()));
        assert!(!df.to_string().contains("s3cr3t"), "{df}");
    }
}
