//! `nightrec gen`: a deterministic synthetic e-commerce log in the input
//! contract's formats, for the bundled sample, tests and benchmarks.
//!
//! Users have a few favourite leaf categories; a session browses one
//! category, walking mostly to "neighbouring" items (so sequences carry
//! signal a sequence model can learn), with carts, purchases and searches.
//! Events are Hive-partitioned by day, alternating Parquet (RFC 3339 `ts`)
//! and NDJSON (epoch-millisecond `ts`); the catalog is NDJSON and users CSV.
//! About 1% of event rows break a cleaning rule on purpose (duplicates,
//! missing ids, unknown types and items, bad or out-of-window timestamps),
//! so that the sample exercises the quarantine.
//! The same arguments always give byte-identical files.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;

use crate::config::RunDate;
use crate::error::{DfContext, Error, Result};
use crate::rng::Rng;
use crate::storage::Root;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// Users.
    pub users: usize,
    /// Catalog items.
    pub items: usize,
    /// Approximate event rows.
    pub events: usize,
    /// Days of behaviour ending at `end_date`.
    pub days: u32,
    /// Seed.
    pub seed: u64,
    /// Last day with events.
    pub end_date: RunDate,
}

const TREE: &[(&str, &[(&str, &[&str])])] = &[
    ("Home", &[("Kitchen", &["Pans", "Knives", "Kettles"]), ("Bedroom", &["Pillows", "Blankets"])]),
    ("Sports", &[("Running", &["Shoes", "Jackets"]), ("Cycling", &["Helmets", "Gloves", "Lights"])]),
    ("Beauty", &[("Skin", &["Creams", "Serums"]), ("Hair", &["Shampoos", "Brushes"])]),
    ("Electronics", &[("Audio", &["Headphones", "Speakers"]), ("Computing", &["Keyboards", "Mice", "Monitors"])]),
    ("Grocery", &[("Coffee", &["Beans", "Capsules"]), ("Snacks", &["Nuts", "Chocolate"])]),
    ("Fashion", &[("Women", &["Dresses", "Scarves"]), ("Men", &["Shirts", "Belts", "Watches"])]),
];
const ADJ: &[&str] = &["Classic", "Premium", "Compact", "Eco", "Pro", "Soft", "Bold", "Smart", "Light", "Vintage", "Ultra", "Daily"];
const BRANDS: &[&str] = &["Acme", "Nordlys", "Brio", "Kestrel", "Lumo", "Vanta", "Orla", "Pico", "Tessel", "Zephyr"];

fn leaves() -> Vec<String> {
    let mut out = Vec::new();
    for (top, subs) in TREE {
        for (sub, leafs) in *subs {
            for leaf in *leafs {
                out.push(format!("{top} > {sub} > {leaf}"));
            }
        }
    }
    out
}

struct Item {
    id: String,
    leaf: usize,
}

/// Generate a dataset under `out` (`events/`, `items/`, `users/`).
pub async fn generate(out: &Root, o: &GenOptions) -> Result<Vec<(String, usize)>> {
    if o.users == 0 || o.items == 0 || o.days == 0 {
        return Err(Error::Usage("gen needs --users, --items and --days of at least 1".into()));
    }
    let mut rng = Rng::new(o.seed);
    let cats = leaves();
    let mut items = Vec::with_capacity(o.items);
    let mut catalog = String::new();
    for i in 0..o.items {
        let leaf = i % cats.len();
        let noun = cats[leaf].rsplit(" > ").next().unwrap_or("Thing").trim_end_matches('s');
        let adj = ADJ[rng.below(ADJ.len())];
        let brand = BRANDS[rng.below(BRANDS.len())];
        let title = format!("{adj} {noun} {}", 100 + i);
        let desc = format!("A {} {} by {brand}, made for everyday use.", adj.to_lowercase(), noun.to_lowercase());
        let id = format!("I{:06}", i + 1);
        let price = 5.0 + (rng.f64() * 195.0 * 100.0).round() / 100.0;
        let in_stock = rng.f64() > 0.05;
        let rec = serde_json::json!({
            "item_id": id, "title": title, "description": desc, "category": cats[leaf],
            "brand": brand, "price": price, "in_stock": in_stock, "created_at": "2026-01-01T00:00:00Z"
        });
        let _ = writeln!(catalog, "{rec}");
        items.push(Item { id, leaf });
    }
    // Items of each leaf, in catalog order: "neighbours" are adjacent here.
    let mut by_leaf: Vec<Vec<usize>> = vec![Vec::new(); cats.len()];
    for (i, it) in items.iter().enumerate() {
        by_leaf[it.leaf].push(i);
    }

    let mut users_csv = String::from("user_id,signup_ts\n");
    let prefs: Vec<Vec<usize>> = (0..o.users)
        .map(|u| {
            let _ = writeln!(users_csv, "U{:06},2025-{:02}-{:02}T08:00:00Z", u + 1, 1 + u % 12, 1 + u % 28);
            (0..1 + rng.below(3)).map(|_| rng.below(cats.len())).collect()
        })
        .collect();

    // Sessions until the event budget is spent; activity is skewed so some
    // users are heavy and a few never act (cold users).
    let start_ms = o.end_date.minus_days(o.days - 1).start_millis();
    let day_ms = 86_400_000i64;
    let weights: Vec<f64> = (0..o.users).map(|u| if u % 17 == 16 { 0.0 } else { 1.0 / (1.0 + (u % 10) as f64) }).collect();
    let mut rows: Vec<[Option<String>; 7]> = Vec::with_capacity(o.events + o.events / 50);
    let mut n_event = 0usize;
    while rows.len() < o.events {
        let u = rng.weighted(&weights);
        let user = format!("U{:06}", u + 1);
        let leaf = if rng.f64() < 0.85 { prefs[u][rng.below(prefs[u].len())] } else { rng.below(cats.len()) };
        let pool = &by_leaf[leaf];
        if pool.is_empty() {
            continue;
        }
        let day = rng.below(o.days as usize) as i64;
        let mut ts = start_ms + day * day_ms + (rng.f64() * (day_ms as f64 - 3_600_000.0)) as i64;
        let mut pos = rng.below(pool.len());
        let mut push = |rows: &mut Vec<[Option<String>; 7]>, ts: i64, item: Option<&str>, kind: &str, query: Option<String>| {
            n_event += 1;
            rows.push([
                Some(format!("E{n_event:09}")),
                Some(user.clone()),
                item.map(str::to_string),
                Some(kind.to_string()),
                Some(ts.to_string()),
                query,
                None,
            ]);
        };
        if rng.f64() < 0.3 {
            let noun = cats[leaf].rsplit(" > ").next().unwrap_or("").to_lowercase();
            let q = format!("{} {noun}", ADJ[rng.below(ADJ.len())].to_lowercase());
            push(&mut rows, ts, None, "search", Some(q));
            ts += 5_000;
        }
        for _ in 0..2 + rng.below(6) {
            let it = &items[pool[pos]];
            push(&mut rows, ts, Some(&it.id), "view", None);
            ts += 20_000 + rng.below(120_000) as i64;
            let r = rng.f64();
            if r < 0.15 {
                push(&mut rows, ts, Some(&it.id), "add_to_cart", None);
                ts += 10_000;
                if rng.f64() < 0.5 {
                    push(&mut rows, ts, Some(&it.id), "purchase", None);
                    ts += 10_000;
                }
            }
            // Mostly walk to the next item of the category, sometimes jump.
            pos = if rng.f64() < 0.75 { (pos + 1) % pool.len() } else { rng.below(pool.len()) };
        }
    }
    // Rule-breaking rows, about 1%.
    let n_bad = (rows.len() / 100).max(6);
    for b in 0..n_bad {
        let mut r = rows[rng.below(rows.len())].clone();
        match b % 6 {
            0 => {} // exact duplicate
            1 => r[1] = None,
            2 => r[3] = Some("hover".into()),
            3 => r[2] = Some("NO-SUCH-ITEM".into()),
            4 => r[4] = Some("not-a-time".into()),
            _ => r[4] = Some((start_ms - 40 * day_ms).to_string()),
        }
        if b % 6 != 0 {
            n_event += 1;
            r[0] = Some(format!("E{n_event:09}"));
        }
        rows.push(r);
    }
    let mut written = Vec::new();
    // Partition by the day of the (valid) timestamp; broken ones go to day 0.
    let mut per_day: Vec<Vec<&[Option<String>; 7]>> = vec![Vec::new(); o.days as usize];
    for r in &rows {
        let d = r[4].as_deref().and_then(|t| t.parse::<i64>().ok()).map(|t| (t - start_ms).div_euclid(day_ms)).unwrap_or(0);
        per_day[d.clamp(0, o.days as i64 - 1) as usize].push(r);
    }
    for (d, day_rows) in per_day.iter_mut().enumerate() {
        day_rows.sort_by(|a, b| a[4].cmp(&b[4]).then(a[0].cmp(&b[0])));
        let date = o.end_date.minus_days(o.days - 1).plus_days(d as u32);
        let folder = format!("events/{}", date.partition());
        let (path, data) = if d % 2 == 0 {
            (format!("{folder}/part-00000.parquet"), events_parquet(day_rows)?)
        } else {
            (format!("{folder}/part-00000.jsonl"), events_jsonl(day_rows))
        };
        out.put(&out.path(&path), Bytes::from(data)).await?;
        written.push((path, day_rows.len()));
    }
    out.put(&out.path("items/items.jsonl"), Bytes::from(catalog)).await?;
    written.push(("items/items.jsonl".into(), items.len()));
    out.put(&out.path("users/users.csv"), Bytes::from(users_csv)).await?;
    written.push(("users/users.csv".into(), o.users));
    Ok(written)
}

const EVENT_COLS: [&str; 6] = ["event_id", "user_id", "item_id", "event_type", "ts", "query"];

fn rfc3339(ms_text: &str) -> String {
    ms_text
        .parse::<i64>()
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms_text.to_string())
}

fn events_parquet(rows: &[&[Option<String>; 7]]) -> Result<Vec<u8>> {
    let schema = Arc::new(Schema::new(EVENT_COLS.iter().map(|c| Field::new(*c, DataType::Utf8, true)).collect::<Vec<_>>()));
    let cols: Vec<ArrayRef> = (0..EVENT_COLS.len())
        .map(|c| {
            let vals = rows.iter().map(|r| match c {
                4 => r[4].as_deref().map(rfc3339),
                5 => r[5].clone(),
                _ => r[c].clone(),
            });
            Arc::new(StringArray::from_iter(vals)) as ArrayRef
        })
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), cols).ctx("building generated events")?;
    let mut w = ArrowWriter::try_new(Vec::new(), schema, None).ctx("writing generated events")?;
    w.write(&batch).ctx("writing generated events")?;
    w.into_inner().ctx("writing generated events")
}

fn events_jsonl(rows: &[&[Option<String>; 7]]) -> Vec<u8> {
    let mut s = String::new();
    for r in rows {
        let mut m = serde_json::Map::new();
        for (c, name) in EVENT_COLS.iter().enumerate() {
            let v = match (c, &r[c]) {
                (_, None) => continue,
                // Epoch milliseconds as a JSON number when it is one.
                (4, Some(t)) => t.parse::<i64>().map(serde_json::Value::from).unwrap_or_else(|_| t.clone().into()),
                (_, Some(t)) => t.clone().into(),
            };
            m.insert((*name).to_string(), v);
        }
        let _ = writeln!(s, "{}", serde_json::Value::Object(m));
    }
    s.into_bytes()
}
