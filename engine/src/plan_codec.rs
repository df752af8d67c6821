//! Plan codec: turns plan fragments into bytes for a task and back, with Ember's own nodes
//! (block reads, and the nodes of registered [`crate::extension`]s) encoded by an extension
//! codec on top of datafusion-proto.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::equivalence::{EquivalenceClass, EquivalenceGroup};
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::{AcrossPartitions, ConstExpr, EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::{ExecutionPlan, Partitioning, PlanProperties};
use datafusion_proto::physical_plan::from_proto::{
    parse_physical_expr_with_converter, parse_physical_sort_exprs, parse_protobuf_partitioning,
};
use datafusion_proto::physical_plan::to_proto::{
    serialize_partitioning, serialize_physical_expr_with_converter, serialize_physical_sort_exprs,
};
use datafusion_proto::physical_plan::{
    DeduplicatingProtoConverter, PhysicalExtensionCodec, PhysicalPlanDecodeContext,
    PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf as df_proto;
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
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema_proto = df_proto::Schema::decode(node.schema.as_ref())
            .map_err(|e| DataFusionError::Internal(format!("bad BlockReadNode schema: {e}")))?;
        let schema = Arc::new(Schema::try_from(&schema_proto)?);
        let dataset = DatasetId(node.dataset);
        let mut read = if node.groups.is_empty() {
            let decode = PhysicalPlanDecodeContext::new(ctx, self);
            let properties = decode_properties(
                node.properties.unwrap_or_default(),
                schema,
                node.partitions as usize,
                &decode,
                converter,
            )?;
            BlockReadExec::new(dataset, properties)
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

    fn encode_block_read(
        &self,
        read: &BlockReadExec,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<proto::BlockReadNode> {
        let schema = df_proto::Schema::try_from(read.schema().as_ref())?;
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
            properties: Some(encode_properties(read.properties(), self, converter)?),
        })
    }
}

/// What a stage reading blocks may rely on: the producing plan's partitioning, orderings,
/// equalities and constants (emission and boundedness are the reader's own).
fn encode_properties(
    properties: &PlanProperties,
    codec: &dyn PhysicalExtensionCodec,
    converter: &dyn PhysicalProtoConverterExtension,
) -> DfResult<proto::BlockProperties> {
    let expr = |e: &Arc<dyn PhysicalExpr>| -> DfResult<bytes::Bytes> {
        Ok(serialize_physical_expr_with_converter(e, codec, converter)?
            .encode_to_vec()
            .into())
    };
    let partitioning = match &properties.partitioning {
        Partitioning::UnknownPartitioning(_) => Default::default(),
        known => serialize_partitioning(known, codec, converter)?
            .encode_to_vec()
            .into(),
    };
    let equivalences = &properties.eq_properties;
    let orderings = equivalences
        .oeq_class()
        .iter()
        .map(|ordering| {
            let nodes = serialize_physical_sort_exprs(ordering.iter().cloned(), codec, converter)?;
            Ok(df_proto::PhysicalSortExprNodeCollection {
                physical_sort_expr_nodes: nodes,
            }
            .encode_to_vec()
            .into())
        })
        .collect::<DfResult<_>>()?;
    let equal = equivalences
        .eq_group()
        .iter()
        .filter(|class| class.len() > 1)
        .map(|class| {
            Ok(proto::ExprList {
                exprs: class.iter().map(expr).collect::<DfResult<_>>()?,
            })
        })
        .collect::<DfResult<_>>()?;
    let constants = equivalences
        .constants()
        .into_iter()
        .map(|constant| {
            let (uniform, value) = match &constant.across_partitions {
                AcrossPartitions::Heterogeneous => (false, Default::default()),
                AcrossPartitions::Uniform(None) => (true, Default::default()),
                AcrossPartitions::Uniform(Some(value)) => {
                    let literal: Arc<dyn PhysicalExpr> = Arc::new(Literal::new(value.clone()));
                    (true, expr(&literal)?)
                }
            };
            Ok(proto::ConstantExpr {
                expr: expr(&constant.expr)?,
                uniform,
                value,
            })
        })
        .collect::<DfResult<_>>()?;
    Ok(proto::BlockProperties {
        partitioning,
        orderings,
        equal,
        constants,
    })
}

/// Rebuilds the properties [`encode_properties`] wrote, over `schema`; a node without them
/// has unknown partitioning over `partitions` blocks and no ordering.
fn decode_properties(
    node: proto::BlockProperties,
    schema: SchemaRef,
    partitions: usize,
    ctx: &PhysicalPlanDecodeContext<'_>,
    converter: &dyn PhysicalProtoConverterExtension,
) -> DfResult<PlanProperties> {
    let bad = |what: &str, e: prost::DecodeError| {
        DataFusionError::Internal(format!("bad BlockReadNode {what}: {e}"))
    };
    let expr = |bytes: &[u8]| -> DfResult<Arc<dyn PhysicalExpr>> {
        let node = df_proto::PhysicalExprNode::decode(bytes).map_err(|e| bad("expression", e))?;
        parse_physical_expr_with_converter(&node, &schema, ctx, converter)
    };
    let partitioning = if node.partitioning.is_empty() {
        Partitioning::UnknownPartitioning(partitions)
    } else {
        let proto = df_proto::Partitioning::decode(node.partitioning.as_ref())
            .map_err(|e| bad("partitioning", e))?;
        parse_protobuf_partitioning(Some(&proto), ctx, &schema, converter)?
            .unwrap_or(Partitioning::UnknownPartitioning(partitions))
    };
    if partitioning.partition_count() != partitions {
        return Err(DataFusionError::Internal(format!(
            "BlockReadNode of {partitions} blocks declares {} partitions",
            partitioning.partition_count()
        )));
    }
    let mut equivalences = EquivalenceProperties::new(Arc::clone(&schema));
    let classes = node
        .equal
        .iter()
        .map(|list| {
            let exprs = list
                .exprs
                .iter()
                .map(|e| expr(e))
                .collect::<DfResult<Vec<_>>>()?;
            Ok(EquivalenceClass::new(exprs))
        })
        .collect::<DfResult<Vec<_>>>()?;
    equivalences.add_equivalence_group(EquivalenceGroup::new(classes))?;
    let constants = node
        .constants
        .iter()
        .map(|constant| {
            let across = match (constant.uniform, constant.value.is_empty()) {
                (false, _) => AcrossPartitions::Heterogeneous,
                (true, true) => AcrossPartitions::Uniform(None),
                (true, false) => {
                    let value = expr(&constant.value)?;
                    let literal = value.downcast_ref::<Literal>().ok_or_else(|| {
                        DataFusionError::Internal(
                            "BlockReadNode constant value is not a literal".into(),
                        )
                    })?;
                    AcrossPartitions::Uniform(Some(literal.value().clone()))
                }
            };
            Ok(ConstExpr::new(expr(&constant.expr)?, across))
        })
        .collect::<DfResult<Vec<_>>>()?;
    equivalences.add_constants(constants)?;
    let orderings = node
        .orderings
        .iter()
        .map(|bytes| {
            let collection = df_proto::PhysicalSortExprNodeCollection::decode(bytes.as_ref())
                .map_err(|e| bad("ordering", e))?;
            parse_physical_sort_exprs(
                &collection.physical_sort_expr_nodes,
                ctx,
                &schema,
                converter,
            )
        })
        .collect::<DfResult<Vec<_>>>()?;
    equivalences.add_orderings(orderings);
    Ok(PlanProperties::new(
        equivalences,
        partitioning,
        EmissionType::Incremental,
        Boundedness::Bounded,
    ))
}

impl PhysicalExtensionCodec for EmberCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
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
                self.decode_block_read(read, ctx, proto_converter)
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
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        let encoded = if let Some(read) = node.downcast_ref::<BlockReadExec>() {
            Node::BlockRead(self.encode_block_read(read, proto_converter)?)
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

/// Encodes a plan fragment for a task. Expressions that several nodes share (a join's
/// dynamic filter and the scan it was pushed into) are encoded with one identity.
pub fn encode_plan(plan: Arc<dyn ExecutionPlan>) -> Result<Bytes> {
    Ok(
        datafusion_proto::bytes::physical_plan_to_bytes_with_proto_converter(
            plan,
            &EmberCodec,
            &DeduplicatingProtoConverter {},
        )?,
    )
}

/// Decodes a plan fragment, resolving functions through `ctx`'s registry. Expressions
/// encoded with one identity are shared again, so a join still updates the filter its
/// probe side's scan reads (see [`crate::join_filter`]).
pub fn decode_plan(bytes: &[u8], ctx: &TaskContext) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(
        datafusion_proto::bytes::physical_plan_from_bytes_with_proto_converter(
            bytes,
            ctx,
            &EmberCodec,
            &DeduplicatingProtoConverter {},
        )?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::common::ScalarValue;
    use datafusion::physical_expr::expressions::col;
    use datafusion::physical_expr::PhysicalSortExpr;
    use datafusion::physical_plan::ExecutionPlanProperties;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("b", DataType::Utf8, true),
            Field::new("c", DataType::Int64, false),
            Field::new("d", DataType::Int32, false),
        ]))
    }

    #[test]
    fn a_block_read_keeps_partitioning_orderings_equalities_and_constants() {
        let schema = schema();
        let column = |name: &str| col(name, &schema).expect("column");
        let mut equivalences = EquivalenceProperties::new(Arc::clone(&schema));
        equivalences
            .add_equal_conditions(column("a"), column("c"))
            .expect("a = c");
        equivalences
            .add_constants([ConstExpr::new(
                column("d"),
                AcrossPartitions::Uniform(Some(ScalarValue::Int32(Some(7)))),
            )])
            .expect("d = 7");
        equivalences.add_ordering([
            PhysicalSortExpr::new_default(column("b")),
            PhysicalSortExpr::new_default(column("a")).desc(),
        ]);
        let properties = PlanProperties::new(
            equivalences,
            Partitioning::Hash(vec![column("a"), column("b")], 4),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        let read: Arc<dyn ExecutionPlan> =
            Arc::new(BlockReadExec::new(DatasetId(9), properties).with_shuffle(3));

        let bytes = encode_plan(Arc::clone(&read)).expect("encodes");
        let decoded = decode_plan(&bytes, &TaskContext::default()).expect("decodes");
        let block_read = decoded
            .downcast_ref::<BlockReadExec>()
            .expect("a block read");
        assert_eq!(block_read.dataset(), DatasetId(9));
        assert_eq!(block_read.map_partitions(), Some(3));

        assert_eq!(decoded.output_partitioning(), read.output_partitioning());
        assert_eq!(decoded.output_ordering(), read.output_ordering());
        let (before, after) = (
            read.equivalence_properties(),
            decoded.equivalence_properties(),
        );
        assert_eq!(after.constants(), before.constants());
        assert_eq!(after.eq_group().to_string(), before.eq_group().to_string());
        assert!(after.eq_group().iter().any(|class| class.len() == 2));
        // What an operator above may rely on: sorted by b, then by c descending (c is a),
        // with d (a constant) anywhere.
        let requirement = [
            PhysicalSortExpr::new_default(column("b")),
            PhysicalSortExpr::new_default(column("d")),
            PhysicalSortExpr::new_default(column("c")).desc(),
        ]
        .map(Into::into);
        assert!(after
            .ordering_satisfy_requirement(requirement)
            .expect("checks"));
    }

    #[test]
    fn a_block_read_without_properties_has_unknown_partitioning() {
        let read: Arc<dyn ExecutionPlan> =
            Arc::new(BlockReadExec::with_schema(DatasetId(1), schema(), 5));
        let bytes = encode_plan(read).expect("encodes");
        let decoded = decode_plan(&bytes, &TaskContext::default()).expect("decodes");
        assert!(matches!(
            decoded.output_partitioning(),
            Partitioning::UnknownPartitioning(5)
        ));
        assert!(decoded.output_ordering().is_none());
    }
}
