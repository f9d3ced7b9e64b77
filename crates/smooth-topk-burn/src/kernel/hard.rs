//! The hard top-k SVM kernel.

use super::{cube_max, cube_row, label_of};
use cubecl::prelude::*;

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
    let row = cube_row();
    if row >= losses.shape(0) {
        terminate!();
    }
    let tid = UNIT_POS_X as usize;
    let n = scores.shape(1);
    let base = row * scores.stride(0);
    let step = scores.stride(1);
    let label = label_of::<I>(targets, row, n);
    let s_y = f32::cast_from(scores[base + label * step]);
    let mut shared = Shared::<[f32]>::new_slice(cube_dim);
    let ties = Shared::<[Atomic<u32>]>::new_slice(1usize);

    let mut below = f32::max_value();
    let mut kth = f32::min_value();
    let mut passed = 0u32;
    let mut tied = 0u32;
    for _ in 0..k {
        if passed < comptime!(k as u32) {
            let mut local = f32::min_value();
            let mut j = tid;
            while j < n {
                let s = f32::cast_from(scores[base + j * step]);
                if j != label && s < below {
                    local = local.max(s);
                }
                j += cube_dim;
            }
            let value = cube_max(local, &mut shared, cube_dim);
            if tid == 0 {
                ties[0].store(0u32);
            }
            sync_cube();
            let mut count = 0u32;
            let mut j = tid;
            while j < n {
                if j != label && f32::cast_from(scores[base + j * step]) == value {
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
    let inv_k = f32::new(1.0) / f32::new(comptime!(k as f32));
    let loss = (alpha + (kth - s_y) * inv_k).max(f32::new(0.0));
    if tid == 0 {
        let at = row * losses.stride(0);
        losses[at] = F::cast_from(loss);
    }
    if comptime!(with_grad) {
        let g_row = row * grad.stride(0);
        let g_step = grad.stride(1);
        let active = loss > f32::new(0.0);
        let share = inv_k / f32::cast_from(tied);
        let mut j = tid;
        while j < n {
            let s = f32::cast_from(scores[base + j * step]);
            let mut g = f32::new(0.0);
            if active && j == label {
                g = f32::new(0.0) - inv_k;
            }
            if active && j != label && s == kth {
                g = share;
            }
            grad[g_row + j * g_step] = F::cast_from(g);
            j += cube_dim;
        }
    }
}
