//! Lodestar's codecs for Ballista: a source's table in a logical plan, a plugin's scan in a
//! physical plan. Anything else goes to Ballista's own codecs (its shuffle nodes, its file
//! formats), and DataFusion's own plans (a Parquet or CSV scan) never reach a codec. Both
//! codecs also know Lodestar's aggregate function (query/distinct.rs) by its name, so a node
//! that has not registered it still decodes a plan that uses it.

use std::sync::Arc;

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::from_proto::parse_exprs;
use datafusion_proto::logical_plan::to_proto::serialize_exprs;
use datafusion_proto::logical_plan::{DefaultLogicalExtensionCodec, LogicalExtensionCodec};
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use datafusion_proto::protobuf;
use prost::Message;
use serde::{Deserialize, Serialize};

use super::scan::{RemoteTable, ScanSpec, SourceScanExec};
use super::sources::{SourceSpec, Sources};
use crate::query::distinct;

/// Marks a table of Lodestar's sources in a logical plan.
const TABLE_TAG: &[u8] = b"lodestar.table/1\n";
/// Marks a plugin's scan in a physical plan.
const SCAN_TAG: &[u8] = b"lodestar.scan/1\n";

/// A source's table in a logical plan.
#[derive(Serialize, Deserialize)]
struct TableMessage {
    source: SourceSpec,
    table: String,
}

/// A plugin's scan in a physical plan ([`ScanSpec`], its schema and partition count).
#[derive(Clone, PartialEq, Message)]
struct ScanMessage {
    /// The source, as JSON.
    #[prost(string, tag = "1")]
    source: String,
    #[prost(string, tag = "2")]
    table: String,
    /// Whether the scan has a projection (an empty one reads no column).
    #[prost(bool, tag = "3")]
    projected: bool,
    #[prost(uint64, repeated, tag = "4")]
    projection: Vec<u64>,
    #[prost(message, repeated, tag = "5")]
    filters: Vec<protobuf::LogicalExprNode>,
    #[prost(uint64, optional, tag = "6")]
    limit: Option<u64>,
    #[prost(message, optional, tag = "7")]
    schema: Option<protobuf::Schema>,
    #[prost(uint64, tag = "8")]
    partitions: u64,
}

/// The logical codec: on the client, a table of the project's sources is sent as its
/// [`SourceSpec`]; on the scheduler, it is decoded as a [`RemoteTable`] that reopens the
/// source to plan its scan.
#[derive(Debug, Default)]
pub struct LogicalCodec {
    /// The client's sources; none on a node, which only decodes.
    sources: Option<Arc<Sources>>,
    ballista: BallistaLogicalExtensionCodec,
}

impl LogicalCodec {
    pub(crate) fn client(sources: Arc<Sources>) -> LogicalCodec {
        LogicalCodec {
            sources: Some(sources),
            ballista: BallistaLogicalExtensionCodec::default(),
        }
    }
}

impl LogicalExtensionCodec for LogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        self.ballista.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        let Some(message) = buf.strip_prefix(TABLE_TAG) else {
            return self
                .ballista
                .try_decode_table_provider(buf, table_ref, schema, ctx);
        };
        let TableMessage { source, table } = serde_json::from_slice(message)
            .map_err(|e| DataFusionError::Internal(format!("a source's table: {e}")))?;
        Ok(Arc::new(RemoteTable {
            spec: source,
            table,
            schema,
        }))
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let spec = table_ref
            .schema()
            .and_then(|name| self.sources.as_ref()?.get(name));
        let Some(source) = spec else {
            return self
                .ballista
                .try_encode_table_provider(table_ref, node, buf);
        };
        let message = TableMessage {
            source,
            table: table_ref.table().to_string(),
        };
        buf.extend_from_slice(TABLE_TAG);
        serde_json::to_writer(&mut *buf, &message)
            .map_err(|e| DataFusionError::Internal(format!("a source's table: {e}")))
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.ballista.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.ballista.try_encode_file_format(buf, node)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        distinct::by_name(name).map_or_else(|| self.ballista.try_decode_udaf(name, buf), Ok)
    }
}

/// The physical codec: a plugin's scan ([`SourceScanExec`]) travels as what it was asked
/// for; every other node is Ballista's.
#[derive(Debug, Default)]
pub struct PhysicalCodec {
    ballista: BallistaPhysicalExtensionCodec,
}

impl PhysicalExtensionCodec for PhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(message) = buf.strip_prefix(SCAN_TAG) else {
            return self.ballista.try_decode(buf, inputs, ctx, proto_converter);
        };
        let message = ScanMessage::decode(message)
            .map_err(|e| DataFusionError::Internal(format!("a source's scan: {e}")))?;
        let source: SourceSpec = serde_json::from_str(&message.source)
            .map_err(|e| DataFusionError::Internal(format!("a source's scan: {e}")))?;
        let schema = message
            .schema
            .as_ref()
            .ok_or_else(|| DataFusionError::Internal("a source's scan has no schema".into()))?;
        let schema = Arc::new(Schema::try_from(schema)?);
        let filters = parse_exprs(&message.filters, ctx, &DefaultLogicalExtensionCodec {})?;
        let scan = ScanSpec {
            source,
            table: message.table,
            projection: message
                .projected
                .then(|| message.projection.iter().map(|&i| i as usize).collect()),
            filters,
            limit: message.limit.map(|l| l as usize),
        };
        Ok(Arc::new(SourceScanExec::remote(
            scan,
            schema,
            message.partitions as usize,
        )))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let Some(exec) = node.downcast_ref::<SourceScanExec>() else {
            return self.ballista.try_encode(node, buf, proto_converter);
        };
        let scan = exec.scan();
        let message = ScanMessage {
            source: serde_json::to_string(&scan.source)
                .map_err(|e| DataFusionError::Internal(format!("a source's scan: {e}")))?,
            table: scan.table.clone(),
            projected: scan.projection.is_some(),
            projection: scan
                .projection
                .iter()
                .flatten()
                .map(|&i| i as u64)
                .collect(),
            filters: serialize_exprs(&scan.filters, &DefaultLogicalExtensionCodec {})?,
            limit: scan.limit.map(|l| l as u64),
            schema: Some(protobuf::Schema::try_from(node.schema().as_ref())?),
            partitions: exec.partitions() as u64,
        };
        buf.extend_from_slice(SCAN_TAG);
        message
            .encode(buf)
            .map_err(|e| DataFusionError::Internal(format!("a source's scan: {e}")))
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        distinct::by_name(name).map_or_else(|| self.ballista.try_decode_udaf(name, buf), Ok)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::datasource::MemTable;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{col, lit};
    use datafusion_proto::physical_plan::DefaultPhysicalProtoConverter;

    use super::*;
    use crate::project::error::Location;
    use crate::project::model::SourceDef;

    const SECRET: &str = "hunter2-not-for-logs";

    fn source() -> SourceDef {
        let mut options = serde_json::Map::new();
        options.insert("host".into(), "db.internal".into());
        options.insert("password".into(), SECRET.into());
        SourceDef {
            name: "crm".into(),
            connector: "postgres".into(),
            options,
            option_locations: Default::default(),
            location: Location {
                file: "/srv/metrics/lodestar.yaml".into(),
                line: 3,
                column: 3,
            },
        }
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("country", DataType::Utf8, true),
            Field::new("amount", DataType::Float64, true),
        ]))
    }

    /// A table of a connected source travels as the source, options and plugin version
    /// included; the table the scheduler decodes shows neither options nor secrets.
    #[test]
    fn a_table_travels_as_its_source_and_shows_no_option() {
        let sources = Arc::new(Sources::default());
        sources.insert(
            &source(),
            Path::new("/srv/metrics/lodestar.yaml"),
            Some("0.3.1".into()),
        );
        let client = LogicalCodec::client(sources);
        let table = Arc::new(MemTable::try_new(schema(), vec![vec![]]).unwrap());
        let mut buf = Vec::new();
        client
            .try_encode_table_provider(&TableReference::partial("crm", "orders"), table, &mut buf)
            .unwrap();
        assert!(buf.starts_with(TABLE_TAG));

        let ctx = TaskContext::default();
        let decoded = LogicalCodec::default()
            .try_decode_table_provider(
                &buf,
                &TableReference::partial("crm", "orders"),
                schema(),
                &ctx,
            )
            .unwrap();
        let remote = decoded
            .downcast_ref::<RemoteTable>()
            .expect("a remote table");
        assert_eq!(remote.table, "orders");
        assert_eq!(remote.spec.name, "crm");
        assert_eq!(remote.spec.connector, "postgres");
        assert_eq!(remote.spec.plugin_version.as_deref(), Some("0.3.1"));
        assert_eq!(remote.spec.options["password"], SECRET);
        assert_eq!(remote.schema, schema());
        let shown = format!("{remote:?}");
        assert!(shown.contains("crm") && !shown.contains(SECRET), "{shown}");
        assert!(!shown.contains("db.internal"), "{shown}");
    }

    /// A node that never registered Lodestar's aggregate functions (the distinct count, the
    /// key set) still decodes a plan using them: the codecs know them by name, and leave other
    /// names to Ballista.
    #[test]
    fn lodestars_aggregate_functions_are_decoded_by_their_names() {
        let physical = PhysicalCodec::default();
        let logical = LogicalCodec::default();
        for name in [distinct::NAME, distinct::SET_NAME] {
            for decoded in [
                physical.try_decode_udaf(name, &[]),
                logical.try_decode_udaf(name, &[]),
            ] {
                assert_eq!(decoded.unwrap().name(), name);
            }
        }
        assert!(physical.try_decode_udaf("no_such_function", &[]).is_err());
        assert!(logical.try_decode_udaf("no_such_function", &[]).is_err());
    }

    /// A table that is none of the project's sources is left to Ballista's codec, which
    /// refuses it: a plan with such a table cannot reach the cluster.
    #[test]
    fn a_table_of_no_source_is_left_to_ballista() {
        let client = LogicalCodec::client(Arc::new(Sources::default()));
        let table = Arc::new(MemTable::try_new(schema(), vec![vec![]]).unwrap());
        let mut buf = Vec::new();
        let result =
            client.try_encode_table_provider(&TableReference::bare("spine"), table, &mut buf);
        assert!(result.is_err());
        assert!(!buf.starts_with(TABLE_TAG));
    }

    /// A plugin's scan travels with its table, projection, filters, limit, schema and
    /// partition count, and its display names no option.
    #[test]
    fn a_plugin_scan_travels_with_what_it_was_asked_for() {
        let sources = Sources::default();
        sources.insert(
            &source(),
            Path::new("/srv/metrics/lodestar.yaml"),
            Some("0.3.1".into()),
        );
        let projected = Arc::new(schema().project(&[0, 2]).unwrap());
        let scan = ScanSpec {
            source: sources.get("crm").unwrap(),
            table: "orders".into(),
            projection: Some(vec![0, 2]),
            filters: vec![col("amount").gt(lit(3.5)), col("country").eq(lit("FR"))],
            limit: Some(10),
        };
        let exec: Arc<dyn ExecutionPlan> =
            Arc::new(SourceScanExec::remote(scan, Arc::clone(&projected), 4));
        let codec = PhysicalCodec::default();
        let mut buf = Vec::new();
        codec
            .try_encode(
                Arc::clone(&exec),
                &mut buf,
                &DefaultPhysicalProtoConverter {},
            )
            .unwrap();
        assert!(buf.starts_with(SCAN_TAG));

        let ctx = TaskContext::default();
        let decoded = codec
            .try_decode(&buf, &[], &ctx, &DefaultPhysicalProtoConverter {})
            .unwrap();
        let decoded = decoded
            .downcast_ref::<SourceScanExec>()
            .expect("a source scan");
        let scan = decoded.scan();
        assert_eq!(scan.table, "orders");
        assert_eq!(scan.projection, Some(vec![0, 2]));
        assert_eq!(scan.limit, Some(10));
        assert_eq!(
            scan.filters,
            vec![col("amount").gt(lit(3.5)), col("country").eq(lit("FR"))]
        );
        assert_eq!(scan.source.options["password"], SECRET);
        assert_eq!(decoded.partitions(), 4);
        assert_eq!(decoded.schema(), projected);
        let shown = displayable(decoded).indent(true).to_string();
        assert_eq!(
            shown.trim(),
            "SourceScanExec: crm.orders (connector postgres), partitions=4"
        );
    }
}
