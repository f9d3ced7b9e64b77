//! The truncated top-k entropy, the noised top-k hinge and the top-k cross-entropy against
//! references written here from their definitions (sorting, direct sums, the NeuralSort matrix
//! built entry by entry), closed forms, limits and finite differences.

mod common;

use common::Rng;
use common::*;
use proptest::prelude::*;
use smooth_topk::{
    AnyLoss, Loss, NoisedTopkHinge, Reduction, Top1Mode, TopkCrossEntropy, TopkError,
    TruncatedTopkEntropy,
};

/// Central differences of `f` at `s`, step `h`.
fn finite_differences(s: &[f64], h: f64, f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    (0..s.len())
        .map(|i| {
            let (mut up, mut down) = (s.to_vec(), s.to_vec());
            up[i] += h;
            down[i] -= h;
            (f(&up) - f(&down)) / (2.0 * h)
        })
        .collect()
}

fn one<L: Loss>(loss: &L, s: &[f64], y: usize) -> (f64, Vec<f64>) {
    loss.loss_and_grad(s, &[y], s.len(), Reduction::Sum)
        .unwrap()
}

/// Distinct scores (no ties, so every loss here is differentiable).
fn distinct(rng: &mut Rng, n: usize, scale: f64) -> Vec<f64> {
    (0..n).map(|_| rng.normal() * scale).collect()
}

// ---------------------------------------------------------------- truncated top-k entropy

/// The definition: sort the other classes by score, leave out the k - 1 largest.
fn ref_truncated(s: &[f64], y: usize, k: usize) -> f64 {
    let mut others: Vec<f64> = (0..s.len()).filter(|&j| j != y).map(|j| s[j]).collect();
    others.sort_by(|a, b| b.total_cmp(a));
    let mut terms = vec![0.0];
    terms.extend(others[k - 1..].iter().map(|v| v - s[y]));
    logsumexp(&terms)
}

#[test]
fn truncated_entropy_matches_its_definition_and_finite_differences() {
    let mut rng = Rng(3);
    for n in [2usize, 3, 7, 40, 300] {
        for k in 1..n.min(9) {
            for scale in [0.1, 1.0, 8.0] {
                let s = distinct(&mut rng, n, scale);
                let y = rng.below(n);
                let loss = TruncatedTopkEntropy::new(k).unwrap();
                let (l, g) = one(&loss, &s, y);
                let want = ref_truncated(&s, y, k);
                assert!(
                    (l - want).abs() <= 1e-13 * (1.0 + want),
                    "n={n} k={k}: {l} vs {want}"
                );
                let fd = finite_differences(&s, 1e-6, |v| ref_truncated(v, y, k));
                for (a, b) in g.iter().zip(&fd) {
                    assert!((a - b).abs() <= 1e-6, "n={n} k={k}: {a} vs {b}");
                }
            }
        }
    }
}

#[test]
fn truncated_entropy_k1_is_cross_entropy_and_tiny_losses_keep_precision() {
    let s = [3.0, -1.0, 0.5, 2.0];
    let (l, _) = one(&TruncatedTopkEntropy::new(1).unwrap(), &s, 0);
    let want = logsumexp(&s) - s[0];
    assert!((l - want).abs() <= 1e-15);
    // The k - 1 = 1 largest competitor (500) is left out: ln(1 + e^-60 + e^-70).
    let s = [40.0, 500.0, -20.0, -30.0];
    let (l, g) = one(&TruncatedTopkEntropy::new(2).unwrap(), &s, 0);
    let want = (-60f64).exp() + (-70f64).exp();
    assert!((l - want).abs() <= 1e-14 * want, "{l} vs {want}");
    assert_eq!(g[1], 0.0);
    assert!((g[0] + want).abs() <= 1e-14 * want);
}

#[test]
fn truncated_entropy_splits_the_left_out_share_between_ties() {
    // Competitors 2, 2, 2 tie for the largest; k - 1 = 2 of them are left out.
    let s = [0.0, 2.0, 2.0, 2.0, -1.0];
    let (l, g) = one(&TruncatedTopkEntropy::new(3).unwrap(), &s, 0);
    let want = (1.0 + 2f64.exp() + (-1f64).exp()).ln();
    assert!((l - want).abs() <= 1e-15);
    // Each tied class is kept in one tie-break out of three: a third of the kept weight.
    let p = 1.0 - (-l).exp();
    let z = 2f64.exp() + (-1f64).exp();
    for gj in &g[1..4] {
        assert!((gj - p * 2f64.exp() / z / 3.0).abs() <= 1e-15);
    }
    assert!(g.iter().sum::<f64>().abs() <= 1e-15);
}

// ---------------------------------------------------------------------- noised top-k hinge

/// The definition under given noise: sort each draw, take its (k+1)-th largest.
#[allow(clippy::too_many_arguments)]
fn ref_noised(
    s: &[f64],
    y: usize,
    k: usize,
    eps: f64,
    z: &[f64],
    draws: usize,
    margin: f64,
    scale: f64,
) -> f64 {
    let mean = (0..draws)
        .map(|d| {
            let mut v: Vec<f64> = (0..s.len())
                .map(|j| s[j] + eps * z[j * draws + d])
                .collect();
            v.sort_by(|a, b| b.total_cmp(a));
            v[k]
        })
        .sum::<f64>()
        / draws as f64;
    scale * (margin + mean - s[y]).max(0.0)
}

#[test]
fn noised_hinge_matches_its_definition_under_given_noise() {
    let mut rng = Rng(5);
    for n in [2usize, 3, 10, 100] {
        for k in 1..n.min(6) {
            for draws in [1usize, 5, 17] {
                let eps = [0.0, 0.1, 1.0][rng.below(3)];
                let s = distinct(&mut rng, n, 2.0);
                let y = rng.below(n);
                let z: Vec<f64> = (0..n * draws).map(|_| rng.normal()).collect();
                let loss = NoisedTopkHinge::balanced(k, eps, draws).unwrap();
                let (l, g) = loss
                    .loss_and_grad_with_noise(&s, &[y], n, &z, Reduction::Sum)
                    .unwrap();
                let want = ref_noised(&s, y, k, eps, &z, draws, 1.0, 1.0);
                assert!((l - want).abs() <= 1e-13 * (1.0 + want), "{l} vs {want}");
                // Piecewise linear for fixed noise: differences over a small step are exact
                // away from a kink.
                let fd =
                    finite_differences(&s, 1e-7, |v| ref_noised(v, y, k, eps, &z, draws, 1.0, 1.0));
                for (a, b) in g.iter().zip(&fd) {
                    assert!(
                        (a - b).abs() <= 1e-6,
                        "n={n} k={k} draws={draws}: {a} vs {b}"
                    );
                }
            }
        }
    }
}

#[test]
fn noised_hinge_at_zero_noise_is_the_top_k_calibrated_hinge() {
    let mut rng = Rng(8);
    for _ in 0..200 {
        let n = 2 + rng.below(20);
        let k = 1 + rng.below(n - 1);
        let s = distinct(&mut rng, n, 1.5);
        let y = rng.below(n);
        let mut sorted = s.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let want = (1.0 + sorted[k] - s[y]).max(0.0);
        let (l, _) = one(&NoisedTopkHinge::balanced(k, 0.0, 3).unwrap(), &s, y);
        assert!((l - want).abs() <= 1e-14, "{l} vs {want}");
    }
}

/// Standard normal CDF and density (erfc by its continued fraction is overkill here: a
/// high-order rational approximation of erf with error below 1.5e-7 is enough for a 5-sigma
/// Monte-Carlo test).
fn normal_cdf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs() / std::f64::consts::SQRT_2);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-(x * x) / 2.0).exp();
    0.5 * (1.0 + erf.copysign(x))
}

#[test]
fn seeded_noise_estimates_the_gaussian_smoothing() {
    // n = 2, k = 1: T = E[min(s_0 + eps Z_0, s_1 + eps Z_1)], in closed form with
    // theta = eps sqrt(2): s_0 Phi(-d/theta) + s_1 Phi(d/theta) - theta phi(d/theta), d = s_0 - s_1.
    let (s, eps, draws) = ([0.3f64, -0.2], 0.7, 400_000);
    let theta = eps * std::f64::consts::SQRT_2;
    let d = (s[0] - s[1]) / theta;
    let phi = (-(d * d) / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let expected_min = s[0] * normal_cdf(-d) + s[1] * normal_cdf(d) - theta * phi;
    let loss = NoisedTopkHinge::balanced(1, eps, draws)
        .unwrap()
        .with_seed(42);
    let (l, g) = one(&loss, &s, 0);
    let estimate = l - 1.0 + s[0];
    // The minimum's standard deviation is below that of one coordinate, eps.
    let se = eps / (draws as f64).sqrt();
    assert!(
        (estimate - expected_min).abs() <= 5.0 * se,
        "{estimate} vs {expected_min}"
    );
    // dT/ds_0 = P(s_0 + eps Z_0 is the smaller) = Phi(-d).
    let se_p = 0.5 / (draws as f64).sqrt();
    assert!(
        (g[0] + 1.0 - normal_cdf(-d)).abs() <= 5.0 * se_p,
        "{}",
        g[0]
    );
    assert!((g[0] + g[1]).abs() <= 1e-12, "the counts sum to the draws");
}

#[test]
fn seeded_noise_is_deterministic_per_sample_and_fresh_per_step() {
    let mut rng = Rng(9);
    let (batch, n) = (300usize, 50usize);
    let s = distinct(&mut rng, batch * n, 1.0);
    let labels: Vec<usize> = (0..batch).map(|_| rng.below(n)).collect();
    let loss = AnyLoss::from(NoisedTopkHinge::balanced(3, 1.0, 5).unwrap().with_seed(7));
    let run = |loss: &AnyLoss, threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| loss.loss_and_grad(&s, &labels, n, Reduction::Mean).unwrap())
    };
    let (a, ga) = run(&loss, 1);
    let (b, gb) = run(&loss, 3);
    assert_eq!((a, &ga), (b, &gb));
    // A row's noise depends on its index, not on its neighbours: the first row alone agrees.
    let (first, _) = loss
        .loss_and_grad(&s[..n], &labels[..1], n, Reduction::Sum)
        .unwrap();
    let mut per = vec![0.0; batch];
    loss.loss_per_sample(&s, &labels, n, &mut per).unwrap();
    assert_eq!(first, per[0]);
    let (c, _) = run(&loss.for_step(1), 2);
    let (d, _) = run(&loss.for_step(2), 2);
    assert!(a != c && c != d);
    assert_eq!(run(&loss.for_step(1), 1).0, c);
}

#[test]
fn imbalanced_noised_hinge_uses_per_class_margins_and_scale() {
    let counts = [500u64, 50, 5];
    let margins = NoisedTopkHinge::ldam_margins(&counts, 0.3).unwrap();
    let raw: Vec<f64> = counts.iter().map(|&c| (c as f64).powf(-0.25)).collect();
    assert!((margins[2] - 0.3).abs() <= 1e-15);
    assert!((margins[0] - 0.3 * raw[0] / raw[2]).abs() <= 1e-15);
    let loss = NoisedTopkHinge::imbalanced(1, 0.0, 1, margins.clone(), 50.0).unwrap();
    let s = [0.2, 0.1, 0.15];
    for y in 0..3 {
        let (l, _) = one(&loss, &s, y);
        let second = 0.15;
        let want = 50.0 * (margins[y] + second - s[y]).max(0.0);
        assert!((l - want).abs() <= 1e-12, "{l} vs {want}");
    }
    assert!(matches!(
        loss.loss(&[0.0; 4], &[0], 4, Reduction::Sum),
        Err(TopkError::ShapeMismatch { .. })
    ));
}

#[test]
fn noised_hinge_refuses_bad_settings_and_noise() {
    assert!(NoisedTopkHinge::balanced(0, 1.0, 5).is_err());
    assert!(NoisedTopkHinge::balanced(1, -1.0, 5).is_err());
    assert!(NoisedTopkHinge::balanced(1, f64::NAN, 5).is_err());
    assert!(NoisedTopkHinge::balanced(1, 1.0, 0).is_err());
    assert!(NoisedTopkHinge::imbalanced(1, 1.0, 5, vec![0.1, f64::INFINITY], 1.0).is_err());
    assert!(NoisedTopkHinge::imbalanced(1, 1.0, 5, vec![0.1], 0.0).is_err());
    assert!(NoisedTopkHinge::ldam_margins(&[3, 0], 0.5).is_err());
    let loss = NoisedTopkHinge::balanced(1, 1.0, 2).unwrap();
    let s = [0.0, 1.0, 2.0];
    let err = loss.loss_and_grad_with_noise(&s, &[0], 3, &[0.0; 5], Reduction::Sum);
    assert!(matches!(
        err,
        Err(TopkError::ShapeMismatch { what: "noise", .. })
    ));
    let mut z = [0.0; 6];
    z[4] = f64::NAN;
    assert!(loss
        .loss_and_grad_with_noise(&s, &[0], 3, &z, Reduction::Sum)
        .is_err());
    // n * n_sample past any allocation is refused before anything is drawn.
    let huge = NoisedTopkHinge::balanced(1, 1.0, usize::MAX / 2).unwrap();
    assert!(matches!(
        huge.loss(&s, &[0], 3, Reduction::Sum),
        Err(TopkError::TooLarge { .. })
    ));
}

// ----------------------------------------------------------------- top-k cross-entropy

/// The definition, entry by entry: the NeuralSort matrix of the considered scores, the top-k
/// probabilities, the floored logarithm (plain f64 arithmetic, moderate scores only).
#[allow(clippy::too_many_arguments)]
fn ref_topk_ce(
    s: &[f64],
    y: usize,
    p_k: &[f64],
    tau: f64,
    m: Option<usize>,
    mode: Top1Mode,
    floor: f64,
) -> f64 {
    let softmax_top1 = mode != Top1Mode::Sort;
    let n = s.len();
    let mut x = vec![s[y]];
    let mut others: Vec<f64> = (0..n).filter(|&j| j != y).map(|j| s[j]).collect();
    others.sort_by(|a, b| b.total_cmp(a));
    let d = m.map_or(n, |m| m.min(n));
    x.extend(&others[..d - 1]);
    // P[j][q]: row-softmax over j of ((d + 1 - 2(q + 1)) x_j - sum_l |x_j - x_l|) / tau.
    let p = |j: usize, q: usize| -> f64 {
        let c = (d + 1) as f64 - 2.0 * (q + 1) as f64;
        let logit = |i: usize| (c * x[i] - x.iter().map(|v| (x[i] - v).abs()).sum::<f64>()) / tau;
        let z: Vec<f64> = (0..d).map(logit).collect();
        (z[j] - logsumexp(&z)).exp()
    };
    let top_k_prob = |k: usize| (0..k).map(|q| p(0, q)).sum::<f64>();
    let mut dist = 0.0;
    for (i, &pk) in p_k.iter().enumerate() {
        let k = i + 1;
        dist += if k == 1 && softmax_top1 {
            if mode == Top1Mode::SoftmaxCe {
                continue;
            }
            pk * (x[0] - logsumexp(&x)).exp()
        } else {
            pk * top_k_prob(k)
        };
    }
    let ranked = -(dist * (1.0 - 2.0 * floor) + floor).ln();
    if mode == Top1Mode::SoftmaxCe {
        // Two losses added: p_1 CE and the rest's weight times the ranked part.
        let ce = logsumexp(&x) - x[0];
        let rest: f64 = p_k[1..].iter().sum();
        return p_k[0] * ce + if rest > 0.0 { rest * ranked } else { 0.0 };
    }
    ranked
}

#[test]
fn topk_ce_matches_the_neuralsort_definition_and_finite_differences() {
    let mut rng = Rng(21);
    for n in [3usize, 5, 12, 40] {
        for p_k in [
            vec![1.0],
            vec![0.5, 0.5],
            vec![0.2, 0.2, 0.2, 0.2, 0.2],
            vec![0.0, 0.0, 1.0],
        ] {
            if p_k.len() >= n {
                continue;
            }
            for m in [None, Some(p_k.len() + 1), Some(p_k.len() + 3)] {
                for (tau, scale) in [(1.0, 1.0), (0.1, 0.3), (3.0, 4.0)] {
                    for top1 in [Top1Mode::Softmax, Top1Mode::Sort, Top1Mode::SoftmaxCe] {
                        let s = distinct(&mut rng, n, scale);
                        let y = rng.below(n);
                        let loss = TopkCrossEntropy::new(&p_k, tau, m).unwrap().with_top1(top1);
                        let sm = top1;
                        let (l, g) = one(&loss, &s, y);
                        let want = ref_topk_ce(&s, y, &p_k, tau, m, sm, 1e-7);
                        let what = format!("n={n} p_k={p_k:?} m={m:?} tau={tau} {top1:?}");
                        assert!(
                            (l - want).abs() <= 1e-11 * (1.0 + want),
                            "{what}: {l} vs {want}"
                        );
                        let fd = finite_differences(&s, 1e-6, |v| {
                            ref_topk_ce(v, y, &p_k, tau, m, sm, 1e-7)
                        });
                        for (a, b) in g.iter().zip(&fd) {
                            assert!(
                                (a - b).abs() <= 2e-6 * (1.0 + b.abs()),
                                "{what}: {a} vs {b}"
                            );
                        }
                        let size: f64 = g.iter().map(|v| v.abs()).sum();
                        assert!(
                            g.iter().sum::<f64>().abs() <= 1e-12 * (1.0 + size),
                            "{what}: shift invariance"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn topk_ce_limits() {
    // p_k = [1] with the softmax top-1 and no floor is softmax cross-entropy.
    let s = [0.4, -2.0, 1.5, 0.0, 3.0];
    let ce = TopkCrossEntropy::new(&[1.0], 1.0, None)
        .unwrap()
        .with_floor(0.0)
        .unwrap();
    for y in 0..5 {
        let (l, _) = one(&ce, &s, y);
        assert!((l - (logsumexp(&s) - s[y])).abs() <= 1e-14);
    }
    // tau -> 0: the relaxed permutation becomes the sorting one. The label (class 0) ranked
    // third is in the top 3 and 4 but not the top 2: D = p_3 + p_4 (sort mode), exactly.
    let s = [1.0, 3.0, 2.0, 0.0, -1.0];
    let loss = TopkCrossEntropy::new(&[0.1, 0.2, 0.3, 0.4], 1e-3, None)
        .unwrap()
        .with_top1(Top1Mode::Sort)
        .with_floor(0.0)
        .unwrap();
    let (l, g) = one(&loss, &s, 0);
    assert!((l + (0.7f64).ln()).abs() <= 1e-12, "{l}");
    assert!(g.iter().all(|v| v.abs() <= 1e-12));
    // Far outside the top K the loss is the floor's: -ln(1e-7) at most, never inf.
    let s = [-1e6, 1e6, 2e6, 3e6];
    let (l, g) = one(
        &TopkCrossEntropy::new(&[0.5, 0.5], 1.0, None).unwrap(),
        &s,
        0,
    );
    assert!(l.is_finite() && (l + (1e-7f64).ln()).abs() <= 1e-9, "{l}");
    assert!(g.iter().all(|v| v.is_finite()));
    // Without the floor it is the exact log of a tiny probability, still finite.
    let exact = TopkCrossEntropy::new(&[0.5, 0.5], 1.0, None)
        .unwrap()
        .with_floor(0.0)
        .unwrap();
    let (l, g) = one(&exact, &s, 0);
    assert!(l.is_finite() && l > 1e5, "{l}");
    assert!(g.iter().all(|v| v.is_finite()));
}

#[test]
fn topk_ce_refuses_bad_settings() {
    assert!(TopkCrossEntropy::new(&[], 1.0, None).is_err());
    assert!(TopkCrossEntropy::new(&[0.5, 0.4], 1.0, None).is_err());
    assert!(TopkCrossEntropy::new(&[1.5, -0.5], 1.0, None).is_err());
    assert!(TopkCrossEntropy::new(&[1.0], 0.0, None).is_err());
    assert!(TopkCrossEntropy::new(&[0.5, 0.5], 1.0, Some(2)).is_err());
    assert!(TopkCrossEntropy::new(&[1.0], 1.0, None)
        .unwrap()
        .with_floor(0.5)
        .is_err());
    let loss = TopkCrossEntropy::top_k_only(3, 1.0, None).unwrap();
    assert!(matches!(
        loss.loss(&[0.0; 3], &[0], 3, Reduction::Sum),
        Err(TopkError::TooFewClasses { n: 3, min: 4 })
    ));
}

// ------------------------------------------------------------------------ properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn the_other_losses_are_finite_and_shift_invariant(
        raw in prop::collection::vec(-1.0f64..1.0, 3..60),
        log_scale in -3.0f64..3.5,
        k_pick in 0usize..100,
        label_pick in 0usize..1000,
        quantised in any::<bool>(),
        shift in -1e3f64..1e3,
    ) {
        let n = raw.len();
        let scale = 10f64.powf(log_scale);
        let s: Vec<f64> = raw.iter().map(|v| if quantised { (v * 3.0).round() * scale } else { v * scale }).collect();
        let y = label_pick % n;
        let k = 1 + k_pick % (n - 1);
        let m = (k + 1 + k_pick % 5).min(n);
        let losses: Vec<AnyLoss> = vec![
            TruncatedTopkEntropy::new(k).unwrap().into(),
            NoisedTopkHinge::balanced(k, 0.5, 3).unwrap().with_seed(k_pick as u64).into(),
            TopkCrossEntropy::top_k_only(k, 1.0, Some(m).filter(|&m| m > k && m < n)).unwrap().into(),
        ];
        let moved: Vec<f64> = s.iter().map(|v| v + shift).collect();
        for loss in &losses {
            let (l, g) = one(loss, &s, y);
            // NeuralSort's matrix is stochastic over classes for each rank, not over ranks for a
            // class: the relaxed top-k probability can exceed 1 and the loss dip below 0.
            let nonnegative = !matches!(loss, AnyLoss::TopkCrossEntropy(_));
            prop_assert!(l.is_finite() && (l >= 0.0 || !nonnegative), "{loss:?}: {l}");
            prop_assert!(g.iter().all(|v| v.is_finite()));
            prop_assert!(g.iter().sum::<f64>().abs() <= 1e-9 * (1.0 + g.iter().map(|v| v.abs()).sum::<f64>()));
            // A common shift of the scores changes nothing (up to the rounding of the shift).
            let (l2, _) = one(loss, &moved, y);
            let tol = 1e-9 * (1.0 + l.abs()) + 1e-12 * (shift.abs() + scale) * n as f64;
            prop_assert!((l - l2).abs() <= tol.max(1e-6 * l.abs()), "{loss:?}: {l} vs {l2}");
            // f32 storage agrees with f64 on the rounded scores to float32 precision.
            let s32: Vec<f32> = s.iter().map(|&v| v as f32).collect();
            let (l32, _) = loss.loss_and_grad(&s32, &[y], n, Reduction::Sum).unwrap();
            let wide: Vec<f64> = s32.iter().map(|&v| f64::from(v)).collect();
            let (lw, _) = one(loss, &wide, y);
            prop_assert!((l32 - lw).abs() <= 1e-6 * (1.0 + lw.abs()));
        }
    }
}
