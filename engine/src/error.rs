//! EngineError: every failure the core can report, sorted by how the caller must react.

use std::path::PathBuf;

use datafusion::error::DataFusionError;

use crate::ids::{BlockId, ExecutorId};

/// Result with [`EngineError`] as the default error.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Errors of the Ember core.
///
/// User mistakes (`Plan`, `Input`), runtime failures (`Execution`, `Io`, `FetchFailed`,
/// `Transport`), resource exhaustion and internal bugs are separate variants so the
/// scheduler and the user can tell what to do about each.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The query or plan is wrong: bad SQL, unknown column, type mismatch. Never retried.
    #[error("plan error: {0}")]
    Plan(String),
    /// Input data is wrong: a malformed row, a schema mismatch between files.
    #[error("input error: {0}")]
    Input(String),
    /// A file or directory could not be used.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A runtime failure inside DataFusion's execution.
    #[error(transparent)]
    DataFusion(DataFusionError),
    /// An Arrow encode or decode failure.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A block a task needed could not be read from the executor expected to hold it.
    #[error("fetch of {block} from {executor} failed: {reason}")]
    FetchFailed {
        /// The block that could not be read.
        block: BlockId,
        /// The executor that was expected to hold it.
        executor: ExecutorId,
        /// Why the fetch failed.
        reason: String,
    },
    /// A remote call failed: the peer could not be reached, timed out or answered an error.
    #[error("rpc to {address} failed: {status}")]
    Transport {
        /// The peer's address.
        address: String,
        /// The gRPC status.
        status: Box<tonic::Status>,
    },
    /// A memory limit was reached.
    #[error("resources exhausted: {0}")]
    ResourcesExhausted(String),
    /// A protocol message could not be decoded.
    #[error("malformed message: {0}")]
    Decode(String),
    /// A failure while reading source files, with the files named.
    #[error("reading {files}: {source}")]
    Reading {
        /// The files the failing task was reading.
        files: String,
        /// What went wrong.
        source: Box<EngineError>,
    },
    /// Security settings are unusable (a secret, a certificate), or a server would be
    /// exposed without them.
    #[error("security: {0}")]
    Security(String),
    /// A bug in Ember: please report it.
    #[error("internal error (this is a bug in Ember): {0}")]
    Internal(String),
}

impl EngineError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether the error is the user's to fix (plan or input), so retrying cannot help.
    pub fn is_user_error(&self) -> bool {
        match self {
            EngineError::Plan(_) | EngineError::Input(_) => true,
            EngineError::Reading { source, .. } => source.is_user_error(),
            _ => false,
        }
    }

    /// Wraps this error so it can travel through a DataFusion stream and be recovered by
    /// [`EngineError::from`] on the other side without losing its structure.
    pub fn into_datafusion(self) -> DataFusionError {
        DataFusionError::External(Box::new(self))
    }
}

impl From<DataFusionError> for EngineError {
    /// Recovers an [`EngineError`] wrapped inside DataFusion's error, and sorts DataFusion's
    /// own errors by fault.
    fn from(e: DataFusionError) -> Self {
        match e {
            DataFusionError::External(inner) => match inner.downcast::<EngineError>() {
                Ok(engine) => *engine,
                Err(other) => EngineError::DataFusion(DataFusionError::External(other)),
            },
            DataFusionError::Context(ctx, inner) => match EngineError::from(*inner) {
                EngineError::DataFusion(df) => {
                    EngineError::DataFusion(DataFusionError::Context(ctx, Box::new(df)))
                }
                EngineError::Plan(m) => EngineError::Plan(format!("{ctx}: {m}")),
                EngineError::Input(m) => EngineError::Input(format!("{ctx}: {m}")),
                other => other,
            },
            DataFusionError::Shared(shared) => match std::sync::Arc::try_unwrap(shared) {
                Ok(inner) => EngineError::from(inner),
                // Shared by the partitions of one operator (a hash join's build side): a
                // lack of memory stays one, so it is not retried as if it were transient.
                Err(shared) => match shared.find_root() {
                    DataFusionError::ResourcesExhausted(m) => {
                        EngineError::ResourcesExhausted(m.clone())
                    }
                    _ => EngineError::DataFusion(DataFusionError::Shared(shared)),
                },
            },
            DataFusionError::ArrowError(arrow, ctx) => {
                let text = match ctx {
                    Some(c) => format!("{arrow}{c}"),
                    None => arrow.to_string(),
                };
                match *arrow {
                    arrow::error::ArrowError::CsvError(_)
                    | arrow::error::ArrowError::ParseError(_)
                    | arrow::error::ArrowError::JsonError(_)
                    | arrow::error::ArrowError::SchemaError(_)
                    | arrow::error::ArrowError::CastError(_) => EngineError::Input(text),
                    other => EngineError::Arrow(other),
                }
            }
            DataFusionError::Diagnostic(_, inner) => EngineError::from(*inner),
            DataFusionError::Collection(mut errors) if !errors.is_empty() => {
                EngineError::from(errors.swap_remove(0))
            }
            DataFusionError::Plan(m) | DataFusionError::NotImplemented(m) => EngineError::Plan(m),
            DataFusionError::SQL(e, bt) => {
                EngineError::Plan(format!("SQL: {e}{}", bt.unwrap_or_default()))
            }
            DataFusionError::SchemaError(e, _) => EngineError::Plan(e.to_string()),
            DataFusionError::ResourcesExhausted(m) => EngineError::ResourcesExhausted(m),
            DataFusionError::Internal(m) => EngineError::Internal(m),
            DataFusionError::IoError(io) => EngineError::DataFusion(DataFusionError::IoError(io)),
            other => EngineError::DataFusion(other),
        }
    }
}

impl From<prost::DecodeError> for EngineError {
    fn from(e: prost::DecodeError) -> Self {
        EngineError::Decode(e.to_string())
    }
}

/// Returns early with [`EngineError::Plan`] built from a format string.
#[macro_export]
macro_rules! plan_err {
    ($($arg:tt)*) => {
        return Err($crate::error::EngineError::Plan(format!($($arg)*)))
    };
}

/// Returns early with [`EngineError::Internal`] built from a format string.
#[macro_export]
macro_rules! internal_err {
    ($($arg:tt)*) => {
        return Err($crate::error::EngineError::Internal(format!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::DatasetId;

    /// A hash join's build side that ran out of memory reaches every partition as one
    /// shared error; it is still a lack of memory.
    #[test]
    fn a_shared_lack_of_memory_stays_one() {
        let shared = std::sync::Arc::new(DataFusionError::ResourcesExhausted(
            "Failed to allocate additional 274.4 KB for HashJoinInput[1]".into(),
        ));
        let _other_partition = std::sync::Arc::clone(&shared);
        let e = EngineError::from(DataFusionError::Shared(shared));
        assert!(matches!(e, EngineError::ResourcesExhausted(m) if m.contains("HashJoinInput")));
    }

    #[test]
    fn fetch_failure_survives_a_trip_through_datafusion() {
        let original = EngineError::FetchFailed {
            block: BlockId::new(DatasetId(3), 7),
            executor: ExecutorId("e1".into()),
            reason: "connection refused".into(),
        };
        let wrapped =
            DataFusionError::Context("reading input".into(), Box::new(original.into_datafusion()));
        match EngineError::from(wrapped) {
            EngineError::FetchFailed {
                block, executor, ..
            } => {
                assert_eq!(block, BlockId::new(DatasetId(3), 7));
                assert_eq!(executor, ExecutorId("e1".into()));
            }
            other => panic!("structure lost: {other:?}"),
        }
    }

    #[test]
    fn datafusion_plan_errors_are_user_errors() {
        let e = EngineError::from(DataFusionError::Plan("no column x".into()));
        assert!(e.is_user_error());
        let e = EngineError::from(DataFusionError::Execution("disk".into()));
        assert!(!e.is_user_error());
    }
}
