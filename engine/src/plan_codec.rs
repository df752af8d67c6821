//! Plan codec: turns plan fragments into bytes for a task and back, with Ember's own leaves
//! encoded by an extension codec on top of datafusion-proto.

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
use crate::ids::DatasetId;
use crate::proto;

/// Encodes and decodes Ember's extension plan nodes ([`BlockReadExec`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct EmberCodec;

impl PhysicalExtensionCodec for EmberCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if !inputs.is_empty() {
            return Err(DataFusionError::Internal(
                "Ember's extension nodes are leaves".into(),
            ));
        }
        let node = proto::BlockReadNode::decode(buf)
            .map_err(|e| DataFusionError::Internal(format!("bad BlockReadNode: {e}")))?;
        let schema_proto = datafusion_proto::protobuf::Schema::decode(node.schema.as_ref())
            .map_err(|e| DataFusionError::Internal(format!("bad BlockReadNode schema: {e}")))?;
        let schema = Schema::try_from(&schema_proto)?;
        let mut read = BlockReadExec::with_schema(
            DatasetId(node.dataset),
            Arc::new(schema),
            node.partitions as usize,
        );
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

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        let Some(read) = node.downcast_ref::<BlockReadExec>() else {
            return Err(DataFusionError::NotImplemented(format!(
                "{} cannot be sent to executors",
                node.name()
            )));
        };
        let schema = datafusion_proto::protobuf::Schema::try_from(read.schema().as_ref())?;
        let msg = proto::BlockReadNode {
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
        };
        msg.encode(buf)
            .map_err(|e| DataFusionError::Internal(format!("encoding BlockReadNode: {e}")))
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
