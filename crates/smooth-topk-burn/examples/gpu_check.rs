//! Device check of the fused CubeCL kernel, in one run:
//! (a) loss and gradient against the CPU numeric core over n, k, tau and score scales;
//!     (through the autotuner's choices, then under each launch plan pinned);
//! (b) median time per call, with warm-up and device synchronisation, for n in
//!     {100, 1000, 10000, 100000} and batch in {256, 4096} (the autotuner's choices), and with
//!     `--plans`, under each launch plan pinned at the acceptance shapes.
//! PyTorch's cross-entropy on the same shapes is timed by `scripts/torch_ce_bench.py`;
//! `scripts/gpu_check.sh` runs both.
//!
//! `cargo run --release -p smooth-topk-burn --features wgpu --example gpu_check [-- FLAGS]`
//! Flags: `--quick` (n = 1000 only), `--no-sweep` (timings only), `--no-timing` (accuracy only),
//! `--targets` (timings at the acceptance shapes only: n in {1000, 10000}), `--warm-up S`
//! (seconds of GPU work before the timings, default 2), `--plans` (the per-plan timings),
//! `--cuda` (the first CUDA device instead of wgpu's default adapter; needs feature `cuda`).

use burn::backend::Dispatch;
use burn::tensor::{Device, DeviceKind, Distribution, Int, Tensor, TensorData};
use smooth_topk::{AnyLoss, CrossEntropy, HardTopkSvm, SmoothTopkSvm};
use smooth_topk_burn::{pinned_plan_fallbacks, set_kernel_plan, KernelPlan, TopkLossBackend};
use std::time::Instant;

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/timing.rs"]
mod timing;

/// SplitMix64 into a standard normal (Box-Muller): deterministic host data for the sweep.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * self.uniform()).cos()
    }
}

/// The running worst error after one more check (infinite once anything was not finite).
fn worse(worst: f64, (loss_err, grad_err, non_finite): (f64, f64, usize)) -> f64 {
    if non_finite > 0 {
        f64::INFINITY
    } else {
        worst.max(loss_err).max(grad_err)
    }
}

fn accuracy_sweep(device: &Device, quick: bool) -> f64 {
    println!("== accuracy: kernel (f32) against the CPU core (f64 on the same f32 scores) ==");
    println!(
        "{:>7} {:>3} {:>6} {:>7} {:>6} {:>12} {:>12} {:>10}",
        "n", "k", "tau", "scale", "batch", "loss err", "grad err", "non-finite"
    );
    let mut rng = Rng(7);
    let mut worst = 0f64;
    let ns: &[usize] = if quick {
        &[10, 1000]
    } else {
        &[10, 100, 1000, 10000, 100000]
    };
    for &n in ns {
        for &k in &[1usize, 2, 5, 10] {
            if k >= n {
                continue;
            }
            for &tau in &[0.1, 1.0, 10.0] {
                for &scale in &[0.1, 1.0, 10.0, 100.0] {
                    let batch = (200_000 / n).clamp(2, 16);
                    let scores: Vec<f32> = (0..batch * n)
                        .map(|_| (scale * rng.normal()) as f32)
                        .collect();
                    let labels: Vec<i64> = (0..batch)
                        .map(|_| (rng.uniform() * n as f64) as i64)
                        .collect();
                    let loss: AnyLoss = SmoothTopkSvm::new(k, tau, 1.0).unwrap().into();
                    let (le, ge, bad) = common::op_against_core(&scores, &labels, n, loss, device);
                    worst = worse(worst, (le, ge, bad));
                    println!("{n:>7} {k:>3} {tau:>6} {scale:>7} {batch:>6} {le:>12.2e} {ge:>12.2e} {bad:>10}");
                }
            }
        }
    }
    // Cross-entropy through the same kernel, and the hard SVM's kernel (integer scores: ties).
    let (n, batch) = (1000, 16);
    let normal: Vec<f32> = (0..batch * n)
        .map(|_| (3.0 * rng.normal()) as f32)
        .collect();
    let ties: Vec<f32> = normal.iter().map(|v| v.round()).collect();
    let labels: Vec<i64> = (0..batch)
        .map(|_| (rng.uniform() * n as f64) as i64)
        .collect();
    let others: [(&str, AnyLoss, &[f32]); 2] = [
        ("cross-entropy", CrossEntropy.into(), &normal),
        (
            "hard top-5 SVM, tied scores",
            HardTopkSvm::new(5, 1.0).unwrap().into(),
            &ties,
        ),
    ];
    for (name, loss, scores) in others {
        let (le, ge, bad) = common::op_against_core(scores, &labels, n, loss, device);
        println!("{name} n={n}: loss err {le:.2e}, grad err {ge:.2e}, non-finite {bad}");
        worst = worse(worst, (le, ge, bad));
    }
    // Rows built to defeat f32 shortcuts (see `common::hostile_rows`), as in the CI test.
    let mut hostile_worst = 0f64;
    for case in common::hostile_grid(&[3, 11, 300, 10_000]) {
        let (kind, n, k, tau, scale) = (case.kind, case.n, case.k, case.tau, case.scale);
        let loss: AnyLoss = SmoothTopkSvm::new(k, tau, 1.0).unwrap().into();
        let (le, ge, bad) = common::op_against_core(&case.scores, &case.labels, n, loss, device);
        if le.max(ge) > 2e-6 || bad > 0 {
            println!("hostile {kind:?} n={n} k={k} tau={tau} scale={scale}: loss err {le:.2e}, grad err {ge:.2e}, non-finite {bad}");
        }
        hostile_worst = worse(hostile_worst, (le, ge, bad));
    }
    println!("hostile rows (TinyLoss, TiesAndOutlier; n 3..1e4, k 1..10, tau 1e-3..100, scale 1, 1e5): max error {hostile_worst:.2e}");
    for common::Layout {
        name,
        n,
        k,
        scores,
        labels,
    } in common::adversarial_layouts()
    {
        let loss: AnyLoss = SmoothTopkSvm::new(k, 1.0, 1.0).unwrap().into();
        let (le, ge, bad) = common::op_against_core(&scores, &labels, n, loss, device);
        println!("{name} (n={n}, k={k}): loss err {le:.2e}, grad err {ge:.2e}, non-finite {bad}");
        worst = worse(worst, (le, ge, bad));
    }
    worst = worst.max(hostile_worst);
    worst = worst.max(plans_sweep(device));
    println!("max error over the sweep: {worst:.2e}");
    worst
}

/// Median ms of `reps` calls of `f` with a device synchronisation after each (see `timing`).
fn median_ms(device: &Device, reps: usize, f: impl FnMut()) -> f64 {
    timing::median_ms(reps, f, || device.sync().unwrap())
}

/// Keeps the GPU busy for `seconds` before anything is timed. The accuracy sweep before the
/// timings leaves the GPU idle (the f64 reference runs on the host), and a GPU fresh from idle
/// ran the same calls up to 2.8x slower for tens of seconds on the H200 (BENCHMARKS.md,
/// 2026-11-27 third session), so `scripts/gpu_check.sh` asks for 20 s before its first round.
/// `scripts/torch_ce_bench.py` warms up too.
fn warm_up(device: &Device, seconds: f64) {
    let x = Tensor::<2>::random([4096, 10000], Distribution::Normal(0.0, 1.0), device);
    let y = Tensor::<1, Int>::random([4096], Distribution::Uniform(0.0, 10000.0), device);
    let svm: AnyLoss = SmoothTopkSvm::new(5, 1.0, 1.0).unwrap().into();
    // Pinned, so that the autotuner meets this shape (one of the timed ones) after the warm-up
    // rather than in the slow period the warm-up is there to absorb.
    set_kernel_plan(Some(KernelPlan::ALL[0]));
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds {
        for _ in 0..10 {
            drop(<Dispatch as TopkLossBackend>::topk_loss_and_grad(
                x.clone().into_dispatch(),
                y.clone().into_dispatch(),
                svm,
            ));
        }
        device.sync().unwrap();
    }
    set_kernel_plan(None);
}

/// Median ms of the fused loss-and-gradient call (see [`median_ms`]).
fn fused_ms(device: &Device, reps: usize, x: &Tensor<2>, y: &Tensor<1, Int>, loss: AnyLoss) -> f64 {
    median_ms(device, reps, || {
        let out = <Dispatch as TopkLossBackend>::topk_loss_and_grad(
            x.clone().into_dispatch(),
            y.clone().into_dispatch(),
            loss,
        );
        drop(out);
    })
}

/// The per-call floor: median ms of the fused call on a [1, 10] batch, whose kernels do next to
/// nothing, so what remains is host dispatch, submission and synchronisation.
fn floor_ms(device: &Device, loss: AnyLoss) -> f64 {
    let tiny_x = Tensor::<2>::random([1, 10], Distribution::Normal(0.0, 1.0), device);
    let tiny_y = Tensor::<1, Int>::from_data(TensorData::new(vec![3i64], [1]), device);
    fused_ms(device, 100, &tiny_x, &tiny_y, loss)
}

/// Loss and gradient under each pinned launch plan against the core: the autotuner may pick
/// any of them, and the main sweep only sees its choices.
fn plans_sweep(device: &Device) -> f64 {
    let mut rng = Rng(11);
    let mut worst = 0f64;
    for plan in KernelPlan::ALL {
        set_kernel_plan(Some(plan));
        let mut plan_worst = 0f64;
        for &n in &[10usize, 1000, 10000] {
            for &k in &[1usize, 5, 10] {
                if k >= n {
                    continue;
                }
                for &(tau, scale) in &[(1.0, 1.0), (0.1, 10.0), (0.05, 100.0)] {
                    let batch = 4;
                    let scores: Vec<f32> = (0..batch * n)
                        .map(|_| (scale * rng.normal()) as f32)
                        .collect();
                    let labels = common::labels(batch, n, n as u64 + k as u64);
                    let loss: AnyLoss = SmoothTopkSvm::new(k, tau, 1.0).unwrap().into();
                    let errors = common::op_against_core(&scores, &labels, n, loss, device);
                    plan_worst = worse(plan_worst, errors);
                }
            }
        }
        for case in common::hostile_grid(&[3, 300]) {
            let loss: AnyLoss = SmoothTopkSvm::new(case.k, case.tau, 1.0).unwrap().into();
            let (x, y, n) = (&case.scores, &case.labels, case.n);
            plan_worst = worse(plan_worst, common::op_against_core(x, y, n, loss, device));
        }
        println!("plan {}: max error {plan_worst:.2e}", plan.name());
        worst = worst.max(plan_worst);
    }
    set_kernel_plan(None);
    worst
}

/// Forward + backward under each pinned launch plan at the acceptance shapes (a plan the device
/// cannot take for a shape runs as the first plan, two launches, and is marked so).
fn plan_timings(device: &Device, rt: &str, quick: bool) {
    println!("== timing per launch plan (pinned): median ms of fwd+bwd, k = 5 as above, and CE ==");
    println!(
        "{:>7} {:>6} {:>20} {:>12} {:>12}",
        "n", "batch", "plan", "svm f+b", "ce f+b"
    );
    let svm: AnyLoss = SmoothTopkSvm::new(5, 1.0, 1.0).unwrap().into();
    let ce: AnyLoss = CrossEntropy.into();
    // The per-call floor of each plan: launches and their dispatch.
    for plan in KernelPlan::ALL {
        set_kernel_plan(Some(plan));
        let floor = floor_ms(device, svm);
        println!("{:>7} {:>6} {:>20} {floor:>12.4}", 10, 1, plan.name());
    }
    let shapes: &[(usize, usize)] = if quick {
        &[(1000, 256)]
    } else {
        &[(1000, 256), (1000, 4096), (10000, 256), (10000, 4096)]
    };
    for &(n, batch) in shapes {
        let x = Tensor::<2>::random([batch, n], Distribution::Normal(0.0, 1.0), device);
        let y = Tensor::<1, Int>::random([batch], Distribution::Uniform(0.0, n as f64), device);
        for plan in KernelPlan::ALL {
            set_kernel_plan(Some(plan));
            let before = pinned_plan_fallbacks();
            let svm_ms = fused_ms(device, 50, &x, &y, svm);
            // The plan does not fit this shape here: the first plan ran instead.
            let fell_back = pinned_plan_fallbacks() != before;
            let ce_ms = fused_ms(device, 50, &x, &y, ce);
            let name = plan.name();
            let note = if fell_back {
                "  (does not fit: ran two-launches)"
            } else {
                ""
            };
            println!("{n:>7} {batch:>6} {name:>20} {svm_ms:>12.4} {ce_ms:>12.4}{note}");
            println!(
                "JSON {{\"impl\":\"smooth-topk-cubecl-plan\",\"runtime\":\"{rt}\",\"plan\":\"{name}\",\"fell_back\":{fell_back},\"n\":{n},\"batch\":{batch},\"svm_forward_backward_ms\":{svm_ms},\"ce_forward_backward_ms\":{ce_ms}}}"
            );
        }
    }
    set_kernel_plan(None);
}

fn timings(device: &Device, rt: &str, quick: bool, targets_only: bool, warm_up_s: f64) {
    warm_up(device, warm_up_s);
    // Subtract the floor to compare kernel work across runtimes (PyTorch's floor is printed by
    // torch_ce_bench.py).
    let floor = floor_ms(device, SmoothTopkSvm::new(5, 1.0, 1.0).unwrap().into());
    println!("per-call floor (svm fwd+bwd on [1, 10]): {floor:.4} ms");
    println!("JSON {{\"impl\":\"smooth-topk-cubecl\",\"runtime\":\"{rt}\",\"floor_forward_backward_ms\":{floor}}}");
    println!("== timing: median ms per call (device synchronised), k = 5, tau = 1, alpha = 1, scores ~ N(0, 1) ==");
    println!("   (\"svm ext\": tau = 0.05 on scores ~ N(0, 10^2), where every row takes the extended path)");
    println!(
        "{:>7} {:>6} {:>12} {:>14} {:>14} {:>14} {:>14}",
        "n", "batch", "svm fwd", "svm fwd+bwd", "ce fwd+bwd", "hard fwd+bwd", "svm ext f+b"
    );
    let ns: &[usize] = if quick {
        &[1000]
    } else if targets_only {
        &[1000, 10000]
    } else {
        &[100, 1000, 10000, 100000]
    };
    for &n in ns {
        for &batch in &[256usize, 4096] {
            let x = Tensor::<2>::random([batch, n], Distribution::Normal(0.0, 1.0), device);
            let y = Tensor::<1, Int>::random([batch], Distribution::Uniform(0.0, n as f64), device);
            let svm: AnyLoss = SmoothTopkSvm::new(5, 1.0, 1.0).unwrap().into();
            let ce: AnyLoss = CrossEntropy.into();
            let hard: AnyLoss = HardTopkSvm::new(5, 1.0).unwrap().into();
            let reps = if batch * n >= 100_000_000 { 20 } else { 50 };
            let fwd = median_ms(device, reps, || {
                let l = <Dispatch as TopkLossBackend>::topk_loss(
                    x.clone().into_dispatch(),
                    y.clone().into_dispatch(),
                    svm,
                );
                drop(l);
            });
            let both = |scores: &Tensor<2>, loss: AnyLoss| fused_ms(device, reps, scores, &y, loss);
            let (svm_both, ce_both, hard_both) = (both(&x, svm), both(&x, ce), both(&x, hard));
            let sharp: AnyLoss = SmoothTopkSvm::new(5, 0.05, 1.0).unwrap().into();
            let ext_both = both(&(x.clone() * 10.0), sharp);
            println!(
                "{n:>7} {batch:>6} {fwd:>12.4} {svm_both:>14.4} {ce_both:>14.4} {hard_both:>14.4} {ext_both:>14.4}"
            );
            println!(
                "JSON {{\"impl\":\"smooth-topk-cubecl\",\"runtime\":\"{rt}\",\"n\":{n},\"batch\":{batch},\"svm_forward_ms\":{fwd},\"svm_forward_backward_ms\":{svm_both},\"ce_forward_backward_ms\":{ce_both},\"hard_forward_backward_ms\":{hard_both},\"svm_extended_forward_backward_ms\":{ext_both}}}"
            );
        }
    }
}

#[cfg(feature = "cuda")]
fn cuda_device() -> Device {
    Device::cuda(0)
}

#[cfg(not(feature = "cuda"))]
fn cuda_device() -> Device {
    eprintln!("gpu_check: --cuda needs a build with feature cuda (or cuda-nvrtc)");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let quick = flag("--quick");
    let (device, runtime) = if flag("--cuda") {
        (cuda_device(), "cuda")
    } else {
        (Device::wgpu(DeviceKind::DefaultDevice), "wgpu")
    };
    // Named in the timings' JSON lines: `scripts/gpu_compare.py` groups by it.
    println!("runtime: {runtime}");
    let mut worst = 0.0;
    if !flag("--no-sweep") {
        let t = Instant::now();
        worst = accuracy_sweep(&device, quick);
        println!("accuracy sweep took {:.1} s", t.elapsed().as_secs_f64());
    }
    if !flag("--no-timing") {
        let warm_up_s = args
            .iter()
            .position(|a| a == "--warm-up")
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(2.0);
        timings(&device, runtime, quick, flag("--targets"), warm_up_s);
        if flag("--plans") {
            plan_timings(&device, runtime, quick);
        }
    }
    if worst > 1e-5 {
        eprintln!("FAILED: max error {worst:.2e} exceeds 1e-5");
        std::process::exit(1);
    }
}
