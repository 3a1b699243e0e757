//! The `evaluation` table: its rows, schema and reading order (models,
//! segments, metric labels). Written by the evaluate stage, read by the
//! report and `nightrec eval`.

use std::sync::Arc;

use datafusion::arrow::array::{Float64Array, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::arrays;
use crate::error::{DfContext, Result};
use crate::metrics::Moments;

/// The models of the leave-one-out rows, in the order they are scored.
pub(crate) const MODELS: [&str; 4] = ["nightrec", "popularity", "recent_popularity", "item_knn"];

/// The segment of the next-basket rows (`--repeat-purchases`, [`BASKET_MODELS`]).
pub(crate) const BASKET_SEGMENT: &str = "next basket";

/// The segment of the beyond-accuracy rows (tomorrow's lists).
pub(crate) const LISTS_SEGMENT: &str = "published lists";

/// The models of the next-basket rows (`--repeat-purchases`), in the order
/// they are scored: the blend that is published, the model alone and the
/// baselines.
pub(crate) const BASKET_MODELS: [&str; 5] =
    ["nightrec", "sequence_model", "personal_top_frequency", "tifu_knn", "popularity"];

/// History-length slices: (name, shortest, longest) history in steps.
pub(crate) const HISTORY: [(&str, usize, usize); 3] =
    [("history cold (1-5)", 1, 5), ("history light (6-20)", 6, 20), ("history heavy (21+)", 21, usize::MAX)];

/// Slices by the held-out item's age: created within the trending window, or before.
pub(crate) const ITEM_AGE: [&str; 2] = ["items new", "items established"];

/// Slices by what serves the user tomorrow.
pub(crate) const SERVED: [&str; 2] = ["served by model", "served by fallback"];

/// A segment's place in reading order: all, history lengths, item age,
/// categories, service, next basket, published lists (then the rest).
pub(crate) fn segment_order(segment: &str) -> usize {
    let fixed = std::iter::once("all").chain(HISTORY.iter().map(|h| h.0)).chain(ITEM_AGE);
    if let Some(i) = fixed.clone().position(|s| s == segment) {
        return i;
    }
    let categories = fixed.count();
    if segment.starts_with("category ") {
        return categories;
    }
    if let Some(i) = SERVED.iter().position(|s| *s == segment) {
        return categories + 1 + i;
    }
    match segment {
        BASKET_SEGMENT => categories + 3,
        LISTS_SEGMENT => categories + 4,
        _ => categories + 5,
    }
}

/// One row of `evaluation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Row {
    /// The model or baseline.
    pub model: String,
    /// The slice of cases (`all`, a history length, ...).
    pub segment: String,
    pub metric: String,
    /// The cut-off (0: not a cut-off metric).
    pub k: i32,
    /// The value (a mean over users, or a share).
    pub value: f64,
    /// Users behind the value.
    pub users: i64,
    /// Lower end of the 95% confidence interval (the value itself when
    /// there is no sample behind it).
    pub ci_low: f64,
    /// Upper end of the 95% confidence interval.
    pub ci_high: f64,
}

impl Row {
    /// A mean over users with its confidence interval; `share` bounds the
    /// interval to [0, 1].
    pub(crate) fn mean(model: &str, segment: &str, metric: &str, k: usize, m: Moments, share: bool) -> Row {
        let (v, h) = (m.mean(), m.ci95());
        let (lo, hi) = if share { ((v - h).max(0.0), (v + h).min(1.0)) } else { (v - h, v + h) };
        Row {
            model: model.into(),
            segment: segment.into(),
            metric: metric.into(),
            k: k as i32,
            value: v,
            users: m.n as i64,
            ci_low: lo,
            ci_high: hi,
        }
    }
}

/// The schema of `evaluation`.
pub(crate) fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("model", DataType::Utf8, false),
        Field::new("segment", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("k", DataType::Int32, false),
        Field::new("value", DataType::Float64, false),
        Field::new("users", DataType::Int32, false),
        Field::new("ci_low", DataType::Float64, false),
        Field::new("ci_high", DataType::Float64, false),
    ]))
}

/// `evaluation` rows as one batch.
pub(crate) fn batch(rows: &[Row]) -> Result<RecordBatch> {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.model.as_str()))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.segment.as_str()))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.metric.as_str()))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.k))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.value))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.users.clamp(0, i32::MAX as i64) as i32))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.ci_low))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.ci_high))),
        ],
    )
    .ctx("building evaluation")
}

/// `nightrec eval --cases`: one row per (model, test case) with the held-out
/// item's rank position (0 = first, ties split) and its NDCG@10 and HR@10,
/// for paired comparisons between runs or with another tool.
pub(crate) fn cases_batch(users: &[String], items: &[String], positions: &[Vec<f64>]) -> Result<RecordBatch> {
    let mut model = Vec::new();
    let (mut user, mut item, mut position, mut ndcg, mut hr) = (vec![], vec![], vec![], vec![], vec![]);
    for (name, places) in MODELS.iter().zip(positions) {
        for ((u, i), p) in users.iter().zip(items).zip(places) {
            let [_, n10, h10, _] = crate::metrics::Accuracy::user(&[*p], 1, 10);
            model.push(*name);
            user.push(u.as_str());
            item.push(i.as_str());
            position.push(*p);
            ndcg.push(n10);
            hr.push(h10);
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("model", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new("item_id", DataType::Utf8, false),
        Field::new("position", DataType::Float64, false),
        Field::new("ndcg_10", DataType::Float64, false),
        Field::new("hr_10", DataType::Float64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(model)),
            Arc::new(StringArray::from(user)),
            Arc::new(StringArray::from(item)),
            Arc::new(Float64Array::from(position)),
            Arc::new(Float64Array::from(ndcg)),
            Arc::new(Float64Array::from(hr)),
        ],
    )
    .ctx("building the evaluation cases")
}

/// `evaluation` rows read back from batches (of [`schema`]).
pub(crate) fn rows_of(batches: &[RecordBatch]) -> Result<Vec<Row>> {
    let model = arrays::strings_required(batches, "model")?;
    let segment = arrays::strings_required(batches, "segment")?;
    let metric = arrays::strings_required(batches, "metric")?;
    let k = arrays::ints(batches, "k")?;
    let value = arrays::floats(batches, "value")?;
    let users = arrays::ints(batches, "users")?;
    let lo = arrays::floats(batches, "ci_low")?;
    let hi = arrays::floats(batches, "ci_high")?;
    Ok((0..model.len())
        .map(|i| Row {
            model: model[i].clone(),
            segment: segment[i].clone(),
            metric: metric[i].clone(),
            k: k[i] as i32,
            value: value[i].unwrap_or(f64::NAN),
            users: users[i],
            ci_low: lo[i].unwrap_or(f64::NAN),
            ci_high: hi[i].unwrap_or(f64::NAN),
        })
        .collect())
}

/// The value of one row of `rows`, if present.
pub(crate) fn find(rows: &[Row], model: &str, segment: &str, metric: &str, k: i32) -> Option<f64> {
    rows.iter().find(|r| r.model == model && r.segment == segment && r.metric == metric && r.k == k).map(|r| r.value)
}

/// How a metric is written in facts and reports.
pub(crate) fn metric_label(metric: &str) -> &str {
    match metric {
        "ndcg" => "NDCG",
        "recall" => "Recall",
        "hr" => "HR",
        "mrr" => "MRR",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_through_a_batch() {
        let mut m = Moments::default();
        for v in [0.0, 1.0, 1.0] {
            m.push(v);
        }
        let rows = vec![
            Row::mean("nightrec", "all", "hr", 10, m, true),
            Row::mean("nightrec", LISTS_SEGMENT, "novelty", 10, m, false),
        ];
        assert!(rows[0].ci_high <= 1.0 && rows[1].ci_high > 1.0, "only shares are bounded");
        assert_eq!(rows[0].users, 3);
        assert_eq!(rows_of(&[batch(&rows).unwrap()]).unwrap(), rows);
        assert_eq!(find(&rows, "nightrec", "all", "hr", 10), Some(2.0 / 3.0));
        assert_eq!(find(&rows, "nightrec", "all", "hr", 20), None);
    }
}
