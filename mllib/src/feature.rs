//! Feature transformers: [`VectorAssembler`], [`StandardScaler`], [`MinMaxScaler`],
//! [`StringIndexer`], [`OneHotEncoder`], [`Imputer`], and [`random_split`].

use std::path::Path;

use arrow::array::{Array, AsArray, Int64Array};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use async_trait::async_trait;
use datafusion::functions_aggregate::expr_fn::{avg, count, max, median};
use datafusion::logical_expr::{lit, when, Expr};
use datafusion::prelude::{cast as cast_expr, isnan};
use serde::{Deserialize, Serialize};

use crate::aggregate::{tree_aggregate, Aggregation, Summary, DEFAULT_FAN_IN};
use crate::error::{MlError, Result};
use crate::frame::Frame;
use crate::persist::{self, read_arrays, read_metadata, save_stage};
use crate::pipeline::{Estimator, Transformer};
use crate::udf::{self, HandleInvalid};
use crate::vector::{check_vector_column, missing_column};

use crate::persist::{check_class, load_json, save_json};

/// Adds column `output` computed by `expr`; with [`HandleInvalid::Skip`], drops the rows
/// where it is null (the functions mark skipped rows so).
fn with_checked_column(
    df: datafusion::dataframe::DataFrame,
    output: &str,
    expr: Expr,
    handle_invalid: HandleInvalid,
) -> Result<datafusion::dataframe::DataFrame> {
    let df = df.with_column(output, expr)?;
    Ok(if handle_invalid == HandleInvalid::Skip {
        df.filter(quoted(output).is_not_null())?
    } else {
        df
    })
}

/// A column by its exact name (no SQL identifier normalisation).
pub(crate) fn column(name: &str) -> Expr {
    quoted(name)
}

fn quoted(name: &str) -> Expr {
    datafusion::logical_expr::Expr::Column(datafusion::common::Column::new_unqualified(name))
}

/// Combines numeric and vector columns into one feature vector column
/// (`FixedSizeList<Float32>`), in the order given.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VectorAssembler {
    /// Columns to combine (numeric or vector).
    pub input_cols: Vec<String>,
    /// The vector column made (default `features`).
    pub output_col: String,
    /// Rows with a null input: error (default), skip, or keep (as NaN).
    pub handle_invalid: HandleInvalid,
}

impl VectorAssembler {
    /// Assembles `input_cols` into `features`.
    pub fn new<S: Into<String>>(input_cols: impl IntoIterator<Item = S>) -> Self {
        Self {
            input_cols: input_cols.into_iter().map(Into::into).collect(),
            output_col: "features".into(),
            handle_invalid: HandleInvalid::Error,
        }
    }

    /// Sets the output column.
    pub fn output_col(mut self, name: impl Into<String>) -> Self {
        self.output_col = name.into();
        self
    }

    /// Sets how rows with null inputs are handled.
    pub fn handle_invalid(mut self, mode: HandleInvalid) -> Self {
        self.handle_invalid = mode;
        self
    }

    /// Reads an assembler written by [`Transformer::save`].
    ///
    /// # Errors
    ///
    /// The directory is missing or holds something else.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        load_json(path.as_ref(), "VectorAssembler")
    }
}

impl Transformer for VectorAssembler {
    fn class(&self) -> &'static str {
        "VectorAssembler"
    }

    fn transform_logical(
        &self,
        df: datafusion::dataframe::DataFrame,
    ) -> Result<datafusion::dataframe::DataFrame> {
        if self.input_cols.is_empty() {
            return Err(MlError::param(
                "VectorAssembler",
                "input_cols",
                "needs at least one column",
            ));
        }
        let schema = df.schema().as_arrow().clone();
        for c in &self.input_cols {
            let field = schema
                .field_with_name(c)
                .map_err(|_| missing_column(&schema, c))?;
            let ok = match field.data_type() {
                DataType::FixedSizeList(item, _) => item.data_type().is_numeric(),
                t => t.is_numeric() || t == &DataType::Boolean,
            };
            if !ok {
                return Err(MlError::column(
                    c,
                    format!(
                        "VectorAssembler takes numeric and vector columns, found {}",
                        field.data_type()
                    ),
                ));
            }
        }
        let args = self.input_cols.iter().map(|c| quoted(c)).collect();
        let expr = udf::assemble(
            args,
            &udf::AssembleParams {
                columns: self.input_cols.clone(),
                handle_invalid: self.handle_invalid,
            },
        );
        with_checked_column(df, &self.output_col, expr, self.handle_invalid)
    }

    fn save(&self, path: &Path) -> Result<()> {
        save_json(path, self.class(), self)
    }
}

/// Scales each feature of a vector column by its standard deviation (and optionally
/// centres it on its mean), like Spark ML's `StandardScaler`. A feature whose standard
/// deviation is 0 becomes 0.
#[derive(Debug, Clone, PartialEq)]
pub struct StandardScaler {
    /// Vector column to scale (default `features`).
    pub input_col: String,
    /// Scaled vector column (default `scaled_features`).
    pub output_col: String,
    /// Subtract the mean (default false, as in Spark).
    pub with_mean: bool,
    /// Divide by the standard deviation (default true).
    pub with_std: bool,
}

impl Default for StandardScaler {
    fn default() -> Self {
        Self {
            input_col: "features".into(),
            output_col: "scaled_features".into(),
            with_mean: false,
            with_std: true,
        }
    }
}

impl StandardScaler {
    /// A scaler with Spark's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the input column.
    pub fn input_col(mut self, name: impl Into<String>) -> Self {
        self.input_col = name.into();
        self
    }

    /// Sets the output column.
    pub fn output_col(mut self, name: impl Into<String>) -> Self {
        self.output_col = name.into();
        self
    }

    /// Sets whether to centre on the mean.
    pub fn with_mean(mut self, yes: bool) -> Self {
        self.with_mean = yes;
        self
    }

    /// Sets whether to divide by the standard deviation.
    pub fn with_std(mut self, yes: bool) -> Self {
        self.with_std = yes;
        self
    }
}

/// Column statistics of vector column `column` of `df`, computed on the executors; fails
/// on an empty data set and on NaN or infinite values.
pub(crate) async fn feature_summary<F: Frame>(
    df: &F,
    column: &str,
    label: Option<&str>,
    stage: &str,
) -> Result<Summary> {
    let d = check_vector_column(&df.schema(), column)?;
    let (partial, _) = tree_aggregate(
        df,
        Aggregation::Summary {
            features: column.to_string(),
            label: label.map(str::to_string),
        },
        DEFAULT_FAN_IN,
    )
    .await?;
    if partial.is_empty() {
        return Err(MlError::data(format!("{stage}: the data set is empty")));
    }
    let summary = Summary::from_partial(&partial, d)?;
    if summary.non_finite_features > 0.0 {
        return Err(MlError::data(format!(
            "{stage}: column '{column}' has {} NaN or infinite values",
            summary.non_finite_features
        )));
    }
    Ok(summary)
}

#[async_trait]
impl<F: Frame> Estimator<F> for StandardScaler {
    type Model = ScalerModel;

    async fn fit(&self, df: &F) -> Result<ScalerModel> {
        let s = feature_summary(df, &self.input_col, None, "StandardScaler").await?;
        let scale: Vec<f64> = s
            .std
            .iter()
            .map(|sd| {
                if !self.with_std {
                    1.0
                } else if *sd > 0.0 {
                    1.0 / sd
                } else {
                    0.0
                }
            })
            .collect();
        let offset = s
            .mean
            .iter()
            .zip(&scale)
            .map(|(m, sc)| if self.with_mean { -m * sc } else { 0.0 })
            .collect();
        Ok(ScalerModel {
            class: "StandardScalerModel",
            input_col: self.input_col.clone(),
            output_col: self.output_col.clone(),
            scale,
            offset,
        })
    }
}

/// Rescales each feature of a vector column to `[min, max]` (default `[0, 1]`) from the
/// range seen when fitting, like Spark ML's `MinMaxScaler`; a constant feature becomes the
/// middle of the range.
#[derive(Debug, Clone, PartialEq)]
pub struct MinMaxScaler {
    /// Vector column to scale (default `features`).
    pub input_col: String,
    /// Scaled vector column (default `scaled_features`).
    pub output_col: String,
    /// Lower bound of the output range.
    pub min: f64,
    /// Upper bound of the output range.
    pub max: f64,
}

impl Default for MinMaxScaler {
    fn default() -> Self {
        Self {
            input_col: "features".into(),
            output_col: "scaled_features".into(),
            min: 0.0,
            max: 1.0,
        }
    }
}

impl MinMaxScaler {
    /// A scaler to `[0, 1]`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the input column.
    pub fn input_col(mut self, name: impl Into<String>) -> Self {
        self.input_col = name.into();
        self
    }

    /// Sets the output column.
    pub fn output_col(mut self, name: impl Into<String>) -> Self {
        self.output_col = name.into();
        self
    }

    /// Sets the output range.
    pub fn range(mut self, min: f64, max: f64) -> Self {
        self.min = min;
        self.max = max;
        self
    }
}

#[async_trait]
impl<F: Frame> Estimator<F> for MinMaxScaler {
    type Model = ScalerModel;

    async fn fit(&self, df: &F) -> Result<ScalerModel> {
        if self.min >= self.max || !self.min.is_finite() || !self.max.is_finite() {
            return Err(MlError::param(
                "MinMaxScaler",
                "range",
                format!("min {} must be below max {}", self.min, self.max),
            ));
        }
        let s = feature_summary(df, &self.input_col, None, "MinMaxScaler").await?;
        let mut scale = Vec::with_capacity(s.min.len());
        let mut offset = Vec::with_capacity(s.min.len());
        for (lo, hi) in s.min.iter().zip(&s.max) {
            let range = hi - lo;
            if range > 0.0 {
                let sc = (self.max - self.min) / range;
                scale.push(sc);
                offset.push(self.min - lo * sc);
            } else {
                scale.push(0.0);
                offset.push(0.5 * (self.min + self.max));
            }
        }
        Ok(ScalerModel {
            class: "MinMaxScalerModel",
            input_col: self.input_col.clone(),
            output_col: self.output_col.clone(),
            scale,
            offset,
        })
    }
}

/// A fitted scaler (standard or min-max): `x * scale + offset` per feature.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalerModel {
    class: &'static str,
    /// Vector column scaled.
    pub input_col: String,
    /// Scaled vector column.
    pub output_col: String,
    /// Per-feature factor.
    pub scale: Vec<f64>,
    /// Per-feature offset.
    pub offset: Vec<f64>,
}

impl ScalerModel {
    /// Reads a scaler written by [`Transformer::save`].
    ///
    /// # Errors
    ///
    /// The directory is missing or holds something else.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let meta = read_metadata(path)?;
        check_class(
            path,
            &meta.class,
            &["StandardScalerModel", "MinMaxScalerModel"],
        )?;
        let arrays = read_arrays(path)?;
        Ok(Self {
            class: if meta.class == "StandardScalerModel" {
                "StandardScalerModel"
            } else {
                "MinMaxScalerModel"
            },
            input_col: persist::param(&meta, path, "input_col")?,
            output_col: persist::param(&meta, path, "output_col")?,
            scale: persist::array(&arrays, path, "scale")?,
            offset: persist::array(&arrays, path, "offset")?,
        })
    }
}

impl Transformer for ScalerModel {
    fn class(&self) -> &'static str {
        self.class
    }

    fn transform_logical(
        &self,
        df: datafusion::dataframe::DataFrame,
    ) -> Result<datafusion::dataframe::DataFrame> {
        let d = check_vector_column(df.schema().as_arrow(), &self.input_col)?;
        if d != self.scale.len() {
            return Err(MlError::column(
                &self.input_col,
                format!(
                    "has {d} features; the scaler was fitted on {}",
                    self.scale.len()
                ),
            ));
        }
        let expr = udf::affine(
            quoted(&self.input_col),
            &udf::AffineParams {
                scale: self.scale.clone(),
                offset: self.offset.clone(),
            },
        );
        Ok(df.with_column(&self.output_col, expr)?)
    }

    fn save(&self, path: &Path) -> Result<()> {
        save_stage(
            path,
            self.class,
            serde_json::json!({ "input_col": self.input_col, "output_col": self.output_col }),
            &[("scale", &self.scale), ("offset", &self.offset)],
            |_| Ok(()),
        )
    }
}

/// Maps the values of a column (as strings) to indices by descending frequency (ties by
/// label), like Spark ML's `StringIndexer`.
#[derive(Debug, Clone, PartialEq)]
pub struct StringIndexer {
    /// Column to index.
    pub input_col: String,
    /// Float64 index column.
    pub output_col: String,
    /// Values not seen when fitting (and nulls): error (default), skip, or keep (index =
    /// number of labels).
    pub handle_invalid: HandleInvalid,
}

impl StringIndexer {
    /// Indexes `input_col` into `output_col`.
    pub fn new(input_col: impl Into<String>, output_col: impl Into<String>) -> Self {
        Self {
            input_col: input_col.into(),
            output_col: output_col.into(),
            handle_invalid: HandleInvalid::Error,
        }
    }

    /// Sets how unseen values are handled.
    pub fn handle_invalid(mut self, mode: HandleInvalid) -> Self {
        self.handle_invalid = mode;
        self
    }
}

#[async_trait]
impl<F: Frame> Estimator<F> for StringIndexer {
    type Model = StringIndexerModel;

    async fn fit(&self, df: &F) -> Result<StringIndexerModel> {
        let schema = df.schema();
        schema
            .field_with_name(&self.input_col)
            .map_err(|_| missing_column(&schema, &self.input_col))?;
        let value = cast_expr(quoted(&self.input_col), DataType::Utf8).alias("value");
        let counted = df
            .logical()
            .clone()
            .filter(quoted(&self.input_col).is_not_null())?
            .aggregate(vec![value], vec![count(lit(1)).alias("n")])?;
        let batches = df.derive(counted).collect_batches().await?;
        let mut labels: Vec<(String, i64)> = Vec::new();
        for b in &batches {
            let values = b.column(0).as_string::<i32>();
            let counts = b
                .column(1)
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| MlError::data("StringIndexer: counts are not Int64"))?;
            for i in 0..b.num_rows() {
                labels.push((values.value(i).to_string(), counts.value(i)));
            }
        }
        if labels.is_empty() {
            return Err(MlError::data(format!(
                "StringIndexer: column '{}' has no non-null values",
                self.input_col
            )));
        }
        labels.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(StringIndexerModel {
            input_col: self.input_col.clone(),
            output_col: self.output_col.clone(),
            handle_invalid: self.handle_invalid,
            labels: labels.into_iter().map(|(l, _)| l).collect(),
        })
    }
}

/// A fitted [`StringIndexer`]: label `labels[i]` becomes index `i`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StringIndexerModel {
    /// Column indexed.
    pub input_col: String,
    /// Index column.
    pub output_col: String,
    /// Handling of unseen values.
    pub handle_invalid: HandleInvalid,
    /// Labels by index.
    pub labels: Vec<String>,
}

impl StringIndexerModel {
    /// Reads a model written by [`Transformer::save`].
    ///
    /// # Errors
    ///
    /// The directory is missing or holds something else.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        load_json(path.as_ref(), "StringIndexerModel")
    }
}

impl Transformer for StringIndexerModel {
    fn class(&self) -> &'static str {
        "StringIndexerModel"
    }

    fn transform_logical(
        &self,
        df: datafusion::dataframe::DataFrame,
    ) -> Result<datafusion::dataframe::DataFrame> {
        let schema = df.schema().as_arrow().clone();
        schema
            .field_with_name(&self.input_col)
            .map_err(|_| missing_column(&schema, &self.input_col))?;
        let expr = udf::string_index(
            quoted(&self.input_col),
            &udf::StringIndexParams {
                column: self.input_col.clone(),
                labels: self.labels.clone(),
                handle_invalid: self.handle_invalid,
            },
        );
        with_checked_column(df, &self.output_col, expr, self.handle_invalid)
    }

    fn save(&self, path: &Path) -> Result<()> {
        save_json(path, self.class(), self)
    }
}

/// Encodes a category index column as a one-hot vector (the last category dropped by
/// default, as in Spark ML).
#[derive(Debug, Clone, PartialEq)]
pub struct OneHotEncoder {
    /// Category index column (whole numbers from 0).
    pub input_col: String,
    /// Vector column made.
    pub output_col: String,
    /// Drop the last category (default true), so the vectors are not collinear.
    pub drop_last: bool,
    /// Indices not seen when fitting: error (default) or keep (an extra category).
    pub handle_invalid: HandleInvalid,
}

impl OneHotEncoder {
    /// Encodes `input_col` into `output_col`.
    pub fn new(input_col: impl Into<String>, output_col: impl Into<String>) -> Self {
        Self {
            input_col: input_col.into(),
            output_col: output_col.into(),
            drop_last: true,
            handle_invalid: HandleInvalid::Error,
        }
    }

    /// Sets whether the last category is dropped.
    pub fn drop_last(mut self, yes: bool) -> Self {
        self.drop_last = yes;
        self
    }

    /// Sets how unseen indices are handled (skip is not offered).
    pub fn handle_invalid(mut self, mode: HandleInvalid) -> Self {
        self.handle_invalid = mode;
        self
    }
}

#[async_trait]
impl<F: Frame> Estimator<F> for OneHotEncoder {
    type Model = OneHotEncoderModel;

    async fn fit(&self, df: &F) -> Result<OneHotEncoderModel> {
        if self.handle_invalid == HandleInvalid::Skip {
            return Err(MlError::param(
                "OneHotEncoder",
                "handle_invalid",
                "skip is not supported; use error or keep",
            ));
        }
        crate::vector::check_numeric_column(&df.schema(), &self.input_col)?;
        let c = cast_expr(quoted(&self.input_col), DataType::Float64);
        let agg = df.logical().clone().aggregate(
            vec![],
            vec![
                max(c.clone()).alias("max"),
                datafusion::functions_aggregate::expr_fn::min(c).alias("min"),
            ],
        )?;
        let batches = df.derive(agg).collect_batches().await?;
        let read = |i: usize| -> Option<f64> {
            let b = batches.iter().find(|b| b.num_rows() > 0)?;
            let a = cast(b.column(i), &DataType::Float64).ok()?;
            let a = a.as_primitive::<arrow::datatypes::Float64Type>();
            (!a.is_null(0)).then(|| a.value(0))
        };
        let (Some(hi), Some(lo)) = (read(0), read(1)) else {
            return Err(MlError::data(format!(
                "OneHotEncoder: column '{}' has no values",
                self.input_col
            )));
        };
        if lo < 0.0 || !hi.is_finite() || hi.fract() != 0.0 {
            return Err(MlError::data(format!(
                "OneHotEncoder: column '{}' must hold category indices 0, 1, 2, ...; found \
                 values from {lo} to {hi}",
                self.input_col
            )));
        }
        Ok(OneHotEncoderModel {
            input_col: self.input_col.clone(),
            output_col: self.output_col.clone(),
            drop_last: self.drop_last,
            handle_invalid: self.handle_invalid,
            categories: hi as usize + 1,
        })
    }
}

/// A fitted [`OneHotEncoder`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OneHotEncoderModel {
    /// Category index column.
    pub input_col: String,
    /// Vector column.
    pub output_col: String,
    /// Whether the last category is dropped.
    pub drop_last: bool,
    /// Handling of unseen indices.
    pub handle_invalid: HandleInvalid,
    /// Number of categories seen when fitting.
    pub categories: usize,
}

impl OneHotEncoderModel {
    /// Reads a model written by [`Transformer::save`].
    ///
    /// # Errors
    ///
    /// The directory is missing or holds something else.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        load_json(path.as_ref(), "OneHotEncoderModel")
    }
}

impl Transformer for OneHotEncoderModel {
    fn class(&self) -> &'static str {
        "OneHotEncoderModel"
    }

    fn transform_logical(
        &self,
        df: datafusion::dataframe::DataFrame,
    ) -> Result<datafusion::dataframe::DataFrame> {
        crate::vector::check_numeric_column(df.schema().as_arrow(), &self.input_col)?;
        let expr = udf::one_hot(
            quoted(&self.input_col),
            &udf::OneHotParams {
                column: self.input_col.clone(),
                categories: self.categories,
                drop_last: self.drop_last,
                handle_invalid: self.handle_invalid,
            },
        );
        Ok(df.with_column(&self.output_col, expr)?)
    }

    fn save(&self, path: &Path) -> Result<()> {
        save_json(path, self.class(), self)
    }
}

/// How [`Imputer`] computes the value that replaces missing ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ImputerStrategy {
    /// The mean of the column's present values.
    #[default]
    Mean,
    /// The median of the column's present values.
    Median,
}

/// Replaces missing values (null or NaN) of numeric columns by the column's mean or median,
/// like Spark ML's `Imputer`. Outputs are Float64.
#[derive(Debug, Clone, PartialEq)]
pub struct Imputer {
    /// Columns to impute.
    pub input_cols: Vec<String>,
    /// Output columns, one per input (default: the input names, replaced in place).
    pub output_cols: Vec<String>,
    /// Mean (default) or median.
    pub strategy: ImputerStrategy,
}

impl Imputer {
    /// Imputes `input_cols` in place.
    pub fn new<S: Into<String>>(input_cols: impl IntoIterator<Item = S>) -> Self {
        let input_cols: Vec<String> = input_cols.into_iter().map(Into::into).collect();
        Self {
            output_cols: input_cols.clone(),
            input_cols,
            strategy: ImputerStrategy::Mean,
        }
    }

    /// Sets the output columns.
    pub fn output_cols<S: Into<String>>(mut self, cols: impl IntoIterator<Item = S>) -> Self {
        self.output_cols = cols.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the strategy.
    pub fn strategy(mut self, strategy: ImputerStrategy) -> Self {
        self.strategy = strategy;
        self
    }
}

/// A column's value with NaN as null, in Float64.
fn present(column: &str) -> Expr {
    let c = cast_expr(quoted(column), DataType::Float64);
    when(
        isnan(c.clone()),
        lit(datafusion::common::ScalarValue::Float64(None)),
    )
    .otherwise(c)
    .unwrap_or_else(|_| lit(datafusion::common::ScalarValue::Float64(None)))
}

#[async_trait]
impl<F: Frame> Estimator<F> for Imputer {
    type Model = ImputerModel;

    async fn fit(&self, df: &F) -> Result<ImputerModel> {
        if self.input_cols.len() != self.output_cols.len() || self.input_cols.is_empty() {
            return Err(MlError::param(
                "Imputer",
                "output_cols",
                format!(
                    "needs one output per input ({} inputs, {} outputs)",
                    self.input_cols.len(),
                    self.output_cols.len()
                ),
            ));
        }
        let schema = df.schema();
        for c in &self.input_cols {
            crate::vector::check_numeric_column(&schema, c)?;
        }
        let aggs = self
            .input_cols
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let v = present(c);
                match self.strategy {
                    ImputerStrategy::Mean => avg(v),
                    ImputerStrategy::Median => median(v),
                }
                .alias(format!("s{i}"))
            })
            .collect();
        let agg = df.logical().clone().aggregate(vec![], aggs)?;
        let batches = df.derive(agg).collect_batches().await?;
        let batch = batches
            .iter()
            .find(|b| b.num_rows() > 0)
            .ok_or_else(|| MlError::data("Imputer: the data set is empty"))?;
        let mut surrogates = Vec::with_capacity(self.input_cols.len());
        for (i, c) in self.input_cols.iter().enumerate() {
            let a = cast(batch.column(i), &DataType::Float64)?;
            let a = a.as_primitive::<arrow::datatypes::Float64Type>();
            if a.is_null(0) || !a.value(0).is_finite() {
                return Err(MlError::data(format!(
                    "Imputer: column '{c}' has no present values to compute a surrogate from"
                )));
            }
            surrogates.push(a.value(0));
        }
        Ok(ImputerModel {
            input_cols: self.input_cols.clone(),
            output_cols: self.output_cols.clone(),
            surrogates,
        })
    }
}

/// A fitted [`Imputer`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImputerModel {
    /// Columns imputed.
    pub input_cols: Vec<String>,
    /// Output columns.
    pub output_cols: Vec<String>,
    /// Replacement value per column.
    pub surrogates: Vec<f64>,
}

impl ImputerModel {
    /// Reads a model written by [`Transformer::save`].
    ///
    /// # Errors
    ///
    /// The directory is missing or holds something else.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        load_json(path.as_ref(), "ImputerModel")
    }
}

impl Transformer for ImputerModel {
    fn class(&self) -> &'static str {
        "ImputerModel"
    }

    fn transform_logical(
        &self,
        mut df: datafusion::dataframe::DataFrame,
    ) -> Result<datafusion::dataframe::DataFrame> {
        for ((input, output), s) in self
            .input_cols
            .iter()
            .zip(&self.output_cols)
            .zip(&self.surrogates)
        {
            crate::vector::check_numeric_column(df.schema().as_arrow(), input)?;
            let expr =
                datafusion::functions::core::expr_fn::coalesce(vec![present(input), lit(*s)]);
            df = df.with_column(output, expr)?;
        }
        Ok(df)
    }

    fn save(&self, path: &Path) -> Result<()> {
        save_json(path, self.class(), self)
    }
}

/// Splits `df` into parts with the given relative `weights`, by a hash of each row's
/// values and `seed`: the same rows go to the same part on every run and after any
/// recomputation (identical rows always go to the same part).
///
/// # Errors
///
/// A weight is negative or not finite, or they sum to zero.
pub fn random_split<F: Frame>(df: &F, weights: &[f64], seed: u64) -> Result<Vec<F>> {
    let total: f64 = weights.iter().sum();
    if weights.iter().any(|w| !w.is_finite() || *w < 0.0) || total <= 0.0 {
        return Err(MlError::param(
            "random_split",
            "weights",
            format!("must be non-negative with a positive sum, got {weights:?}"),
        ));
    }
    let columns: Vec<Expr> = df
        .schema()
        .fields()
        .iter()
        .map(|f| quoted(f.name()))
        .collect();
    let u = udf::uniform(columns, &udf::UniformParams { seed });
    let mut parts = Vec::with_capacity(weights.len());
    let mut low = 0.0;
    for (i, w) in weights.iter().enumerate() {
        let high = if i + 1 == weights.len() {
            f64::INFINITY
        } else {
            low + w / total
        };
        let part = df
            .logical()
            .clone()
            .filter(u.clone().gt_eq(lit(low)).and(u.clone().lt(lit(high))))?;
        parts.push(df.derive(part));
        low = high;
    }
    Ok(parts)
}
