//! `connector: amplitude` — a product's Amplitude event history as the table `events`.
//!
//! Three ways in, one table out: the Export API (fetched hours cached on disk), a directory
//! of export files (the API's zip archives or the hourly `*.json.gz` files), or the bucket
//! Amplitude's S3 export writes. Every way yields the same hourly files
//! (`<project_id>_<date>_<H>#<n>.json.gz`, gzipped JSON lines named by upload hour); a scan
//! reads the hours its time range needs (plus `late_hours` for late uploads), parses each
//! line into a row, drops repeats of `device_id` + `$insert_id`, and hands the rows to the
//! host. Malformed lines fail the query with their file and line, or are skipped and
//! reported, as `bad_lines` says.
//!
//! See docs/connectors/amplitude.md for the options and the column mapping.

mod api;
mod layout;
mod options;
mod rows;
mod source;
mod table;

/// For `crates/lodestar-fuzz` only: the line parser and the row collector, so that the fuzz
/// targets can link this crate (built as an `rlib` too for that) and call them directly. The
/// plugin's real interface is its C ABI entry point; nothing here is promised to anyone else.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::options::{BadLines, Flattened};
    pub use crate::rows::{Collector, Row, Scope, parse_line, parse_time, schema};
}

use std::sync::Arc;

use lodestar_connector_api::datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use lodestar_connector_api::kit::secret::Redactor;
use lodestar_connector_api::serde_json::Value;
use lodestar_connector_api::{BoxError, ConnectContext, Connector, Options, export_connector};
use object_store::aws::{AmazonS3Builder, AwsCredential};
use object_store::{ObjectStore, StaticCredentialProvider};

use crate::options::{Origin, Settings};
use crate::source::Source;
use crate::table::EventsTable;

/// The connector.
#[derive(Debug)]
pub struct Amplitude;

impl Connector for Amplitude {
    const NAME: &'static str = "amplitude";

    fn options_schema() -> Value {
        options::schema()
    }

    fn connect(
        options: Options,
        _cx: &ConnectContext,
    ) -> Result<Arc<dyn SchemaProvider>, BoxError> {
        let settings = Settings::from_options(&options)?;
        let redactor = Redactor::new(settings.secrets());
        let masked = |e: String| -> BoxError { redactor.error(&e) };
        let source = match settings.origin.clone() {
            Origin::Files(dir) => {
                if !dir.is_dir() {
                    return Err(masked(format!(
                        "`path` `{}` is not a directory (of Amplitude export zip archives or *.json.gz files)",
                        dir.display()
                    )));
                }
                Source::Files(dir)
            }
            Origin::Api(api) => Source::Api(api::ExportApi::new(api).map_err(masked)?),
            Origin::S3(s3) => {
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(&s3.bucket)
                    .with_allow_http(s3.allow_http);
                if let Some(region) = &s3.region {
                    builder = builder.with_region(region);
                }
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let (Some(id), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) {
                    builder = builder.with_credentials(Arc::new(StaticCredentialProvider::new(
                        AwsCredential {
                            key_id: id.clone(),
                            secret_key: secret.expose().to_string(),
                            token: None,
                        },
                    )));
                }
                let store: Arc<dyn ObjectStore> = Arc::new(
                    builder
                        .build()
                        .map_err(|e| masked(format!("cannot set up the S3 client: {e}")))?,
                );
                Source::S3 {
                    store,
                    bucket: s3.bucket,
                    prefix: s3.prefix,
                }
            }
        };
        let table = EventsTable::new(
            source,
            settings.properties.clone(),
            settings.bad_lines,
            settings.late_hours,
            redactor,
        );
        let schema = MemorySchemaProvider::new();
        schema.register_table("events".into(), Arc::new(table))?;
        Ok(Arc::new(schema))
    }
}

export_connector!(Amplitude, allocator = mimalloc);
