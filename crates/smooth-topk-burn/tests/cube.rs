//! The fused CubeCL kernel against the numeric core, on whatever wgpu adapter the machine has
//! (Mesa's lavapipe software Vulkan on a CPU-only machine: `apt-get install mesa-vulkan-drivers`).
//! Runs with `cargo test --release -p smooth-topk-burn --features wgpu --test cube`.
#![cfg(feature = "wgpu")]

mod common;

use burn::backend::ops::{FloatTensorOps, IntTensorOps};
use burn::tensor::{read_sync, Slice};
use burn::tensor::{Device, DeviceKind, Int, Tensor, TensorData};
use burn_cubecl::{CubeBackend, CubeDevice};
use common::{
    adversarial_layouts, checked_errors, errors_against_core, hostile_grid, op_loss_and_grad_of,
    scores,
};
use smooth_topk::{AnyLoss, CrossEntropy, HardTopkSvm, SmoothTopkSvm};
use smooth_topk_burn::{set_kernel_plan, KernelPlan, SmoothTopkSvmLossConfig, TopkLossBackend};

/// The wgpu device, with the smooth kernel pinned to its first plan (two launches). Every plan
/// computes the same values and `tests/cube_plans.rs` checks each one (with the property test
/// over random settings) and the autotuner; pinned, each new row length or k here compiles one
/// kernel shape instead of all of them (on lavapipe, compiling dominates these tests). Every
/// test pins the same plan, so they can run at once.
fn device() -> Device {
    set_kernel_plan(Some(KernelPlan::ALL[0]));
    Device::wgpu(DeviceKind::DefaultDevice)
}

/// Rows of small noise with one score 50 above the rest; labels cycle through the classes.
fn spiked(n: usize, batch: usize) -> (Vec<f32>, Vec<i64>) {
    let mut x = scores(batch * n, 99, 0.5);
    for b in 0..batch {
        x[b * n + (b * 3) % n] += 50.0;
    }
    (x, (0..batch).map(|b| (b * 5 % n) as i64).collect())
}

fn check(
    device: &Device,
    n: usize,
    batch: usize,
    loss: AnyLoss,
    scale: f64,
    seed: u64,
) -> (f64, f64) {
    let x = scores(batch * n, seed, scale);
    let y = (0..batch)
        .map(|b| ((b * 7919 + seed as usize) % n) as i64)
        .collect();
    check_rows(device, n, &(x, y), loss)
}

/// Kernel against the core on given rows: (max loss error, max gradient error).
fn check_rows(device: &Device, n: usize, rows: &(Vec<f32>, Vec<i64>), loss: AnyLoss) -> (f64, f64) {
    let what = format!("n={n} {loss:?}");
    checked_errors(&rows.0, &rows.1, n, loss, device, &what)
}

#[test]
fn kernel_matches_the_core_on_the_wgpu_adapter() {
    let device = device();
    let mut worst = (0f64, 0f64);
    for &(n, batch) in &[(2usize, 3usize), (7, 5), (100, 6), (1000, 3)] {
        for &k in &[1usize, 2, 5] {
            if k >= n {
                continue;
            }
            for &(tau, scale) in &[(1.0, 1.0), (0.1, 3.0), (5.0, 20.0)] {
                let loss: AnyLoss = SmoothTopkSvm::new(k, tau, 1.0).unwrap().into();
                let (le, ge) = check(&device, n, batch, loss, scale, (n * 13 + k) as u64);
                assert!(
                    le <= 1e-5 && ge <= 1e-5,
                    "n={n} k={k} tau={tau}: loss {le:e} grad {ge:e}"
                );
                worst = (worst.0.max(le), worst.1.max(ge));
            }
        }
    }
    // A spike 50 above the rest with tau = 0.1: sigma_k ~ exp(-330) is far outside f32, so the
    // kernel takes its extended path (pivot on the top-k boundary), held to the same bar.
    let loss: AnyLoss = SmoothTopkSvm::new(3, 0.1, 1.0).unwrap().into();
    let (le, ge) = check_rows(&device, 40, &spiked(40, 4), loss);
    assert!(le <= 1e-5 && ge <= 1e-5, "extended path: {le:e} {ge:e}");
    // sigma_10 of 10^4 similar weights is ~1e33: past the linear path's range by binomial growth.
    let loss: AnyLoss = SmoothTopkSvm::new(10, 1.0, 1.0).unwrap().into();
    let (le, ge) = check(&device, 10_000, 2, loss, 0.1, 17);
    assert!(le <= 1e-5 && ge <= 1e-5, "binomial overflow: {le:e} {ge:e}");
    // k = n - 1 makes every class "unstable" for the upward recursion: the exact path.
    let loss: AnyLoss = SmoothTopkSvm::new(9, 1.0, 1.0).unwrap().into();
    let (le, ge) = check(&device, 10, 4, loss, 1.0, 3);
    assert!(le <= 1e-5 && ge <= 1e-5, "k = n - 1: {le:e} {ge:e}");
    let (le, ge) = check(&device, 50, 4, CrossEntropy.into(), 4.0, 5);
    assert!(le <= 1e-5 && ge <= 1e-5, "cross-entropy: {le:e} {ge:e}");
    eprintln!(
        "worst loss error {:.2e}, worst gradient error {:.2e}",
        worst.0, worst.1
    );
}

#[test]
fn kernel_holds_the_bar_on_hostile_rows() {
    let device = device();
    for case in hostile_grid(&[3, 11, 300]) {
        let loss: AnyLoss = SmoothTopkSvm::new(case.k, case.tau, 1.0).unwrap().into();
        let (le, ge) = check_rows(&device, case.n, &(case.scores, case.labels), loss);
        assert!(
            le <= 1e-5 && ge <= 1e-5,
            "{:?} n={} k={} tau={} scale={}: loss {le:e} grad {ge:e}",
            case.kind,
            case.n,
            case.k,
            case.tau,
            case.scale
        );
    }
}

/// Layouts aimed at the kernel's bookkeeping rather than its arithmetic (see
/// `common::adversarial_layouts`).
#[test]
fn kernel_holds_the_bar_on_adversarial_layouts() {
    let device = device();
    for layout in adversarial_layouts() {
        let loss: AnyLoss = SmoothTopkSvm::new(layout.k, 1.0, 1.0).unwrap().into();
        let rows = (layout.scores, layout.labels);
        let (le, ge) = check_rows(&device, layout.n, &rows, loss);
        assert!(le <= 1e-5 && ge <= 1e-5, "{}: {le:e} {ge:e}", layout.name);
    }
}

/// Batches that are views rather than packed rows, against the core on the rows the view shows,
/// for the smooth SVM, cross-entropy and the hard SVM:
/// - padded rows (a window of the first `n` columns of a wider batch, so rows lie `n + 64`
///   apart, as CUDA lays out its "pitched" 2-D tensors) are read in place: built on the cube
///   backend itself, since burn's fusion layer packs a sliced tensor before a custom op sees it;
/// - a transposed batch (through the fusion layer, as users call the op) is laid out as rows
///   first.
#[test]
fn kernels_read_strided_batches() {
    let device = device();
    let (batch, n, pad) = (6usize, 300usize, 64usize);
    let wide = scores(batch * (n + pad), 23, 2.0);
    let rows: Vec<f32> = wide
        .chunks(n + pad)
        .flat_map(|row| row[..n].iter().copied())
        .collect();
    let labels: Vec<i64> = (0..batch).map(|b| (b * 41 % n) as i64).collect();
    let losses: [AnyLoss; 3] = [
        SmoothTopkSvm::new(5, 1.0, 1.0).unwrap().into(),
        CrossEntropy.into(),
        HardTopkSvm::new(3, 1.0).unwrap().into(),
    ];
    let check = |what: &str, loss: AnyLoss, got: (Vec<f32>, Vec<f32>)| {
        let (le, ge, bad) = errors_against_core(&rows, &labels, n, loss.clone(), &got);
        assert!(
            bad == 0 && le <= 1e-5 && ge <= 1e-5,
            "{what} {loss:?}: loss {le:e} grad {ge:e}, {bad} non-finite"
        );
    };
    let cube = CubeDevice::Wgpu(Default::default());
    let read = |t| {
        read_sync(CubeBackend::float_into_data(t))
            .unwrap()
            .try_to_vec::<f32>()
            .unwrap()
    };
    let column_major: Vec<f32> = (0..n)
        .flat_map(|c| rows.iter().skip(c).step_by(n).copied())
        .collect();
    for loss in losses {
        let padded = CubeBackend::float_slice(
            CubeBackend::float_from_data(TensorData::new(wide.clone(), [batch, n + pad]), &cube),
            &[Slice::from(0..batch), Slice::from(0..n)],
        );
        assert_eq!(padded.meta.strides()[0], n + pad, "the slice is a view");
        let targets = CubeBackend::int_from_data(TensorData::new(labels.clone(), [batch]), &cube);
        let (l, g) = CubeBackend::topk_loss_and_grad(padded, targets, loss.clone());
        check("padded rows", loss.clone(), (read(l), read(g)));

        let transposed =
            Tensor::<2>::from_data(TensorData::new(column_major.clone(), [n, batch]), &device)
                .transpose();
        let got = op_loss_and_grad_of(transposed, &labels, loss.clone(), &device);
        check("transposed", loss, got);
    }
}

/// k beyond the kernels' unrolled range is computed by the core (a host round trip).
#[test]
fn k_beyond_the_kernels_goes_to_the_core() {
    let device = device();
    let loss: AnyLoss = SmoothTopkSvm::new(70, 1.0, 1.0).unwrap().into();
    let (le, ge) = check(&device, 100, 2, loss, 1.0, 70);
    assert!(le <= 1e-5 && ge <= 1e-5, "k = 70: {le:e} {ge:e}");
}

#[test]
fn hard_kernel_matches_the_core_including_ties() {
    let device = device();
    for &(n, batch) in &[(2usize, 3usize), (9, 5), (300, 4)] {
        for &k in &[1usize, 2, 5] {
            if k >= n {
                continue;
            }
            let loss: AnyLoss = HardTopkSvm::new(k, 1.0).unwrap().into();
            let (le, ge) = check(&device, n, batch, loss.clone(), 2.0, (n + k) as u64);
            assert!(le <= 1e-6 && ge <= 1e-6, "n={n} k={k}: {le:e} {ge:e}");
            // Integer scores: many exact ties at the k-th place share the subgradient.
            let x: Vec<f32> = scores(batch * n, k as u64, 1.0)
                .iter()
                .map(|v| v.round())
                .collect();
            let y = (0..batch).map(|b| (b * 7 % n) as i64).collect();
            let (le, ge) = check_rows(&device, n, &(x, y), loss);
            assert!(le <= 1e-6 && ge <= 1e-6, "ties n={n} k={k}: {le:e} {ge:e}");
        }
    }
}

#[test]
fn autodiff_training_path_runs_on_the_device() {
    let device = device().autodiff();
    let x = scores(4 * 30, 11, 2.0);
    let logits = Tensor::<2>::from_data(TensorData::new(x, [4, 30]), &device).require_grad();
    let targets = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 5, 29, 7], [4]), &device);
    let loss = SmoothTopkSvmLossConfig::new()
        .init()
        .unwrap()
        .forward(logits.clone(), targets);
    let value = loss.clone().into_data().try_to_vec_as::<f32>().unwrap()[0];
    let grad = logits
        .grad(&loss.backward())
        .unwrap()
        .into_data()
        .try_to_vec_as::<f32>()
        .unwrap();
    assert!(value.is_finite() && value > 0.0);
    // Mean reduction: each row of the gradient sums to zero, entries within 1/(k batch).
    for row in grad.chunks(30) {
        assert!(row.iter().sum::<f32>().abs() < 1e-6);
        assert!(row.iter().all(|v| v.abs() <= 1.0 / 20.0 + 1e-6));
    }
}

#[test]
fn the_other_losses_run_on_the_host_copy_of_the_batch() {
    let device = device();
    let losses: [AnyLoss; 3] = [
        smooth_topk::TruncatedTopkEntropy::new(3).unwrap().into(),
        smooth_topk::NoisedTopkHinge::balanced(3, 0.5, 4)
            .unwrap()
            .with_seed(2)
            .into(),
        smooth_topk::TopkCrossEntropy::new(&[0.5, 0.0, 0.5], 1.0, Some(10))
            .unwrap()
            .into(),
    ];
    for loss in losses {
        let what = format!("{loss:?}");
        let (le, ge) = check(&device, 50, 4, loss, 1.0, 5);
        assert!(le <= 1e-6 && ge <= 1e-6, "{what}: {le:e} {ge:e}");
    }
}
