//! Imputer: missing values (null or NaN) replaced by a column's mean or median.

#[allow(unused_imports)]
use super::*;

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
