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

mod baselines;
mod lists;
mod slices;

use std::collections::HashMap;

use tch::{Kind, Tensor};

use crate::basket;
use crate::checkpoint;
use crate::error::{Error, Result};
use crate::holdout::test_users;
use crate::job::Job;
use crate::metrics::target_positions;
use crate::model::SeqRec;
use crate::parquet_io::WrittenTable;
use crate::seqdata::{self, SeqData, left_pad};
use crate::tables::evaluation::{BASKET_SEGMENT, LISTS_SEGMENT, MODELS, Row, batch, find, metric_label, schema};
use baselines::{ItemKnn, item_knn, recent_popularity};
use lists::{beyond_accuracy, register_lists};
pub(crate) use slices::{CaseFacts, Slices};
use slices::{item_facts, push_accuracy, served};

/// What an evaluation found: the rows of `evaluation` and the run
/// summary's facts.
pub(crate) struct Evaluation {
    /// Rows of `evaluation`.
    pub rows: Vec<Row>,
    /// Facts for the run summary.
    pub facts: Vec<(String, String)>,
    /// Every test case (user, held-out item) and its place in each model's
    /// ranking: what `nightrec eval --cases` writes.
    pub cases: Cases,
}

/// The held-out cases of an evaluation, one entry per (user, test item).
pub(crate) struct Cases {
    /// User ids.
    pub users: Vec<String>,
    /// Held-out item ids.
    pub items: Vec<String>,
    /// Per model of [`MODELS`], each case's rank position (0 = first,
    /// fractional for ties, the user's history masked).
    pub positions: Vec<Vec<f64>>,
}

fn host_f64(t: &Tensor) -> Result<Vec<f64>> {
    Vec::<f64>::try_from(t.to_device(tch::Device::Cpu).to_kind(Kind::Double).contiguous().view([-1]))
        .map_err(|e| Error::torch("copying positions to the host", e))
}

/// Run the stage.
pub(crate) async fn run(job: &Job, device: tch::Device) -> Result<(Vec<WrittenTable>, Vec<(String, String)>)> {
    let e = compute(job, device, false).await?;
    let t = job.write_work_batches("evaluation", schema(), &[batch(&e.rows)?]).await?;
    Ok((vec![t], e.facts))
}

/// Score the holdout model and the baselines on the held-out steps, and
/// tomorrow's lists (`published`: the date's published lists when there
/// are, else the staged ones).
pub(crate) async fn compute(job: &Job, device: tch::Device, published: bool) -> Result<Evaluation> {
    let data = seqdata::load(job).await?;
    let (_vs, model, _meta) = checkpoint::load(job, device, checkpoint::Weights::Holdout).await?;
    let ctx = job.session()?;
    let n_items = data.n_items() as usize;
    let knn = item_knn(job, &ctx, &data).await?;

    let (eligible, chosen) = test_users(job, &data);
    let cases = cases_of(&data, &chosen);
    let counts = counts_before_test(&data, n_items);
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

    let feats = data.features(device);
    let items = tch::no_grad(|| model.item_table(&feats));
    let scorers = Scorers { model: &model, items: &items, popularity: &counts, recent: &recent, knn: &knn };
    let positions = scorers.positions(&data, &cases, device)?;
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
        next_basket(&outcome, &mut rows, &mut facts);
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
    let cases = Cases {
        users: cases.iter().map(|(u, _)| data.users[*u].clone()).collect(),
        items: cases.iter().map(|(_, t)| data.item_ids[(*t - 1) as usize].clone()).collect(),
        positions,
    };
    Ok(Evaluation { rows, facts, cases })
}

/// The (user, test item) cases of `chosen`, a user's distinct test items
/// together: each is predicted from everything before the user's first
/// test step.
fn cases_of(data: &SeqData, chosen: &[usize]) -> Vec<(usize, i64)> {
    let mut cases: Vec<(usize, i64)> = Vec::new();
    for u in chosen {
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
    cases
}

/// Each item's occurrences in every step before the test ones (popularity).
fn counts_before_test(data: &SeqData, n_items: usize) -> Vec<f32> {
    let mut counts = vec![0f32; n_items];
    for u in 0..data.seqs.len() {
        for i in data.split(u).before_test {
            counts[*i as usize] += 1.0;
        }
    }
    counts
}

/// The models of [`MODELS`], in that order, as score sources.
struct Scorers<'a> {
    model: &'a SeqRec,
    items: &'a Tensor,
    popularity: &'a [f32],
    recent: &'a [f32],
    knn: &'a ItemKnn,
}

impl Scorers<'_> {
    /// Each model's rank position of each case's test item (history masked).
    fn positions(&self, data: &SeqData, cases: &[(usize, i64)], device: tch::Device) -> Result<Vec<Vec<f64>>> {
        let n_items = data.n_items();
        let max_len = self.model.config().max_len as usize;
        let pop = Tensor::from_slice(self.popularity).to_device(device).unsqueeze(0);
        let rec = Tensor::from_slice(self.recent).to_device(device).unsqueeze(0);
        let mut positions: Vec<Vec<f64>> = vec![Vec::with_capacity(cases.len()); MODELS.len()];
        tch::no_grad(|| -> Result<()> {
            for chunk in cases.chunks(256) {
                let inputs: Vec<&[i64]> = chunk.iter().map(|(u, _)| data.split(*u).before_test).collect();
                let targets =
                    Tensor::from_slice(&chunk.iter().map(|(_, t)| *t).collect::<Vec<i64>>()).to_device(device);
                let hist = left_pad(&inputs, usize::MAX, device);
                let shape = [chunk.len() as i64, n_items];
                let scores = [
                    self.model.encode_last(&left_pad(&inputs, max_len, device), self.items).matmul(&self.items.tr()),
                    pop.expand(shape, false),
                    rec.expand(shape, false),
                    self.knn.scores(&inputs).to_device(device),
                ];
                for (m, s) in scores.iter().enumerate() {
                    positions[m].extend(host_f64(&target_positions(s, &targets, &hist))?);
                }
            }
            Ok(())
        })?;
        Ok(positions)
    }
}

/// The next-basket rows and facts (`--repeat-purchases`).
fn next_basket(outcome: &basket::Outcome, rows: &mut Vec<Row>, facts: &mut Vec<(String, String)>) {
    for (name, acc) in &outcome.sums {
        push_accuracy(rows, name, BASKET_SEGMENT, acc);
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

#[cfg(test)]
mod tests {
    use super::baselines::KnnBuilder;
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
