//! Elementary symmetric polynomials `sigma_j(w)` of positive weights and the inclusion
//! probabilities derived from them, in O(N k) time and O((N / B + B) k) memory.
//!
//! Under the distribution over j-subsets `Y` of `{0..N}` with weight `prod_{i in Y} w_i`, the
//! probability that `i` belongs to `Y` is `P_j(i) = w_i sigma_{j-1}(w without i) / sigma_j(w)`.
//! The leave-one-out polynomial `sigma(w without i)` is the product of the prefix polynomial
//! `prod_{m < i} (1 + w_m X)` and the suffix polynomial `prod_{m > i} (1 + w_m X)`, truncated at
//! degree k. Every coefficient is a sum of positive products, so no step cancels (the paper's
//! alternating recursion `sigma_j(w without i) = sigma_j(w) - w_i sigma_{j-1}(w without i)` does,
//! catastrophically, for large `w_i`).
//!
//! Storing every prefix would take N k numbers. Instead the forward pass keeps one prefix per
//! block of B = ~sqrt(N) weights, and the reverse pass rebuilds the prefixes of one block at a
//! time while it carries the suffix: one extra multiply-add pass buys the memory bound.

use crate::number::{ExtFloat, PolyNum};
use crate::simd::{madd, simd_targets};

/// Block length of the checkpointed prefix pass for `n` weights.
fn block_len(n: usize) -> usize {
    ((n as f64).sqrt().ceil() as usize).max(16)
}

/// Reusable buffers for the polynomial passes in one number system.
#[derive(Debug, Clone)]
pub(crate) struct PolyScratch<T> {
    /// The weights `w_i`, filled by the caller.
    pub(crate) weights: Vec<T>,
    /// `sigma_0..=k` of all weights, set by [`PolyScratch::forward`].
    pub(crate) full: Vec<T>,
    /// Prefix polynomial (degrees 0..k) at the start of each block.
    checkpoints: Vec<T>,
    /// Prefix polynomials (degrees 0..k) before each weight of the current block.
    block_prefix: Vec<T>,
    /// Suffix polynomial (degrees 0..k) after the current weight.
    suffix: Vec<T>,
}

impl<T> Default for PolyScratch<T> {
    fn default() -> Self {
        PolyScratch {
            weights: Vec::new(),
            full: Vec::new(),
            checkpoints: Vec::new(),
            block_prefix: Vec::new(),
            suffix: Vec::new(),
        }
    }
}

/// `acc = acc * (1 + w X)` truncated to `acc.len()` coefficients (highest degree first so each
/// update reads the old lower coefficient).
#[inline(always)]
fn multiply_linear<T: PolyNum>(acc: &mut [T], w: T) {
    for j in (1..acc.len()).rev() {
        acc[j] = acc[j].add(acc[j - 1].mul(w));
    }
}

/// `sum_{a=0}^{d} p[a] * q[d - a]`: one coefficient of a polynomial product.
#[inline(always)]
fn convolve_at<T: PolyNum>(p: &[T], q: &[T], d: usize) -> T {
    let mut acc = T::ZERO;
    for a in 0..=d {
        acc = acc.add(p[a].mul(q[d - a]));
    }
    acc
}

impl<T: PolyNum> PolyScratch<T> {
    /// Computes `full[j] = sigma_j(weights)` for `j = 0..=k` (zero for `j > N`) and the block
    /// checkpoints used by [`PolyScratch::inclusion`].
    pub(crate) fn forward(&mut self, k: usize) {
        self.forward_from(k, None);
    }

    /// Like [`PolyScratch::forward`], but the product starts from `initial` (k + 1
    /// coefficients: the polynomial of weights handled elsewhere) instead of 1.
    pub(crate) fn forward_from(&mut self, k: usize, initial: Option<&[T]>) {
        let n = self.weights.len();
        let block = block_len(n);
        self.full.clear();
        match initial {
            Some(p) => self.full.extend_from_slice(&p[..=k]),
            None => {
                self.full.resize(k + 1, T::ZERO);
                self.full[0] = T::ONE;
            }
        }
        self.checkpoints.clear();
        for chunk in self.weights.chunks(block) {
            self.checkpoints.extend_from_slice(&self.full[..k]);
            for &w in chunk {
                multiply_linear(&mut self.full, w);
            }
        }
    }

    /// After a forward pass with the same `k >= 1` that left `sigma_k > 0` (k at most the
    /// number of weights, counting those folded into the initial polynomial), calls
    /// `sink(i, P_k(i), P_{k-1}(i))` for every weight, in reverse order (`P_0 = 0`).
    pub(crate) fn inclusion(&mut self, k: usize, mut sink: impl FnMut(usize, f64, f64)) {
        debug_assert!(k >= 1 && self.full.len() == k + 1);
        let n = self.weights.len();
        let block = block_len(n);
        let inv_k = self.full[k].recip();
        let inv_k1 = self.full[k - 1].recip();
        self.suffix.clear();
        self.suffix.resize(k, T::ZERO);
        self.suffix[0] = T::ONE;
        self.block_prefix.resize(block * k, T::ZERO);
        let blocks = n.div_ceil(block);
        for b in (0..blocks).rev() {
            let start = b * block;
            let chunk = &self.weights[start..n.min(start + block)];
            // Rebuild the prefixes of this block from its checkpoint.
            self.block_prefix[..k].copy_from_slice(&self.checkpoints[b * k..(b + 1) * k]);
            for t in 1..chunk.len() {
                let (done, rest) = self.block_prefix.split_at_mut(t * k);
                let next = &mut rest[..k];
                next.copy_from_slice(&done[(t - 1) * k..]);
                multiply_linear(next, chunk[t - 1]);
            }
            for t in (0..chunk.len()).rev() {
                let prefix = &self.block_prefix[t * k..(t + 1) * k];
                let w = chunk[t];
                let p_k = w
                    .mul(convolve_at(prefix, &self.suffix, k - 1))
                    .mul(inv_k)
                    .to_f64();
                let p_k1 = if k >= 2 {
                    w.mul(convolve_at(prefix, &self.suffix, k - 2))
                        .mul(inv_k1)
                        .to_f64()
                } else {
                    0.0
                };
                sink(start + t, p_k, p_k1);
                multiply_linear(&mut self.suffix, w);
            }
        }
    }
}

/// Independent partial products in [`FastScratch::forward`] and weights per step of the
/// leave-one-out recursion: each multiply-add of a chain depends on the previous weight's, so one
/// chain runs at the latency of the FPU; eight interleaved chains fill one AVX-512 register (two
/// AVX2 registers) per degree and run at its throughput.
const LANES: usize = 8;

/// Up to this many unstable weights, [`FastScratch::inclusion`] forms their leave-one-out
/// polynomials directly instead of by the blocked prefix/suffix pass.
const DIRECT_MAX: usize = 12;

/// Buffers of the fast `f64` path: the forward pass, the upward leave-one-out recursion, and the
/// exact prefix/suffix pass over the few weights where that recursion would not be stable.
#[derive(Debug, Default, Clone)]
pub(crate) struct FastScratch {
    /// The weights `w_i`, filled by the caller.
    pub(crate) weights: Vec<f64>,
    /// `sigma_0..=k` of all weights, set by [`FastScratch::forward`].
    pub(crate) full: Vec<f64>,
    lanes: Vec<[f64; LANES]>,
    tmp: Vec<f64>,
    loo: Vec<f64>,
    /// `P_k(i)` and `P_{k-1}(i)` per weight, set by [`FastScratch::inclusion_into`].
    pub(crate) p_k: Vec<f64>,
    pub(crate) p_k1: Vec<f64>,
    unstable: Vec<usize>,
    stable_weights: Vec<f64>,
    rest: Vec<f64>,
    exact: PolyScratch<f64>,
}

/// The lane products of [`product_of_linear_factors`] for `KK = k + 1` coefficients, with the
/// state in a local array; written to `lanes` (length `KK`) at the end.
#[inline(always)]
fn lanes_fixed<const KK: usize, const FMA: bool>(weights: &[f64], lanes: &mut [[f64; LANES]]) {
    let mut acc = [[0.0; LANES]; KK];
    acc[0] = [1.0; LANES];
    let chunks = weights.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        let w: [f64; LANES] = chunk.try_into().expect("chunk of LANES");
        for j in (1..KK).rev() {
            let prev = acc[j - 1];
            let cur = &mut acc[j];
            for l in 0..LANES {
                cur[l] = madd::<FMA>(w[l], prev[l], cur[l]);
            }
        }
    }
    for &w in tail {
        for j in (1..KK).rev() {
            acc[j][0] += w * acc[j - 1][0];
        }
    }
    lanes.copy_from_slice(&acc);
}

simd_targets! {
/// `out[j] = sigma_j(weights)`, `j = 0..=k`, in `LANES` interleaved chains when k is small.
fn product_of_linear_factors(
    weights: &[f64],
    k: usize,
    lanes: &mut Vec<[f64; LANES]>,
    tmp: &mut Vec<f64>,
    out: &mut Vec<f64>,
) {
    let kk = k + 1;
    out.clear();
    out.resize(kk, 0.0);
    out[0] = 1.0;
    // Combining the lanes costs O(LANES k^2): worth it only while k is small against n.
    if k > 16 || weights.len() < LANES * kk {
        for &w in weights {
            multiply_linear(out, w);
        }
        return;
    }
    // One array of LANES coefficients per degree, so that one degree of all lanes is updated by
    // the same vector instructions; for the common small k the whole state is a fixed-size
    // array the compiler keeps in registers.
    const FMA: bool = multiversion::target::selected_target!().supports_feature_str("fma");
    lanes.clear();
    lanes.resize(kk, [0.0; LANES]);
    match kk {
        2 => lanes_fixed::<2, FMA>(weights, lanes),
        3 => lanes_fixed::<3, FMA>(weights, lanes),
        4 => lanes_fixed::<4, FMA>(weights, lanes),
        5 => lanes_fixed::<5, FMA>(weights, lanes),
        6 => lanes_fixed::<6, FMA>(weights, lanes),
        7 => lanes_fixed::<7, FMA>(weights, lanes),
        8 => lanes_fixed::<8, FMA>(weights, lanes),
        9 => lanes_fixed::<9, FMA>(weights, lanes),
        _ => {
            lanes[0] = [1.0; LANES];
            let chunks = weights.chunks_exact(LANES);
            let tail = chunks.remainder();
            for chunk in chunks {
                let w: [f64; LANES] = chunk.try_into().expect("chunk of LANES");
                for j in (1..kk).rev() {
                    let prev = lanes[j - 1];
                    let cur = &mut lanes[j];
                    for l in 0..LANES {
                        cur[l] += w[l] * prev[l];
                    }
                }
            }
            for &w in tail {
                for j in (1..kk).rev() {
                    lanes[j][0] += w * lanes[j - 1][0];
                }
            }
        }
    }
    // out = lane 0 * lane 1 * ... (truncated), one lane at a time through `tmp`.
    for (o, lane) in out.iter_mut().zip(lanes.iter()) {
        *o = lane[0];
    }
    // Lane l of every degree: indexing by l is the point.
    #[allow(clippy::needless_range_loop)]
    for l in 1..LANES {
        tmp.clear();
        tmp.extend_from_slice(out);
        for (d, o) in out.iter_mut().enumerate() {
            *o = (0..=d).map(|i| tmp[i] * lanes[d - i][l]).sum();
        }
    }
}
}

simd_targets! {
/// The upward leave-one-out recursion of [`FastScratch::inclusion`] over every weight: writes
/// `p_k[i] = P_k(i)` and `p_k1[i] = P_{k-1}(i)`, and pushes onto `unstable` (in increasing
/// order) the weights where the recursion is not stable, whose two entries are then to be
/// replaced.
fn stable_inclusion(
    weights: &[f64],
    full: &[f64],
    k: usize,
    p_k: &mut [f64],
    p_k1: &mut [f64],
    unstable: &mut Vec<usize>,
) {
    const FMA: bool = multiversion::target::selected_target!().supports_feature_str("fma");
    let inv_k = 1.0 / full[k];
    let inv_k1 = 1.0 / full[k - 1];
    // LANES weights at a time with the same instruction sequence, so it vectorises; the
    // stability test is kept as a running max of `P_j F_j - F_j / 2` (<= 0 when stable).
    let chunks = weights.chunks_exact(LANES);
    let tail_start = weights.len() - chunks.remainder().len();
    let outs = p_k.chunks_exact_mut(LANES).zip(p_k1.chunks_exact_mut(LANES));
    for (c, (chunk, (out_k, out_k1))) in chunks.zip(outs).enumerate() {
        let w: [f64; LANES] = chunk.try_into().expect("chunk of LANES");
        let mut l_prev = [1.0; LANES];
        let mut l_prev2 = [0.0; LANES];
        let mut excess = [f64::NEG_INFINITY; LANES];
        for &f in &full[1..k] {
            let half = 0.5 * f;
            for l in 0..LANES {
                let e = madd::<FMA>(w[l], l_prev[l], -half);
                excess[l] = if e > excess[l] { e } else { excess[l] };
                l_prev2[l] = l_prev[l];
                l_prev[l] = madd::<FMA>(-w[l], l_prev[l], f);
            }
        }
        for l in 0..LANES {
            out_k[l] = w[l] * l_prev[l] * inv_k;
            out_k1[l] = w[l] * l_prev2[l] * inv_k1;
        }
        if excess.iter().any(|&e| e > 0.0) {
            unstable.extend((0..LANES).filter(|&l| excess[l] > 0.0).map(|l| c * LANES + l));
        }
    }
    for (i, &w) in weights.iter().enumerate().skip(tail_start) {
        let (mut l_prev, mut l_prev2) = (1.0, 0.0);
        let mut stable = true;
        for &f in &full[1..k] {
            let t = w * l_prev;
            stable &= t <= 0.5 * f;
            l_prev2 = l_prev;
            l_prev = f - t;
        }
        p_k[i] = w * l_prev * inv_k;
        p_k1[i] = w * l_prev2 * inv_k1;
        if !stable {
            unstable.push(i);
        }
    }
}
}

impl FastScratch {
    /// `full[j] = sigma_j(weights)`, `j = 0..=k`.
    pub(crate) fn forward(&mut self, k: usize) {
        product_of_linear_factors(
            &self.weights,
            k,
            &mut self.lanes,
            &mut self.tmp,
            &mut self.full,
        );
    }

    /// After [`FastScratch::forward`] with the same `1 <= k <= N`, calls
    /// `sink(i, P_k(i), P_{k-1}(i))` once for every weight (in no particular order).
    ///
    /// Most weights take the upward recursion `L_j = sigma_j(w) - w_i L_{j-1}` for the
    /// leave-one-out coefficients `L_j = sigma_j(w without i)`. Step j amplifies the relative
    /// error of `L_{j-1}` by `P_j(i) / (1 - P_j(i))`, so it is accepted only while every step has
    /// `P_j(i) <= 1/2` (factor <= 1: the error stays a few ulps times k). Since
    /// `sum_i P_{k-1}(i) = k - 1`, fewer than `2k` weights can fail; those get the exact
    /// cancellation-free prefix/suffix pass, started from the polynomial of all other weights.
    #[cfg(test)]
    pub(crate) fn inclusion(&mut self, k: usize, mut sink: impl FnMut(usize, f64, f64)) {
        self.inclusion_into(k);
        for (i, (&a, &b)) in self.p_k.iter().zip(&self.p_k1).enumerate() {
            sink(i, a, b);
        }
    }

    /// [`FastScratch::inclusion`] into the buffers `p_k` and `p_k1` (one entry per weight).
    pub(crate) fn inclusion_into(&mut self, k: usize) {
        let n = self.weights.len();
        crate::loss::resize(&mut self.p_k, n);
        crate::loss::resize(&mut self.p_k1, n);
        self.unstable.clear();
        stable_inclusion(
            &self.weights,
            &self.full,
            k,
            &mut self.p_k,
            &mut self.p_k1,
            &mut self.unstable,
        );
        if self.unstable.is_empty() {
            return;
        }
        // Polynomial of the stable weights, then the exact pass over the unstable ones.
        self.stable_weights.clear();
        let mut next = self.unstable.iter().peekable();
        for (i, &w) in self.weights.iter().enumerate() {
            if next.peek() == Some(&&i) {
                next.next();
            } else {
                self.stable_weights.push(w);
            }
        }
        product_of_linear_factors(
            &self.stable_weights,
            k,
            &mut self.lanes,
            &mut self.tmp,
            &mut self.rest,
        );
        if self.unstable.len() <= DIRECT_MAX {
            // Few unstable weights (the usual case): multiply the other unstable factors onto
            // the stable polynomial directly, O(u^2 k) with u < 2k.
            self.tmp.clear();
            self.tmp.extend_from_slice(&self.rest);
            for &i in &self.unstable {
                multiply_linear(&mut self.tmp, self.weights[i]);
            }
            let (inv_k, inv_k1) = (1.0 / self.tmp[k], 1.0 / self.tmp[k - 1]);
            let loo = &mut self.loo;
            for &i in &self.unstable {
                loo.clear();
                loo.extend_from_slice(&self.rest[..k]);
                for &j in self.unstable.iter().filter(|&&j| j != i) {
                    multiply_linear(loo, self.weights[j]);
                }
                let w = self.weights[i];
                self.p_k[i] = w * loo[k - 1] * inv_k;
                self.p_k1[i] = if k >= 2 { w * loo[k - 2] * inv_k1 } else { 0.0 };
            }
            return;
        }
        self.exact.weights.clear();
        self.exact
            .weights
            .extend(self.unstable.iter().map(|&i| self.weights[i]));
        self.exact.forward_from(k, Some(&self.rest));
        let (unstable, p_k, p_k1) = (&self.unstable, &mut self.p_k, &mut self.p_k1);
        self.exact.inclusion(k, |j, a, b| {
            p_k[unstable[j]] = a;
            p_k1[unstable[j]] = b;
        });
    }
}

/// Smallest value of `sigma_{k-1}` and `sigma_k` (on max-scaled weights) that the linear path
/// accepts. Below the normal range each multiply-add loses at most one subnormal spacing
/// (5e-324) in absolute terms, so even 1e8 operations lose under 1e-315: relative to
/// denominators of at least 1e-290 that is 1e-25, far below one rounding.
pub(crate) const LINEAR_MIN: f64 = 1e-290;

/// Whether a forward pass in `f64` on weights `<= 1` kept full relative precision for
/// `sigma_0..=k` (all finite) and for the two top coefficients used as denominators.
pub(crate) fn linear_pass_ok(full: &[f64], top: &[usize]) -> bool {
    full.iter().all(|v| v.is_finite()) && top.iter().all(|&j| full[j] >= LINEAR_MIN)
}

/// `ln sigma_j(exp(x))` for `j = 0..=k`, exactly up to rounding, for any finite `x`
/// (`-inf` for `j > x.len()`, where the polynomial is zero).
///
/// Uses `f64` on `exp(x_i - max x)` when that keeps every coefficient in range, and the
/// extended-exponent path otherwise.
pub fn log_elementary_symmetric(x: &[f64], k: usize) -> crate::Result<Vec<f64>> {
    if let Some((index, &value)) = x.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(crate::TopkError::NonFiniteScore {
            sample: 0,
            index,
            value,
        });
    }
    // k + 1 entries, all but min(k, N) + 1 of them -inf: refuse a k whose output cannot exist.
    let too_large = crate::TopkError::TooLarge {
        what: "k",
        value: k,
    };
    let len = k.checked_add(1).ok_or(too_large.clone())?;
    let mut out = Vec::new();
    out.try_reserve_exact(len).map_err(|_| too_large)?;
    let top = k.min(x.len());
    let shift = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if x.is_empty() {
        out.push(0.0);
        out.resize(len, f64::NEG_INFINITY);
        return Ok(out);
    }
    let mut lin = FastScratch::default();
    lin.weights.extend(x.iter().map(|&v| (v - shift).exp()));
    lin.forward(top);
    let needed: Vec<usize> = (0..=top).collect();
    if linear_pass_ok(&lin.full, &needed) {
        out.extend(
            lin.full
                .iter()
                .enumerate()
                .map(|(j, s)| s.ln() + j as f64 * shift),
        );
    } else {
        let mut ext = PolyScratch::<ExtFloat>::default();
        ext.weights.extend(x.iter().map(|&v| ExtFloat::exp(v)));
        ext.forward(top);
        out.extend(ext.full.iter().map(|s| s.ln_ratio(ExtFloat::ONE)));
    }
    out.resize(len, f64::NEG_INFINITY);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sigma_j by enumerating all subsets (tiny n only).
    fn brute_sigma(w: &[f64], j: usize) -> f64 {
        let n = w.len();
        (0u32..1 << n)
            .filter(|m| m.count_ones() as usize == j)
            .map(|m| {
                (0..n)
                    .filter(|i| m >> i & 1 == 1)
                    .map(|i| w[i])
                    .product::<f64>()
            })
            .sum()
    }

    #[test]
    fn forward_and_inclusion_match_enumeration() {
        // Long enough for several checkpoint blocks.
        let n = 40;
        let w: Vec<f64> = (0..n)
            .map(|i| 0.05 + ((i * 37 % 11) as f64) / 10.0)
            .collect();
        for k in [1usize, 2, 3, 5] {
            let mut s = PolyScratch::<f64> {
                weights: w.clone(),
                ..Default::default()
            };
            s.forward(k);
            let mut got = vec![(0.0, 0.0); n];
            s.inclusion(k, |i, a, b| got[i] = (a, b));
            let mut total = 0.0;
            for (i, &(p_k, p_k1)) in got.iter().enumerate() {
                let mut rest = w.clone();
                rest.remove(i);
                // Exact leave-one-out by a direct O(nk) DP on the remaining weights.
                let mut c = vec![0.0; k + 1];
                c[0] = 1.0;
                for &v in &rest {
                    multiply_linear(&mut c, v);
                }
                let want_k = w[i] * c[k - 1] / s.full[k];
                let want_k1 = if k >= 2 {
                    w[i] * c[k - 2] / s.full[k - 1]
                } else {
                    0.0
                };
                assert!((p_k - want_k).abs() < 1e-13, "k={k} i={i}");
                assert!((p_k1 - want_k1).abs() < 1e-13, "k={k} i={i}");
                total += p_k;
            }
            assert!((total - k as f64).abs() < 1e-11);
        }
        let small = [0.3, 1.0, 0.7, 2.0, 0.01];
        let mut s = PolyScratch::<f64> {
            weights: small.to_vec(),
            ..Default::default()
        };
        s.forward(4);
        for j in 0..=4 {
            let want = brute_sigma(&small, j);
            assert!((s.full[j] - want).abs() <= 1e-14 * want, "j={j}");
        }
    }

    /// The fast path (interleaved forward, upward recursion, exact pass for unstable weights)
    /// against the all-positive prefix/suffix pass, on weight vectors where the upward
    /// recursion alone would cancel: dominant weights, ties, k close to N.
    #[test]
    fn fast_path_matches_prefix_suffix_including_unstable_weights() {
        let cases: Vec<(Vec<f64>, usize)> = vec![
            ((0..50).map(|i| 1.0 / (1.0 + i as f64)).collect(), 3),
            (
                (0..50)
                    .map(|i| if i % 17 == 0 { 1.0 } else { 1e-9 })
                    .collect(),
                4,
            ),
            (
                (0..30)
                    .map(|i| if i < 4 { 1.0 } else { 1e-3 * i as f64 })
                    .collect(),
                5,
            ),
            (vec![1.0; 40], 30),
            (vec![1.0; 9], 8),
            (
                (0..200)
                    .map(|i| ((i * 7919) % 101) as f64 / 101.0 + 1e-3)
                    .collect(),
                10,
            ),
            ((0..70).map(|i| (-(i as f64) * 0.5).exp()).collect(), 20),
        ];
        for (w, k) in cases {
            let mut fast = FastScratch {
                weights: w.clone(),
                ..Default::default()
            };
            fast.forward(k);
            let mut exact = PolyScratch::<f64> {
                weights: w.clone(),
                ..Default::default()
            };
            exact.forward(k);
            for j in 0..=k {
                assert!((fast.full[j] - exact.full[j]).abs() <= 1e-13 * exact.full[j]);
            }
            let mut want = vec![(0.0, 0.0); w.len()];
            exact.inclusion(k, |i, a, b| want[i] = (a, b));
            let mut got = vec![(f64::NAN, f64::NAN); w.len()];
            fast.inclusion(k, |i, a, b| got[i] = (a, b));
            for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g.0 - e.0).abs() <= 1e-13 && (g.1 - e.1).abs() <= 1e-13,
                    "k={k} i={i}"
                );
            }
        }
    }

    /// Rows the vectorised passes must get right: random spreads up to the edge of the `f64`
    /// range (weights down to subnormals and zero), exact ties, and a few dominant weights
    /// among negligible ones (the unstable case of the upward recursion).
    fn adversarial_weights() -> impl proptest::strategy::Strategy<Value = Vec<f64>> {
        use proptest::prelude::*;
        let random = (1usize..300, 0.0f64..800.0, any::<u64>()).prop_map(|(n, spread, seed)| {
            let mut state = seed | 1;
            (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let u = (state >> 11) as f64 / (1u64 << 53) as f64;
                    (-u * spread).exp()
                })
                .collect::<Vec<_>>()
        });
        let ties = (1usize..200, 0usize..8).prop_map(|(n, distinct)| {
            (0..n)
                .map(|i| 0.5f64.powi((i % (distinct + 1)) as i32))
                .collect()
        });
        let dominant = (1usize..200, 1usize..12, 1e-300f64..1e-3).prop_map(|(n, big, small)| {
            (0..n)
                .map(|i| {
                    if i % 17 < big {
                        1.0
                    } else {
                        small * (1.0 + i as f64)
                    }
                })
                .collect()
        });
        prop_oneof![random, ties, dominant]
    }

    proptest::proptest! {
        /// The vectorised forward pass and leave-one-out recursion (compiled for this machine's
        /// instruction set, fused multiply-adds where present) against the scalar
        /// prefix/suffix pass, on random and adversarial rows, for every k the const-generic and
        /// general code paths take.
        #[test]
        fn vectorised_passes_match_the_scalar_pass(w in adversarial_weights(), k in 1usize..24) {
            let k = k.min(w.len());
            let mut fast = FastScratch { weights: w.clone(), ..Default::default() };
            fast.forward(k);
            let mut exact = PolyScratch::<f64> { weights: w.clone(), ..Default::default() };
            exact.forward(k);
            for j in 0..=k {
                proptest::prop_assert!(
                    (fast.full[j] - exact.full[j]).abs() <= 1e-13 * exact.full[j],
                    "sigma_{} {} vs {}", j, fast.full[j], exact.full[j]
                );
            }
            // The inclusion probabilities are only defined (and only used) where the linear
            // pass keeps full precision.
            if linear_pass_ok(&fast.full, &[k - 1, k]) {
                let mut want = vec![(0.0, 0.0); w.len()];
                exact.inclusion(k, |i, a, b| want[i] = (a, b));
                let mut got = vec![(f64::NAN, f64::NAN); w.len()];
                fast.inclusion(k, |i, a, b| got[i] = (a, b));
                for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                    proptest::prop_assert!(
                        (g.0 - e.0).abs() <= 1e-12 && (g.1 - e.1).abs() <= 1e-12,
                        "k={} i={}: {:?} vs {:?}", k, i, g, e
                    );
                }
            }
        }
    }

    #[test]
    fn log_esp_matches_brute_force_and_handles_extremes() {
        let x = [0.3f64, -1.0, 2.5, 0.0, -0.7];
        let got = log_elementary_symmetric(&x, 6).unwrap();
        let w: Vec<f64> = x.iter().map(|v| v.exp()).collect();
        for (j, g) in got.iter().enumerate().take(6) {
            assert!((g - brute_sigma(&w, j).ln()).abs() < 1e-13, "j={j}");
        }
        assert_eq!(got[6], f64::NEG_INFINITY);
        // Far outside f64 range: sigma_2 of [a, b, c] with a >> b >> c is ~ exp(a + b).
        let x = [5000.0, -3000.0, -9000.0];
        let got = log_elementary_symmetric(&x, 3).unwrap();
        assert!((got[1] - 5000.0).abs() < 1e-9);
        assert!((got[2] - 2000.0).abs() < 1e-9);
        assert!((got[3] - (-7000.0)).abs() < 1e-9);
        assert!(log_elementary_symmetric(&[1.0, f64::NAN], 1).is_err());
    }
}
