//! The smooth and hard top-k SVMs against independent references: subset enumeration,
//! a log-space dynamic program, finite differences, and their defining invariants.

mod common;

use common::*;
use smooth_topk::{CrossEntropy, HardTopkSvm, Loss, Reduction, SmoothTopkSvm};

fn smooth_one(s: &[f64], y: usize, k: usize, tau: f64, alpha: f64) -> (f64, Vec<f64>) {
    let loss = SmoothTopkSvm::new(k, tau, alpha).unwrap();
    let mut l = [0.0];
    let mut g = vec![0.0; s.len()];
    loss.loss_and_grad_per_sample(s, &[y], s.len(), &mut l, &mut g)
        .unwrap();
    (l[0], g)
}

fn smooth_one_f32(s: &[f64], y: usize, k: usize, tau: f64, alpha: f64) -> (f64, Vec<f64>) {
    let loss = SmoothTopkSvm::new(k, tau, alpha).unwrap();
    let s32: Vec<f32> = s.iter().map(|&v| v as f32).collect();
    let mut l = [0.0f32];
    let mut g = vec![0.0f32; s.len()];
    loss.loss_and_grad_per_sample(&s32, &[y], s.len(), &mut l, &mut g)
        .unwrap();
    (l[0] as f64, g.iter().map(|&v| v as f64).collect())
}

/// The tolerance an f64 reference itself can meet: its log-space terms have absolute error of
/// a few ulps of max|s| / (k tau).
fn reference_tol(s: &[f64], k: usize, tau: f64) -> f64 {
    let xmax = s.iter().fold(0.0f64, |m, v| m.max(v.abs())) / (k as f64 * tau);
    1e-10 + 64.0 * f64::EPSILON * (1.0 + xmax) * k as f64
}

#[test]
fn matches_subset_enumeration_on_small_problems() {
    let mut rng = Rng(1);
    let mut cases = 0;
    for n in 2..=9 {
        for k in 1..n {
            for kind in 0..7 {
                for &(tau, alpha, scale) in &[
                    (1.0, 1.0, 1.0),
                    (0.1, 0.0, 3.0),
                    (0.01, 2.0, 0.5),
                    (10.0, 0.5, 20.0),
                ] {
                    let (s, y) = adversarial_scores(&mut rng, n, scale, kind);
                    let (want_l, want_g) = brute_smooth(&s, y, k, tau, alpha);
                    let tol = reference_tol(&s, k, tau);
                    let (l, g) = smooth_one(&s, y, k, tau, alpha);
                    assert!(
                        loss_err(l, want_l) <= tol && grad_err(&g, &want_g) <= tol,
                        "n={n} k={k} tau={tau} alpha={alpha} kind={kind}: loss {l:e} vs {want_l:e}, \
                         grad err {}",
                        grad_err(&g, &want_g)
                    );
                    let (l32, g32) = smooth_one_f32(&s, y, k, tau, alpha);
                    let s32: Vec<f64> = s.iter().map(|&v| v as f32 as f64).collect();
                    let (want32_l, want32_g) = brute_smooth(&s32, y, k, tau, alpha);
                    assert!(loss_err(l32, want32_l) <= 1e-6 + tol, "f32 n={n} k={k}");
                    assert!(
                        grad_err_f32(&g32, &want32_g) <= 1e-6 + tol,
                        "f32 grad n={n} k={k}"
                    );
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 36 * 7 * 4);
}

#[test]
fn matches_log_space_dynamic_program_on_larger_problems() {
    let mut rng = Rng(2);
    for &n in &[12usize, 40, 150] {
        let mut ks: Vec<usize> = (1..=10).filter(|&k| k < n).collect();
        ks.push(n - 1);
        for &k in &ks {
            for kind in 0..7 {
                let tau = rng.log_uniform(1e-3, 100.0);
                let alpha = 2.0 * rng.uniform();
                let scale = rng.log_uniform(1e-3, 30.0);
                let (s, y) = adversarial_scores(&mut rng, n, scale, kind);
                let (want_l, want_g) = dp_smooth(&s, y, k, tau, alpha);
                let (l, g) = smooth_one(&s, y, k, tau, alpha);
                let tol = reference_tol(&s, k, tau);
                assert!(
                    loss_err(l, want_l) <= tol,
                    "n={n} k={k} tau={tau} alpha={alpha} scale={scale} kind={kind}: {l} vs {want_l}"
                );
                assert!(
                    grad_err(&g, &want_g) <= tol,
                    "n={n} k={k} tau={tau} kind={kind}: grad err {}",
                    grad_err(&g, &want_g)
                );
            }
        }
    }
}

#[test]
fn gradient_matches_central_differences() {
    let mut rng = Rng(3);
    for &(n, k, tau, alpha) in &[
        (5usize, 1usize, 1.0, 1.0),
        (8, 3, 0.5, 0.3),
        (20, 5, 2.0, 1.0),
        (30, 29, 1.0, 1.0),
    ] {
        let s: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let y = rng.below(n);
        let (_, g) = smooth_one(&s, y, k, tau, alpha);
        let h = 1e-5;
        let fd: Vec<f64> = (0..n)
            .map(|i| {
                let mut p = s.clone();
                let mut m = s.clone();
                p[i] += h;
                m[i] -= h;
                (smooth_one(&p, y, k, tau, alpha).0 - smooth_one(&m, y, k, tau, alpha).0)
                    / (2.0 * h)
            })
            .collect();
        assert!(
            grad_err(&g, &fd) < 1e-7,
            "n={n} k={k}: {}",
            grad_err(&g, &fd)
        );
    }
}

#[test]
fn gradient_invariants_hold_at_every_scale() {
    let mut rng = Rng(4);
    for kind in 0..7 {
        for &scale in &[1e-4, 1e-2, 1.0, 1e2, 1e4] {
            for &tau in &[1e-3, 0.1, 1.0, 100.0] {
                let n = 50;
                let k = 1 + rng.below(10);
                let (s, y) = adversarial_scores(&mut rng, n, scale, kind);
                for (l, g) in [
                    smooth_one(&s, y, k, tau, 1.0),
                    smooth_one_f32(&s, y, k, tau, 1.0),
                ] {
                    assert!(l.is_finite() && l >= 0.0);
                    let bound = 1.0 / k as f64 * (1.0 + 1e-6);
                    assert!(g.iter().all(|v| v.is_finite() && v.abs() <= bound));
                    let sum: f64 = g.iter().sum();
                    assert!(sum.abs() <= 1e-6 / k as f64, "sum {sum}");
                    assert!(g[y] <= 0.0);
                }
            }
        }
    }
}

#[test]
fn top1_with_unit_temperature_and_no_margin_is_cross_entropy() {
    let mut rng = Rng(5);
    let svm = SmoothTopkSvm::new(1, 1.0, 0.0).unwrap();
    for kind in 0..7 {
        for &scale in &[1e-3, 1.0, 30.0, 1e3] {
            let n = 17;
            let (s, y) = adversarial_scores(&mut rng, n, scale, kind);
            let (a, ga) = svm.loss_and_grad(&s, &[y], n, Reduction::Mean).unwrap();
            let (b, gb) = CrossEntropy
                .loss_and_grad(&s, &[y], n, Reduction::Mean)
                .unwrap();
            assert!(loss_err(a, b) < 1e-12, "{a} vs {b}");
            assert!(grad_err(&ga, &gb) < 1e-12);
        }
    }
}

#[test]
fn small_temperature_approaches_the_hard_loss_within_the_log_count_bound() {
    let mut rng = Rng(6);
    for n in [4usize, 7, 30] {
        for k in [1usize, 2, 3] {
            let (s, y) = adversarial_scores(&mut rng, n, 1.0, 0);
            let hard = HardTopkSvm::new(k, 1.0)
                .unwrap()
                .loss(&s, &[y], n, Reduction::Sum)
                .unwrap();
            let mut gap = f64::INFINITY;
            for tau in [1.0, 0.1, 0.01, 0.001] {
                let smooth = smooth_one(&s, y, k, tau, 1.0).0;
                // tau * LSE is within tau * ln(#terms) of max.
                let ln_c = |a: usize, b: usize| -> f64 {
                    (0..b).map(|i| ((a - i) as f64 / (i + 1) as f64).ln()).sum()
                };
                let upper = tau * ln_c(n, k);
                let lower = tau * ln_c(n - 1, k - 1);
                assert!(smooth - hard <= upper + 1e-12 && hard - smooth <= lower + 1e-12);
                gap = (smooth - hard).abs();
            }
            assert!(gap < 0.01);
        }
    }
}

#[test]
fn hard_loss_matches_enumeration_and_subgradient_splits_ties() {
    let mut rng = Rng(7);
    for n in 2..=8 {
        for k in 1..n {
            for kind in 0..7 {
                let (s, y) = adversarial_scores(&mut rng, n, 1.0, kind);
                let alpha = rng.uniform();
                let hl = HardTopkSvm::new(k, alpha).unwrap();
                let (l, g) = hl.loss_and_grad(&s, &[y], n, Reduction::Sum).unwrap();
                let want = brute_hard(&s, y, k, alpha);
                assert!(
                    (l - want).abs() <= 1e-12 * (1.0 + want.abs()),
                    "{l} vs {want}"
                );
                let sum: f64 = g.iter().sum();
                assert!(sum.abs() < 1e-15);
                if l > 0.0 {
                    assert_eq!(g[y], -1.0 / k as f64);
                } else {
                    assert!(g.iter().all(|&v| v == 0.0));
                }
            }
        }
    }
    // Three scores tied at the k-th place share the subgradient.
    let hl = HardTopkSvm::new(2, 1.0).unwrap();
    let (_, g) = hl
        .loss_and_grad(&[5.0, 1.0, 1.0, 1.0, 0.0], &[4], 5, Reduction::Sum)
        .unwrap();
    assert_eq!(g, vec![0.0, 1.0 / 6.0, 1.0 / 6.0, 1.0 / 6.0, -0.5]);
}

#[test]
fn tiny_losses_keep_their_relative_precision() {
    // Label far above everything: L = tau * r with r below exp(-30); a difference of logs would
    // return 0 or noise here.
    let s = [100.0, 0.0, 0.0, 0.0, 0.0];
    for (k, tau) in [(1usize, 1.0f64), (2, 1.0), (3, 0.5)] {
        let (want, _) = brute_smooth(&s, 0, k, tau, 0.0);
        let (l, _) = smooth_one(&s, 0, k, tau, 0.0);
        assert!(want > 0.0 && want < 1e-10);
        assert!(loss_err(l, want) < 1e-12, "k={k}: {l} vs {want}");
        let (l32, _) = smooth_one_f32(&s, 0, k, tau, 0.0);
        assert!(loss_err(l32, want) < 1e-6);
    }
}

#[test]
fn k_equal_n_minus_one_matches_its_closed_form() {
    // With k = n - 1 the only k-subset without y is all other classes, so
    // ln r = alpha/tau - x_y - logsumexp(-x') and P_k(i) - P_{k-1}(i) = softmax(-x')_i.
    let mut rng = Rng(8);
    for n in [2usize, 6, 20, 400] {
        let k = n - 1;
        for &(tau, scale) in &[(1.0, 3.0), (0.01, 1.0), (5.0, 100.0)] {
            let s: Vec<f64> = (0..n).map(|_| scale * rng.normal()).collect();
            let y = rng.below(n);
            let alpha = 1.0;
            let (l, g) = smooth_one(&s, y, k, tau, alpha);
            let x: Vec<f64> = s.iter().map(|v| v / (k as f64 * tau)).collect();
            let neg: Vec<f64> = (0..n).filter(|&i| i != y).map(|i| -x[i]).collect();
            let lse = logsumexp(&neg);
            let log_r = alpha / tau - x[y] - lse;
            let want_l = tau * softplus(log_r);
            let sig = 1.0 / (1.0 + (-log_r).exp());
            let want_g: Vec<f64> = (0..n)
                .map(|i| {
                    if i == y {
                        -sig / k as f64
                    } else {
                        sig / k as f64 * (-x[i] - lse).exp()
                    }
                })
                .collect();
            let tol = reference_tol(&s, k, tau);
            assert!(loss_err(l, want_l) < tol, "n={n}: {l} vs {want_l}");
            assert!(
                grad_err(&g, &want_g) < tol,
                "n={n}: {}",
                grad_err(&g, &want_g)
            );
        }
    }
}

#[test]
fn extreme_scales_and_temperatures_match_the_log_space_reference() {
    let mut rng = Rng(9);
    for case in 0..400 {
        let n = [2usize, 3, 5, 11, 30, 64][case % 6];
        let k = 1 + rng.below((n - 1).min(10));
        let tau = rng.log_uniform(1e-3, 100.0);
        let alpha = 2.0 * rng.uniform();
        let scale = rng.log_uniform(1e-4, 1e4);
        let (s, y) = adversarial_scores(&mut rng, n, scale, case / 6);
        let (want_l, want_g) = dp_smooth(&s, y, k, tau, alpha);
        let tol = reference_tol(&s, k, tau);
        let (l, g) = smooth_one(&s, y, k, tau, alpha);
        assert!(l.is_finite() && g.iter().all(|v| v.is_finite()));
        assert!(
            loss_err(l, want_l) <= tol && grad_err(&g, &want_g) <= tol,
            "case {case}: n={n} k={k} tau={tau} alpha={alpha} scale={scale}: loss {l:e} vs \
             {want_l:e}, grad err {}",
            grad_err(&g, &want_g)
        );
        let (l32, g32) = smooth_one_f32(&s, y, k, tau, alpha);
        let s32: Vec<f64> = s.iter().map(|&v| v as f32 as f64).collect();
        let (w32_l, w32_g) = dp_smooth(&s32, y, k, tau, alpha);
        assert!(
            loss_err(l32, w32_l) <= 1e-6 + tol,
            "f32 case {case}: {l32:e} vs {w32_l:e}"
        );
        assert!(grad_err_f32(&g32, &w32_g) <= 1e-6 + tol, "f32 case {case}");
    }
}

#[test]
fn binomial_growth_beyond_f64_range_stays_finite_and_balanced() {
    // n = 3000, k = 1500: C(2999, 1500) ~ 1e901, beyond f64 in the linear pass.
    let n = 3000;
    let s: Vec<f64> = (0..n).map(|i| (i % 7) as f64 * 0.1).collect();
    let (l, g) = smooth_one(&s, 3, 1500, 1.0, 1.0);
    assert!(l.is_finite() && l > 0.0 && g.iter().all(|v| v.is_finite()));
    assert!(g.iter().sum::<f64>().abs() < 1e-9);
    assert!(g.iter().all(|v| v.abs() <= 1.0 / 1500.0 * (1.0 + 1e-9)));
}
