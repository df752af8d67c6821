//! Spark ML parameters of the operators Ember serves: each class's param names with
//! Spark's defaults, the values a client sent, and typed access that names the param and
//! the class when something is wrong.

use std::collections::BTreeMap;

use crate::connect::error::{ConnectError, ConnectResult};
use crate::connect::proto;
use crate::connect::proto::expression::literal::LiteralType as L;

/// A param value as a client sends it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// No value.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer of any width.
    Int(i64),
    /// A float or double.
    Double(f64),
    /// A string.
    Str(String),
    /// An array.
    List(Vec<Value>),
}

impl Value {
    /// The value of a literal the client sent.
    pub fn from_literal(l: &proto::expression::Literal) -> ConnectResult<Value> {
        use proto::expression::literal::specialized_array::ValueType as S;
        Ok(match &l.literal_type {
            None | Some(L::Null(_)) => Value::Null,
            Some(L::Boolean(b)) => Value::Bool(*b),
            Some(L::Byte(i)) | Some(L::Short(i)) | Some(L::Integer(i)) => Value::Int(i64::from(*i)),
            Some(L::Long(i)) => Value::Int(*i),
            Some(L::Float(f)) => Value::Double(f64::from(*f)),
            Some(L::Double(f)) => Value::Double(*f),
            Some(L::String(s)) => Value::Str(s.clone()),
            Some(L::Array(a)) => Value::List(
                a.elements
                    .iter()
                    .map(Value::from_literal)
                    .collect::<ConnectResult<_>>()?,
            ),
            Some(L::SpecializedArray(a)) => Value::List(match &a.value_type {
                Some(S::Bools(v)) => v.values.iter().map(|b| Value::Bool(*b)).collect(),
                Some(S::Ints(v)) => v.values.iter().map(|i| Value::Int(i64::from(*i))).collect(),
                Some(S::Longs(v)) => v.values.iter().map(|i| Value::Int(*i)).collect(),
                Some(S::Floats(v)) => v
                    .values
                    .iter()
                    .map(|f| Value::Double(f64::from(*f)))
                    .collect(),
                Some(S::Doubles(v)) => v.values.iter().map(|f| Value::Double(*f)).collect(),
                Some(S::Strings(v)) => v.values.iter().map(|s| Value::Str(s.clone())).collect(),
                None => Vec::new(),
            }),
            Some(other) => {
                return Err(ConnectError::unimplemented(format!(
                    "an ML param given as {}",
                    literal_kind(other)
                )))
            }
        })
    }

    /// The value as a literal for the client.
    pub fn to_literal(&self) -> proto::expression::Literal {
        use super::literal;
        match self {
            Value::Null => literal::null(),
            Value::Bool(b) => literal::boolean(*b),
            Value::Int(i) => match i32::try_from(*i) {
                Ok(i) => literal::int(i),
                Err(_) => literal::long(*i),
            },
            Value::Double(f) => literal::double(*f),
            Value::Str(s) => literal::string(s),
            Value::List(items) => {
                let element = match items.first() {
                    Some(Value::Str(_)) => literal::string_type(),
                    Some(Value::Int(_)) => literal::int_type(),
                    Some(Value::Bool(_)) => literal::boolean_type(),
                    _ => literal::double_type(),
                };
                literal::array(element, items.iter().map(Value::to_literal).collect())
            }
        }
    }

    /// The value as JSON (Spark's saved `paramMap`).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::Double(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or_else(|| f.to_string().into()),
            Value::Str(s) => s.clone().into(),
            Value::List(items) => items.iter().map(Value::to_json).collect(),
        }
    }

    /// A value read back from JSON.
    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null | serde_json::Value::Object(_) => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Double(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => match s.as_str() {
                "NaN" => Value::Double(f64::NAN),
                _ => Value::Str(s.clone()),
            },
            serde_json::Value::Array(items) => {
                Value::List(items.iter().map(Value::from_json).collect())
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Double(f) => f.to_string(),
            Value::Str(s) => format!("'{s}'"),
            Value::List(items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(Value::describe)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

fn literal_kind(l: &L) -> &'static str {
    match l {
        L::Binary(_) => "binary",
        L::Decimal(_) => "decimal",
        L::Date(_) => "date",
        L::Timestamp(_) | L::TimestampNtz(_) => "timestamp",
        L::Struct(_) => "struct (a vector or matrix)",
        _ => "this literal type",
    }
}

/// What a param of a class is when the client does not set it.
#[derive(Debug, Clone, Copy)]
pub enum Spec {
    /// A string default.
    Str(&'static str),
    /// A double default.
    F64(f64),
    /// An integer default.
    Int(i64),
    /// A boolean default.
    Bool(bool),
    /// No default: the operator needs it, or works without it.
    NoDefault,
    /// A Spark param Ember does not implement: setting it is an error.
    Unsupported,
}

/// The params of one operator: its class's specs and the values the client set.
#[derive(Debug, Clone)]
pub struct Params {
    class: &'static str,
    spec: &'static [(&'static str, Spec)],
    values: BTreeMap<String, Value>,
}

impl Params {
    /// Checks the client's `params` against `class`'s specs: an unknown name, or a Spark
    /// param Ember does not implement, is an error naming both.
    pub fn new(
        class: &'static str,
        spec: &'static [(&'static str, Spec)],
        params: Option<&proto::MlParams>,
    ) -> ConnectResult<Params> {
        let mut values = BTreeMap::new();
        for (name, literal) in params.map(|p| p.params.iter()).into_iter().flatten() {
            let Some((_, s)) = spec.iter().find(|(n, _)| n == name) else {
                let known: Vec<&str> = spec
                    .iter()
                    .filter(|(_, s)| !matches!(s, Spec::Unsupported))
                    .map(|(n, _)| *n)
                    .collect();
                return Err(ConnectError::invalid(format!(
                    "{class} has no param '{name}' (its params: {})",
                    known.join(", ")
                )));
            };
            if matches!(s, Spec::Unsupported) {
                return Err(ConnectError::unimplemented(format!(
                    "param '{name}' of {class}"
                )));
            }
            values.insert(name.clone(), Value::from_literal(literal)?);
        }
        Ok(Params {
            class,
            spec,
            values,
        })
    }

    /// The class these params belong to.
    pub fn class(&self) -> &'static str {
        self.class
    }

    /// The values the client set (what Spark saves as the `paramMap`).
    pub fn explicit(&self) -> &BTreeMap<String, Value> {
        &self.values
    }

    /// Whether the client set `name`.
    pub fn is_set(&self, name: &str) -> bool {
        self.values.get(name).is_some_and(|v| v != &Value::Null)
    }

    fn value(&self, name: &str) -> ConnectResult<Option<Value>> {
        if let Some(v) = self.values.get(name).filter(|v| **v != Value::Null) {
            return Ok(Some(v.clone()));
        }
        let spec = self
            .spec
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| *s)
            .ok_or_else(|| {
                ConnectError::internal(format!("{} has no param spec for {name}", self.class))
            })?;
        Ok(match spec {
            Spec::Str(s) => Some(Value::Str(s.into())),
            Spec::F64(f) => Some(Value::Double(f)),
            Spec::Int(i) => Some(Value::Int(i)),
            Spec::Bool(b) => Some(Value::Bool(b)),
            Spec::NoDefault | Spec::Unsupported => None,
        })
    }

    fn wrong(&self, name: &str, expected: &str, v: &Value) -> ConnectError {
        ConnectError::invalid(format!(
            "param '{name}' of {}: expected {expected}, got {}",
            self.class,
            v.describe()
        ))
    }

    fn required(&self, name: &str) -> ConnectError {
        ConnectError::invalid(format!("{} needs param '{name}' to be set", self.class))
    }

    /// A string param (its default when unset); an error when it has none.
    pub fn str(&self, name: &str) -> ConnectResult<String> {
        self.opt_str(name)?.ok_or_else(|| self.required(name))
    }

    /// A string param, `None` when unset without a default.
    pub fn opt_str(&self, name: &str) -> ConnectResult<Option<String>> {
        match self.value(name)? {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong(name, "a string", &other)),
        }
    }

    /// A string-array param, `None` when unset without a default.
    pub fn opt_strings(&self, name: &str) -> ConnectResult<Option<Vec<String>>> {
        match self.value(name)? {
            None => Ok(None),
            Some(Value::List(items)) => items
                .iter()
                .map(|v| match v {
                    Value::Str(s) => Ok(s.clone()),
                    other => Err(self.wrong(name, "an array of strings", other)),
                })
                .collect::<ConnectResult<Vec<_>>>()
                .map(Some),
            Some(other) => Err(self.wrong(name, "an array of strings", &other)),
        }
    }

    /// A number param.
    pub fn f64(&self, name: &str) -> ConnectResult<f64> {
        match self.value(name)? {
            None => Err(self.required(name)),
            Some(Value::Double(f)) => Ok(f),
            Some(Value::Int(i)) => Ok(i as f64),
            Some(other) => Err(self.wrong(name, "a number", &other)),
        }
    }

    /// An integer param.
    pub fn i64(&self, name: &str) -> ConnectResult<i64> {
        match self.value(name)? {
            None => Err(self.required(name)),
            Some(Value::Int(i)) => Ok(i),
            Some(Value::Double(f)) if f.fract() == 0.0 && f.is_finite() => Ok(f as i64),
            Some(other) => Err(self.wrong(name, "an integer", &other)),
        }
    }

    /// A non-negative integer param (counts, iterations).
    pub fn usize(&self, name: &str) -> ConnectResult<usize> {
        let v = self.i64(name)?;
        usize::try_from(v).map_err(|_| self.wrong(name, "a non-negative integer", &Value::Int(v)))
    }

    /// A boolean param.
    pub fn bool(&self, name: &str) -> ConnectResult<bool> {
        match self.value(name)? {
            None => Err(self.required(name)),
            Some(Value::Bool(b)) => Ok(b),
            Some(other) => Err(self.wrong(name, "a boolean", &other)),
        }
    }

    /// A string param that must be one of `allowed` (compared as Spark does, ignoring
    /// case); returns the allowed spelling.
    pub fn choice(&self, name: &str, allowed: &[&'static str]) -> ConnectResult<&'static str> {
        let v = self.str(name)?;
        allowed
            .iter()
            .find(|a| a.eq_ignore_ascii_case(&v))
            .copied()
            .ok_or_else(|| {
                ConnectError::invalid(format!(
                    "param '{name}' of {}: '{v}' is not one of {}",
                    self.class,
                    allowed.join(", ")
                ))
            })
    }

    /// A param Ember implements only at `only` (Spark's other values are an error).
    pub fn only(&self, name: &str, only: &str) -> ConnectResult<()> {
        let v = self.str(name)?;
        if v.eq_ignore_ascii_case(only) {
            Ok(())
        } else {
            Err(ConnectError::unimplemented(format!(
                "param '{name}' = '{v}' of {} (Ember implements '{only}')",
                self.class
            )))
        }
    }
}

use Spec::{Bool, NoDefault, Str, Unsupported, F64};

/// `LogisticRegression` and its model.
pub const LOGISTIC_REGRESSION: &[(&str, Spec)] = &[
    ("featuresCol", Str("features")),
    ("labelCol", Str("label")),
    ("predictionCol", Str("prediction")),
    ("probabilityCol", Str("probability")),
    ("rawPredictionCol", Str("rawPrediction")),
    ("maxIter", Spec::Int(100)),
    ("regParam", F64(0.0)),
    ("elasticNetParam", F64(0.0)),
    ("tol", F64(1e-6)),
    ("fitIntercept", Bool(true)),
    ("standardization", Bool(true)),
    ("family", Str("auto")),
    ("threshold", F64(0.5)),
    // Ember's reduction tree has its own fan-in; these tune Spark's and are accepted.
    ("aggregationDepth", Spec::Int(2)),
    ("maxBlockSizeInMB", F64(0.0)),
    ("weightCol", Unsupported),
    ("thresholds", Unsupported),
    ("lowerBoundsOnCoefficients", Unsupported),
    ("upperBoundsOnCoefficients", Unsupported),
    ("lowerBoundsOnIntercepts", Unsupported),
    ("upperBoundsOnIntercepts", Unsupported),
];

/// `LinearRegression` and its model.
pub const LINEAR_REGRESSION: &[(&str, Spec)] = &[
    ("featuresCol", Str("features")),
    ("labelCol", Str("label")),
    ("predictionCol", Str("prediction")),
    ("maxIter", Spec::Int(100)),
    ("regParam", F64(0.0)),
    ("elasticNetParam", F64(0.0)),
    ("tol", F64(1e-6)),
    ("fitIntercept", Bool(true)),
    ("standardization", Bool(true)),
    ("solver", Str("auto")),
    ("loss", Str("squaredError")),
    ("epsilon", F64(1.35)),
    ("aggregationDepth", Spec::Int(2)),
    ("maxBlockSizeInMB", F64(0.0)),
    ("weightCol", Unsupported),
];

/// `KMeans` and its model.
pub const KMEANS: &[(&str, Spec)] = &[
    ("featuresCol", Str("features")),
    ("predictionCol", Str("prediction")),
    ("k", Spec::Int(2)),
    ("initMode", Str("k-means||")),
    ("initSteps", Spec::Int(2)),
    ("tol", F64(1e-4)),
    ("maxIter", Spec::Int(20)),
    ("seed", NoDefault),
    ("distanceMeasure", Str("euclidean")),
    ("solver", Str("auto")),
    ("maxBlockSizeInMB", F64(0.0)),
    ("weightCol", Unsupported),
];

/// `VectorAssembler`.
pub const VECTOR_ASSEMBLER: &[(&str, Spec)] = &[
    ("inputCols", NoDefault),
    ("outputCol", NoDefault),
    ("handleInvalid", Str("error")),
];

/// `StandardScaler` and its model.
pub const STANDARD_SCALER: &[(&str, Spec)] = &[
    ("inputCol", NoDefault),
    ("outputCol", NoDefault),
    ("withMean", Bool(false)),
    ("withStd", Bool(true)),
];

/// `MinMaxScaler` and its model.
pub const MIN_MAX_SCALER: &[(&str, Spec)] = &[
    ("inputCol", NoDefault),
    ("outputCol", NoDefault),
    ("min", F64(0.0)),
    ("max", F64(1.0)),
];

/// `StringIndexer` and its model.
pub const STRING_INDEXER: &[(&str, Spec)] = &[
    ("inputCol", NoDefault),
    ("outputCol", NoDefault),
    ("inputCols", NoDefault),
    ("outputCols", NoDefault),
    ("handleInvalid", Str("error")),
    ("stringOrderType", Str("frequencyDesc")),
];

/// `OneHotEncoder` and its model.
pub const ONE_HOT_ENCODER: &[(&str, Spec)] = &[
    ("inputCol", NoDefault),
    ("outputCol", NoDefault),
    ("inputCols", NoDefault),
    ("outputCols", NoDefault),
    ("dropLast", Bool(true)),
    ("handleInvalid", Str("error")),
];

/// `Imputer` and its model.
pub const IMPUTER: &[(&str, Spec)] = &[
    ("inputCol", NoDefault),
    ("outputCol", NoDefault),
    ("inputCols", NoDefault),
    ("outputCols", NoDefault),
    ("strategy", Str("mean")),
    ("missingValue", F64(f64::NAN)),
    ("relativeError", F64(0.001)),
];

/// `BinaryClassificationEvaluator`.
pub const BINARY_EVALUATOR: &[(&str, Spec)] = &[
    ("rawPredictionCol", Str("rawPrediction")),
    ("labelCol", Str("label")),
    ("metricName", Str("areaUnderROC")),
    ("numBins", Spec::Int(1000)),
    ("weightCol", Unsupported),
];

/// `MulticlassClassificationEvaluator`.
pub const MULTICLASS_EVALUATOR: &[(&str, Spec)] = &[
    ("predictionCol", Str("prediction")),
    ("labelCol", Str("label")),
    ("metricName", Str("f1")),
    ("probabilityCol", Str("probability")),
    ("metricLabel", F64(0.0)),
    ("beta", F64(1.0)),
    ("eps", F64(1e-15)),
    ("weightCol", Unsupported),
];

/// `RegressionEvaluator`.
pub const REGRESSION_EVALUATOR: &[(&str, Spec)] = &[
    ("predictionCol", Str("prediction")),
    ("labelCol", Str("label")),
    ("metricName", Str("rmse")),
    ("throughOrigin", Bool(false)),
    ("weightCol", Unsupported),
];

/// `ClusteringEvaluator`.
pub const CLUSTERING_EVALUATOR: &[(&str, Spec)] = &[
    ("featuresCol", Str("features")),
    ("predictionCol", Str("prediction")),
    ("metricName", Str("silhouette")),
    ("distanceMeasure", Str("squaredEuclidean")),
    ("weightCol", Unsupported),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, proto::expression::Literal)]) -> proto::MlParams {
        proto::MlParams {
            params: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    #[test]
    fn unset_params_take_spark_defaults() {
        let p = Params::new("LogisticRegression", LOGISTIC_REGRESSION, None).unwrap();
        assert_eq!(p.usize("maxIter").unwrap(), 100);
        assert_eq!(p.f64("tol").unwrap(), 1e-6);
        assert_eq!(p.str("featuresCol").unwrap(), "features");
        assert!(p.bool("fitIntercept").unwrap());
    }

    #[test]
    fn set_params_are_typed_and_named_in_errors() {
        use super::super::literal;
        let p = Params::new(
            "LogisticRegression",
            LOGISTIC_REGRESSION,
            Some(&params(&[
                ("maxIter", literal::int(7)),
                ("regParam", literal::string("lots")),
            ])),
        )
        .unwrap();
        assert_eq!(p.usize("maxIter").unwrap(), 7);
        let e = p.f64("regParam").unwrap_err().to_string();
        assert!(
            e.contains("regParam") && e.contains("LogisticRegression"),
            "{e}"
        );
    }

    #[test]
    fn unknown_and_unsupported_params_are_refused_by_name() {
        use super::super::literal;
        let e = Params::new("KMeans", KMEANS, Some(&params(&[("kk", literal::int(3))])))
            .unwrap_err()
            .to_string();
        assert!(e.contains("KMeans has no param 'kk'"), "{e}");
        let e = Params::new(
            "KMeans",
            KMEANS,
            Some(&params(&[("weightCol", literal::string("w"))])),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("weightCol") && e.contains("not supported"),
            "{e}"
        );
    }
}
