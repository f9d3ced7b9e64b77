//! The CubeCL backends (CUDA, ROCm, Vulkan/wgpu, Metal, cubecl CPU): the fused kernel of
//! [`crate::kernel`], launched on device buffers with no host round trip.

use crate::backend::{on_host, TopkLossBackend};
use crate::kernel::{hard_topk_svm_kernel, smooth_topk_svm_kernel};
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::TensorMetadata;
use burn::tensor::Shape;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeBackend;
use cubecl::prelude::{CubeCount, CubeDim};
use smooth_topk::{AnyLoss, Loss};

/// Largest grid extent along x on every runtime (WebGPU's limit).
const MAX_GRID_X: usize = 65535;
/// Shared-memory budget of a cube, in 4-byte values (32 KiB, or the device's limit if lower):
/// per unit `k + 1` mantissas, its maximum and (extended launch) `k + 1` exponents, plus a list
/// of up to `2k` unstable classes and its counter.
const SHARED_VALUES: usize = 8192;

/// Largest k the kernels are built for: their per-degree loops are unrolled (the polynomial
/// products are O(k^2) instructions), so compile time and registers grow fast beyond it. Larger
/// k, like batches the kernels cannot take (empty, or no more classes than k), go to the
/// numeric core on the host, which computes or reports them as on the CPU backends.
const MAX_KERNEL_K: usize = 64;

/// Units per cube: a power of two giving each unit about 16 classes (fewer units mean a
/// shallower reduction tree and more cubes resident per multiprocessor), at least 32, at most
/// 256, and small enough that the reduction fits in `budget` 4-byte values of shared memory.
fn cube_dim_for(n: usize, k: usize, budget: usize) -> usize {
    let wanted = (n / 16).next_power_of_two().clamp(32, 256);
    let fits = (budget.saturating_sub(2 * k + 1) / (2 * k + 3)).max(1);
    let fits = 1usize << (usize::BITS - 1 - fits.leading_zeros());
    wanted.min(fits)
}

/// The leading 12 significant bits of `value` as an f32 (the kernel's `high_bits` on the host).
fn high_bits(value: f64) -> f32 {
    f32::from_bits((value as f32).to_bits() & 0xFFFF_F000)
}

fn launch(
    logits: CubeTensor,
    targets: CubeTensor,
    loss: AnyLoss,
    with_grad: bool,
) -> (CubeTensor, Option<CubeTensor>) {
    let [batch, n] = logits.shape().dims::<2>();
    let k = match loss {
        AnyLoss::Smooth(l) => l.k(),
        AnyLoss::Hard(l) => l.k(),
        AnyLoss::CrossEntropy(_) => 1,
    };
    if batch == 0 || n < loss.min_classes() || k > MAX_KERNEL_K {
        return on_host::<CubeBackend>(logits, targets, loss, with_grad);
    }
    let scores = into_contiguous(logits);
    let targets = into_contiguous(targets);
    let (client, device, dtype) = (scores.client.clone(), scores.device.clone(), scores.dtype);
    let losses = empty_device_dtype(client.clone(), device.clone(), Shape::new([batch]), dtype);
    // Without a gradient the kernels never touch `grad`; a one-element stand-in fills the slot.
    let grad_shape = if with_grad {
        Shape::new([batch, n])
    } else {
        Shape::new([1, 1])
    };
    let grad = empty_device_dtype(client.clone(), device, grad_shape, dtype);
    let grid = CubeCount::Static(
        batch.min(MAX_GRID_X) as u32,
        batch.div_ceil(MAX_GRID_X) as u32,
        1,
    );
    let budget = (client.properties().hardware.max_shared_memory_size / 4).min(SHARED_VALUES);
    let dtypes = [
        dtype_to_storage_type(dtype),
        dtype_to_storage_type(targets.dtype),
    ];
    // Safety (both kernels): every index formed is in bounds: rows beyond the batch return
    // before any access, classes stay below n, the label is clamped into 0..n, `grad` is touched
    // only when it has the full shape, and shared-memory indices stay below the sizes allocated
    // from the same comptime values.
    match loss {
        AnyLoss::Hard(hard) => {
            let cube_dim = cube_dim_for(n, 1, budget);
            unsafe {
                hard_topk_svm_kernel::launch_unchecked(
                    &client,
                    grid,
                    CubeDim::new_1d(cube_dim as u32),
                    scores.into_tensor_arg(),
                    targets.into_tensor_arg(),
                    losses.clone().into_tensor_arg(),
                    grad.clone().into_tensor_arg(),
                    hard.alpha() as f32,
                    hard.k(),
                    cube_dim,
                    with_grad,
                    dtypes,
                );
            }
        }
        smooth => {
            // Cross-entropy is the smooth top-1 SVM with tau = 1 and no margin.
            let (tau, alpha) = match smooth {
                AnyLoss::Smooth(l) => (l.tau(), l.alpha()),
                _ => (1.0, 0.0),
            };
            let cube_dim = cube_dim_for(n, k, budget);
            // Scalars formed in f64, split as `kernel::number::log_ratio_sum` expects.
            let ktau = k as f64 * tau;
            let inv = 1.0 / ktau;
            let inv0 = high_bits(inv);
            let inv1 = high_bits(inv - f64::from(inv0));
            let inv2 = (inv - f64::from(inv0) - f64::from(inv1)) as f32;
            let margin = alpha / tau;
            let margin_hi = margin as f32;
            // The linear launch on every row, then the extended one, which only works on the
            // rows the first marked (see the kernel).
            for ext in [false, true] {
                unsafe {
                    smooth_topk_svm_kernel::launch_unchecked(
                        &client,
                        grid.clone(),
                        CubeDim::new_1d(cube_dim as u32),
                        scores.clone().into_tensor_arg(),
                        targets.clone().into_tensor_arg(),
                        losses.clone().into_tensor_arg(),
                        grad.clone().into_tensor_arg(),
                        tau as f32,
                        ktau as f32,
                        inv as f32,
                        inv0,
                        inv1,
                        inv2,
                        margin_hi,
                        (margin - f64::from(margin_hi)) as f32,
                        1.0,
                        k,
                        cube_dim,
                        with_grad,
                        ext,
                        dtypes,
                    );
                }
            }
        }
    }
    (losses, with_grad.then_some(grad))
}

impl TopkLossBackend for CubeBackend {
    fn topk_loss(logits: CubeTensor, targets: CubeTensor, loss: AnyLoss) -> CubeTensor {
        launch(logits, targets, loss, false).0
    }

    fn topk_loss_and_grad(
        logits: CubeTensor,
        targets: CubeTensor,
        loss: AnyLoss,
    ) -> (CubeTensor, CubeTensor) {
        let (losses, grad) = launch(logits, targets, loss, true);
        (losses, grad.expect("gradient requested"))
    }
}
