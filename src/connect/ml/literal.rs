//! Literals an ML result is sent as: numbers, strings, arrays, and Spark's vectors and
//! matrices (`VectorUDT` / `MatrixUDT` structs, which PySpark decodes into `DenseVector` and
//! `DenseMatrix`).

use crate::connect::proto::data_type::{self as dt, Kind};
use crate::connect::proto::expression::literal::{self, specialized_array, LiteralType as L};
use crate::connect::proto::{self, expression::Literal, DataType};
use crate::connect::types::VECTOR_UDT;

const MATRIX_UDT: &str = "org.apache.spark.ml.linalg.MatrixUDT";

fn lit(t: L) -> Literal {
    Literal {
        literal_type: Some(t),
    }
}

fn leaf_type(k: fn(dt::Leaf) -> Kind) -> DataType {
    DataType {
        kind: Some(k(dt::Leaf::default())),
    }
}

/// Spark's `string` type.
pub fn string_type() -> DataType {
    leaf_type(Kind::String)
}

/// Spark's `int` type.
pub fn int_type() -> DataType {
    leaf_type(Kind::Integer)
}

/// Spark's `bigint` type.
pub fn long_type() -> DataType {
    leaf_type(Kind::Long)
}

/// Spark's `double` type.
pub fn double_type() -> DataType {
    leaf_type(Kind::Double)
}

/// Spark's `boolean` type.
pub fn boolean_type() -> DataType {
    leaf_type(Kind::Boolean)
}

/// A null.
pub fn null() -> Literal {
    lit(L::Null(leaf_type(Kind::Null)))
}

/// A boolean.
pub fn boolean(b: bool) -> Literal {
    lit(L::Boolean(b))
}

/// An int.
pub fn int(i: i32) -> Literal {
    lit(L::Integer(i))
}

/// A bigint.
pub fn long(i: i64) -> Literal {
    lit(L::Long(i))
}

/// A double.
pub fn double(f: f64) -> Literal {
    lit(L::Double(f))
}

/// A string.
pub fn string(s: &str) -> Literal {
    lit(L::String(s.to_string()))
}

/// An array of `element`-typed items.
pub fn array(element: DataType, items: Vec<Literal>) -> Literal {
    lit(L::Array(literal::Array {
        element_type: Some(element),
        elements: items,
    }))
}

/// An array of doubles.
pub fn doubles(values: &[f64]) -> Literal {
    array(double_type(), values.iter().map(|v| double(*v)).collect())
}

/// An array of strings.
pub fn strings<S: AsRef<str>>(values: &[S]) -> Literal {
    array(
        string_type(),
        values.iter().map(|v| string(v.as_ref())).collect(),
    )
}

fn udt(class: &str) -> DataType {
    DataType {
        kind: Some(Kind::Udt(Box::new(dt::Udt {
            r#type: "udt".into(),
            jvm_class: Some(class.into()),
            python_class: None,
            serialized_python_class: None,
            sql_type: None,
        }))),
    }
}

fn specialized_doubles(values: &[f64]) -> Literal {
    lit(L::SpecializedArray(literal::SpecializedArray {
        value_type: Some(specialized_array::ValueType::Doubles(proto::Doubles {
            values: values.to_vec(),
        })),
    }))
}

fn byte(b: i32) -> Literal {
    lit(L::Byte(b))
}

/// A dense vector (`DenseVector` in PySpark).
pub fn vector(values: &[f64]) -> Literal {
    lit(L::Struct(literal::Struct {
        struct_type: Some(udt(VECTOR_UDT)),
        elements: vec![byte(1), null(), null(), specialized_doubles(values)],
    }))
}

/// A dense `rows x cols` matrix from row-major `values` (`DenseMatrix` in PySpark).
pub fn matrix(rows: usize, cols: usize, values: &[f64]) -> Literal {
    lit(L::Struct(literal::Struct {
        struct_type: Some(udt(MATRIX_UDT)),
        elements: vec![
            byte(1),
            int(rows as i32),
            int(cols as i32),
            null(),
            null(),
            specialized_doubles(values),
            // Row-major values are the transpose of Spark's column-major layout.
            boolean(true),
        ],
    }))
}

/// The values of a vector a client sent as a method argument (`DenseVector` or
/// `SparseVector`, as `VectorUDT` struct literals), dense.
pub fn vector_values(l: &Literal) -> Option<Vec<f64>> {
    let Some(L::Struct(s)) = &l.literal_type else {
        return None;
    };
    let is_vector = matches!(
        s.struct_type.as_ref().and_then(|t| t.kind.as_ref()),
        Some(Kind::Udt(u)) if u.jvm_class.as_deref() == Some(VECTOR_UDT)
    );
    let [kind, size, indices, values] = s.elements.as_slice() else {
        return None;
    };
    if !is_vector {
        return None;
    }
    let array = |l: &Literal| {
        l.literal_type.as_ref().and_then(|t| match t {
            L::SpecializedArray(a) => a.value_type.clone(),
            _ => None,
        })
    };
    let values = match array(values)? {
        specialized_array::ValueType::Doubles(d) => d.values,
        _ => return None,
    };
    match kind.literal_type {
        Some(L::Byte(1)) => Some(values),
        Some(L::Byte(0)) => {
            let Some(L::Integer(size)) = size.literal_type else {
                return None;
            };
            let specialized_array::ValueType::Ints(indices) = array(indices)? else {
                return None;
            };
            let mut dense = vec![0.0; usize::try_from(size).ok()?];
            for (i, v) in indices.values.iter().zip(values) {
                *dense.get_mut(usize::try_from(*i).ok()?)? = v;
            }
            Some(dense)
        }
        _ => None,
    }
}
