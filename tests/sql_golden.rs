//! Golden tests for every statement under `sql/`: each
//! `tests/sql/<stage>/<table>/` folder holds the input tables as CSV (file
//! stem = table name; `raw_*` tables are read as text like real raw input),
//! optional `params.json`, and `expected.txt` with the result rows sorted,
//! so a reviewer reads a query, its inputs and its result side by side.
//! `NIGHTREC_BLESS=1 make test` rewrites `expected.txt` (review the diff!).

use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::ScalarValue;
use datafusion::prelude::{CsvReadOptions, SessionContext, cast, ident};

fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql")
}

async fn register_inputs(ctx: &SessionContext, dir: &Path) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "csv")) {
        let name = f.file_stem().unwrap().to_str().unwrap().to_string();
        let df = ctx.read_csv(f.to_str().unwrap(), CsvReadOptions::new().has_header(true)).await.unwrap();
        let df = if name.starts_with("raw_") {
            let cols: Vec<_> = df
                .schema()
                .fields()
                .iter()
                .map(|fl| {
                    let t = if fl.name() == "_position" { DataType::UInt64 } else { DataType::Utf8 };
                    cast(ident(fl.name()), t).alias(fl.name())
                })
                .collect();
            df.select(cols).unwrap()
        } else {
            df
        };
        ctx.register_table(name.as_str(), df.into_view()).unwrap();
    }
}

fn params(dir: &Path) -> Vec<(String, ScalarValue)> {
    let Ok(text) = std::fs::read_to_string(dir.join("params.json")) else { return Vec::new() };
    let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    v.into_iter()
        .map(|(k, v)| {
            let s = match v {
                serde_json::Value::Number(n) => ScalarValue::Int64(n.as_i64()),
                serde_json::Value::String(s) if s.starts_with("ts:") => {
                    let t = chrono::DateTime::parse_from_rfc3339(&s[3..]).unwrap();
                    nightrec::sql::ts_param(t.timestamp_millis())
                }
                serde_json::Value::String(s) => ScalarValue::Utf8(Some(s)),
                other => panic!("unsupported param {other}"),
            };
            (k, s)
        })
        .collect()
}

fn render(batches: &[RecordBatch]) -> String {
    let opts = FormatOptions::default().with_null("NULL");
    let mut header = String::new();
    let mut rows = Vec::new();
    for b in batches {
        if header.is_empty() {
            header = b.schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(" | ");
        }
        let fmts: Vec<_> = b.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap()).collect();
        for r in 0..b.num_rows() {
            rows.push(fmts.iter().map(|f| f.value(r).to_string()).collect::<Vec<_>>().join(" | "));
        }
    }
    rows.sort();
    format!("{header}\n{}\n", rows.join("\n"))
}

#[tokio::test]
async fn every_sql_file_matches_its_golden_result() {
    let bless = std::env::var("NIGHTREC_BLESS").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    for f in nightrec::sql::ALL {
        let dir = fixtures_root().join(f.stage).join(f.table);
        if !dir.is_dir() {
            failures.push(format!("sql/{}/{}.sql has no fixtures in {}", f.stage, f.table, dir.display()));
            continue;
        }
        let ctx = SessionContext::new();
        register_inputs(&ctx, &dir).await;
        let p = params(&dir);
        let p: Vec<(&str, ScalarValue)> = p.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let batches = f.plan(&ctx, p).await.unwrap().collect().await;
        let got = match batches {
            Ok(b) => render(&b),
            Err(e) => {
                failures.push(format!("sql/{}/{}.sql failed: {e}", f.stage, f.table));
                continue;
            }
        };
        let expected_path = dir.join("expected.txt");
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if want != got {
            failures.push(format!("sql/{}/{}.sql:\n--- expected\n{want}--- got\n{got}", f.stage, f.table));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
