//! The pretrained item-text encoder against an independent NumPy forward
//! pass of the same weights (tests/fixtures/minilm_reference.json, made by
//! scripts/minilm_reference.py), and a semantic sanity check.

use nightrec::config::{Config, DEFAULT_CONFIG_TOML};
use nightrec::text::{TextEncoder, model_dir};

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
