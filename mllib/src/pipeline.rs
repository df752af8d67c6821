//! Spark ML's shape: an [`Estimator`] fits a model on a DataFrame, a [`Transformer`] (a
//! fitted model or a stateless stage) maps a DataFrame to a new lazy one, a [`Pipeline`]
//! chains both kinds and fits into a [`PipelineModel`].

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;

use crate::error::{MlError, Result};
use crate::frame::Frame;
use crate::persist;

/// Maps a DataFrame to a new one by adding columns (lazily: nothing runs until an action).
pub trait Transformer: Send + Sync + fmt::Debug {
    /// The stage's class name, as written in saved metadata.
    fn class(&self) -> &'static str;

    /// The transformation on DataFusion's logical DataFrame.
    fn transform_logical(
        &self,
        df: datafusion::dataframe::DataFrame,
    ) -> Result<datafusion::dataframe::DataFrame>;

    /// Writes the stage under directory `path` (see [`crate::persist`] for the format).
    fn save(&self, path: &Path) -> Result<()>;

    /// For a fitted predictor (a classifier, a regressor, a clusterer): the column it
    /// predicts into and the label column it was trained on. Serving maps predicted class
    /// indices back to label names through it.
    fn predicts(&self) -> Option<PredictedColumns> {
        None
    }

    /// For a fitted string indexer: the column it indexes, the index column it adds, and
    /// the label of each index.
    fn indexes(&self) -> Option<IndexedColumn<'_>> {
        None
    }
}

/// The columns of a fitted predictor (see [`Transformer::predicts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredictedColumns {
    /// The column of predictions (class index, value or cluster).
    pub prediction: String,
    /// The label column it was trained on (none for clustering).
    pub label: Option<String>,
}

/// The columns and labels of a fitted string indexer (see [`Transformer::indexes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexedColumn<'a> {
    /// The column of strings it indexes.
    pub input: &'a str,
    /// The Float64 index column it adds.
    pub output: &'a str,
    /// Label of index `i`.
    pub labels: &'a [String],
}

/// Applies `stage` to `frame`.
pub fn transform<F: Frame>(stage: &dyn Transformer, frame: &F) -> Result<F> {
    Ok(frame.derive(stage.transform_logical(frame.logical().clone())?))
}

/// Extension for applying any transformer to a [`Frame`].
pub trait TransformerExt {
    /// The transformed DataFrame (lazy).
    fn transform<F: Frame>(&self, frame: &F) -> Result<F>;
}

impl<T: Transformer + ?Sized> TransformerExt for T {
    fn transform<F: Frame>(&self, frame: &F) -> Result<F> {
        Ok(frame.derive(self.transform_logical(frame.logical().clone())?))
    }
}

/// Fits a model on a DataFrame; fitting runs jobs on the cluster.
#[async_trait]
pub trait Estimator<F: Frame>: Send + Sync + fmt::Debug {
    /// The fitted model.
    type Model: Transformer + 'static;

    /// Fits the model.
    async fn fit(&self, df: &F) -> Result<Self::Model>;
}

/// An estimator whose model type is erased, as a pipeline holds it.
#[async_trait]
pub trait DynEstimator<F: Frame>: Send + Sync + fmt::Debug {
    /// Fits and boxes the model.
    async fn fit_boxed(&self, df: &F) -> Result<Box<dyn Transformer>>;
}

#[async_trait]
impl<F: Frame, E: Estimator<F>> DynEstimator<F> for E {
    async fn fit_boxed(&self, df: &F) -> Result<Box<dyn Transformer>> {
        Ok(Box::new(self.fit(df).await?))
    }
}

/// One stage of a [`Pipeline`].
#[derive(Debug)]
pub enum PipelineStage<F: Frame> {
    /// Fitted on the output of the stages before it.
    Estimator(Box<dyn DynEstimator<F>>),
    /// Applied as is (and shared with the fitted model).
    Transformer(Arc<dyn Transformer>),
}

/// A sequence of stages: fitting it fits each estimator on the output of the stages before
/// it, in order (like Spark ML's `Pipeline`).
#[derive(Debug)]
pub struct Pipeline<F: Frame> {
    stages: Vec<PipelineStage<F>>,
}

impl<F: Frame> Default for Pipeline<F> {
    fn default() -> Self {
        Self { stages: Vec::new() }
    }
}

impl<F: Frame> Pipeline<F> {
    /// An empty pipeline.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an estimator.
    pub fn estimator(mut self, estimator: impl DynEstimator<F> + 'static) -> Self {
        self.stages
            .push(PipelineStage::Estimator(Box::new(estimator)));
        self
    }

    /// Appends a transformer.
    pub fn transformer(mut self, transformer: impl Transformer + 'static) -> Self {
        self.stages
            .push(PipelineStage::Transformer(Arc::new(transformer)));
        self
    }

    /// The stages.
    pub fn stages(&self) -> &[PipelineStage<F>] {
        &self.stages
    }

    /// Fits every estimator in order; the result applies all stages.
    ///
    /// # Errors
    ///
    /// The first stage that fails, named.
    pub async fn fit(&self, df: &F) -> Result<PipelineModel> {
        let mut current = df.clone();
        let mut fitted: Vec<Arc<dyn Transformer>> = Vec::with_capacity(self.stages.len());
        let last = self.stages.len().saturating_sub(1);
        for (i, stage) in self.stages.iter().enumerate() {
            let transformer: Arc<dyn Transformer> = match stage {
                PipelineStage::Estimator(e) => Arc::from(e.fit_boxed(&current).await?),
                PipelineStage::Transformer(t) => Arc::clone(t),
            };
            if i < last {
                current = transform(transformer.as_ref(), &current)?;
            }
            fitted.push(transformer);
        }
        Ok(PipelineModel::new(fitted).with_input_schema(df.schema()))
    }
}

/// A fitted pipeline: applies its stages in order.
#[derive(Debug)]
pub struct PipelineModel {
    stages: Vec<Arc<dyn Transformer>>,
    /// The columns of the DataFrame it was fitted on (saved with it, so that serving knows
    /// the names and types of the inputs).
    input_schema: Option<SchemaRef>,
}

impl PipelineModel {
    /// A model of the given fitted stages.
    pub fn new(stages: Vec<Arc<dyn Transformer>>) -> Self {
        Self {
            stages,
            input_schema: None,
        }
    }

    /// Records the schema of the data the model was fitted on ([`Pipeline::fit`] does).
    pub fn with_input_schema(mut self, schema: SchemaRef) -> Self {
        self.input_schema = Some(schema);
        self
    }

    /// The fitted stages.
    pub fn stages(&self) -> &[Arc<dyn Transformer>] {
        &self.stages
    }

    /// The schema of the data the model was fitted on, when known (models fitted by
    /// [`Pipeline::fit`] record it; the model's transform needs only the columns its
    /// stages read).
    pub fn input_schema(&self) -> Option<&SchemaRef> {
        self.input_schema.as_ref()
    }

    /// Reads a pipeline model written by [`Transformer::save`].
    ///
    /// # Errors
    ///
    /// The directory is missing or not a saved pipeline model.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let meta = persist::read_metadata(path)?;
        persist::check_class(path, &meta.class, &["PipelineModel"])?;
        let count = meta
            .params
            .get("stages")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| MlError::Format {
                path: path.to_path_buf(),
                message: "metadata lacks the stage count".into(),
            })?;
        let mut stages = Vec::with_capacity(count as usize);
        for i in 0..count {
            stages.push(Arc::from(persist::load_transformer(&stage_dir(
                path, i as usize,
            ))?));
        }
        let schema_file = path.join(INPUT_SCHEMA_FILE);
        let input_schema = if schema_file.exists() {
            Some(persist::read_schema(&schema_file)?)
        } else {
            None
        };
        Ok(Self {
            stages,
            input_schema,
        })
    }
}

/// The file of a saved pipeline model that holds its input schema (an Arrow IPC file of
/// no rows).
const INPUT_SCHEMA_FILE: &str = "input_schema.arrow";

fn stage_dir(path: &Path, i: usize) -> std::path::PathBuf {
    path.join("stages").join(format!("{i:03}"))
}

impl Transformer for PipelineModel {
    fn class(&self) -> &'static str {
        "PipelineModel"
    }

    fn transform_logical(
        &self,
        mut df: datafusion::dataframe::DataFrame,
    ) -> Result<datafusion::dataframe::DataFrame> {
        for stage in &self.stages {
            df = stage.transform_logical(df)?;
        }
        Ok(df)
    }

    fn save(&self, path: &Path) -> Result<()> {
        persist::save_stage(
            path,
            self.class(),
            serde_json::json!({ "stages": self.stages.len() }),
            &[],
            |staging| {
                for (i, stage) in self.stages.iter().enumerate() {
                    stage.save(&stage_dir(staging, i))?;
                }
                if let Some(schema) = &self.input_schema {
                    persist::write_schema(&staging.join(INPUT_SCHEMA_FILE), schema)?;
                }
                Ok(())
            },
        )
    }
}
