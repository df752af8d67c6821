//! mllib's scalar functions, evaluated on the executors inside ordinary DataFusion plans:
//! vector assembly, affine scaling, string indexing, one-hot encoding, model predictions
//! and the row hash behind `random_split`.
//!
//! Each function takes its data columns first and its parameters last, as one JSON string
//! literal, so a fitted transformer travels inside the plan like any other expression.

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

fn first(arrays: &[ArrayRef]) -> DfResult<&ArrayRef> {
    arrays
        .first()
        .ok_or_else(|| exec_err("missing input column".into()))
}

fn f32_vectors(array: &ArrayRef) -> DfResult<(&FixedSizeListArray, &[f32], usize)> {
    let list = array.as_fixed_size_list_opt().ok_or_else(|| {
        exec_err(format!(
            "expected a vector column, found {}",
            array.data_type()
        ))
    })?;
    let d = list.value_length() as usize;
    let values = list
        .values()
        .as_primitive_opt::<arrow::datatypes::Float32Type>()
        .ok_or_else(|| exec_err("expected Float32 vector values".into()))?;
    let start = list.value_offset(0).max(0) as usize;
    let end = start + list.len() * d;
    Ok((list, &values.values()[start..end], d))
}

fn f64_vectors(array: &ArrayRef) -> DfResult<(&FixedSizeListArray, Vec<f64>, usize)> {
    let list = array.as_fixed_size_list_opt().ok_or_else(|| {
        exec_err(format!(
            "expected a vector column, found {}",
            array.data_type()
        ))
    })?;
    let d = list.value_length() as usize;
    let values = cast(list.values(), &DataType::Float64)?;
    let values = values.as_primitive::<arrow::datatypes::Float64Type>();
    let start = list.value_offset(0).max(0) as usize;
    Ok((
        list,
        values.values()[start..start + list.len() * d].to_vec(),
        d,
    ))
}

fn list_of(
    values: ArrayRef,
    item: DataType,
    d: usize,
    nulls: Option<arrow::buffer::NullBuffer>,
) -> DfResult<ArrayRef> {
    Ok(Arc::new(FixedSizeListArray::try_new(
        Arc::new(Field::new("item", item, false)),
        d as i32,
        values,
        nulls,
    )?))
}

fn assemble_arrays(arrays: &[ArrayRef], p: &AssembleParams, rows: usize) -> DfResult<ArrayRef> {
    let d: usize = arrays.iter().map(|a| dimension_of(a.data_type())).sum();
    let mut values = vec![0f32; rows * d];
    let mut valid = vec![true; rows];
    let mut offset = 0;
    for (c, array) in arrays.iter().enumerate() {
        let name = p.columns.get(c).map(String::as_str).unwrap_or("?");
        let width = dimension_of(array.data_type());
        let flat: Vec<f64> = match array.data_type() {
            DataType::FixedSizeList(..) => {
                let (list, v, _) = f64_vectors(array)?;
                let mut v = v;
                for r in 0..rows {
                    if list.is_null(r) {
                        v[r * width..(r + 1) * width].fill(f64::NAN);
                    }
                }
                v
            }
            t if t.is_numeric() || t == &DataType::Boolean => {
                let cast = cast(array, &DataType::Float64)?;
                let cast = cast.as_primitive::<arrow::datatypes::Float64Type>();
                (0..rows)
                    .map(|r| {
                        if cast.is_null(r) {
                            f64::NAN
                        } else {
                            cast.value(r)
                        }
                    })
                    .collect()
            }
            other => {
                return Err(DataFusionError::Plan(format!(
                    "VectorAssembler: column '{name}' has type {other}; only numeric and vector \
                     columns can be assembled"
                )))
            }
        };
        for r in 0..rows {
            let is_null = array.is_null(r);
            if is_null {
                match p.handle_invalid {
                    HandleInvalid::Error => {
                        return Err(exec_err(format!(
                            "VectorAssembler: column '{name}' is null in a row (set \
                             handle_invalid to skip or keep to accept such rows)"
                        )))
                    }
                    HandleInvalid::Skip => valid[r] = false,
                    HandleInvalid::Keep => {}
                }
            }
            for j in 0..width {
                values[r * d + offset + j] = flat[r * width + j] as f32;
            }
        }
        offset += width;
    }
    let nulls = (p.handle_invalid == HandleInvalid::Skip && valid.iter().any(|v| !v))
        .then(|| arrow::buffer::NullBuffer::from(valid));
    list_of(
        Arc::new(Float32Array::from(values)),
        DataType::Float32,
        d,
        nulls,
    )
}

fn affine_array(array: &ArrayRef, p: &AffineParams) -> DfResult<ArrayRef> {
    let (list, values, d) = f32_vectors(array)?;
    if p.scale.len() != d || p.offset.len() != d {
        return Err(exec_err(format!(
            "scaler fitted on {} features applied to vectors of {d}",
            p.scale.len()
        )));
    }
    let mut out = Vec::with_capacity(values.len());
    for row in values.chunks_exact(d.max(1)) {
        for ((v, s), o) in row.iter().zip(&p.scale).zip(&p.offset) {
            out.push((f64::from(*v) * s + o) as f32);
        }
    }
    list_of(
        Arc::new(Float32Array::from(out)),
        DataType::Float32,
        d,
        list.nulls().cloned(),
    )
}

fn string_index_array(array: &ArrayRef, p: &StringIndexParams) -> DfResult<ArrayRef> {
    let strings = cast(array, &DataType::Utf8)?;
    let strings = strings
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| exec_err("expected strings".into()))?;
    let index: std::collections::HashMap<&str, usize> = p
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let mut out: Vec<Option<f64>> = Vec::with_capacity(strings.len());
    for r in 0..strings.len() {
        let value = (!strings.is_null(r)).then(|| strings.value(r));
        match value.and_then(|v| index.get(v)) {
            Some(i) => out.push(Some(*i as f64)),
            None => match p.handle_invalid {
                HandleInvalid::Error => {
                    return Err(exec_err(format!(
                        "StringIndexer: column '{}' has {}, which was not seen when fitting \
                         (set handle_invalid to skip or keep)",
                        p.column,
                        value.map_or("null".to_string(), |v| format!("unseen label '{v}'"))
                    )))
                }
                HandleInvalid::Skip => out.push(None),
                HandleInvalid::Keep => out.push(Some(p.labels.len() as f64)),
            },
        }
    }
    Ok(Arc::new(Float64Array::from(out)))
}

fn one_hot_array(array: &ArrayRef, p: &OneHotParams) -> DfResult<ArrayRef> {
    let index = cast(array, &DataType::Float64)?;
    let index = index.as_primitive::<arrow::datatypes::Float64Type>();
    let keep = usize::from(p.handle_invalid == HandleInvalid::Keep);
    let size = p.categories + keep - usize::from(p.drop_last);
    let mut values = vec![0f32; index.len() * size];
    for r in 0..index.len() {
        let v = if index.is_null(r) {
            f64::NAN
        } else {
            index.value(r)
        };
        let category =
            if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && (v as usize) < p.categories {
                v as usize
            } else if keep == 1 {
                p.categories
            } else {
                return Err(exec_err(format!(
                    "OneHotEncoder: column '{}' has {v}, not a category index in 0..{}",
                    p.column, p.categories
                )));
            };
        if category < size {
            values[r * size + category] = 1.0;
        }
    }
    list_of(
        Arc::new(Float32Array::from(values)),
        DataType::Float32,
        size,
        None,
    )
}

fn linear_array(array: &ArrayRef, p: &LinearParams) -> DfResult<ArrayRef> {
    let (_, values, d) = f32_vectors(array)?;
    let k = p.intercepts.len();
    if p.coefficients.len() != k * d {
        return Err(exec_err(format!(
            "model fitted on {} features applied to vectors of {d}",
            p.coefficients.len() / k.max(1)
        )));
    }
    let rows = values.len().checked_div(d).unwrap_or(array.len());
    let margin = |r: usize, c: usize| {
        let x = &values[r * d..(r + 1) * d];
        let w = &p.coefficients[c * d..(c + 1) * d];
        x.iter().zip(w).map(|(a, b)| f64::from(*a) * b).sum::<f64>() + p.intercepts[c]
    };
    if p.scalar {
        return Ok(Arc::new(Float64Array::from_iter_values(
            (0..rows).map(|r| margin(r, 0)),
        )));
    }
    let mut out = Vec::with_capacity(rows * k.max(2));
    for r in 0..rows {
        if p.binary {
            let m = margin(r, 0);
            out.extend([-m, m]);
        } else {
            out.extend((0..k).map(|c| margin(r, c)));
        }
    }
    let width = if p.binary { 2 } else { k };
    list_of(
        Arc::new(Float64Array::from(out)),
        DataType::Float64,
        width,
        None,
    )
}

fn probability_array(array: &ArrayRef, p: &ProbabilityParams) -> DfResult<ArrayRef> {
    let (_, raw, k) = f64_vectors(array)?;
    let mut out = Vec::with_capacity(raw.len());
    for row in raw.chunks_exact(k.max(1)) {
        if p.binary {
            let p1 = sigmoid(row[1]);
            out.extend([1.0 - p1, p1]);
        } else {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = row.iter().map(|m| (m - max).exp()).sum();
            out.extend(row.iter().map(|m| (m - max).exp() / sum));
        }
    }
    list_of(
        Arc::new(Float64Array::from(out)),
        DataType::Float64,
        k,
        None,
    )
}

fn predict_array(array: &ArrayRef, p: &PredictParams) -> DfResult<ArrayRef> {
    let (_, prob, k) = f64_vectors(array)?;
    let out = prob.chunks_exact(k.max(1)).map(|row| match p.threshold {
        Some(t) if k == 2 => {
            if row[1] > t {
                1.0
            } else {
                0.0
            }
        }
        _ => {
            let mut best = 0;
            for (i, v) in row.iter().enumerate() {
                if *v > row[best] {
                    best = i;
                }
            }
            best as f64
        }
    });
    Ok(Arc::new(Float64Array::from_iter_values(out)))
}

fn nearest_array(array: &ArrayRef, p: &NearestParams) -> DfResult<ArrayRef> {
    let (_, values, d) = f32_vectors(array)?;
    if p.centres.len() != p.k * d {
        return Err(exec_err(format!(
            "KMeans model fitted on {} features applied to vectors of {d}",
            p.centres.len() / p.k.max(1)
        )));
    }
    let out = values
        .chunks_exact(d.max(1))
        .map(|x| nearest(x, &p.centres, p.k, d).0 as i32);
    Ok(Arc::new(Int32Array::from_iter_values(out)))
}

fn uniform_array(arrays: &[ArrayRef], p: &UniformParams, rows: usize) -> DfResult<ArrayRef> {
    let state = datafusion::common::hash_utils::RandomState::with_seed(p.seed);
    let mut hashes = vec![0u64; rows];
    datafusion::common::hash_utils::create_hashes(arrays, &state, &mut hashes)?;
    let out = hashes
        .iter()
        .map(|h| crate::aggregate::uniform(p.seed, *h, 0));
    Ok(Arc::new(Float64Array::from_iter_values(out)))
}
