//! `connector: postgres` — the tables and views of a PostgreSQL database as a Lodestar source.
//!
//! Options are read with libpq's defaults (`settings`), connections are pooled per source
//! (`pool`), tables and column types come from the system catalogs (`catalog`, `types`),
//! projection, filters and limit are pushed into one query (`pushdown`), and scans stream
//! binary COPY (`copy`) over parallel ctid ranges (`scan`). Aggregates stay in DataFusion.
//! docs/connectors/postgres.md is the user's reference.

mod catalog;
mod copy;
mod error;
mod pool;
mod pushdown;
mod scan;
mod settings;
mod types;

use std::sync::Arc;

use async_trait::async_trait;
use lodestar_connector_api::datafusion::catalog::{SchemaProvider, TableProvider};
use lodestar_connector_api::datafusion::error::Result;
use lodestar_connector_api::serde_json::Value;
use lodestar_connector_api::{BoxError, ConnectContext, Connector, Options, export_connector};

use crate::pool::Pool;
use crate::scan::PostgresTable;
use crate::settings::Settings;

/// The connector.
#[derive(Debug)]
pub struct Postgres;

impl Connector for Postgres {
    const NAME: &'static str = "postgres";

    fn options_schema() -> Value {
        settings::options_schema()
    }

    fn connect(options: Options, cx: &ConnectContext) -> Result<Arc<dyn SchemaProvider>, BoxError> {
        let settings = Settings::from_options(&options, &settings::process_env)?;
        let scrub = settings.clone();
        let pool =
            Pool::new(settings, cx.runtime().clone()).map_err(|e| scrub.scrub(e.to_string()))?;
        // Connecting now makes a wrong address or password an error at the source's line,
        // before any metric runs.
        let tables = cx
            .runtime()
            .block_on(async {
                let conn = pool.get().await?;
                catalog::list_tables(
                    conn.client(),
                    &pool.settings().target,
                    &pool.settings().schemas,
                )
                .await
            })
            .map_err(|e| scrub.scrub(e.to_string()))?;
        Ok(Arc::new(PostgresSchema { pool, tables }))
    }
}

export_connector!(Postgres, allocator = mimalloc);

/// The tables and views of the source's schemas.
#[derive(Debug)]
struct PostgresSchema {
    pool: Pool,
    /// Listed when the source connected; tables created since are still found by name.
    tables: Vec<String>,
}

#[async_trait]
impl SchemaProvider for PostgresSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables.clone()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let conn = self.pool.get().await?;
        let settings = self.pool.settings();
        let info = catalog::table(conn.client(), &settings.target, &settings.schemas, name).await?;
        drop(conn);
        Ok(info.map(|info| {
            Arc::new(PostgresTable::new(info, self.pool.clone())) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.iter().any(|t| t == name)
    }
}
