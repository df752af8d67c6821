//! Request values to Arrow columns and prediction columns back to JSON, with errors that
//! name the column and the row.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, FixedSizeListArray, Float64Builder, Int64Builder,
    StringBuilder,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float64Type, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use serde_json::{Map, Value};

use super::error::ApiError;

/// Builds a batch of `schema` from one list of values per column (`columns[i]` for field
/// `i`, all of `rows` values).
pub fn batch_from_columns(
    schema: &SchemaRef,
    columns: &[Vec<&Value>],
    rows: usize,
) -> Result<RecordBatch, ApiError> {
    let arrays = schema
        .fields()
        .iter()
        .zip(columns)
        .map(|(field, values)| column_array(field, values))
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new_with_options(
        Arc::clone(schema),
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(|e| ApiError::bad_request(format!("cannot build the request's rows: {e}")))
}

/// Splits row objects into columns of `schema`, refusing missing and unknown names.
pub fn columns_from_rows<'a>(
    schema: &SchemaRef,
    rows: &'a [Value],
) -> Result<Vec<Vec<&'a Value>>, ApiError> {
    let mut columns: Vec<Vec<&Value>> = vec![Vec::with_capacity(rows.len()); schema.fields().len()];
    for (r, row) in rows.iter().enumerate() {
        let Value::Object(object) = row else {
            return Err(ApiError::bad_request(format!(
                "row {r}: expected an object of column names to values, found {}",
                kind(row)
            )));
        };
        check_names(
            schema,
            object.keys().map(String::as_str),
            &format!("row {r}: "),
        )?;
        for (i, field) in schema.fields().iter().enumerate() {
            let value = object.get(field.name()).ok_or_else(|| {
                ApiError::field(
                    field.name(),
                    format!(
                        "row {r}: missing column '{}' (the model needs {})",
                        field.name(),
                        names(schema)
                    ),
                )
            })?;
            columns[i].push(value);
        }
    }
    Ok(columns)
}

/// Fails on a name that is not a column of `schema`; `names` must also cover every
/// column of it (checked by the caller where values are looked up).
pub fn check_names<'a>(
    schema: &SchemaRef,
    given: impl IntoIterator<Item = &'a str>,
    context: &str,
) -> Result<(), ApiError> {
    for name in given {
        if schema.field_with_name(name).is_err() {
            return Err(ApiError::field(
                name,
                format!(
                    "{context}unknown column '{name}' (the model takes {})",
                    names(schema)
                ),
            ));
        }
    }
    Ok(())
}

/// The column names of `schema`, listed for an error message.
pub fn names(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A float from a JSON number, or from "NaN", "Infinity" and "-Infinity" (JSON has no
/// literal for them).
fn float(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" | "nan" => Some(f64::NAN),
            "Infinity" | "inf" => Some(f64::INFINITY),
            "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

fn column_array(field: &Field, values: &[&Value]) -> Result<ArrayRef, ApiError> {
    let name = field.name();
    let wrong = |r: usize, v: &Value, want: &str| {
        ApiError::field(
            name,
            format!(
                "column '{name}', row {r}: expected {want} ({}), found {}",
                field.data_type(),
                describe(v)
            ),
        )
    };
    Ok(match field.data_type() {
        DataType::Float64 | DataType::Float32 => {
            let mut b = Float64Builder::with_capacity(values.len());
            for (r, v) in values.iter().enumerate() {
                match v {
                    Value::Null => b.append_null(),
                    v => b.append_value(float(v).ok_or_else(|| wrong(r, v, "a number"))?),
                }
            }
            let array: ArrayRef = Arc::new(b.finish());
            if field.data_type() == &DataType::Float32 {
                cast(&array, &DataType::Float32).map_err(|e| ApiError::internal(e.to_string()))?
            } else {
                array
            }
        }
        DataType::Int64 | DataType::Int32 | DataType::Int16 | DataType::Int8 => {
            let mut b = Int64Builder::with_capacity(values.len());
            for (r, v) in values.iter().enumerate() {
                match v {
                    Value::Null => b.append_null(),
                    Value::Number(n) => b.append_value(
                        n.as_i64()
                            .or_else(|| {
                                n.as_f64()
                                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                                    .map(|f| f as i64)
                            })
                            .ok_or_else(|| wrong(r, v, "a whole number"))?,
                    ),
                    v => return Err(wrong(r, v, "a whole number")),
                }
            }
            let array: ArrayRef = Arc::new(b.finish());
            if field.data_type() == &DataType::Int64 {
                array
            } else {
                let safe = arrow::compute::CastOptions {
                    safe: false,
                    ..Default::default()
                };
                arrow::compute::cast_with_options(&array, field.data_type(), &safe).map_err(
                    |e| ApiError::field(name, format!("column '{name}': out of range: {e}")),
                )?
            }
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let mut b = StringBuilder::with_capacity(values.len(), values.len() * 8);
            for (r, v) in values.iter().enumerate() {
                match v {
                    Value::Null => b.append_null(),
                    Value::String(s) => b.append_value(s),
                    v => return Err(wrong(r, v, "a string")),
                }
            }
            let array: ArrayRef = Arc::new(b.finish());
            if field.data_type() == &DataType::Utf8 {
                array
            } else {
                cast(&array, field.data_type()).map_err(|e| ApiError::internal(e.to_string()))?
            }
        }
        DataType::Boolean => {
            let mut b = BooleanBuilder::with_capacity(values.len());
            for (r, v) in values.iter().enumerate() {
                match v {
                    Value::Null => b.append_null(),
                    Value::Bool(x) => b.append_value(*x),
                    v => return Err(wrong(r, v, "true or false")),
                }
            }
            Arc::new(b.finish())
        }
        DataType::FixedSizeList(item, d)
            if matches!(item.data_type(), DataType::Float32 | DataType::Float64) =>
        {
            let d = *d as usize;
            let mut flat = Float64Builder::with_capacity(values.len() * d);
            let mut valid = Vec::with_capacity(values.len());
            for (r, v) in values.iter().enumerate() {
                match v {
                    Value::Null => {
                        flat.append_slice(&vec![0.0; d]);
                        valid.push(false);
                    }
                    Value::Array(xs) if xs.len() == d => {
                        for x in xs {
                            flat.append_value(
                                float(x).ok_or_else(|| wrong(r, v, &format!("{d} numbers")))?,
                            );
                        }
                        valid.push(true);
                    }
                    v => return Err(wrong(r, v, &format!("an array of {d} numbers"))),
                }
            }
            let flat: ArrayRef = Arc::new(flat.finish());
            let flat =
                cast(&flat, item.data_type()).map_err(|e| ApiError::internal(e.to_string()))?;
            let nulls = valid
                .iter()
                .any(|v| !v)
                .then(|| arrow::buffer::NullBuffer::from(valid));
            Arc::new(
                FixedSizeListArray::try_new(Arc::clone(item), d as i32, flat, nulls)
                    .map_err(|e| ApiError::internal(e.to_string()))?,
            )
        }
        other => {
            return Err(ApiError::field(
                name,
                format!("column '{name}' has type {other}, which requests cannot carry yet"),
            ))
        }
    })
}

/// A short rendering of a value for an error message.
fn describe(v: &Value) -> String {
    let text = v.to_string();
    if text.len() > 40 {
        format!("{} {}...", kind(v), &text[..text.floor_char_boundary(37)])
    } else {
        text
    }
}

/// The JSON value of row `row` of `array`: numbers, strings, booleans, arrays of numbers
/// for vectors; null for a null (and for NaN, which JSON cannot write).
pub fn value_at(array: &dyn Array, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::FixedSizeList(..) => {
            let list = array.as_fixed_size_list();
            let values = list.value(row);
            Value::Array(
                (0..values.len())
                    .map(|i| value_at(values.as_ref(), i))
                    .collect(),
            )
        }
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_string()),
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int64 | DataType::Int32 | DataType::Int16 | DataType::Int8 => {
            match cast(&array.slice(row, 1), &DataType::Int64) {
                Ok(a) => Value::from(a.as_primitive::<arrow::datatypes::Int64Type>().value(0)),
                Err(_) => Value::Null,
            }
        }
        t if t.is_numeric() => match cast(&array.slice(row, 1), &DataType::Float64) {
            Ok(a) => number(a.as_primitive::<Float64Type>().value(0)),
            Err(_) => Value::Null,
        },
        _ => Value::String(
            arrow::util::display::array_value_to_string(array, row).unwrap_or_default(),
        ),
    }
}

fn number(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// Every row of `batch` as an object of column names to values.
pub fn rows_of(batch: &RecordBatch) -> Vec<Value> {
    (0..batch.num_rows())
        .map(|r| {
            let mut object = Map::new();
            for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
                object.insert(field.name().clone(), value_at(column.as_ref(), r));
            }
            Value::Object(object)
        })
        .collect()
}

/// Column `array` as a flat list of values (vectors' values one after another), as a
/// tensor's `data` holds them.
pub fn flat_values(array: &dyn Array) -> Vec<Value> {
    match array.data_type() {
        DataType::FixedSizeList(_, d) => {
            let d = *d as usize;
            let mut out = Vec::with_capacity(array.len() * d);
            for r in 0..array.len() {
                match value_at(array, r) {
                    Value::Array(xs) => out.extend(xs),
                    _ => out.extend(std::iter::repeat_n(Value::Null, d)),
                }
            }
            out
        }
        _ => (0..array.len()).map(|r| value_at(array, r)).collect(),
    }
}
