//! Stage `evaluate`: checkpoint + held-out items + tomorrow's lists →
//! `evaluation` (`nightrec eval` prints the same rows without writing).
//!
//! **Accuracy.** Leave-one-out by time: each user's test steps (the last,
//! by default) are predicted from everything before them, by the
//! checkpoint's holdout model when training refit the published one on
//! every step (`crate::stages::train`): the model scored never saw a test step.
//! The whole catalog is ranked, and the user's history is masked the same
//! way for every model (an item the user already saw cannot take a place).
//! Baselines run in the same pass on the same cases ([`MODELS`]):
//! popularity (counted on everything but the test steps), recent
//! popularity (the trending score of `popular_items`, on the steps inside
//! `candidates.trending_days` that are not held out:
//! `sql/evaluate/recent_popularity.sql`) and item-kNN (cosine over
//! `item_cooccurrence`, which counts training steps only; each item's
//! [`KNN_NEIGHBOURS`] most similar items, scores summed over the user's
//! history). Recall, NDCG, HR and MRR at 10, 20 and 50 per user
//! ([`crate::metrics`]), each with its 95% confidence interval, for all
//! users and by slice ([`Slices`]): history length, new or established
//! held-out item, the held-out item's category (the most frequent ones),
//! and whether tomorrow's list of the user comes from the model or from a
//! fallback.
//!
//! With `--repeat-purchases` the held-out step is the user's last basket,
//! and [`basket`] adds next-basket rows (segment `next basket`, history not
//! masked) for the blend that is published, the model alone, personal top
//! frequency, TIFU-KNN and popularity.
//!
//! **Beyond accuracy**, on tomorrow's `user_candidates` (segment
//! `published lists`, every user with a list): catalog coverage, novelty
//! and intra-list category diversity at 10, 20 and 50
//! (`sql/evaluate/beyond_accuracy.sql`), and the shares of users whose
//! list comes from the cold-start and popular fallbacks (k = 0: the whole
//! list).
//!
//! At most `evaluate.sample_users` users are scored for accuracy: those
//! with the smallest keyed hash of their user id ([`sample`]), so the
//! sample is the same every night and on every machine, and every user has
//! the same chance to be in it.
//!
//! Safe to re-run: the output folder is replaced whole.

use std::collections::HashMap;

use datafusion::common::ScalarValue;
use datafusion::prelude::SessionContext;
use tch::{Kind, Tensor};

use crate::arrays;
use crate::basket;
use crate::checkpoint;
use crate::error::{DfContext, Error, Result};
use crate::holdout::test_users;
use crate::job::Job;
use crate::metrics::{ACCURACY, Accuracy, KS, Moments, target_positions};
use crate::parquet_io::WrittenTable;
use crate::seqdata::{self, SeqData, left_pad};
use crate::sql::ts_param;
use crate::tables::evaluation::{
    BASKET_SEGMENT, HISTORY, ITEM_AGE, LISTS_SEGMENT, MODELS, Row, SERVED, batch, find, metric_label, schema,
};

/// Neighbours kept per item by the item-kNN baseline.
pub const KNN_NEIGHBOURS: usize = 100;

/// Categories of held-out items given a slice of their own (the most
/// frequent among the scored cases).
pub const TOP_CATEGORIES: usize = 5;

/// Sources of `user_candidates` that are fallbacks, not the model.
const FALLBACKS: [&str; 2] = ["cold_start", "popular"];

/// What an evaluation found: the rows of `evaluation` and the run
/// summary's facts.
pub struct Evaluation {
    /// Rows of `evaluation`.
    pub rows: Vec<Row>,
    /// Facts for the run summary.
    pub facts: Vec<(String, String)>,
}

impl Evaluation {
    /// The value of one row, if present.
    pub fn value(&self, model: &str, segment: &str, metric: &str, k: i32) -> Option<f64> {
        find(&self.rows, model, segment, metric, k)
    }
}

/// Item-kNN: for each item, its most similar items and their cosine.
pub struct ItemKnn {
    neighbours: Vec<Vec<(i64, f32)>>,
}

impl ItemKnn {
    /// Scores [histories, n_items]: summed similarity to each history item.
    pub fn scores(&self, histories: &[&[i64]]) -> Tensor {
        let n = self.neighbours.len();
        let mut out = vec![0f32; histories.len() * n];
        for (r, h) in histories.iter().enumerate() {
            let row = &mut out[r * n..(r + 1) * n];
            for item in *h {
                for (j, s) in self.neighbours.get(*item as usize).map(Vec::as_slice).unwrap_or(&[]) {
                    row[*j as usize] += s;
                }
            }
        }
        Tensor::from_slice(&out).view([histories.len() as i64, n as i64])
    }
}

/// Item-kNN built from pairs arriving in batches: each item keeps at most
/// twice `keep` neighbours between batches, so memory stays bounded by the
/// catalog, not by the number of co-occurring pairs.
pub struct KnnBuilder {
    neighbours: Vec<Vec<(i64, f32)>>,
    keep: usize,
}

impl KnnBuilder {
    /// An empty builder for `n_items` item rows.
    pub fn new(n_items: usize, keep: usize) -> KnnBuilder {
        KnnBuilder { neighbours: vec![Vec::new(); n_items], keep: keep.max(1) }
    }

    /// Add (item a, item b, users) pairs; `item_users` is users per item.
    pub fn add(&mut self, pairs: impl IntoIterator<Item = (i64, i64, f64)>, item_users: &[f64]) {
        let n_items = self.neighbours.len();
        for (a, b, users) in pairs {
            let (a, b) = (a as usize, b as usize);
            if a < n_items && b < n_items && item_users[a] > 0.0 && item_users[b] > 0.0 {
                let sim = users / (item_users[a] * item_users[b]).sqrt();
                let n = &mut self.neighbours[a];
                n.push((b as i64, sim as f32));
                if n.len() >= 2 * self.keep {
                    Self::best(n, self.keep);
                }
            }
        }
    }

    fn best(n: &mut Vec<(i64, f32)>, keep: usize) {
        n.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
        n.truncate(keep);
    }

    /// Each item's `keep` most similar items.
    pub fn finish(mut self) -> ItemKnn {
        for n in &mut self.neighbours {
            Self::best(n, self.keep);
        }
        ItemKnn { neighbours: self.neighbours }
    }
}

/// The slices of the scored cases: names (0 is `all`) and, per case, the
/// slices it is in.
#[derive(Debug, Default, PartialEq)]
pub struct Slices {
    /// Slice names, in the order rows are written.
    pub names: Vec<String>,
    /// Per case, the indices of its slices (0 always).
    pub of_case: Vec<Vec<usize>>,
}

/// What a case's slices are decided by.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseFacts {
    /// Steps before the held-out ones.
    pub history: usize,
    /// The held-out item was created within the trending window.
    pub new_item: bool,
    /// The held-out item's category (cut at `candidates.category_level`).
    pub category: Option<String>,
    /// Whether tomorrow's list of the user comes from a fallback (None:
    /// the user has no list).
    pub fallback: Option<bool>,
}

impl Slices {
    /// The slices of `cases`: all; history length; new or established
    /// item; the [`TOP_CATEGORIES`] most frequent categories (ties by
    /// name); served by the model or by a fallback.
    pub fn of(cases: &[CaseFacts]) -> Slices {
        let mut names: Vec<String> = vec!["all".into()];
        names.extend(HISTORY.iter().map(|h| h.0.to_string()));
        names.extend(ITEM_AGE.map(String::from));
        let mut per_cat: HashMap<&str, usize> = HashMap::new();
        for c in cases.iter().filter_map(|c| c.category.as_deref()) {
            *per_cat.entry(c).or_default() += 1;
        }
        let mut cats: Vec<(&str, usize)> = per_cat.into_iter().collect();
        cats.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        cats.truncate(TOP_CATEGORIES);
        let cat_base = names.len();
        names.extend(cats.iter().map(|(c, _)| format!("category {c}")));
        let served = names.len();
        names.extend(SERVED.map(String::from));
        let of_case = cases
            .iter()
            .map(|c| {
                let mut s = vec![0];
                if let Some(h) = HISTORY.iter().position(|(_, lo, hi)| c.history >= *lo && c.history <= *hi) {
                    s.push(1 + h);
                }
                s.push(if c.new_item { 1 + HISTORY.len() } else { 2 + HISTORY.len() });
                if let Some(i) = c.category.as_deref().and_then(|x| cats.iter().position(|(y, _)| *y == x)) {
                    s.push(cat_base + i);
                }
                if let Some(f) = c.fallback {
                    s.push(served + usize::from(f));
                }
                s
            })
            .collect();
        Slices { names, of_case }
    }

    /// Per slice, the accuracy of one model: `users[c]` is case c's user
    /// (a user's cases are consecutive), `positions[c]` its held-out
    /// item's position in the model's ranking.
    pub fn accuracy(&self, users: &[usize], positions: &[f64]) -> Vec<Accuracy> {
        let mut out = vec![Accuracy::default(); self.names.len()];
        let mut start = 0;
        while start < users.len() {
            let end = (start..users.len()).find(|c| users[*c] != users[start]).unwrap_or(users.len());
            for (s, acc) in out.iter_mut().enumerate() {
                let mine: Vec<f64> =
                    (start..end).filter(|c| self.of_case[*c].contains(&s)).map(|c| positions[c]).collect();
                acc.add_positions(&mine, mine.len());
            }
            start = end;
        }
        out
    }
}

fn push_accuracy(rows: &mut Vec<Row>, model: &str, segment: &str, acc: &Accuracy) {
    if acc.users() == 0 {
        return;
    }
    for metric in ACCURACY {
        for k in KS {
            rows.push(Row::mean(model, segment, metric, k, acc.get(metric, k), true));
        }
    }
}

/// Item-kNN from `item_cooccurrence`, read a batch at a time into bounded
/// neighbour lists (the table can hold far more pairs than the catalog
/// has items).
async fn item_knn(job: &Job, ctx: &SessionContext, data: &SeqData) -> Result<ItemKnn> {
    let item_users = train_item_users(data);
    let mut knn = KnnBuilder::new(data.n_items() as usize, KNN_NEIGHBOURS);
    let sql = crate::sql::read("item_cooccurrence")?;
    job.stream_work(ctx, "item_cooccurrence", sql, |b| {
        let b = std::slice::from_ref(b);
        let (a, i, u) = (arrays::ints(b, "item_a")?, arrays::ints(b, "item_b")?, arrays::ints(b, "users")?);
        knn.add(a.into_iter().zip(i).zip(u).map(|((a, b), u)| (a, b, u as f64)), &item_users);
        Ok(())
    })
    .await?;
    Ok(knn.finish())
}

/// The first day of the trending window (`candidates.trending_days`
/// ending on the run date).
fn trending_start(job: &Job) -> crate::config::RunDate {
    job.date.minus_days(job.cfg.candidates.trending_days.saturating_sub(1))
}

/// Recent popularity per item index (`sql/evaluate/recent_popularity.sql`).
async fn recent_popularity(job: &Job, ctx: &SessionContext, n_items: usize) -> Result<Vec<f32>> {
    let c = &job.cfg.candidates;
    job.register_work(ctx, &["steps"]).await?;
    let params = vec![
        ("start", ts_param(trending_start(job).start_millis())),
        ("end_seconds", ScalarValue::Int64(Some(job.date.plus_days(1).start_millis() / 1000))),
        ("half_life_days", ScalarValue::Float64(Some(c.trending_half_life_days))),
    ];
    let b = crate::sql::file("evaluate", "recent_popularity")?.collect(ctx, params).await?;
    let mut out = vec![0f32; n_items];
    for (i, s) in arrays::ints(&b, "item_idx")?.into_iter().zip(arrays::floats(&b, "score")?) {
        if let Some(slot) = out.get_mut(i.max(0) as usize) {
            *slot = s.unwrap_or(0.0) as f32;
        }
    }
    Ok(out)
}

/// Per item index: its category at `candidates.category_level`, and
/// whether it was created within the trending window.
async fn item_facts(job: &Job, ctx: &SessionContext, n_items: usize) -> Result<(Vec<Option<String>>, Vec<bool>)> {
    let sql = crate::sql::read("item_facts")?;
    let b = job.read_work(ctx, "item_index", sql).await?;
    let since = trending_start(job).start_millis() as f64 / 1000.0;
    let level = job.cfg.candidates.category_level;
    let (mut cats, mut new) = (vec![None; n_items], vec![false; n_items]);
    let (idx, cat, created) =
        (arrays::ints(&b, "item_idx")?, arrays::strings(&b, "category")?, arrays::floats(&b, "created_s")?);
    for ((i, c), t) in idx.into_iter().zip(cat).zip(created) {
        let i = i.max(0) as usize;
        if i < n_items {
            cats[i] = c.as_deref().and_then(|c| crate::category::at(c, level));
            new[i] = t.is_some_and(|t| t >= since);
        }
    }
    Ok((cats, new))
}

/// Register `user_candidates`: the published files of the date when
/// `published` and the date has a manifest, else the work table.
async fn register_lists(job: &Job, ctx: &SessionContext, published: bool) -> Result<&'static str> {
    if published
        && let Some(m) = crate::published::read_manifest(&job.output, job.date).await?
        && let Some(t) = m.tables.iter().find(|t| t.name == "user_candidates")
    {
        let files: Vec<String> = t.files.iter().map(|f| f.path.clone()).collect();
        crate::published::register_files(ctx, "user_candidates", &job.output, &files).await?;
        return Ok("published");
    }
    job.register_work(ctx, &["user_candidates"]).await?;
    Ok("staged")
}

/// For the users of `want` (id → index): whether tomorrow's list comes
/// from a fallback (its first candidate's source is one of [`FALLBACKS`]).
async fn served(ctx: &SessionContext, want: &HashMap<&str, usize>) -> Result<HashMap<usize, bool>> {
    use futures::StreamExt;
    let what = "reading the first candidate of each user";
    let df = ctx.sql(crate::sql::read("first_sources")?.text).await.ctx(what)?;
    let mut stream = df.execute_stream().await.ctx(what)?;
    let mut out = HashMap::new();
    while let Some(b) = stream.next().await {
        let b = [b.ctx(what)?];
        for (id, source) in arrays::strings_required(&b, "user_id")?.iter().zip(arrays::strings(&b, "source")?) {
            if let Some(u) = want.get(id.as_str()) {
                out.insert(*u, source.as_deref().is_some_and(|s| FALLBACKS.contains(&s)));
            }
        }
    }
    Ok(out)
}

/// The beyond-accuracy rows of tomorrow's lists (`sql/evaluate/beyond_accuracy.sql`).
async fn beyond_accuracy(job: &Job, ctx: &SessionContext) -> Result<Vec<Row>> {
    job.register_work(ctx, &["item_index", "interactions"]).await?;
    let level = job.cfg.candidates.category_level as i64;
    let b = crate::sql::file("evaluate", "beyond_accuracy")?
        .collect(ctx, vec![("category_level", ScalarValue::Int64(Some(level)))])
        .await?;
    let (metric, k) = (arrays::strings_required(&b, "metric")?, arrays::ints(&b, "k")?);
    let (users, n) = (arrays::ints(&b, "users")?, arrays::ints(&b, "n")?);
    let (sum, sum_sq) = (arrays::floats(&b, "sum")?, arrays::floats(&b, "sum_sq")?);
    let mut rows = Vec::new();
    for i in 0..metric.len() {
        let m = Moments { sum: sum[i].unwrap_or(0.0), sum_sq: sum_sq[i].unwrap_or(0.0), n: n[i].max(0) as usize };
        let mut row = Row::mean("nightrec", LISTS_SEGMENT, &metric[i], k[i].max(0) as usize, m, metric[i] != "novelty");
        if metric[i] == "coverage" {
            // Not a sample: the catalog's share, without an interval.
            (row.ci_low, row.ci_high) = (row.value, row.value);
        }
        row.users = users[i];
        rows.push(row);
    }
    Ok(rows)
}

fn host_f64(t: &Tensor) -> Result<Vec<f64>> {
    Vec::<f64>::try_from(t.to_device(tch::Device::Cpu).to_kind(Kind::Double).contiguous().view([-1]))
        .map_err(|e| Error::torch("copying positions to the host", e))
}

/// Run the stage.
pub async fn run(job: &Job, device: tch::Device) -> Result<(Vec<WrittenTable>, Vec<(String, String)>)> {
    let e = compute(job, device, false).await?;
    let t = job.write_work_batches("evaluation", schema(), &[batch(&e.rows)?]).await?;
    Ok((vec![t], e.facts))
}

/// Evaluate the date's holdout model, baselines and tomorrow's lists;
/// with `published`, the lists are the date's published `user_candidates`
/// when it has been published (else the staged ones).
pub async fn compute(job: &Job, device: tch::Device, published: bool) -> Result<Evaluation> {
    let data = seqdata::load(job).await?;
    let (_vs, model, _meta) = checkpoint::load(job, device, checkpoint::Weights::Holdout).await?;
    let ctx = job.session()?;
    let n_items = data.n_items() as usize;
    let knn = item_knn(job, &ctx, &data).await?;
    let max_len = model.config().max_len as usize;

    // (user, test item) cases, a user's distinct test items together:
    // each is predicted from everything before the user's first test step.
    let (eligible, chosen) = test_users(job, &data);
    let mut cases: Vec<(usize, i64)> = Vec::new();
    for u in &chosen {
        let s = data.split(*u);
        if s.before_test.is_empty() {
            continue;
        }
        let mut seen = Vec::new();
        for t in s.test {
            if !seen.contains(t) {
                seen.push(*t);
                cases.push((*u, *t));
            }
        }
    }
    let mut counts = vec![0f32; n_items];
    for u in 0..data.seqs.len() {
        for i in data.split(u).before_test {
            counts[*i as usize] += 1.0;
        }
    }
    let recent = recent_popularity(job, &ctx, n_items).await?;
    let (categories, new_items) = item_facts(job, &ctx, n_items).await?;
    let lists = register_lists(job, &ctx, published).await?;
    let want: HashMap<&str, usize> = chosen.iter().map(|u| (data.users[*u].as_str(), *u)).collect();
    let fallback = served(&ctx, &want).await?;
    let facts_of: Vec<CaseFacts> = cases
        .iter()
        .map(|(u, t)| CaseFacts {
            history: data.split(*u).before_test.len(),
            new_item: new_items[*t as usize],
            category: categories[*t as usize].clone(),
            fallback: fallback.get(u).copied(),
        })
        .collect();
    let slices = Slices::of(&facts_of);

    let pop = Tensor::from_slice(&counts).to_device(device).unsqueeze(0);
    let rec = Tensor::from_slice(&recent).to_device(device).unsqueeze(0);
    let feats = data.features(device);
    let items = tch::no_grad(|| model.item_table(&feats));
    let mut positions: Vec<Vec<f64>> = vec![Vec::with_capacity(cases.len()); MODELS.len()];
    tch::no_grad(|| -> Result<()> {
        for chunk in cases.chunks(256) {
            let inputs: Vec<&[i64]> = chunk.iter().map(|(u, _)| data.split(*u).before_test).collect();
            let targets = Tensor::from_slice(&chunk.iter().map(|(_, t)| *t).collect::<Vec<i64>>()).to_device(device);
            let hist = left_pad(&inputs, usize::MAX, device);
            let shape = [chunk.len() as i64, n_items as i64];
            let scores = [
                model.encode_last(&left_pad(&inputs, max_len, device), &items).matmul(&items.tr()),
                pop.expand(shape, false),
                rec.expand(shape, false),
                knn.scores(&inputs).to_device(device),
            ];
            for (m, s) in scores.iter().enumerate() {
                positions[m].extend(host_f64(&target_positions(s, &targets, &hist))?);
            }
        }
        Ok(())
    })?;
    let users: Vec<usize> = cases.iter().map(|c| c.0).collect();
    let mut rows: Vec<Row> = Vec::new();
    for (m, name) in MODELS.iter().enumerate() {
        for (s, acc) in slices.accuracy(&users, &positions[m]).iter().enumerate() {
            push_accuracy(&mut rows, name, &slices.names[s], acc);
        }
    }
    let scored = rows.iter().find(|r| r.model == "nightrec" && r.segment == "all").map_or(0, |r| r.users);
    let mut facts = vec![(
        "test cases (users scored / sampled / with a test step)".to_string(),
        format!("{} ({scored} / {} / {})", cases.len(), chosen.len(), eligible.len()),
    )];
    for metric in ["ndcg", "recall", "mrr"] {
        let values: Vec<String> =
            MODELS.iter().map(|m| format!("{:.4}", find(&rows, m, "all", metric, 10).unwrap_or(0.0))).collect();
        facts.push((format!("{}@10 {}", metric_label(metric), MODELS.join(" / ")), values.join(" / ")));
    }
    if job.cfg.candidates.repeat_purchases {
        let outcome = basket::evaluate(job, &data, &chosen, &model, &items, &counts, true, device).await?;
        for (name, acc) in &outcome.sums {
            push_accuracy(&mut rows, name, BASKET_SEGMENT, acc);
        }
        let names: Vec<&str> = outcome.sums.iter().map(|s| s.0).collect();
        let of = |metric: &str| {
            outcome.sums.iter().map(|(_, a)| format!("{:.4}", a.mean(metric, 10))).collect::<Vec<_>>().join(" / ")
        };
        facts.push(("next-basket users".into(), outcome.sums.first().map_or(0, |s| s.1.users()).to_string()));
        facts.push((
            "next-basket explore weight (chosen; the blend's row is cross-fitted)".into(),
            format!("{}", outcome.explore_weight),
        ));
        facts.push((format!("next-basket Recall@10 {}", names.join(" / ")), of("recall")));
        facts.push((format!("next-basket NDCG@10 {}", names.join(" / ")), of("ndcg")));
    }
    let beyond = beyond_accuracy(job, &ctx).await?;
    let get = |metric: &str, k: i32| find(&beyond, "nightrec", LISTS_SEGMENT, metric, k).unwrap_or(0.0);
    facts.push((
        format!("{lists} lists @10: coverage / novelty (bits) / category diversity"),
        format!("{:.3} / {:.2} / {:.3}", get("coverage", 10), get("novelty", 10), get("diversity", 10)),
    ));
    facts.push((
        "users served by cold start / popular".into(),
        format!("{:.3} / {:.3}", get("cold_start_users", 0), get("popular_users", 0)),
    ));
    rows.extend(beyond);
    Ok(Evaluation { rows, facts })
}

/// Users whose training steps contain each item (index = item_idx).
fn train_item_users(data: &SeqData) -> Vec<f64> {
    let mut n = vec![0f64; data.n_items() as usize];
    for u in 0..data.seqs.len() {
        let mut seen: Vec<i64> = data.split(u).train.to_vec();
        seen.sort_unstable();
        seen.dedup();
        for i in seen {
            n[i as usize] += 1.0;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::evaluation::segment_order;

    #[test]
    fn knn_sums_cosine_over_history_and_keeps_top_neighbours() {
        // Items 1..=3; 1 and 2 co-occur for 2 users, 1 and 3 for 1.
        let pairs = [(1, 2, 2.0), (2, 1, 2.0), (1, 3, 1.0), (3, 1, 1.0)];
        let users = [0.0, 4.0, 2.0, 1.0];
        let mut all = KnnBuilder::new(4, 1);
        all.add(pairs.iter().copied(), &users);
        let knn = all.finish();
        let s: Vec<f32> = Vec::try_from(knn.scores(&[&[1], &[2, 3]]).view([-1])).unwrap();
        let c12 = (2.0 / (4.0f64 * 2.0).sqrt()) as f32;
        let c31 = (1.0 / (1.0f64 * 4.0).sqrt()) as f32;
        // Item 1 keeps only its top neighbour (2); items 2 and 3 both point at 1.
        assert_eq!(&s[..4], &[0.0, 0.0, c12, 0.0]);
        assert_eq!(&s[4..], &[0.0, c12 + c31, 0.0, 0.0]);
        // Batches of pairs give the same neighbours as all pairs at once.
        let mut b = KnnBuilder::new(4, 1);
        for p in pairs.chunks(1) {
            b.add(p.iter().copied(), &users);
        }
        let batched: Vec<f32> = Vec::try_from(b.finish().scores(&[&[1], &[2, 3]]).view([-1])).unwrap();
        assert_eq!(batched, s);
    }

    fn case(history: usize, new_item: bool, category: Option<&str>, fallback: Option<bool>) -> CaseFacts {
        CaseFacts { history, new_item, category: category.map(str::to_string), fallback }
    }

    #[test]
    fn slices_by_history_item_category_and_service() {
        let cases = vec![
            case(3, true, Some("Home"), Some(false)),
            case(30, false, Some("Toys"), Some(true)),
            case(8, false, Some("Home"), None),
            case(8, false, None, Some(false)),
        ];
        let s = Slices::of(&cases);
        assert_eq!(
            s.names,
            [
                "all",
                "history cold (1-5)",
                "history light (6-20)",
                "history heavy (21+)",
                "items new",
                "items established",
                "category Home",
                "category Toys",
                "served by model",
                "served by fallback"
            ]
        );
        assert_eq!(s.of_case[0], [0, 1, 4, 6, 8]);
        assert_eq!(s.of_case[1], [0, 3, 5, 7, 9]);
        assert_eq!(s.of_case[2], [0, 2, 5, 6], "no list: in no service slice");
        assert_eq!(s.of_case[3], [0, 2, 5, 8], "no category: in no category slice");
        // Only the most frequent categories get a slice (ties by name).
        let many: Vec<CaseFacts> =
            ["f", "e", "d", "c", "b", "a", "a"].iter().map(|c| case(1, false, Some(c), None)).collect();
        let names = Slices::of(&many).names;
        let cats: Vec<&str> = names.iter().filter(|n| n.starts_with("category ")).map(String::as_str).collect();
        assert_eq!(cats, ["category a", "category b", "category c", "category d", "category e"]);
    }

    #[test]
    fn slice_accuracy_is_per_user() {
        // User 7 has two held-out items (positions 0 and 30), user 9 one
        // (position 4). The second item of user 7 is new.
        let cases = vec![case(3, false, None, None), case(3, true, None, None), case(10, false, None, None)];
        let s = Slices::of(&cases);
        let acc = s.accuracy(&[7, 7, 9], &[0.0, 30.0, 4.0]);
        let all = &acc[0];
        assert_eq!(all.users(), 2);
        // Recall@10: user 7 found 1 of 2, user 9 1 of 1.
        assert!((all.mean("recall", 10) - 0.75).abs() < 1e-12);
        assert!((all.mean("recall", 50) - 1.0).abs() < 1e-12);
        let new = &acc[s.names.iter().position(|n| n == "items new").unwrap()];
        assert_eq!(new.users(), 1);
        assert_eq!(new.mean("hr", 10), 0.0);
        assert_eq!(new.mean("hr", 50), 1.0);
        assert_eq!(acc[s.names.iter().position(|n| n == "history heavy (21+)").unwrap()].users(), 0);
    }

    #[test]
    fn segments_read_in_slice_order() {
        let names = Slices::of(&[case(3, true, Some("Home"), Some(true))]).names;
        let mut shuffled = names.clone();
        shuffled.extend([LISTS_SEGMENT.to_string(), BASKET_SEGMENT.to_string()]);
        shuffled.reverse();
        shuffled.sort_by_key(|s| segment_order(s));
        assert_eq!(&shuffled[..names.len()], &names[..]);
        assert_eq!(&shuffled[names.len()..], [BASKET_SEGMENT, LISTS_SEGMENT]);
    }
}
