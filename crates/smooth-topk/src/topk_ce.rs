//! Top-k cross-entropy over a differentiable sorting relaxation (Petersen, Borgelt, Kuehne and
//! Deussen), with NeuralSort as the relaxation.

use crate::loss::{resize, Kernel, Loss, Workspace};
use crate::{Result, Scalar, TopkError};
use std::sync::Arc;

/// The floor `difftopk` puts under the top-k probability before its logarithm.
pub const DIFFTOPK_FLOOR: f64 = 1e-7;

/// How the top-1 part of the rank distribution is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Top1Mode {
    /// The top-1 probability is the softmax of the scores (`difftopk`'s default `"sm"`).
    #[default]
    Softmax,
    /// Every term, top-1 included, comes from the relaxed permutation (`difftopk`'s `"sort"`).
    Sort,
    /// `p_1` times softmax cross-entropy plus `p_2 + .. + p_K` times the floored log of the
    /// `k >= 2` terms alone (`difftopk`'s `"smce"`: two losses added, the second's probability
    /// not renormalised).
    SoftmaxCe,
}

/// Top-k cross-entropy (Petersen et al., "Differentiable top-k classification learning", ICML
/// 2022; their package `difftopk`): for the scores `s` of one sample with label `y`, a
/// distribution `p_k` over `k = 1..K`, and the relaxed permutation matrix `P` of the scores
/// `x` considered,
///
/// ```text
/// D = p_1 softmax(x)_y + sum_{k=2..K} p_k sum_{q<k} P[y, q]         (Softmax top-1 mode)
/// D =                    sum_{k=1..K} p_k sum_{q<k} P[y, q]         (Sort top-1 mode)
/// L = -ln(f + (1 - 2f) D)
/// ```
///
/// or, in the SoftmaxCe mode, `p_1 CE(x, y) + (p_2 + .. + p_K) (-ln(f + (1 - 2f) D'))` with
/// `D'` the `k >= 2` part of the Softmax mode's `D`.
///
/// `sum_{q<k} P[y, q]` is the relaxed probability that the label is among the k largest; `f` is
/// a floor ([`DIFFTOPK_FLOOR`] = 1e-7 by default, as `difftopk`; 0 allowed) that bounds the
/// loss. With `m` set, `x` is the label's score and the `m - 1` largest other scores (a hard
/// pre-selection: the others get no gradient); otherwise all `n` scores.
///
/// The relaxation is NeuralSort (Grover, Wang, Zweig and Ermon, ICLR 2019), with temperature
/// `tau` (`difftopk`'s `inverse_temperature` is `1 / tau`): for `d` scores,
/// `P[j, q] = softmax_j(((d - 1 - 2q) x_j - sum_l |x_j - x_l|) / tau)`, rank `q = 0` the largest.
/// Chosen over the sorting networks of the same package because it is one closed form with one
/// temperature, exact in f64 with an analytic gradient, and costs O(d log d + K d) per sample
/// here (pairwise sums by sorting and prefix sums), where a sorting network needs
/// O(d log^2 d) layers of soft swaps and a choice of sigmoid. The loss is computed in log space
/// (`ln D` as a log-sum-exp of the terms), so it stays finite and exact for any finite scores;
/// the gradient is analytic (`|.|` has derivative 0 at ties, as in PyTorch). NeuralSort's
/// matrix sums to 1 over classes for each rank but not over ranks for a class, so `D` can
/// exceed 1 and the loss dip slightly below 0, as in `difftopk`.
#[derive(Debug, Clone, PartialEq)]
pub struct TopkCrossEntropy {
    p_k: Arc<[f64]>,
    tau: f64,
    m: Option<usize>,
    top1: Top1Mode,
    floor: f64,
}

impl TopkCrossEntropy {
    /// Validates `p_k` (`K >= 1` finite entries `>= 0` summing to 1 within 1e-4, as `difftopk`
    /// asks), a finite `tau > 0` and, when given, `m > K`. Softmax top-1 mode, floor 1e-7.
    pub fn new(p_k: &[f64], tau: f64, m: Option<usize>) -> Result<Self> {
        if p_k.is_empty() {
            return Err(TopkError::ZeroK);
        }
        if let Some(&bad) = p_k.iter().find(|p| !(p.is_finite() && **p >= 0.0)) {
            return Err(TopkError::InvalidSetting {
                name: "p_k entry",
                value: bad,
                need: "finite probabilities >= 0",
            });
        }
        let total: f64 = p_k.iter().sum();
        if (total - 1.0).abs() > 1e-4 {
            return Err(TopkError::InvalidSetting {
                name: "sum of p_k",
                value: total,
                need: "p_k summing to 1",
            });
        }
        if !(tau.is_finite() && tau > 0.0) {
            return Err(TopkError::InvalidTau(tau));
        }
        if let Some(m) = m {
            if m <= p_k.len() {
                return Err(TopkError::InvalidSetting {
                    name: "m",
                    value: m as f64,
                    need: "m > K, the length of p_k",
                });
            }
        }
        Ok(TopkCrossEntropy {
            p_k: p_k.into(),
            tau,
            m,
            top1: Top1Mode::Softmax,
            floor: DIFFTOPK_FLOOR,
        })
    }

    /// `p_k` putting all its mass on `k` (`[0, .., 0, 1]`; `k` up to 2^20, as no class count
    /// reaches it).
    pub fn top_k_only(k: usize, tau: f64, m: Option<usize>) -> Result<Self> {
        if k == 0 {
            return Err(TopkError::ZeroK);
        }
        if k > 1 << 20 {
            return Err(TopkError::TooLarge {
                what: "k",
                value: k,
            });
        }
        let mut p_k = vec![0.0; k];
        p_k[k - 1] = 1.0;
        Self::new(&p_k, tau, m)
    }

    /// The same loss with another top-1 mode.
    pub fn with_top1(mut self, top1: Top1Mode) -> Self {
        self.top1 = top1;
        self
    }

    /// The same loss with another floor `f` (finite, `0 <= f < 0.5`).
    pub fn with_floor(mut self, floor: f64) -> Result<Self> {
        if !(floor.is_finite() && (0.0..0.5).contains(&floor)) {
            return Err(TopkError::InvalidSetting {
                name: "floor",
                value: floor,
                need: "0 <= floor < 0.5",
            });
        }
        self.floor = floor;
        Ok(self)
    }

    /// The rank distribution `p_1..p_K`.
    pub fn p_k(&self) -> &[f64] {
        &self.p_k
    }
    /// `K`, the length of `p_k`.
    pub fn k(&self) -> usize {
        self.p_k.len()
    }
    /// The NeuralSort temperature.
    pub fn tau(&self) -> f64 {
        self.tau
    }
    /// How many scores are kept (`None`: all).
    pub fn m(&self) -> Option<usize> {
        self.m
    }
    /// The top-1 mode.
    pub fn top1(&self) -> Top1Mode {
        self.top1
    }
    /// The floor under the top-k probability.
    pub fn floor(&self) -> f64 {
        self.floor
    }
}

impl Loss for TopkCrossEntropy {
    fn min_classes(&self) -> usize {
        self.p_k.len().saturating_add(1)
    }
}

/// `ln sum exp(v)` of a non-empty slice.
fn logsumexp(v: impl Iterator<Item = f64> + Clone) -> f64 {
    let m = v.clone().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + v.map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// `ln(exp(a) + exp(b))`.
fn logaddexp(a: f64, b: f64) -> f64 {
    let m = a.max(b);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + (-(a - b).abs()).exp().ln_1p()
}

impl Kernel for TopkCrossEntropy {
    fn sample_loss<T: Scalar>(
        &self,
        _sample: usize,
        scores: &[T],
        label: usize,
        grad: Option<&mut [T]>,
        ws: &mut Workspace,
    ) -> f64 {
        let n = scores.len();
        let big_k = self.p_k.len();
        let d = self.m.map_or(n, |m| m.min(n));
        // The classes considered: the label first, then the d - 1 largest others.
        let index = &mut ws.index;
        index.clear();
        index.extend((0..n).filter(|&j| j != label));
        if d < n {
            index.select_nth_unstable_by(d - 2, |&a, &b| {
                scores[b].to_f64().total_cmp(&scores[a].to_f64())
            });
            index.truncate(d - 1);
        }
        index.insert(0, label);
        // Ascending order of the considered scores, after them.
        index.extend(0..d);
        let (sel, order) = index.split_at_mut(d);
        // Shifted by the largest: every term below is invariant to a common shift.
        let top = sel
            .iter()
            .map(|&j| scores[j].to_f64())
            .fold(f64::NEG_INFINITY, f64::max);
        // Buffers: x, sum_l |x_j - x_l|, sum_l sgn(x_j - x_l), then P rows (K x d), softmax.
        let buf = &mut ws.more;
        resize(buf, d * (big_k + 4) + 2 * big_k);
        let (x, rest) = buf.split_at_mut(d);
        let (a, rest) = rest.split_at_mut(d);
        let (sgn, rest) = rest.split_at_mut(d);
        let (p, rest) = rest.split_at_mut(d * big_k);
        let (sm, rest) = rest.split_at_mut(d);
        let (ln_py, rank_terms) = rest.split_at_mut(big_k);
        for (xi, &j) in x.iter_mut().zip(sel.iter()) {
            *xi = scores[j].to_f64() - top;
        }
        order.sort_unstable_by(|&i, &j| x[i].total_cmp(&x[j]));
        // Groups of equal values in ascending order: |.| and sgn over the pairs by prefix sums.
        let total: f64 = x.iter().sum();
        let mut before = 0.0;
        let mut start = 0;
        while start < d {
            let u = x[order[start]];
            let mut end = start + 1;
            while end < d && x[order[end]] == u {
                end += 1;
            }
            let group: f64 = (end - start) as f64 * u;
            let after = total - before - group;
            let (less, greater) = (start as f64, (d - end) as f64);
            for &i in &order[start..end] {
                a[i] = (less * u - before) + (after - greater * u);
                sgn[i] = less - greater;
            }
            before += group;
            start = end;
        }
        // Rows of P for ranks 0..K, and ln P[y, q] (the label is entry 0).
        let inv_tau = 1.0 / self.tau;
        for (q, lp) in ln_py.iter_mut().enumerate() {
            let c = (d as f64 - 1.0) - 2.0 * q as f64;
            let row = &mut p[q * d..(q + 1) * d];
            for ((r, &xi), &ai) in row.iter_mut().zip(x.iter()).zip(a.iter()) {
                *r = (c * xi - ai) * inv_tau;
            }
            let lse = logsumexp(row.iter().copied());
            *lp = row[0] - lse;
            row.iter_mut().for_each(|r| *r = (*r - lse).exp());
        }
        // Weights of the terms: w_q = sum of p_k over the k > q whose term uses rank q.
        let first = match self.top1 {
            Top1Mode::Softmax | Top1Mode::SoftmaxCe => 1,
            Top1Mode::Sort => 0,
        };
        let smce = self.top1 == Top1Mode::SoftmaxCe;
        let weight = |q: usize| -> f64 { self.p_k[q.max(first)..].iter().sum() };
        // ln softmax(x)_y, with the softmax kept for the gradient.
        let ln_sm_y = if first == 1 && self.p_k[0] > 0.0 {
            let lse = logsumexp(x.iter().copied());
            for (s, &xi) in sm.iter_mut().zip(x.iter()) {
                *s = (xi - lse).exp();
            }
            x[0] - lse
        } else {
            f64::NEG_INFINITY
        };
        // The top-1 term inside D (Softmax mode), or none.
        let softmax_term = if smce || ln_sm_y == f64::NEG_INFINITY {
            f64::NEG_INFINITY
        } else {
            self.p_k[0].ln() + ln_sm_y
        };
        // SoftmaxCe: the cross-entropy's weight and the rank part's.
        let (ce_weight, rank_weight) = if smce {
            (self.p_k[0], self.p_k[1..].iter().sum::<f64>())
        } else {
            (0.0, 1.0)
        };
        for (q, (t, &lp)) in rank_terms.iter_mut().zip(ln_py.iter()).enumerate() {
            let w = weight(q);
            *t = if w > 0.0 {
                w.ln() + lp
            } else {
                f64::NEG_INFINITY
            };
        }
        let ln_d = logaddexp(softmax_term, logsumexp(rank_terms.iter().copied()));
        let f = self.floor;
        let ln_scale = (-2.0 * f).ln_1p();
        let ln_inner = if f > 0.0 {
            logaddexp(f.ln(), ln_scale + ln_d)
        } else {
            ln_d
        };
        // No rank term at all (SoftmaxCe with p = [1]): only the cross-entropy is left.
        let ranked = ln_d > f64::NEG_INFINITY || !smce;
        let ce_part = if ce_weight > 0.0 {
            -ce_weight * ln_sm_y
        } else {
            0.0
        };
        let loss = ce_part + if ranked { -rank_weight * ln_inner } else { 0.0 };
        if let Some(g) = grad {
            // dL/dD * D, in (0, 1]: the share of the floored probability that D makes (times
            // the rank part's weight).
            let rho = if ln_d > f64::NEG_INFINITY {
                rank_weight * (ln_scale + ln_d - ln_inner).exp()
            } else {
                0.0
            };
            // H_j = sum_q dL/dz_{q, j}, and the rank part of dL/dx_i accumulated in `a`.
            let work = &mut ws.values;
            work.clear();
            work.resize(2 * d, 0.0);
            let (h, direct) = work.split_at_mut(d);
            for (q, &t) in rank_terms.iter().enumerate() {
                if t == f64::NEG_INFINITY {
                    continue;
                }
                let beta = rho * (t - ln_d).exp();
                let c = (d as f64 - 1.0) - 2.0 * q as f64;
                let row = &p[q * d..(q + 1) * d];
                for (j, &pj) in row.iter().enumerate() {
                    let hq = -beta * (f64::from(u8::from(j == 0)) - pj);
                    h[j] += hq;
                    direct[j] += c * hq;
                }
            }
            // sum_j H_j sgn(x_j - x_i): H over larger values minus H over smaller ones.
            let h_total: f64 = h.iter().sum();
            let mut h_before = 0.0;
            let mut start = 0;
            // `a` is free now: it takes dL/dx.
            let out = a;
            while start < d {
                let u = x[order[start]];
                let mut end = start + 1;
                while end < d && x[order[end]] == u {
                    end += 1;
                }
                let h_group: f64 = order[start..end].iter().map(|&i| h[i]).sum();
                let h_after = h_total - h_before - h_group;
                for &i in &order[start..end] {
                    out[i] = (direct[i] - sgn[i] * h[i] + (h_after - h_before)) * inv_tau;
                }
                h_before += h_group;
                start = end;
            }
            // The softmax's share: inside D (Softmax mode) or the cross-entropy (SoftmaxCe).
            let beta = if softmax_term != f64::NEG_INFINITY {
                rho * (softmax_term - ln_d).exp()
            } else if ce_weight > 0.0 {
                ce_weight
            } else {
                0.0
            };
            if beta > 0.0 {
                for (i, (o, &si)) in out.iter_mut().zip(sm.iter()).enumerate() {
                    *o -= beta * (f64::from(u8::from(i == 0)) - si);
                }
            }
            g.iter_mut().for_each(|v| *v = T::from_f64(0.0));
            for (&j, &v) in sel.iter().zip(out.iter()) {
                g[j] = T::from_f64(v);
            }
        }
        loss
    }
}
