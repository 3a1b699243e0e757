//! The slices of the scored cases (history length, the held-out item's age
//! and category, what serves the user tomorrow) and the facts they are cut
//! by.

use std::collections::HashMap;

use datafusion::prelude::SessionContext;

use super::baselines::trending_start;
use crate::arrays;
use crate::error::{DfContext, Result};
use crate::job::Job;
use crate::metrics::{ACCURACY, Accuracy, KS};
use crate::tables::evaluation::{HISTORY, ITEM_AGE, Row, SERVED};

/// Categories of held-out items given a slice of their own (the most
/// frequent among the scored cases).
pub(crate) const TOP_CATEGORIES: usize = 5;

/// Sources of `user_candidates` that are fallbacks, not the model.
pub(super) const FALLBACKS: [&str; 2] = ["cold_start", "popular"];

/// The slices of the scored cases: names (0 is `all`) and, per case, the
/// slices it is in.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Slices {
    /// Slice names, in the order rows are written.
    pub names: Vec<String>,
    /// Per case, the indices of its slices (0 always).
    pub of_case: Vec<Vec<usize>>,
}

/// What a case's slices are decided by.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CaseFacts {
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
    pub(crate) fn of(cases: &[CaseFacts]) -> Slices {
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
    pub(crate) fn accuracy(&self, users: &[usize], positions: &[f64]) -> Vec<Accuracy> {
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

pub(super) fn push_accuracy(rows: &mut Vec<Row>, model: &str, segment: &str, acc: &Accuracy) {
    if acc.users() == 0 {
        return;
    }
    for metric in ACCURACY {
        for k in KS {
            rows.push(Row::mean(model, segment, metric, k, acc.get(metric, k), true));
        }
    }
}

/// Per item index: its category at `candidates.category_level`, and
/// whether it was created within the trending window.
pub(super) async fn item_facts(
    job: &Job,
    ctx: &SessionContext,
    n_items: usize,
) -> Result<(Vec<Option<String>>, Vec<bool>)> {
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

/// For the users of `want` (id → index): whether tomorrow's list comes
/// from a fallback (its first candidate's source is one of [`FALLBACKS`]).
pub(super) async fn served(ctx: &SessionContext, want: &HashMap<&str, usize>) -> Result<HashMap<usize, bool>> {
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
