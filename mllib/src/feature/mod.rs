//! Feature transformers: [`VectorAssembler`], [`StandardScaler`], [`MinMaxScaler`],
//! [`StringIndexer`], [`OneHotEncoder`], [`Imputer`], and [`random_split`]; this file holds
//! what they share (exact-name columns, the skip filter, the column-statistics pass).

mod assembler;
mod imputer;
mod indexer;
mod scaler;

pub use assembler::VectorAssembler;
pub use imputer::{Imputer, ImputerModel, ImputerStrategy};
pub use indexer::{OneHotEncoder, OneHotEncoderModel, StringIndexer, StringIndexerModel};
pub use scaler::{MinMaxScaler, ScalerModel, StandardScaler};

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
use crate::pipeline::{Estimator, IndexedColumn, Transformer};
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

/// The rows of `df` whose pseudo-random number in `[0, 1)`, a hash of the row's values
/// and `seed`, falls in `[low, high)`: a sample that is the same on every run and after any
/// recomputation (identical rows are kept or dropped together). Disjoint ranges of one
/// seed split the rows.
///
/// # Errors
///
/// Planning the filter failed.
pub fn hash_sample(
    df: datafusion::dataframe::DataFrame,
    low: f64,
    high: f64,
    seed: u64,
) -> Result<datafusion::dataframe::DataFrame> {
    let columns: Vec<Expr> = df
        .schema()
        .fields()
        .iter()
        .map(|f| quoted(f.name()))
        .collect();
    let u = udf::uniform(columns, &udf::UniformParams { seed });
    Ok(df.filter(u.clone().gt_eq(lit(low)).and(u.lt(lit(high))))?)
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
    let mut parts = Vec::with_capacity(weights.len());
    let mut low = 0.0;
    for (i, w) in weights.iter().enumerate() {
        let high = if i + 1 == weights.len() {
            f64::INFINITY
        } else {
            low + w / total
        };
        parts.push(df.derive(hash_sample(df.logical().clone(), low, high, seed)?));
        low = high;
    }
    Ok(parts)
}
