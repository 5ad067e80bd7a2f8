//! Running a project's queries on an Apache DataFusion Ballista cluster (docs/cluster.md).
//!
//! The client connects its sources and plans as it does alone; Ballista's query planner then
//! sends the logical plan to the cluster's scheduler instead of running it here. A table of a
//! source travels as the source itself ([`SourceSpec`]: connector, options, project directory,
//! plugin version), and each node reopens it with the same connector: the scheduler to plan
//! its scan, an executor to run a plugin's scan ([`scan::SourceScanExec`]). A file scan is
//! DataFusion's own plan and travels as one. Everything that is not Lodestar's goes through
//! Ballista's own codecs.

mod codec;
mod scan;
mod sources;

use std::sync::Arc;

use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::SessionState;
use datafusion::prelude::SessionConfig;
use indexmap::IndexMap;

pub use codec::{LogicalCodec, PhysicalCodec};
pub(crate) use sources::Sources;
pub use sources::{node_name, set_node_name};

use crate::project::model::ClusterUrl;
use crate::query::distinct::CountDistinctByBitmap;

/// The client's session: `config` and `runtime` as a local run has them, with Ballista's
/// planner sending every query to the scheduler at `url`, and Lodestar's codecs carrying the
/// project's `sources` there, and `settings` (Ballista's, `engine.cluster_settings`) set.
pub(crate) fn client_state(
    url: &ClusterUrl,
    settings: &IndexMap<String, String>,
    config: SessionConfig,
    runtime: Arc<RuntimeEnv>,
    sources: Arc<Sources>,
) -> datafusion::error::Result<SessionState> {
    let mut config = config
        .upgrade_for_ballista()
        .with_ballista_logical_extension_codec(Arc::new(LogicalCodec::client(sources)))
        .with_ballista_physical_extension_codec(Arc::new(PhysicalCodec::default()));
    // Checked when the project was read (`engine.cluster_settings`).
    for (key, value) in settings {
        config.options_mut().set(key, value)?;
    }
    SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_analyzer_rule(Arc::new(CountDistinctByBitmap))
        .build()
        .upgrade_for_ballista(url.endpoint())
}
