//! The format of the `data_quality` table, which `clean` writes, `publish`
//! adds to (checks a run makes after clean, such as input files that
//! arrived after the night pinned its inputs) and the report reads.
//!
//! Every row has a severity, so that a row whose check did not pass is
//! never an unexplained `false`: `info` rows are counts and measurements
//! (they always pass), `warning` rows did not pass but are within what the
//! configuration tolerates (the run goes on and says so), `error` rows are
//! gates that failed (the run exits 3 and publishes nothing, so a
//! published `data_quality` holds none).

use std::sync::Arc;

use datafusion::arrow::array::{BooleanArray, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::error::{DfContext, Result};

/// How much a data-quality row matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Severity {
    /// A count or a measurement.
    Info,
    /// Did not pass, tolerated by the configuration: the run goes on.
    Warning,
    /// A gate that failed: the run exits 3.
    Error,
}

impl Severity {
    /// As written in the table.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// A row of `data_quality`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Check {
    /// The input file checked, or `*` for the whole run.
    pub source: String,
    /// What was checked (`rows_read`, `bad_row_fraction`, ...).
    pub check: String,
    /// The measured value.
    pub value: f64,
    /// The configured limit, when the check has one.
    pub threshold: Option<f64>,
    /// Whether the value is within the limit (always true for `info`).
    pub passed: bool,
    /// See [`Severity`].
    pub severity: Severity,
    /// What a person needs to act on the row (empty for plain counts).
    pub detail: String,
}

impl Check {
    /// A count or measurement of one source.
    pub(crate) fn info(source: &str, check: &str, value: f64) -> Check {
        Check {
            source: source.into(),
            check: check.into(),
            value,
            threshold: None,
            passed: true,
            severity: Severity::Info,
            detail: String::new(),
        }
    }

    /// A value against a limit: `error` when it breaks the limit and the
    /// limit is a gate, else `info`.
    pub(crate) fn gated(source: &str, check: &str, value: f64, threshold: f64, passed: bool) -> Check {
        let severity = if passed { Severity::Info } else { Severity::Error };
        Check { threshold: Some(threshold), passed, severity, ..Check::info(source, check, value) }
    }

    /// Something that did not pass but does not stop the run.
    pub(crate) fn warning(source: &str, check: &str, value: f64, detail: String) -> Check {
        Check { passed: false, severity: Severity::Warning, detail, ..Check::info(source, check, value) }
    }
}

/// The table's schema.
pub(crate) fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("check", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("threshold", DataType::Float64, true),
        Field::new("passed", DataType::Boolean, false),
        Field::new("severity", DataType::Utf8, false),
        Field::new("detail", DataType::Utf8, false),
    ]))
}

/// The table of these checks.
pub(crate) fn batch(checks: &[Check]) -> Result<RecordBatch> {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from_iter_values(checks.iter().map(|c| c.source.as_str()))),
            Arc::new(StringArray::from_iter_values(checks.iter().map(|c| c.check.as_str()))),
            Arc::new(Float64Array::from_iter_values(checks.iter().map(|c| c.value))),
            Arc::new(Float64Array::from_iter(checks.iter().map(|c| c.threshold))),
            Arc::new(BooleanArray::from_iter(checks.iter().map(|c| Some(c.passed)))),
            Arc::new(StringArray::from_iter_values(checks.iter().map(|c| c.severity.as_str()))),
            Arc::new(StringArray::from_iter_values(checks.iter().map(|c| c.detail.as_str()))),
        ],
    )
    .ctx("building data_quality")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_that_did_not_pass_always_says_how_much_it_matters() {
        let rows = [
            Check::info("f", "rows_read", 3.0),
            Check::gated("f", "bad_row_fraction", 0.9, 0.5, false),
            Check::gated("*", "events_bad_row_fraction", 0.01, 0.05, true),
            Check::warning("f", "file_not_read", 10.0, "unknown extension".into()),
        ];
        for c in &rows {
            assert_eq!(c.passed, c.severity == Severity::Info, "{c:?}");
        }
        let b = batch(&rows).unwrap();
        assert_eq!(b.num_rows(), 4);
        assert_eq!(b.schema(), schema());
    }
}
