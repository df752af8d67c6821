//! `pyspark.ml` over Spark Connect: `MlCommand`s (fit, evaluate, fetch attributes, write,
//! read, delete) and `MlRelation`s (transform, DataFrame attributes), run by Ember's mllib
//! on the cluster, with a per-session cache of fitted models addressed by `ObjectRef`.
//!
//! - `params`: Spark's param names and defaults per class, typed access.
//! - `models`: the operators as mllib stages; model attributes and summaries.
//! - `literal`: results as literals (vectors and matrices as Spark's UDT structs).

mod literal;
mod models;
mod params;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use datafusion::dataframe::DataFrame as DFrame;

use super::error::{ConnectError, ConnectResult};
use super::plan::Planner;
use super::proto::{self, ml_command, ml_command_result, MlCommandResult};
use super::session::{ConnectSession, SPARK_VERSION};
use models::{Fitted, Operator, Role, Summary};
use params::{Params, Value};

/// The object id `pyspark.ml` sends for calls on the server's ML helper (not a model).
const HELPER_ID: &str = "______ML_CONNECT_HELPER______";

/// A fitted model kept for a session.
#[derive(Debug)]
pub struct MlObject {
    /// The model's operator (`LogisticRegressionModel`).
    operator: Operator,
    /// The uid the client gave it.
    uid: String,
    /// The params it was fitted with (the client's explicit ones).
    params: Params,
    /// The model.
    fitted: Fitted,
    /// The data it was fitted on (lazy), for its training summary.
    training: Mutex<Option<DFrame>>,
}

/// The models of one session, by the id the client refers to them with.
#[derive(Debug, Default)]
pub struct MlCache {
    objects: Mutex<HashMap<String, Arc<MlObject>>>,
}

impl MlCache {
    fn insert(&self, object: MlObject) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.lock().insert(id.clone(), Arc::new(object));
        id
    }

    fn get(&self, id: &str) -> ConnectResult<Arc<MlObject>> {
        self.lock().get(id).cloned().ok_or_else(|| {
            ConnectError::analysis(
                "CONNECT_ML.CACHE_INVALID",
                format!("the ML object {id} is not in this session's cache (deleted, or the session was restarted)"),
            )
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<MlObject>>> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn operator_info(
    id: Option<String>,
    uid: &str,
    params: Option<proto::MlParams>,
) -> MlCommandResult {
    MlCommandResult {
        result_type: Some(ml_command_result::ResultType::OperatorInfo(
            ml_command_result::MlOperatorInfo {
                r#type: id.map(|id| {
                    ml_command_result::ml_operator_info::Type::ObjRef(proto::ObjectRef { id })
                }),
                uid: Some(uid.to_string()),
                params,
                warning_message: None,
            },
        )),
    }
}

fn param_result(l: proto::expression::Literal) -> MlCommandResult {
    MlCommandResult {
        result_type: Some(ml_command_result::ResultType::Param(l)),
    }
}

fn wire_params<'a>(values: impl IntoIterator<Item = (&'a String, &'a Value)>) -> proto::MlParams {
    proto::MlParams {
        params: values
            .into_iter()
            .map(|(k, v)| (k.clone(), v.to_literal()))
            .collect(),
    }
}

fn operator_of(op: Option<&proto::MlOperator>, role: Role) -> ConnectResult<(Operator, String)> {
    let op = op.ok_or_else(|| ConnectError::invalid("an ML command without an operator"))?;
    let found = models::operator(&op.name)?;
    if found.role != role {
        return Err(ConnectError::invalid(format!(
            "{} is a {:?}, not a {role:?}",
            op.name, found.role
        )));
    }
    Ok((found, op.uid.clone()))
}

/// The plan of a command's dataset relation.
async fn dataset(
    session: &ConnectSession,
    relation: Option<&proto::Relation>,
    command: &str,
) -> ConnectResult<DFrame> {
    let relation =
        relation.ok_or_else(|| ConnectError::invalid(format!("{command} without a dataset")))?;
    Planner::new(session).relation(relation).await
}

/// Runs an `MlCommand` for `session`.
pub async fn command(
    session: &ConnectSession,
    cmd: proto::MlCommand,
) -> ConnectResult<MlCommandResult> {
    use ml_command::Command as C;
    let cache = &session.ml;
    match cmd.command {
        Some(C::Fit(f)) => {
            let (op, uid) = operator_of(f.estimator.as_ref(), Role::Estimator)?;
            let params = Params::new(op.name, op.spec, f.params.as_ref())?;
            let df = dataset(session, f.dataset.as_ref(), "Fit").await?;
            let frame = crate::DataFrame::new(session.ember.clone(), df.clone());
            let (model_op, fitted) = models::fit(&op, &params, &frame).await?;
            let model_params = Params::new(model_op.name, model_op.spec, f.params.as_ref())?;
            let id = cache.insert(MlObject {
                operator: model_op,
                uid: uid.clone(),
                params: model_params,
                fitted,
                training: Mutex::new(Some(df)),
            });
            Ok(operator_info(Some(id), &uid, None))
        }
        Some(C::Evaluate(e)) => {
            let (op, _) = operator_of(e.evaluator.as_ref(), Role::Evaluator)?;
            let params = Params::new(op.name, op.spec, e.params.as_ref())?;
            let df = dataset(session, e.dataset.as_ref(), "Evaluate").await?;
            let frame = crate::DataFrame::new(session.ember.clone(), df);
            let v = models::evaluate(&op, &params, &frame).await?;
            Ok(param_result(literal::double(v)))
        }
        Some(C::Fetch(f)) => match fetch(session, &f, None).await? {
            Fetched::Value(l) => Ok(param_result(l)),
            Fetched::Frame(_) => Err(ConnectError::invalid(
                "this attribute is a DataFrame; it is read through a relation",
            )),
        },
        Some(C::Delete(d)) => {
            let mut removed = Vec::new();
            let mut objects = cache.lock();
            for r in &d.obj_refs {
                if objects.remove(&r.id).is_some() {
                    removed.push(r.id.clone());
                }
            }
            Ok(operator_info(Some(removed.join(",")), "", None))
        }
        Some(C::CleanCache(_)) => {
            cache.lock().clear();
            Ok(param_result(literal::boolean(true)))
        }
        Some(C::GetCacheInfo(_)) => {
            let info: Vec<String> = cache
                .lock()
                .iter()
                .map(|(id, o)| {
                    serde_json::json!({"id": id, "class": o.operator.spark_class()}).to_string()
                })
                .collect();
            Ok(param_result(literal::strings(&info)))
        }
        Some(C::GetModelSize(g)) => {
            let id = g.model_ref.map(|r| r.id).unwrap_or_default();
            let object = cache.get(&id)?;
            Ok(param_result(literal::long(
                object.fitted.size_in_bytes() as i64
            )))
        }
        Some(C::CreateSummary(c)) => {
            let id = c.model_ref.map(|r| r.id).unwrap_or_default();
            let object = cache.get(&id)?;
            let df = dataset(session, c.dataset.as_ref(), "CreateSummary").await?;
            *object.training.lock().unwrap_or_else(|e| e.into_inner()) = Some(df);
            Ok(param_result(literal::boolean(true)))
        }
        Some(C::Write(w)) => write(session, w).await,
        Some(C::Read(r)) => read(session, r).await,
        None => Err(ConnectError::invalid("an MlCommand without a command")),
    }
}

/// What a `Fetch` gives: a value, or a DataFrame.
enum Fetched {
    Value(proto::expression::Literal),
    Frame(DFrame),
}

/// Calls `methods` on the object `f.obj_ref` names: a model's attribute, its training
/// summary's (`summary.areaUnderROC`), or the helper's.
async fn fetch(
    session: &ConnectSession,
    f: &proto::Fetch,
    summary_dataset: Option<DFrame>,
) -> ConnectResult<Fetched> {
    let id = f
        .obj_ref
        .as_ref()
        .map(|r| r.id.as_str())
        .unwrap_or_default();
    let names: Vec<&str> = f.methods.iter().map(|m| m.method.as_str()).collect();
    if id == HELPER_ID {
        // File removal: off the async workers.
        let methods = f.methods.clone();
        return tokio::task::spawn_blocking(move || helper(&methods))
            .await
            .map_err(|e| ConnectError::internal(format!("ML helper: {e}")))?
            .map(Fetched::Value);
    }
    let object = session.ml.get(id)?;
    let class = object.operator.name;
    match names.as_slice() {
        ["summary", method] => {
            let training = summary_dataset.or_else(|| {
                object
                    .training
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
            });
            let training = training.map(|df| crate::DataFrame::new(session.ember.clone(), df));
            Ok(
                match object
                    .fitted
                    .summary(class, method, training.as_ref())
                    .await?
                {
                    Summary::Value(l) => Fetched::Value(l),
                    Summary::Frame(df) => Fetched::Frame(df),
                },
            )
        }
        ["hasSummary"] => Ok(Fetched::Value(literal::boolean(
            object
                .training
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some(),
        ))),
        ["uid"] => Ok(Fetched::Value(literal::string(&object.uid))),
        [method @ ("predict" | "predictRaw" | "predictProbability")] => {
            let vector = match f.methods[0].args.first().and_then(|a| a.args_type.as_ref()) {
                Some(proto::fetch::method::args::ArgsType::Param(l)) => literal::vector_values(l),
                _ => None,
            }
            .ok_or_else(|| {
                ConnectError::invalid(format!("{class}.{method} takes one feature vector"))
            })?;
            let l = object
                .fitted
                .predict_one(class, method, &vector, session.ember.context())
                .await?;
            Ok(Fetched::Value(l))
        }
        [method] => match object.fitted.attribute(class, method) {
            Ok(l) => Ok(Fetched::Value(l)),
            Err(e @ ConnectError::Unimplemented(_)) => object
                .fitted
                .frame_attribute(class, method, session.ember.context())
                .map(Fetched::Frame)
                .map_err(|_| e),
            Err(e) => Err(e),
        },
        _ => Err(ConnectError::unimplemented(format!(
            "ML method chain {} on {class}",
            names.join(".")
        ))),
    }
}

/// Calls on the ML helper: `handleOverwrite(path, overwrite)` before a pipeline is saved.
fn helper(methods: &[proto::fetch::Method]) -> ConnectResult<proto::expression::Literal> {
    let [m] = methods else {
        return Err(ConnectError::invalid("a helper call with a method chain"));
    };
    let args: Vec<Value> = m
        .args
        .iter()
        .map(|a| match &a.args_type {
            Some(proto::fetch::method::args::ArgsType::Param(l)) => Value::from_literal(l),
            _ => Ok(Value::Null),
        })
        .collect::<ConnectResult<_>>()?;
    match (m.method.as_str(), args.as_slice()) {
        ("handleOverwrite", [Value::Str(path), Value::Bool(overwrite), ..]) => {
            let path = local_path(path);
            if *overwrite && path.exists() {
                remove(&path)?;
            }
            Ok(literal::boolean(true))
        }
        (other, _) => Err(ConnectError::unimplemented(format!(
            "ML helper method {other}"
        ))),
    }
}

fn local_path(path: &str) -> PathBuf {
    PathBuf::from(
        path.strip_prefix("file://")
            .or_else(|| path.strip_prefix("file:"))
            .unwrap_or(path),
    )
}

fn remove(path: &Path) -> ConnectResult<()> {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    result.map_err(|e| ConnectError::from(ember_engine::EngineError::io(path, e)))
}

/// The Spark-style metadata PySpark reads back when it loads a pipeline's stages
/// (`metadata/part-00000`: class, uid, paramMap, sparkVersion).
fn write_spark_metadata(
    dir: &Path,
    spark_class: &str,
    uid: &str,
    params: &std::collections::BTreeMap<String, Value>,
) -> ConnectResult<()> {
    let meta = dir.join("metadata");
    let io = |e: std::io::Error| ConnectError::from(ember_engine::EngineError::io(&meta, e));
    std::fs::create_dir_all(&meta).map_err(io)?;
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let json = serde_json::json!({
        "class": spark_class,
        "timestamp": timestamp,
        "sparkVersion": SPARK_VERSION,
        "uid": uid,
        "paramMap": params.iter().map(|(k, v)| (k.clone(), v.to_json())).collect::<serde_json::Map<_, _>>(),
        "defaultParamMap": {},
        "writer": "ember",
    });
    std::fs::write(meta.join("part-00000"), format!("{json}\n")).map_err(io)
}

fn read_spark_metadata(dir: &Path) -> ConnectResult<serde_json::Value> {
    let file = dir.join("metadata").join("part-00000");
    let text = std::fs::read_to_string(&file).map_err(|e| {
        ConnectError::analysis(
            "PATH_NOT_FOUND",
            format!(
                "{} is not a saved ML stage ({}: {e})",
                dir.display(),
                file.display()
            ),
        )
    })?;
    serde_json::from_str(text.trim()).map_err(|e| {
        ConnectError::invalid(format!("{}: not Spark ML metadata: {e}", file.display()))
    })
}

/// `write().save(path)` of a model (Ember's model directory plus the Spark metadata
/// PySpark reads) or of an unfitted operator (its params).
async fn write(session: &ConnectSession, w: ml_command::Write) -> ConnectResult<MlCommandResult> {
    let path = local_path(&w.path);
    let overwrite = w.should_overwrite.unwrap_or(false);
    if path.exists() && !overwrite {
        return Err(ConnectError::analysis(
            "PATH_ALREADY_EXISTS",
            format!(
                "Path {} already exists. Use write().overwrite().save(path) to overwrite it.",
                path.display()
            ),
        ));
    }
    // Written next to the target and renamed over it, so a failed write leaves the old
    // one in place.
    let staging = super::staging_path(&path);
    let written = match &w.r#type {
        Some(ml_command::write::Type::ObjRef(r)) => {
            let object = session.ml.get(&r.id)?;
            let given = Params::new(
                object.operator.name,
                object.operator.spec,
                w.params.as_ref(),
            )?;
            let mut values = object.params.explicit().clone();
            values.extend(given.explicit().clone());
            let fitted = object.fitted.with_params(&given)?;
            let spark_class = object.operator.spark_class();
            let uid = object.uid.clone();
            let target = staging.clone();
            tokio::task::spawn_blocking(move || -> ConnectResult<()> {
                fitted.save(&target)?;
                write_spark_metadata(&target, &spark_class, &uid, &values)
            })
            .await
            .map_err(|e| ConnectError::internal(format!("writing a model: {e}")))?
        }
        Some(ml_command::write::Type::Operator(op)) => {
            let found = models::operator(&op.name)?;
            let params = Params::new(found.name, found.spec, w.params.as_ref())?;
            (|| {
                if found.role == Role::Transformer {
                    // A stateless stage is also written as Ember reads it.
                    let stage = models::transformer(&found, &params, &op.uid)?;
                    ember_mllib::pipeline::Transformer::save(&stage, &staging)
                        .map_err(|e| ConnectError::Ember(crate::Error::Ml(e)))?;
                } else {
                    std::fs::create_dir_all(&staging).map_err(|e| {
                        ConnectError::from(ember_engine::EngineError::io(&staging, e))
                    })?;
                }
                write_spark_metadata(&staging, &found.spark_class(), &op.uid, params.explicit())
            })()
        }
        None => Err(ConnectError::invalid("an ML write of nothing")),
    };
    tokio::task::spawn_blocking(move || -> ConnectResult<()> {
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        if path.exists() {
            remove(&path)?;
        }
        std::fs::rename(&staging, &path)
            .map_err(|e| ConnectError::from(ember_engine::EngineError::io(&path, e)))
    })
    .await
    .map_err(|e| ConnectError::internal(format!("placing a written model: {e}")))??;
    Ok(param_result(literal::boolean(true)))
}

/// `Cls.load(path)`: a model comes back as a cached object; an operator as its params.
async fn read(session: &ConnectSession, r: ml_command::Read) -> ConnectResult<MlCommandResult> {
    let op = r
        .operator
        .as_ref()
        .ok_or_else(|| ConnectError::invalid("an ML read without an operator"))?;
    let found = models::operator(&op.name)?;
    let path = local_path(&r.path);
    let meta = read_spark_metadata(&path)?;
    let saved_class = meta
        .get("class")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    if saved_class != found.spark_class() {
        return Err(ConnectError::invalid(format!(
            "{} holds a {saved_class}, not a {}",
            path.display(),
            found.spark_class()
        )));
    }
    let uid = meta
        .get("uid")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_string();
    let values: std::collections::BTreeMap<String, Value> = meta
        .get("paramMap")
        .and_then(serde_json::Value::as_object)
        .map(models::params_from_json)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let wire = wire_params(values.iter());
    let params = Params::new(found.name, found.spec, Some(&wire))?;
    if found.role != Role::Model {
        return Ok(operator_info(None, &uid, Some(wire)));
    }
    let name = found.name;
    let load_path = path.clone();
    let fitted = tokio::task::spawn_blocking(move || Fitted::load(name, &load_path))
        .await
        .map_err(|e| ConnectError::internal(format!("reading a model: {e}")))??;
    let id = session.ml.insert(MlObject {
        operator: found,
        uid: uid.clone(),
        params,
        fitted,
        training: Mutex::new(None),
    });
    Ok(operator_info(Some(id), &uid, Some(wire)))
}

/// Plans an `MlRelation`: a transform by a cached model or a stateless transformer, or a
/// DataFrame attribute (`summary.predictions`, `surrogateDF`).
pub async fn relation(planner: &mut Planner<'_>, m: &proto::MlRelation) -> ConnectResult<DFrame> {
    use proto::ml_relation::transform::Operator as T;
    use proto::ml_relation::MlType;
    let session = planner.session();
    match &m.ml_type {
        Some(MlType::Transform(t)) => {
            let input = t
                .input
                .as_deref()
                .ok_or_else(|| ConnectError::invalid("a transform without an input"))?;
            let df = planner.relation(input).await?;
            match &t.operator {
                Some(T::ObjRef(r)) => {
                    let object = session.ml.get(&r.id)?;
                    let given = Params::new(
                        object.operator.name,
                        object.operator.spec,
                        t.params.as_ref(),
                    )?;
                    object.fitted.with_params(&given)?.transform(df)
                }
                Some(T::Transformer(op)) => {
                    let (found, uid) = operator_of(Some(op), Role::Transformer)?;
                    let params = Params::new(found.name, found.spec, t.params.as_ref())?;
                    let stage = models::transformer(&found, &params, &uid)?;
                    ember_mllib::pipeline::Transformer::transform_logical(&stage, df)
                        .map_err(|e| ConnectError::Ember(crate::Error::Ml(e)))
                }
                None => Err(ConnectError::invalid("a transform without an operator")),
            }
        }
        Some(MlType::Fetch(f)) => {
            let dataset = match m.model_summary_dataset.as_deref() {
                Some(rel) => Some(planner.relation(rel).await?),
                None => None,
            };
            match fetch(session, f, dataset).await? {
                Fetched::Frame(df) => Ok(df),
                Fetched::Value(_) => Err(ConnectError::invalid(
                    "this attribute is a value, not a DataFrame",
                )),
            }
        }
        None => Err(ConnectError::invalid("an MlRelation without a type")),
    }
}
