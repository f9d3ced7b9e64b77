//! The smooth top-k SVM kernel, one cube (workgroup) per sample. It follows the numeric core's
//! algorithm (see `smooth_topk`'s `esp.rs`) on the weights `w_i = exp(x_i)`,
//! `x_i = (s_i - p) / (k tau)`, of the non-label classes, for a pivot score `p`:
//!
//! 1. Each unit multiplies the factors `(1 + w_i X)` of its strided share of the classes
//!    (truncated at degree k, in registers); a tree of polynomial products in shared memory
//!    gives `sigma_0..k`. With the maximum as pivot, `m = max_{i != y} s_i` is found in the
//!    same read: units keep their coefficients relative to a running maximum (see
//!    [`forward_with_max`]).
//! 2. `ln r = alpha / tau + (p - s_y) / (k tau) + c`, `c = ln(sigma_k / sigma_{k-1})`; the loss
//!    is `tau softplus(ln r)`.
//! 3. Gradient: per class, the upward leave-one-out recursion `L_j = sigma_j - w_i L_{j-1}`,
//!    trusted while every `P_j(i) <= 1/2`. The fewer than `2k` classes that fail are listed in
//!    shared memory; their leave-one-out polynomials are the product of the stable classes'
//!    factors (a second tree reduction, run only when the list is not empty) and the other
//!    listed factors. No series approximation.
//!
//! Pivot and number system. A scaled score `x_i` carries a rounding of a few ulps of `|x_i|`,
//! and the classes that decide the loss and the gradient (near the top-k boundary: inclusion
//! probabilities neither 0 nor 1) have `x_i` close to `c`. With the largest score as pivot
//! (`p = m`), every weight is at most 1 and plain f32 multiply-adds are exact to a few ulps;
//! that linear pass is accepted while its coefficients stay well inside f32's range and
//! `c >= PIVOT_LOW`, so boundary classes have `|x_i|` of at most about 20. Otherwise (a wide
//! spread of the top scores against `k tau`, or binomial growth past 1e30) the passes are redone
//! in the extended number system of [`super::number`] (in place, or in a second launch for those
//! rows only: see [`smooth_topk_svm_kernel`]) with the pivot on the boundary: the k-th largest
//! non-label score (one pass), moved by `k tau c` until `c` is in [`PIVOT_LOW`, `PIVOT_HIGH`]
//! (one extended pass, at most three).
//! Classes far above the pivot get huge weights, which that system carries at f32's relative
//! precision, and the classes that matter get small `|x_i|`.
//!
//! The loss is `exp` of `ln r` when `ln r << 0`, so every absolute error of `ln r` is a relative
//! error of the loss and of the whole gradient row: `ln r` is summed in twice f32's precision
//! ([`number::log_ratio_sum`]) and kept as a pair through `exp`. Cross-entropy is the case
//! `k = 1, tau = 1, alpha = 0`.

use super::number::{self, x_limit};
use super::{cube_row, label_of};
use cubecl::prelude::*;

/// The linear pass is accepted when `sigma_{k-1}, sigma_k >= LINEAR_MIN` and every coefficient
/// is below `LINEAR_MAX`: far enough from f32's limits that rounding, not range, sets the error.
const LINEAR_MIN: f32 = 1.0e-30;
const LINEAR_MAX: f32 = 1.0e30;
/// Smallest `c = ln(sigma_k / sigma_{k-1})` accepted for a pivot: below it the boundary classes'
/// scaled scores are about `c`, and their rounding (a few ulps of `|c|`) reaches the loss and the
/// gradient. Measured on lavapipe (BENCHMARKS.md): max error 5.6e-7 with -8, 1.6e-6 with -20 or
/// -40. -20 keeps rows whose k-th score is within `20 k tau` of the top on the linear path (10
/// logits at the paper's ImageNet setting, k = 5, tau = 0.1), where the extended path would cost
/// about 3x, and leaves room under 1e-5 for GPU `exp`, which rounds `x log2 e` first.
const PIVOT_LOW: f32 = -20.0;
/// Largest `c` accepted for a pivot of the extended passes. A positive `c` comes from many
/// classes near the pivot (`ln((n - k + 1) / k)` when all scores are equal, with `x_i = 0`), so
/// the bound is loose: it only catches a pivot far above the boundary.
const PIVOT_HIGH: f32 = 16.0;
/// Extended passes at most. The k-th largest score is within `ln n` of the boundary in all but
/// contrived rows; each further pass moves the pivot onto the estimate `p + k tau c`.
const PIVOT_ROUNDS: u32 = 3;

/// The row-independent scalars of a launch, each formed on the host in f64 and rounded once.
#[derive(CubeType, Clone)]
struct Scalars {
    tau: f32,
    /// `k tau`.
    ktau: f32,
    /// `1 / (k tau)`.
    inv_ktau: f32,
    /// `1 / (k tau)` as the sum of two 12-bit parts and a remainder (see
    /// [`number::log_ratio_sum`]).
    inv0: f32,
    inv1: f32,
    inv2: f32,
    /// `alpha / tau` as a rounded value and its remainder.
    margin_hi: f32,
    margin_lo: f32,
    /// 1.0, unknown to the shader compiler (see [`number::two_sum`]).
    one: f32,
}

/// The weight of a class with score `score`, clamped in the extended system (see [`x_limit`]).
#[cube]
fn weight(
    score: f32,
    pivot: f32,
    scalars: &Scalars,
    #[comptime] k: usize,
    #[comptime] ext: bool,
) -> (f32, i32) {
    let x = (score - pivot) * scalars.inv_ktau;
    if comptime!(ext) {
        let limit = f32::new(comptime!(x_limit(k)));
        number::exp(x.max(f32::new(0.0) - limit).min(limit), scalars.one, ext)
    } else {
        number::exp(x, scalars.one, ext)
    }
}

/// The factor of class `j` of the row: its weight, or the identity of `mul_linear` (weight 0)
/// for the label, which is not among the classes multiplied.
#[cube]
#[allow(clippy::too_many_arguments)]
fn factor_at<F: Float>(
    scores: &Tensor<F>,
    base: usize,
    step: usize,
    j: usize,
    label: usize,
    pivot: f32,
    scalars: &Scalars,
    #[comptime] k: usize,
    #[comptime] ext: bool,
) -> (f32, i32) {
    let (wm, we) = weight(
        f32::cast_from(scores[base + j * step]),
        pivot,
        scalars,
        k,
        ext,
    );
    let (zm, ze) = number::zero(ext);
    (select(j == label, zm, wm), select(j == label, ze, we))
}

/// `poly *= (1 + w X)`, truncated at degree `k` (highest degree first, so each update reads
/// the old lower coefficient). A polynomial is a mantissa array and an exponent array.
#[cube]
fn mul_linear(
    pm: &mut Array<f32>,
    pe: &mut Array<i32>,
    wm: f32,
    we: i32,
    #[comptime] k: usize,
    #[comptime] ext: bool,
) {
    #[unroll]
    for t in 0..k {
        let d = comptime!(k - t);
        let (qm, qe) = number::mul(wm, we, pm[d - 1], pe[d - 1], ext);
        let (sm, se) = number::add(pm[d], pe[d], qm, qe, ext);
        pm[d] = sm;
        pe[d] = se;
    }
}

/// Sets a polynomial to 1.
#[cube]
fn set_one(pm: &mut Array<f32>, pe: &mut Array<i32>, #[comptime] k: usize, #[comptime] ext: bool) {
    let (om, oe) = number::one();
    let (zm, ze) = number::zero(ext);
    pm[0] = om;
    pe[0] = oe;
    #[unroll]
    for d in 1..comptime!(k + 1) {
        pm[d] = zm;
        pe[d] = ze;
    }
}

/// Copies the `k + 1` coefficients of one polynomial into another.
#[cube]
fn copy_poly(
    from_m: &Array<f32>,
    from_e: &Array<i32>,
    to_m: &mut Array<f32>,
    to_e: &mut Array<i32>,
    #[comptime] k: usize,
) {
    #[unroll]
    for d in 0..comptime!(k + 1) {
        to_m[d] = from_m[d];
        to_e[d] = from_e[d];
    }
}

/// Coefficient `at` of the polynomials in shared memory (no exponent in the linear system).
#[cube]
fn shared_at(
    shared_m: &mut Shared<[f32]>,
    shared_e: &mut Shared<[i32]>,
    at: usize,
    #[comptime] ext: bool,
) -> (f32, i32) {
    if comptime!(ext) {
        (shared_m[at], shared_e[at])
    } else {
        (shared_m[at], 0i32)
    }
}

/// `out = a * b` truncated at degree `k`, for polynomials in registers.
#[cube]
#[allow(clippy::too_many_arguments)]
fn convolve(
    a_m: &Array<f32>,
    a_e: &Array<i32>,
    b_m: &Array<f32>,
    b_e: &Array<i32>,
    out_m: &mut Array<f32>,
    out_e: &mut Array<i32>,
    #[comptime] k: usize,
    #[comptime] ext: bool,
) {
    #[unroll]
    for d in 0..comptime!(k + 1) {
        let (zm, ze) = number::zero(ext);
        let mut acc_m = zm;
        let mut acc_e = ze;
        #[unroll]
        for i in 0..comptime!(d + 1) {
            let (qm, qe) = number::mul(a_m[i], a_e[i], b_m[d - i], b_e[d - i], ext);
            let (sm, se) = number::add(acc_m, acc_e, qm, qe, ext);
            acc_m = sm;
            acc_e = se;
        }
        out_m[d] = acc_m;
        out_e[d] = acc_e;
    }
}

/// Multiplies the polynomials of all units of the cube (each passes its own) and writes the
/// product to every unit's `out`. Each shared slice holds `cube_dim * (k + 1)` values.
#[cube]
#[allow(clippy::too_many_arguments)]
fn cube_product(
    pm: &Array<f32>,
    pe: &Array<i32>,
    shared_m: &mut Shared<[f32]>,
    shared_e: &mut Shared<[i32]>,
    out_m: &mut Array<f32>,
    out_e: &mut Array<i32>,
    #[comptime] k: usize,
    #[comptime] cube_dim: usize,
    #[comptime] ext: bool,
) {
    let tid = UNIT_POS_X as usize;
    let width = comptime!(k + 1);
    #[unroll]
    for d in 0..width {
        shared_m[tid * width + d] = pm[d];
        if comptime!(ext) {
            shared_e[tid * width + d] = pe[d];
        }
    }
    sync_cube();
    let mut active = cube_dim.runtime();
    while active > 1 {
        active /= 2;
        if tid < active {
            let a = tid * width;
            let b = (tid + active) * width;
            let mut a_m = Array::<f32>::new(width);
            let mut a_e = Array::<i32>::new(width);
            let mut b_m = Array::<f32>::new(width);
            let mut b_e = Array::<i32>::new(width);
            #[unroll]
            for d in 0..width {
                let (xm, xe) = shared_at(shared_m, shared_e, a + d, ext);
                let (ym, ye) = shared_at(shared_m, shared_e, b + d, ext);
                a_m[d] = xm;
                a_e[d] = xe;
                b_m[d] = ym;
                b_e[d] = ye;
            }
            let mut prod_m = Array::<f32>::new(width);
            let mut prod_e = Array::<i32>::new(width);
            convolve(&a_m, &a_e, &b_m, &b_e, &mut prod_m, &mut prod_e, k, ext);
            #[unroll]
            for d in 0..width {
                shared_m[a + d] = prod_m[d];
                if comptime!(ext) {
                    shared_e[a + d] = prod_e[d];
                }
            }
        }
        sync_cube();
    }
    #[unroll]
    for d in 0..width {
        let (xm, xe) = shared_at(shared_m, shared_e, d, ext);
        out_m[d] = xm;
        out_e[d] = xe;
    }
    sync_cube();
}

/// `sigma_0..k` of the non-label classes of this cube's row for a given pivot, in `full` (the
/// extended passes; the linear pass uses [`forward_with_max`]).
#[cube]
#[allow(clippy::too_many_arguments)]
fn forward<F: Float>(
    scores: &Tensor<F>,
    base: usize,
    step: usize,
    label: usize,
    pivot: f32,
    scalars: &Scalars,
    shared_m: &mut Shared<[f32]>,
    shared_e: &mut Shared<[i32]>,
    full_m: &mut Array<f32>,
    full_e: &mut Array<i32>,
    #[comptime] k: usize,
    #[comptime] cube_dim: usize,
    #[comptime] ext: bool,
) {
    let n = scores.shape(1);
    let mut pm = Array::<f32>::new(comptime!(k + 1));
    let mut pe = Array::<i32>::new(comptime!(k + 1));
    set_one(&mut pm, &mut pe, k, ext);
    // Four strided loads in flight per unit before their factors are used: one at a time,
    // every element would wait a full memory latency.
    let mut j = UNIT_POS_X as usize;
    while j + comptime!(3 * cube_dim) < n {
        let mut wm = Array::<f32>::new(4usize);
        let mut we = Array::<i32>::new(4usize);
        #[unroll]
        for u in 0..4 {
            let class = j + comptime!(u * cube_dim);
            let (m, e) = factor_at::<F>(scores, base, step, class, label, pivot, scalars, k, ext);
            wm[u] = m;
            we[u] = e;
        }
        #[unroll]
        for u in 0..4 {
            mul_linear(&mut pm, &mut pe, wm[u], we[u], k, ext);
        }
        j += comptime!(4 * cube_dim);
    }
    while j < n {
        let (wm, we) = factor_at::<F>(scores, base, step, j, label, pivot, scalars, k, ext);
        mul_linear(&mut pm, &mut pe, wm, we, k, ext);
        j += cube_dim;
    }
    cube_product(
        &pm, &pe, shared_m, shared_e, full_m, full_e, k, cube_dim, ext,
    );
}

/// Multiplies coefficient `d` of a linear-system polynomial by `r^d`, `r = exp(arg) <= 1`: the
/// polynomial of weights `exp((s - m_old) / (k tau))` re-expressed for a larger maximum
/// `m_new`, `arg = (m_old - m_new) / (k tau)`. Coefficient `d` is multiplied by `r` `d` times:
/// every intermediate is at least the final value, so nothing leaves f32's normal range before
/// the result would (a separate `r^d` can, while `poly[d] r^d` is a significant normal number).
/// `arg` is clamped at -87 so that `r` is a normal number (a running maximum starts at f32::MIN,
/// and no driver's `exp(-inf)` is relied on); the error that leaves, below `n 1.7e-38` in
/// absolute terms, is far under the linear path's acceptance floor of 1e-30.
#[cube]
fn rescale(poly: &mut Array<f32>, arg: f32, #[comptime] k: usize) {
    let r = arg.max(f32::new(-87.0)).exp();
    #[unroll]
    for t in 0..k {
        #[unroll]
        for d in comptime!(t + 1)..comptime!(k + 1) {
            poly[d] *= r;
        }
    }
}

/// The linear pass: `m`, the largest non-label score, and `sigma_0..k` (in `full_m`)
/// of the weights `exp((s_i - m) / (k tau))`, in one read of the row. Each unit keeps its
/// coefficients relative to its own running maximum and rescales them when that grows (once
/// per group of four loads at most, and rarely after the first few); the tree brings both
/// operands to the larger maximum before each product. `shared` holds `cube_dim * (k + 2)`
/// values. The unit's first `cached` scores are left in `cache` for the gradient (f32::MIN for
/// the label and for classes past the row). Returns `m`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn forward_with_max<F: Float>(
    scores: &Tensor<F>,
    base: usize,
    step: usize,
    label: usize,
    scalars: &Scalars,
    shared: &mut Shared<[f32]>,
    full_m: &mut Array<f32>,
    cache: &mut Array<f32>,
    #[comptime] k: usize,
    #[comptime] cube_dim: usize,
    #[comptime] cached: usize,
) -> f32 {
    let n = scores.shape(1);
    let tid = UNIT_POS_X as usize;
    let inv_ktau = scalars.inv_ktau;
    let mut poly = Array::<f32>::new(comptime!(k + 1));
    let mut unused = Array::<i32>::new(comptime!(k + 1));
    set_one(&mut poly, &mut unused, k, false);
    let mut local_max = f32::min_value();
    if comptime!(cached > 0) {
        // The unit's first `cached` classes, all loaded before any is used (one memory latency
        // for all of them) and kept for the gradient pass, which then reads no memory for them.
        // Classes past the row and the label hold f32::MIN, which only the maximum sees.
        #[unroll]
        for u in 0..cached {
            let class = tid + comptime!(u * cube_dim);
            let mut score = f32::min_value();
            if class < n && class != label {
                score = f32::cast_from(scores[base + class * step]);
            }
            cache[u] = score;
        }
        #[unroll]
        for u in 0..cached {
            local_max = local_max.max(cache[u]);
        }
        // The polynomial is still 1 here: nothing to rescale for the new maximum.
        #[unroll]
        for u in 0..cached {
            let class = tid + comptime!(u * cube_dim);
            let w = ((cache[u] - local_max) * inv_ktau).exp();
            let w = select(class < n && class != label, w, f32::new(0.0));
            mul_linear(&mut poly, &mut unused, w, 0i32, k, false);
        }
    }
    // Four strided loads in flight per unit, as in `forward`, for the classes not cached.
    let mut j = tid + comptime!(cached * cube_dim);
    while j + comptime!(3 * cube_dim) < n {
        let mut s = Array::<f32>::new(4usize);
        #[unroll]
        for u in 0..4 {
            let class = j + comptime!(u * cube_dim);
            let score = f32::cast_from(scores[base + class * step]);
            s[u] = select(class == label, f32::min_value(), score);
        }
        let top = s[0].max(s[1]).max(s[2].max(s[3]));
        if top > local_max {
            rescale(&mut poly, (local_max - top) * inv_ktau, k);
            local_max = top;
        }
        #[unroll]
        for u in 0..4 {
            // The label is no factor: weight 0 (its stand-in score is only for the maximum).
            let w = ((s[u] - local_max) * inv_ktau).exp();
            let w = select(j + comptime!(u * cube_dim) == label, f32::new(0.0), w);
            mul_linear(&mut poly, &mut unused, w, 0i32, k, false);
        }
        j += comptime!(4 * cube_dim);
    }
    while j < n {
        if j != label {
            let score = f32::cast_from(scores[base + j * step]);
            if score > local_max {
                rescale(&mut poly, (local_max - score) * inv_ktau, k);
                local_max = score;
            }
            let w = ((score - local_max) * inv_ktau).exp();
            mul_linear(&mut poly, &mut unused, w, 0i32, k, false);
        }
        j += cube_dim;
    }
    // Tree of products; each unit's slot holds its k + 1 coefficients, then its maximum.
    let width = comptime!(k + 2);
    #[unroll]
    for d in 0..comptime!(k + 1) {
        shared[tid * width + d] = poly[d];
    }
    shared[tid * width + comptime!(k + 1)] = local_max;
    sync_cube();
    let mut active = cube_dim.runtime();
    while active > 1 {
        active /= 2;
        if tid < active {
            let a = tid * width;
            let b = (tid + active) * width;
            let m_a = shared[a + comptime!(k + 1)];
            let m_b = shared[b + comptime!(k + 1)];
            let m = m_a.max(m_b);
            // A unit that saw no class has maximum f32::MIN: its polynomial (1) is unchanged
            // by the rescaling, whose factor is 0 in every degree above 0.
            let mut pa = Array::<f32>::new(comptime!(k + 1));
            let mut pb = Array::<f32>::new(comptime!(k + 1));
            #[unroll]
            for d in 0..comptime!(k + 1) {
                pa[d] = shared[a + d];
                pb[d] = shared[b + d];
            }
            rescale(&mut pa, (m_a - m) * inv_ktau, k);
            rescale(&mut pb, (m_b - m) * inv_ktau, k);
            let mut product = Array::<f32>::new(comptime!(k + 1));
            let mut product_e = Array::<i32>::new(comptime!(k + 1));
            convolve(
                &pa,
                &unused,
                &pb,
                &unused,
                &mut product,
                &mut product_e,
                k,
                false,
            );
            #[unroll]
            for d in 0..comptime!(k + 1) {
                shared[a + d] = product[d];
            }
            shared[a + comptime!(k + 1)] = m;
        }
        sync_cube();
    }
    #[unroll]
    for d in 0..comptime!(k + 1) {
        full_m[d] = shared[d];
    }
    let m = shared[comptime!(k + 1)];
    sync_cube();
    m
}

/// `ln(sigma_k / sigma_{k-1})` of `sigma_0..k` in `full`.
#[cube]
fn top_ln_ratio(
    full_m: &Array<f32>,
    full_e: &Array<i32>,
    one: f32,
    #[comptime] k: usize,
    #[comptime] ext: bool,
) -> f32 {
    let below = comptime!(k - 1);
    number::ln_ratio(full_m[k], full_e[k], full_m[below], full_e[below], one, ext)
}

/// The gradient entry of one non-label class of weight `w`, written at `at`; when the upward
/// recursion is not trustworthy for it, the class is listed in `unstable` instead, for the
/// exact pass.
#[cube]
#[allow(clippy::too_many_arguments)]
fn gradient_entry<F: Float>(
    grad: &mut Tensor<F>,
    at: usize,
    wm: f32,
    we: i32,
    full_m: &Array<f32>,
    full_e: &Array<i32>,
    scale: f32,
    factors: (f32, f32),
    unstable: &mut Shared<[u32]>,
    count: &Shared<[Atomic<u32>]>,
    class: usize,
    #[comptime] k: usize,
    #[comptime] ext: bool,
) {
    // L_{d-1} and L_{d-2} of the leave-one-out polynomial (d = 1 .. k - 1).
    let (om, oe) = number::one();
    let (zm, ze) = number::zero(ext);
    let mut lm = om;
    let mut le = oe;
    let mut l2m = zm;
    let mut l2e = ze;
    let mut stable = true;
    #[unroll]
    for d in 1..k {
        l2m = lm;
        l2e = le;
        if comptime!(ext) {
            // L_d = sigma_d (1 - q), q = w L_{d-1} / sigma_d = P_d(i): exact scaling, no
            // subtraction of extended numbers.
            let (tm, te) = number::mul(wm, we, lm, le, ext);
            let q = number::ratio(tm, te, full_m[d], full_e[d], ext);
            stable = stable && q <= f32::new(0.5);
            let (nm, ne) = number::scale(full_m[d], full_e[d], f32::new(1.0) - q, ext);
            lm = nm;
            le = ne;
        } else {
            let t = wm * lm;
            stable = stable && t <= f32::new(0.5) * full_m[d];
            lm = full_m[d] - t;
        }
    }
    if stable {
        if comptime!(ext) {
            let below = comptime!(k - 1);
            let (am, ae) = number::mul(wm, we, lm, le, ext);
            let p_k = number::ratio(am, ae, full_m[k], full_e[k], ext);
            let (bm, be) = number::mul(wm, we, l2m, l2e, ext);
            let p_k1 = number::ratio(bm, be, full_m[below], full_e[below], ext);
            grad[at] = F::cast_from(scale * (p_k - p_k1));
        } else {
            // With the row's `1 / sigma_k`, `1 / sigma_{k-1}` (normal numbers: the linear path
            // keeps sigma in [1e-30, 1e30]; folding `scale` in would underflow for tiny losses):
            // multiplications instead of two divisions per class.
            let (inv_top, inv_below) = factors;
            grad[at] = F::cast_from(scale * (wm * (lm * inv_top - l2m * inv_below)));
        }
    } else {
        let slot = count[0].fetch_add(1u32) as usize;
        if slot < comptime!(2 * k) {
            unstable[slot] = class as u32;
        }
    }
}

/// Loss and gradient of this cube's row from `sigma_0..k` (in `full`) for `pivot`, with
/// `c = ln(sigma_k / sigma_{k-1})` as the caller computed it to choose the path.
#[cube]
#[allow(clippy::too_many_arguments)]
fn finish<F: Float>(
    scores: &Tensor<F>,
    losses: &mut Tensor<F>,
    grad: &mut Tensor<F>,
    shared_m: &mut Shared<[f32]>,
    shared_e: &mut Shared<[i32]>,
    full_m: &Array<f32>,
    full_e: &Array<i32>,
    row: usize,
    label: usize,
    pivot: f32,
    s_y: f32,
    c: f32,
    scalars: &Scalars,
    cache: &Array<f32>,
    #[comptime] k: usize,
    #[comptime] cube_dim: usize,
    #[comptime] cached: usize,
    #[comptime] with_grad: bool,
    #[comptime] ext: bool,
) {
    let tid = UNIT_POS_X as usize;
    let n = scores.shape(1);
    let base = row * scores.stride(0);
    let step = scores.stride(1);
    let (log_r, log_r_lo) = number::log_ratio_sum(
        scalars.margin_hi,
        scalars.margin_lo,
        pivot,
        s_y,
        scalars.inv0,
        scalars.inv1,
        scalars.inv2,
        c,
        scalars.one,
    );
    let tau = scalars.tau;
    if tid == 0 {
        let at = row * losses.stride(0);
        losses[at] = F::cast_from(tau * softplus(log_r, log_r_lo, scalars.one));
    }
    if comptime!(with_grad) {
        let g_row = row * grad.stride(0);
        let g_step = grad.stride(1);
        let scale = sigmoid(log_r, log_r_lo, scalars.one) / f32::new(comptime!(k as f32));
        // Used by the linear system only (mantissas alone mean nothing in the extended one).
        let factors = (
            f32::new(1.0) / full_m[k],
            f32::new(1.0) / full_m[comptime!(k - 1)],
        );
        if tid == 0 {
            grad[g_row + label * g_step] = F::cast_from(f32::new(0.0) - scale);
        }
        let capacity = comptime!(2 * k);
        let mut unstable = Shared::<[u32]>::new_slice(capacity);
        let count = Shared::<[Atomic<u32>]>::new_slice(1usize);
        if tid == 0 {
            count[0].store(0u32);
        }
        sync_cube();
        // The classes whose scores the forward pass kept (see `forward_with_max`).
        #[unroll]
        for u in 0..cached {
            let class = tid + comptime!(u * cube_dim);
            if class < n && class != label {
                let (wm, we) = weight(cache[u], pivot, scalars, k, ext);
                gradient_entry::<F>(
                    grad,
                    g_row + class * g_step,
                    wm,
                    we,
                    full_m,
                    full_e,
                    scale,
                    factors,
                    &mut unstable,
                    &count,
                    class,
                    k,
                    ext,
                );
            }
        }
        // The others: scores of four classes are loaded before any is processed (memory
        // latency, as in `forward`).
        let mut j = tid + comptime!(cached * cube_dim);
        while j + comptime!(3 * cube_dim) < n {
            let mut s = Array::<f32>::new(4usize);
            #[unroll]
            for u in 0..4 {
                s[u] = f32::cast_from(scores[base + (j + comptime!(u * cube_dim)) * step]);
            }
            #[unroll]
            for u in 0..4 {
                let class = j + comptime!(u * cube_dim);
                if class != label {
                    let (wm, we) = weight(s[u], pivot, scalars, k, ext);
                    gradient_entry::<F>(
                        grad,
                        g_row + class * g_step,
                        wm,
                        we,
                        full_m,
                        full_e,
                        scale,
                        factors,
                        &mut unstable,
                        &count,
                        class,
                        k,
                        ext,
                    );
                }
            }
            j += comptime!(4 * cube_dim);
        }
        while j < n {
            if j != label {
                let (wm, we) = weight(
                    f32::cast_from(scores[base + j * step]),
                    pivot,
                    scalars,
                    k,
                    ext,
                );
                gradient_entry::<F>(
                    grad,
                    g_row + j * g_step,
                    wm,
                    we,
                    full_m,
                    full_e,
                    scale,
                    factors,
                    &mut unstable,
                    &count,
                    j,
                    k,
                    ext,
                );
            }
            j += cube_dim;
        }
        sync_cube();
        let listed = (count[0].load() as usize).min(capacity);
        if listed > 0 {
            // Product of the stable classes' factors.
            let mut rest_m = Array::<f32>::new(comptime!(k + 1));
            let mut rest_e = Array::<i32>::new(comptime!(k + 1));
            set_one(&mut rest_m, &mut rest_e, k, ext);
            let mut j = tid;
            while j < n {
                let mut is_listed = j == label;
                for t in 0..listed {
                    is_listed = is_listed || unstable[t] as usize == j;
                }
                if !is_listed {
                    let (wm, we) = weight(
                        f32::cast_from(scores[base + j * step]),
                        pivot,
                        scalars,
                        k,
                        ext,
                    );
                    mul_linear(&mut rest_m, &mut rest_e, wm, we, k, ext);
                }
                j += cube_dim;
            }
            let mut stable_m = Array::<f32>::new(comptime!(k + 1));
            let mut stable_e = Array::<i32>::new(comptime!(k + 1));
            cube_product(
                &rest_m,
                &rest_e,
                shared_m,
                shared_e,
                &mut stable_m,
                &mut stable_e,
                k,
                cube_dim,
                ext,
            );
            // Up to 2k - 1 listed classes, possibly more than the cube has units.
            let mut own = tid;
            while own < listed {
                let i = unstable[own] as usize;
                let (wim, wie) = weight(
                    f32::cast_from(scores[base + i * step]),
                    pivot,
                    scalars,
                    k,
                    ext,
                );
                let mut loo_m = Array::<f32>::new(comptime!(k + 1));
                let mut loo_e = Array::<i32>::new(comptime!(k + 1));
                copy_poly(&stable_m, &stable_e, &mut loo_m, &mut loo_e, k);
                for t in 0..listed {
                    if t != own {
                        let other = unstable[t] as usize;
                        let (wm, we) = weight(
                            f32::cast_from(scores[base + other * step]),
                            pivot,
                            scalars,
                            k,
                            ext,
                        );
                        mul_linear(&mut loo_m, &mut loo_e, wm, we, k, ext);
                    }
                }
                let mut all_m = Array::<f32>::new(comptime!(k + 1));
                let mut all_e = Array::<i32>::new(comptime!(k + 1));
                copy_poly(&loo_m, &loo_e, &mut all_m, &mut all_e, k);
                mul_linear(&mut all_m, &mut all_e, wim, wie, k, ext);
                let below = comptime!(k - 1);
                let (am, ae) = number::mul(wim, wie, loo_m[below], loo_e[below], ext);
                let p_k = number::ratio(am, ae, all_m[k], all_e[k], ext);
                let mut p_k1 = f32::new(0.0);
                if comptime!(k >= 2) {
                    let lower = comptime!(k.saturating_sub(2));
                    let (bm, be) = number::mul(wim, wie, loo_m[lower], loo_e[lower], ext);
                    p_k1 = number::ratio(bm, be, all_m[below], all_e[below], ext);
                }
                grad[g_row + i * g_step] = F::cast_from(scale * (p_k - p_k1));
                own += cube_dim;
            }
        }
    }
}

/// Inserts `value` into the descending list `top` of `k` values, dropping the smallest.
#[cube]
fn insert_sorted(top: &mut Array<f32>, value: f32, #[comptime] k: usize) {
    let mut v = value;
    #[unroll]
    for d in 0..k {
        let high = top[d].max(v);
        v = top[d].min(v);
        top[d] = high;
    }
}

/// The k-th largest non-label score of the row (tied scores counted one by one): each unit keeps
/// the top k of its share in registers, then a tree of merges in shared memory (`shared` holds
/// at least `cube_dim * k` values). One pass over the row.
#[cube]
#[allow(clippy::too_many_arguments)]
fn kth_largest<F: Float>(
    scores: &Tensor<F>,
    base: usize,
    step: usize,
    label: usize,
    shared: &mut Shared<[f32]>,
    #[comptime] k: usize,
    #[comptime] cube_dim: usize,
) -> f32 {
    let n = scores.shape(1);
    let tid = UNIT_POS_X as usize;
    let mut top = Array::<f32>::new(k);
    #[unroll]
    for d in 0..k {
        top[d] = f32::min_value();
    }
    let mut j = tid;
    while j < n {
        if j != label {
            insert_sorted(&mut top, f32::cast_from(scores[base + j * step]), k);
        }
        j += cube_dim;
    }
    #[unroll]
    for d in 0..k {
        shared[tid * k + d] = top[d];
    }
    sync_cube();
    let mut active = cube_dim.runtime();
    while active > 1 {
        active /= 2;
        if tid < active {
            #[unroll]
            for d in 0..k {
                insert_sorted(&mut top, shared[(tid + active) * k + d], k);
            }
            #[unroll]
            for d in 0..k {
                shared[tid * k + d] = top[d];
            }
        }
        sync_cube();
    }
    let out = shared[comptime!(k - 1)];
    sync_cube();
    out
}

/// `exp(-|x|)` for `x = hi + lo`.
#[cube]
fn exp_minus_abs(hi: f32, lo: f32, one: f32) -> f32 {
    let negative = hi < f32::new(0.0);
    number::exp_accurate(
        select(negative, hi, f32::new(0.0) - hi),
        select(negative, lo, f32::new(0.0) - lo),
        one,
    )
}

/// `ln(1 + exp(x))` for `x = hi + lo` (`one` as at [`number::two_sum`]). For `x << 0` this is `exp(x)`, whose relative error is
/// the absolute error of `x`: hence the pair and the accurate `exp`.
#[cube]
fn softplus(hi: f32, lo: f32, one: f32) -> f32 {
    let tail = number::log1p(exp_minus_abs(hi, lo, one));
    select(hi > f32::new(0.0), hi + (lo + tail), tail)
}

/// `1 / (1 + exp(-x))` for `x = hi + lo`, without overflow.
#[cube]
fn sigmoid(hi: f32, lo: f32, one: f32) -> f32 {
    let e = exp_minus_abs(hi, lo, one);
    let one = f32::new(1.0);
    select(hi >= f32::new(0.0), one / (one + e), e / (one + e))
}

/// The loss value that marks a row the linear launch left to the extended one, in the plans with
/// two launches (losses are never negative).
const PENDING: f32 = -1.0;

/// The extended passes for this cube's row (step 3 of the module's text): the pivot first on the
/// k-th largest non-label score, then moved by `k tau c` while `c` is out of bounds; then the
/// loss and the gradient in the extended system. `shared_m` holds `cube_dim * (k + 1)` values.
#[cube]
#[allow(clippy::too_many_arguments)]
fn extended_row<F: Float>(
    scores: &Tensor<F>,
    losses: &mut Tensor<F>,
    grad: &mut Tensor<F>,
    shared_m: &mut Shared<[f32]>,
    row: usize,
    label: usize,
    s_y: f32,
    scalars: &Scalars,
    #[comptime] k: usize,
    #[comptime] cube_dim: usize,
    #[comptime] with_grad: bool,
) {
    let base = row * scores.stride(0);
    let step = scores.stride(1);
    let mut shared_e = Shared::<[i32]>::new_slice(comptime!(cube_dim * (k + 1)));
    let mut full_m = Array::<f32>::new(comptime!(k + 1));
    let mut full_e = Array::<i32>::new(comptime!(k + 1));
    // No scores are kept on this path (it is rare, and its passes read the row several times).
    let no_cache = Array::<f32>::new(1usize);
    let mut pivot = kth_largest::<F>(scores, base, step, label, shared_m, k, cube_dim);
    let mut rounds = 0u32;
    let mut settled = false;
    let mut c = f32::new(0.0);
    while !settled {
        forward::<F>(
            scores,
            base,
            step,
            label,
            pivot,
            scalars,
            shared_m,
            &mut shared_e,
            &mut full_m,
            &mut full_e,
            k,
            cube_dim,
            true,
        );
        c = top_ln_ratio(&full_m, &full_e, scalars.one, k, true);
        rounds += 1;
        if (c >= f32::new(PIVOT_LOW) && c <= f32::new(PIVOT_HIGH)) || rounds >= PIVOT_ROUNDS {
            settled = true;
        } else {
            pivot += scalars.ktau * c;
        }
    }
    finish::<F>(
        scores,
        losses,
        grad,
        shared_m,
        &mut shared_e,
        &full_m,
        &full_e,
        row,
        label,
        pivot,
        s_y,
        c,
        scalars,
        &no_cache,
        k,
        cube_dim,
        0usize,
        with_grad,
        true,
    );
}

/// Loss (and gradient when `with_grad`) of the smooth top-k SVM for one sample per cube.
/// `scores [batch, n]`, `targets [batch]`, `losses [batch]`, `grad [batch, n]` (any 1-element
/// tensor when `with_grad` is false). The host passes `k tau` and the parts of `1 / (k tau)` and
/// `alpha / tau` described at [`number::log_ratio_sum`], all formed in f64.
///
/// Which passes a launch runs is comptime, so that the host can pick the kernel shape that is
/// fastest on its device (see `gpu.rs`):
/// - `linear` alone: the linear pass on every row; finishes the rows it is accurate for and
///   marks the others with a [`PENDING`] loss, for
/// - `extended` alone: the extended passes on the marked rows only. Two launches keep the
///   extended system's registers (an exponent per coefficient, the top-k list) off the common
///   linear kernel, at the price of a second launch.
/// - both: one launch; a row the linear pass rejects goes on to the extended passes in place.
///
/// `cached`: how many of its classes each unit keeps in registers between the linear pass and
/// the gradient (0: the gradient reads the row again). Any count is correct for any `n`; it
/// pays when `n <= cached * cube_dim`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn smooth_topk_svm_kernel<F: Float, I: Numeric>(
    scores: &Tensor<F>,
    targets: &Tensor<I>,
    losses: &mut Tensor<F>,
    grad: &mut Tensor<F>,
    tau: f32,
    ktau: f32,
    inv_ktau: f32,
    inv0: f32,
    inv1: f32,
    inv2: f32,
    margin_hi: f32,
    margin_lo: f32,
    one: f32,
    #[comptime] k: usize,
    #[comptime] cube_dim: usize,
    #[comptime] with_grad: bool,
    #[comptime] linear: bool,
    #[comptime] extended: bool,
    #[comptime] cached: usize,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let scalars = Scalars {
        tau,
        ktau,
        inv_ktau,
        inv0,
        inv1,
        inv2,
        margin_hi,
        margin_lo,
        one,
    };
    let row = cube_row();
    if row >= losses.shape(0) {
        terminate!();
    }
    let loss_at = row * losses.stride(0);
    // Nested on purpose: the outer condition is resolved when the kernel is expanded.
    #[allow(clippy::collapsible_if)]
    if comptime!(!linear) {
        if f32::cast_from(losses[loss_at]) != f32::new(PENDING) {
            terminate!();
        }
    }
    let tid = UNIT_POS_X as usize;
    let n = scores.shape(1);
    let base = row * scores.stride(0);
    let step = scores.stride(1);
    let label = label_of::<I>(targets, row, n);
    let s_y = f32::cast_from(scores[base + label * step]);
    // Mantissas (the linear pass's tree also carries each unit's maximum).
    let mut shared_m = Shared::<[f32]>::new_slice(comptime!(cube_dim * (k + 2)));
    // Uniform across the cube, like every decision below: every unit sees the same
    // coefficients.
    let mut pending = true;

    if comptime!(linear) {
        // 1-2. The largest non-label score and the linear pass with it as pivot, in one read.
        // No exponents in the linear system: a one-value stand-in fills `finish`'s slot.
        let mut no_exponents = Shared::<[i32]>::new_slice(1usize);
        let mut full_m = Array::<f32>::new(comptime!(k + 1));
        let full_e = Array::<i32>::new(comptime!(k + 1));
        let mut cache = Array::<f32>::new(comptime!(cached.max(1)));
        let m = forward_with_max::<F>(
            scores,
            base,
            step,
            label,
            &scalars,
            &mut shared_m,
            &mut full_m,
            &mut cache,
            k,
            cube_dim,
            cached,
        );
        let below = comptime!(k - 1);
        let c = top_ln_ratio(&full_m, &full_e, one, k, false);
        let mut accurate = full_m[k] >= f32::new(LINEAR_MIN)
            && full_m[below] >= f32::new(LINEAR_MIN)
            && c >= f32::new(PIVOT_LOW);
        #[unroll]
        for d in 0..comptime!(k + 1) {
            accurate = accurate && full_m[d] <= f32::new(LINEAR_MAX);
        }
        if accurate {
            finish::<F>(
                scores,
                losses,
                grad,
                &mut shared_m,
                &mut no_exponents,
                &full_m,
                &full_e,
                row,
                label,
                m,
                s_y,
                c,
                &scalars,
                &cache,
                k,
                cube_dim,
                cached,
                with_grad,
                false,
            );
        } else {
            // Nested on purpose, as above.
            #[allow(clippy::collapsible_if)]
            if comptime!(!extended) {
                if tid == 0 {
                    losses[loss_at] = F::cast_from(f32::new(PENDING));
                }
            }
        }
        pending = !accurate;
    }
    // Nested on purpose, as above.
    #[allow(clippy::collapsible_if)]
    if comptime!(extended) {
        if pending {
            // 3. The extended system, with the pivot on the top-k boundary.
            extended_row::<F>(
                scores,
                losses,
                grad,
                &mut shared_m,
                row,
                label,
                s_y,
                &scalars,
                k,
                cube_dim,
                with_grad,
            );
        }
    }
}
