//! Golden tests for every statement under `sql/`: each
//! `tests/sql/<stage>/<table>/` folder holds the input tables as CSV (file
//! stem = table name; `raw_*` tables are read as text like real raw input),
//! optional `params.json`, and `expected.txt` with the result rows sorted,
//! so a reviewer reads a query, its inputs and its result side by side.
//! Further cases of the same statement (other parameters, say) live in
//! `tests/sql/<stage>/<table>@<case>/`. Of `sql/read/` (projections of one
//! table) only the statements with logic have fixtures.
//! `NIGHTREC_BLESS=1 make test` rewrites `expected.txt` (review the diff!).

use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::ScalarValue;
use datafusion::prelude::{CsvReadOptions, SessionContext, cast, ident};

fn fixtures_root() -> PathBuf {
    // Read at run time: the cargo target dir is shared by every clone on the
    // machine, so a path baked in at compile time can name another clone.
    let root = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from("."), PathBuf::from);
    root.join("tests/sql")
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
                serde_json::Value::Bool(b) => ScalarValue::Boolean(Some(b)),
                serde_json::Value::Number(n) if n.is_i64() => ScalarValue::Int64(n.as_i64()),
                serde_json::Value::Number(n) => ScalarValue::Float64(n.as_f64()),
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
        // `sql/read/` holds projections of one table; those with logic have
        // fixtures, the plain column lists are run by every end-to-end test.
        if !dir.is_dir() && f.stage == "read" {
            continue;
        }
        if !dir.is_dir() {
            failures.push(format!("sql/{}/{}.sql has no fixtures in {}", f.stage, f.table, dir.display()));
            continue;
        }
        let mut cases = vec![dir];
        let prefix = format!("{}@", f.table);
        let mut more: Vec<PathBuf> = std::fs::read_dir(fixtures_root().join(f.stage))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix)))
            .collect();
        more.sort();
        cases.extend(more);
        for dir in cases {
            let ctx = SessionContext::new_with_config(nightrec::engine::session_config(2));
            nightrec::engine::register_functions(&ctx);
            register_inputs(&ctx, &dir).await;
            let p = params(&dir);
            let p: Vec<(&str, ScalarValue)> = p.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            let batches = f.plan(&ctx, p).await.unwrap().collect().await;
            let got = match batches {
                Ok(b) => render(&b),
                Err(e) => {
                    failures.push(format!("sql/{}/{}.sql ({}) failed: {e}", f.stage, f.table, dir.display()));
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
                failures.push(format!("{}:\n--- expected\n{want}--- got\n{got}", dir.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Steps of `users` users with random items, for SQL that must agree with a
/// brute-force count at a size where the engine plans joins for real.
fn random_steps(users: usize, steps: usize, items: u64) -> datafusion::arrow::array::RecordBatch {
    use datafusion::arrow::array::{Int32Array, StringArray};
    use std::sync::Arc;
    let mut rng = nightrec::rng::Rng::new(11);
    let (mut u, mut s, mut i, mut split) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for user in 0..users {
        let n = 2 + rng.below(steps);
        for step in 1..=n {
            u.push(format!("u{user}"));
            s.push(step as i32);
            i.push(1 + rng.below(items as usize) as i32);
            split.push(if step == n {
                "test"
            } else if step + 1 == n {
                "valid"
            } else {
                "train"
            });
        }
    }
    datafusion::arrow::array::RecordBatch::try_from_iter(vec![
        ("user_id", Arc::new(StringArray::from(u)) as _),
        ("step", Arc::new(Int32Array::from(s)) as _),
        ("item_idx", Arc::new(Int32Array::from(i)) as _),
        ("split", Arc::new(StringArray::from(split)) as _),
    ])
    .unwrap()
}

/// Regression: written with `CROSS JOIN offsets o JOIN train b ON ... b.step =
/// a.step + o.d`, the query returned 4.3x too many pairs on MovieLens-100k
/// while passing its small golden fixture.
#[tokio::test]
async fn item_cooccurrence_matches_a_brute_force_count_at_scale() {
    use std::collections::{BTreeMap, BTreeSet};
    let batch = random_steps(300, 60, 80);
    let ctx = SessionContext::new();
    ctx.register_batch("steps", batch.clone()).unwrap();
    let f = nightrec::sql::file("trainset", "item_cooccurrence").unwrap();
    let got = f.collect(&ctx, vec![("window", ScalarValue::Int64(Some(3)))]).await.unwrap();
    let got: BTreeMap<(i64, i64), i64> = nightrec::arrays::ints(&got, "item_a")
        .unwrap()
        .into_iter()
        .zip(nightrec::arrays::ints(&got, "item_b").unwrap())
        .zip(nightrec::arrays::ints(&got, "users").unwrap())
        .collect();
    // Brute force: per user, distinct ordered pairs within 3 training steps, both ways.
    let batches = [batch];
    let users = nightrec::arrays::strings_required(&batches, "user_id").unwrap();
    let items = nightrec::arrays::ints(&batches, "item_idx").unwrap();
    let splits = nightrec::arrays::strings_required(&batches, "split").unwrap();
    let mut per_user: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for ((u, i), s) in users.iter().zip(&items).zip(&splits) {
        if s == "train" {
            per_user.entry(u.as_str()).or_default().push(*i);
        }
    }
    let mut want: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for seq in per_user.values() {
        let mut pairs = BTreeSet::new();
        for a in 0..seq.len() {
            for b in a + 1..(a + 4).min(seq.len()) {
                if seq[a] != seq[b] {
                    pairs.insert((seq[a], seq[b]));
                    pairs.insert((seq[b], seq[a]));
                }
            }
        }
        for p in pairs {
            *want.entry(p).or_default() += 1;
        }
    }
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
}
