//! Types between Arrow and Spark: Arrow schemas as Spark `DataType`s, Spark type names, DDL
//! strings and JSON schemas as Arrow types, and result batches in the Arrow types a Spark
//! client reads.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

use super::error::{ConnectError, ConnectResult};
use super::proto::data_type::{self as dt, Kind};
use super::proto::DataType as SparkType;

fn leaf() -> dt::Leaf {
    dt::Leaf::default()
}

fn kind(kind: Kind) -> SparkType {
    SparkType { kind: Some(kind) }
}

/// The Arrow type a Spark client is sent for `t`: the types Spark itself produces (no
/// unsigned integers, views, dictionaries or nanosecond timestamps).
pub fn client_type(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary | DataType::FixedSizeBinary(_) => {
            DataType::Binary
        }
        DataType::UInt8 => DataType::Int16,
        DataType::UInt16 => DataType::Int32,
        DataType::UInt32 | DataType::UInt64 => DataType::Int64,
        DataType::Float16 => DataType::Float32,
        DataType::Date64 => DataType::Date32,
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        DataType::Dictionary(_, value) => client_type(value),
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) => DataType::Decimal128(*p, *s),
        DataType::Decimal256(p, s) if *p <= 38 => DataType::Decimal128(*p, *s),
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _) => DataType::List(Arc::new(client_field(f))),
        DataType::Struct(fields) => {
            DataType::Struct(fields.iter().map(|f| client_field(f)).collect::<Fields>())
        }
        DataType::Map(entries, sorted) => DataType::Map(Arc::new(client_field(entries)), *sorted),
        DataType::Null
        | DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::Float32
        | DataType::Float64
        | DataType::Utf8
        | DataType::Binary
        | DataType::Date32
        | DataType::Decimal128(_, _)
        | DataType::Interval(_) => t.clone(),
        // Times, durations, unions, run-end encoding: Spark has no such type; clients
        // get their text.
        _ => DataType::Utf8,
    }
}

fn client_field(f: &Field) -> Field {
    Field::new(f.name(), client_type(f.data_type()), f.is_nullable())
}

/// `schema` with every column in its [`client_type`]; a column of mllib vectors becomes
/// Spark's `VectorUDT` storage struct, marked as such.
pub fn client_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                if is_vector(f.data_type()) {
                    vector_field(f.name(), f.is_nullable())
                } else {
                    client_field(f)
                }
            })
            .collect::<Fields>(),
    ))
}

/// The Spark class of mllib's vectors on the wire.
pub const VECTOR_UDT: &str = "org.apache.spark.ml.linalg.VectorUDT";
/// The Python class of mllib's vectors on the wire.
const VECTOR_UDT_PYTHON: &str = "pyspark.ml.linalg.VectorUDT";
/// Field metadata key marking a column sent as a user-defined type.
const UDT_KEY: &str = "ember.udt";

/// Whether `t` is an mllib vector column (a fixed-size list of floats).
pub fn is_vector(t: &DataType) -> bool {
    matches!(t, DataType::FixedSizeList(item, _)
        if matches!(item.data_type(), DataType::Float32 | DataType::Float64))
}

/// The storage of Spark's `VectorUDT`: `type` (0 sparse, 1 dense), `size` and `indices`
/// (sparse only), `values`.
pub fn vector_storage_type() -> DataType {
    DataType::Struct(Fields::from(vec![
        Field::new("type", DataType::Int8, false),
        Field::new("size", DataType::Int32, true),
        Field::new(
            "indices",
            DataType::List(Arc::new(Field::new("element", DataType::Int32, false))),
            true,
        ),
        Field::new(
            "values",
            DataType::List(Arc::new(Field::new("element", DataType::Float64, false))),
            true,
        ),
    ]))
}

fn vector_field(name: &str, nullable: bool) -> Field {
    Field::new(name, vector_storage_type(), nullable).with_metadata(
        [(UDT_KEY.to_string(), VECTOR_UDT.to_string())]
            .into_iter()
            .collect(),
    )
}

/// Spark's `VectorUDT` type.
fn vector_udt() -> SparkType {
    kind(Kind::Udt(Box::new(dt::Udt {
        r#type: "udt".into(),
        jvm_class: Some(VECTOR_UDT.into()),
        python_class: Some(VECTOR_UDT_PYTHON.into()),
        serialized_python_class: None,
        sql_type: Some(Box::new(spark_type(&vector_storage_type()))),
    })))
}

/// An mllib vector column as dense `VectorUDT` values.
fn vectors_to_storage(array: &ArrayRef) -> ConnectResult<ArrayRef> {
    use arrow::array::{Array, AsArray, Int8Array, ListArray, StructArray};
    use arrow::buffer::OffsetBuffer;
    let list = array.as_fixed_size_list();
    let n = list.len();
    let d = list.value_length().max(0) as usize;
    let start = list.offset() * d;
    let values = arrow::compute::cast(&list.values().slice(start, n * d), &DataType::Float64)
        .map_err(|e| ConnectError::internal(format!("vector values: {e}")))?;
    let DataType::Struct(fields) = vector_storage_type() else {
        unreachable!("the vector storage type is a struct")
    };
    let values_field = Arc::new(Field::new("element", DataType::Float64, false));
    let values = ListArray::try_new(
        values_field,
        OffsetBuffer::from_lengths(std::iter::repeat_n(d, n)),
        values,
        None,
    )
    .map_err(|e| ConnectError::internal(format!("vector values: {e}")))?;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int8Array::from(vec![1i8; n])),
        arrow::array::new_null_array(&DataType::Int32, n),
        arrow::array::new_null_array(fields[2].data_type(), n),
        Arc::new(values),
    ];
    let s = StructArray::try_new(fields, columns, list.nulls().cloned())
        .map_err(|e| ConnectError::internal(format!("vector column: {e}")))?;
    Ok(Arc::new(s))
}

/// A column of `VectorUDT` values sent by a client (dense or sparse) as an mllib vector
/// column; every vector must have the same size.
pub fn storage_to_vectors(name: &str, array: &ArrayRef) -> ConnectResult<ArrayRef> {
    use arrow::array::{Array, AsArray, FixedSizeListArray, Float32Array};
    let s = array.as_struct();
    let bad = |what: String| {
        ConnectError::analysis("DATATYPE_MISMATCH", format!("column `{name}`: {what}"))
    };
    let kinds =
        arrow::compute::cast(s.column(0), &DataType::Int8).map_err(|e| bad(e.to_string()))?;
    let kinds = kinds.as_primitive::<arrow::datatypes::Int8Type>();
    let sizes =
        arrow::compute::cast(s.column(1), &DataType::Int32).map_err(|e| bad(e.to_string()))?;
    let sizes = sizes.as_primitive::<arrow::datatypes::Int32Type>();
    let index_type = DataType::List(Arc::new(Field::new("element", DataType::Int32, true)));
    let value_type = DataType::List(Arc::new(Field::new("element", DataType::Float64, true)));
    let indices = arrow::compute::cast(s.column(2), &index_type).map_err(|e| bad(e.to_string()))?;
    let indices = indices.as_list::<i32>();
    let values = arrow::compute::cast(s.column(3), &value_type).map_err(|e| bad(e.to_string()))?;
    let values = values.as_list::<i32>();
    let mut dimension: Option<usize> = None;
    let mut out: Vec<f32> = Vec::new();
    for row in 0..s.len() {
        if s.is_null(row) {
            continue;
        }
        let v = values.value(row);
        let v = v.as_primitive::<arrow::datatypes::Float64Type>();
        let (size, dense) = match kinds.value(row) {
            1 => (
                v.len(),
                v.values().iter().map(|x| *x as f32).collect::<Vec<_>>(),
            ),
            0 => {
                let size = if sizes.is_null(row) {
                    return Err(bad(format!("row {row}: a sparse vector without a size")));
                } else {
                    sizes.value(row).max(0) as usize
                };
                let mut dense = vec![0f32; size];
                let idx = indices.value(row);
                let idx = idx.as_primitive::<arrow::datatypes::Int32Type>();
                if idx.len() != v.len() {
                    return Err(bad(format!(
                        "row {row}: a sparse vector with {} indices and {} values",
                        idx.len(),
                        v.len()
                    )));
                }
                for (i, x) in idx.values().iter().zip(v.values()) {
                    let slot = usize::try_from(*i)
                        .ok()
                        .filter(|i| *i < size)
                        .ok_or_else(|| bad(format!("row {row}: index {i} outside size {size}")))?;
                    dense[slot] = *x as f32;
                }
                (size, dense)
            }
            other => return Err(bad(format!("row {row}: unknown vector type {other}"))),
        };
        match dimension {
            None => dimension = Some(size),
            Some(d) if d != size => {
                return Err(bad(format!(
                    "vectors of different sizes ({d} and {size}, row {row}); Ember's vector \
                     columns have one size"
                )))
            }
            Some(_) => {}
        }
        out.extend(dense);
    }
    let d = dimension.unwrap_or(0);
    // Null rows take a slot of zeros.
    if s.null_count() > 0 {
        let mut full = Vec::with_capacity(s.len() * d);
        let mut next = out.chunks(d.max(1));
        for row in 0..s.len() {
            if s.is_null(row) || d == 0 {
                full.extend(std::iter::repeat_n(0f32, d));
            } else if let Some(chunk) = next.next() {
                full.extend_from_slice(chunk);
            }
        }
        out = full;
    }
    let list = FixedSizeListArray::try_new(
        Arc::new(Field::new("item", DataType::Float32, false)),
        d as i32,
        Arc::new(Float32Array::from(out)),
        s.nulls().cloned(),
    )
    .map_err(|e| bad(e.to_string()))?;
    Ok(Arc::new(list))
}

/// `batch` cast to `schema` (from [`client_schema`] of its own schema).
pub fn to_client_batch(batch: &RecordBatch, schema: &SchemaRef) -> ConnectResult<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(Arc::clone(c))
            } else if is_vector(c.data_type()) {
                vectors_to_storage(c)
            } else {
                arrow::compute::cast(c, f.data_type()).map_err(|e| {
                    ConnectError::internal(format!("converting a result for the client: {e}"))
                })
            }
        })
        .collect::<ConnectResult<Vec<ArrayRef>>>()?;
    RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
    .map_err(|e| ConnectError::internal(format!("converting a result for the client: {e}")))
}

/// A schema as the Spark struct type clients read.
pub fn spark_schema(schema: &Schema) -> SparkType {
    kind(Kind::Struct(dt::Struct {
        fields: schema
            .fields()
            .iter()
            .map(|f| dt::StructField {
                name: f.name().clone(),
                data_type: Some(
                    if is_vector(f.data_type())
                        || f.metadata().get(UDT_KEY).map(String::as_str) == Some(VECTOR_UDT)
                    {
                        vector_udt()
                    } else {
                        spark_type(f.data_type())
                    },
                ),
                nullable: f.is_nullable(),
                metadata: None,
            })
            .collect(),
        type_variation_reference: 0,
    }))
}

/// The Spark type of an Arrow type (after [`client_type`]).
pub fn spark_type(t: &DataType) -> SparkType {
    match client_type(t) {
        DataType::Null => kind(Kind::Null(leaf())),
        DataType::Boolean => kind(Kind::Boolean(leaf())),
        DataType::Int8 => kind(Kind::Byte(leaf())),
        DataType::Int16 => kind(Kind::Short(leaf())),
        DataType::Int32 => kind(Kind::Integer(leaf())),
        DataType::Int64 => kind(Kind::Long(leaf())),
        DataType::Float32 => kind(Kind::Float(leaf())),
        DataType::Float64 => kind(Kind::Double(leaf())),
        DataType::Binary => kind(Kind::Binary(leaf())),
        DataType::Date32 => kind(Kind::Date(leaf())),
        DataType::Timestamp(_, Some(_)) => kind(Kind::Timestamp(leaf())),
        DataType::Timestamp(_, None) => kind(Kind::TimestampNtz(leaf())),
        DataType::Decimal128(p, s) => kind(Kind::Decimal(dt::Decimal {
            scale: Some(i32::from(s)),
            precision: Some(i32::from(p)),
            type_variation_reference: 0,
        })),
        DataType::Interval(arrow::datatypes::IntervalUnit::YearMonth) => {
            kind(Kind::YearMonthInterval(dt::Interval {
                start_field: Some(0),
                end_field: Some(1),
                type_variation_reference: 0,
            }))
        }
        DataType::Interval(_) => kind(Kind::CalendarInterval(leaf())),
        DataType::List(f) => kind(Kind::Array(Box::new(dt::Array {
            element_type: Some(Box::new(spark_type(f.data_type()))),
            contains_null: f.is_nullable(),
            type_variation_reference: 0,
        }))),
        DataType::Struct(fields) => spark_schema(&Schema::new(fields)),
        DataType::Map(entries, _) => {
            let (key, value) = match entries.data_type() {
                DataType::Struct(kv) if kv.len() == 2 => (kv[0].clone(), kv[1].clone()),
                _ => return kind(Kind::String(leaf())),
            };
            kind(Kind::Map(Box::new(dt::Map {
                key_type: Some(Box::new(spark_type(key.data_type()))),
                value_type: Some(Box::new(spark_type(value.data_type()))),
                value_contains_null: value.is_nullable(),
                type_variation_reference: 0,
            })))
        }
        _ => kind(Kind::String(leaf())),
    }
}

/// The Arrow type of a Spark type sent by a client (a cast target, a typed null, a schema).
pub fn arrow_type(t: &SparkType) -> ConnectResult<DataType> {
    let Some(k) = &t.kind else {
        return Err(ConnectError::invalid("a data type without a kind"));
    };
    Ok(match k {
        Kind::Null(_) => DataType::Null,
        Kind::Binary(_) => DataType::Binary,
        Kind::Boolean(_) => DataType::Boolean,
        Kind::Byte(_) => DataType::Int8,
        Kind::Short(_) => DataType::Int16,
        Kind::Integer(_) => DataType::Int32,
        Kind::Long(_) => DataType::Int64,
        Kind::Float(_) => DataType::Float32,
        Kind::Double(_) => DataType::Float64,
        Kind::Decimal(d) => decimal(d.precision.unwrap_or(10), d.scale.unwrap_or(0))?,
        Kind::String(_) | Kind::Char(_) | Kind::VarChar(_) => DataType::Utf8,
        Kind::Date(_) => DataType::Date32,
        Kind::Timestamp(_) => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        Kind::TimestampNtz(_) => DataType::Timestamp(TimeUnit::Microsecond, None),
        Kind::CalendarInterval(_) | Kind::DayTimeInterval(_) => {
            DataType::Interval(arrow::datatypes::IntervalUnit::MonthDayNano)
        }
        Kind::YearMonthInterval(_) => DataType::Interval(arrow::datatypes::IntervalUnit::YearMonth),
        Kind::Array(a) => {
            let element = a
                .element_type
                .as_deref()
                .ok_or_else(|| ConnectError::invalid("an array type without an element type"))?;
            DataType::List(Arc::new(Field::new(
                "element",
                arrow_type(element)?,
                a.contains_null,
            )))
        }
        Kind::Struct(s) => DataType::Struct(
            s.fields
                .iter()
                .map(|f| {
                    let t = f.data_type.as_ref().ok_or_else(|| {
                        ConnectError::invalid(format!("struct field {} has no type", f.name))
                    })?;
                    Ok(Field::new(&f.name, arrow_type(t)?, f.nullable))
                })
                .collect::<ConnectResult<Fields>>()?,
        ),
        Kind::Map(m) => {
            let (Some(k), Some(v)) = (m.key_type.as_deref(), m.value_type.as_deref()) else {
                return Err(ConnectError::invalid(
                    "a map type without key or value type",
                ));
            };
            map_type(arrow_type(k)?, arrow_type(v)?, m.value_contains_null)
        }
        Kind::Unparsed(u) => parse_type(&u.data_type_string)?,
        Kind::Udt(u) if u.jvm_class.as_deref() == Some(VECTOR_UDT) => vector_storage_type(),
        Kind::Udt(u) => {
            return Err(ConnectError::unimplemented(format!(
                "user-defined type {}",
                u.jvm_class.as_deref().unwrap_or("(unnamed)")
            )))
        }
        Kind::Variant(_) => return Err(ConnectError::unimplemented("VARIANT type")),
        Kind::Geometry(_) => return Err(ConnectError::unimplemented("GEOMETRY type")),
        Kind::Geography(_) => return Err(ConnectError::unimplemented("GEOGRAPHY type")),
        Kind::Time(_) => return Err(ConnectError::unimplemented("TIME type")),
    })
}

fn decimal(precision: i32, scale: i32) -> ConnectResult<DataType> {
    let p = u8::try_from(precision)
        .ok()
        .filter(|p| (1..=38).contains(p))
        .ok_or_else(|| ConnectError::invalid(format!("decimal precision {precision}")))?;
    let s = i8::try_from(scale)
        .ok()
        .filter(|s| *s >= 0 && (*s as u8) <= p)
        .ok_or_else(|| ConnectError::invalid(format!("decimal scale {scale}")))?;
    Ok(DataType::Decimal128(p, s))
}

fn map_type(key: DataType, value: DataType, value_nullable: bool) -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![
                Field::new("key", key, false),
                Field::new("value", value, value_nullable),
            ])),
            false,
        )),
        false,
    )
}

/// A Spark type name (`int`, `bigint`, `decimal(10,2)`, `array<string>`, ...).
pub fn parse_type(text: &str) -> ConnectResult<DataType> {
    let mut p = TypeParser::new(text);
    let t = p.data_type()?;
    p.end()?;
    Ok(t)
}

/// A schema given as a DDL string (`a INT, b STRING`), a Spark JSON schema, or a single
/// type name (which Spark names `value`).
pub fn parse_schema(text: &str) -> ConnectResult<Schema> {
    let trimmed = text.trim();
    if trimmed.starts_with('{') {
        let json: serde_json::Value = serde_json::from_str(trimmed)
            .map_err(|e| ConnectError::parse(format!("schema JSON: {e}")))?;
        return match json_type(&json)? {
            DataType::Struct(fields) => Ok(Schema::new(fields)),
            other => Ok(Schema::new(vec![Field::new("value", other, true)])),
        };
    }
    let mut p = TypeParser::new(trimmed);
    if let Some(t) = p.try_whole_type() {
        return Ok(match t {
            DataType::Struct(fields) => Schema::new(fields),
            other => Schema::new(vec![Field::new("value", other, true)]),
        });
    }
    let mut p = TypeParser::new(trimmed);
    let fields = p.fields(None)?;
    p.end()?;
    Ok(Schema::new(fields))
}

/// A type in Spark's JSON form (`"long"`, `{"type": "array", ...}`).
fn json_type(v: &serde_json::Value) -> ConnectResult<DataType> {
    use serde_json::Value;
    match v {
        Value::String(name) => parse_type(name),
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("struct") => {
                let fields = o
                    .get("fields")
                    .and_then(Value::as_array)
                    .ok_or_else(|| ConnectError::parse("struct schema without fields"))?;
                Ok(DataType::Struct(
                    fields
                        .iter()
                        .map(|f| {
                            let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
                            let t = f
                                .get("type")
                                .ok_or_else(|| ConnectError::parse("field without type"))?;
                            let nullable =
                                f.get("nullable").and_then(Value::as_bool).unwrap_or(true);
                            Ok(Field::new(name, json_type(t)?, nullable))
                        })
                        .collect::<ConnectResult<Fields>>()?,
                ))
            }
            Some("array") => {
                let element = o
                    .get("elementType")
                    .ok_or_else(|| ConnectError::parse("array without elementType"))?;
                let nullable = o
                    .get("containsNull")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                Ok(DataType::List(Arc::new(Field::new(
                    "element",
                    json_type(element)?,
                    nullable,
                ))))
            }
            Some("map") => {
                let (Some(k), Some(v)) = (o.get("keyType"), o.get("valueType")) else {
                    return Err(ConnectError::parse("map without keyType or valueType"));
                };
                let nullable = o
                    .get("valueContainsNull")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                Ok(map_type(json_type(k)?, json_type(v)?, nullable))
            }
            // mllib vectors arrive in their storage struct; the planner turns them into
            // Ember's vector columns.
            Some("udt") if o.get("class").and_then(Value::as_str) == Some(VECTOR_UDT) => {
                Ok(vector_storage_type())
            }
            Some("udt") => Err(ConnectError::unimplemented(format!(
                "user-defined type {}",
                o.get("class")
                    .and_then(Value::as_str)
                    .unwrap_or("(unnamed)")
            ))),
            other => Err(ConnectError::parse(format!("unknown JSON type {other:?}"))),
        },
        other => Err(ConnectError::parse(format!("unknown JSON type {other}"))),
    }
}

/// A small recursive-descent parser for Spark type names and DDL field lists.
struct TypeParser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> TypeParser<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.text[self.pos..]
            .chars()
            .next()
            .filter(|c| c.is_whitespace())
        {
            self.pos += c.len_utf8();
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.text[self.pos..].chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> ConnectResult<()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error(&format!("expected '{c}'")))
        }
    }

    fn error(&self, what: &str) -> ConnectError {
        ConnectError::parse(format!(
            "{what} at position {} of the type string \"{}\"",
            self.pos, self.text
        ))
    }

    fn end(&mut self) -> ConnectResult<()> {
        self.skip_ws();
        if self.pos == self.text.len() {
            Ok(())
        } else {
            Err(self.error("unexpected text"))
        }
    }

    fn ident(&mut self) -> ConnectResult<String> {
        self.skip_ws();
        let rest = &self.text[self.pos..];
        if let Some(quoted) = rest.strip_prefix('`') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            while let Some((i, c)) = chars.next() {
                if c == '`' {
                    if quoted[i + 1..].starts_with('`') {
                        out.push('`');
                        chars.next();
                        continue;
                    }
                    self.pos += i + 2;
                    return Ok(out);
                }
                out.push(c);
            }
            return Err(self.error("unterminated quoted name"));
        }
        let len = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if len == 0 {
            return Err(self.error("expected a name"));
        }
        self.pos += len;
        Ok(rest[..len].to_string())
    }

    fn number(&mut self) -> ConnectResult<i32> {
        self.skip_ws();
        let rest = &self.text[self.pos..];
        let len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n = rest[..len]
            .parse()
            .map_err(|_| self.error("expected a number"))?;
        self.pos += len;
        Ok(n)
    }

    /// The whole text as one type, if it is one.
    fn try_whole_type(&mut self) -> Option<DataType> {
        let t = self.data_type().ok()?;
        self.end().ok()?;
        Some(t)
    }

    /// `name [:] type [NOT NULL] [COMMENT '...'], ...` up to `close` (or the end).
    fn fields(&mut self, close: Option<char>) -> ConnectResult<Fields> {
        let mut fields = Vec::new();
        loop {
            if close.is_some_and(|c| self.peek() == Some(c)) || self.peek().is_none() {
                break;
            }
            let name = self.ident()?;
            self.eat(':');
            let t = self.data_type()?;
            let mut nullable = true;
            let save = self.pos;
            if let Ok(word) = self.ident() {
                if word.eq_ignore_ascii_case("not") && self.ident().is_ok() {
                    nullable = false;
                } else if word.eq_ignore_ascii_case("comment") {
                    self.skip_ws();
                    let rest = &self.text[self.pos..];
                    if let Some(q) = rest.chars().next().filter(|c| *c == '\'' || *c == '"') {
                        if let Some(end) = rest[1..].find(q) {
                            self.pos += end + 2;
                        }
                    }
                } else {
                    self.pos = save;
                }
            }
            fields.push(Field::new(name, t, nullable));
            if !self.eat(',') {
                break;
            }
        }
        Ok(Fields::from(fields))
    }

    fn data_type(&mut self) -> ConnectResult<DataType> {
        let name = self.ident()?.to_ascii_lowercase();
        Ok(match name.as_str() {
            "boolean" | "bool" => DataType::Boolean,
            "byte" | "tinyint" => DataType::Int8,
            "short" | "smallint" => DataType::Int16,
            "int" | "integer" => DataType::Int32,
            "long" | "bigint" => DataType::Int64,
            "float" | "real" => DataType::Float32,
            "double" => DataType::Float64,
            "string" | "text" => DataType::Utf8,
            "char" | "varchar" => {
                if self.eat('(') {
                    self.number()?;
                    self.expect(')')?;
                }
                DataType::Utf8
            }
            "binary" => DataType::Binary,
            "date" => DataType::Date32,
            "timestamp" | "timestamp_ltz" => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
            "timestamp_ntz" => DataType::Timestamp(TimeUnit::Microsecond, None),
            "void" | "null" => DataType::Null,
            "decimal" | "dec" | "numeric" => {
                if self.eat('(') {
                    let p = self.number()?;
                    let s = if self.eat(',') { self.number()? } else { 0 };
                    self.expect(')')?;
                    decimal(p, s)?
                } else {
                    DataType::Decimal128(10, 0)
                }
            }
            "array" => {
                self.expect('<')?;
                let element = self.data_type()?;
                self.expect('>')?;
                DataType::List(Arc::new(Field::new("element", element, true)))
            }
            "map" => {
                self.expect('<')?;
                let k = self.data_type()?;
                self.expect(',')?;
                let v = self.data_type()?;
                self.expect('>')?;
                map_type(k, v, true)
            }
            "struct" => {
                self.expect('<')?;
                let fields = self.fields(Some('>'))?;
                self.expect('>')?;
                DataType::Struct(fields)
            }
            other => {
                return Err(ConnectError::parse(format!(
                    "[UNSUPPORTED_DATATYPE] unsupported data type \"{other}\" in \"{}\"",
                    self.text
                )))
            }
        })
    }
}

/// Spark's SQL name of a type (`bigint`, `decimal(10,2)`, `array<string>`), as
/// `printSchema`, `describe` and `dtypes` print it.
pub fn simple_string(t: &DataType) -> String {
    match client_type(t) {
        DataType::Null => "void".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "tinyint".into(),
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "int".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Utf8 => "string".into(),
        DataType::Binary => "binary".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(_, Some(_)) => "timestamp".into(),
        DataType::Timestamp(_, None) => "timestamp_ntz".into(),
        DataType::Decimal128(p, s) => format!("decimal({p},{s})"),
        DataType::List(f) => format!("array<{}>", simple_string(f.data_type())),
        DataType::Struct(fields) => format!(
            "struct<{}>",
            fields
                .iter()
                .map(|f| format!("{}:{}", f.name(), simple_string(f.data_type())))
                .collect::<Vec<_>>()
                .join(",")
        ),
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => format!(
                "map<{},{}>",
                simple_string(kv[0].data_type()),
                simple_string(kv[1].data_type())
            ),
            _ => "map".into(),
        },
        DataType::Interval(_) => "interval".into(),
        other => other.to_string().to_ascii_lowercase(),
    }
}

/// Spark's `printSchema` text of `schema` (`root` and one ` |-- name: type (nullable =
/// true)` line per field, nested fields indented), down to `level` levels if given.
pub fn tree_string(schema: &Schema, level: Option<i32>) -> String {
    fn walk(out: &mut String, fields: &Fields, depth: usize, max: Option<usize>) {
        if max.is_some_and(|m| depth > m) {
            return;
        }
        for f in fields {
            let prefix = " |   ".repeat(depth - 1);
            let (name, nested) = match client_type(f.data_type()) {
                DataType::Struct(inner) => ("struct".to_string(), Some(inner)),
                DataType::List(e) => (
                    "array".to_string(),
                    match e.data_type() {
                        DataType::Struct(inner) => Some(inner.clone()),
                        _ => None,
                    },
                ),
                DataType::Map(_, _) => ("map".to_string(), None),
                other => (simple_string(&other), None),
            };
            out.push_str(&format!(
                "{prefix} |-- {}: {name} (nullable = {})\n",
                f.name(),
                f.is_nullable()
            ));
            if let Some(inner) = nested {
                walk(out, &inner, depth + 1, max);
            }
        }
    }
    let mut out = String::from("root\n");
    let max = level.filter(|l| *l > 0).map(|l| l as usize);
    walk(&mut out, schema.fields(), 1, max);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_and_json_schemas_parse_to_the_same_arrow_schema() {
        let ddl = parse_schema("id BIGINT NOT NULL, name string, price decimal(10, 2)").unwrap();
        let json = parse_schema(
            r#"{"type":"struct","fields":[
                {"name":"id","type":"long","nullable":false,"metadata":{}},
                {"name":"name","type":"string","nullable":true,"metadata":{}},
                {"name":"price","type":"decimal(10,2)","nullable":true,"metadata":{}}]}"#,
        )
        .unwrap();
        assert_eq!(ddl, json);
        assert_eq!(ddl.field(2).data_type(), &DataType::Decimal128(10, 2));
        assert!(!ddl.field(0).is_nullable());
    }

    #[test]
    fn nested_types_round_trip_through_spark_types() {
        let t = parse_type("array<struct<a: int, b: map<string, double>>>").unwrap();
        let back = arrow_type(&spark_type(&t)).unwrap();
        assert_eq!(simple_string(&back), simple_string(&t));
        assert_eq!(
            simple_string(&t),
            "array<struct<a:int,b:map<string,double>>>"
        );
    }

    #[test]
    fn any_text_gives_a_type_or_an_error() {
        for text in [
            "a\u{a0}int",
            "\u{3000}",
            "`é`",
            "map<",
            "struct<a:int",
            "décimal(1)",
        ] {
            let _ = parse_schema(text);
            let _ = parse_type(text);
        }
        assert!(parse_schema("a\u{a0}int").is_ok());
    }

    #[test]
    fn a_bad_type_string_names_the_type() {
        let e = parse_type("array<intt>").unwrap_err().to_string();
        assert!(e.contains("intt"), "{e}");
        assert!(parse_schema("a int,, b").is_err());
    }

    #[test]
    fn client_types_are_the_ones_spark_sends() {
        let t = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8View));
        assert_eq!(client_type(&t), DataType::Utf8);
        assert_eq!(
            client_type(&DataType::Timestamp(TimeUnit::Nanosecond, None)),
            DataType::Timestamp(TimeUnit::Microsecond, None)
        );
        let schema = Schema::new(vec![Field::new("s", DataType::Utf8View, true)]);
        assert_eq!(
            tree_string(&schema, None),
            "root\n |-- s: string (nullable = true)\n"
        );
    }
}
