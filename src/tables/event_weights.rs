//! The `event_weights` table: the configured weight of each event type, as
//! a table the SQL of the trainset and candidates stages joins.

use std::sync::Arc;

use datafusion::arrow::array::{Float64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use crate::config::Config;
use crate::error::{DfContext, Result};

/// The configured event weights as a table for the SQL.
pub(crate) fn batch(cfg: &Config) -> Result<RecordBatch> {
    let pairs = cfg.trainset.event_weights.pairs();
    let schema = Arc::new(Schema::new(vec![
        Field::new("event_type", DataType::Utf8, false),
        Field::new("weight", DataType::Float64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(pairs.iter().map(|p| p.0.as_str()))),
            Arc::new(Float64Array::from_iter_values(pairs.iter().map(|p| p.1))),
        ],
    )
    .ctx("building event_weights")
}
