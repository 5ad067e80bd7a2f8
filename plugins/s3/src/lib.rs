//! `connector: s3` — Parquet, CSV and NDJSON tables in S3 and S3-compatible object stores.
//!
//! A source is a bucket and a prefix. Its tables are the top-level folders under the prefix
//! (or those named in `tables`); each is a DataFusion `ListingTable` over the table's folder,
//! with `key=value` folders as partition columns. The plugin owns its S3 client
//! (object_store's `AmazonS3`, registered in a runtime environment of the plugin's, since the
//! host's is invisible across the boundary) and runs its I/O on the plugin's Tokio runtime.
//!
//! Connecting lists the prefix (and each table's files) and reads the schema from the first
//! and last file of each table, so a wrong bucket, refused credentials or an empty prefix fail
//! `lodestar validate` with a message naming the source, the bucket and the prefix.
//!
//! See docs/connectors/s3.md for the options and an example project.

mod list;
mod options;
mod store;
mod table;

use std::sync::Arc;

use lodestar_connector_api::datafusion::arrow::datatypes::DataType;
use lodestar_connector_api::datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use lodestar_connector_api::datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use lodestar_connector_api::datafusion::execution::cache::cache_manager::CacheManagerConfig;
use lodestar_connector_api::datafusion::execution::object_store::ObjectStoreUrl;
use lodestar_connector_api::datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use lodestar_connector_api::datafusion::execution::session_state::SessionStateBuilder;
use lodestar_connector_api::datafusion::prelude::SessionConfig;
use lodestar_connector_api::serde_json::Value;
use lodestar_connector_api::{BoxError, ConnectContext, Connector, Options, export_connector};
use object_store::ObjectStore;

use crate::list::Found;
use crate::options::Settings;
use crate::store::S3Errors;
use crate::table::S3Table;

/// The connector.
#[derive(Debug)]
pub struct S3;

impl Connector for S3 {
    const NAME: &'static str = "s3";

    fn options_schema() -> Value {
        options::schema()
    }

    fn connect(options: Options, cx: &ConnectContext) -> Result<Arc<dyn SchemaProvider>, BoxError> {
        let settings = Settings::from_options(&options)?;
        let errors = Arc::new(S3Errors::new(&settings));
        let store: Arc<dyn ObjectStore> = Arc::new(store::build(&settings)?);
        let runtime_env = runtime_env(&settings, Arc::clone(&store))?;
        let tables = cx.runtime().block_on(async {
            let found = list::tables(store.as_ref(), &settings, &errors).await?;
            let mut tables = Vec::new();
            for table in found {
                let listing = listing_table(&settings, &table, &store, &runtime_env)
                    .await
                    .map_err(|e| {
                        errors.explain(
                            &format!(
                                "reading the schema of table `{}` at s3://{}/{}",
                                table.name, settings.bucket, table.key
                            ),
                            e.as_ref(),
                        )
                    })?;
                check_time_column(&table, &listing)?;
                tables.push((table, listing));
            }
            Ok::<_, String>(tables)
        });
        let tables = tables.map_err(|message| errors.boxed(&message))?;
        let schema = MemorySchemaProvider::new();
        for (found, listing) in tables {
            let table = S3Table::new(
                listing,
                Arc::clone(&runtime_env),
                found.partitions.clone(),
                found.time_partition.clone(),
                Arc::clone(&errors),
            );
            schema.register_table(found.name.clone(), Arc::new(table))?;
        }
        Ok(Arc::new(schema))
    }
}

export_connector!(S3, allocator = mimalloc);

/// The plugin's runtime environment for one source: the S3 store registered for
/// `s3://bucket`, and listings cached no longer than `listing_cache_secs`.
fn runtime_env(
    settings: &Settings,
    store: Arc<dyn ObjectStore>,
) -> Result<Arc<RuntimeEnv>, BoxError> {
    let mut cache = CacheManagerConfig::default();
    if settings.listing_cache.is_zero() {
        cache = cache.with_list_files_cache_limit(0);
    } else {
        cache = cache.with_list_files_cache_ttl(Some(settings.listing_cache));
    }
    let env = RuntimeEnvBuilder::new()
        .with_cache_manager(cache)
        .build_arc()?;
    let url = ObjectStoreUrl::parse(format!("s3://{}", settings.bucket))?;
    env.register_object_store(url.as_ref(), store);
    Ok(env)
}

/// The listing table of a table found, with its schema read from its sample files.
async fn listing_table(
    settings: &Settings,
    table: &Found,
    store: &Arc<dyn ObjectStore>,
    runtime_env: &Arc<RuntimeEnv>,
) -> Result<ListingTable, BoxError> {
    let format = table.format.file_format(settings.csv, &table.extension);
    // Partition values are text, dictionary-encoded as DataFusion's own inference does.
    let partition_type = DataType::Dictionary(Box::new(DataType::UInt16), Box::new(DataType::Utf8));
    let options = ListingOptions::new(Arc::clone(&format))
        .with_file_extension(&table.extension)
        .with_table_partition_cols(
            table
                .partitions
                .iter()
                .map(|p| (p.clone(), partition_type.clone()))
                .collect(),
        );
    let state = SessionStateBuilder::new()
        .with_config(SessionConfig::new())
        .with_runtime_env(Arc::clone(runtime_env))
        .build();
    let file_schema = format.infer_schema(&state, store, &table.sample).await?;
    let url = ListingTableUrl::parse(format!("s3://{}/{}", settings.bucket, table.key))?;
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(file_schema);
    Ok(ListingTable::try_new(config)?)
}

/// A `time` column of a table's time partition must exist (the first the table has is
/// used): a typo would silently prune nothing.
fn check_time_column(table: &Found, listing: &ListingTable) -> Result<(), String> {
    use lodestar_connector_api::datafusion::catalog::TableProvider;
    let Some(tp) = &table.time_partition else {
        return Ok(());
    };
    let schema = listing.schema();
    let Some(time) = tp.time_column(&schema) else {
        return Err(format!(
            "table `{}`: `time_partition.time` names {}, which it does not have",
            table.name,
            match tp.time.as_slice() {
                [one] => format!("column `{one}`"),
                _ => format!("columns {}", tp.time_names()),
            }
        ));
    };
    match schema.field_with_name(time) {
        Ok(field)
            if matches!(
                field.data_type(),
                DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64
            ) =>
        {
            Ok(())
        }
        Ok(field) => Err(format!(
            "table `{}`: `time_partition.time` column `{time}` is {}, not a timestamp or a date",
            table.name,
            field.data_type()
        )),
        Err(e) => Err(e.to_string()),
    }
}
