//! The fused CubeCL kernel: one cube (workgroup) per sample computes the smooth top-k SVM loss
//! and, when asked, its exact gradient, in one launch for the whole batch.
//!
//! It follows the numeric core's algorithm (see `smooth_topk`'s `esp.rs`):
//!
//! 1. `m = max_{i != y} s_i` by a tree reduction in shared memory.
//! 2. Each unit multiplies the factors `(1 + w_i X)`, `w_i = exp((s_i - m) / (k tau))`, of its
//!    strided share of the classes (truncated at degree k, in registers); a tree of polynomial
//!    products in shared memory gives `sigma_0..k`.
//! 3. `ln r = alpha / tau + (m - s_y) / (k tau) + ln(sigma_k / sigma_{k-1})`,
//!    loss `tau softplus(ln r)`.
//! 4. Gradient: per class, the upward leave-one-out recursion
//!    `L_j = sigma_j - w_i L_{j-1}`, trusted while every `P_j(i) <= 1/2`. The fewer than `2k`
//!    classes that fail are listed in shared memory; their leave-one-out polynomials are the
//!    product of the stable classes' factors (a second tree reduction, run only when the list is
//!    not empty) and the other listed factors. No series approximation.
//!
//! Two number systems, chosen per sample (uniformly for the cube): plain `f32` multiply-adds on
//! the max-scaled weights, as long as `sigma_0..k` stay finite and `sigma_{k-1}, sigma_k` well
//! inside the normal range; otherwise every coefficient is kept as a logarithm (`log_add` for
//! sums), which no score range can overflow or underflow, at the cost of an `exp` per
//! multiply-add. Cross-entropy is the case `k = 1, tau = 1, alpha = 0`.

use cubecl::prelude::*;

/// Stands in for `ln 0`: finite, because WGSL rejects infinite literals, and small enough that
/// `exp(LOG_ZERO - anything representable) == 0`.
const LOG_ZERO: f32 = -1.0e30;
/// The linear pass is accepted when `sigma_{k-1}, sigma_k >= LINEAR_MIN` and every coefficient
/// is below `LINEAR_MAX`: far enough from f32's limits that rounding, not range, sets the error.
const LINEAR_MIN: f32 = 1.0e-30;
const LINEAR_MAX: f32 = 1.0e30;

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

/// The additive identity: 0, or `ln 0` in log space.
#[cube]
fn zero<F: Float>(#[comptime] log: bool) -> F {
    if comptime!(log) {
        F::new(LOG_ZERO)
    } else {
        F::new(0.0)
    }
}

/// `acc + a * b` in the number system (`log_add(acc, a + b)` in log space).
#[cube]
fn add_product<F: Float>(acc: F, a: F, b: F, #[comptime] log: bool) -> F {
    if comptime!(log) {
        log_add::<F>(acc, a + b)
    } else {
        acc + a * b
    }
}

/// The factor of a class with scaled score `x = (s - m) / (k tau)`: `exp(x)`, or `x` itself
/// in log space.
#[cube]
fn weight<F: Float>(x: F, #[comptime] log: bool) -> F {
    if comptime!(log) {
        x
    } else {
        x.exp()
    }
}

/// `poly *= (1 + w X)`, truncated at degree `k` (highest degree first, so each update reads
/// the old lower coefficient).
#[cube]
fn mul_linear<F: Float>(poly: &mut Array<F>, w: F, #[comptime] k: usize, #[comptime] log: bool) {
    #[unroll]
    for t in 0..k {
        let d = comptime!(k - t);
        poly[d] = add_product::<F>(poly[d], w, poly[d - 1], log);
    }
}

/// Sets `poly` to the polynomial 1.
#[cube]
fn set_one<F: Float>(poly: &mut Array<F>, #[comptime] k: usize, #[comptime] log: bool) {
    poly[0] = if comptime!(log) {
        F::new(0.0)
    } else {
        F::new(1.0)
    };
    #[unroll]
    for d in 1..comptime!(k + 1) {
        poly[d] = zero::<F>(log);
    }
}

/// Copies the first `k + 1` coefficients of `from` into a new array.
#[cube]
fn copy_poly<F: Float>(from: &Array<F>, #[comptime] k: usize) -> Array<F> {
    let mut to = Array::<F>::new(comptime!(k + 1));
    #[unroll]
    for d in 0..comptime!(k + 1) {
        to[d] = from[d];
    }
    to
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
    #[comptime] log: bool,
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
                let mut acc = zero::<F>(log);
                #[unroll]
                for i in 0..comptime!(d + 1) {
                    acc = add_product::<F>(acc, shared[a + i], shared[b + d - i], log);
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

/// `sigma_0..k` of the non-label classes of this cube's row, in `full`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn forward<F: Float>(
    scores: &Tensor<F>,
    base: usize,
    step: usize,
    label: usize,
    m: F,
    ktau: F,
    shared: &mut Shared<[F]>,
    full: &mut Array<F>,
    #[comptime] k: usize,
    #[comptime] cube_dim: usize,
    #[comptime] log: bool,
) {
    let n = scores.shape(1);
    let inv_ktau = F::new(1.0) / ktau;
    let mut poly = Array::<F>::new(comptime!(k + 1));
    set_one::<F>(&mut poly, k, log);
    // Four strided loads in flight per unit before their factors are used: one at a time,
    // every element would wait a full memory latency.
    let mut j = UNIT_POS_X as usize;
    while j + comptime!(3 * cube_dim) < n {
        let w0 = factor_at::<F>(scores, base, step, j, label, m, inv_ktau, log);
        let w1 = factor_at::<F>(scores, base, step, j + cube_dim, label, m, inv_ktau, log);
        let w2 = factor_at::<F>(
            scores,
            base,
            step,
            j + 2 * cube_dim,
            label,
            m,
            inv_ktau,
            log,
        );
        let w3 = factor_at::<F>(
            scores,
            base,
            step,
            j + 3 * cube_dim,
            label,
            m,
            inv_ktau,
            log,
        );
        mul_linear::<F>(&mut poly, w0, k, log);
        mul_linear::<F>(&mut poly, w1, k, log);
        mul_linear::<F>(&mut poly, w2, k, log);
        mul_linear::<F>(&mut poly, w3, k, log);
        j += comptime!(4 * cube_dim);
    }
    while j < n {
        let w = factor_at::<F>(scores, base, step, j, label, m, inv_ktau, log);
        mul_linear::<F>(&mut poly, w, k, log);
        j += cube_dim;
    }
    cube_product::<F>(&poly, shared, full, k, cube_dim, log);
}

/// The factor of class `j` of the row: its weight, or the identity of `mul_linear` (weight 0,
/// `ln 0` in log space) for the label, which is not among the classes multiplied.
#[cube]
#[allow(clippy::too_many_arguments)]
fn factor_at<F: Float>(
    scores: &Tensor<F>,
    base: usize,
    step: usize,
    j: usize,
    label: usize,
    m: F,
    inv_ktau: F,
    #[comptime] log: bool,
) -> F {
    let w = weight::<F>((scores[base + j * step] - m) * inv_ktau, log);
    select(j == label, zero::<F>(log), w)
}

/// `w a / b` as a probability: `exp(w + a - b)` in log space.
#[cube]
fn ratio<F: Float>(w: F, a: F, b: F, #[comptime] log: bool) -> F {
    if comptime!(log) {
        (w + a - b).exp()
    } else {
        w * a / b
    }
}

/// The gradient entry of one non-label class of weight `w` (log weight in log space), written
/// at `at`; when the upward recursion is not trustworthy for it, the class is listed in
/// `unstable` instead, for the exact pass.
#[cube]
#[allow(clippy::too_many_arguments)]
fn gradient_entry<F: Float>(
    grad: &mut Tensor<F>,
    at: usize,
    w: F,
    full: &Array<F>,
    scale: F,
    unstable: &mut Shared<[u32]>,
    count: &Shared<[Atomic<u32>]>,
    class: usize,
    #[comptime] k: usize,
    #[comptime] log: bool,
) {
    // L_{d-1} and L_{d-2} of the leave-one-out polynomial (d = 1 .. k - 1).
    let mut l_prev = F::new(1.0);
    let mut l_prev2 = zero::<F>(log);
    if comptime!(log) {
        l_prev = F::new(0.0);
    }
    let mut stable = true;
    #[unroll]
    for d in 1..k {
        l_prev2 = l_prev;
        if comptime!(log) {
            let p = (w + l_prev - full[d]).exp();
            stable = stable && p <= F::new(0.5);
            l_prev = full[d] + log1p::<F>(F::new(0.0) - p);
        } else {
            let t = w * l_prev;
            stable = stable && t <= F::new(0.5) * full[d];
            l_prev = full[d] - t;
        }
    }
    if stable {
        let p_k = ratio::<F>(w, l_prev, full[k], log);
        let p_k1 = ratio::<F>(w, l_prev2, full[comptime!(k - 1)], log);
        grad[at] = scale * (p_k - p_k1);
    } else {
        let slot = count[0].fetch_add(1u32) as usize;
        if slot < comptime!(2 * k) {
            unstable[slot] = class as u32;
        }
    }
}

/// Loss and gradient of this cube's row from `sigma_0..k` in `full`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn finish<F: Float>(
    scores: &Tensor<F>,
    losses: &mut Tensor<F>,
    grad: &mut Tensor<F>,
    shared: &mut Shared<[F]>,
    full: &Array<F>,
    row: usize,
    label: usize,
    m: F,
    s_y: F,
    tau: F,
    alpha: F,
    #[comptime] k: usize,
    #[comptime] cube_dim: usize,
    #[comptime] with_grad: bool,
    #[comptime] log: bool,
) {
    let tid = UNIT_POS_X as usize;
    let n = scores.shape(1);
    let base = row * scores.stride(0);
    let step = scores.stride(1);
    let ktau = F::new(comptime!(k as f32)) * tau;
    let mut ln_ratio = full[k] - full[comptime!(k - 1)];
    if comptime!(!log) {
        ln_ratio = (full[k] / full[comptime!(k - 1)]).ln();
    }
    let log_r = alpha / tau + (m - s_y) / ktau + ln_ratio;
    if tid == 0 {
        let at = row * losses.stride(0);
        losses[at] = tau * softplus::<F>(log_r);
    }
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
        // Scores of four classes are loaded before any is processed (memory latency, as in
        // `forward`).
        let inv_ktau = F::new(1.0) / ktau;
        let mut j = tid;
        while j + comptime!(3 * cube_dim) < n {
            let s0 = scores[base + j * step];
            let s1 = scores[base + (j + cube_dim) * step];
            let s2 = scores[base + (j + 2 * cube_dim) * step];
            let s3 = scores[base + (j + 3 * cube_dim) * step];
            #[unroll]
            for u in 0..4 {
                let class = j + comptime!(u * cube_dim);
                let score = if comptime!(u == 0) {
                    s0
                } else if comptime!(u == 1) {
                    s1
                } else if comptime!(u == 2) {
                    s2
                } else {
                    s3
                };
                if class != label {
                    let w = weight::<F>((score - m) * inv_ktau, log);
                    gradient_entry::<F>(
                        grad,
                        g_row + class * g_step,
                        w,
                        full,
                        scale,
                        &mut unstable,
                        &count,
                        class,
                        k,
                        log,
                    );
                }
            }
            j += comptime!(4 * cube_dim);
        }
        while j < n {
            if j != label {
                let w = weight::<F>((scores[base + j * step] - m) * inv_ktau, log);
                gradient_entry::<F>(
                    grad,
                    g_row + j * g_step,
                    w,
                    full,
                    scale,
                    &mut unstable,
                    &count,
                    j,
                    k,
                    log,
                );
            }
            j += cube_dim;
        }
        sync_cube();
        let listed = (count[0].load() as usize).min(capacity);
        if listed > 0 {
            // Product of the stable classes' factors.
            let mut rest = Array::<F>::new(comptime!(k + 1));
            set_one::<F>(&mut rest, k, log);
            let mut j = tid;
            while j < n {
                let mut is_listed = j == label;
                for t in 0..listed {
                    is_listed = is_listed || unstable[t] as usize == j;
                }
                if !is_listed {
                    let w = weight::<F>((scores[base + j * step] - m) * inv_ktau, log);
                    mul_linear::<F>(&mut rest, w, k, log);
                }
                j += cube_dim;
            }
            let mut stable_product = Array::<F>::new(comptime!(k + 1));
            cube_product::<F>(&rest, shared, &mut stable_product, k, cube_dim, log);
            if tid < listed {
                let i = unstable[tid] as usize;
                let w_i = weight::<F>((scores[base + i * step] - m) * inv_ktau, log);
                let mut loo = copy_poly::<F>(&stable_product, k);
                for t in 0..listed {
                    if t != tid {
                        let other = unstable[t] as usize;
                        let w = weight::<F>((scores[base + other * step] - m) * inv_ktau, log);
                        mul_linear::<F>(&mut loo, w, k, log);
                    }
                }
                let mut all = copy_poly::<F>(&loo, k);
                mul_linear::<F>(&mut all, w_i, k, log);
                let p_k = ratio::<F>(w_i, loo[comptime!(k - 1)], all[k], log);
                let mut p_k1 = F::new(0.0);
                if comptime!(k >= 2) {
                    let lower = comptime!(k.saturating_sub(2));
                    p_k1 = ratio::<F>(w_i, loo[lower], all[comptime!(k - 1)], log);
                }
                grad[g_row + i * g_step] = scale * (p_k - p_k1);
            }
        }
    }
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
#[cube(launch_unchecked)]
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
    // Labels are validated on CPU backends; here an out-of-range label is clamped into the row
    // (a wrong loss for a wrong label, but never an access outside the scores).
    let raw_label = u32::cast_from(targets[row * targets.stride(0)]) as usize;
    let label = select(raw_label < n, raw_label, n - 1);
    let tau = F::cast_from(tau);
    let alpha = F::cast_from(alpha);
    let ktau = F::new(comptime!(k as f32)) * tau;
    let s_y = scores[base + label * step];
    let mut shared = Shared::<[F]>::new_slice(comptime!(cube_dim * (k + 1)));

    // 1. Largest non-label score.
    let mut local_max = F::min_value();
    let mut j = tid;
    while j + comptime!(3 * cube_dim) < n {
        let a = select(j == label, F::min_value(), scores[base + j * step]);
        let b = scores[base + (j + cube_dim) * step];
        let c = scores[base + (j + 2 * cube_dim) * step];
        let d = scores[base + (j + 3 * cube_dim) * step];
        let b = select(j + cube_dim == label, F::min_value(), b);
        let c = select(j + 2 * cube_dim == label, F::min_value(), c);
        let d = select(j + 3 * cube_dim == label, F::min_value(), d);
        local_max = local_max.max(a.max(b)).max(c.max(d));
        j += comptime!(4 * cube_dim);
    }
    while j < n {
        if j != label {
            local_max = local_max.max(scores[base + j * step]);
        }
        j += cube_dim;
    }
    let m = cube_max::<F>(local_max, &mut shared, cube_dim);

    // 2. sigma_0..k in f32; every unit sees the same coefficients, so the choice of number
    //    system below is uniform across the cube.
    let mut full = Array::<F>::new(comptime!(k + 1));
    forward::<F>(
        scores,
        base,
        step,
        label,
        m,
        ktau,
        &mut shared,
        &mut full,
        k,
        cube_dim,
        false,
    );
    let mut in_range =
        full[k] >= F::new(LINEAR_MIN) && full[comptime!(k - 1)] >= F::new(LINEAR_MIN);
    #[unroll]
    for d in 0..comptime!(k + 1) {
        in_range = in_range && full[d] <= F::new(LINEAR_MAX);
    }
    if in_range {
        finish::<F>(
            scores,
            losses,
            grad,
            &mut shared,
            &full,
            row,
            label,
            m,
            s_y,
            tau,
            alpha,
            k,
            cube_dim,
            with_grad,
            false,
        );
    } else {
        // 3. Out of f32's comfortable range: the same in log space.
        forward::<F>(
            scores,
            base,
            step,
            label,
            m,
            ktau,
            &mut shared,
            &mut full,
            k,
            cube_dim,
            true,
        );
        finish::<F>(
            scores,
            losses,
            grad,
            &mut shared,
            &full,
            row,
            label,
            m,
            s_y,
            tau,
            alpha,
            k,
            cube_dim,
            with_grad,
            true,
        );
    }
}

/// Largest of each unit's `local` value over the cube, returned to every unit. `shared` holds at
/// least `cube_dim` values.
#[cube]
fn cube_max<F: Float>(local: F, shared: &mut Shared<[F]>, #[comptime] cube_dim: usize) -> F {
    let tid = UNIT_POS_X as usize;
    shared[tid] = local;
    sync_cube();
    let mut active = cube_dim.runtime();
    while active > 1 {
        active /= 2;
        if tid < active {
            shared[tid] = shared[tid].max(shared[tid + active]);
        }
        sync_cube();
    }
    let out = shared[0];
    sync_cube();
    out
}

/// The hard top-k SVM `max(0, alpha + (s_\y[k] - s_y) / k)` and its subgradient (`-1/k` on the
/// label, `1/(k t)` on each of the `t` non-label scores tied with the k-th largest), one sample
/// per cube. The k-th largest non-label score is found in at most k rounds: each round takes
/// the largest score below the previous round's value and counts its ties, until k scores have
/// been passed.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn hard_topk_svm_kernel<F: Float, I: Numeric>(
    scores: &Tensor<F>,
    targets: &Tensor<I>,
    losses: &mut Tensor<F>,
    grad: &mut Tensor<F>,
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
    // Out-of-range labels are clamped, as in the smooth kernel.
    let raw_label = u32::cast_from(targets[row * targets.stride(0)]) as usize;
    let label = select(raw_label < n, raw_label, n - 1);
    let s_y = scores[base + label * step];
    let mut shared = Shared::<[F]>::new_slice(cube_dim);
    let ties = Shared::<[Atomic<u32>]>::new_slice(1usize);

    let mut below = F::max_value();
    let mut kth = F::min_value();
    let mut passed = 0u32;
    let mut tied = 0u32;
    for _ in 0..k {
        if passed < comptime!(k as u32) {
            let mut local = F::min_value();
            let mut j = tid;
            while j < n {
                let s = scores[base + j * step];
                if j != label && s < below {
                    local = local.max(s);
                }
                j += cube_dim;
            }
            let value = cube_max::<F>(local, &mut shared, cube_dim);
            if tid == 0 {
                ties[0].store(0u32);
            }
            sync_cube();
            let mut count = 0u32;
            let mut j = tid;
            while j < n {
                if j != label && scores[base + j * step] == value {
                    count += 1;
                }
                j += cube_dim;
            }
            ties[0].fetch_add(count);
            sync_cube();
            tied = ties[0].load();
            sync_cube();
            passed += tied;
            kth = value;
            below = value;
        }
    }
    let inv_k = F::new(1.0) / F::new(comptime!(k as f32));
    let loss = (F::cast_from(alpha) + (kth - s_y) * inv_k).max(F::new(0.0));
    if tid == 0 {
        let at = row * losses.stride(0);
        losses[at] = loss;
    }
    if comptime!(with_grad) {
        let g_row = row * grad.stride(0);
        let g_step = grad.stride(1);
        let active = loss > F::new(0.0);
        let share = inv_k / F::cast_from(tied);
        let mut j = tid;
        while j < n {
            let s = scores[base + j * step];
            let mut g = F::new(0.0);
            if active && j == label {
                g = F::new(0.0) - inv_k;
            }
            if active && j != label && s == kth {
                g = share;
            }
            grad[g_row + j * g_step] = g;
            j += cube_dim;
        }
    }
}
