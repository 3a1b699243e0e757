//! A reduced-precision first pass for the exact top-K, on CPUs with
//! AVX-512 BF16.
//!
//! Queries and items are rounded to bfloat16 and scored with `vdpbf16ps`
//! (pairs of bf16 products accumulated in f32: twice the arithmetic of an
//! f32 FMA per instruction), in register tiles of [`QR`] queries × [`MT`]·16
//! items. A tile's scores never leave the registers: each is compared at
//! once with its query's running threshold, so no score matrix is written
//! and almost every tile is dismissed by one compare.
//!
//! Exactness. Rounding a coordinate to bf16 changes it by at most a
//! relative u = 2^-8, a product by at most (2u + u²) of |q_i x_i|, and
//! summing d products in f32 adds at most about d·2^-24 of Σ|q_i x_i|. By
//! Cauchy–Schwarz Σ|q_i x_i| ≤ ‖q‖‖x‖, so the true score lies within
//! E = c(d)·‖q‖‖x‖ of the approximate one ([`bound_factor`], with slack for
//! the f32 arithmetic of the bounds themselves), plus [`ABS`] for subnormals
//! the instruction flushes. The K-th largest lower bound (approximate − E)
//! among the items seen so far is at most the K-th largest true score; an
//! item whose upper bound (approximate + E) falls below it cannot be in the
//! top K, not even by a tie. Every other item is a candidate, re-scored
//! exactly by the caller and ranked there: the result is the exact top-K,
//! whatever the precision of the first pass.

/// Queries per register tile.
const QR: usize = 6;
/// 16-item groups per register tile.
const MT: usize = 4;
/// Items per group: one 512-bit vector of f32 scores.
const LANES: usize = 16;
/// Absolute slack for subnormals flushed to zero (inputs are limited to
/// norms of at most [`MAX_NORM`] and `dim` ≤ [`MAX_DIM`], which bounds the
/// flushed terms far below this).
const ABS: f32 = 1e-18;
const MAX_NORM: f64 = 1e18;
const MAX_DIM: usize = 4096;

/// Whether this process can take the bf16 first pass: an x86-64 CPU with
/// AVX-512 F and BF16, unless `NIGHTREC_TOPK_FIRST_PASS=fp32` asks for the
/// f32 path (benchmarks compare the two).
pub(crate) fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let forced_off = std::env::var("NIGHTREC_TOPK_FIRST_PASS").is_ok_and(|v| v.eq_ignore_ascii_case("fp32"));
        !forced_off && cpu_has_bf16()
    })
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_bf16() -> bool {
    std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bf16")
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_bf16() -> bool {
    false
}

/// c(d): the true score is within c(d)·‖q‖‖x‖ of the bf16 one.
pub(crate) fn bound_factor(dim: usize) -> f64 {
    let u = 2f64.powi(-8);
    (2.0 * u + u * u + (2 * dim + 32) as f64 * 2f64.powi(-24)) * (1.0 + 2f64.powi(-10))
}

/// f32 to bf16, rounding to nearest even (finite inputs).
fn bf16(v: f32) -> u32 {
    let b = v.to_bits();
    b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16
}

/// Pairs of coordinates as bf16 (even coordinate in the low half), the
/// layout `vdpbf16ps` multiplies lane by lane.
fn pairs_of(v: &[f32], pairs: usize, out: &mut [u32]) {
    for (p, o) in out.iter_mut().enumerate().take(pairs) {
        let lo = bf16(v[2 * p]);
        let hi = v.get(2 * p + 1).map_or(0, |x| bf16(*x));
        *o = lo | (hi << 16);
    }
}

/// The Euclidean norm, rounded up to f32; None when not finite or too large.
fn norm(v: &[f32]) -> Option<f32> {
    let n = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    (n.is_finite() && n <= MAX_NORM).then(|| (n as f32).next_up())
}

/// Items packed for the first pass: groups of 16 items, each group stored
/// pair by pair (16 lanes of two bf16 per pair), and each item's error
/// factor c(d)·‖x‖.
pub(crate) struct Packed {
    dim: usize,
    pairs: usize,
    n: usize,
    groups: usize,
    data: Vec<u32>,
    err: Vec<f32>,
}

impl Packed {
    /// Pack `items` (row-major, `dim` wide). None when the CPU lacks the
    /// instructions, or the vectors are not finite or too large to bound.
    pub(crate) fn new(items: &[f32], dim: usize) -> Option<Packed> {
        if !available() || dim == 0 || dim > MAX_DIM {
            return None;
        }
        let n = items.len() / dim;
        let pairs = dim.div_ceil(2);
        let groups = n.div_ceil(LANES);
        let c = bound_factor(dim);
        let mut data = vec![0u32; groups * pairs * LANES];
        let mut err = vec![0f32; groups * LANES];
        let mut row = vec![0u32; pairs];
        for (j, x) in items.chunks_exact(dim).enumerate() {
            err[j] = ((c * f64::from(norm(x)?)) as f32).next_up();
            pairs_of(x, pairs, &mut row);
            let (g, l) = (j / LANES, j % LANES);
            for (p, v) in row.iter().enumerate() {
                data[(g * pairs + p) * LANES + l] = *v;
            }
        }
        Some(Packed { dim, pairs, n, groups, data, err })
    }

    /// Items packed.
    pub(crate) fn len(&self) -> usize {
        self.n
    }

    /// One bit per item of each group, set where the item exists and is
    /// not blocked for every query.
    pub(crate) fn allowed(&self, blocked: Option<&[bool]>) -> Vec<u16> {
        (0..self.groups)
            .map(|g| {
                (0..LANES).fold(0u16, |bits, l| {
                    let j = g * LANES + l;
                    let ok = j < self.n && !blocked.is_some_and(|b| b.get(j).copied().unwrap_or(false));
                    bits | (u16::from(ok) << l)
                })
            })
            .collect()
    }

    /// For each query (row-major, `dim` wide), the indices of every item
    /// that could be among its k best by exact inner product, given the
    /// items `allowed` ([`Packed::allowed`]) and those `excluded(query,
    /// item)` for one query. None when a query is not finite or too large.
    pub(crate) fn candidates(
        &self,
        queries: &[f32],
        k: usize,
        allowed: &[u16],
        excluded: &(dyn Fn(usize, u32) -> bool + Sync),
    ) -> Option<Vec<Vec<u32>>> {
        use rayon::prelude::*;
        let nq = queries.len() / self.dim.max(1);
        if k == 0 || nq == 0 {
            return Some(vec![Vec::new(); nq]);
        }
        // Tasks of whole register tiles, at least four per thread so that
        // the threads finish together; at most 96 queries, which share each
        // pass over the items.
        let per_task = nq.div_ceil(rayon::current_num_threads() * 4).div_ceil(QR).clamp(1, 16) * QR;
        let tasks: Vec<Option<Vec<Vec<u32>>>> = (0..nq)
            .step_by(per_task)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|start| {
                let end = (start + per_task).min(nq);
                self.task(&queries[start * self.dim..end * self.dim], start, k, allowed, excluded)
            })
            .collect();
        let mut out = Vec::with_capacity(nq);
        for t in tasks {
            out.extend(t?);
        }
        Some(out)
    }

    /// The candidates of a few queries, the first being query `first`.
    fn task(
        &self,
        queries: &[f32],
        first: usize,
        k: usize,
        allowed: &[u16],
        excluded: &(dyn Fn(usize, u32) -> bool + Sync),
    ) -> Option<Vec<Vec<u32>>> {
        let nq = queries.len() / self.dim;
        let padded = nq.div_ceil(QR) * QR;
        let mut q = vec![0u32; padded * self.pairs];
        let mut qn = vec![0f32; padded];
        for (r, v) in queries.chunks_exact(self.dim).enumerate() {
            qn[r] = norm(v)?;
            pairs_of(v, self.pairs, &mut q[r * self.pairs..(r + 1) * self.pairs]);
        }
        let mut best: Vec<Best> = (0..nq).map(|_| Best::new(k)).collect();
        let mut sweep = Sweep { p: self, q: &q, qn: &qn, best: &mut best, k, allowed, first, excluded };
        let mut g = 0;
        while g < self.groups {
            let wide = self.groups - g >= MT;
            for r0 in (0..padded).step_by(QR) {
                if wide {
                    sweep.tile::<MT>(g, r0);
                } else {
                    for gg in g..self.groups {
                        sweep.tile::<1>(gg, r0);
                    }
                }
            }
            g += if wide { MT } else { self.groups - g };
        }
        Some(best.into_iter().enumerate().map(|(r, b)| b.finish(k, qn[r], &self.err)).collect())
    }
}

/// One query's items that may still enter its top k: approximate scores
/// and item indices, and the cut an item's upper bound must reach.
struct Best {
    cut: f32,
    buf: Vec<(f32, u32)>,
    cap: usize,
}

impl Best {
    fn new(k: usize) -> Best {
        Best { cut: f32::NEG_INFINITY, buf: Vec::new(), cap: (4 * k).max(256) }
    }

    fn push(&mut self, s: f32, item: u32, k: usize, qn: f32, err: &[f32]) {
        self.buf.push((s, item));
        if self.buf.len() >= self.cap {
            self.prune(k, qn, err);
            if self.buf.len() * 2 > self.cap {
                self.cap *= 2;
            }
        }
    }

    /// Raise the cut to the k-th largest lower bound, drop what is below it.
    fn prune(&mut self, k: usize, qn: f32, err: &[f32]) {
        if self.buf.len() < k {
            return;
        }
        let mut lower: Vec<f32> = self.buf.iter().map(|(s, i)| s - qn * err[*i as usize] - ABS).collect();
        let (_, kth, _) = lower.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
        self.cut = self.cut.max(*kth);
        let cut = self.cut;
        self.buf.retain(|(s, i)| s + qn * err[*i as usize] + ABS >= cut);
    }

    fn finish(mut self, k: usize, qn: f32, err: &[f32]) -> Vec<u32> {
        self.prune(k, qn, err);
        self.buf.into_iter().map(|(_, i)| i).collect()
    }
}

/// The state of one task's pass over the items.
struct Sweep<'a> {
    p: &'a Packed,
    q: &'a [u32],
    qn: &'a [f32],
    best: &'a mut [Best],
    k: usize,
    allowed: &'a [u16],
    first: usize,
    excluded: &'a (dyn Fn(usize, u32) -> bool + Sync),
}

impl Sweep<'_> {
    /// Score queries `r0..r0 + QR` against groups `g..g + M` and keep what
    /// reaches each query's cut.
    fn tile<const M: usize>(&mut self, g: usize, r0: usize) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Packed::new` returns a value only when the CPU has
        // AVX-512 F and BF16; `g + M <= groups` and `r0 + QR <= padded
        // queries` are kept by the caller, so every load is in bounds.
        unsafe {
            self.tile_avx512::<M>(g, r0)
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (g, r0);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn tile_avx512<const M: usize>(&mut self, g: usize, r0: usize) {
        use std::arch::x86_64::*;
        let pairs = self.p.pairs;
        let stride = pairs * LANES;
        let x = self.p.data[g * stride..(g + M) * stride].as_ptr();
        let q = self.q[r0 * pairs..(r0 + QR) * pairs].as_ptr();
        let mut acc = [[_mm512_setzero_ps(); M]; QR];
        for p in 0..pairs {
            let mut v = [_mm512_setzero_si512(); M];
            for (m, v) in v.iter_mut().enumerate() {
                // SAFETY: m * stride + p * LANES + 16 <= M * stride.
                *v = unsafe { _mm512_loadu_epi32(x.add(m * stride + p * LANES).cast::<i32>()) };
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: r * pairs + p < QR * pairs.
                let b = _mm512_set1_epi32(unsafe { *q.add(r * pairs + p) } as i32);
                // SAFETY: plain reinterpretations of 512 bits.
                let b = unsafe { std::mem::transmute::<__m512i, __m512bh>(b) };
                for (a, v) in acc.iter_mut().zip(&v) {
                    let v = unsafe { std::mem::transmute::<__m512i, __m512bh>(*v) };
                    *a = _mm512_dpbf16_ps(*a, v, b);
                }
            }
        }
        let n_real = self.best.len();
        for (r, acc) in acc.iter().enumerate() {
            let row = r0 + r;
            if row >= n_real {
                break;
            }
            let qn = self.qn[row];
            let qv = _mm512_set1_ps(qn);
            for (m, s) in acc.iter().enumerate() {
                let gi = g + m;
                let cut = _mm512_set1_ps(self.best[row].cut - ABS);
                // SAFETY: err has groups * LANES entries.
                let e = unsafe { _mm512_loadu_ps(self.p.err.as_ptr().add(gi * LANES)) };
                let upper = _mm512_fmadd_ps(e, qv, *s);
                let mut hits = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(upper, cut) & self.allowed[gi];
                if hits == 0 {
                    continue;
                }
                let mut scores = [0f32; LANES];
                // SAFETY: scores holds 16 f32.
                unsafe { _mm512_storeu_ps(scores.as_mut_ptr(), *s) };
                while hits != 0 {
                    let l = hits.trailing_zeros() as usize;
                    hits &= hits - 1;
                    let item = (gi * LANES + l) as u32;
                    if !(self.excluded)(self.first + row, item) {
                        self.best[row].push(scores[l], item, self.k, qn, &self.p.err);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact_top(q: &[f32], items: &[f32], dim: usize, k: usize, skip: impl Fn(usize) -> bool) -> Vec<u32> {
        let mut all: Vec<(f64, u32)> = items
            .chunks_exact(dim)
            .enumerate()
            .filter(|(j, _)| !skip(*j))
            .map(|(j, x)| (q.iter().zip(x).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum(), j as u32))
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        all.into_iter().take(k).map(|x| x.1).collect()
    }

    /// The candidates, ranked exactly, must be the exact top k.
    fn check(queries: &[f32], items: &[f32], dim: usize, k: usize, blocked: &[bool]) -> usize {
        let Some(p) = Packed::new(items, dim) else {
            assert!(!available(), "the CPU has BF16 but packing failed");
            return 0;
        };
        let excluded = |q: usize, i: u32| (q * 7 + 3) % p.len() == i as usize;
        let cands = p.candidates(queries, k, &p.allowed(Some(blocked)), &excluded).unwrap();
        let mut total = 0;
        for (r, c) in cands.iter().enumerate() {
            let q = &queries[r * dim..(r + 1) * dim];
            let skip = |j: usize| blocked[j] || excluded(r, j as u32);
            let want = exact_top(q, items, dim, k, skip);
            let sub: Vec<f32> =
                c.iter().flat_map(|i| items[*i as usize * dim..(*i as usize + 1) * dim].to_vec()).collect();
            let got: Vec<u32> =
                exact_top(q, &sub, dim, k, |j| skip(c[j] as usize)).iter().map(|j| c[*j as usize]).collect();
            assert_eq!(got, want, "query {r}");
            total += c.len();
        }
        total
    }

    fn gaussian(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::Rng::new(seed);
        // Box–Muller.
        (0..n)
            .map(|_| {
                let (a, b) = (rng.f64().max(1e-12), rng.f64());
                ((-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()) as f32
            })
            .collect()
    }

    #[test]
    fn candidates_hold_the_exact_top_k() {
        // Odd dims, item counts off the 16 and 64 grids, k above the
        // eligible count, query counts off the 6-row tiles.
        for (nq, n, dim, k) in
            [(13, 1000, 64, 10), (7, 333, 17, 25), (20, 70, 3, 100), (1, 5, 8, 3), (31, 4096, 32, 50)]
        {
            let q = gaussian(nq * dim, 1 + n as u64);
            // Items of very different norms: the bound is per item.
            let mut it = gaussian(n * dim, 2 + n as u64);
            for (j, x) in it.chunks_exact_mut(dim).enumerate() {
                x.iter_mut().for_each(|v| *v *= 1.0 + (j % 5) as f32);
            }
            let blocked: Vec<bool> = (0..n).map(|j| j % 11 == 0).collect();
            let total = check(&q, &it, dim, k, &blocked);
            if available() && n > 4 * k {
                // Few more candidates than k: the pass prunes.
                assert!(total < nq * n / 2, "{total} candidates for {nq} queries x {n} items");
            }
        }
    }

    #[test]
    fn ties_and_near_ties_below_bf16_resolution_stay_exact() {
        // Integer vectors: bf16 holds them exactly, ties are real.
        let mut rng = crate::rng::Rng::new(9);
        let dim = 5;
        let int =
            |n: usize, rng: &mut crate::rng::Rng| (0..n * dim).map(|_| rng.below(5) as f32 - 2.0).collect::<Vec<_>>();
        let (q, it) = (int(40, &mut rng), int(3000, &mut rng));
        check(&q, &it, dim, 30, &vec![false; 3000]);
        // Items that differ by far less than bf16 can see: the first pass
        // cannot order them, the exact ranking must.
        let dim = 8;
        let it: Vec<f32> =
            (0..2000).flat_map(|j| (0..dim).map(move |d| 1.0 + if d == 0 { j as f32 * 1e-5 } else { 0.0 })).collect();
        let q: Vec<f32> =
            (0..12).flat_map(|r| (0..dim).map(move |d| if d == 0 { 1.0 + r as f32 } else { 0.5 })).collect();
        check(&q, &it, dim, 20, &vec![false; 2000]);
    }

    #[test]
    fn not_finite_vectors_are_refused() {
        if !available() {
            return;
        }
        assert!(Packed::new(&[1.0, f32::NAN, 0.0, 1.0], 2).is_none());
        let p = Packed::new(&[1.0, 0.0, 0.0, 1.0], 2).unwrap();
        let none = |_: usize, _: u32| false;
        assert!(p.candidates(&[f32::INFINITY, 0.0], 1, &p.allowed(None), &none).is_none());
    }

    #[test]
    fn rounding_to_bf16_is_to_nearest_even() {
        assert_eq!(bf16(1.0), 0x3F80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: to even (1.0).
        assert_eq!(bf16(1.0 + 2f32.powi(-8)), 0x3F80);
        assert_eq!(bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3F82);
        assert_eq!(bf16(-2.0), 0xC000);
    }
}
