//! The errors `ember serve` answers with: an HTTP status and a JSON body
//! `{"error": "...", "field": "..."}` (the field when one is to blame).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ember_mllib::MlError;

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, naming the column, row, model or version.
    pub message: String,
    /// The request field (column or tensor) at fault, when one is.
    pub field: Option<String>,
}

impl ApiError {
    /// 400: the request cannot be answered as sent.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field: None,
        }
    }

    /// 400 blaming request field `field`.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::bad_request(message)
        }
    }

    /// 404: no such model, version or route.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            field: None,
        }
    }

    /// 500: Ember failed (not the request).
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            field: None,
        }
    }

    /// An error of the pipeline on the request's rows: the data's fault (400) unless it is
    /// an engine failure.
    pub fn from_ml(e: MlError) -> Self {
        match e {
            MlError::InvalidColumn { ref column, .. } => Self::field(column.clone(), e.to_string()),
            MlError::InvalidData { message } => {
                let field = quoted_column(&message);
                Self {
                    field,
                    ..Self::bad_request(message)
                }
            }
            MlError::InvalidParam { .. } => Self::bad_request(e.to_string()),
            other => Self::internal(other.to_string()),
        }
    }
}

/// The column a stage's message names (`column 'x'`), if it names one.
fn quoted_column(message: &str) -> Option<String> {
    let start = message.find("column '")? + "column '".len();
    let len = message[start..].find('\'')?;
    Some(message[start..start + len].to_string())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.message });
        if let Some(field) = self.field {
            body["field"] = serde_json::Value::String(field);
        }
        super::http::json_response(self.status, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_messages_name_their_column() {
        let e = ApiError::from_ml(MlError::data(
            "StringIndexer: column 'colour' has 'mauve', which was not seen when fitting",
        ));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.field.as_deref(), Some("colour"));
        let e = ApiError::from_ml(MlError::data("the data set is empty"));
        assert_eq!(e.field, None);
    }
}
