//! `nightrec gen`: a deterministic synthetic e-commerce log in the input
//! contract's formats, for the bundled sample, tests and benchmarks.
//!
//! Users have a few favourite leaf categories; a session browses one
//! category, walking mostly to "neighbouring" items (so sequences carry
//! signal a sequence model can learn), with carts, purchases and searches.
//! Events are Hive-partitioned by day and cycle through the three input
//! formats: Parquet (RFC 3339 `ts`), NDJSON and CSV (epoch-millisecond
//! `ts`); the catalog is NDJSON and users CSV. About 1% of event rows break
//! a cleaning rule on purpose (malformed records, duplicates, missing ids,
//! unknown types and items, bad or out-of-window timestamps), so that the
//! sample exercises the quarantine. Days are generated one at a time, so
//! memory stays bounded by one day's events whatever `--events` is.
//! The same arguments always give byte-identical files.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

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

/// A top-level category with its sub-categories and their leaves.
type Branch = (&'static str, &'static [(&'static str, &'static [&'static str])]);

const TREE: &[Branch] = &[
    ("Home", &[("Kitchen", &["Pans", "Knives", "Kettles"]), ("Bedroom", &["Pillows", "Blankets"])]),
    ("Sports", &[("Running", &["Shoes", "Jackets"]), ("Cycling", &["Helmets", "Gloves", "Lights"])]),
    ("Beauty", &[("Skin", &["Creams", "Serums"]), ("Hair", &["Shampoos", "Brushes"])]),
    ("Electronics", &[("Audio", &["Headphones", "Speakers"]), ("Computing", &["Keyboards", "Mice", "Monitors"])]),
    ("Grocery", &[("Coffee", &["Beans", "Capsules"]), ("Snacks", &["Nuts", "Chocolate"])]),
    ("Fashion", &[("Women", &["Dresses", "Scarves"]), ("Men", &["Shirts", "Belts", "Watches"])]),
];
const ADJ: &[&str] =
    &["Classic", "Premium", "Compact", "Eco", "Pro", "Soft", "Bold", "Smart", "Light", "Vintage", "Ultra", "Daily"];
const BRANDS: &[&str] = &["Acme", "Nordlys", "Brio", "Kestrel", "Lumo", "Vanta", "Orla", "Pico", "Tessel", "Zephyr"];
const DAY_MS: i64 = 86_400_000;

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

/// A rule a generated row breaks on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flaw {
    Duplicate,
    MissingUser,
    UnknownType,
    UnknownItem,
    BadTimestamp,
    OutOfWindow,
    Malformed,
}

const FLAWS: [Flaw; 7] = [
    Flaw::Duplicate,
    Flaw::MissingUser,
    Flaw::UnknownType,
    Flaw::UnknownItem,
    Flaw::BadTimestamp,
    Flaw::OutOfWindow,
    Flaw::Malformed,
];

/// One generated event row.
#[derive(Debug, Clone)]
struct Event {
    id: u64,
    user: Option<u32>,
    item: Option<u32>,
    kind: &'static str,
    ts: i64,
    query: Option<String>,
    price: Option<f64>,
    flaw: Option<Flaw>,
}

impl Event {
    fn event_id(&self) -> String {
        format!("E{:09}", self.id)
    }
    fn user_id(&self) -> Option<String> {
        self.user.map(|u| format!("U{:06}", u + 1))
    }
    fn item_id(&self) -> Option<String> {
        match (self.flaw, self.item) {
            (Some(Flaw::UnknownItem), _) => Some("NO-SUCH-ITEM".into()),
            (_, Some(i)) => Some(format!("I{:06}", i + 1)),
            (_, None) => None,
        }
    }
    fn kind(&self) -> &'static str {
        if self.flaw == Some(Flaw::UnknownType) { "hover" } else { self.kind }
    }
    /// The timestamp as epoch milliseconds text, or a broken one.
    fn ts_millis(&self) -> String {
        if self.flaw == Some(Flaw::BadTimestamp) { "not-a-time".into() } else { self.ts.to_string() }
    }
    fn ts_rfc3339(&self) -> String {
        if self.flaw == Some(Flaw::BadTimestamp) {
            return "not-a-time".into();
        }
        chrono::DateTime::from_timestamp_millis(self.ts)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_default()
    }
    /// The price as text; a malformed Parquet row gets an unparsable one.
    fn price_text(&self) -> Option<String> {
        if self.flaw == Some(Flaw::Malformed) {
            return Some("twelve".into());
        }
        self.price.map(|p| format!("{p:.2}"))
    }
}

/// The synthetic world: catalog, users and their tastes.
struct World {
    cats: Vec<String>,
    by_leaf: Vec<Vec<u32>>,
    prefs: Vec<Vec<usize>>,
    /// Cumulative activity weights of users (for sampling a user).
    cum_weights: Vec<f64>,
    prices: Vec<f64>,
}

impl World {
    fn pick_user(&self, rng: &mut Rng) -> usize {
        let total = self.cum_weights.last().copied().unwrap_or(0.0);
        let x = rng.f64() * total;
        self.cum_weights.partition_point(|c| *c <= x).min(self.cum_weights.len() - 1)
    }
}

/// Generate a dataset under `out` (`events/`, `items/`, `users/`).
pub async fn generate(out: &Root, o: &GenOptions) -> Result<Vec<(String, usize)>> {
    if o.users == 0 || o.items == 0 || o.days == 0 {
        return Err(Error::Usage("gen needs --users, --items and --days of at least 1".into()));
    }
    let mut rng = Rng::new(o.seed);
    let cats = leaves();
    let mut catalog = String::new();
    let mut by_leaf: Vec<Vec<u32>> = vec![Vec::new(); cats.len()];
    let mut prices = Vec::with_capacity(o.items);
    for i in 0..o.items {
        let leaf = i % cats.len();
        let noun = cats[leaf].rsplit(" > ").next().unwrap_or("Thing").trim_end_matches('s');
        let adj = ADJ[rng.below(ADJ.len())];
        let brand = BRANDS[rng.below(BRANDS.len())];
        let price = 5.0 + (rng.f64() * 195.0 * 100.0).round() / 100.0;
        let rec = serde_json::json!({
            "item_id": format!("I{:06}", i + 1),
            "title": format!("{adj} {noun} {}", 100 + i),
            "description": format!("A {} {} by {brand}, made for everyday use.", adj.to_lowercase(), noun.to_lowercase()),
            "category": cats[leaf],
            "brand": brand,
            "price": price,
            "in_stock": rng.f64() > 0.05,
            "created_at": "2026-01-01T00:00:00Z"
        });
        let _ = writeln!(catalog, "{rec}");
        // Items of each leaf, in catalog order: "neighbours" are adjacent here.
        by_leaf[leaf].push(i as u32);
        prices.push(price);
    }
    let mut users_csv = String::from("user_id,signup_ts\n");
    let mut prefs = Vec::with_capacity(o.users);
    let mut cum_weights = Vec::with_capacity(o.users);
    let mut acc = 0.0;
    for u in 0..o.users {
        let _ = writeln!(users_csv, "U{:06},2025-{:02}-{:02}T08:00:00Z", u + 1, 1 + u % 12, 1 + u % 28);
        prefs.push((0..1 + rng.below(3)).map(|_| rng.below(cats.len())).collect::<Vec<_>>());
        // Skewed activity: some users are heavy, and every 17th never acts (cold users).
        acc += if u % 17 == 16 { 0.0 } else { 1.0 / (1.0 + (u % 10) as f64) };
        cum_weights.push(acc);
    }
    let world = World { cats, by_leaf, prefs, cum_weights, prices };

    let first_day = o.end_date.minus_days(o.days - 1);
    let mut written = Vec::new();
    let mut next_id = 0u64;
    for d in 0..o.days {
        // Spread the event budget evenly; the first days take the remainder.
        let budget = o.events / o.days as usize + usize::from((d as usize) < o.events % o.days as usize);
        let day = first_day.plus_days(d);
        let rows = day_events(&world, &mut rng, day.start_millis(), first_day.start_millis(), budget, &mut next_id);
        let folder = format!("events/{}", day.partition());
        let (path, data) = match d % 3 {
            0 => (format!("{folder}/part-00000.parquet"), events_parquet(&rows)?),
            1 => (format!("{folder}/part-00000.jsonl"), events_jsonl(&rows)),
            _ => (format!("{folder}/part-00000.csv"), events_csv(&rows)),
        };
        out.put(&out.path(&path), Bytes::from(data)).await?;
        written.push((path, rows.len()));
    }
    out.put(&out.path("items/items.jsonl"), Bytes::from(catalog)).await?;
    written.push(("items/items.jsonl".into(), o.items));
    out.put(&out.path("users/users.csv"), Bytes::from(users_csv)).await?;
    written.push(("users/users.csv".into(), o.users));
    Ok(written)
}

/// One day's events, sorted by time, about 1% of them flawed on purpose.
fn day_events(
    w: &World,
    rng: &mut Rng,
    day_start: i64,
    window_start: i64,
    budget: usize,
    next_id: &mut u64,
) -> Vec<Event> {
    let mut rows: Vec<Event> = Vec::with_capacity(budget + budget / 50);
    while rows.len() < budget {
        let u = w.pick_user(rng);
        let leaf = if rng.f64() < 0.85 { w.prefs[u][rng.below(w.prefs[u].len())] } else { rng.below(w.cats.len()) };
        let pool = &w.by_leaf[leaf];
        if pool.is_empty() {
            continue;
        }
        let mut ts = day_start + (rng.f64() * (DAY_MS as f64 - 3_600_000.0)) as i64;
        let mut pos = rng.below(pool.len());
        let mut push = |rows: &mut Vec<Event>,
                        ts: i64,
                        item: Option<u32>,
                        kind: &'static str,
                        query: Option<String>,
                        price: Option<f64>| {
            *next_id += 1;
            rows.push(Event { id: *next_id, user: Some(u as u32), item, kind, ts, query, price, flaw: None });
        };
        if rng.f64() < 0.3 {
            let noun = w.cats[leaf].rsplit(" > ").next().unwrap_or("").to_lowercase();
            let q = format!("{} {noun}", ADJ[rng.below(ADJ.len())].to_lowercase());
            push(&mut rows, ts, None, "search", Some(q), None);
            ts += 5_000;
        }
        for _ in 0..2 + rng.below(6) {
            let it = pool[pos];
            push(&mut rows, ts, Some(it), "view", None, None);
            ts += 20_000 + rng.below(120_000) as i64;
            if rng.f64() < 0.15 {
                push(&mut rows, ts, Some(it), "add_to_cart", None, None);
                ts += 10_000;
                if rng.f64() < 0.5 {
                    push(&mut rows, ts, Some(it), "purchase", None, Some(w.prices[it as usize]));
                    ts += 10_000;
                }
            }
            // Mostly walk to the next item of the category, sometimes jump.
            pos = if rng.f64() < 0.75 { (pos + 1) % pool.len() } else { rng.below(pool.len()) };
        }
    }
    let n_bad = (rows.len() / 100).max(FLAWS.len());
    for b in 0..n_bad {
        let mut r = rows[rng.below(rows.len())].clone();
        let flaw = FLAWS[b % FLAWS.len()];
        if flaw != Flaw::Duplicate {
            *next_id += 1;
            r.id = *next_id;
            r.flaw = Some(flaw);
        }
        match flaw {
            Flaw::MissingUser => r.user = None,
            Flaw::UnknownItem if r.item.is_none() => r.kind = "view",
            Flaw::OutOfWindow => r.ts = window_start - 40 * DAY_MS,
            _ => {}
        }
        rows.push(r);
    }
    rows.sort_by(|a, b| a.ts.cmp(&b.ts).then(a.id.cmp(&b.id)));
    rows
}

const EVENT_COLS: [&str; 7] = ["event_id", "user_id", "item_id", "event_type", "ts", "query", "price"];

fn events_parquet(rows: &[Event]) -> Result<Vec<u8>> {
    let schema =
        Arc::new(Schema::new(EVENT_COLS.iter().map(|c| Field::new(*c, DataType::Utf8, true)).collect::<Vec<_>>()));
    let col = |f: &dyn Fn(&Event) -> Option<String>| Arc::new(rows.iter().map(f).collect::<StringArray>()) as ArrayRef;
    let cols = vec![
        col(&|e| Some(e.event_id())),
        col(&|e| e.user_id()),
        col(&|e| e.item_id()),
        col(&|e| Some(e.kind().to_string())),
        col(&|e| Some(e.ts_rfc3339())),
        col(&|e| e.query.clone()),
        col(&|e| e.price_text()),
    ];
    let batch = RecordBatch::try_new(schema.clone(), cols).ctx("building generated events")?;
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
    let mut w = ArrowWriter::try_new(Vec::new(), schema, Some(props)).ctx("writing generated events")?;
    w.write(&batch).ctx("writing generated events")?;
    w.into_inner().ctx("writing generated events")
}

fn events_jsonl(rows: &[Event]) -> Vec<u8> {
    let mut s = String::new();
    for e in rows {
        if e.flaw == Some(Flaw::Malformed) {
            // A line cut off in the middle, as a crashed writer leaves it.
            let _ = writeln!(
                s,
                "{{\"event_id\":\"{}\",\"user_id\":\"{}\",\"item",
                e.event_id(),
                e.user_id().unwrap_or_default()
            );
            continue;
        }
        let mut m = serde_json::Map::new();
        m.insert("event_id".into(), e.event_id().into());
        if let Some(u) = e.user_id() {
            m.insert("user_id".into(), u.into());
        }
        if let Some(i) = e.item_id() {
            m.insert("item_id".into(), i.into());
        }
        m.insert("event_type".into(), e.kind().into());
        // Epoch milliseconds as a JSON number when it is one.
        let ts = e.ts_millis();
        m.insert("ts".into(), ts.parse::<i64>().map(serde_json::Value::from).unwrap_or_else(|_| ts.into()));
        if let Some(q) = &e.query {
            m.insert("query".into(), q.clone().into());
        }
        if let Some(p) = e.price {
            m.insert("price".into(), p.into());
        }
        let _ = writeln!(s, "{}", serde_json::Value::Object(m));
    }
    s.into_bytes()
}

fn events_csv(rows: &[Event]) -> Vec<u8> {
    let mut s = String::from("event_id,user_id,item_id,event_type,ts,query,price\n");
    for e in rows {
        if e.flaw == Some(Flaw::Malformed) {
            // A row with a missing field.
            let _ = writeln!(s, "{},{},{}", e.event_id(), e.user_id().unwrap_or_default(), e.ts_millis());
            continue;
        }
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{}",
            e.event_id(),
            e.user_id().unwrap_or_default(),
            e.item_id().unwrap_or_default(),
            e.kind(),
            e.ts_millis(),
            e.query.clone().unwrap_or_default(),
            e.price.map(|p| format!("{p:.2}")).unwrap_or_default()
        );
    }
    s.into_bytes()
}
