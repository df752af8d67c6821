//! StringIndexer (values to indices by frequency) and OneHotEncoder (indices to vectors).

#[allow(unused_imports)]
use super::*;

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

/// A fitted [`StringIndexer`]: label `labels[i]` becomes index `i`. A frame without the
/// indexed column passes through unchanged (as in Spark ML), so a pipeline that indexed
/// its label column while fitting transforms rows that carry no label.
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
        // As in Spark ML, a frame without the indexed column passes through unchanged: a
        // pipeline that indexed its label while fitting then serves rows that have none.
        if df
            .schema()
            .as_arrow()
            .field_with_name(&self.input_col)
            .is_err()
        {
            tracing::debug!(
                column = %self.input_col,
                "StringIndexerModel: no such column; the stage is skipped"
            );
            return Ok(df);
        }
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

    fn indexes(&self) -> Option<IndexedColumn<'_>> {
        Some(IndexedColumn {
            input: &self.input_col,
            output: &self.output_col,
            labels: &self.labels,
        })
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
