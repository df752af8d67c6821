//! TreeAggregateExec: the plan node that computes or merges an aggregation's partials on
//! the executors, its codec (mllib's plan extension), and the driver-side entry point.

#[allow(unused_imports)]
use super::*;

/// Runs `agg` over `frame` on the cluster: one partial per partition, merged by tree
/// reduction with at most `fan_in` partials per merge. Returns the merged partial and the
/// job's metrics.
pub async fn tree_aggregate<F: Frame>(
    frame: &F,
    agg: Aggregation,
    fan_in: usize,
) -> Result<(Vec<f64>, JobMetrics)> {
    let agg = Arc::new(agg);
    let partial_agg = Arc::clone(&agg);
    let partial = move |input: Arc<dyn ExecutionPlan>| -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(TreeAggregateExec::new(
            Arc::clone(&partial_agg),
            false,
            input,
        )))
    };
    let merge_agg = Arc::clone(&agg);
    let merge = move |input: Arc<dyn ExecutionPlan>| -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(TreeAggregateExec::new(
            Arc::clone(&merge_agg),
            true,
            input,
        )))
    };
    let (batches, metrics) = frame.tree_aggregate(&partial, &merge, fan_in).await?;
    let mut acc = Vec::new();
    for batch in &batches {
        agg.merge(&mut acc, &partial_values(batch)?);
    }
    Ok((acc, metrics))
}

/// The partial a batch of [`TreeAggregateExec`] output holds.
pub(super) fn partial_values(batch: &RecordBatch) -> Result<Vec<f64>> {
    Ok(f64_column(batch, PARTIAL_COLUMN)?.to_vec())
}

const PARTIAL_COLUMN: &str = "partial";

fn partial_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        PARTIAL_COLUMN,
        DataType::Float64,
        false,
    )]))
}

/// Computes (or, with `merge`, merges) partials of an [`Aggregation`]: output partition
/// *i* is one batch holding the partial of input partition *i* as a Float64 column.
#[derive(Debug)]
pub struct TreeAggregateExec {
    agg: Arc<Aggregation>,
    merge: bool,
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl TreeAggregateExec {
    /// A partial (`merge == false`) or merge step of `agg` over `input`.
    pub fn new(agg: Arc<Aggregation>, merge: bool, input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(partial_schema()),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Self {
            agg,
            merge,
            input,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for TreeAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let name = match self.agg.as_ref() {
            Aggregation::Gradient { loss, .. } => format!("gradient {loss:?}"),
            Aggregation::KMeans { k, .. } => format!("k-means k={k}"),
            Aggregation::Sample { .. } => "k-means|| sample".into(),
            Aggregation::PickOne { .. } => "pick one".into(),
            Aggregation::Summary { .. } => "summary".into(),
            Aggregation::Gram { .. } => "gram".into(),
            Aggregation::ClusterStats { .. } => "cluster stats".into(),
            Aggregation::Silhouette { .. } => "silhouette".into(),
        };
        write!(
            f,
            "TreeAggregateExec: {name}, {}",
            if self.merge { "merge" } else { "partial" }
        )
    }
}

/// Runs `f` on rayon's pool and waits for it without blocking the async runtime.
async fn on_rayon<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> DfResult<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let _ = tx.send(f());
    });
    rx.await
        .map_err(|_| DataFusionError::Internal("mllib computation was dropped".into()))
}

impl ExecutionPlan for TreeAggregateExec {
    fn name(&self) -> &str {
        "TreeAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
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
        match <[_; 1]>::try_from(children) {
            Ok([input]) => Ok(Arc::new(Self::new(
                Arc::clone(&self.agg),
                self.merge,
                input,
            ))),
            Err(_) => Err(DataFusionError::Internal(
                "TreeAggregateExec takes one input".into(),
            )),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        // The executor's kernel; the CPU where none was given (the driver, a bare
        // executor).
        let kernel: Arc<dyn Kernel> = context
            .session_config()
            .get_extension::<crate::gpu::KernelExtension>()
            .map(|k| Arc::clone(&k.0))
            .unwrap_or_else(|| Arc::new(CpuKernel));
        let input = self.input.execute(partition, context)?;
        let agg = Arc::clone(&self.agg);
        let merge = self.merge;
        let schema = partial_schema();
        let out_schema = Arc::clone(&schema);
        let batch = stream::once(async move {
            let batches: Vec<RecordBatch> = input.try_collect().await?;
            let partial = on_rayon(move || -> Result<Vec<f64>> {
                if merge {
                    let mut acc = Vec::new();
                    for b in &batches {
                        agg.merge(&mut acc, &partial_values(b)?);
                    }
                    Ok(acc)
                } else {
                    agg.partial(&batches, partition, kernel.as_ref())
                }
            })
            .await?
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
            Ok(RecordBatch::try_new(
                out_schema,
                vec![Arc::new(Float64Array::from(partial))],
            )?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            batch.boxed(),
        )))
    }
}

/// mllib's plan extension: encodes [`TreeAggregateExec`] and provides mllib's scalar
/// functions to every process.
#[derive(Debug, Default)]
pub struct MlExtension;

#[derive(Serialize, Deserialize)]
struct EncodedAggregate {
    agg: Aggregation,
    merge: bool,
}

impl PlanExtension for MlExtension {
    fn name(&self) -> &str {
        "ember-mllib"
    }

    fn encode(&self, node: &Arc<dyn ExecutionPlan>) -> DfResult<Option<Vec<u8>>> {
        let Some(exec) = node.downcast_ref::<TreeAggregateExec>() else {
            return Ok(None);
        };
        let encoded = EncodedAggregate {
            agg: exec.agg.as_ref().clone(),
            merge: exec.merge,
        };
        serde_json::to_vec(&encoded)
            .map(Some)
            .map_err(|e| DataFusionError::Internal(format!("encoding an mllib node: {e}")))
    }

    fn decode(
        &self,
        payload: &[u8],
        children: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let decoded: EncodedAggregate = serde_json::from_slice(payload)
            .map_err(|e| DataFusionError::Internal(format!("decoding an mllib node: {e}")))?;
        let [input] = children else {
            return Err(DataFusionError::Internal(
                "TreeAggregateExec takes one input".into(),
            ));
        };
        Ok(Arc::new(TreeAggregateExec::new(
            Arc::new(decoded.agg),
            decoded.merge,
            Arc::clone(input),
        )))
    }

    fn scalar_functions(&self) -> Vec<Arc<datafusion::logical_expr::ScalarUDF>> {
        crate::udf::all()
    }
}
