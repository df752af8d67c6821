//! Plan codec: turns plan fragments into bytes for a task and back, with Ember's own nodes
//! (block reads, and the nodes of registered [`crate::extension`]s) encoded by an extension
//! codec on top of datafusion-proto.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::datatypes::Schema;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use prost::Message;

use crate::block_read::BlockReadExec;
use crate::error::Result;
use crate::extension;
use crate::ids::DatasetId;
use crate::proto::{self, ember_plan_node::Node};

/// Encodes and decodes Ember's extension plan nodes: [`BlockReadExec`] and the nodes of
/// every registered [`extension::PlanExtension`].
#[derive(Debug, Default, Clone, Copy)]
pub struct EmberCodec;

impl EmberCodec {
    fn decode_block_read(
        &self,
        node: proto::BlockReadNode,
        ctx: &TaskContext,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema_proto = datafusion_proto::protobuf::Schema::decode(node.schema.as_ref())
            .map_err(|e| DataFusionError::Internal(format!("bad BlockReadNode schema: {e}")))?;
        let schema = Arc::new(Schema::try_from(&schema_proto)?);
        let dataset = DatasetId(node.dataset);
        let mut read = if node.groups.is_empty() {
            BlockReadExec::with_schema(dataset, schema, node.partitions as usize)
        } else {
            let groups = node.groups.into_iter().map(|g| g.partitions).collect();
            BlockReadExec::grouped(dataset, schema, groups)
        };
        if node.map_partitions > 0 {
            read = read.with_shuffle(node.map_partitions as usize);
        }
        if !node.fallback.is_empty() {
            let fallback = datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec(
                &node.fallback,
                ctx,
                self,
            )?;
            read = read.with_fallback(fallback);
        }
        Ok(Arc::new(read))
    }

    fn encode_block_read(&self, read: &BlockReadExec) -> DfResult<proto::BlockReadNode> {
        let schema = datafusion_proto::protobuf::Schema::try_from(read.schema().as_ref())?;
        Ok(proto::BlockReadNode {
            dataset: read.dataset().0,
            partitions: u32::try_from(read.partitions())
                .map_err(|_| DataFusionError::Internal("too many partitions".into()))?,
            schema: schema.encode_to_vec().into(),
            fallback: match read.fallback() {
                Some(plan) => datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec(
                    Arc::clone(plan),
                    self,
                )?,
                None => Default::default(),
            },
            map_partitions: match read.map_partitions() {
                Some(maps) => u32::try_from(maps)
                    .map_err(|_| DataFusionError::Internal("too many map partitions".into()))?,
                None => 0,
            },
            groups: read
                .groups()
                .unwrap_or_default()
                .iter()
                .map(|g| proto::PartitionGroup {
                    partitions: g.clone(),
                })
                .collect(),
        })
    }
}

impl PhysicalExtensionCodec for EmberCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let node = proto::EmberPlanNode::decode(buf)
            .map_err(|e| DataFusionError::Internal(format!("bad Ember plan node: {e}")))?;
        match node.node {
            Some(Node::BlockRead(read)) => {
                if !inputs.is_empty() {
                    return Err(DataFusionError::Internal(
                        "a block read is a leaf and takes no inputs".into(),
                    ));
                }
                self.decode_block_read(read, ctx)
            }
            Some(Node::Extension(ext)) => {
                let plugin = extension::extension(&ext.extension).ok_or_else(|| {
                    DataFusionError::Plan(format!(
                        "plan node of extension '{}', which this process has not registered",
                        ext.extension
                    ))
                })?;
                plugin.decode(&ext.payload, inputs, ctx)
            }
            None => Err(DataFusionError::Internal("empty Ember plan node".into())),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        let encoded = if let Some(read) = node.downcast_ref::<BlockReadExec>() {
            Node::BlockRead(self.encode_block_read(read)?)
        } else {
            let mut found = None;
            for plugin in extension::extensions() {
                if let Some(payload) = plugin.encode(&node)? {
                    found = Some(Node::Extension(proto::ExtensionNode {
                        extension: plugin.name().to_string(),
                        payload: payload.into(),
                    }));
                    break;
                }
            }
            found.ok_or_else(|| {
                DataFusionError::NotImplemented(format!(
                    "{} cannot be sent to executors",
                    node.name()
                ))
            })?
        };
        proto::EmberPlanNode {
            node: Some(encoded),
        }
        .encode(buf)
        .map_err(|e| DataFusionError::Internal(format!("encoding an Ember plan node: {e}")))
    }
}

/// Encodes a plan fragment for a task.
pub fn encode_plan(plan: Arc<dyn ExecutionPlan>) -> Result<Bytes> {
    Ok(datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec(plan, &EmberCodec)?)
}

/// Decodes a plan fragment, resolving functions through `ctx`'s registry.
pub fn decode_plan(bytes: &[u8], ctx: &TaskContext) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(
        datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec(
            bytes,
            ctx,
            &EmberCodec,
        )?,
    )
}
