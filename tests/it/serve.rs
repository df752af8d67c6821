//! `ember serve` end to end: pipelines trained and saved here, served by the `ember`
//! binary, asked over HTTP in both protocols; answers compared with the pipeline's own
//! transform on the cluster, bad input refused with the field named, new versions picked
//! up, concurrent clients batched.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::http::{json_request, read_response, request};
use crate::common::{session, Mode, IRIS_INPUTS};
use arrow::array::{Array, AsArray};
use arrow::datatypes::Float64Type;
use arrow::record_batch::RecordBatch;
use ember::ml::*;
use ember::prelude::*;
use serde_json::{json, Value};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");

/// An `ember serve` process, killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `ember serve` with `args` and waits for the line that says where it listens.
    fn start(args: &[&str]) -> Server {
        let mut child = common::ember_command(env!("CARGO_BIN_EXE_ember"))
            .arg("serve")
            .args(["--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ember serve starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let mut server = Server {
            child,
            addr: String::new(),
        };
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("ember serve prints where it listens");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        server.addr = addr.to_string();
        server
    }

    /// One HTTP/1.1 request; the status and the body.
    fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        request(&self.addr, method, path, body)
    }

    /// A request whose JSON answer is parsed.
    fn json(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        json_request(&self.addr, method, path, body)
    }
}

/// Rows of `batches` as JSON objects of the given columns.
fn rows(batches: &[RecordBatch], columns: &[&str]) -> Vec<Value> {
    let mut out = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            let mut row = serde_json::Map::new();
            for c in columns {
                let column = b.column_by_name(c).expect("column");
                let value = match column.data_type() {
                    arrow::datatypes::DataType::Utf8 => json!(column.as_string::<i32>().value(r)),
                    _ => json!(column.as_primitive::<Float64Type>().value(r)),
                };
                row.insert(c.to_string(), value);
            }
            out.push(Value::Object(row));
        }
    }
    out
}

/// The column `name` of `batches` as f64 values (vectors flattened row by row).
fn f64_values(batches: &[RecordBatch], name: &str) -> Vec<f64> {
    let mut out = Vec::new();
    for b in batches {
        let column = b.column_by_name(name).expect("column");
        match column.data_type() {
            arrow::datatypes::DataType::FixedSizeList(..) => {
                let list = column.as_fixed_size_list();
                let values =
                    arrow::compute::cast(list.values(), &arrow::datatypes::DataType::Float64)
                        .expect("cast");
                out.extend(values.as_primitive::<Float64Type>().values().iter());
            }
            _ => {
                let values = arrow::compute::cast(column, &arrow::datatypes::DataType::Float64)
                    .expect("cast");
                out.extend(values.as_primitive::<Float64Type>().values().iter());
            }
        }
    }
    out
}

/// `values` as JSON text: the shortest text that reads back as the same `f64`, as the
/// server writes numbers. Comparing texts compares the numbers bit for bit (serde_json's
/// default parser may read a 17-digit number one unit in the last place off).
fn exact(values: &[f64]) -> String {
    serde_json::to_string(values).expect("json")
}

fn numbers(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(items) => items.iter().flat_map(numbers).collect(),
        Value::Number(n) => vec![n.as_f64().expect("f64")],
        other => panic!("expected numbers, found {other}"),
    }
}

/// Iris: species indexed, measurements assembled, a multinomial logistic regression.
async fn iris_pipeline(session: &Session, reg: f64) -> PipelineModel {
    let iris = data(session, "iris.csv").await;
    Pipeline::new()
        .estimator(StringIndexer::new("species", "label"))
        .transformer(VectorAssembler::new(IRIS_INPUTS))
        .estimator(LogisticRegression::new().reg_param(reg))
        .fit(&iris)
        .await
        .expect("fit iris")
}

/// Breast cancer: diagnosis indexed, 30 features assembled and standardized, an elastic
/// net logistic regression.
async fn cancer_pipeline(session: &Session) -> (PipelineModel, Vec<String>) {
    let cancer = data(session, "breast_cancer.csv").await;
    let features: Vec<String> = cancer
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| n != "diagnosis")
        .collect();
    let model = Pipeline::new()
        .estimator(StringIndexer::new("diagnosis", "label"))
        .transformer(VectorAssembler::new(features.clone()).output_col("raw"))
        .estimator(
            StandardScaler::new()
                .input_col("raw")
                .output_col("features"),
        )
        .estimator(
            LogisticRegression::new()
                .reg_param(0.01)
                .elastic_net_param(0.5),
        )
        .fit(&cancer)
        .await
        .expect("fit cancer");
    (model, features)
}

/// A pipeline with a categorical feature: colour indexed (unseen colours are errors),
/// one-hot encoded and assembled with x, a linear regression on y.
async fn paint_pipeline(session: &Session) -> PipelineModel {
    let df = session
        .sql(
            "SELECT * FROM (VALUES ('red', 1.0, 3.0), ('blue', 2.0, 2.0), ('red', 3.0, 7.0), \
             ('green', 4.0, 5.0), ('blue', 5.0, 6.0), ('green', 6.0, 9.0)) AS t(colour, x, y)",
        )
        .await
        .expect("paint");
    Pipeline::new()
        .estimator(StringIndexer::new("colour", "colour_index"))
        .estimator(OneHotEncoder::new("colour_index", "colour_vec"))
        .transformer(VectorAssembler::new(["colour_vec", "x"]))
        .estimator(LinearRegression::new().label_col("y"))
        .fit(&df)
        .await
        .expect("fit paint")
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `NAME=DIR`, as `--model` takes it.
fn model_arg(name: &str, dir: &Path) -> String {
    format!("{name}={}", path_str(dir))
}

/// A data file of `tests/data` as a DataFrame.
async fn data(session: &Session, file: &str) -> DataFrame {
    session
        .read_csv(format!("{DATA}/{file}"))
        .await
        .unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// What the cluster computes for `df` through `model`.
async fn transformed(model: &PipelineModel, df: &DataFrame) -> Vec<RecordBatch> {
    model
        .transform(df)
        .expect("transform")
        .collect()
        .await
        .expect("collect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_predictions_are_the_transform_of_the_same_rows() {
    let session = session(Mode::InProcess, 2).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let iris_model = iris_pipeline(&session, 0.01).await;
    let (cancer_model, cancer_features) = cancer_pipeline(&session).await;
    let kmeans_model = Pipeline::new()
        .transformer(VectorAssembler::new(IRIS_INPUTS))
        .estimator(KMeans::new().k(3).seed(1))
        .fit(&data(&session, "iris.csv").await)
        .await
        .expect("fit k-means");
    iris_model
        .save(&dir.path().join("iris/1"))
        .expect("save iris");
    cancer_model
        .save(&dir.path().join("cancer"))
        .expect("save cancer");
    kmeans_model
        .save(&dir.path().join("clusters"))
        .expect("save k-means");
    // What the cluster computes for the same rows, through the saved and loaded models.
    let iris = data(&session, "iris.csv").await;
    let iris_loaded = PipelineModel::load(dir.path().join("iris/1")).expect("load iris");
    let expected = transformed(&iris_loaded, &iris).await;
    let cancer = data(&session, "breast_cancer.csv").await;
    let cancer_expected = transformed(&cancer_model, &cancer).await;
    let clusters_expected = transformed(&kmeans_model, &iris).await;

    let server = Server::start(&[
        "--model",
        &model_arg("iris", &dir.path().join("iris")),
        "--model",
        &model_arg("cancer", &dir.path().join("cancer")),
        "--model",
        &model_arg("clusters", &dir.path().join("clusters")),
        "--batch-window",
        "1ms",
    ]);

    // Health and metadata: the inputs are the raw measurements (not the label).
    assert_eq!(server.json("GET", "/v2/health/live", None).0, 200);
    assert_eq!(server.json("GET", "/v2/health/ready", None).0, 200);
    let (status, meta) = server.json("GET", "/v2/models/iris", None);
    assert_eq!(status, 200, "{meta}");
    let inputs: Vec<&str> = meta["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(|i| i["name"].as_str().expect("name"))
        .collect();
    assert_eq!(inputs, IRIS_INPUTS);
    assert_eq!(meta["inputs"][0]["datatype"], "FP64");
    let outputs: Vec<&str> = meta["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(|o| o["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        outputs,
        [
            "rawPrediction",
            "probability",
            "prediction",
            "predicted_species"
        ]
    );
    assert_eq!(meta["versions"], json!(["1"]));

    // Open Inference Protocol, named tensors: every Iris row at once.
    let n = expected.iter().map(RecordBatch::num_rows).sum::<usize>();
    let tensors: Vec<Value> = IRIS_INPUTS
        .iter()
        .map(|c| {
            json!({"name": c, "shape": [n], "datatype": "FP64",
                   "data": f64_values(&expected, c)})
        })
        .collect();
    let (status, text) = server.request(
        "POST",
        "/v2/models/iris/infer",
        Some(&json!({"id": "all-iris", "inputs": tensors}).to_string()),
    );
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(answer["id"], "all-iris");
    assert_eq!(answer["model_version"], "1");
    let output = |name: &str| {
        answer["outputs"]
            .as_array()
            .expect("outputs")
            .iter()
            .find(|o| o["name"] == name)
            .unwrap_or_else(|| panic!("no output {name} in {answer}"))
            .clone()
    };
    // Bit for bit the transform's numbers (keys are written in order: data first).
    for name in ["prediction", "probability", "rawPrediction"] {
        let data = format!("{{\"data\":{},", exact(&f64_values(&expected, name)));
        assert!(text.contains(&data), "{name} differs from the transform's");
    }
    assert_eq!(output("probability")["shape"], json!([n, 3]));
    let species: Vec<Value> = rows(&expected, &["species"])
        .into_iter()
        .map(|r| r["species"].clone())
        .collect();
    // Iris is separable enough that the predicted names are mostly the true ones, and
    // they are the indexer's labels of the predicted indices.
    let predicted = output("predicted_species")["data"].clone();
    let predicted = predicted.as_array().expect("labels");
    let right = predicted
        .iter()
        .zip(&species)
        .filter(|(p, s)| p == s)
        .count();
    assert!(right >= 140, "{right} of {n} right");
    let labels = iris_loaded.stages()[0]
        .indexes()
        .expect("indexer")
        .labels
        .to_vec();
    for (p, index) in predicted.iter().zip(f64_values(&expected, "prediction")) {
        assert_eq!(p.as_str(), Some(labels[index as usize].as_str()));
    }

    // TensorFlow Serving, instances (rows) and inputs (columns): the same numbers.
    let instances = rows(&expected, &IRIS_INPUTS);
    let (status, text) = server.request(
        "POST",
        "/v1/models/iris:predict",
        Some(&json!({ "instances": instances }).to_string()),
    );
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(answer["predictions"].as_array().map(Vec::len), Some(n));
    for (r, p) in f64_values(&expected, "probability").chunks(3).enumerate() {
        let row = format!("\"probability\":{}", exact(p));
        assert!(text.contains(&row), "row {r}: {row} not in the answer");
    }
    let mut columns = serde_json::Map::new();
    for c in IRIS_INPUTS {
        columns.insert(c.into(), json!(f64_values(&expected, c)));
    }
    let (status, text) = server.request(
        "POST",
        "/v1/models/iris/versions/1:predict",
        Some(&json!({ "inputs": columns }).to_string()),
    );
    assert_eq!(status, 200, "{text}");
    let prediction = format!(
        "\"prediction\":{}",
        exact(&f64_values(&expected, "prediction"))
    );
    assert!(text.contains(&prediction), "{text}");

    // Breast cancer as OIP rows (Ember's extension): binary probabilities, diagnosis names.
    let cols: Vec<&str> = cancer_features.iter().map(String::as_str).collect();
    let cancer_rows = rows(&cancer_expected, &cols);
    let (status, text) = server.request(
        "POST",
        "/v2/models/cancer/infer",
        Some(&json!({ "rows": cancer_rows, "outputs": [{"name": "probability"}, {"name": "predicted_diagnosis"}] }).to_string()),
    );
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).expect("JSON");
    let outputs = answer["outputs"].as_array().expect("outputs");
    assert_eq!(outputs.len(), 2, "only the outputs asked for: {answer}");
    let data = format!(
        "\"data\":{},",
        exact(&f64_values(&cancer_expected, "probability"))
    );
    assert!(
        text.contains(&data),
        "cancer probabilities differ from the transform's"
    );
    let diagnosis: Vec<Value> = rows(&cancer_expected, &["diagnosis"])
        .into_iter()
        .map(|r| r["diagnosis"].clone())
        .collect();
    let right = outputs[1]["data"]
        .as_array()
        .expect("labels")
        .iter()
        .zip(&diagnosis)
        .filter(|(p, d)| p == d)
        .count();
    assert!(
        right as f64 >= 0.95 * diagnosis.len() as f64,
        "{right} right"
    );

    // K-means: the cluster of each row; one output, so TensorFlow's bare values.
    let (status, answer) = server.json(
        "POST",
        "/v1/models/clusters:predict",
        Some(&json!({ "instances": rows(&clusters_expected, &IRIS_INPUTS) })),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        numbers(&answer["predictions"]),
        f64_values(&clusters_expected, "prediction")
    );

    // Metrics count what was asked.
    let (status, text) = server.request("GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(
        text.contains(r#"ember_serve_requests_total{model="iris",protocol="v2",code="200"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"ember_serve_model_version{model="iris"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("ember_serve_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("ember_serve_batch_rows_count"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_the_server_keeps_serving() {
    let session = session(Mode::InProcess, 2).await;
    let dir = tempfile::tempdir().expect("tempdir");
    iris_pipeline(&session, 0.01)
        .await
        .save(&dir.path().join("iris"))
        .expect("save");
    paint_pipeline(&session)
        .await
        .save(&dir.path().join("paint"))
        .expect("save");
    let server = Server::start(&[
        "--model",
        &model_arg("iris", &dir.path().join("iris")),
        "--model",
        &model_arg("paint", &dir.path().join("paint")),
        "--max-body",
        "64KiB",
    ]);
    let good = json!({"instances": [{"sepal_length": 5.1, "sepal_width": 3.5,
                                      "petal_length": 1.4, "petal_width": 0.2}]});
    let check = |status: u16, body: &Value, want: u16, field: Option<&str>, says: &str| {
        assert_eq!(status, want, "{body}");
        let error = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {body}"));
        assert!(error.contains(says), "{error:?} should say {says:?}");
        if let Some(field) = field {
            assert_eq!(body["field"], field, "{body}");
        }
        // And the next good request is answered.
        let (ok, answer) = server.json("POST", "/v1/models/iris:predict", Some(&good));
        assert_eq!(ok, 200, "{answer}");
        assert_eq!(answer["predictions"][0]["predicted_species"], "setosa");
    };
    let predict = |body: &Value| server.json("POST", "/v1/models/iris:predict", Some(body));

    let (s, b) = predict(
        &json!({"instances": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4}]}),
    );
    check(
        s,
        &b,
        400,
        Some("petal_width"),
        "missing column 'petal_width'",
    );
    let (s, b) = predict(
        &json!({"instances": [{"sepal_length": 5.1, "sepal_width": 3.5,
        "petal_length": 1.4, "petal_width": 0.2, "colour": "red"}]}),
    );
    check(s, &b, 400, Some("colour"), "unknown column 'colour'");
    let (s, b) = predict(
        &json!({"instances": [{"sepal_length": "long", "sepal_width": 3.5,
        "petal_length": 1.4, "petal_width": 0.2}]}),
    );
    check(s, &b, 400, Some("sepal_length"), "expected a number");
    let (s, b) = predict(
        &json!({"instances": [{"sepal_length": "NaN", "sepal_width": 3.5,
        "petal_length": 1.4, "petal_width": 0.2}]}),
    );
    check(s, &b, 400, Some("sepal_length"), "NaN");
    let (s, b) = predict(
        &json!({"instances": [{"sepal_length": null, "sepal_width": 3.5,
        "petal_length": 1.4, "petal_width": 0.2}]}),
    );
    check(s, &b, 400, Some("sepal_length"), "null");
    let (s, b) = server.json(
        "POST",
        "/v1/models/paint:predict",
        Some(&json!({"instances": [{"colour": "mauve", "x": 1.0}]})),
    );
    check(s, &b, 400, Some("colour"), "mauve");
    // A known colour works on the same model.
    let (s, b) = server.json(
        "POST",
        "/v1/models/paint:predict",
        Some(&json!({"instances": [{"colour": "red", "x": 1.0}]})),
    );
    assert_eq!(s, 200, "{b}");
    assert!(b["predictions"][0].is_number(), "{b}");
    let (s, b) = server.json(
        "POST",
        "/v2/models/iris/infer",
        Some(&json!({"inputs": [
            {"name": "sepal_length", "shape": [2], "datatype": "FP64", "data": [5.1, 4.9]},
            {"name": "sepal_width", "shape": [2], "datatype": "FP64", "data": [3.5, 3.0]},
            {"name": "petal_length", "shape": [2], "datatype": "FP64", "data": [1.4, 1.4]},
            {"name": "petal_width", "shape": [2], "datatype": "FP64", "data": [0.2]}]})),
    );
    check(s, &b, 400, Some("petal_width"), "1 values for shape [2]");
    let (s, b) = server.json(
        "POST",
        "/v2/models/iris/infer",
        Some(&json!({"inputs": [
            {"name": "sepal_length", "shape": [1], "datatype": "BYTES", "data": ["x"]}]})),
    );
    check(s, &b, 400, Some("sepal_length"), "datatype 'BYTES'");
    // Malformed JSON, an oversized body (declared, and chunked), unknown names.
    let (s, text) = server.request(
        "POST",
        "/v1/models/iris:predict",
        Some("{\"instances\": [1,"),
    );
    let b: Value = serde_json::from_str(&text).expect("JSON error");
    check(s, &b, 400, None, "malformed JSON");
    let big = format!("{{\"instances\": [{}]}}", vec!["1.0"; 20_000].join(","));
    let (s, text) = server.request("POST", "/v1/models/iris:predict", Some(&big));
    let b: Value = serde_json::from_str(&text).expect("JSON error");
    check(s, &b, 413, None, "larger than 65536 bytes");
    let (s, text) = chunked_post(&server, "/v1/models/iris:predict", &big);
    let b: Value = serde_json::from_str(&text).expect("JSON error");
    check(s, &b, 413, None, "larger than 65536 bytes");
    let (s, b) = server.json("POST", "/v1/models/lily:predict", Some(&good));
    check(s, &b, 404, None, "no model 'lily' (serving: iris, paint)");
    let (s, b) = server.json("POST", "/v1/models/iris/versions/9:predict", Some(&good));
    check(s, &b, 404, None, "no version '9' (loaded: 1)");
    let (s, b) = server.json("GET", "/v2/models/iris/versions/9", None);
    check(s, &b, 404, None, "no version '9'");
    let (s, b) = server.json("GET", "/v3/nothing", None);
    check(s, &b, 404, None, "no route GET /v3/nothing");

    // Errors are counted as such.
    let (_, text) = server.request("GET", "/metrics", None);
    assert!(
        text.contains(r#"ember_serve_errors_total{model="iris",protocol="v1",code="400"}"#),
        "{text}"
    );
}

/// A POST whose body is sent chunked (no length declared up front).
fn chunked_post(server: &Server, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(&server.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        server.addr
    );
    stream.write_all(head.as_bytes()).expect("send");
    for chunk in body.as_bytes().chunks(8192) {
        // The server may answer and close before the last chunk.
        if write!(stream, "{:x}\r\n", chunk.len()).is_err()
            || stream.write_all(chunk).is_err()
            || stream.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    read_response(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_versions_are_picked_up_and_broken_ones_leave_the_last_good_one_serving() {
    let session = session(Mode::InProcess, 2).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let versions = dir.path().join("iris");
    let first = iris_pipeline(&session, 0.01).await;
    first.save(&versions.join("1")).expect("save v1");
    let server = Server::start(&["--model", &model_arg("iris", &versions), "--poll", "100ms"]);
    let row = json!({"instances": [{"sepal_length": 6.0, "sepal_width": 2.9,
                                    "petal_length": 4.5, "petal_width": 1.5}]});
    let probability = |path: &str| {
        let (status, answer) = server.json("POST", path, Some(&row));
        assert_eq!(status, 200, "{answer}");
        numbers(&answer["predictions"][0]["probability"])
    };
    let v1 = probability("/v1/models/iris:predict");

    // A broken version 2 (a directory that is not a saved model) is reported, and
    // version 1 keeps serving.
    std::fs::create_dir_all(versions.join("2")).expect("mkdir");
    std::fs::write(versions.join("2/metadata.json"), "{ not json").expect("write");
    let status = wait_for(&server, "/v1/models/iris", |s| {
        s["model_version_status"]
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v["version"] == "2" && v["state"] == "END"))
    });
    let failed = status["model_version_status"]
        .as_array()
        .expect("statuses")
        .iter()
        .find(|v| v["version"] == "2")
        .expect("version 2")
        .clone();
    assert!(
        failed["status"]["error_message"]
            .as_str()
            .is_some_and(|m| m.contains("metadata.json")),
        "{failed}"
    );
    assert_eq!(probability("/v1/models/iris:predict"), v1);

    // Version 3, a model fitted with much stronger regularization, is served once it
    // appears; version 1 stays reachable by number.
    let third = iris_pipeline(&session, 1.0).await;
    third.save(&versions.join("3")).expect("save v3");
    wait_for(&server, "/v2/models/iris", |m| {
        m["versions"]
            .as_array()
            .is_some_and(|v| v.contains(&json!("3")))
    });
    let v3 = probability("/v1/models/iris:predict");
    assert_ne!(v3, v1, "version 3 answers with its own coefficients");
    assert_eq!(probability("/v1/models/iris/versions/1:predict"), v1);
    let (_, answer) = server.json(
        "POST",
        "/v2/models/iris/infer",
        Some(&json!({"rows": row["instances"]})),
    );
    assert_eq!(answer["model_version"], "3");

    // Removing version 3's directory unloads it: version 1 is the newest again.
    std::fs::remove_dir_all(versions.join("3")).expect("rm");
    wait_for(&server, "/v2/models/iris", |m| {
        m["versions"]
            .as_array()
            .is_some_and(|v| !v.contains(&json!("3")))
    });
    assert_eq!(probability("/v1/models/iris:predict"), v1);
    let (_, text) = server.request("GET", "/metrics", None);
    assert!(
        text.contains(r#"ember_serve_model_load_failures_total{model="iris"} 1"#),
        "{text}"
    );
}

/// Polls GET `path` until `done` holds of its JSON answer (10 s at most).
fn wait_for(server: &Server, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, answer) = server.json("GET", path, None);
        if done(&answer) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "GET {path} never got there: {answer}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_get_their_own_answers_while_batched() {
    let session = session(Mode::InProcess, 2).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let model = iris_pipeline(&session, 0.01).await;
    model.save(&dir.path().join("iris")).expect("save");
    let iris = data(&session, "iris.csv").await;
    let expected = transformed(&model, &iris).await;
    let inputs = rows(&expected, &IRIS_INPUTS);
    let probabilities: Vec<Vec<f64>> = f64_values(&expected, "probability")
        .chunks(3)
        .map(<[f64]>::to_vec)
        .collect();
    let server = std::sync::Arc::new(Server::start(&[
        "--model",
        &model_arg("iris", &dir.path().join("iris")),
        "--batch-window",
        "5ms",
        "--max-batch",
        "64",
    ]));
    let clients = 16;
    let per_client = 12;
    // Phase 1: good requests only. Phase 2: every fourth client sends a row the
    // assembler rejects; merged with good requests, it must fail alone.
    let run = |with_bad: bool| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let server = std::sync::Arc::clone(&server);
                let inputs = inputs.clone();
                let probabilities = probabilities.clone();
                let bad_client = with_bad && c % 4 == 3;
                std::thread::spawn(move || {
                    for i in 0..per_client {
                        if bad_client {
                            let bad = json!({"instances": [{"sepal_length": "NaN",
                            "sepal_width": 3.0, "petal_length": 1.0, "petal_width": 0.5}]});
                            let (status, answer) =
                                server.json("POST", "/v1/models/iris:predict", Some(&bad));
                            assert_eq!(status, 400, "client {c} request {i}: {answer}");
                            continue;
                        }
                        // Requests of 1 to 3 rows starting at a row of this client's own.
                        let start = (c * per_client + i * 7) % (inputs.len() - 3);
                        let take = 1 + (c + i) % 3;
                        let body = json!({"instances": inputs[start..start + take]});
                        let (status, answer) =
                            server.json("POST", "/v1/models/iris:predict", Some(&body));
                        assert_eq!(status, 200, "{answer}");
                        let got = answer["predictions"].as_array().expect("predictions");
                        assert_eq!(got.len(), take);
                        for (p, want) in got.iter().zip(&probabilities[start..start + take]) {
                            // One unit in the last place at most: the client's JSON reader.
                            let p = numbers(&p["probability"]);
                            assert_eq!(p.len(), 3, "client {c} request {i}");
                            for (a, b) in p.iter().zip(want) {
                                assert!(
                                    (a - b).abs() <= 2.0 * f64::EPSILON * b.abs(),
                                    "client {c} request {i}: {a} vs {b}"
                                );
                            }
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("client");
        }
    };
    run(false);
    // Fewer batches were evaluated than requests answered: requests were merged.
    let (_, text) = server.request("GET", "/metrics", None);
    let batches: f64 = text
        .lines()
        .find(|l| l.starts_with(r#"ember_serve_batch_rows_count{model="iris"}"#))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no batch count in {text}"));
    let requests = (clients * per_client) as f64;
    assert!(
        batches < requests,
        "{batches} batches for {requests} requests"
    );
    run(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_the_requests_in_flight_then_exits() {
    let session = session(Mode::InProcess, 2).await;
    let dir = tempfile::tempdir().expect("tempdir");
    iris_pipeline(&session, 0.01)
        .await
        .save(&dir.path().join("iris"))
        .expect("save");
    // A long batch window keeps the request inside the server when the signal comes.
    let mut server = Server::start(&[
        "--model",
        &model_arg("iris", &dir.path().join("iris")),
        "--batch-window",
        "1500ms",
    ]);
    let addr = server.addr.clone();
    let client = std::thread::spawn(move || {
        let body = json!({"instances": [{"sepal_length": 5.1, "sepal_width": 3.5,
                                         "petal_length": 1.4, "petal_width": 0.2}]});
        json_request(&addr, "POST", "/v1/models/iris:predict", Some(&body))
    });
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    assert_eq!(
        unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) },
        0
    );
    let (status, answer) = client.join().expect("client");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["predictions"][0]["predicted_species"], "setosa");
    let exit = common::exit_within(&mut server.child, Duration::from_secs(10))
        .await
        .expect("ember serve exits on SIGTERM");
    assert!(exit.success(), "{exit}");
}

#[test]
fn a_model_directory_without_a_model_is_refused_at_start() {
    // A model directory with nothing in it is refused at start, naming the directory.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = common::ember_command(env!("CARGO_BIN_EXE_ember"))
        .args(["serve", "--port", "0", "--model"])
        .arg(model_arg("empty", dir.path()))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("holds no saved model"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["serve", "--model", "nameless"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected NAME=DIR"));
}
