//! k-means with k-means++ initialisation, on the device.
//!
//! Points are L2-normalised first (user embeddings are compared by inner
//! product, so direction is what matters). Seeding draws from a seeded host
//! generator, so a run is reproducible; an empty cluster is re-seeded with
//! the point farthest from its centre.

use tch::{Kind, Tensor};

use crate::error::Result;
use crate::rng::Rng;
use crate::topk::{host_f32, host_i64};

/// The result: a cluster per point and its distance to the centre.
#[derive(Debug, Clone)]
pub(crate) struct Clusters {
    /// Cluster of each point, 0..k.
    pub assignment: Vec<i64>,
    /// Euclidean distance of each (normalised) point to its centre.
    pub distance: Vec<f32>,
    /// Points per cluster.
    pub sizes: Vec<usize>,
}

/// Squared distances of points `[n, d]` to centres `[k, d]`, in blocks of
/// `block` points; returns (nearest centre, its squared distance).
fn nearest(points: &Tensor, centres: &Tensor, block: i64) -> (Tensor, Tensor) {
    let n = points.size()[0];
    let c2 = centres.pow_tensor_scalar(2).sum_dim_intlist(1, false, Kind::Float);
    let mut idx = Vec::new();
    let mut dist = Vec::new();
    let mut start = 0;
    while start < n {
        let len = block.min(n - start);
        let p = points.narrow(0, start, len);
        let p2 = p.pow_tensor_scalar(2).sum_dim_intlist(1, true, Kind::Float);
        let d = (p2 - p.matmul(&centres.tr()) * 2.0 + c2.unsqueeze(0)).clamp_min(0.0);
        let (v, i) = d.min_dim(1, false);
        idx.push(i);
        dist.push(v);
        start += len;
    }
    (Tensor::cat(&idx, 0), Tensor::cat(&dist, 0))
}

/// Cluster `points` `[n, d]` into at most `k` clusters.
pub(crate) fn kmeans(points: &Tensor, k: usize, iterations: usize, seed: u64, block: i64) -> Result<Clusters> {
    tch::no_grad(|| {
        let n = points.size()[0] as usize;
        if n == 0 {
            return Ok(Clusters { assignment: Vec::new(), distance: Vec::new(), sizes: vec![0; k] });
        }
        let k = k.min(n);
        let x = points.to_kind(Kind::Float);
        let x = &x / x.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
        let mut rng = Rng::new(seed);
        // k-means++: each next centre drawn with probability ∝ squared
        // distance to the nearest centre chosen so far.
        let mut chosen = vec![rng.below(n) as i64];
        while chosen.len() < k {
            let c = x.index_select(0, &Tensor::from_slice(&chosen).to_device(x.device()));
            let (_, d2) = nearest(&x, &c, block);
            let w: Vec<f64> = host_f32(&d2)?.into_iter().map(f64::from).collect();
            let next = if w.iter().sum::<f64>() > 0.0 { rng.weighted(&w) } else { rng.below(n) };
            chosen.push(next as i64);
        }
        let mut centres = x.index_select(0, &Tensor::from_slice(&chosen).to_device(x.device()));
        let mut assign = Tensor::zeros([n as i64], (Kind::Int64, x.device()));
        for _ in 0..iterations.max(1) {
            let (a, d2) = nearest(&x, &centres, block);
            let counts = Tensor::zeros([k as i64], (Kind::Float, x.device())).index_add(
                0,
                &a,
                &Tensor::ones([n as i64], (Kind::Float, x.device())),
            );
            let sums = Tensor::zeros([k as i64, x.size()[1]], (Kind::Float, x.device())).index_add(0, &a, &x);
            let next = &sums / counts.clamp_min(1.0).unsqueeze(1);
            let counts_h = host_f32(&counts)?;
            let empty: Vec<usize> = (0..k).filter(|c| counts_h[*c] == 0.0).collect();
            if !empty.is_empty() {
                let (_, far) = d2.topk(empty.len() as i64, 0, true, true);
                let far = host_i64(&far)?;
                for (c, p) in empty.iter().zip(far) {
                    next.get(*c as i64).copy_(&x.get(p));
                }
            }
            let moved = (&next - &centres).abs().max().double_value(&[]);
            centres = next;
            let unchanged = a.equal(&assign);
            assign = a;
            if unchanged && moved < 1e-6 {
                break;
            }
        }
        let (a, d2) = nearest(&x, &centres, block);
        let assignment = host_i64(&a)?;
        let mut sizes = vec![0usize; k];
        for c in &assignment {
            sizes[*c as usize] += 1;
        }
        Ok(Clusters { assignment, distance: host_f32(&d2.sqrt())?, sizes })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separated_blobs_are_found_and_runs_repeat() {
        let _rng = crate::device::rng_lock();
        tch::manual_seed(11);
        // Four directions, 50 noisy points each.
        let dirs = Tensor::eye(8, (Kind::Float, tch::Device::Cpu)).narrow(0, 0, 4);
        let pts = dirs.repeat_interleave_self_int(50, 0, None)
            + Tensor::randn([200, 8], (Kind::Float, tch::Device::Cpu)) * 0.05;
        let a = kmeans(&pts, 4, 20, 3, 64).unwrap();
        let b = kmeans(&pts, 4, 20, 3, 64).unwrap();
        assert_eq!(a.assignment, b.assignment);
        assert_eq!(a.sizes.iter().copied().collect::<std::collections::BTreeSet<_>>().len(), 1, "{:?}", a.sizes);
        for blob in 0..4 {
            let labels = &a.assignment[blob * 50..(blob + 1) * 50];
            assert!(labels.iter().all(|l| *l == labels[0]), "blob {blob} split: {labels:?}");
        }
        assert!(a.distance.iter().all(|d| d.is_finite() && *d < 0.5));
    }

    #[test]
    fn more_clusters_than_points_is_fine() {
        let pts = Tensor::from_slice(&[1f32, 0., 0., 1.]).view([2, 2]);
        let c = kmeans(&pts, 5, 5, 1, 8).unwrap();
        assert_eq!(c.sizes, vec![1, 1]);
    }
}
