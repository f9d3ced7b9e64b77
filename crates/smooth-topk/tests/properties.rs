//! Property tests over wide ranges of n, k, tau, alpha and score scales.

mod common;

use common::*;
use proptest::prelude::*;
use smooth_topk::{CrossEntropy, HardTopkSvm, Loss, Reduction, SmoothTopkSvm};

#[derive(Debug, Clone)]
struct Case {
    scores: Vec<f64>,
    label: usize,
    k: usize,
    tau: f64,
    alpha: f64,
}

fn case() -> impl Strategy<Value = Case> {
    (2usize..48)
        .prop_flat_map(|n| {
            (
                prop::collection::vec(-1.0f64..1.0, n),
                0..n,
                1..n,
                -3.0f64..2.0,
                0.0f64..2.0,
                -4.0f64..4.0,
                0usize..4,
            )
        })
        .prop_map(|(raw, label, k, log_tau, alpha, log_scale, shape)| {
            let scale = 10f64.powf(log_scale);
            let scores = raw
                .iter()
                .map(|&v| match shape {
                    // Quantised values: many exact ties.
                    1 => (v * 2.0).round() * scale,
                    // One spike.
                    2 if v > 0.9 => 100.0 * scale,
                    _ => v * scale,
                })
                .collect();
            Case {
                scores,
                label,
                k,
                tau: 10f64.powf(log_tau),
                alpha,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn smooth_svm_matches_reference_and_invariants(c in case()) {
        let n = c.scores.len();
        let loss = SmoothTopkSvm::new(c.k, c.tau, c.alpha).unwrap();
        let (l, g) = loss.loss_and_grad(&c.scores, &[c.label], n, Reduction::Sum).unwrap();
        let (want_l, want_g) = dp_smooth(&c.scores, c.label, c.k, c.tau, c.alpha);
        let xmax = c.scores.iter().fold(0.0f64, |m, v| m.max(v.abs())) / (c.k as f64 * c.tau);
        let tol = 1e-10 + 64.0 * f64::EPSILON * (1.0 + xmax) * c.k as f64;
        prop_assert!(l.is_finite() && l >= 0.0);
        prop_assert!(loss_err(l, want_l) <= tol, "loss {} vs {}", l, want_l);
        prop_assert!(grad_err(&g, &want_g) <= tol, "grad err {}", grad_err(&g, &want_g));
        let bound = (1.0 + 1e-12) / c.k as f64;
        prop_assert!(g.iter().all(|v| v.is_finite() && v.abs() <= bound));
        prop_assert!(g.iter().sum::<f64>().abs() <= 1e-12);

        // float32 storage: one rounding away from the f64 result on the rounded scores.
        let s32: Vec<f32> = c.scores.iter().map(|&v| v as f32).collect();
        let (l32, g32) = loss.loss_and_grad(&s32, &[c.label], n, Reduction::Sum).unwrap();
        let s32w: Vec<f64> = s32.iter().map(|&v| v as f64).collect();
        let (w32_l, w32_g) = dp_smooth(&s32w, c.label, c.k, c.tau, c.alpha);
        let g32w: Vec<f64> = g32.iter().map(|&v| v as f64).collect();
        prop_assert!(loss_err(l32, w32_l) <= 1e-6 + tol);
        prop_assert!(grad_err_f32(&g32w, &w32_g) <= 1e-6 + tol);
        prop_assert!(g32.iter().all(|v| v.is_finite() && f64::from(v.abs()) <= bound * (1.0 + 1e-6)));
    }

    #[test]
    fn smooth_svm_is_bracketed_by_the_hard_loss(c in case()) {
        let n = c.scores.len();
        let smooth = SmoothTopkSvm::new(c.k, c.tau, c.alpha).unwrap()
            .loss(&c.scores, &[c.label], n, Reduction::Sum).unwrap();
        let hard = HardTopkSvm::new(c.k, c.alpha).unwrap()
            .loss(&c.scores, &[c.label], n, Reduction::Sum).unwrap();
        let ln_c = |a: usize, b: usize| -> f64 {
            (0..b).map(|i| ((a - i) as f64 / (i + 1) as f64).ln()).sum()
        };
        // smooth - hard lies in [-tau ln C(n-1, k-1), tau ln C(n, k)] (each log-sum-exp is
        // within tau ln(#terms) of its max), up to rounding of scores of this size.
        let slack = 1e-9 * (1.0 + c.scores.iter().fold(0.0f64, |m, v| m.max(v.abs())));
        prop_assert!(smooth - hard <= c.tau * ln_c(n, c.k) + slack);
        prop_assert!(hard - smooth <= c.tau * ln_c(n - 1, c.k - 1) + slack);
    }

    #[test]
    fn cross_entropy_gradient_is_softmax_minus_onehot(c in case()) {
        let n = c.scores.len();
        let (l, g) = CrossEntropy.loss_and_grad(&c.scores, &[c.label], n, Reduction::Sum).unwrap();
        let lse = logsumexp(&c.scores);
        let want = lse - c.scores[c.label];
        prop_assert!((l - want).abs() <= 1e-12 * (1.0 + lse.abs()));
        let m = c.scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = c.scores.iter().map(|v| (v - m).exp()).sum();
        for (i, gi) in g.iter().enumerate() {
            let p = (c.scores[i] - m).exp() / z;
            let want = if i == c.label { p - 1.0 } else { p };
            prop_assert!((gi - want).abs() <= 1e-12);
        }
    }
}

#[test]
fn batches_and_threads_give_the_per_row_results() {
    // Large enough to take the parallel path.
    let (batch, n) = (96usize, 500usize);
    let mut rng = Rng(11);
    let scores: Vec<f32> = (0..batch * n)
        .map(|_| (3.0 * rng.normal()) as f32)
        .collect();
    let labels: Vec<usize> = (0..batch).map(|_| rng.below(n)).collect();
    let loss = SmoothTopkSvm::new(5, 0.5, 1.0).unwrap();
    let mut losses = vec![0.0f32; batch];
    let mut grad = vec![0.0f32; batch * n];
    loss.loss_and_grad_per_sample(&scores, &labels, n, &mut losses, &mut grad)
        .unwrap();
    let single = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let (mean, mean_grad) = single.install(|| {
        loss.loss_and_grad(&scores, &labels, n, Reduction::Mean)
            .unwrap()
    });
    for b in 0..batch {
        let row = &scores[b * n..(b + 1) * n];
        let (l, g) = loss
            .loss_and_grad(row, &labels[b..=b], n, Reduction::Sum)
            .unwrap();
        assert_eq!(l as f32, losses[b]);
        assert_eq!(&g[..], &grad[b * n..(b + 1) * n]);
        for (a, c) in g.iter().zip(&mean_grad[b * n..(b + 1) * n]) {
            assert!((f64::from(*a) / batch as f64 - f64::from(*c)).abs() <= 1e-9);
        }
    }
    let total: f64 = losses.iter().map(|&v| f64::from(v)).sum();
    assert!((total / batch as f64 - mean).abs() <= 1e-6 * mean);
    let mut only = vec![0.0f32; batch];
    loss.loss_per_sample(&scores, &labels, n, &mut only)
        .unwrap();
    assert_eq!(only, losses);
}
