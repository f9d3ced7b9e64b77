//! Independent f64 references for the tests: subset enumeration and a log-space dynamic
//! program with leave-one-out by recomputation. Neither shares code with the library.
#![allow(dead_code)]

/// `ln(exp(a) + exp(b))`.
pub fn logaddexp(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let m = a.max(b);
    m + (-(a - b).abs()).exp().ln_1p()
}

pub fn logsumexp(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, logaddexp)
}

pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// All k-subsets of 0..n as index vectors.
pub fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    fn rec(start: usize, n: usize, k: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if cur.len() == k {
            out.push(cur.clone());
            return;
        }
        for i in start..n {
            cur.push(i);
            rec(i + 1, n, k, cur, out);
            cur.pop();
        }
    }
    rec(0, n, k, &mut cur, &mut out);
    out
}

/// Smooth top-k SVM by enumerating every k-subset: the definition in the paper, with the two
/// log-sum-exps over subsets and the gradient as a difference of inclusion probabilities.
pub fn brute_smooth(s: &[f64], y: usize, k: usize, tau: f64, alpha: f64) -> (f64, Vec<f64>) {
    let n = s.len();
    let subs = subsets(n, k);
    let mean = |sub: &Vec<usize>| sub.iter().map(|&i| s[i]).sum::<f64>() / k as f64;
    // Subsets without y (carrying the margin) and subsets with y.
    let a_terms: Vec<f64> = subs
        .iter()
        .filter(|t| !t.contains(&y))
        .map(|t| (alpha + mean(t)) / tau)
        .collect();
    let b_terms: Vec<f64> = subs
        .iter()
        .filter(|t| t.contains(&y))
        .map(|t| mean(t) / tau)
        .collect();
    let a_without = logsumexp(&a_terms);
    let b = logsumexp(&b_terms);
    let loss = tau * softplus(a_without - b);
    let a = logaddexp(a_without, b);
    let mut grad = vec![0.0; n];
    for t in &subs {
        // For subsets with y, p_A - p_B = p_B (exp(B - A) - 1) and B - A = -softplus(A' - B):
        // formed without cancellation
        // so that tiny gradients stay exact.
        let diff = if t.contains(&y) {
            (mean(t) / tau - b).exp() * (-softplus(a_without - b)).exp_m1()
        } else {
            ((alpha + mean(t)) / tau - a).exp()
        };
        for &i in t {
            grad[i] += diff / k as f64;
        }
    }
    (loss, grad)
}

/// Hard top-k SVM by enumeration: max over k-subsets with the margin minus max over those
/// containing y.
pub fn brute_hard(s: &[f64], y: usize, k: usize, alpha: f64) -> f64 {
    let subs = subsets(s.len(), k);
    let mean = |t: &Vec<usize>| t.iter().map(|&i| s[i]).sum::<f64>() / k as f64;
    let a = subs
        .iter()
        .map(|t| {
            if t.contains(&y) {
                mean(t)
            } else {
                alpha + mean(t)
            }
        })
        .fold(f64::NEG_INFINITY, f64::max);
    let b = subs
        .iter()
        .filter(|t| t.contains(&y))
        .map(mean)
        .fold(f64::NEG_INFINITY, f64::max);
    a - b
}

/// `ln sigma_j(exp(x))`, j = 0..=k, by the sequential log-space recursion.
pub fn log_esp_dp(x: &[f64], k: usize) -> Vec<f64> {
    let mut s = vec![f64::NEG_INFINITY; k + 1];
    s[0] = 0.0;
    for &v in x {
        for j in (1..=k).rev() {
            s[j] = logaddexp(s[j], v + s[j - 1]);
        }
    }
    s
}

/// Smooth top-k SVM from the log-space recursion, O(n^2 k): the gradient recomputes the
/// polynomials without each class.
pub fn dp_smooth(s: &[f64], y: usize, k: usize, tau: f64, alpha: f64) -> (f64, Vec<f64>) {
    let n = s.len();
    let x: Vec<f64> = s.iter().map(|v| v / (k as f64 * tau)).collect();
    let others: Vec<usize> = (0..n).filter(|&i| i != y).collect();
    let xo: Vec<f64> = others.iter().map(|&i| x[i]).collect();
    let full = log_esp_dp(&xo, k);
    let log_r = alpha / tau + full[k] - full[k - 1] - x[y];
    let loss = tau * softplus(log_r);
    let sig = 1.0 / (1.0 + (-log_r).exp());
    let mut grad = vec![0.0; n];
    grad[y] = -sig / k as f64;
    for (pos, &i) in others.iter().enumerate() {
        let mut rest = xo.clone();
        rest.remove(pos);
        let loo = log_esp_dp(&rest, k);
        let p_k = (x[i] + loo[k - 1] - full[k]).exp();
        let p_k1 = if k >= 2 {
            (x[i] + loo[k - 2] - full[k - 1]).exp()
        } else {
            0.0
        };
        grad[i] = sig * (p_k - p_k1) / k as f64;
    }
    (loss, grad)
}

/// Relative loss error as the acceptance bar measures it.
pub fn loss_err(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs().max(1e-30)
}

/// `max|g - g*| / max|g*|` (absolute when g* is all zero), forgiving `slack` of absolute error:
/// gradients that are themselves subnormal cannot be resolved below a few subnormal spacings.
fn grad_err_with_slack(got: &[f64], want: &[f64], slack: f64) -> f64 {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    let diff = (diff - slack).max(0.0);
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

/// Gradient error of an f64 result (see [`grad_err_with_slack`]).
pub fn grad_err(got: &[f64], want: &[f64]) -> f64 {
    grad_err_with_slack(got, want, 1e-321)
}

/// Gradient error of an f32 result, whose subnormal spacing is 1.4e-45.
pub fn grad_err_f32(got: &[f64], want: &[f64]) -> f64 {
    grad_err_with_slack(got, want, 2e-45)
}

/// A small deterministic generator (SplitMix64) so the references need no extra crate.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Standard normal by Box-Muller.
    pub fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    /// Log-uniform in [lo, hi].
    pub fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + self.uniform() * (hi.ln() - lo.ln())).exp()
    }
}

/// Score vectors of the shapes that break naive implementations: plain noise, ties, a spike,
/// very negative entries, the label at the max or the min.
pub fn adversarial_scores(rng: &mut Rng, n: usize, scale: f64, kind: usize) -> (Vec<f64>, usize) {
    let mut s: Vec<f64> = (0..n).map(|_| scale * rng.normal()).collect();
    let mut y = rng.below(n);
    match kind % 7 {
        0 => {}
        1 => {
            // Heavy ties: few distinct values.
            for v in s.iter_mut() {
                *v = scale * (rng.below(3) as f64 - 1.0);
            }
        }
        2 => {
            // One spike far above the rest.
            let i = rng.below(n);
            s[i] = 50.0 * scale;
        }
        3 => {
            // Very negative scores for most classes.
            for v in s.iter_mut().skip(1) {
                *v -= 100.0 * scale;
            }
        }
        4 => {
            // Label at the max.
            y = (0..n).max_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap();
        }
        5 => {
            // Label at the min.
            y = (0..n).min_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap();
        }
        _ => {
            // All equal.
            s.iter_mut().for_each(|v| *v = scale);
        }
    }
    (s, y)
}
