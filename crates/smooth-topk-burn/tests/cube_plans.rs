//! Every launch plan of the smooth kernel (`KernelPlan`), pinned one at a time, and the
//! autotuner's choices, against the numeric core on the wgpu adapter (lavapipe on a CPU-only
//! machine). A pin holds for the whole process, so this file is its own test binary and its tests
//! take turns through [`PIN`].
//! Runs with `cargo test --release -p smooth-topk-burn --features wgpu --test cube_plans`.
#![cfg(feature = "wgpu")]

mod common;

use burn::tensor::{Device, DeviceKind};
use common::{adversarial_layouts, checked_errors, hostile_grid, labels, op_against_core, scores};
use proptest::prelude::*;
use smooth_topk::{AnyLoss, CrossEntropy, SmoothTopkSvm};
use smooth_topk_burn::{pinned_plan_fallbacks, set_kernel_plan, KernelPlan};
use std::sync::{Mutex, MutexGuard};

/// Held by a test for as long as its pin must stay.
static PIN: Mutex<()> = Mutex::new(());

/// Takes the pin lock (a failed test leaves it poisoned, which must not fail the others) and
/// sets `plan` (`None`: the autotuner).
fn pin(plan: Option<KernelPlan>) -> MutexGuard<'static, ()> {
    let guard = PIN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    set_kernel_plan(plan);
    guard
}

fn device() -> Device {
    Device::wgpu(DeviceKind::DefaultDevice)
}

/// [`checked_errors`] within 1e-5. Returns (loss, gradient) errors.
fn check(x: &[f32], y: &[i64], n: usize, loss: AnyLoss, device: &Device, what: &str) -> (f64, f64) {
    let (le, ge) = checked_errors(x, y, n, loss, device, what);
    assert!(le <= 1e-5 && ge <= 1e-5, "{what}: loss {le:e} grad {ge:e}");
    (le, ge)
}

/// The worst (loss, gradient) error of the pinned plan over random rows, harsh rows and
/// adversarial layouts. Asserts that the plan really ran (no fallback) on every shape that
/// lavapipe's limits (32 KiB of shared memory, 1024 units per cube) let it take.
fn worst_error(device: &Device, plan: KernelPlan) -> (f64, f64) {
    let mut worst = (0f64, 0f64);
    let mut record = |(le, ge): (f64, f64)| worst = (worst.0.max(le), worst.1.max(ge));
    let before = pinned_plan_fallbacks();
    // Row lengths on both sides of the cube sizes and of the kept scores per unit.
    for &(n, batch) in &[(2usize, 3usize), (7, 5), (100, 6), (1000, 3), (5000, 2)] {
        for &k in &[1usize, 2, 5] {
            if k >= n {
                continue;
            }
            for &(tau, scale) in &[(1.0, 1.0), (0.1, 3.0), (0.05, 10.0)] {
                let loss: AnyLoss = SmoothTopkSvm::new(k, tau, 1.0).unwrap().into();
                let seed = (n * 31 + k) as u64;
                let (x, y) = (scores(batch * n, seed, scale), labels(batch, n, seed));
                let what = format!("n={n} k={k} tau={tau} scale={scale}");
                record(check(&x, &y, n, loss, device, &what));
            }
        }
    }
    let ce: AnyLoss = CrossEntropy.into();
    let (x, y) = (scores(4 * 1000, 5, 4.0), labels(4, 1000, 5));
    record(check(&x, &y, 1000, ce, device, "cross-entropy"));
    // Equal scores: with n = 20 and k = 12 every class fails the upward recursion's test
    // (P_11 = 11/19 > 1/2), so the whole row goes through the exact pass for listed classes.
    let (x, y) = (vec![0.25f32; 2 * 20], vec![3i64, 19]);
    let loss: AnyLoss = SmoothTopkSvm::new(12, 1.0, 1.0).unwrap().into();
    record(check(&x, &y, 20, loss, device, "all classes unstable"));
    for case in hostile_grid(&[3, 300]) {
        let loss: AnyLoss = SmoothTopkSvm::new(case.k, case.tau, 1.0).unwrap().into();
        let what = format!("{:?} n={} k={} tau={}", case.kind, case.n, case.k, case.tau);
        let rows = (&case.scores, &case.labels);
        record(check(rows.0, rows.1, case.n, loss, device, &what));
    }
    assert_eq!(
        pinned_plan_fallbacks(),
        before,
        "{} did not run",
        plan.name()
    );
    // Layouts with k = 18 or 25600 classes: the plans that keep scores do not take them.
    for layout in adversarial_layouts() {
        let loss: AnyLoss = SmoothTopkSvm::new(layout.k, 1.0, 1.0).unwrap().into();
        let rows = (&layout.scores, &layout.labels);
        record(check(rows.0, rows.1, layout.n, loss, device, layout.name));
    }
    worst
}

/// First the autotuner (no pin), then each plan pinned.
#[test]
fn the_autotuner_and_every_plan_match_the_core() {
    let device = device();
    {
        let _pin = pin(None);
        // A few shapes: each new key times every plan that fits, then runs the fastest; the
        // repeated key reuses the choice.
        for &(n, batch, k) in &[
            (10usize, 3usize, 2usize),
            (1000, 4, 5),
            (1000, 4, 5),
            (5000, 2, 1),
        ] {
            let loss: AnyLoss = SmoothTopkSvm::new(k, 0.5, 1.0).unwrap().into();
            let (x, y) = (scores(batch * n, 77, 5.0), labels(batch, n, 77));
            check(&x, &y, n, loss, &device, &format!("autotuned n={n} k={k}"));
        }
    }
    for plan in KernelPlan::ALL {
        let _pin = pin(Some(plan));
        let (le, ge) = worst_error(&device, plan);
        eprintln!("{}: max error loss {le:e}, grad {ge:e}", plan.name());
    }
    let _pin = pin(None);
}

proptest! {
    // Each case compiles the kernels for its (k, units per cube, plan) on the software adapter,
    // so the cases are few; the fixed sweeps cover the grid, these the settings between.
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random n, k, tau, alpha, score scale, batch, labels and launch plan: the smooth SVM's
    /// loss and gradient (a case whose rows need the extended passes gets them) within 1e-5 of
    /// the core in f64.
    #[test]
    fn kernel_matches_the_core_on_random_settings(
        n in 2usize..10000,
        k in 1usize..21,
        log_tau in -4.0f64..3.0,
        alpha in 0.0f64..10.0,
        log_scale in -3.0f64..5.0,
        batch in 1usize..5,
        seed in any::<u64>(),
        plan in 0usize..KernelPlan::ALL.len(),
    ) {
        let plan = KernelPlan::ALL[plan];
        let _pin = pin(Some(plan));
        let k = k.min(n - 1);
        let tau = 10f64.powf(log_tau);
        let loss: AnyLoss = SmoothTopkSvm::new(k, tau, alpha).unwrap().into();
        let x = scores(batch * n, seed, 10f64.powf(log_scale));
        let y = labels(batch, n, seed % 1_000_000);
        let (le, ge, non_finite) = op_against_core(&x, &y, n, loss, &device());
        prop_assert!(
            non_finite == 0 && le <= 1e-5 && ge <= 1e-5,
            "{} n={} k={} tau={:e} alpha={}: loss {:e} grad {:e}",
            plan.name(), n, k, tau, alpha, le, ge
        );
    }
}
