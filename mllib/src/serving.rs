//! In-process prediction with a fitted pipeline: the pipeline's own transform (the same
//! expressions and functions the cluster runs), planned once against the columns a request
//! carries and run on one Arrow batch per call, without a cluster job. `ember serve`
//! answers requests with it.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder, UInt32Array, UInt64Array};
use arrow::compute::{concat_batches, take};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::Column;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::{MlError, Result};
use crate::pipeline::{PipelineModel, Transformer};

/// The column a request batch gains inside the plan: each row's position, so that rows a
/// stage drops (`handle_invalid = skip`) leave a null answer in their place.
const ROW_COLUMN: &str = "__ember_row";

/// A fitted pipeline ready to answer requests in this process.
///
/// Built once per model: it works out which of the training columns the pipeline's
/// outputs need (the optimizer's projection pushdown over the pipeline's plan), plans the
/// transform against those columns, and runs that plan on each request's batch.
pub struct Predictor {
    inputs: SchemaRef,
    outputs: SchemaRef,
    request_schema: SchemaRef,
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
    label_names: Option<LabelNames>,
}

/// Predicted class indices mapped back to the strings a [`crate::feature::StringIndexer`]
/// indexed while fitting.
struct LabelNames {
    /// Index of the prediction column in the plan's output.
    prediction: usize,
    labels: Vec<String>,
}

impl fmt::Debug for Predictor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Predictor")
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

impl Predictor {
    /// Prepares `model` for serving.
    ///
    /// The outputs are the columns the pipeline's last stage adds (a classifier's
    /// `prediction`, `probability` and `rawPrediction`, a regressor's or a clusterer's
    /// `prediction`), and, when the last stage is a predictor trained on a label that a
    /// string indexer of the pipeline made, `predicted_<column>`: the predicted label as the
    /// indexed string.
    ///
    /// # Errors
    ///
    /// The model does not record the schema it was fitted on (models of
    /// [`crate::Pipeline::fit`] do), has no stages, or its last stage adds no column.
    pub async fn new(model: &PipelineModel) -> Result<Self> {
        let schema = model.input_schema().ok_or_else(|| {
            MlError::data(
                "the pipeline model does not record the columns it was fitted on; fit it \
                 with Pipeline::fit and save it again",
            )
        })?;
        if schema.field_with_name(ROW_COLUMN).is_ok() {
            return Err(MlError::column(
                ROW_COLUMN,
                "is a name Ember's serving reserves",
            ));
        }
        let stages = model.stages();
        let Some((last, earlier)) = stages.split_last() else {
            return Err(MlError::data("the pipeline model has no stages"));
        };
        let ctx = serving_context();

        // Which columns the last stage adds, and which training columns they need.
        let full = ctx.read_table(Arc::new(RequestTable::new(with_row_column(schema))))?;
        let before = earlier
            .iter()
            .try_fold(full, |df, stage| stage.transform_logical(df))?;
        let known: Vec<String> = before
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let after = last.transform_logical(before)?;
        let outputs: Vec<String> = after
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| !known.contains(n))
            .collect();
        if outputs.is_empty() {
            return Err(MlError::data(format!(
                "the pipeline's last stage ({}) adds no column to serve",
                last.class()
            )));
        }
        let needed = scanned_columns(&select(after, &outputs)?.into_optimized_plan()?)?;
        let needed: Vec<Field> = schema
            .fields()
            .iter()
            .filter(|f| needed.iter().any(|n| n == f.name()))
            .map(|f| f.as_ref().clone())
            .collect();

        // The plan against just those columns; against all of them if a stage insists.
        let reduced = Arc::new(Schema::new(needed));
        let (inputs, plan) = match plan_for(&ctx, model, &reduced, &outputs).await {
            Ok(plan) => (reduced, plan),
            Err(e) => {
                tracing::debug!(error = %e, "serving plan needs every training column");
                let plan = plan_for(&ctx, model, schema, &outputs).await?;
                (Arc::clone(schema), plan)
            }
        };
        let produced = plan.schema();

        let label_names = last.predicts().and_then(|p| {
            let label = p.label?;
            let indexer = stages
                .iter()
                .filter_map(|s| s.indexes())
                .find(|ix| ix.output == label)?;
            let prediction = produced.index_of(&p.prediction).ok()?;
            Some((
                format!("predicted_{}", indexer.input),
                LabelNames {
                    prediction,
                    labels: indexer.labels.to_vec(),
                },
            ))
        });
        let mut fields: Vec<Field> = produced
            .fields()
            .iter()
            .filter(|f| f.name() != ROW_COLUMN)
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        if let Some((name, _)) = &label_names {
            fields.push(Field::new(name, DataType::Utf8, true));
        }
        Ok(Self {
            request_schema: with_row_column(&inputs),
            inputs,
            outputs: Arc::new(Schema::new(fields)),
            plan,
            task: ctx.task_ctx(),
            label_names: label_names.map(|(_, l)| l),
        })
    }

    /// The columns a request must carry, with the types the pipeline was fitted on.
    pub fn inputs(&self) -> &SchemaRef {
        &self.inputs
    }

    /// The columns of a prediction (all nullable: a row a stage skipped has nulls).
    pub fn outputs(&self) -> &SchemaRef {
        &self.outputs
    }

    /// Predicts every row of `batch` (whose columns are [`Predictor::inputs`]): one output
    /// row per input row, in order.
    ///
    /// # Errors
    ///
    /// A column is missing or has another type ([`MlError::InvalidColumn`]), or a stage
    /// rejects a value (null or NaN in an assembled column, an unseen category:
    /// [`MlError::InvalidData`] with the stage's message).
    pub async fn predict(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let rows = batch.num_rows();
        let mut columns = Vec::with_capacity(self.inputs.fields().len() + 1);
        for field in self.inputs.fields() {
            let column = batch
                .column_by_name(field.name())
                .ok_or_else(|| MlError::column(field.name(), "missing (the pipeline needs it)"))?;
            if column.data_type() != field.data_type() {
                return Err(MlError::column(
                    field.name(),
                    format!(
                        "has type {}; the pipeline was fitted on {}",
                        column.data_type(),
                        field.data_type()
                    ),
                ));
            }
            columns.push(Arc::clone(column));
        }
        columns.push(Arc::new(UInt64Array::from_iter_values(0..rows as u64)));
        let request = RecordBatch::try_new(Arc::clone(&self.request_schema), columns)?;
        let plan = Arc::clone(&self.plan)
            .transform_up(|node| {
                Ok(match node.downcast_ref::<RequestExec>() {
                    Some(leaf) => Transformed::yes(
                        Arc::new(leaf.with_batch(request.clone())) as Arc<dyn ExecutionPlan>
                    ),
                    None => Transformed::no(node),
                })
            })?
            .data;
        let schema = plan.schema();
        let batches = datafusion::physical_plan::collect(plan, Arc::clone(&self.task))
            .await
            .map_err(data_error)?;
        let out = concat_batches(&schema, &batches)?;
        self.arrange(out, rows)
    }

    /// Puts the plan's output rows back in request order (nulls for rows a stage
    /// dropped), drops the row column and adds the label names.
    fn arrange(&self, out: RecordBatch, rows: usize) -> Result<RecordBatch> {
        let row_index = out.num_columns() - 1;
        let positions = out
            .column(row_index)
            .as_primitive_opt::<arrow::datatypes::UInt64Type>()
            .ok_or_else(|| MlError::data("the serving plan lost its row column"))?;
        let in_order = positions.len() == rows
            && positions
                .values()
                .iter()
                .enumerate()
                .all(|(i, r)| *r == i as u64);
        let mut columns: Vec<ArrayRef> = out.columns()[..row_index].to_vec();
        if !in_order {
            let mut slots: Vec<Option<u32>> = vec![None; rows];
            for (position, row) in positions.values().iter().enumerate() {
                if let Some(slot) = slots.get_mut(*row as usize) {
                    *slot = Some(position as u32);
                }
            }
            let indices = UInt32Array::from(slots);
            columns = columns
                .iter()
                .map(|c| take(c.as_ref(), &indices, None))
                .collect::<std::result::Result<_, _>>()?;
        }
        if let Some(names) = &self.label_names {
            columns.push(label_column(
                columns[names.prediction].as_ref(),
                &names.labels,
            ));
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.outputs), columns)?)
    }
}

/// The label of each predicted index (null for a null or out-of-range prediction).
fn label_column(predictions: &dyn Array, labels: &[String]) -> ArrayRef {
    let mut out = StringBuilder::new();
    match predictions.as_primitive_opt::<arrow::datatypes::Float64Type>() {
        Some(p) => {
            for i in 0..p.len() {
                let v = p.value(i);
                let label = (p.is_valid(i) && v >= 0.0 && v.fract() == 0.0)
                    .then(|| labels.get(v as usize))
                    .flatten();
                out.append_option(label);
            }
        }
        None => (0..predictions.len()).for_each(|_| out.append_null()),
    }
    Arc::new(out.finish())
}

/// An execution error of the serving plan: the data (the plan itself is fixed).
fn data_error(e: DataFusionError) -> MlError {
    match e.find_root() {
        DataFusionError::Execution(message) => MlError::data(message.clone()),
        _ => MlError::from(e),
    }
}

fn serving_context() -> SessionContext {
    SessionContext::new_with_config(
        SessionConfig::new()
            .with_target_partitions(1)
            .with_batch_size(8192),
    )
}

fn with_row_column(schema: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(ROW_COLUMN, DataType::UInt64, false));
    Arc::new(Schema::new(fields))
}

/// `outputs` and the row column of `df`, by exact name.
fn select(
    df: datafusion::dataframe::DataFrame,
    outputs: &[String],
) -> Result<datafusion::dataframe::DataFrame> {
    let exprs: Vec<Expr> = outputs
        .iter()
        .map(String::as_str)
        .chain([ROW_COLUMN])
        .map(|n| Expr::Column(Column::new_unqualified(n)))
        .collect();
    Ok(df.select(exprs)?)
}

/// The pipeline's transform over request columns `inputs`, selecting `outputs`.
async fn plan_for(
    ctx: &SessionContext,
    model: &PipelineModel,
    inputs: &SchemaRef,
    outputs: &[String],
) -> Result<Arc<dyn ExecutionPlan>> {
    let df = ctx.read_table(Arc::new(RequestTable::new(with_row_column(inputs))))?;
    let df = select(model.transform_logical(df)?, outputs)?;
    Ok(df.create_physical_plan().await?)
}

/// The names of the request columns an optimized plan reads (the row column aside).
fn scanned_columns(plan: &LogicalPlan) -> Result<Vec<String>> {
    let mut names = Vec::new();
    plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let schema = scan.source.schema();
            let indices: Vec<usize> = match &scan.projection {
                Some(p) => p.clone(),
                None => (0..schema.fields().len()).collect(),
            };
            names.extend(
                indices
                    .into_iter()
                    .map(|i| schema.field(i).name().clone())
                    .filter(|n| n != ROW_COLUMN),
            );
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(names)
}

/// The table a serving plan reads: the request's batch, bound at execution.
#[derive(Debug)]
struct RequestTable {
    schema: SchemaRef,
}

impl RequestTable {
    fn new(schema: SchemaRef) -> Self {
        Self { schema }
    }
}

#[async_trait]
impl TableProvider for RequestTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let projection = projection
            .cloned()
            .unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        Ok(Arc::new(RequestExec::new(
            Arc::new(self.schema.project(&projection)?),
            projection,
            None,
        )))
    }
}

/// The leaf of a serving plan: one partition holding the request's batch (projected), or
/// nothing until a request binds one.
#[derive(Debug)]
struct RequestExec {
    projection: Vec<usize>,
    batch: Option<RecordBatch>,
    properties: Arc<PlanProperties>,
}

impl RequestExec {
    fn new(schema: SchemaRef, projection: Vec<usize>, batch: Option<RecordBatch>) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            projection,
            batch,
            properties: Arc::new(properties),
        }
    }

    fn with_batch(&self, batch: RecordBatch) -> Self {
        Self::new(self.schema(), self.projection.clone(), Some(batch))
    }
}

impl DisplayAs for RequestExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "RequestExec: projection={:?}", self.projection)
    }
}

impl ExecutionPlan for RequestExec {
    fn name(&self) -> &str {
        "RequestExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "RequestExec has no inputs".into(),
            ))
        }
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let batch = self
            .batch
            .as_ref()
            .ok_or_else(|| DataFusionError::Internal("no request bound to the plan".into()))?
            .project(&self.projection)?;
        let schema = self.schema();
        let batch = RecordBatch::try_new(Arc::clone(&schema), batch.columns().to_vec())?;
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter([Ok(batch)]),
        )))
    }
}
