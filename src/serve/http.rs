//! `ember serve`'s HTTP API: the Open Inference Protocol v2 over REST (`/v2/...`),
//! TensorFlow Serving's REST API (`/v1/models/...`), and `/metrics`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::Array;
use arrow::datatypes::{DataType, Field, SchemaRef};
use arrow::record_batch::RecordBatch;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::error::ApiError;
use super::json::{self, batch_from_columns, check_names, columns_from_rows};
use super::metrics::Metrics;
use super::repo::{Model, Version};

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The served models by name.
    pub models: BTreeMap<String, Arc<Model>>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
}

type Shared = State<Arc<AppState>>;

/// The routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(v2_metadata))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(v2_version_metadata),
        )
        .route("/v2/models/{name}/ready", get(v2_ready))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(v2_version_ready),
        )
        .route("/v2/models/{name}/infer", axum::routing::post(v2_infer))
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            axum::routing::post(v2_version_infer),
        )
        .route("/v1/models/{*rest}", get(v1_get).post(v1_post))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

/// A JSON response.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

fn ok(body: Value) -> Response {
    json_response(StatusCode::OK, &body)
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {method} {}", uri.path()))
}

async fn server_metadata() -> Response {
    ok(json!({
        "name": "ember",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": [],
    }))
}

async fn live() -> Response {
    ok(json!({ "live": true }))
}

async fn ready(State(state): Shared) -> Response {
    let ready = state.models.values().all(|m| m.latest().is_some());
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &json!({ "ready": ready }))
}

async fn metrics(State(state): Shared) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

impl AppState {
    fn model(&self, name: &str) -> Result<&Arc<Model>, ApiError> {
        self.models.get(name).ok_or_else(|| {
            ApiError::not_found(format!(
                "no model '{name}' (serving: {})",
                self.models.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// The model and the version asked for (the newest when none is).
    fn resolve(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<(Arc<Model>, Arc<Version>), ApiError> {
        let model = self.model(name)?;
        let loaded = || {
            model
                .versions()
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let version = match version {
            None => model.latest().ok_or_else(|| {
                ApiError::not_found(format!("model '{name}' has no loaded version"))
            })?,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .and_then(|n| model.version(n))
                .ok_or_else(|| {
                    ApiError::not_found(format!(
                        "model '{name}' has no version '{v}' (loaded: {})",
                        loaded()
                    ))
                })?,
        };
        Ok((Arc::clone(model), version))
    }
}

/// The Open Inference Protocol's name of an Arrow type (of a vector's items for vectors).
fn tensor_type(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::FixedSizeList(item, _) => tensor_type(item.data_type()),
        DataType::Float64 => "FP64",
        DataType::Float32 => "FP32",
        DataType::Float16 => "FP16",
        DataType::Int64 => "INT64",
        DataType::Int32 => "INT32",
        DataType::Int16 => "INT16",
        DataType::Int8 => "INT8",
        DataType::UInt64 => "UINT64",
        DataType::UInt32 => "UINT32",
        DataType::UInt16 => "UINT16",
        DataType::UInt8 => "UINT8",
        DataType::Boolean => "BOOL",
        _ => "BYTES",
    }
}

/// A tensor's shape for `rows` rows of a column of `field` (-1 for "any number").
fn tensor_shape(field: &Field, rows: i64) -> Vec<i64> {
    match field.data_type() {
        DataType::FixedSizeList(_, d) => vec![rows, i64::from(*d)],
        _ => vec![rows],
    }
}

fn tensor_specs(schema: &SchemaRef) -> Value {
    Value::Array(
        schema
            .fields()
            .iter()
            .map(|f| {
                json!({
                    "name": f.name(),
                    "datatype": tensor_type(f.data_type()),
                    "shape": tensor_shape(f, -1),
                })
            })
            .collect(),
    )
}

fn model_metadata(model: &Model, version: &Version) -> Value {
    json!({
        "name": model.name,
        "versions": model.versions().iter().map(u64::to_string).collect::<Vec<_>>(),
        "platform": "ember",
        "inputs": tensor_specs(version.predictor.inputs()),
        "outputs": tensor_specs(version.predictor.outputs()),
    })
}

async fn v2_metadata(State(state): Shared, Path(name): Path<String>) -> Result<Response, ApiError> {
    let (model, version) = state.resolve(&name, None)?;
    Ok(ok(model_metadata(&model, &version)))
}

async fn v2_version_metadata(
    State(state): Shared,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (model, version) = state.resolve(&name, Some(&version))?;
    Ok(ok(model_metadata(&model, &version)))
}

async fn v2_ready(State(state): Shared, Path(name): Path<String>) -> Result<Response, ApiError> {
    state.resolve(&name, None)?;
    Ok(ok(json!({ "name": name, "ready": true })))
}

async fn v2_version_ready(
    State(state): Shared,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    state.resolve(&name, Some(&version))?;
    Ok(ok(json!({ "name": name, "ready": true })))
}

async fn v2_infer(
    State(state): Shared,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let answer = infer(&state, &name, None, &headers, body).await;
    finish(&state, &name, "v2", started, answer)
}

async fn v2_version_infer(
    State(state): Shared,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let answer = infer(&state, &name, Some(&version), &headers, body).await;
    finish(&state, &name, "v2", started, answer)
}

/// Answers a request and counts it (under the model's name when the model exists).
fn finish(
    state: &AppState,
    name: &str,
    protocol: &str,
    started: Instant,
    answer: Result<Value, ApiError>,
) -> Response {
    let response = match answer {
        Ok(body) => ok(body),
        Err(e) => {
            if e.status.is_server_error() {
                tracing::warn!(model = name, error = %e.message, "request failed");
            } else {
                tracing::debug!(model = name, error = %e.message, "request refused");
            }
            e.into_response()
        }
    };
    let model = if state.models.contains_key(name) {
        name
    } else {
        ""
    };
    state.metrics.request(
        model,
        protocol,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// The request body, at most `max` bytes.
async fn read_body(headers: &HeaderMap, body: Body, max: usize) -> Result<Bytes, ApiError> {
    let too_large = || ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!("request body larger than {max} bytes (ember serve --max-body)"),
        field: None,
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, max).await.map_err(|e| {
        let inner = e.into_inner();
        if inner.is::<http_body_util::LengthLimitError>() {
            too_large()
        } else {
            ApiError::bad_request(format!("cannot read the request body: {inner}"))
        }
    })
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(value)
}

/// An Open Inference Protocol `infer` request: named input tensors (or, as Ember's
/// extension, `rows` of column names to values), answered with one output tensor per
/// output column.
async fn infer(
    state: &AppState,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Value, ApiError> {
    let (model, version) = state.resolve(name, version)?;
    let body = read_body(headers, body, state.max_body).await?;
    let request = parse_json(&body)?;
    let inputs = version.predictor.inputs();
    let batch = match (request.get("inputs"), request.get("rows")) {
        (Some(tensors), None) => batch_from_tensors(inputs, tensors)?,
        (None, Some(Value::Array(rows))) => {
            batch_from_columns(inputs, &columns_from_rows(inputs, rows)?, rows.len())?
        }
        (None, Some(_)) => return Err(ApiError::field("rows", "'rows' must be an array")),
        _ => {
            return Err(ApiError::bad_request(
                "give 'inputs' (a list of named tensors) or 'rows' (a list of objects)",
            ))
        }
    };
    let out = version
        .batcher
        .predict(batch)
        .await
        .map_err(ApiError::from_ml)?;
    let wanted = requested_outputs(&request, version.predictor.outputs())?;
    let rows = out.num_rows() as i64;
    let outputs: Vec<Value> = out
        .schema()
        .fields()
        .iter()
        .zip(out.columns())
        .filter(|(f, _)| wanted.as_ref().is_none_or(|w| w.contains(f.name())))
        .map(|(f, column)| {
            json!({
                "name": f.name(),
                "datatype": tensor_type(f.data_type()),
                "shape": tensor_shape(f, rows),
                "data": json::flat_values(column.as_ref()),
            })
        })
        .collect();
    let mut response = json!({
        "model_name": model.name,
        "model_version": version.number.to_string(),
        "outputs": outputs,
    });
    if let Some(id) = request.get("id") {
        response["id"] = id.clone();
    }
    Ok(response)
}

/// The output names a request asks for (`outputs: [{"name": ...}]`), checked.
fn requested_outputs(
    request: &Value,
    outputs: &SchemaRef,
) -> Result<Option<Vec<String>>, ApiError> {
    let Some(asked) = request.get("outputs") else {
        return Ok(None);
    };
    let Value::Array(asked) = asked else {
        return Err(ApiError::field("outputs", "'outputs' must be a list"));
    };
    let mut names = Vec::with_capacity(asked.len());
    for item in asked {
        let name = item
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::field("outputs", "each of 'outputs' needs a 'name'"))?;
        if outputs.field_with_name(name).is_err() {
            return Err(ApiError::field(
                name,
                format!(
                    "unknown output '{name}' (the model gives {})",
                    json::names(outputs)
                ),
            ));
        }
        names.push(name.to_string());
    }
    Ok(Some(names))
}

/// Whether a tensor of datatype `declared` can fill a column of `data_type`.
fn compatible(declared: &str, data_type: &DataType) -> bool {
    match data_type {
        DataType::FixedSizeList(item, _) => compatible(declared, item.data_type()),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => declared == "BYTES",
        DataType::Boolean => declared == "BOOL",
        t if t.is_numeric() => {
            declared.starts_with("FP")
                || declared.starts_with("INT")
                || declared.starts_with("UINT")
        }
        _ => true,
    }
}

/// Flattens a tensor's (possibly nested, row-major) data.
fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        other => out.push(other),
    }
}

/// A batch from Open Inference Protocol input tensors: one tensor per column, shape `[N]`
/// (or `[N, 1]`) for a scalar column and `[N, d]` for a vector column.
fn batch_from_tensors(schema: &SchemaRef, tensors: &Value) -> Result<RecordBatch, ApiError> {
    let Value::Array(tensors) = tensors else {
        return Err(ApiError::field(
            "inputs",
            "'inputs' must be a list of tensors",
        ));
    };
    let mut by_name: BTreeMap<&str, &Value> = BTreeMap::new();
    for (i, tensor) in tensors.iter().enumerate() {
        let name = tensor
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::field("inputs", format!("input tensor {i} has no 'name'")))?;
        if by_name.insert(name, tensor).is_some() {
            return Err(ApiError::field(name, format!("input '{name}' given twice")));
        }
    }
    check_names(schema, by_name.keys().copied(), "")?;
    let mut rows: Option<(usize, &str)> = None;
    // Scalar columns borrow the request's values; vector columns need one array per row.
    enum ColumnData<'a> {
        Scalars(Vec<&'a Value>),
        Vectors(Vec<Value>),
    }
    let mut data_by_column: Vec<ColumnData<'_>> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let name = field.name().as_str();
        let tensor = by_name.get(name).ok_or_else(|| {
            ApiError::field(
                name,
                format!(
                    "missing input '{name}' (the model needs {})",
                    json::names(schema)
                ),
            )
        })?;
        let shape: Vec<usize> = tensor
            .get("shape")
            .and_then(Value::as_array)
            .and_then(|s| s.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
            .ok_or_else(|| {
                ApiError::field(
                    name,
                    format!("input '{name}' needs a 'shape' of whole numbers"),
                )
            })?;
        let declared = tensor.get("datatype").and_then(Value::as_str).unwrap_or("");
        if !compatible(declared, field.data_type()) {
            return Err(ApiError::field(
                name,
                format!(
                    "input '{name}' has datatype '{declared}'; the model takes {} ({})",
                    tensor_type(field.data_type()),
                    field.data_type()
                ),
            ));
        }
        let mut data = Vec::new();
        flatten(
            tensor
                .get("data")
                .ok_or_else(|| ApiError::field(name, format!("input '{name}' has no 'data'")))?,
            &mut data,
        );
        let n = shape.first().copied().unwrap_or(0);
        let width = match field.data_type() {
            DataType::FixedSizeList(_, d) => *d as usize,
            _ => 1,
        };
        let shape_ok = match field.data_type() {
            DataType::FixedSizeList(..) => shape.len() == 2 && shape[1] == width,
            _ => shape.len() == 1 || (shape.len() == 2 && shape[1] == 1),
        };
        if !shape_ok {
            return Err(ApiError::field(
                name,
                format!(
                    "input '{name}' has shape {shape:?}; the model takes {}",
                    if width > 1 || matches!(field.data_type(), DataType::FixedSizeList(..)) {
                        format!("[N, {width}]")
                    } else {
                        "[N]".to_string()
                    }
                ),
            ));
        }
        if data.len() != n * width {
            return Err(ApiError::field(
                name,
                format!(
                    "input '{name}' has {} values for shape {shape:?}",
                    data.len()
                ),
            ));
        }
        match rows {
            Some((m, other)) if m != n => {
                return Err(ApiError::field(
                    name,
                    format!("input '{name}' has {n} rows but '{other}' has {m}"),
                ))
            }
            _ => rows = Some((n, name)),
        }
        data_by_column.push(
            if matches!(field.data_type(), DataType::FixedSizeList(..)) {
                ColumnData::Vectors(
                    data.chunks(width.max(1))
                        .map(|c| Value::Array(c.iter().map(|v| (*v).clone()).collect()))
                        .collect(),
                )
            } else {
                ColumnData::Scalars(data)
            },
        );
    }
    let columns: Vec<Vec<&Value>> = data_by_column
        .iter()
        .map(|c| match c {
            ColumnData::Scalars(values) => values.clone(),
            ColumnData::Vectors(rows) => rows.iter().collect(),
        })
        .collect();
    batch_from_columns(schema, &columns, rows.map_or(0, |(n, _)| n))
}

/// What a `/v1/models/...` path asks for.
#[derive(Debug, PartialEq, Eq)]
struct V1Path<'a> {
    name: &'a str,
    version: Option<&'a str>,
    /// `predict`, `metadata`, or empty (the model's status).
    verb: &'a str,
}

/// Parses `NAME[/versions/V][:predict | /metadata]`.
fn v1_path(rest: &str) -> Option<V1Path<'_>> {
    let (path, verb) = match rest.rsplit_once(':') {
        Some((path, verb)) => (path, verb),
        None => match rest.strip_suffix("/metadata") {
            Some(path) => (path, "metadata"),
            None => (rest, ""),
        },
    };
    let mut parts = path.split('/');
    let name = parts.next().filter(|n| !n.is_empty())?;
    let version = match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) => None,
        (Some("versions"), Some(v), None) if !v.is_empty() => Some(v),
        _ => return None,
    };
    Some(V1Path {
        name,
        version,
        verb,
    })
}

async fn v1_get(State(state): Shared, Path(rest): Path<String>) -> Result<Response, ApiError> {
    let path = v1_path(&rest)
        .ok_or_else(|| ApiError::not_found(format!("no route GET /v1/models/{rest}")))?;
    match path.verb {
        "" => {
            let model = state.model(path.name)?;
            if let Some(v) = path.version {
                state.resolve(path.name, Some(v))?;
            }
            let mut statuses: Vec<(u64, Value)> = model
                .versions()
                .into_iter()
                .filter(|v| path.version.is_none_or(|p| p == v.to_string()))
                .map(|v| {
                    (
                        v,
                        json!({
                            "version": v.to_string(),
                            "state": "AVAILABLE",
                            "status": { "error_code": "OK", "error_message": "" },
                        }),
                    )
                })
                .collect();
            if path.version.is_none() {
                statuses.extend(model.failures().into_iter().map(|(v, f)| {
                    (
                        v,
                        json!({
                            "version": v.to_string(),
                            "state": "END",
                            "status": { "error_code": "UNKNOWN", "error_message": f.error },
                        }),
                    )
                }));
            }
            statuses.sort_by_key(|(v, _)| std::cmp::Reverse(*v));
            Ok(ok(json!({
                "model_version_status": statuses.into_iter().map(|(_, s)| s).collect::<Vec<_>>(),
            })))
        }
        "metadata" => {
            let (model, version) = state.resolve(path.name, path.version)?;
            Ok(ok(json!({
                "model_spec": { "name": model.name, "version": version.number.to_string() },
                "metadata": {
                    "inputs": tensor_specs(version.predictor.inputs()),
                    "outputs": tensor_specs(version.predictor.outputs()),
                },
            })))
        }
        other => Err(ApiError::not_found(format!(
            "no route GET /v1/models/{rest} (':{other}' is answered to POST)"
        ))),
    }
}

async fn v1_post(
    State(state): Shared,
    Path(rest): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let Some(path) = v1_path(&rest).filter(|p| p.verb == "predict") else {
        return ApiError::not_found(format!(
            "no route POST /v1/models/{rest} (predictions are POST /v1/models/NAME:predict)"
        ))
        .into_response();
    };
    let answer = predict_v1(&state, &path, &headers, body).await;
    finish(&state, path.name, "v1", started, answer)
}

/// TensorFlow Serving's `:predict`: `instances` (a list of objects of column names to
/// values, answered with `predictions`, one object per row) or `inputs` (an object of
/// column names to lists, answered with `outputs`, one list per output column). A model
/// with one output column answers bare values, as TensorFlow Serving does.
async fn predict_v1(
    state: &AppState,
    path: &V1Path<'_>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Value, ApiError> {
    let (_, version) = state.resolve(path.name, path.version)?;
    let body = read_body(headers, body, state.max_body).await?;
    let request = parse_json(&body)?;
    let inputs = version.predictor.inputs();
    let single_input = inputs.fields().len() == 1;
    let (batch, rows_form) = match (request.get("instances"), request.get("inputs")) {
        (Some(Value::Array(instances)), None) | (None, Some(Value::Array(instances))) => {
            let wrapped: Vec<Value>;
            let rows = if single_input && instances.iter().any(|i| !i.is_object()) {
                let name = inputs.field(0).name();
                wrapped = instances
                    .iter()
                    .map(|v| json!({ name.as_str(): v }))
                    .collect();
                &wrapped
            } else {
                instances
            };
            (
                batch_from_columns(inputs, &columns_from_rows(inputs, rows)?, rows.len())?,
                true,
            )
        }
        (None, Some(Value::Object(columns))) => {
            check_names(inputs, columns.keys().map(String::as_str), "")?;
            let mut lists: Vec<Vec<&Value>> = Vec::with_capacity(inputs.fields().len());
            let mut rows: Option<(usize, &str)> = None;
            for field in inputs.fields() {
                let name = field.name().as_str();
                let values = match columns.get(name) {
                    Some(Value::Array(values)) => values,
                    Some(_) => {
                        return Err(ApiError::field(
                            name,
                            format!("input '{name}' must be a list of values"),
                        ))
                    }
                    None => {
                        return Err(ApiError::field(
                            name,
                            format!(
                                "missing input '{name}' (the model needs {})",
                                json::names(inputs)
                            ),
                        ))
                    }
                };
                match rows {
                    Some((n, other)) if n != values.len() => {
                        return Err(ApiError::field(
                            name,
                            format!(
                                "input '{name}' has {} values but '{other}' has {n}",
                                values.len()
                            ),
                        ))
                    }
                    _ => rows = Some((values.len(), name)),
                }
                lists.push(values.iter().collect());
            }
            (
                batch_from_columns(inputs, &lists, rows.map_or(0, |(n, _)| n))?,
                false,
            )
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give one of 'instances' and 'inputs', not both",
            ))
        }
        (Some(_), None) => return Err(ApiError::field("instances", "'instances' must be a list")),
        (None, Some(_)) => {
            return Err(ApiError::field(
                "inputs",
                "'inputs' must be an object of column names to lists",
            ))
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "give 'instances' (a list of rows) or 'inputs' (columns)",
            ))
        }
    };
    let out = version
        .batcher
        .predict(batch)
        .await
        .map_err(ApiError::from_ml)?;
    let single_output = out.num_columns() == 1;
    Ok(if rows_form {
        let predictions: Vec<Value> = if single_output {
            (0..out.num_rows())
                .map(|r| json::value_at(out.column(0).as_ref(), r))
                .collect()
        } else {
            json::rows_of(&out)
        };
        json!({ "predictions": predictions })
    } else if single_output {
        json!({ "outputs": column_values(out.column(0).as_ref()) })
    } else {
        let mut outputs = serde_json::Map::new();
        for (field, column) in out.schema().fields().iter().zip(out.columns()) {
            outputs.insert(field.name().clone(), column_values(column.as_ref()));
        }
        json!({ "outputs": outputs })
    })
}

fn column_values(array: &dyn Array) -> Value {
    Value::Array((0..array.len()).map(|r| json::value_at(array, r)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensorflow_paths_parse() {
        assert_eq!(
            v1_path("iris:predict"),
            Some(V1Path {
                name: "iris",
                version: None,
                verb: "predict"
            })
        );
        assert_eq!(
            v1_path("iris/versions/3:predict"),
            Some(V1Path {
                name: "iris",
                version: Some("3"),
                verb: "predict"
            })
        );
        assert_eq!(
            v1_path("iris/versions/3/metadata"),
            Some(V1Path {
                name: "iris",
                version: Some("3"),
                verb: "metadata"
            })
        );
        assert_eq!(
            v1_path("iris"),
            Some(V1Path {
                name: "iris",
                version: None,
                verb: ""
            })
        );
        assert_eq!(v1_path("iris/labels/3"), None);
        assert_eq!(v1_path(":predict"), None);
    }

    #[test]
    fn tensors_fill_scalar_and_vector_columns() {
        use arrow::array::AsArray;
        use arrow::datatypes::{Float32Type, Float64Type, Schema};
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("v", ember_mllib::vector::vector_type(2), true),
            Field::new("x", DataType::Float64, true),
        ]));
        let tensors = json!([
            {"name": "x", "shape": [3], "datatype": "FP64", "data": [1.5, null, "NaN"]},
            {"name": "v", "shape": [3, 2], "datatype": "FP32", "data": [[1, 2], [3, 4], [5, 6]]},
        ]);
        let batch = batch_from_tensors(&schema, &tensors).expect("batch");
        assert_eq!(batch.num_rows(), 3);
        let v = batch.column(0).as_fixed_size_list();
        let flat = v.values().as_primitive::<Float32Type>().values().to_vec();
        assert_eq!(flat, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let x = batch.column(1).as_primitive::<Float64Type>();
        assert_eq!(x.value(0), 1.5);
        assert!(x.is_null(1) && x.value(2).is_nan());
        // A vector tensor of the wrong width names the input.
        let bad = json!([
            {"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]},
            {"name": "v", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]},
        ]);
        let e = batch_from_tensors(&schema, &bad).expect_err("width");
        assert_eq!(e.field.as_deref(), Some("v"));
        assert!(e.message.contains("[N, 2]"), "{}", e.message);
    }

    #[test]
    fn tensor_types_follow_the_columns() {
        assert_eq!(tensor_type(&DataType::Float64), "FP64");
        assert_eq!(tensor_type(&ember_mllib::vector::vector_type(4)), "FP32");
        assert_eq!(tensor_type(&DataType::Utf8), "BYTES");
        assert!(compatible("INT64", &DataType::Float64));
        assert!(!compatible("BYTES", &DataType::Float64));
        assert!(!compatible("FP32", &DataType::Utf8));
    }
}
