//! Errors of the Spark Connect endpoint, and how they reach a client: a gRPC status whose
//! details name the Spark exception class (so PySpark raises `AnalysisException`,
//! `ParseException`, ...), its error class and SQL state.

use std::collections::HashMap;

use ember_driver::DriverError;
use ember_engine::EngineError;
use prost::Message;

use super::proto::google_rpc;

/// Result of the endpoint's planning and execution.
pub type ConnectResult<T> = std::result::Result<T, ConnectError>;

/// The exception class PySpark maps to `AnalysisException`.
const ANALYSIS: &str = "org.apache.spark.sql.AnalysisException";
/// The exception class PySpark maps to `ParseException`.
const PARSE: &str = "org.apache.spark.sql.catalyst.parser.ParseException";

/// Why a Spark Connect request failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A relation, expression, function or RPC Ember does not run.
    #[error("UNIMPLEMENTED: {0} is not supported by Ember")]
    Unimplemented(String),
    /// The plan refers to something that does not exist or does not fit (Spark's
    /// `AnalysisException`).
    #[error("[{class}] {message}")]
    Analysis {
        /// Spark's error class (`UNRESOLVED_COLUMN.WITH_SUGGESTION`, ...).
        class: &'static str,
        /// What is wrong, naming it.
        message: String,
    },
    /// SQL or a type string that does not parse.
    #[error("[PARSE_SYNTAX_ERROR] {0}")]
    Parse(String),
    /// A request that is malformed or names an unknown session or operation.
    #[error("{0}")]
    Invalid(String),
    /// A configuration key that is not set and has no default.
    #[error("[SQL_CONF_NOT_FOUND] The SQL config \"{0}\" cannot be found.")]
    ConfNotFound(String),
    /// The operation was interrupted by the client.
    #[error("[OPERATION_CANCELED] Operation {0} has been cancelled.")]
    Cancelled(String),
    /// Ember's own planning or a job failed.
    #[error("{0}")]
    Ember(#[from] crate::Error),
}

impl ConnectError {
    /// Something Ember does not run, named.
    pub fn unimplemented(what: impl Into<String>) -> Self {
        ConnectError::Unimplemented(what.into())
    }

    /// A malformed request.
    pub fn invalid(what: impl Into<String>) -> Self {
        ConnectError::Invalid(what.into())
    }

    /// Text that does not parse.
    pub fn parse(what: impl Into<String>) -> Self {
        ConnectError::Parse(what.into())
    }

    /// An analysis error of class `class`.
    pub fn analysis(class: &'static str, message: impl Into<String>) -> Self {
        ConnectError::Analysis {
            class,
            message: message.into(),
        }
    }

    /// A failure that is a bug in Ember.
    pub fn internal(what: impl Into<String>) -> Self {
        ConnectError::Ember(crate::Error::Engine(EngineError::Internal(what.into())))
    }

    /// The exception class hierarchy, error class and SQL state a client is told, and
    /// the gRPC code.
    fn describe(
        &self,
    ) -> (
        Vec<&'static str>,
        Option<&'static str>,
        &'static str,
        tonic::Code,
    ) {
        match self {
            ConnectError::Unimplemented(_) => (
                vec!["java.lang.UnsupportedOperationException"],
                Some("UNSUPPORTED_FEATURE"),
                "0A000",
                tonic::Code::Unimplemented,
            ),
            ConnectError::Analysis { class, .. } => (
                vec![ANALYSIS],
                Some(class),
                sql_state_of(class),
                tonic::Code::InvalidArgument,
            ),
            ConnectError::Parse(_) => (
                vec![PARSE, ANALYSIS],
                Some("PARSE_SYNTAX_ERROR"),
                "42601",
                tonic::Code::InvalidArgument,
            ),
            ConnectError::Invalid(_) => (
                vec!["java.lang.IllegalArgumentException"],
                None,
                "22023",
                tonic::Code::InvalidArgument,
            ),
            ConnectError::ConfNotFound(_) => (
                vec!["org.apache.spark.SparkNoSuchElementException"],
                Some("SQL_CONF_NOT_FOUND"),
                "42K0I",
                tonic::Code::NotFound,
            ),
            ConnectError::Cancelled(_) => (
                vec!["org.apache.spark.SparkException"],
                Some("OPERATION_CANCELED"),
                "HY008",
                tonic::Code::Cancelled,
            ),
            ConnectError::Ember(e) => classify(e),
        }
    }

    /// The gRPC status a client receives, with Spark's error details.
    pub fn to_status(&self) -> tonic::Status {
        let (classes, error_class, sql_state, code) = self.describe();
        let message = self.to_string();
        let mut metadata = HashMap::new();
        metadata.insert(
            "classes".to_string(),
            serde_json::to_string(&classes).unwrap_or_default(),
        );
        metadata.insert("sqlState".to_string(), sql_state.to_string());
        if let Some(class) = error_class {
            metadata.insert("errorClass".to_string(), class.to_string());
        }
        let info = google_rpc::ErrorInfo {
            reason: classes.first().copied().unwrap_or_default().to_string(),
            domain: "org.apache.spark".to_string(),
            metadata,
        };
        let status = google_rpc::Status {
            code: code as i32,
            message: message.clone(),
            details: vec![google_rpc::AnyDetail {
                type_url: "type.googleapis.com/google.rpc.ErrorInfo".to_string(),
                value: info.encode_to_vec(),
            }],
        };
        tonic::Status::with_details(code, message, status.encode_to_vec().into())
    }
}

impl From<datafusion::error::DataFusionError> for ConnectError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        ConnectError::Ember(crate::Error::from(e))
    }
}

impl From<EngineError> for ConnectError {
    fn from(e: EngineError) -> Self {
        ConnectError::Ember(crate::Error::Engine(e))
    }
}

fn sql_state_of(class: &str) -> &'static str {
    match class {
        c if c.starts_with("UNRESOLVED_COLUMN") => "42703",
        "TABLE_OR_VIEW_NOT_FOUND" => "42P01",
        "PATH_NOT_FOUND" => "42K03",
        "PATH_ALREADY_EXISTS" => "42K04",
        "TEMP_TABLE_OR_VIEW_ALREADY_EXISTS" => "42P07",
        "UNRESOLVED_ROUTINE" => "42883",
        "AMBIGUOUS_REFERENCE" => "42704",
        "DATATYPE_MISMATCH" => "42K09",
        _ => "42000",
    }
}

/// Sorts an error of Ember's own by the Spark exception a client expects: planning
/// mistakes are analysis errors (parse errors for bad SQL), everything that failed while
/// running is a `SparkException` that names the stage and partition.
fn classify(
    e: &crate::Error,
) -> (
    Vec<&'static str>,
    Option<&'static str>,
    &'static str,
    tonic::Code,
) {
    let engine = match e {
        crate::Error::Engine(engine) => Some(engine),
        crate::Error::Driver(DriverError::Engine(engine)) => Some(engine),
        _ => None,
    };
    match engine {
        Some(EngineError::Plan(m)) if m.starts_with("SQL: ") || m.contains("ParserError") => (
            vec![PARSE, ANALYSIS],
            Some("PARSE_SYNTAX_ERROR"),
            "42601",
            tonic::Code::InvalidArgument,
        ),
        Some(EngineError::Plan(m)) => {
            let class = if m.contains("No field named") || m.contains("not found in") {
                "UNRESOLVED_COLUMN.WITH_SUGGESTION"
            } else if m.contains("table") && m.contains("not found") {
                "TABLE_OR_VIEW_NOT_FOUND"
            } else if m.contains("Invalid function") {
                "UNRESOLVED_ROUTINE"
            } else if m.contains("ambiguous") || m.contains("Ambiguous") {
                "AMBIGUOUS_REFERENCE"
            } else {
                "DATATYPE_MISMATCH"
            };
            (
                vec![ANALYSIS],
                Some(class),
                sql_state_of(class),
                tonic::Code::InvalidArgument,
            )
        }
        _ => match e {
            crate::Error::Path { .. } => (
                vec![ANALYSIS],
                Some("PATH_NOT_FOUND"),
                "42K03",
                tonic::Code::InvalidArgument,
            ),
            crate::Error::Unsupported(_) => (
                vec!["java.lang.UnsupportedOperationException"],
                Some("UNSUPPORTED_FEATURE"),
                "0A000",
                tonic::Code::Unimplemented,
            ),
            crate::Error::Driver(DriverError::Cancelled { .. }) => (
                vec!["org.apache.spark.SparkException"],
                Some("OPERATION_CANCELED"),
                "HY008",
                tonic::Code::Cancelled,
            ),
            _ => (
                vec!["org.apache.spark.SparkException"],
                None,
                "XX000",
                tonic::Code::Internal,
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details(e: &ConnectError) -> (tonic::Status, google_rpc::Status, google_rpc::ErrorInfo) {
        let status = e.to_status();
        let decoded = google_rpc::Status::decode(status.details()).expect("status details");
        let info =
            google_rpc::ErrorInfo::decode(decoded.details[0].value.as_slice()).expect("error info");
        (status, decoded, info)
    }

    #[test]
    fn details_repeat_the_status_and_name_the_spark_exception() {
        let e = ConnectError::analysis("TABLE_OR_VIEW_NOT_FOUND", "The table `t` cannot be found.");
        let (status, decoded, info) = details(&e);
        // A client checks that the details carry the call's own code and message.
        assert_eq!(decoded.code, status.code() as i32);
        assert_eq!(decoded.message, status.message());
        assert_eq!(info.reason, ANALYSIS);
        assert_eq!(info.metadata["errorClass"], "TABLE_OR_VIEW_NOT_FOUND");
        assert_eq!(info.metadata["sqlState"], "42P01");
        assert!(status.message().contains("`t`"));
    }

    #[test]
    fn bad_sql_is_a_parse_exception_and_unsupported_work_is_named() {
        let sql = ConnectError::from(EngineError::Plan(
            "SQL: ParserError(\"Expected: an SQL statement, found: SELEC at Line: 1, Column: 1\")"
                .into(),
        ));
        let (status, _, info) = details(&sql);
        assert_eq!(info.reason, PARSE);
        assert!(status.message().contains("Line: 1, Column: 1"));
        let (status, _, info) = details(&ConnectError::unimplemented("function explode"));
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        assert_eq!(info.reason, "java.lang.UnsupportedOperationException");
        assert!(status
            .message()
            .starts_with("UNIMPLEMENTED: function explode"));
    }
}
