//! The fused CubeCL kernels: one cube (workgroup) per sample computes a top-k loss and, when
//! asked, its exact gradient, in one launch for the whole batch.
//!
//! - [`smooth`]: the smooth top-k SVM (cross-entropy is its case `k = 1, tau = 1, alpha = 0`).
//! - [`hard`]: the hard top-k SVM and its subgradient.
//! - [`number`]: the two number systems the smooth kernel's polynomial passes run in.
//!
//! Scores are read in their storage type and computed on in `f32`; losses and gradients are
//! written back in the storage type.

mod hard;
mod number;
mod smooth;

pub use hard::hard_topk_svm_kernel;
pub use smooth::smooth_topk_svm_kernel;

use cubecl::prelude::*;

/// Largest of each unit's `local` value over the cube, returned to every unit. `shared` holds at
/// least `cube_dim` values.
#[cube]
fn cube_max(local: f32, shared: &mut Shared<[f32]>, #[comptime] cube_dim: usize) -> f32 {
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

/// The row (sample) of this cube: cubes are laid out on a 2-D grid so that batches beyond 65535
/// samples fit, and the last grid row may run past the batch.
#[cube]
fn cube_row() -> usize {
    CUBE_POS_Y as usize * CUBE_COUNT_X as usize + CUBE_POS_X as usize
}

/// The label of `row`, clamped into `0..n`: labels are validated on CPU backends; here an
/// out-of-range label gives a wrong loss for a wrong label, but never an access outside the
/// scores.
#[cube]
fn label_of<I: Numeric>(targets: &Tensor<I>, row: usize, n: usize) -> usize {
    let raw_label = u32::cast_from(targets[row * targets.stride(0)]) as usize;
    select(raw_label < n, raw_label, n - 1)
}
