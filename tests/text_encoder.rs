//! The pretrained item-text encoder against an independent NumPy forward
//! pass of the same weights (tests/fixtures/minilm_reference.json, made by
//! scripts/minilm_reference.py), and a semantic sanity check.

use nightrec::config::{Config, DEFAULT_CONFIG_TOML};
use nightrec::encoders::{TextEncoder, model_dir};

fn encoder() -> TextEncoder {
    let cfg = Config::from_toml_with_env(DEFAULT_CONFIG_TOML, "test", &[]).unwrap();
    TextEncoder::load(&model_dir(&cfg), 128, tch::Device::Cpu)
        .expect("model files (make test runs scripts/setup-models.sh)")
}

fn cos(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum()
}

#[test]
fn minilm_matches_the_numpy_reference() {
    let fixture: serde_json::Value = serde_json::from_str(include_str!("fixtures/minilm_reference.json")).unwrap();
    let cases = fixture["sentences"].as_array().unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let enc = encoder();
    assert_eq!(enc.dim(), 384);
    // Batches of 3 mix lengths, so padding is exercised too.
    let got = enc.embed(&texts, 3).unwrap();
    let mut worst = f64::INFINITY;
    for (i, c) in cases.iter().enumerate() {
        let want: Vec<f32> = c["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let mine = &got[i * 384..(i + 1) * 384];
        let sim = cos(mine, &want);
        assert!(sim >= 0.999, "{:?}: cosine {sim} with the reference", texts[i]);
        worst = worst.min(sim);
        let norm = cos(mine, mine).sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not unit length: {norm}");
    }
    eprintln!("lowest cosine with the NumPy reference over {} texts: {worst:.6}", texts.len());
}

#[test]
fn paraphrases_score_higher_than_unrelated_titles_and_empty_text_is_zero() {
    let texts = [
        "Stainless steel frying pan, 28 cm",
        "28cm skillet made of stainless steel",
        "Noise cancelling wireless headphones",
        "Bluetooth over-ear headphones with active noise cancellation",
        "Organic dark roast coffee beans",
        "",
    ];
    let e = encoder().embed(&texts, 8).unwrap();
    let v = |i: usize| &e[i * 384..(i + 1) * 384];
    for (a, b) in [(0, 1), (2, 3)] {
        for other in [0, 1, 2, 3, 4].into_iter().filter(|o| *o != a && *o != b) {
            assert!(cos(v(a), v(b)) > cos(v(a), v(other)) + 0.1, "{} ~ {} vs {}", texts[a], texts[b], texts[other]);
        }
    }
    assert!(v(5).iter().all(|x| *x == 0.0));
}

/// "texts encoded / from cache" of a run's summary.
fn cache_use(stdout: &str) -> (u64, u64) {
    let line = stdout.lines().find(|l| l.contains("texts encoded / from cache:")).expect("cache fact in the summary");
    let v: Vec<u64> = line.rsplit(':').next().unwrap().split('/').map(|x| x.trim().parse().unwrap()).collect();
    (v[0], v[1])
}

const EMBEDDINGS: &str = r#"
import sys, json
import pyarrow.parquet as pq
rows = pq.read_table(sys.argv[1] + "/item_text_embeddings").to_pylist()
print(json.dumps({r["item_id"]: r["embedding"] for r in rows}))
"#;

/// Night 2 encodes only new or changed item texts; unchanged items keep
/// the very vectors of night 1.
#[test]
fn text_embeddings_are_cached_across_dates() {
    use crate::common::*;
    let fx = Fixture::new("60", "40", "3000");
    let run = |date: &str| {
        let args = ["--input", &fx.input(), "--output", &fx.output(), "run", "--date", date];
        let mut a: Vec<&str> = args.to_vec();
        a.extend_from_slice(&["--stage", "clean", "--stage", "trainset", "--stage", "text"]);
        let o = nightrec(&a, &[], fx.dir.path());
        assert!(o.status.success(), "{}", text(&o));
        let emb: serde_json::Value =
            serde_json::from_str(py(EMBEDDINGS, &[&format!("{}/_work/dt={date}", fx.output())]).trim()).unwrap();
        (cache_use(&String::from_utf8_lossy(&o.stdout)), emb)
    };
    let ((encoded, hits), night1) = run("2026-11-20");
    assert!(encoded >= 40 && hits == 0, "{encoded} / {hits}");
    let ((encoded2, hits2), night2) = run("2026-11-21");
    assert_eq!((encoded2, hits2), (0, encoded), "night 2 encoded again");
    assert_eq!(night1, night2);
    // Change one title: exactly that item is encoded again.
    let items = std::path::Path::new(&fx.input()).join("items/items.jsonl");
    let body = std::fs::read_to_string(&items).unwrap();
    let mut lines: Vec<String> = body.lines().map(str::to_string).collect();
    let mut first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let changed = first["item_id"].as_str().unwrap().to_string();
    first["title"] = serde_json::Value::from("Completely Different Garden Hose");
    lines[0] = first.to_string();
    std::fs::write(&items, lines.join("\n") + "\n").unwrap();
    let ((encoded3, hits3), night3) = run("2026-11-22");
    assert_eq!((encoded3, hits3), (1, encoded - 1));
    assert_ne!(night3[&changed], night2[&changed]);
    let same = night2.as_object().unwrap().iter().filter(|(k, v)| **k != changed && night3[k.as_str()] == **v).count();
    assert_eq!(same, night2.as_object().unwrap().len() - 1);
}

const ZERO_TEXT: &str = r#"
import sys
import pyarrow.parquet as pq
work, date = sys.argv[1], sys.argv[2]
rows = pq.read_table(work + "/item_text_embeddings").to_pylist()
assert rows and all(len(r["embedding"]) == 384 and not any(r["embedding"]) for r in rows), "text embeddings of an ids-only catalogue"
users = pq.read_table(f"{work}/../../user_embeddings/dt={date}").num_rows
cand = pq.read_table(f"{work}/../../user_candidates/dt={date}").to_pylist()
assert users > 50 and len({r["user_id"] for r in cand}) >= users, (users, len(cand))
ev = {(r["model"], r["metric"]): r["value"] for r in pq.read_table(f"{work}/../../evaluation/dt={date}").to_pylist() if r["segment"] == "all" and r["k"] == 10}
assert ev[("nightrec", "ndcg")] > 0, ev
print(ev[("nightrec", "ndcg")], ev[("popularity", "ndcg")])
"#;

/// A catalogue of ids only (no title, category, brand or description):
/// every text embedding is a zero vector of the encoder's width, and the
/// whole night runs (the model falls back to free ID embeddings).
#[test]
fn an_ids_only_catalogue_runs_the_whole_night() {
    use crate::common::*;
    let fx = Fixture::new("200", "150", "12000");
    let items = std::path::Path::new(&fx.input()).join("items/items.jsonl");
    let body = std::fs::read_to_string(&items).unwrap();
    let stripped: Vec<String> = body
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            for k in ["title", "category", "brand", "description"] {
                o.remove(k);
            }
            v.to_string()
        })
        .collect();
    std::fs::write(&items, stripped.join("\n") + "\n").unwrap();
    let date = "2026-11-21";
    let args = ["--input", &fx.input(), "--output", &fx.output(), "run", "--date", date];
    let o = nightrec(&args, &small_env(), fx.dir.path());
    assert!(o.status.success(), "an ids-only catalogue failed: {}", text(&o));
    py(ZERO_TEXT, &[&format!("{}/_work/dt={date}", fx.output()), date]);
}

/// Regression: the text stage's fingerprint covered `[text]` only, so new
/// encoder weights under the same settings kept yesterday's embeddings. A
/// copy of the model whose files change (here `config.json`, by a byte of
/// whitespace) reruns the text stage and everything after it.
#[test]
fn new_encoder_files_rerun_the_text_stage() {
    use crate::common::*;
    let fx = Fixture::new("60", "40", "3000");
    let cfg = Config::from_toml_with_env(DEFAULT_CONFIG_TOML, "test", &[]).unwrap();
    let copy = fx.dir.path().join("model");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(model_dir(&cfg).join(f), copy.join(f)).unwrap();
    }
    let dir = copy.display().to_string();
    let mut env: Vec<(&str, &str)> = small_env();
    env.push(("NIGHTREC_TEXT__MODEL_DIR", &dir));
    env.push(("NIGHTREC_MODEL__EPOCHS", "1"));
    env.push(("NIGHTREC_MODEL__PRETRAIN_EPOCHS", "0"));
    let args = ["--input", &fx.input(), "--output", &fx.output(), "run", "--date", DATE];
    let ran = |o: &std::process::Output| -> Vec<String> {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (w.len() > 1 && w[1] == "ran").then(|| w[0].to_string())
            })
            .collect()
    };
    let o = nightrec(&args, &env, fx.dir.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(ran(&nightrec(&args, &env, fx.dir.path())).is_empty(), "a rerun with nothing changed ran stages");
    let mut config = std::fs::read(copy.join("config.json")).unwrap();
    config.push(b'\n');
    std::fs::write(copy.join("config.json"), config).unwrap();
    let o = nightrec(&args, &env, fx.dir.path());
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(ran(&o), ["text", "train", "embed", "candidates", "evaluate", "publish"], "{}", text(&o));
}
