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
        let n = self.weights.len();
        let block = block_len(n);
        self.full.clear();
        self.full.resize(k + 1, T::ZERO);
        self.full[0] = T::ONE;
        self.checkpoints.clear();
        for chunk in self.weights.chunks(block) {
            self.checkpoints.extend_from_slice(&self.full[..k]);
            for &w in chunk {
                multiply_linear(&mut self.full, w);
            }
        }
    }

    /// After [`PolyScratch::forward`] with the same `k >= 1` and `k <= N`, calls
    /// `sink(i, P_k(i), P_{k-1}(i))` for every weight, in reverse order (`P_0 = 0`).
    pub(crate) fn inclusion(&mut self, k: usize, mut sink: impl FnMut(usize, f64, f64)) {
        debug_assert!(k >= 1 && k <= self.weights.len());
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
    let top = k.min(x.len());
    let shift = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if x.is_empty() {
        let mut out = vec![f64::NEG_INFINITY; k + 1];
        out[0] = 0.0;
        return Ok(out);
    }
    let mut lin = PolyScratch::<f64>::default();
    lin.weights.extend(x.iter().map(|&v| (v - shift).exp()));
    lin.forward(top);
    let needed: Vec<usize> = (0..=top).collect();
    let mut out: Vec<f64> = if linear_pass_ok(&lin.full, &needed) {
        lin.full
            .iter()
            .enumerate()
            .map(|(j, s)| s.ln() + j as f64 * shift)
            .collect()
    } else {
        let mut ext = PolyScratch::<ExtFloat>::default();
        ext.weights.extend(x.iter().map(|&v| ExtFloat::exp(v)));
        ext.forward(top);
        ext.full.iter().map(|s| s.ln_ratio(ExtFloat::ONE)).collect()
    };
    out.resize(k + 1, f64::NEG_INFINITY);
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
