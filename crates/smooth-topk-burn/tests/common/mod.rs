//! Helpers shared by this crate's tests and its `gpu_check` example (which includes this file
//! by path): deterministic data without an extra crate, and the error measures of the
//! acceptance bar.
#![allow(dead_code)]

use burn::backend::Dispatch;
use burn::tensor::{Device, Int, Tensor, TensorData};
use smooth_topk::{AnyLoss, Loss};
use smooth_topk_burn::TopkLossBackend;

/// Per-sample losses and gradients of `batch x n` rows, through the burn op on `device`.
pub fn op_loss_and_grad(
    scores: &[f32],
    labels: &[i64],
    n: usize,
    loss: AnyLoss,
    device: &Device,
) -> (Vec<f32>, Vec<f32>) {
    let batch = labels.len();
    let x = Tensor::<2>::from_data(TensorData::new(scores.to_vec(), [batch, n]), device);
    op_loss_and_grad_of(x, labels, loss, device)
}

/// [`op_loss_and_grad`] of a batch already on `device`, in whatever layout it has.
pub fn op_loss_and_grad_of(
    x: Tensor<2>,
    labels: &[i64],
    loss: AnyLoss,
    device: &Device,
) -> (Vec<f32>, Vec<f32>) {
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels.to_vec(), [labels.len()]), device);
    let (l, g) = <Dispatch as TopkLossBackend>::topk_loss_and_grad(
        x.into_dispatch(),
        y.into_dispatch(),
        loss,
    );
    let l = Tensor::<1>::from_dispatch(l)
        .into_data()
        .try_to_vec_as::<f32>()
        .unwrap();
    let g = Tensor::<2>::from_dispatch(g)
        .into_data()
        .try_to_vec_as::<f32>()
        .unwrap();
    (l, g)
}

/// Per-sample losses alone (the forward-only launch), through the burn op on `device`.
pub fn op_loss(
    scores: &[f32],
    labels: &[i64],
    n: usize,
    loss: AnyLoss,
    device: &Device,
) -> Vec<f32> {
    let batch = labels.len();
    let x = Tensor::<2>::from_data(TensorData::new(scores.to_vec(), [batch, n]), device);
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels.to_vec(), [batch]), device);
    let l = <Dispatch as TopkLossBackend>::topk_loss(x.into_dispatch(), y.into_dispatch(), loss);
    Tensor::<1>::from_dispatch(l)
        .into_data()
        .try_to_vec_as::<f32>()
        .unwrap()
}

/// `errors` of device results `(losses, grad)` against the core in f64 on the same f32 scores.
pub fn errors_against_core(
    scores: &[f32],
    labels: &[i64],
    n: usize,
    loss: AnyLoss,
    got: &(Vec<f32>, Vec<f32>),
) -> (f64, f64, usize) {
    let batch = labels.len();
    let s64: Vec<f64> = scores.iter().map(|&v| f64::from(v)).collect();
    let yu: Vec<usize> = labels.iter().map(|&v| v as usize).collect();
    let (mut wl, mut wg) = (vec![0f64; batch], vec![0f64; batch * n]);
    loss.loss_and_grad_per_sample(&s64, &yu, n, &mut wl, &mut wg)
        .unwrap();
    errors(n, &got.0, &got.1, &wl, &wg)
}

/// The fused op on `device` against the core, asserting that every value is finite and that the
/// forward-only launch gives the fused launch's losses bit for bit: (loss, gradient) errors.
pub fn checked_errors(
    scores: &[f32],
    labels: &[i64],
    n: usize,
    loss: AnyLoss,
    device: &Device,
    what: &str,
) -> (f64, f64) {
    let fused = op_loss_and_grad(scores, labels, n, loss.clone(), device);
    let (loss_err, grad_err, non_finite) =
        errors_against_core(scores, labels, n, loss.clone(), &fused);
    assert_eq!(non_finite, 0, "{what}: non-finite values");
    assert_eq!(
        op_loss(scores, labels, n, loss, device),
        fused.0,
        "{what}: forward-only and fused launches agree"
    );
    (loss_err, grad_err)
}

/// The burn op on `device` against the core: [`errors_against_core`] of its results.
pub fn op_against_core(
    scores: &[f32],
    labels: &[i64],
    n: usize,
    loss: AnyLoss,
    device: &Device,
) -> (f64, f64, usize) {
    let got = op_loss_and_grad(scores, labels, n, loss.clone(), device);
    errors_against_core(scores, labels, n, loss, &got)
}

/// Deterministic pseudo-random scores, roughly N(0, scale^2) (a sum of four SplitMix64
/// uniforms).
pub fn scores(len: usize, seed: u64, scale: f64) -> Vec<f32> {
    let mut state = seed;
    let mut uniform = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..len)
        .map(|_| (scale * ((0..4).map(|_| uniform()).sum::<f64>() - 2.0) * 1.7) as f32)
        .collect()
}

/// Labels spread over the classes.
pub fn labels(batch: usize, n: usize, seed: u64) -> Vec<i64> {
    (0..batch)
        .map(|b| ((b as u64 * 7919 + seed * 31) % n as u64) as i64)
        .collect()
}

/// f32 results against f64 references on `batch x n` rows: the largest loss error relative to
/// `max(|L|, 1e-30)`, the largest per-row gradient error `max|g - g*| / max|g*|`, and the number
/// of non-finite outputs. Gradient entries below f32's smallest normal number cannot be
/// represented (GPUs flush subnormals), so that much absolute error is forgiven.
pub fn errors(
    n: usize,
    losses: &[f32],
    grad: &[f32],
    want_losses: &[f64],
    want_grad: &[f64],
) -> (f64, f64, usize) {
    let mut loss_err = 0f64;
    let mut grad_err = 0f64;
    let mut non_finite = 0;
    for (b, (&l, &w)) in losses.iter().zip(want_losses).enumerate() {
        non_finite += usize::from(!l.is_finite());
        loss_err = loss_err.max((f64::from(l) - w).abs() / w.abs().max(1e-30));
        let (row, want) = (&grad[b * n..(b + 1) * n], &want_grad[b * n..(b + 1) * n]);
        non_finite += row.iter().filter(|v| !v.is_finite()).count();
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        let diff = row
            .iter()
            .zip(want)
            .fold(0f64, |m, (a, w)| m.max((f64::from(*a) - w).abs()));
        let diff = (diff - f64::from(f32::MIN_POSITIVE)).max(0.0);
        if scale > 0.0 {
            grad_err = grad_err.max(diff / scale);
        }
    }
    (loss_err, grad_err, non_finite)
}

/// Rows that push the kernel's accuracy, `batch x n` from `scores(.., scale)`, for the smooth
/// top-k SVM with margin `alpha = 1`:
/// - `Hostile::TinyLoss`: the label placed `k (1 + t tau)` above the k-th largest other score,
///   `t = 8 + 8 b` in row `b`, so that `ln r` is about `-t` and the loss about `tau exp(-t)`.
///   Every absolute error of `ln r` is then a relative error of the loss and of the gradient
///   row, and `ln r` is a difference of terms of size `1 / tau`.
/// - `Hostile::TiesAndOutlier`: scores rounded to multiples of `scale / 3` (exact ties) and one
///   class `40 scale` above the rest: with a small tau, the top-k boundary lies millions of
///   `k tau` below the maximum.
#[derive(Clone, Copy, Debug)]
pub enum Hostile {
    TinyLoss,
    TiesAndOutlier,
}

#[allow(clippy::too_many_arguments)]
pub fn hostile_rows(
    kind: Hostile,
    n: usize,
    batch: usize,
    seed: u64,
    scale: f64,
    k: usize,
    tau: f64,
) -> (Vec<f32>, Vec<i64>) {
    let mut x = scores(batch * n, seed, scale);
    let y = labels(batch, n, seed);
    for (b, row) in x.chunks_mut(n).enumerate() {
        match kind {
            Hostile::TinyLoss => {
                let label = y[b] as usize;
                let mut others: Vec<f32> = (0..n).filter(|&i| i != label).map(|i| row[i]).collect();
                others.sort_by(|a, b| b.total_cmp(a));
                let t = 8.0 + 8.0 * b as f64;
                row[label] = (f64::from(others[k - 1]) + k as f64 * (1.0 + t * tau)) as f32;
            }
            Hostile::TiesAndOutlier => {
                let step = (scale / 3.0) as f32;
                for v in row.iter_mut() {
                    *v = (*v / step).round() * step;
                }
                row[(b * 5) % n] += 40.0 * scale as f32;
            }
        }
    }
    (x, y)
}

/// One cell of the harsh-row grid: its setting and its rows.
pub struct HostileCase {
    pub kind: Hostile,
    pub n: usize,
    pub k: usize,
    pub tau: f64,
    pub scale: f64,
    pub scores: Vec<f32>,
    pub labels: Vec<i64>,
}

/// The harsh-row grid shared by the CI test and `gpu_check`: for each n of `ns`, k in
/// {1, 2, 5, 10} below n, tau in {1e-3, 0.1, 100}, scale in {1, 1e5} and both kinds, 8 rows of
/// [`hostile_rows`] (seeds 1, 2, ... in that order, so a grid's common cells are the same rows).
pub fn hostile_grid(ns: &[usize]) -> impl Iterator<Item = HostileCase> + '_ {
    let kinds = [Hostile::TinyLoss, Hostile::TiesAndOutlier];
    ns.iter()
        .flat_map(|&n| [1usize, 2, 5, 10].into_iter().map(move |k| (n, k)))
        .filter(|&(n, k)| k < n)
        .flat_map(|(n, k)| [1e-3, 0.1, 100.0].into_iter().map(move |tau| (n, k, tau)))
        .flat_map(|(n, k, tau)| [1.0, 1e5].into_iter().map(move |scale| (n, k, tau, scale)))
        .flat_map(move |(n, k, tau, scale)| {
            kinds.into_iter().map(move |kind| (n, k, tau, scale, kind))
        })
        .zip(1u64..)
        .map(|((n, k, tau, scale, kind), seed)| {
            let (scores, labels) = hostile_rows(kind, n, 8, seed, scale, k, tau);
            HostileCase {
                kind,
                n,
                k,
                tau,
                scale,
                scores,
                labels,
            }
        })
}

/// Rows for the smooth top-k SVM with `k`, tau = 1 and alpha = 1.
pub struct Layout {
    pub name: &'static str,
    pub n: usize,
    pub k: usize,
    pub scores: Vec<f32>,
    pub labels: Vec<i64>,
}

/// Layouts aimed at the smooth kernel's bookkeeping rather than its arithmetic.
pub fn adversarial_layouts() -> Vec<Layout> {
    // k = 18 of n = 34 equal scores: every one of the 33 non-label classes fails the upward
    // recursion's stability test (P_17 = 17/33 > 1/2), more than the 32 units of the cube.
    let equal = Layout {
        name: "33 unstable classes",
        n: 34,
        k: 18,
        scores: vec![0.0; 2 * 34],
        labels: vec![0, 7],
    };
    // 100 classes at score 0 that all fall to one unit of the 256-unit cube (indices 256 t), a
    // lone maximum 101 above them and the label near it: on the way up the tree that unit's
    // coefficient d is rescaled by exp(-101 / 12)^d, whose powers leave f32's normal range
    // while the rescaled coefficients do not.
    let n = 25_600;
    let mut x = vec![-10_000.0f32; n];
    for t in 0..100 {
        x[256 * t] = 0.0;
    }
    x[1] = 101.0;
    x[2] = 80.0;
    let group = Layout {
        name: "group rescaled on the way up",
        n,
        k: 12,
        scores: x,
        labels: vec![2],
    };
    vec![equal, group]
}
