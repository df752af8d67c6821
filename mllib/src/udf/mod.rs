//! mllib's scalar functions, evaluated on the executors inside ordinary DataFusion plans:
//! vector assembly, affine scaling, string indexing, one-hot encoding, model predictions
//! and the row hash behind `random_split`.
//!
//! Each function takes its data columns first and its parameters last, as one JSON string
//! literal, so a fitted transformer travels inside the plan like any other expression.

mod arrays;

use arrays::*;

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, Float64Array, Int32Array,
    StringArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::prelude::lit;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::kernel::{nearest, sigmoid};
use crate::vector::vector_type;

/// What a function does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Assemble,
    Affine,
    StringIndex,
    OneHot,
    Linear,
    Probability,
    Predict,
    Nearest,
    Uniform,
    Element,
}

/// One of mllib's scalar functions.
#[derive(Debug, PartialEq, Eq, Hash)]
struct MlFunction {
    name: &'static str,
    kind: Kind,
    signature: Signature,
}

const ALL: [(&str, Kind); 10] = [
    ("ember_ml_element", Kind::Element),
    ("ember_ml_assemble", Kind::Assemble),
    ("ember_ml_affine", Kind::Affine),
    ("ember_ml_string_index", Kind::StringIndex),
    ("ember_ml_one_hot", Kind::OneHot),
    ("ember_ml_linear", Kind::Linear),
    ("ember_ml_probability", Kind::Probability),
    ("ember_ml_predict", Kind::Predict),
    ("ember_ml_nearest", Kind::Nearest),
    ("ember_ml_uniform", Kind::Uniform),
];

/// Every mllib scalar function (registered in every process by the extension).
pub fn all() -> Vec<Arc<ScalarUDF>> {
    ALL.iter()
        .map(|(name, kind)| Arc::new(function(name, *kind)))
        .collect()
}

fn function(name: &'static str, kind: Kind) -> ScalarUDF {
    ScalarUDF::new_from_impl(MlFunction {
        name,
        kind,
        signature: Signature::variadic_any(Volatility::Immutable),
    })
}

/// A call of mllib function `name` on `args` with parameters `params`.
fn call<P: Serialize>(name: &'static str, mut args: Vec<Expr>, params: &P) -> Expr {
    let kind = ALL
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, k)| *k)
        .unwrap_or(Kind::Uniform);
    let json = serde_json::to_string(params).unwrap_or_default();
    args.push(lit(json));
    Arc::new(function(name, kind)).call(args)
}

/// How rows with invalid values are handled (Spark ML's `handleInvalid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HandleInvalid {
    /// Fail with an error naming the column and the value.
    #[default]
    Error,
    /// Drop the row.
    Skip,
    /// Keep the row (an extra index / NaN).
    Keep,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct AssembleParams {
    pub columns: Vec<String>,
    pub handle_invalid: HandleInvalid,
}

/// `VectorAssembler`'s expression: the columns' values as one vector (null when a value is
/// null and invalid rows are skipped).
pub(crate) fn assemble(columns: Vec<Expr>, params: &AssembleParams) -> Expr {
    call("ember_ml_assemble", columns, params)
}

#[derive(Serialize, Deserialize)]
pub(crate) struct AffineParams {
    pub scale: Vec<f64>,
    pub offset: Vec<f64>,
}

/// `x * scale + offset`, element-wise on a vector column.
pub(crate) fn affine(features: Expr, params: &AffineParams) -> Expr {
    call("ember_ml_affine", vec![features], params)
}

#[derive(Serialize, Deserialize)]
pub(crate) struct StringIndexParams {
    pub column: String,
    pub labels: Vec<String>,
    pub handle_invalid: HandleInvalid,
}

/// The index of each value among `labels` (Float64; null for a skipped invalid value).
pub(crate) fn string_index(input: Expr, params: &StringIndexParams) -> Expr {
    call("ember_ml_string_index", vec![input], params)
}

#[derive(Serialize, Deserialize)]
pub(crate) struct OneHotParams {
    pub column: String,
    pub categories: usize,
    pub drop_last: bool,
    pub handle_invalid: HandleInvalid,
}

/// One-hot vector of a category index.
pub(crate) fn one_hot(input: Expr, params: &OneHotParams) -> Expr {
    call("ember_ml_one_hot", vec![input], params)
}

#[derive(Serialize, Deserialize)]
pub(crate) struct LinearParams {
    /// Row-major `k x d`.
    pub coefficients: Vec<f64>,
    pub intercepts: Vec<f64>,
    /// Binary logistic: raw prediction `[-m, m]` from one margin.
    pub binary: bool,
    /// A single Float64 value instead of a vector.
    pub scalar: bool,
}

/// Margins of a linear model: a Float64List vector (or one Float64 with `scalar`).
pub(crate) fn linear(features: Expr, params: &LinearParams) -> Expr {
    call("ember_ml_linear", vec![features], params)
}

#[derive(Serialize, Deserialize)]
pub(crate) struct ProbabilityParams {
    pub binary: bool,
}

/// Class probabilities from raw predictions (logistic for binary, softmax otherwise).
pub(crate) fn probability(raw: Expr, params: &ProbabilityParams) -> Expr {
    call("ember_ml_probability", vec![raw], params)
}

#[derive(Serialize, Deserialize)]
pub(crate) struct PredictParams {
    /// Binary: predict 1 when P(1) > threshold.
    pub threshold: Option<f64>,
}

/// The predicted class (Float64) from probabilities.
pub(crate) fn predict(probability: Expr, params: &PredictParams) -> Expr {
    call("ember_ml_predict", vec![probability], params)
}

#[derive(Serialize, Deserialize)]
pub(crate) struct NearestParams {
    pub centres: Vec<f64>,
    pub k: usize,
}

/// Index (Int32) of the nearest centre.
pub(crate) fn nearest_centre(features: Expr, params: &NearestParams) -> Expr {
    call("ember_ml_nearest", vec![features], params)
}

#[derive(Serialize, Deserialize)]
pub(crate) struct UniformParams {
    pub seed: u64,
}

/// A number in [0, 1) that depends only on the row's values and the seed.
pub(crate) fn uniform(columns: Vec<Expr>, params: &UniformParams) -> Expr {
    call("ember_ml_uniform", columns, params)
}

#[derive(Serialize, Deserialize)]
pub(crate) struct ElementParams {
    pub index: usize,
}

/// Element `index` (Float64) of a vector column.
pub(crate) fn element(vector: Expr, params: &ElementParams) -> Expr {
    call("ember_ml_element", vec![vector], params)
}

fn params<P: DeserializeOwned>(name: &str, value: Option<&ScalarValue>) -> DfResult<P> {
    match value {
        Some(ScalarValue::Utf8(Some(json))) | Some(ScalarValue::LargeUtf8(Some(json))) => {
            serde_json::from_str(json)
                .map_err(|e| DataFusionError::Plan(format!("{name}: bad parameters: {e}")))
        }
        _ => Err(DataFusionError::Plan(format!(
            "{name}: the last argument must be the JSON parameter literal"
        ))),
    }
}

fn f64_vector_type(n: usize) -> DataType {
    DataType::FixedSizeList(
        Arc::new(Field::new("item", DataType::Float64, false)),
        n as i32,
    )
}

fn dimension_of(data_type: &DataType) -> usize {
    match data_type {
        DataType::FixedSizeList(_, n) => *n as usize,
        _ => 1,
    }
}

fn exec_err(message: String) -> DataFusionError {
    DataFusionError::Execution(message)
}

impl ScalarUDFImpl for MlFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Err(DataFusionError::Internal(format!(
            "{}: the return type depends on the parameters",
            self.name
        )))
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        let last = args.scalar_arguments.last().copied().flatten();
        let fields = &args.arg_fields[..args.arg_fields.len().saturating_sub(1)];
        let (data_type, nullable) = match self.kind {
            Kind::Assemble => {
                let p: AssembleParams = params(self.name, last)?;
                let d = fields.iter().map(|f| dimension_of(f.data_type())).sum();
                (vector_type(d), p.handle_invalid == HandleInvalid::Skip)
            }
            Kind::Affine => (
                fields
                    .first()
                    .map(|f| f.data_type().clone())
                    .unwrap_or(DataType::Null),
                false,
            ),
            Kind::StringIndex => {
                let p: StringIndexParams = params(self.name, last)?;
                (DataType::Float64, p.handle_invalid == HandleInvalid::Skip)
            }
            Kind::OneHot => {
                let p: OneHotParams = params(self.name, last)?;
                let keep = usize::from(p.handle_invalid == HandleInvalid::Keep);
                let size = p.categories + keep - usize::from(p.drop_last);
                (vector_type(size), false)
            }
            Kind::Linear => {
                let p: LinearParams = params(self.name, last)?;
                if p.scalar {
                    (DataType::Float64, false)
                } else {
                    let k = if p.binary { 2 } else { p.intercepts.len() };
                    (f64_vector_type(k), false)
                }
            }
            Kind::Probability => (
                fields
                    .first()
                    .map(|f| f.data_type().clone())
                    .unwrap_or(DataType::Null),
                false,
            ),
            Kind::Predict | Kind::Uniform | Kind::Element => (DataType::Float64, false),
            Kind::Nearest => (DataType::Int32, false),
        };
        Ok(Arc::new(Field::new(self.name, data_type, nullable)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let (last, data) = args
            .args
            .split_last()
            .ok_or_else(|| exec_err(format!("{}: no arguments", self.name)))?;
        let last = match last {
            ColumnarValue::Scalar(s) => Some(s),
            ColumnarValue::Array(_) => None,
        };
        let arrays: Vec<ArrayRef> = data
            .iter()
            .map(|c| c.to_array(rows))
            .collect::<DfResult<_>>()?;
        let out: ArrayRef = match self.kind {
            Kind::Assemble => {
                let p: AssembleParams = params(self.name, last)?;
                assemble_arrays(&arrays, &p, rows)?
            }
            Kind::Affine => {
                let p: AffineParams = params(self.name, last)?;
                affine_array(first(&arrays)?, &p)?
            }
            Kind::StringIndex => {
                let p: StringIndexParams = params(self.name, last)?;
                string_index_array(first(&arrays)?, &p)?
            }
            Kind::OneHot => {
                let p: OneHotParams = params(self.name, last)?;
                one_hot_array(first(&arrays)?, &p)?
            }
            Kind::Linear => {
                let p: LinearParams = params(self.name, last)?;
                linear_array(first(&arrays)?, &p)?
            }
            Kind::Probability => {
                let p: ProbabilityParams = params(self.name, last)?;
                probability_array(first(&arrays)?, &p)?
            }
            Kind::Predict => {
                let p: PredictParams = params(self.name, last)?;
                predict_array(first(&arrays)?, &p)?
            }
            Kind::Nearest => {
                let p: NearestParams = params(self.name, last)?;
                nearest_array(first(&arrays)?, &p)?
            }
            Kind::Uniform => {
                let p: UniformParams = params(self.name, last)?;
                uniform_array(&arrays, &p, rows)?
            }
            Kind::Element => {
                let p: ElementParams = params(self.name, last)?;
                let (_, values, d) = f64_vectors(first(&arrays)?)?;
                if p.index >= d {
                    return Err(exec_err(format!(
                        "vector element {} asked of vectors of {d}",
                        p.index
                    )));
                }
                Arc::new(Float64Array::from_iter_values(
                    values.chunks_exact(d).map(|row| row[p.index]),
                ))
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}
