//! A source as the cluster's nodes reopen it, and the node doing so.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};

use datafusion::catalog::TableProvider;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};

use crate::connect;
use crate::project::error::Location;
use crate::project::model::SourceDef;

/// A source of the client's project, as the nodes reconnect it: the connector, its options
/// (after `${ENV}` interpolation: the credentials travel with the plan), the project's
/// directory (relative paths and `plugins/`), and the version of the plugin that connected it
/// on the client. Its `Debug` leaves the options out: they may hold secrets.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct SourceSpec {
    pub name: String,
    pub connector: String,
    pub options: serde_json::Map<String, serde_json::Value>,
    /// The project file (for messages); its directory is the project's root.
    pub project: PathBuf,
    pub plugin_version: Option<String>,
}

impl fmt::Debug for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceSpec")
            .field("name", &self.name)
            .field("connector", &self.connector)
            .field("project", &self.project)
            .field("plugin_version", &self.plugin_version)
            .finish_non_exhaustive()
    }
}

impl SourceSpec {
    fn root(&self) -> &Path {
        self.project.parent().unwrap_or(Path::new(""))
    }

    fn definition(&self) -> SourceDef {
        SourceDef {
            name: self.name.clone(),
            connector: self.connector.clone(),
            options: self.options.clone(),
            option_locations: Default::default(),
            location: Location {
                file: self.project.clone(),
                line: 0,
                column: 0,
            },
        }
    }

    /// Whether the source's scans are a plugin's plans, which only a node that reopens the
    /// plugin can run (a file scan is DataFusion's own plan and travels as one).
    pub fn is_plugin(&self) -> bool {
        self.plugin_version.is_some()
    }

    /// Reopens the source on this node and returns its table `table`. Every error names the
    /// node ([`node_name`]): a missing plugin, another version of it, a table it lacks.
    pub async fn open_table(
        &self,
        table: &str,
    ) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let on_node =
            |message: String| DataFusionError::Execution(format!("on {}: {message}", node_name()));
        let (schema, _) = connect::open(
            node_context(),
            &self.definition(),
            self.root(),
            self.plugin_version.as_deref(),
        )
        .await
        .map_err(|e| on_node(e.to_string()))?;
        schema.table(table).await?.ok_or_else(|| {
            on_node(format!(
                "source `{}` has no table `{table}` here",
                self.name
            ))
        })
    }
}

/// The client's sources by name, as connected: what its codec sends for a table of each.
#[derive(Debug, Default)]
pub(crate) struct Sources {
    specs: RwLock<HashMap<String, SourceSpec>>,
}

impl Sources {
    pub fn insert(&self, source: &SourceDef, project: &Path, plugin_version: Option<String>) {
        let spec = SourceSpec {
            name: source.name.clone(),
            connector: source.connector.clone(),
            options: source.options.clone(),
            project: project.to_path_buf(),
            plugin_version,
        };
        self.specs
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(source.name.clone(), spec);
    }

    pub fn get(&self, name: &str) -> Option<SourceSpec> {
        self.specs
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(name)
            .cloned()
    }
}

static NODE_NAME: OnceLock<String> = OnceLock::new();

/// Names this process in the errors of the sources it reopens (`executor 10.0.0.7:50051`).
/// The first name set stays.
pub fn set_node_name(name: impl Into<String>) {
    let _ = NODE_NAME.set(name.into());
}

/// This process's name as a cluster node.
pub fn node_name() -> &'static str {
    NODE_NAME.get().map_or("this node", String::as_str)
}

/// The context a node's reopened sources belong to: plugin tables hold their context
/// weakly, so it lives as long as the process.
fn node_context() -> &'static Arc<SessionContext> {
    static CONTEXT: OnceLock<Arc<SessionContext>> = OnceLock::new();
    CONTEXT.get_or_init(|| Arc::new(SessionContext::new()))
}
