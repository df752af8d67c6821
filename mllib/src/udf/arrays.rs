//! The array computations behind mllib's scalar functions, one per function.

#[allow(unused_imports)]
use super::*;

pub(super) fn first(arrays: &[ArrayRef]) -> DfResult<&ArrayRef> {
    arrays
        .first()
        .ok_or_else(|| exec_err("missing input column".into()))
}

pub(super) fn f32_vectors(array: &ArrayRef) -> DfResult<(&FixedSizeListArray, &[f32], usize)> {
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

pub(super) fn f64_vectors(array: &ArrayRef) -> DfResult<(&FixedSizeListArray, Vec<f64>, usize)> {
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

pub(super) fn list_of(
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

pub(super) fn assemble_arrays(
    arrays: &[ArrayRef],
    p: &AssembleParams,
    rows: usize,
) -> DfResult<ArrayRef> {
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
            // As in Spark ML, NaN is as invalid as null.
            let invalid =
                array.is_null(r) || flat[r * width..(r + 1) * width].iter().any(|v| v.is_nan());
            if invalid {
                match p.handle_invalid {
                    HandleInvalid::Error => {
                        return Err(exec_err(format!(
                            "VectorAssembler: column '{name}' is null or NaN in a row (set \
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

pub(super) fn affine_array(array: &ArrayRef, p: &AffineParams) -> DfResult<ArrayRef> {
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

pub(super) fn string_index_array(array: &ArrayRef, p: &StringIndexParams) -> DfResult<ArrayRef> {
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

pub(super) fn one_hot_array(array: &ArrayRef, p: &OneHotParams) -> DfResult<ArrayRef> {
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

pub(super) fn linear_array(array: &ArrayRef, p: &LinearParams) -> DfResult<ArrayRef> {
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

pub(super) fn probability_array(array: &ArrayRef, p: &ProbabilityParams) -> DfResult<ArrayRef> {
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

pub(super) fn predict_array(array: &ArrayRef, p: &PredictParams) -> DfResult<ArrayRef> {
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

pub(super) fn nearest_array(array: &ArrayRef, p: &NearestParams) -> DfResult<ArrayRef> {
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

pub(super) fn uniform_array(
    arrays: &[ArrayRef],
    p: &UniformParams,
    rows: usize,
) -> DfResult<ArrayRef> {
    let state = datafusion::common::hash_utils::RandomState::with_seed(p.seed);
    let mut hashes = vec![0u64; rows];
    datafusion::common::hash_utils::create_hashes(arrays, &state, &mut hashes)?;
    let out = hashes
        .iter()
        .map(|h| crate::aggregate::uniform(p.seed, *h, 0));
    Ok(Arc::new(Float64Array::from_iter_values(out)))
}
