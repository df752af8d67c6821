//! The facade's error: what a `Session` or `DataFrame` call can fail with.

use std::path::PathBuf;

use datafusion::error::DataFusionError;
use ember_driver::DriverError;
use ember_engine::EngineError;
use ember_executor::ExecutorError;

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of Ember's user-facing API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Planning, encoding, reading or a user mistake caught before any job ran.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A job failed on the cluster.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// An in-process executor failed to start.
    #[error(transparent)]
    Executor(#[from] ExecutorError),
    /// The local cluster could not be started.
    #[error("local cluster: {0}")]
    Cluster(String),
    /// A statement Ember does not run.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// Fitting, transforming or evaluating a machine-learning stage failed.
    #[error(transparent)]
    Ml(#[from] ember_mllib::MlError),
    /// A path given by the user cannot be used.
    #[error("{}: {message}", path.display())]
    Path {
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        Error::Engine(EngineError::from(e))
    }
}

impl Error {
    /// Whether the error is the user's to fix (bad SQL, unknown column, bad input data,
    /// unusable path) rather than a cluster failure.
    pub fn is_user_error(&self) -> bool {
        match self {
            Error::Engine(e) => e.is_user_error() || matches!(e, EngineError::Io { .. }),
            Error::Driver(e) => e.is_user_error(),
            Error::Path { .. } | Error::Unsupported(_) => true,
            Error::Ml(e) => matches!(
                e,
                ember_mllib::MlError::InvalidParam { .. }
                    | ember_mllib::MlError::InvalidColumn { .. }
                    | ember_mllib::MlError::InvalidData { .. }
                    | ember_mllib::MlError::Format { .. }
                    | ember_mllib::MlError::Io { .. }
            ),
            Error::Executor(_) | Error::Cluster(_) => false,
        }
    }
}
