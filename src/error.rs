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

    /// A query the user wrote (`nightrec sql`) failed: a mistake in its
    /// text is a usage error, a failure while running it is not.
    #[error("{context}: {source}")]
    Query {
        /// Where in the query's life it failed.
        context: String,
        /// What DataFusion said.
        source: Box<datafusion::error::DataFusionError>,
    },

    /// A statement nightrec ships, or a plan it builds, failed while
    /// running a stage (never a usage error: the SQL is part of the binary).
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

    /// Another process holds the lease on this output root and date (or
    /// shard): one writer at a time. Retry later, not at once.
    #[error(
        "another nightrec process holds {scope}: {holder}, since {since}; its lease expires in {expires_in_s} s \
         unless renewed (record {seq}); one writer at a time per output root and date: try again later"
    )]
    LeaseHeld {
        /// The lease folder.
        scope: String,
        /// Who holds it.
        holder: String,
        /// Seconds until it expires unless its holder renews it.
        expires_in_s: u64,
        /// When the holder took it.
        since: String,
        /// The number of its latest record.
        seq: u64,
    },

    /// This run's lease was taken over by another process (this one stalled
    /// past its expiry): it stopped before changing anything else.
    #[error("this run's lease on {scope} was taken over by another process; stopped without publishing")]
    LeaseLost {
        /// The lease folder.
        scope: String,
    },

    /// One date of a backfill failed; the dates before it are published.
    #[error(
        "backfill stopped at {date} (the dates before it are published; rerun the same command to resume): {source}"
    )]
    AtDate {
        /// The date that failed.
        date: String,
        /// Why, with its own exit code.
        source: Box<Error>,
    },

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
    /// Another process holds the output root and date: retry later (after
    /// the usual delay, never in a tight loop).
    Busy = 4,
}

impl Error {
    /// The process exit code this error maps to.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::AtDate { source, .. } => source.exit_code(),
            Error::Config(_) | Error::Usage(_) => ExitCode::Usage,
            Error::DataQuality(_) => ExitCode::DataQuality,
            Error::LeaseHeld { .. } | Error::LeaseLost { .. } => ExitCode::Busy,
            Error::Query { source, .. } if is_plan_error(source) => ExitCode::Usage,
            _ => ExitCode::Retry,
        }
    }

    /// Wrap a DataFusion error with what was being done. When the SQL
    /// memory pool ran out, the message names the setting to raise.
    pub fn datafusion(context: impl fmt::Display, source: datafusion::error::DataFusionError) -> Self {
        let mut context = context.to_string();
        if is_out_of_memory(&source) {
            context.push_str(
                " (the SQL memory pool is too small for this step: raise runtime.sql_memory_mb in the job's \
                 config, or set NIGHTREC_RUNTIME__SQL_MEMORY_MB; what the pool cannot hold spills to \
                 runtime.spill_dir)",
            );
        }
        Error::DataFusion { context, source: Box::new(source) }
    }

    /// Wrap an error of a query the user wrote.
    pub fn query(context: impl fmt::Display, source: datafusion::error::DataFusionError) -> Self {
        Error::Query { context: context.to_string(), source: Box::new(source) }
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

/// Whether DataFusion gave up because its memory pool was exhausted.
fn is_out_of_memory(e: &datafusion::error::DataFusionError) -> bool {
    matches!(e.find_root(), datafusion::error::DataFusionError::ResourcesExhausted(_))
        || e.to_string().contains("Resources exhausted")
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::error::DataFusionError as E;

    #[test]
    fn only_the_users_own_query_text_is_a_usage_error() {
        let plan = || E::Plan("column x not found".into());
        assert_eq!(Error::query("in your query", plan()).exit_code(), ExitCode::Usage);
        assert_eq!(Error::query("running your query", E::Execution("disk".into())).exit_code(), ExitCode::Retry);
        // A shipped statement that does not plan is a bug in nightrec.
        assert_eq!(Error::datafusion("planning sql/clean/items.sql", plan()).exit_code(), ExitCode::Retry);
    }

    #[test]
    fn a_backfill_exits_with_its_failed_dates_code_and_names_the_date() {
        let e = Error::AtDate { date: "2026-11-20".into(), source: Box::new(Error::DataQuality("too bad".into())) };
        assert_eq!(e.exit_code(), ExitCode::DataQuality);
        assert!(e.to_string().contains("2026-11-20") && e.to_string().contains("too bad"), "{e}");
    }

    #[test]
    fn an_exhausted_memory_pool_names_the_setting_to_raise() {
        let e = E::Context("sorting".into(), Box::new(E::ResourcesExhausted("Failed to allocate".into())));
        let msg = Error::datafusion("running sql/trainset/steps.sql", e).to_string();
        assert!(msg.contains("runtime.sql_memory_mb") && msg.contains("NIGHTREC_RUNTIME__SQL_MEMORY_MB"), "{msg}");
        let other = Error::datafusion("x", E::Execution("boom".into())).to_string();
        assert!(!other.contains("sql_memory_mb"), "{other}");
    }
}
