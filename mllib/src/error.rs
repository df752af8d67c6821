//! mllib's error type: what fitting, transforming, evaluating, saving and loading can fail
//! with.

use std::path::PathBuf;

use datafusion::error::DataFusionError;
use ember_driver::DriverError;
use ember_engine::EngineError;

/// Result with [`MlError`] as the default error.
pub type Result<T, E = MlError> = std::result::Result<T, E>;

/// Errors of mllib.
#[derive(Debug, thiserror::Error)]
pub enum MlError {
    /// A parameter has a value the stage cannot use.
    #[error("{stage}: parameter {param}: {message}")]
    InvalidParam {
        /// The stage (estimator, transformer, evaluator).
        stage: &'static str,
        /// The parameter.
        param: &'static str,
        /// What is wrong with its value.
        message: String,
    },
    /// A column is missing or has a type the stage cannot use.
    #[error("column '{column}': {message}")]
    InvalidColumn {
        /// The column.
        column: String,
        /// What was expected and what was found.
        message: String,
    },
    /// The data cannot be used (NaN or infinite values, labels out of range, too few rows).
    #[error("{message}")]
    InvalidData {
        /// What was found, naming the column.
        message: String,
    },
    /// A saved stage or model cannot be read.
    #[error("{}: {message}", path.display())]
    Format {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Planning or running on the cluster failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A job failed on the cluster.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// The session the data frame belongs to reported an error.
    #[error("{0}")]
    Session(Box<dyn std::error::Error + Send + Sync>),
}

impl From<DataFusionError> for MlError {
    fn from(e: DataFusionError) -> Self {
        MlError::Engine(EngineError::from(e))
    }
}

impl From<arrow::error::ArrowError> for MlError {
    fn from(e: arrow::error::ArrowError) -> Self {
        MlError::Engine(EngineError::from(DataFusionError::from(e)))
    }
}

impl MlError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        MlError::Io {
            path: path.into(),
            source,
        }
    }

    /// A [`MlError::InvalidColumn`].
    pub fn column(column: impl Into<String>, message: impl Into<String>) -> Self {
        MlError::InvalidColumn {
            column: column.into(),
            message: message.into(),
        }
    }

    /// A [`MlError::InvalidData`].
    pub fn data(message: impl Into<String>) -> Self {
        MlError::InvalidData {
            message: message.into(),
        }
    }

    /// A [`MlError::InvalidParam`].
    pub fn param(stage: &'static str, param: &'static str, message: impl Into<String>) -> Self {
        MlError::InvalidParam {
            stage,
            param,
            message: message.into(),
        }
    }
}
