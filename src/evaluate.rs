//! Stage `evaluate`: checkpoint + held-out items → `evaluation`.
//!
//! Leave-one-out: each user's last step is the test item, predicted from
//! everything before it; the full catalog is ranked with the user's history
//! masked the same way for every model. Baselines run in the same pass:
//! popularity (counted on everything but the test items).
//!
//! Safe to re-run: the output folder is replaced whole.

use std::sync::Arc;

use datafusion::arrow::array::{Float64Array, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use tch::{Kind, Tensor};

use crate::checkpoint;
use crate::error::{DfContext, Result};
use crate::job::Job;
use crate::metrics::RankSums;
use crate::parquet_io::{WrittenTable, write_batches};
use crate::seqdata::{self, left_pad};

/// Metrics are reported at this cut-off.
pub const K: i64 = 10;

/// Run the stage.
pub async fn run(job: &Job, device: tch::Device) -> Result<(Vec<WrittenTable>, Vec<(String, String)>)> {
    let data = seqdata::load(job).await?;
    let (_vs, model, _meta) = checkpoint::load(job, device).await?;
    let max_len = model.config().max_len as usize;
    let n_items = data.n_items();
    // (user, test item) pairs; each test item is predicted from everything
    // before the user's first test step.
    let cases: Vec<(usize, i64)> = (0..data.seqs.len())
        .flat_map(|u| {
            let s = data.split(u);
            let ok = !s.before_test.is_empty();
            s.test.iter().filter(move |_| ok).map(move |t| (u, *t))
        })
        .collect();

    let mut counts = vec![0f32; n_items as usize];
    for u in 0..data.seqs.len() {
        for i in data.split(u).before_test {
            counts[*i as usize] += 1.0;
        }
    }
    let pop = Tensor::from_slice(&counts).to_device(device).unsqueeze(0);
    let text = data.text_tensor(device);
    let (mut m, mut p) = (RankSums::default(), RankSums::default());
    tch::no_grad(|| {
        let items = model.item_table(&text);
        for chunk in cases.chunks(256) {
            let inputs: Vec<&[i64]> = chunk.iter().map(|(u, _)| data.split(*u).before_test).collect();
            let targets: Vec<i64> = chunk.iter().map(|(_, t)| *t).collect();
            let targets = Tensor::from_slice(&targets).to_device(device);
            let hist = left_pad(&inputs, usize::MAX, device);
            let scores = model.encode_last(&left_pad(&inputs, max_len, device), &items).matmul(&items.tr());
            m.add(&scores, &targets, &hist, K);
            let pop_scores = pop.expand([chunk.len() as i64, n_items], false).to_kind(Kind::Float);
            p.add(&pop_scores, &targets, &hist, K);
        }
    });
    let mut rows: Vec<(&str, &str, f64)> = Vec::new();
    for (name, s) in [("nightrec", &m), ("popularity", &p)] {
        rows.push((name, "ndcg", s.ndcg()));
        rows.push((name, "hr", s.hr()));
        rows.push((name, "mrr", s.mrr()));
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("model", DataType::Utf8, false),
        Field::new("segment", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("k", DataType::Int32, false),
        Field::new("value", DataType::Float64, false),
        Field::new("users", DataType::Int32, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|_| "all"))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|_| K as i32))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|_| m.users as i32))),
        ],
    )
    .ctx("building evaluation")?;
    let t = write_batches(
        &job.output,
        &job.work("evaluation"),
        "evaluation",
        schema,
        &[batch],
        &job.lineage,
        job.cfg.runtime.max_rows_per_file,
    )
    .await?;
    let facts = vec![
        ("test users".into(), m.users.to_string()),
        ("NDCG@10 nightrec / popularity".into(), format!("{:.4} / {:.4}", m.ndcg(), p.ndcg())),
        ("HR@10 nightrec / popularity".into(), format!("{:.4} / {:.4}", m.hr(), p.hr())),
    ];
    Ok((vec![t], facts))
}
