//! Vector columns: mllib's feature vectors are Arrow `FixedSizeList<Float32>` columns, whose
//! values buffer is a dense row-major `f32` matrix (rows x dimension) with no copy.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, FixedSizeListArray, Float32Array, Float64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;

use crate::error::{MlError, Result};

/// The Arrow type of a feature vector of `dimension` values.
pub fn vector_type(dimension: usize) -> DataType {
    DataType::FixedSizeList(
        Arc::new(Field::new("item", DataType::Float32, false)),
        dimension as i32,
    )
}

/// The dimension of a vector column of type `data_type`, or an error naming `column`.
pub fn vector_dimension(column: &str, data_type: &DataType) -> Result<usize> {
    match data_type {
        DataType::FixedSizeList(item, n) if item.data_type() == &DataType::Float32 => {
            Ok(*n as usize)
        }
        other => Err(MlError::column(
            column,
            format!(
                "expected a feature vector (FixedSizeList<Float32>, as VectorAssembler makes), \
                 found {other}"
            ),
        )),
    }
}

/// Checks that `schema` has a vector column `column`; returns its dimension.
pub fn check_vector_column(schema: &Schema, column: &str) -> Result<usize> {
    let field = schema
        .field_with_name(column)
        .map_err(|_| missing_column(schema, column))?;
    vector_dimension(column, field.data_type())
}

/// Checks that `schema` has a vector column `column` of the `fitted` dimension a stage
/// was fitted on.
pub fn check_fitted_dimension(schema: &Schema, column: &str, fitted: usize) -> Result<()> {
    let d = check_vector_column(schema, column)?;
    if d == fitted {
        Ok(())
    } else {
        Err(MlError::column(
            column,
            format!("has {d} features; the stage was fitted on {fitted}"),
        ))
    }
}

/// Checks that `schema` has a numeric column `column`.
pub fn check_numeric_column(schema: &Schema, column: &str) -> Result<()> {
    let field = schema
        .field_with_name(column)
        .map_err(|_| missing_column(schema, column))?;
    if field.data_type().is_numeric() {
        Ok(())
    } else {
        Err(MlError::column(
            column,
            format!("expected a numeric column, found {}", field.data_type()),
        ))
    }
}

/// The error for a column `schema` lacks, listing those it has.
pub fn missing_column(schema: &Schema, column: &str) -> MlError {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    MlError::column(
        column,
        format!("no such column (columns: {})", names.join(", ")),
    )
}

/// A batch's vectors as a dense row-major matrix: (values, rows, dimension).
pub fn dense_rows<'a>(array: &'a dyn Array, column: &str) -> Result<(&'a [f32], usize, usize)> {
    let list = array
        .as_any()
        .downcast_ref::<FixedSizeListArray>()
        .ok_or_else(|| {
            vector_dimension(column, array.data_type())
                .err()
                .unwrap_or_else(|| {
                    MlError::column(column, "expected a FixedSizeList<Float32> array")
                })
        })?;
    if list.null_count() > 0 {
        return Err(MlError::data(format!(
            "column '{column}' has {} null vectors",
            list.null_count()
        )));
    }
    let dimension = list.value_length() as usize;
    let values = list
        .values()
        .as_any()
        .downcast_ref::<Float32Array>()
        .ok_or_else(|| MlError::column(column, "expected Float32 vector values"))?;
    let rows = list.len();
    let start = list.value_offset(0).max(0) as usize;
    let all = values.values();
    let end = start + rows * dimension;
    if end > all.len() {
        return Err(MlError::column(
            column,
            "vector values shorter than rows x dimension",
        ));
    }
    Ok((&all[start..end], rows, dimension))
}

/// The Arrow buffer holding a vector array's values.
pub fn values_buffer(array: &dyn Array) -> Option<&arrow::buffer::Buffer> {
    let list = array.as_any().downcast_ref::<FixedSizeListArray>()?;
    let values = list.values().as_any().downcast_ref::<Float32Array>()?;
    Some(values.values().inner())
}

/// A vector column from a dense row-major matrix.
pub fn vectors_from_dense(values: Vec<f32>, dimension: usize) -> Result<ArrayRef> {
    let field = Arc::new(Field::new("item", DataType::Float32, false));
    let list = FixedSizeListArray::try_new(
        field,
        dimension as i32,
        Arc::new(Float32Array::from(values)),
        None,
    )?;
    Ok(Arc::new(list))
}

/// A numeric column of `batch` as `f64` values (nulls become NaN).
pub fn numeric_f64(batch: &RecordBatch, column: &str) -> Result<Vec<f64>> {
    let array = batch
        .column_by_name(column)
        .ok_or_else(|| missing_column(batch.schema().as_ref(), column))?;
    let cast = cast(array, &DataType::Float64)?;
    let values = cast
        .as_any()
        .downcast_ref::<Float64Array>()
        .ok_or_else(|| MlError::column(column, "expected a numeric column"))?;
    Ok((0..values.len())
        .map(|i| {
            if values.is_null(i) {
                f64::NAN
            } else {
                values.value(i)
            }
        })
        .collect())
}

/// A contiguous slice of rows of a feature matrix, with their labels: what a kernel
/// computes on.
#[derive(Debug, Clone, Copy)]
pub struct DenseBlock<'a> {
    /// Row-major `rows x dimension` features.
    pub features: &'a [f32],
    /// One label per row (empty when the computation has none).
    pub labels: &'a [f64],
    /// Number of rows.
    pub rows: usize,
    /// Number of features per row.
    pub dimension: usize,
    /// The Arrow buffer `features` lies in, when known: a GPU kernel keeps it referenced
    /// while the features are resident on the device.
    pub owner: Option<&'a arrow::buffer::Buffer>,
}

impl<'a> DenseBlock<'a> {
    /// Row `i`'s features.
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.features[i * self.dimension..(i + 1) * self.dimension]
    }

    /// Rows `start..end` as a block of their own.
    pub fn slice(&self, start: usize, end: usize) -> DenseBlock<'a> {
        DenseBlock {
            features: &self.features[start * self.dimension..end * self.dimension],
            labels: if self.labels.is_empty() {
                self.labels
            } else {
                &self.labels[start..end]
            },
            rows: end - start,
            dimension: self.dimension,
            owner: None,
        }
    }
}
