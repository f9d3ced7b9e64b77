//! Every launch plan of the smooth kernel (`KernelPlan`), pinned one at a time, against the
//! numeric core on the wgpu adapter (lavapipe on a CPU-only machine), after the autotuner's
//! choice. A pin holds for the whole process, so this file is its own test binary.
//! Runs with `cargo test --release -p smooth-topk-burn --features wgpu --test cube_plans`.
#![cfg(feature = "wgpu")]

mod common;

use burn::tensor::{Device, DeviceKind};
use common::{adversarial_layouts, hostile_grid, labels, op_against_core, scores};
use smooth_topk::{AnyLoss, CrossEntropy, SmoothTopkSvm};
use smooth_topk_burn::{set_kernel_plan, KernelPlan};

/// The worst (loss, gradient) error of the pinned plan over random rows, harsh rows and
/// adversarial layouts; panics on a non-finite value.
fn worst_error(device: &Device) -> (f64, f64) {
    let mut worst = (0f64, 0f64);
    let mut record = |(le, ge, non_finite): (f64, f64, usize), what: String| {
        assert_eq!(non_finite, 0, "{what}: non-finite values");
        assert!(le <= 1e-5 && ge <= 1e-5, "{what}: loss {le:e} grad {ge:e}");
        worst = (worst.0.max(le), worst.1.max(ge));
    };
    // Row lengths on both sides of the cube sizes and of the kept scores per unit.
    for &(n, batch) in &[(2usize, 3usize), (7, 5), (100, 6), (1000, 3), (5000, 2)] {
        for &k in &[1usize, 2, 5] {
            if k >= n {
                continue;
            }
            for &(tau, scale) in &[(1.0, 1.0), (0.1, 3.0), (0.05, 10.0)] {
                let loss: AnyLoss = SmoothTopkSvm::new(k, tau, 1.0).unwrap().into();
                let seed = (n * 31 + k) as u64;
                let x = scores(batch * n, seed, scale);
                let y = labels(batch, n, seed);
                let what = format!("n={n} k={k} tau={tau} scale={scale}");
                record(op_against_core(&x, &y, n, loss, device), what);
            }
        }
    }
    let ce: AnyLoss = CrossEntropy.into();
    let (x, y) = (scores(4 * 1000, 5, 4.0), labels(4, 1000, 5));
    record(
        op_against_core(&x, &y, 1000, ce, device),
        "cross-entropy".into(),
    );
    for case in hostile_grid(&[3, 300]) {
        let loss: AnyLoss = SmoothTopkSvm::new(case.k, case.tau, 1.0).unwrap().into();
        let what = format!("{:?} n={} k={} tau={}", case.kind, case.n, case.k, case.tau);
        record(
            op_against_core(&case.scores, &case.labels, case.n, loss, device),
            what,
        );
    }
    for layout in adversarial_layouts() {
        let loss: AnyLoss = SmoothTopkSvm::new(layout.k, 1.0, 1.0).unwrap().into();
        let got = op_against_core(&layout.scores, &layout.labels, layout.n, loss, device);
        record(got, layout.name.to_string());
    }
    worst
}

/// One test, so that the pins follow each other: first the autotuner (no pin), then each plan.
#[test]
fn the_autotuner_and_every_plan_match_the_core() {
    let device = Device::wgpu(DeviceKind::DefaultDevice);
    set_kernel_plan(None);
    // A few shapes through the autotuner: each new key times every plan that fits, then runs
    // the fastest; a second call with the same key reuses the choice.
    for &(n, batch, k) in &[
        (10usize, 3usize, 2usize),
        (1000, 4, 5),
        (1000, 4, 5),
        (5000, 2, 1),
    ] {
        let loss: AnyLoss = SmoothTopkSvm::new(k, 0.5, 1.0).unwrap().into();
        let (x, y) = (scores(batch * n, 77, 5.0), labels(batch, n, 77));
        let (le, ge, non_finite) = op_against_core(&x, &y, n, loss, &device);
        assert!(
            non_finite == 0 && le <= 1e-5 && ge <= 1e-5,
            "autotuned n={n}: {le:e} {ge:e}"
        );
    }
    for plan in KernelPlan::ALL {
        set_kernel_plan(Some(plan));
        let (le, ge) = worst_error(&device);
        eprintln!("{}: max error loss {le:e}, grad {ge:e}", plan.name());
    }
    set_kernel_plan(None);
}
