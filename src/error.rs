//! The library's one error type.
//!
//! Variants keep whose fault a failure is apart, because the scheduler acts
//! on the exit code: a configuration or usage error must not be retried, a
//! failed data-quality gate pages a human, anything else may be transient.

use std::fmt;

/// Result alias used throughout nightrec.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure nightrec reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file, a flag or an environment override is invalid.
    #[error("configuration error: {0}")]
    Config(String),

    /// The command line asks for something that cannot be done as asked
    /// (bad SQL in `nightrec sql`, a write without `--allow-writes`, ...).
    #[error("usage error: {0}")]
    Usage(String),

    /// A data-quality gate failed; nothing was published.
    #[error("data-quality gate failed: {0}")]
    DataQuality(String),

    /// Reading or writing storage failed.
    #[error("storage error at {location}: {source}")]
    Storage {
        /// The object or folder involved.
        location: String,
        /// What object_store said.
        source: object_store::Error,
    },

    /// A local file operation failed.
    #[error("io error at {path}: {source}")]
    Io {
        /// The local path involved.
        path: String,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// A SQL statement or DataFusion plan failed while running a stage.
    #[error("{context}: {source}")]
    DataFusion {
        /// The stage and table being built.
        context: String,
        /// What DataFusion said.
        source: Box<datafusion::error::DataFusionError>,
    },

    /// libtorch reported an error (device, tensor shapes, checkpoint IO).
    #[error("{context}: {source}")]
    Torch {
        /// What was being done.
        context: String,
        /// What tch said.
        source: tch::TchError,
    },

    /// Input data is unusable in a way no quality gate covers (no events at
    /// all, a table with the wrong columns).
    #[error("bad input data: {0}")]
    Data(String),

    /// A bug in nightrec: an invariant did not hold.
    #[error("internal error (a bug in nightrec): {0}")]
    Internal(String),
}

/// The exit codes of DESIGN.md's operational contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Anything else: may be transient, retry.
    Retry = 1,
    /// Usage or configuration error: do not retry.
    Usage = 2,
    /// Data-quality gate failed: do not retry, page a human.
    DataQuality = 3,
}

impl Error {
    /// The process exit code this error maps to.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Config(_) | Error::Usage(_) => ExitCode::Usage,
            Error::DataQuality(_) => ExitCode::DataQuality,
            Error::DataFusion { source, .. } if is_plan_error(source) => ExitCode::Usage,
            _ => ExitCode::Retry,
        }
    }

    /// Wrap a DataFusion error with what was being done.
    pub fn datafusion(context: impl fmt::Display, source: datafusion::error::DataFusionError) -> Self {
        Error::DataFusion { context: context.to_string(), source: Box::new(source) }
    }

    /// Wrap an object_store error with the location involved.
    pub fn storage(location: impl fmt::Display, source: object_store::Error) -> Self {
        Error::Storage { location: location.to_string(), source }
    }

    /// Wrap a local IO error with the path involved.
    pub fn io(path: impl fmt::Display, source: std::io::Error) -> Self {
        Error::Io { path: path.to_string(), source }
    }

    /// Wrap a tch error with what was being done.
    pub fn torch(context: impl fmt::Display, source: tch::TchError) -> Self {
        Error::Torch { context: context.to_string(), source }
    }
}

/// Errors in a user's query text (as opposed to failures while running it).
fn is_plan_error(e: &datafusion::error::DataFusionError) -> bool {
    use datafusion::error::DataFusionError as E;
    match e {
        E::SQL(..) | E::Plan(_) | E::SchemaError(..) => true,
        E::Context(_, inner) | E::Diagnostic(_, inner) => is_plan_error(inner),
        E::Collection(errs) => errs.first().is_some_and(is_plan_error),
        _ => false,
    }
}

/// Attach context to DataFusion results.
pub trait DfContext<T> {
    /// Wrap the error with a description of the work that failed.
    fn ctx(self, context: impl fmt::Display) -> Result<T>;
}

impl<T> DfContext<T> for std::result::Result<T, datafusion::error::DataFusionError> {
    fn ctx(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::datafusion(context, e))
    }
}

impl<T> DfContext<T> for std::result::Result<T, datafusion::arrow::error::ArrowError> {
    fn ctx(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::datafusion(context, e.into()))
    }
}

impl<T> DfContext<T> for std::result::Result<T, datafusion::parquet::errors::ParquetError> {
    fn ctx(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::datafusion(context, e.into()))
    }
}

impl<T> DfContext<T> for std::result::Result<T, tch::TchError> {
    fn ctx(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::torch(context, e))
    }
}
