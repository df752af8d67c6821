//! Whether two engines' answers to a query agree: rows as multisets, numbers within a stated
//! tolerance.

use std::cmp::Ordering;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow::record_batch::RecordBatch;

/// Relative tolerance of floating-point cells: the engines may sum in different orders.
pub const FLOAT_RELATIVE: f64 = 1e-6;
/// Absolute tolerance of floating-point cells near zero.
pub const FLOAT_ABSOLUTE: f64 = 1e-9;
/// One value of a result, comparable across engines.
#[derive(Debug, Clone)]
enum Cell {
    Null,
    Int(i128),
    Float(f64),
    /// Compared exactly: value and scale.
    Decimal {
        value: i128,
        scale: i8,
    },
    Text(String),
    Date(i32),
    Bool(bool),
}

impl Cell {
    fn rank(&self) -> u8 {
        match self {
            Cell::Null => 0,
            Cell::Int(_) => 1,
            Cell::Float(_) => 2,
            Cell::Decimal { .. } => 3,
            Cell::Text(_) => 4,
            Cell::Date(_) => 5,
            Cell::Bool(_) => 6,
        }
    }

    /// A total order, only to sort rows before comparing them.
    fn order(&self, other: &Cell) -> Ordering {
        match (self, other) {
            (Cell::Int(a), Cell::Int(b)) => a.cmp(b),
            (Cell::Float(a), Cell::Float(b)) => a.total_cmp(b),
            (Cell::Decimal { value: a, scale: x }, Cell::Decimal { value: b, scale: y }) => {
                (x, a).cmp(&(y, b))
            }
            (Cell::Text(a), Cell::Text(b)) => a.cmp(b),
            (Cell::Date(a), Cell::Date(b)) => a.cmp(b),
            (Cell::Bool(a), Cell::Bool(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }

    fn matches(&self, other: &Cell) -> bool {
        match (self, other) {
            (Cell::Float(a), Cell::Float(b)) => {
                let diff = (a - b).abs();
                diff <= FLOAT_ABSOLUTE || diff <= FLOAT_RELATIVE * a.abs().max(b.abs())
            }
            (Cell::Null, Cell::Null) => true,
            (Cell::Int(a), Cell::Int(b)) => a == b,
            (Cell::Decimal { value: a, scale: x }, Cell::Decimal { value: b, scale: y }) => {
                a == b && x == y
            }
            (Cell::Text(a), Cell::Text(b)) => a == b,
            (Cell::Date(a), Cell::Date(b)) => a == b,
            (Cell::Bool(a), Cell::Bool(b)) => a == b,
            _ => false,
        }
    }
}

/// The cell at `row` of `column`.
fn cell(column: &dyn Array, row: usize) -> Result<Cell, String> {
    if column.is_null(row) {
        return Ok(Cell::Null);
    }
    Ok(match column.data_type() {
        DataType::Null => Cell::Null,
        DataType::Int8 => Cell::Int(column.as_primitive::<Int8Type>().value(row).into()),
        DataType::Int16 => Cell::Int(column.as_primitive::<Int16Type>().value(row).into()),
        DataType::Int32 => Cell::Int(column.as_primitive::<Int32Type>().value(row).into()),
        DataType::Int64 => Cell::Int(column.as_primitive::<Int64Type>().value(row).into()),
        DataType::UInt8 => Cell::Int(column.as_primitive::<UInt8Type>().value(row).into()),
        DataType::UInt16 => Cell::Int(column.as_primitive::<UInt16Type>().value(row).into()),
        DataType::UInt32 => Cell::Int(column.as_primitive::<UInt32Type>().value(row).into()),
        DataType::UInt64 => Cell::Int(column.as_primitive::<UInt64Type>().value(row).into()),
        DataType::Float32 => Cell::Float(column.as_primitive::<Float32Type>().value(row).into()),
        DataType::Float64 => Cell::Float(column.as_primitive::<Float64Type>().value(row)),
        DataType::Decimal128(_, scale) => Cell::Decimal {
            value: column.as_primitive::<Decimal128Type>().value(row),
            scale: *scale,
        },
        DataType::Utf8 => Cell::Text(column.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Cell::Text(column.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Cell::Text(column.as_string_view().value(row).to_string()),
        DataType::Date32 => Cell::Date(column.as_primitive::<Date32Type>().value(row)),
        DataType::Boolean => Cell::Bool(column.as_boolean().value(row)),
        other => return Err(format!("no comparison for type {other}")),
    })
}

/// Column names and sorted rows of a result.
fn table(batches: &[RecordBatch]) -> Result<(Vec<String>, Vec<Vec<Cell>>), String> {
    let names = batches
        .first()
        .map(|b| {
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        })
        .unwrap_or_default();
    let mut rows = Vec::new();
    for batch in batches {
        for r in 0..batch.num_rows() {
            let row = batch
                .columns()
                .iter()
                .map(|c| cell(c.as_ref(), r))
                .collect::<Result<Vec<_>, _>>()?;
            rows.push(row);
        }
    }
    rows.sort_by(|a, b| {
        a.iter()
            .zip(b)
            .map(|(x, y)| x.order(y))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    });
    Ok((names, rows))
}

/// Why `answer` differs from `expected`, if it does: the rows are compared as multisets
/// (sorted first, so row order does not matter), floating-point cells within
/// [`FLOAT_RELATIVE`] (or [`FLOAT_ABSOLUTE`] near zero), every other cell exactly (decimals
/// with their scale).
pub fn difference(answer: &[RecordBatch], expected: &[RecordBatch]) -> Option<String> {
    let (names, rows) = match table(answer) {
        Ok(t) => t,
        Err(e) => return Some(format!("answer: {e}")),
    };
    let (expected_names, expected_rows) = match table(expected) {
        Ok(t) => t,
        Err(e) => return Some(format!("expected answer: {e}")),
    };
    // An empty result may come as no batches at all, so it has no column names to compare.
    if !rows.is_empty() && names != expected_names {
        return Some(format!("columns {names:?}, expected {expected_names:?}"));
    }
    if rows.len() != expected_rows.len() {
        return Some(format!(
            "{} rows, expected {}",
            rows.len(),
            expected_rows.len()
        ));
    }
    for (i, (e, d)) in rows.iter().zip(&expected_rows).enumerate() {
        if e.len() != d.len() || e.iter().zip(d).any(|(x, y)| !x.matches(y)) {
            return Some(format!("sorted row {i}: {e:?}, expected {d:?}"));
        }
    }
    None
}
