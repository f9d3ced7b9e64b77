//! The fused CubeCL kernel: one cube (workgroup) per sample computes the smooth top-k SVM loss
//! and, when asked, its exact gradient, in one launch for the whole batch.
//!
//! It follows the numeric core's algorithm (see `smooth_topk`'s `esp.rs`) with every polynomial
//! coefficient kept as a logarithm, so no score range can overflow or underflow `f32`:
//!
//! 1. `m = max_{i != y} s_i` by a tree reduction in shared memory.
//! 2. Each unit multiplies the factors `(1 + w_i X)`, `ln w_i = (s_i - m) / (k tau)`, of its
//!    strided share of the classes (truncated at degree k, in registers); a tree of polynomial
//!    products in shared memory gives `ln sigma_0..k`.
//! 3. `ln r = alpha / tau + (m - s_y) / (k tau) + ln sigma_k - ln sigma_{k-1}`,
//!    loss `tau softplus(ln r)`.
//! 4. Gradient: per class, the upward leave-one-out recursion
//!    `ln L_j = ln sigma_j + ln(1 - P_j(i))`, trusted while every `P_j(i) <= 1/2`. The fewer than
//!    `2k` classes that fail are listed in shared memory; their leave-one-out polynomials are
//!    the product of the stable classes' factors (a second tree reduction, run only when the
//!    list is not empty) and the other listed factors. No series approximation.
//!
//! Cross-entropy is the case `k = 1, tau = 1, alpha = 0`.

use cubecl::prelude::*;

/// Stands in for `ln 0`: finite, because WGSL rejects infinite literals, and small enough that
/// `exp(LOG_ZERO - anything representable) == 0`.
const LOG_ZERO: f32 = -1.0e30;

/// `ln(1 + x)` for `x > -1`, accurate to a few f32 ulps. Shading languages have no `log1p`
/// (WGSL lowers it to `ln(1 + x)`, which loses all digits of a small `x`), and GPU `ln` is
/// specified with an absolute error near 1, so near zero this uses
/// `ln(1 + x) = 2 atanh(z)`, `z = x / (2 + x)`, summed to z^11 (|z| <= 0.23 here).
#[cube]
fn log1p<F: Float>(x: F) -> F {
    let z = x / (F::new(2.0) + x);
    let z2 = z * z;
    let tail = F::new(1.0 / 9.0) + z2 * F::new(1.0 / 11.0);
    let tail = F::new(1.0 / 7.0) + z2 * tail;
    let tail = F::new(1.0 / 5.0) + z2 * tail;
    let tail = F::new(1.0 / 3.0) + z2 * tail;
    let series = F::new(2.0) * z * (F::new(1.0) + z2 * tail);
    select(
        x > F::new(-0.3) && x < F::new(0.6),
        series,
        (F::new(1.0) + x).ln(),
    )
}

/// `ln(exp(a) + exp(b))`.
#[cube]
fn log_add<F: Float>(a: F, b: F) -> F {
    let hi = a.max(b);
    let lo = a.min(b);
    hi + log1p::<F>((lo - hi).exp())
}

/// `poly *= (1 + exp(x) X)`, log coefficients, truncated at degree `k`.
#[cube]
fn mul_linear<F: Float>(poly: &mut Array<F>, x: F, #[comptime] k: usize) {
    #[unroll]
    for t in 0..k {
        let d = comptime!(k - t);
        poly[d] = log_add::<F>(poly[d], x + poly[d - 1]);
    }
}

/// Sets `poly` to the polynomial 1 in log coefficients.
#[cube]
fn set_log_one<F: Float>(poly: &mut Array<F>, #[comptime] k: usize) {
    poly[0] = F::new(0.0);
    #[unroll]
    for d in 1..comptime!(k + 1) {
        poly[d] = F::new(LOG_ZERO);
    }
}

/// Multiplies the polynomials of all units of the cube (each passes its own `poly`) and writes
/// the product to every unit's `out`. `shared` holds `cube_dim * (k + 1)` values.
#[cube]
fn cube_product<F: Float>(
    poly: &Array<F>,
    shared: &mut Shared<[F]>,
    out: &mut Array<F>,
    #[comptime] k: usize,
    #[comptime] cube_dim: usize,
) {
    let tid = UNIT_POS_X as usize;
    let width = comptime!(k + 1);
    #[unroll]
    for d in 0..width {
        shared[tid * width + d] = poly[d];
    }
    sync_cube();
    let mut active = cube_dim.runtime();
    while active > 1 {
        active /= 2;
        if tid < active {
            let a = tid * width;
            let b = (tid + active) * width;
            let mut product = Array::<F>::new(width);
            #[unroll]
            for d in 0..width {
                let mut acc = F::new(LOG_ZERO);
                #[unroll]
                for i in 0..comptime!(d + 1) {
                    acc = log_add::<F>(acc, shared[a + i] + shared[b + d - i]);
                }
                product[d] = acc;
            }
            #[unroll]
            for d in 0..width {
                shared[a + d] = product[d];
            }
        }
        sync_cube();
    }
    #[unroll]
    for d in 0..width {
        out[d] = shared[d];
    }
    sync_cube();
}

/// `ln(1 + exp(x))`.
#[cube]
fn softplus<F: Float>(x: F) -> F {
    x.max(F::new(0.0)) + log1p::<F>((F::new(0.0) - x.abs()).exp())
}

/// `1 / (1 + exp(-x))` without overflow.
#[cube]
fn sigmoid<F: Float>(x: F) -> F {
    let e = (F::new(0.0) - x.abs()).exp();
    let one = F::new(1.0);
    select(x >= F::new(0.0), one / (one + e), e / (one + e))
}

/// Loss (and gradient when `with_grad`) of the smooth top-k SVM for one sample per cube.
/// `scores [batch, n]`, `targets [batch]`, `losses [batch]`, `grad [batch, n]` (any 1-element
/// tensor when `with_grad` is false). Cubes are laid out on a 2-D grid so that batches beyond
/// 65535 samples fit.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn smooth_topk_svm_kernel<F: Float, I: Numeric>(
    scores: &Tensor<F>,
    targets: &Tensor<I>,
    losses: &mut Tensor<F>,
    grad: &mut Tensor<F>,
    tau: f32,
    alpha: f32,
    #[comptime] k: usize,
    #[comptime] cube_dim: usize,
    #[comptime] with_grad: bool,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let row = CUBE_POS_Y as usize * CUBE_COUNT_X as usize + CUBE_POS_X as usize;
    if row >= losses.shape(0) {
        terminate!();
    }
    let tid = UNIT_POS_X as usize;
    let n = scores.shape(1);
    let base = row * scores.stride(0);
    let step = scores.stride(1);
    let label = u32::cast_from(targets[row * targets.stride(0)]) as usize;
    let tau = F::cast_from(tau);
    let ktau = F::new(comptime!(k as f32)) * tau;
    let s_y = scores[base + label * step];
    let mut shared = Shared::<[F]>::new_slice(comptime!(cube_dim * (k + 1)));

    // 1. Largest non-label score.
    let mut local_max = F::min_value();
    let mut j = tid;
    while j < n {
        if j != label {
            local_max = local_max.max(scores[base + j * step]);
        }
        j += cube_dim;
    }
    shared[tid] = local_max;
    sync_cube();
    let mut active = cube_dim.runtime();
    while active > 1 {
        active /= 2;
        if tid < active {
            shared[tid] = shared[tid].max(shared[tid + active]);
        }
        sync_cube();
    }
    let m = shared[0];
    sync_cube();

    // 2. ln sigma_0..k of the non-label weights.
    let mut poly = Array::<F>::new(comptime!(k + 1));
    set_log_one::<F>(&mut poly, k);
    let mut j = tid;
    while j < n {
        if j != label {
            mul_linear::<F>(&mut poly, (scores[base + j * step] - m) / ktau, k);
        }
        j += cube_dim;
    }
    let mut full = Array::<F>::new(comptime!(k + 1));
    cube_product::<F>(&poly, &mut shared, &mut full, k, cube_dim);

    // 3. The loss.
    let log_r = F::cast_from(alpha) / tau + (m - s_y) / ktau + full[k] - full[comptime!(k - 1)];
    if tid == 0 {
        let at = row * losses.stride(0);
        losses[at] = tau * softplus::<F>(log_r);
    }

    // 4. The gradient.
    if comptime!(with_grad) {
        let g_row = row * grad.stride(0);
        let g_step = grad.stride(1);
        let scale = sigmoid::<F>(log_r) / F::new(comptime!(k as f32));
        if tid == 0 {
            grad[g_row + label * g_step] = F::new(0.0) - scale;
        }
        let capacity = comptime!(2 * k);
        let mut unstable = Shared::<[u32]>::new_slice(capacity);
        let count = Shared::<[Atomic<u32>]>::new_slice(1usize);
        if tid == 0 {
            count[0].store(0u32);
        }
        sync_cube();
        let mut j = tid;
        while j < n {
            if j != label {
                let x = (scores[base + j * step] - m) / ktau;
                // ln L_{d-1} and ln L_{d-2} of the leave-one-out polynomial.
                let mut l_prev = F::new(0.0);
                let mut l_prev2 = F::new(LOG_ZERO);
                let mut stable = true;
                #[unroll]
                for d in 1..k {
                    let p = (x + l_prev - full[d]).exp();
                    stable = stable && p <= F::new(0.5);
                    l_prev2 = l_prev;
                    l_prev = full[d] + log1p::<F>(F::new(0.0) - p);
                }
                if stable {
                    let p_k = (x + l_prev - full[k]).exp();
                    let p_k1 = (x + l_prev2 - full[comptime!(k - 1)]).exp();
                    grad[g_row + j * g_step] = scale * (p_k - p_k1);
                } else {
                    let slot = count[0].fetch_add(1u32) as usize;
                    if slot < capacity {
                        unstable[slot] = j as u32;
                    }
                }
            }
            j += cube_dim;
        }
        sync_cube();
        let listed = (count[0].load() as usize).min(capacity);
        if listed > 0 {
            // Product of the stable classes' factors.
            let mut rest = Array::<F>::new(comptime!(k + 1));
            set_log_one::<F>(&mut rest, k);
            let mut j = tid;
            while j < n {
                let mut is_listed = j == label;
                for t in 0..listed {
                    is_listed = is_listed || unstable[t] as usize == j;
                }
                if !is_listed {
                    mul_linear::<F>(&mut rest, (scores[base + j * step] - m) / ktau, k);
                }
                j += cube_dim;
            }
            let mut stable_product = Array::<F>::new(comptime!(k + 1));
            cube_product::<F>(&rest, &mut shared, &mut stable_product, k, cube_dim);
            if tid < listed {
                let i = unstable[tid] as usize;
                let x_i = (scores[base + i * step] - m) / ktau;
                let mut loo = Array::<F>::new(comptime!(k + 1));
                #[unroll]
                for d in 0..comptime!(k + 1) {
                    loo[d] = stable_product[d];
                }
                for t in 0..listed {
                    if t != tid {
                        let other = unstable[t] as usize;
                        mul_linear::<F>(&mut loo, (scores[base + other * step] - m) / ktau, k);
                    }
                }
                let mut all = Array::<F>::new(comptime!(k + 1));
                #[unroll]
                for d in 0..comptime!(k + 1) {
                    all[d] = loo[d];
                }
                mul_linear::<F>(&mut all, x_i, k);
                let p_k = (x_i + loo[comptime!(k - 1)] - all[k]).exp();
                let mut p_k1 = F::new(0.0);
                if comptime!(k >= 2) {
                    p_k1 =
                        (x_i + loo[comptime!(k.saturating_sub(2))] - all[comptime!(k - 1)]).exp();
                }
                grad[g_row + i * g_step] = scale * (p_k - p_k1);
            }
        }
    }
}
