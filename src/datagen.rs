//! `nightrec gen`: a deterministic synthetic e-commerce log in the input
//! contract's formats, for the bundled sample, tests and benchmarks.
//!
//! Shaped like a shop's log, so that timings and quality figures on it mean
//! something:
//! - item popularity is Zipf-like (weight rank^-0.8 over a random order);
//! - user activity is heavy-tailed (log-normal weights: most users have a
//!   handful of events, a few have hundreds; every 17th user never acts);
//! - titles and `A > B > C` category paths; about 1% of the catalog is new
//!   each day of the window (`created_at`), and no event precedes its
//!   item's creation;
//! - behaviour is only partly predictable: a session browses one category
//!   (mostly one of the user's favourites), going on to a "neighbouring"
//!   item of the category (the sequential signal) 15% of the time, and
//!   otherwise to a popular item of the category or of the whole shop,
//!   with carts, purchases and searches.
//!
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
    pub users: usize,
    /// Catalog items.
    pub items: usize,
    /// Approximate event rows.
    pub events: usize,
    /// Days of behaviour ending at `end_date`.
    pub days: u32,
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
    WrongPartition,
    Malformed,
}

const FLAWS: [Flaw; 7] = [
    Flaw::Duplicate,
    Flaw::MissingUser,
    Flaw::UnknownType,
    Flaw::UnknownItem,
    Flaw::BadTimestamp,
    Flaw::WrongPartition,
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

/// Share of session steps that go to a neighbouring item of the category.
const P_NEIGHBOUR: f64 = 0.15;
/// Share of session steps that jump to a popular item of the whole shop.
const P_JUMP: f64 = 0.25;
/// Share of sessions in one of the user's favourite categories.
const P_FAVOURITE: f64 = 0.7;
/// Exponent of the Zipf law of item popularity.
const ZIPF: f64 = 0.8;
/// Share of the catalog created on each day of the window.
const NEW_PER_DAY: f64 = 0.01;
/// Spread (sigma of the log) of user activity.
const ACTIVITY_SIGMA: f64 = 1.5;

/// Cumulative weights, for sampling an index in proportion to its weight.
struct Cumulative(Vec<f64>);

impl Cumulative {
    fn new(weights: impl IntoIterator<Item = f64>) -> Cumulative {
        let mut acc = 0.0;
        Cumulative(
            weights
                .into_iter()
                .map(|w| {
                    acc += w;
                    acc
                })
                .collect(),
        )
    }
    fn pick(&self, rng: &mut Rng) -> usize {
        let total = self.0.last().copied().unwrap_or(0.0);
        let x = rng.f64() * total;
        self.0.partition_point(|c| *c <= x).min(self.0.len().saturating_sub(1))
    }
}

/// The synthetic world: catalog, users and their tastes.
struct World {
    cats: Vec<String>,
    /// Items of each leaf, in catalog order ("neighbours" are adjacent).
    by_leaf: Vec<Vec<u32>>,
    /// Popularity within each leaf (indices into `by_leaf`).
    leaf_pop: Vec<Cumulative>,
    /// Popularity over the whole catalog.
    pop: Cumulative,
    /// Leaf of each item.
    leaf_of: Vec<usize>,
    /// Day (0-based within the window) each item appears; 0 for the old catalog.
    created_day: Vec<u32>,
    prefs: Vec<Vec<usize>>,
    users: Cumulative,
    prices: Vec<f64>,
}

impl World {
    /// A popular item of a leaf (or of the shop) that exists on `day`.
    fn popular(&self, rng: &mut Rng, leaf: Option<usize>, day: u32) -> Option<u32> {
        for _ in 0..8 {
            let item = match leaf {
                Some(l) => self.by_leaf[l].get(self.leaf_pop[l].pick(rng)).copied()?,
                None => self.pop.pick(rng) as u32,
            };
            if self.created_day[item as usize] <= day {
                return Some(item);
            }
        }
        None
    }
}

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut Rng) -> f64 {
    let u1 = rng.f64().max(1e-12);
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Generate a dataset under `out` (`events/`, `items/`, `users/`).
pub async fn generate(out: &Root, o: &GenOptions) -> Result<Vec<(String, usize)>> {
    if o.users == 0 || o.items == 0 || o.days == 0 {
        return Err(Error::Usage("gen needs --users, --items and --days of at least 1".into()));
    }
    let mut rng = Rng::new(o.seed);
    let cats = leaves();
    let first_day = o.end_date.minus_days(o.days - 1);
    // The last items of the catalog appear during the window, 1% a day
    // (at most half the catalog).
    let per_day = ((o.items as f64 * NEW_PER_DAY).round() as usize).max(usize::from(o.items >= 100));
    let new_items = (per_day * o.days as usize).min(o.items / 2);
    let old_items = o.items - new_items;
    let mut catalog = String::new();
    let mut by_leaf: Vec<Vec<u32>> = vec![Vec::new(); cats.len()];
    let mut prices = Vec::with_capacity(o.items);
    let mut leaf_of = Vec::with_capacity(o.items);
    let mut created_day = Vec::with_capacity(o.items);
    for i in 0..o.items {
        let leaf = i % cats.len();
        let noun = cats[leaf].rsplit(" > ").next().unwrap_or("Thing").trim_end_matches('s');
        let adj = ADJ[rng.below(ADJ.len())];
        let brand = BRANDS[rng.below(BRANDS.len())];
        let price = 5.0 + (rng.f64() * 195.0 * 100.0).round() / 100.0;
        let day = if i < old_items { 0 } else { (((i - old_items) / per_day.max(1)) as u32 + 1).min(o.days - 1) };
        let created = if i < old_items {
            "2026-01-01T00:00:00Z".to_string()
        } else {
            format!("{}T00:00:00Z", first_day.plus_days(day))
        };
        let rec = serde_json::json!({
            "item_id": format!("I{:06}", i + 1),
            "title": format!("{adj} {noun} {}", 100 + i),
            "description": format!("A {} {} by {brand}, made for everyday use.", adj.to_lowercase(), noun.to_lowercase()),
            "category": cats[leaf],
            "brand": brand,
            "price": price,
            "in_stock": rng.f64() > 0.05,
            "created_at": created
        });
        let _ = writeln!(catalog, "{rec}");
        by_leaf[leaf].push(i as u32);
        prices.push(price);
        leaf_of.push(leaf);
        created_day.push(day);
    }
    // Zipf-like popularity: weight 1/rank^ZIPF over a random order of the items.
    let mut order: Vec<usize> = (0..o.items).collect();
    rng.shuffle(&mut order);
    let mut weight = vec![0f64; o.items];
    for (rank, i) in order.iter().enumerate() {
        weight[*i] = (rank as f64 + 1.0).powf(-ZIPF);
    }
    let leaf_pop = by_leaf.iter().map(|items| Cumulative::new(items.iter().map(|i| weight[*i as usize]))).collect();
    let pop = Cumulative::new(weight.iter().copied());
    let mut users_csv = String::from("user_id,signup_ts\n");
    let mut prefs = Vec::with_capacity(o.users);
    let mut activity = Vec::with_capacity(o.users);
    for u in 0..o.users {
        let _ = writeln!(users_csv, "U{:06},2025-{:02}-{:02}T08:00:00Z", u + 1, 1 + u % 12, 1 + u % 28);
        prefs.push((0..1 + rng.below(3)).map(|_| rng.below(cats.len())).collect::<Vec<_>>());
        // Heavy-tailed activity; every 17th user never acts (cold users).
        let w = (ACTIVITY_SIGMA * normal(&mut rng)).exp();
        activity.push(if u % 17 == 16 { 0.0 } else { w });
    }
    let world =
        World { cats, by_leaf, leaf_pop, pop, leaf_of, created_day, prefs, users: Cumulative::new(activity), prices };

    let mut written = Vec::new();
    let mut next_id = 0u64;
    for d in 0..o.days {
        // Spread the event budget evenly; the first days take the remainder.
        let budget = o.events / o.days as usize + usize::from((d as usize) < o.events % o.days as usize);
        let day = first_day.plus_days(d);
        let rows = day_events(&world, &mut rng, d, day.start_millis(), first_day.start_millis(), budget, &mut next_id);
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
    day: u32,
    day_start: i64,
    window_start: i64,
    budget: usize,
    next_id: &mut u64,
) -> Vec<Event> {
    let mut rows: Vec<Event> = Vec::with_capacity(budget + budget / 50);
    while rows.len() < budget {
        let u = w.users.pick(rng);
        let leaf =
            if rng.f64() < P_FAVOURITE { w.prefs[u][rng.below(w.prefs[u].len())] } else { rng.below(w.cats.len()) };
        let Some(mut item) = w.popular(rng, Some(leaf), day) else { continue };
        let mut ts = day_start + (rng.f64() * (DAY_MS as f64 - 3_600_000.0)) as i64;
        let mut push = |rows: &mut Vec<Event>,
                        ts: i64,
                        item: Option<u32>,
                        kind: &'static str,
                        query: Option<String>,
                        price: Option<f64>| {
            *next_id += 1;
            rows.push(Event { id: *next_id, user: Some(u as u32), item, kind, ts, query, price, flaw: None });
        };
        if rng.f64() < 0.2 {
            let noun = w.cats[leaf].rsplit(" > ").next().unwrap_or("").to_lowercase();
            let q = format!("{} {noun}", ADJ[rng.below(ADJ.len())].to_lowercase());
            push(&mut rows, ts, None, "search", Some(q), None);
            ts += 5_000;
        }
        for _ in 0..2 + rng.below(6) {
            push(&mut rows, ts, Some(item), "view", None, None);
            ts += 20_000 + rng.below(120_000) as i64;
            if rng.f64() < 0.1 {
                push(&mut rows, ts, Some(item), "add_to_cart", None, None);
                ts += 10_000;
                if rng.f64() < 0.4 {
                    push(&mut rows, ts, Some(item), "purchase", None, Some(w.prices[item as usize]));
                    ts += 10_000;
                }
            }
            let r = rng.f64();
            let next = if r < P_NEIGHBOUR {
                // A neighbour: one or two places on in the category's order.
                // Item i is the (i / leaves)-th of its leaf (leaves are dealt in turn).
                let l = w.leaf_of[item as usize];
                let at = item as usize / w.cats.len();
                let step = 1 + rng.below(2);
                Some(w.by_leaf[l][(at + step) % w.by_leaf[l].len()]).filter(|i| w.created_day[*i as usize] <= day)
            } else if r < P_NEIGHBOUR + P_JUMP {
                w.popular(rng, None, day)
            } else {
                w.popular(rng, Some(leaf), day)
            };
            // No such item yet: the user looks at the same one again.
            if let Some(n) = next {
                item = n;
            }
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
            // Stamped weeks before its own day (and the window): a defect.
            Flaw::WrongPartition => r.ts = window_start - 40 * DAY_MS,
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
