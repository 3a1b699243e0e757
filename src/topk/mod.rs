//! Exact maximum-inner-product top-K in memory-budgeted blocks.
//!
//! Scores of one block of queries against every item are computed with one
//! matrix product on the device, masked (items blocked for everyone, items
//! excluded for one query, an optional per-query mask), and reduced with
//! `topk`; the full queries × items matrix never exists. Ties are broken
//! deterministically: equal scores rank by item index, and when more items
//! tie at the K-th score than fit, the lowest indices are kept.

use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::resources::MemoryBudget;

pub(crate) mod bf16;

/// Queries per block so that one block's scores and masks fit `budget`
/// for `n_items` items: f32 scores, a bool mask, and `topk`'s scratch.
pub(crate) fn block_rows(budget: MemoryBudget, n_items: usize) -> usize {
    budget.rows(n_items.max(1) * (4 + 1 + 4), 65536)
}

/// The top-K of one block, row-major on the host.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TopK {
    /// Queries in the block.
    pub rows: usize,
    /// Slots per query (K, or fewer when the catalog is smaller).
    pub k: usize,
    /// Scores, `rows × k`; slots past a query's eligible items are -inf.
    pub scores: Vec<f32>,
    /// Item indices (rows of the item matrix), `rows × k`.
    pub items: Vec<i64>,
}

impl TopK {
    /// The finite (score, item) pairs of one query, best first.
    pub(crate) fn row(&self, r: usize) -> impl Iterator<Item = (f32, i64)> + '_ {
        let s = &self.scores[r * self.k..(r + 1) * self.k];
        let i = &self.items[r * self.k..(r + 1) * self.k];
        s.iter().copied().zip(i.iter().copied()).take_while(|(s, _)| s.is_finite())
    }
}

/// What one query in a block must not get.
pub(crate) struct Masks<'a> {
    /// Items no query may get, `[N]` bool on the device.
    pub all: Option<&'a Tensor>,
    /// (row in block, item index) pairs excluded for one query.
    pub pairs: &'a [(i64, i64)],
    /// Items excluded per query, `[B, N]` bool on the device.
    pub per_row: Option<&'a Tensor>,
}

/// Mask scores `[B, N]` in place: excluded slots become -inf.
pub(crate) fn mask_scores(scores: &mut Tensor, masks: &Masks) {
    let n = scores.size()[1];
    if let Some(all) = masks.all {
        let _ = scores.masked_fill_(&all.unsqueeze(0), f64::NEG_INFINITY);
    }
    if let Some(m) = masks.per_row {
        let _ = scores.masked_fill_(m, f64::NEG_INFINITY);
    }
    if !masks.pairs.is_empty() {
        let flat: Vec<i64> = masks.pairs.iter().map(|(r, c)| r * n + c).collect();
        let flat = Tensor::from_slice(&flat).to_device(scores.device());
        let _ = scores.view([-1]).index_fill_(0, &flat, f64::NEG_INFINITY);
    }
}

/// Items per chunk when bounding the K-th score from chunk maxima.
const CHUNK: usize = 64;

/// Exact top-k of every row of `scores` `[B, N]` with deterministic ties
/// (equal scores rank by item index).
///
/// For wide rows a full `topk` is avoided: the k-th largest of the rows'
/// chunk maxima (chunks of 64 items) is a lower bound of the k-th largest
/// score, since the maxima are k distinct scores of the row. Every score at
/// or above the bound is a candidate — typically a little more than k per
/// row — and those few are ranked on the host.
pub(crate) fn top_k_of_scores(scores: &Tensor, k: usize) -> Result<TopK> {
    let (b, n) = (scores.size()[0] as usize, scores.size()[1] as usize);
    let k = k.min(n);
    if b == 0 || k == 0 {
        return Ok(TopK { rows: b, k, scores: Vec::new(), items: Vec::new() });
    }
    if n / CHUNK < 2 * k {
        top_k_narrow(scores, k)
    } else if scores.device() == tch::Device::Cpu && scores.kind() == Kind::Float {
        top_k_wide_host(scores, k)
    } else {
        top_k_wide_device(scores, k)
    }
}

/// The chunk-maximum selection with tensor operations (GPUs): bound, mask,
/// `nonzero`, gather, then rank the few candidates on the host.
fn top_k_wide_device(scores: &Tensor, k: usize) -> Result<TopK> {
    let (b, n) = (scores.size()[0] as usize, scores.size()[1] as usize);
    let chunks = n / CHUNK;
    let sel = tch::no_grad(|| {
        let maxima =
            scores.narrow(1, 0, (chunks * CHUNK) as i64).view([b as i64, chunks as i64, CHUNK as i64]).amax([2], false);
        // Rows with fewer than k finite maxima: every finite score qualifies.
        let bound = maxima.topk(k as i64, 1, true, false).0.narrow(1, k as i64 - 1, 1).clamp_min(f64::from(f32::MIN));
        scores.ge_tensor(&bound).nonzero()
    });
    let pairs = host_i64(&sel)?;
    let flat: Vec<i64> = pairs.chunks(2).map(|p| p[0] * n as i64 + p[1]).collect();
    let vals = host_f32(&scores.view([-1]).index_select(0, &Tensor::from_slice(&flat).to_device(scores.device())))?;
    let mut per_row: Vec<Vec<(f32, i64)>> = vec![Vec::new(); b];
    for (p, v) in pairs.chunks(2).zip(vals) {
        per_row[p[0] as usize].push((v, p[1]));
    }
    Ok(collect_rows(per_row, k))
}

/// The chunk-maximum selection on the CPU, row by row in parallel: the
/// row's chunk maxima, their k-th largest as the bound, then a scan of the
/// chunks that can hold scores at or above it. Each score is read from
/// memory once, where the tensor form makes four passes.
fn top_k_wide_host(scores: &Tensor, k: usize) -> Result<TopK> {
    use rayon::prelude::*;
    let scores = scores.contiguous();
    let (b, n) = (scores.size()[0] as usize, scores.size()[1] as usize);
    // SAFETY: `scores` is a contiguous float32 tensor in host memory with
    // b * n elements; it is owned here and not written while `flat` lives.
    let flat: &[f32] = unsafe { std::slice::from_raw_parts(scores.data_ptr() as *const f32, b * n) };
    let per_row: Vec<Vec<(f32, i64)>> = flat.par_chunks(n).map(|row| select_row(row, k)).collect();
    Ok(collect_rows(per_row, k))
}

/// The scores of one row that reach the k-th largest chunk maximum. Only
/// chunks whose maximum reaches the bound can hold one (about k of them),
/// so after the maxima pass just those chunks and the tail are scanned.
fn select_row(row: &[f32], k: usize) -> Vec<(f32, i64)> {
    let maxima: Vec<f32> = row.chunks_exact(CHUNK).map(chunk_max).collect();
    let bound = if maxima.len() >= k {
        let mut m = maxima.clone();
        let (_, kth, _) = m.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
        kth.max(f32::MIN)
    } else {
        f32::MIN
    };
    let tail = maxima.len() * CHUNK;
    let chunks = maxima.iter().enumerate().filter(|(_, m)| **m >= bound).map(|(c, _)| c * CHUNK..(c + 1) * CHUNK);
    chunks
        .chain(std::iter::once(tail..row.len()))
        .flat_map(|r| r.filter(|i| row[*i] >= bound).map(|i| (row[i], i as i64)))
        .collect()
}

/// Maximum of a chunk, in eight independent lanes so that it vectorises.
fn chunk_max(chunk: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    for c in chunk.chunks_exact(8) {
        for (l, v) in lanes.iter_mut().zip(c) {
            if *v > *l {
                *l = *v;
            }
        }
    }
    chunk.chunks_exact(8).remainder().iter().chain(&lanes).fold(f32::NEG_INFINITY, |m, v| if *v > m { *v } else { m })
}

/// Rank each row's candidates (best first, ties by item index) into k slots.
fn collect_rows(per_row: Vec<Vec<(f32, i64)>>, k: usize) -> TopK {
    let b = per_row.len();
    let mut out = TopK { rows: b, k, scores: vec![f32::NEG_INFINITY; b * k], items: vec![0; b * k] };
    for (r, mut row) in per_row.into_iter().enumerate() {
        row.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (j, (v, i)) in row.into_iter().take(k).enumerate() {
            out.scores[r * k + j] = v;
            out.items[r * k + j] = i;
        }
    }
    out
}

/// `top_k_of_scores` for rows too narrow to bound by chunks: `topk`, with
/// rows whose K-th score ties beyond K redone on the host.
fn top_k_narrow(scores: &Tensor, k: usize) -> Result<TopK> {
    let b = scores.size()[0] as usize;
    let (vals, idx) = scores.topk(k as i64, 1, true, true);
    let kth = vals.narrow(1, k as i64 - 1, 1);
    // Rows where more items reach the K-th score than fit: which of the tied
    // items topk kept is unspecified, so those rows are redone on the host.
    let reach = scores.ge_tensor(&kth).sum_dim_intlist(1, false, Kind::Int64);
    let ambiguous = reach.gt(k as i64).logical_and(&kth.squeeze_dim(1).isfinite());
    let (vals, idx) = (host_f32(&vals)?, host_i64(&idx)?);
    let mut per_row: Vec<Vec<(f32, i64)>> = (0..b)
        .map(|r| vals[r * k..(r + 1) * k].iter().copied().zip(idx[r * k..(r + 1) * k].iter().copied()).collect())
        .collect();
    for r in host_i64(&ambiguous.nonzero().view([-1]))? {
        let row = host_f32(&scores.get(r))?;
        let kth = vals[r as usize * k + k - 1];
        per_row[r as usize] = row.iter().enumerate().filter(|(_, s)| **s >= kth).map(|(i, s)| (*s, i as i64)).collect();
    }
    // Within the kept set, equal scores rank by item index.
    Ok(collect_rows(per_row, k))
}

/// Scores of a block of queries `[B, D]` against items `[N, D]`, masked,
/// reduced to the top k: the reference [`Search`] is checked against.
#[cfg(test)]
pub(crate) fn block_top_k(queries: &Tensor, items: &Tensor, masks: &Masks, k: usize) -> Result<TopK> {
    tch::no_grad(|| {
        let mut scores = queries.matmul(&items.tr());
        mask_scores(&mut scores, masks);
        top_k_of_scores(&scores, k)
    })
}

/// Extra candidates selected on the device before exact re-ranking: more
/// than enough to absorb float32 rounding differences near the K-th score.
pub(crate) const MARGIN: usize = 16;

/// Inner product of two host vectors in f64, summed in index order: the
/// same value whatever the device, block or shard.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum()
}

/// Re-rank a device selection (made with `k + MARGIN` slots) by exact
/// scores `exact(row, item)`, best first, ties by item index, keeping `k`.
///
/// Device scores can differ in the last bits between block shapes (BLAS
/// kernels sum in different orders), so the final order and scores come
/// from this host computation: results do not depend on how users were
/// blocked or sharded, or on the device.
pub(crate) fn refine(sel: &TopK, k: usize, exact: impl Fn(usize, i64) -> f64 + Sync) -> TopK {
    use rayon::prelude::*;
    let k = k.min(sel.k);
    let rows: Vec<Vec<(f32, i64)>> = (0..sel.rows)
        .into_par_iter()
        .map(|r| rank_exactly(sel.row(r).map(|(_, i)| (exact(r, i), i)).collect(), k))
        .collect();
    place(rows, k)
}

/// The k best of (exact score, item), best first, ties by item index.
fn rank_exactly(mut v: Vec<(f64, i64)>, k: usize) -> Vec<(f32, i64)> {
    v.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    v.into_iter().take(k).map(|(s, i)| (s as f32, i)).collect()
}

/// Ranked rows (at most k each, already in order) into k slots per row.
fn place(rows: Vec<Vec<(f32, i64)>>, k: usize) -> TopK {
    let n = rows.len();
    let mut out = TopK { rows: n, k, scores: vec![f32::NEG_INFINITY; n * k], items: vec![0; n * k] };
    for (r, row) in rows.into_iter().enumerate() {
        for (j, (s, i)) in row.into_iter().enumerate() {
            out.scores[r * k + j] = s;
            out.items[r * k + j] = i;
        }
    }
    out
}

/// The exact top-k of a block given its device scores `[B, N]` (masked
/// already) and the exact score of any (row, item): the `k + MARGIN` best
/// by device score, re-ranked by `exact` on the host.
pub(crate) fn exact_top_k(scores: &Tensor, k: usize, exact: impl Fn(usize, i64) -> f64 + Sync) -> Result<TopK> {
    Ok(refine(&top_k_of_scores(scores, k + MARGIN)?, k, exact))
}

/// One blocked exact search of query rows against item rows, behind every
/// top-K nightrec writes (user_candidates and cross_category, item_similar,
/// query_candidates, `nightrec topk`): queries go to the device a block at
/// a time (the block sized from a memory budget, so the queries × items
/// matrix never exists), are scored against every item with one product,
/// masked, reduced to their `k + MARGIN` best, and re-ranked by the exact
/// inner product of the host vectors ([`refine`]), so results do not depend
/// on blocking, sharding or device.
pub(crate) struct Search<'a> {
    queries: &'a [f32],
    items_host: &'a [f32],
    items: &'a Tensor,
    dim: usize,
    block: usize,
    packed: Option<bf16::Packed>,
}

impl<'a> Search<'a> {
    /// Queries and items row-major on the host (`dim` wide), the same items
    /// `[N, dim]` on the device, and the memory budget of one block of scores.
    pub(crate) fn new(
        queries: &'a [f32],
        items_host: &'a [f32],
        items: &'a Tensor,
        dim: usize,
        budget: MemoryBudget,
    ) -> Self {
        let n_items = items_host.len() / dim.max(1);
        Search { queries, items_host, items, dim, block: block_rows(budget, n_items), packed: None }
    }

    /// Take the bf16 first pass in [`Search::top_k`] where it applies (items
    /// on the CPU, which has AVX-512 BF16; finite vectors): candidates from
    /// bf16 products with a proven error bound, ranked by the same exact
    /// scores, so results are identical to the f32 path's. No score matrix
    /// is held, so blocks of queries grow to [`FIRST_PASS_BLOCK`].
    pub(crate) fn reduced_precision(mut self) -> Self {
        if self.items.device() == tch::Device::Cpu {
            self.packed = bf16::Packed::new(self.items_host, self.dim);
            if self.packed.is_some() {
                self.block = self.block.max(FIRST_PASS_BLOCK);
            }
        }
        self
    }

    /// Whether [`Search::top_k`] takes the bf16 first pass.
    #[cfg(test)]
    pub(crate) fn first_pass_bf16(&self) -> bool {
        self.packed.is_some()
    }

    /// Queries per block.
    pub(crate) fn block(&self) -> usize {
        self.block
    }

    /// The blocks of query rows, in order.
    pub(crate) fn blocks(&self) -> impl Iterator<Item = std::ops::Range<usize>> + use<> {
        let (n, b) = (self.queries.len() / self.dim.max(1), self.block.max(1));
        (0..n).step_by(b).map(move |s| s..(s + b).min(n))
    }

    /// Inner products `[B, N]` of a block of queries with every item, on the items' device.
    pub(crate) fn scores(&self, rows: std::ops::Range<usize>) -> Tensor {
        let d = self.dim;
        let q = Tensor::from_slice(&self.queries[rows.start * d..rows.end * d])
            .view([rows.len() as i64, d as i64])
            .to_device(self.items.device());
        tch::no_grad(|| q.matmul(&self.items.tr()))
    }

    /// The exact top-k of a block of queries by inner product, masked.
    pub(crate) fn top_k(&self, rows: std::ops::Range<usize>, masks: &Masks, k: usize) -> Result<TopK> {
        if let (Some(packed), None) = (&self.packed, masks.per_row)
            && let Some(top) = self.top_k_bf16(packed, rows.clone(), masks, k)?
        {
            return Ok(top);
        }
        let mut scores = self.scores(rows.clone());
        mask_scores(&mut scores, masks);
        // The slices only: the search itself holds a tensor, which is not Sync.
        let (q, it, d, start) = (self.queries, self.items_host, self.dim, rows.start);
        exact_top_k(&scores, k, move |r, i| {
            let a = start + r;
            dot(&q[a * d..(a + 1) * d], &it[i as usize * d..(i as usize + 1) * d])
        })
    }

    /// [`Search::top_k`] by the bf16 first pass; None when a query cannot
    /// be bounded (not finite), for the f32 path to take.
    fn top_k_bf16(
        &self,
        packed: &bf16::Packed,
        rows: std::ops::Range<usize>,
        masks: &Masks,
        k: usize,
    ) -> Result<Option<TopK>> {
        use rayon::prelude::*;
        let blocked = match masks.all {
            Some(t) => Some(
                Vec::<bool>::try_from(t.to_device(tch::Device::Cpu).contiguous().view([-1]))
                    .map_err(|e| Error::torch("copying the item mask to the host", e))?,
            ),
            None => None,
        };
        let allowed = packed.allowed(blocked.as_deref());
        let mut excl: Vec<Vec<u32>> = vec![Vec::new(); rows.len()];
        for (r, i) in masks.pairs {
            if let (Some(e), Ok(i)) = (excl.get_mut(*r as usize), u32::try_from(*i)) {
                e.push(i);
            }
        }
        excl.iter_mut().for_each(|e| e.sort_unstable());
        let excluded = |r: usize, i: u32| excl[r].binary_search(&i).is_ok();
        let (q, it, d, start) = (self.queries, self.items_host, self.dim, rows.start);
        let Some(cands) = packed.candidates(&q[rows.start * d..rows.end * d], k, &allowed, &excluded) else {
            return Ok(None);
        };
        let k = k.min(packed.len());
        let ranked: Vec<Vec<(f32, i64)>> = cands
            .par_iter()
            .enumerate()
            .map(|(r, c)| {
                let a = &q[(start + r) * d..(start + r + 1) * d];
                let v =
                    c.iter().map(|i| (dot(a, &it[*i as usize * d..(*i as usize + 1) * d]), i64::from(*i))).collect();
                rank_exactly(v, k)
            })
            .collect();
        Ok(Some(place(ranked, k)))
    }
}

/// Queries per block on the bf16 first pass, which holds no score matrix.
pub(crate) const FIRST_PASS_BLOCK: usize = 4096;

/// Exact top-k of every query row against every item row, without masks.
pub(crate) fn all_top_k(
    queries: &[f32],
    items: &[f32],
    dim: usize,
    k: usize,
    budget: MemoryBudget,
    device: tch::Device,
) -> Result<TopK> {
    let (n, m) = (queries.len() / dim.max(1), items.len() / dim.max(1));
    let items_t = Tensor::from_slice(items).view([m as i64, dim as i64]).to_device(device);
    let search = Search::new(queries, items, &items_t, dim, budget).reduced_precision();
    let k = k.min(m);
    let mut out = TopK { rows: n, k, scores: Vec::with_capacity(n * k), items: Vec::with_capacity(n * k) };
    let none = Masks { all: None, pairs: &[], per_row: None };
    for rows in search.blocks() {
        let top = search.top_k(rows, &none, k)?;
        out.scores.extend(top.scores);
        out.items.extend(top.items);
    }
    Ok(out)
}

/// `nightrec topk`: .npy in, .npy of item indices out; (queries, items).
pub(crate) fn npy_top_k(
    queries: &std::path::Path,
    items: &std::path::Path,
    k: usize,
    budget: MemoryBudget,
    out: &std::path::Path,
    device: tch::Device,
) -> Result<(usize, usize)> {
    let read = |p: &std::path::Path| -> Result<(Vec<f32>, usize)> {
        let t = Tensor::read_npy(p).map_err(|e| Error::Usage(format!("reading {}: {e}", p.display())))?;
        if t.dim() != 2 {
            return Err(Error::Usage(format!("{} is not a matrix", p.display())));
        }
        let d = t.size()[1] as usize;
        Ok((host_f32(&t)?, d))
    };
    let (q, d) = read(queries)?;
    let (it, d2) = read(items)?;
    if d != d2 {
        return Err(Error::Usage(format!("queries have {d} columns, items {d2}")));
    }
    let top = all_top_k(&q, &it, d, k, budget, device)?;
    write_npy_i64(out, &top.items, top.rows, top.k).map_err(|e| Error::io(out.display(), e))?;
    Ok((q.len() / d.max(1), it.len() / d.max(1)))
}

/// Write a `rows × cols` int64 matrix as a .npy file (format 1.0), straight
/// from the slice: no second copy of a result that can be gigabytes.
fn write_npy_i64(path: &std::path::Path, data: &[i64], rows: usize, cols: usize) -> std::io::Result<()> {
    use std::io::Write;
    let mut header = format!("{{'descr': '<i8', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + length (2) + header + newline: a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    w.write_all(b"\x93NUMPY\x01\x00")?;
    w.write_all(&(header.len() as u16).to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    for chunk in data.chunks(1 << 16) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
        w.write_all(&bytes)?;
    }
    w.flush()
}

/// Copy a float tensor to a host vector.
pub(crate) fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    Vec::<f32>::try_from(t.to_device(tch::Device::Cpu).to_kind(Kind::Float).contiguous().view([-1]))
        .map_err(|e| Error::torch("copying scores to the host", e))
}

/// Copy an integer tensor to a host vector.
pub(crate) fn host_i64(t: &Tensor) -> Result<Vec<i64>> {
    Vec::<i64>::try_from(t.to_device(tch::Device::Cpu).to_kind(Kind::Int64).contiguous().view([-1]))
        .map_err(|e| Error::torch("copying indices to the host", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small integer vectors: every dot product is exact in f32, so ties
    /// are real ties and the reference can be computed independently.
    fn int_matrix(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::Rng::new(seed);
        (0..rows * dim).map(|_| rng.below(5) as f32 - 2.0).collect()
    }

    fn reference(u: &[f32], it: &[f32], dim: usize, k: usize, banned: impl Fn(usize, usize) -> bool) -> Vec<Vec<i64>> {
        let n = it.len() / dim;
        (0..u.len() / dim)
            .map(|r| {
                let mut all: Vec<(f32, i64)> = (0..n)
                    .filter(|j| !banned(r, *j))
                    .map(|j| ((0..dim).map(|d| u[r * dim + d] * it[j * dim + d]).sum(), j as i64))
                    .collect();
                all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                all.into_iter().take(k).map(|x| x.1).collect()
            })
            .collect()
    }

    #[test]
    fn top_k_equals_brute_force_with_ties_and_masks() {
        // Narrow rows take topk; wide ones the chunk-maximum bound.
        for (b, n, dim, k) in [(40, 300, 3, 25), (20, 5000, 3, 12), (9, 4000, 2, 30)] {
            brute_force_case(b, n, dim, k);
        }
    }

    fn brute_force_case(b: usize, n: usize, dim: usize, k: usize) {
        let u = int_matrix(b, dim, 1 + n as u64);
        let it = int_matrix(n, dim, 2 + n as u64);
        let users = Tensor::from_slice(&u).view([b as i64, dim as i64]);
        let items = Tensor::from_slice(&it).view([n as i64, dim as i64]);
        let all: Vec<bool> = (0..n).map(|j| j % 17 == 0).collect();
        let all_t = Tensor::from_slice(&all);
        let pairs: Vec<(i64, i64)> = (0..b as i64).map(|r| (r, (r * 7) % n as i64)).collect();
        let per_row: Vec<bool> = (0..b * n).map(|x| (x / n).is_multiple_of(3) && (x % n) < 50).collect();
        let per_row_t = Tensor::from_slice(&per_row).view([b as i64, n as i64]);
        let masks = Masks { all: Some(&all_t), pairs: &pairs, per_row: Some(&per_row_t) };
        let got = block_top_k(&users, &items, &masks, k).unwrap();
        let want = reference(&u, &it, dim, k, |r, j| all[j] || j == (r * 7) % n || per_row[r * n + j]);
        for (r, want) in want.iter().enumerate() {
            let row: Vec<i64> = got.row(r).map(|x| x.1).collect();
            assert_eq!(&row, want, "row {r}");
            let scores: Vec<f32> = got.row(r).map(|x| x.0).collect();
            assert!(scores.windows(2).all(|w| w[0] >= w[1]), "row {r}");
        }
        // With 3 dims of values in -2..=2 ties abound: the test means something.
        let ties = (0..b).filter(|r| got.row(*r).collect::<Vec<_>>().windows(2).any(|w| w[0].0 == w[1].0)).count();
        assert!(ties > b / 2, "only {ties} rows with ties");
    }

    #[test]
    fn host_and_tensor_selections_agree() {
        // The CPU takes the host scan, GPUs the tensor form: same result,
        // including -inf (masked) slots and rows with fewer than k chunks
        // holding a finite score.
        let _rng = crate::device::rng_lock();
        tch::manual_seed(11);
        let scores = Tensor::randint_low(-3, 4, [17, 64 * 40 + 5], (Kind::Float, tch::Device::Cpu));
        let (rows, cols) = (
            Tensor::arange(17, (Kind::Int64, tch::Device::Cpu)),
            Tensor::arange(64 * 40 + 5, (Kind::Int64, tch::Device::Cpu)),
        );
        // Row 3 entirely masked; row 5 keeps three chunks only.
        let row5_tail = rows.eq(5).unsqueeze(1).logical_and(&cols.ge(64 * 3).unsqueeze(0));
        let masked = scores.lt(-2).logical_or(&rows.eq(3).unsqueeze(1)).logical_or(&row5_tail);
        let scores = scores.masked_fill(&masked, f64::NEG_INFINITY);
        for k in [1, 7, 20] {
            let host = top_k_wide_host(&scores, k).unwrap();
            let device = top_k_wide_device(&scores, k).unwrap();
            assert_eq!(host, device, "k = {k}");
            assert_eq!(host.row(3).count(), 0);
            assert!(host.row(5).all(|(_, i)| i < 64 * 3));
        }
    }

    #[test]
    fn the_bf16_first_pass_gives_the_f32_paths_results() {
        // Same blocks, masks and exclusions through both paths: identical
        // items and scores (both rank by the exact f64 inner product).
        let _rng = crate::device::rng_lock();
        tch::manual_seed(8);
        let (nq, n, d) = (700usize, 3000usize, 48usize);
        let users = Tensor::randn([nq as i64, d as i64], (Kind::Float, tch::Device::Cpu));
        let items = Tensor::randn([n as i64, d as i64], (Kind::Float, tch::Device::Cpu))
            * Tensor::arange(n as i64, (Kind::Float, tch::Device::Cpu)).remainder(4).unsqueeze(1).g_add_scalar(0.5);
        let (u, it) = (host_f32(&users).unwrap(), host_f32(&items).unwrap());
        let blocked: Vec<bool> = (0..n).map(|j| j % 13 == 0).collect();
        let blocked_t = Tensor::from_slice(&blocked);
        let plain = Search::new(&u, &it, &items, d, MemoryBudget::mib(1));
        let fast = Search::new(&u, &it, &items, d, MemoryBudget::mib(1)).reduced_precision();
        assert_eq!(fast.first_pass_bf16(), bf16::available());
        assert!(plain.blocks().count() > 3, "several blocks");
        for rows in plain.blocks() {
            let pairs: Vec<(i64, i64)> = rows
                .clone()
                .flat_map(|r| [((r - rows.start) as i64, (r * 5 % n) as i64), ((r - rows.start) as i64, 1)])
                .collect();
            let masks = Masks { all: Some(&blocked_t), pairs: &pairs, per_row: None };
            for k in [1, 10, 100] {
                let (a, b) =
                    (plain.top_k(rows.clone(), &masks, k).unwrap(), fast.top_k(rows.clone(), &masks, k).unwrap());
                assert_eq!(a, b, "rows {rows:?}, k = {k}");
                assert!(b.items.iter().all(|i| !blocked[*i as usize] && *i != 1));
            }
        }
    }

    #[test]
    fn npy_output_reads_back() {
        let dir = std::env::temp_dir().join(format!("nightrec-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ids.npy");
        let data: Vec<i64> = (0..35).map(|v| v * 1_000_000_007 - 3).collect();
        write_npy_i64(&path, &data, 7, 5).unwrap();
        let t = Tensor::read_npy(&path).unwrap();
        assert_eq!(t.size(), vec![7, 5]);
        assert_eq!(host_i64(&t).unwrap(), data);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rows_with_few_eligible_items_end_early() {
        let users = Tensor::from_slice(&[1f32, 0., 0., 1.]).view([2, 2]);
        let items = Tensor::from_slice(&[1f32, 0., 0., 1., 1., 1.]).view([3, 2]);
        let pairs = [(0, 0), (0, 2)];
        let got = block_top_k(&users, &items, &Masks { all: None, pairs: &pairs, per_row: None }, 5).unwrap();
        assert_eq!(got.k, 3);
        assert_eq!(got.row(0).collect::<Vec<_>>(), vec![(0.0, 1)]);
        assert_eq!(got.row(1).collect::<Vec<_>>(), vec![(1.0, 1), (1.0, 2), (0.0, 0)]);
    }

    #[test]
    fn a_block_scores_each_query_as_it_would_alone() {
        // Shards split users into other blocks: results must not depend on
        // which users share a block.
        let _rng = crate::device::rng_lock();
        tch::manual_seed(5);
        let users = Tensor::randn([300, 64], (Kind::Float, tch::Device::Cpu));
        let items = Tensor::randn([2000, 64], (Kind::Float, tch::Device::Cpu));
        let none = Masks { all: None, pairs: &[], per_row: None };
        let (u, it) = (host_f32(&users).unwrap(), host_f32(&items).unwrap());
        let (u, it) = (&u, &it);
        let exact = |start: usize| {
            move |r: usize, i: i64| {
                dot(&u[(start + r) * 64..(start + r + 1) * 64], &it[i as usize * 64..(i as usize + 1) * 64])
            }
        };
        let whole = refine(&block_top_k(&users, &items, &none, 10 + MARGIN).unwrap(), 10, exact(0));
        // Small blocks take other BLAS kernels than large ones.
        for (start, len) in [(0, 1), (0, 2), (0, 3), (5, 4), (7, 13), (100, 200), (299, 1)] {
            let sel = block_top_k(&users.narrow(0, start, len), &items, &none, 10 + MARGIN).unwrap();
            let part = refine(&sel, 10, exact(start as usize));
            let s = start as usize * 10;
            assert_eq!(part.scores, whole.scores[s..s + len as usize * 10], "block at {start}");
            assert_eq!(part.items, whole.items[s..s + len as usize * 10], "block at {start}");
        }
    }
}
