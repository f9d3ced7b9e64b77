//! The CubeCL backends (CUDA, ROCm, Vulkan/wgpu, Metal, cubecl CPU): the fused kernel of
//! [`crate::kernel`], launched on device buffers with no host round trip.

use crate::backend::{on_host, TopkLossBackend};
use crate::kernel::{hard_topk_svm_kernel, smooth_topk_svm_kernel};
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::{DType, TensorMetadata};
use burn::tensor::Shape;
use burn_cubecl::kernel::{into_contiguous, untile};
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeBackend, CubeTuneId};
use cubecl::prelude::{CubeCount, CubeDim, ElemType};
use cubecl::tune::{local_tuner, AutotuneOutput, LocalTuner, Tunable, TunableSet};
use cubecl::AutotuneKey;
use serde::{Deserialize, Serialize};
use smooth_topk::{AnyLoss, HardTopkSvm, Loss};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Largest grid extent along x on every runtime (WebGPU's limit).
const MAX_GRID_X: usize = 65535;
/// Shared-memory budget of a cube, in 4-byte values (32 KiB, or the device's limit if lower);
/// what each plan needs of it is counted in [`KernelPlan::geometry`].
const SHARED_VALUES: usize = 8192;

/// Largest k the kernels are built for: their per-degree loops are unrolled (the polynomial
/// products are O(k^2) instructions), so compile time and registers grow fast beyond it. Larger
/// k, like batches the kernels cannot take (empty, or no more classes than k), go to the
/// numeric core on the host, which computes or reports them as on the CPU backends.
const MAX_KERNEL_K: usize = 64;

/// Units per cube: a power of two giving each unit about 16 classes (fewer units mean a
/// shallower reduction tree and more cubes resident per multiprocessor), at least 32, at most
/// 256, and small enough for the shared memory: `per_unit` 4-byte values for each unit and
/// `fixed` for the cube, in a `budget` of 4-byte values.
fn cube_dim_for(n: usize, per_unit: usize, fixed: usize, budget: usize) -> usize {
    let wanted = (n / 16).next_power_of_two().clamp(32, 256);
    wanted.min(largest_fitting(per_unit, fixed, budget))
}

/// The largest power of two of units whose shared memory fits (at least 1).
fn largest_fitting(per_unit: usize, fixed: usize, budget: usize) -> usize {
    power_of_two_at_most(budget.saturating_sub(fixed) / per_unit)
}

/// The largest power of two not above `x` (1 for 0): the reduction trees halve the cube.
fn power_of_two_at_most(x: usize) -> usize {
    1usize << (usize::BITS - 1 - x.max(1).leading_zeros())
}

/// How the smooth top-k kernel is launched. Every plan computes the same values; which is
/// fastest depends on the device (registers per unit, launch cost, memory latency), so the
/// launcher times the plans a shape allows on the device itself the first time it meets that
/// shape (cubecl's autotuner) and keeps the fastest. [`set_kernel_plan`] pins one instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelPlan {
    /// The extended passes run in place, in the one launch, for the rows that need them;
    /// otherwise in a second launch that only works on those rows (which keeps their registers
    /// off the common kernel, for the price of a launch).
    pub one_launch: bool,
    /// Each unit keeps its scores in registers from the forward pass to the gradient instead
    /// of reading the row again. Offered for rows of at most [`MAX_KEPT`] scores per unit at
    /// the largest cube whose shared memory fits, and k up to 16.
    pub keep_scores: bool,
}

/// Most scores a unit keeps in registers under [`KernelPlan::keep_scores`].
pub const MAX_KEPT: usize = 16;
/// Largest k for [`KernelPlan::keep_scores`]: the gradient's per-class code is unrolled once
/// per kept score, so code size grows as `kept * k`.
const MAX_KEPT_K: usize = 16;

impl KernelPlan {
    /// Every plan; the first is the one that always fits.
    pub const ALL: [KernelPlan; 4] = [
        KernelPlan {
            one_launch: false,
            keep_scores: false,
        },
        KernelPlan {
            one_launch: true,
            keep_scores: false,
        },
        KernelPlan {
            one_launch: false,
            keep_scores: true,
        },
        KernelPlan {
            one_launch: true,
            keep_scores: true,
        },
    ];

    /// A short name (the autotuner's record and the benchmarks' tables use it).
    pub fn name(self) -> &'static str {
        match (self.one_launch, self.keep_scores) {
            (false, false) => "two-launches",
            (true, false) => "one-launch",
            (false, true) => "two-launches-kept",
            (true, true) => "one-launch-kept",
        }
    }

    /// The launch geometry of this plan for rows of `n` classes, or `None` when the device
    /// cannot take it (shared memory, units per cube, or too many scores per unit).
    fn geometry(self, n: usize, k: usize, budget: usize, max_units: usize) -> Option<Geometry> {
        // Shared memory, in 4-byte values (see the kernel): each expansion of `finish` lists up
        // to 2k unstable classes and a counter; the linear pass holds k + 2 values per unit and
        // a one-value stand-in for exponents, the extended passes k + 2 and k + 1 per unit.
        let list = 2 * k + 1;
        let (linear_per_unit, extended_per_unit) = (k + 2, 2 * k + 3);
        let extended_dim = cube_dim_for(n, extended_per_unit, list, budget).min(max_units);
        let (per_unit, fixed) = if self.one_launch {
            (extended_per_unit, 2 * list + 1)
        } else {
            // The linear launch keeps the extended launch's cube unless it needs a larger one.
            (linear_per_unit, list + 1)
        };
        let mut linear_dim = cube_dim_for(n, per_unit, fixed, budget).min(max_units);
        if !self.one_launch {
            linear_dim = linear_dim.min(extended_dim);
        }
        let mut kept = 0;
        if self.keep_scores {
            if k > MAX_KEPT_K {
                return None;
            }
            let needed = n.div_ceil(MAX_KEPT).next_power_of_two();
            linear_dim = linear_dim.max(needed);
            if linear_dim > largest_fitting(per_unit, fixed, budget).min(max_units) {
                return None;
            }
            // A multiple of 4, so that few kernels are compiled across row lengths.
            kept = n.div_ceil(linear_dim).next_multiple_of(4);
        }
        Some(Geometry {
            linear_dim,
            extended_dim: if self.one_launch {
                linear_dim
            } else {
                extended_dim
            },
            kept,
        })
    }
}

/// Units per cube of each launch and scores kept per unit.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    linear_dim: usize,
    extended_dim: usize,
    kept: usize,
}

/// The leading 12 significant bits of `value` as an f32 (the kernel's `high_bits` on the host).
fn high_bits(value: f64) -> f32 {
    f32::from_bits((value as f32).to_bits() & 0xFFFF_F000)
}

/// The pinned plan: 0 for none (autotune), otherwise an index into [`KernelPlan::ALL`] plus 1.
static PINNED_PLAN: AtomicUsize = AtomicUsize::new(0);

/// Pins every later smooth top-k launch in this process to `plan`, or with `None` returns to
/// autotuning (the default). For benchmarks and tests that measure or check one plan; a pinned
/// plan the device cannot take for a shape falls back to the first of [`KernelPlan::ALL`] (and
/// counts in [`pinned_plan_fallbacks`]).
/// Launches run when burn executes its queue, so pin before the calls and keep the pin until
/// their results are read.
pub fn set_kernel_plan(plan: Option<KernelPlan>) {
    let index = plan.map_or(0, |p| {
        1 + KernelPlan::ALL
            .iter()
            .position(|&q| q == p)
            .expect("every plan is in ALL")
    });
    PINNED_PLAN.store(index, Ordering::Relaxed);
}

/// Launches whose pinned plan did not fit their shape and ran the first plan instead.
static PINNED_FALLBACKS: AtomicUsize = AtomicUsize::new(0);

/// How many launches so far ran the first plan because the pinned one did not fit their shape
/// on the device (see [`set_kernel_plan`]): benchmarks and tests use it to tell which plan
/// actually ran.
pub fn pinned_plan_fallbacks() -> usize {
    PINNED_FALLBACKS.load(Ordering::Relaxed)
}

fn pinned_plan() -> Option<KernelPlan> {
    match PINNED_PLAN.load(Ordering::Relaxed) {
        0 => None,
        i => Some(KernelPlan::ALL[i - 1]),
    }
}

/// Losses `[batch]` and, when asked, the gradient `[batch, n]`.
type Outputs = (CubeTensor, Option<CubeTensor>);

/// Output buffers and the launch grid of a batch of `[batch, n]` scores.
fn outputs_and_grid(scores: &CubeTensor, with_grad: bool) -> (CubeTensor, CubeTensor, CubeCount) {
    let [batch, n] = scores.shape().dims::<2>();
    let (client, device, dtype) = (scores.client.clone(), scores.device.clone(), scores.dtype);
    let losses = empty_device_dtype(client.clone(), device.clone(), Shape::new([batch]), dtype);
    // Without a gradient the kernels never touch `grad`; a one-element stand-in fills the slot.
    let grad_shape = if with_grad {
        Shape::new([batch, n])
    } else {
        Shape::new([1, 1])
    };
    let grad = empty_device_dtype(client, device, grad_shape, dtype);
    let grid = CubeCount::Static(
        batch.min(MAX_GRID_X) as u32,
        batch.div_ceil(MAX_GRID_X) as u32,
        1,
    );
    (losses, grad, grid)
}

/// The storage types the kernels are expanded for: scores (and outputs), labels.
fn storage_types(scores: &CubeTensor, targets: &CubeTensor) -> [ElemType; 2] {
    [
        dtype_to_storage_type(scores.dtype),
        dtype_to_storage_type(targets.dtype),
    ]
}

/// Shared memory of a cube in 4-byte values, and units per cube, on this device.
fn device_limits(scores: &CubeTensor) -> (usize, usize) {
    let hardware = &scores.client.properties().hardware;
    let budget = (hardware.max_shared_memory_size / 4).min(SHARED_VALUES);
    let units = (hardware.max_units_per_cube as usize).min(hardware.max_cube_dim.0 as usize);
    // Some devices allow e.g. 384 units; the kernels need a power of two.
    (budget, power_of_two_at_most(units))
}

fn launch_hard(
    scores: CubeTensor,
    targets: CubeTensor,
    hard: HardTopkSvm,
    with_grad: bool,
) -> Outputs {
    let n = scores.shape()[1];
    let (losses, grad, grid) = outputs_and_grid(&scores, with_grad);
    let (budget, units) = device_limits(&scores);
    // One value per unit (the reductions) and a counter of ties.
    let cube_dim = cube_dim_for(n, 1, 1, budget).min(units);
    let dtypes = storage_types(&scores, &targets);
    // Safety: every index formed is in bounds: rows beyond the batch return before any
    // access, classes stay below n, the label is clamped into 0..n, `grad` is touched only
    // when it has the full shape, and shared-memory indices stay below the sizes allocated
    // from the same comptime values.
    unsafe {
        hard_topk_svm_kernel::launch_unchecked(
            &scores.client.clone(),
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
    (losses, with_grad.then_some(grad))
}

/// The smooth top-k SVM (cross-entropy included) under one plan, or an error naming why the
/// device cannot take that plan for this shape.
fn launch_smooth(
    scores: &CubeTensor,
    targets: &CubeTensor,
    loss: &AnyLoss,
    with_grad: bool,
    plan: KernelPlan,
) -> Result<Outputs, String> {
    let n = scores.shape()[1];
    // Cross-entropy is the smooth top-1 SVM with tau = 1 and no margin.
    let (tau, alpha) = match loss {
        AnyLoss::Smooth(l) => (l.tau(), l.alpha()),
        _ => (1.0, 0.0),
    };
    let k = smooth_k(loss);
    let (budget, units) = device_limits(scores);
    let geometry = plan
        .geometry(n, k, budget, units)
        .ok_or_else(|| format!("plan {} does not fit n = {n}, k = {k}", plan.name()))?;
    let (losses, grad, grid) = outputs_and_grid(scores, with_grad);
    let dtypes = storage_types(scores, targets);
    // Scalars formed in f64, split as `kernel::number::log_ratio_sum` expects.
    let ktau = k as f64 * tau;
    let inv = 1.0 / ktau;
    let inv0 = high_bits(inv);
    let inv1 = high_bits(inv - f64::from(inv0));
    let inv2 = (inv - f64::from(inv0) - f64::from(inv1)) as f32;
    let margin = alpha / tau;
    let margin_hi = margin as f32;
    // (linear, extended) passes of each launch: one launch with both, or the linear launch on
    // every row and then the extended one, which only works on the rows the first marked.
    let launches: &[(bool, bool)] = if plan.one_launch {
        &[(true, true)]
    } else {
        &[(true, false), (false, true)]
    };
    for &(linear, extended) in launches {
        let cube_dim = if linear {
            geometry.linear_dim
        } else {
            geometry.extended_dim
        };
        let kept = if linear { geometry.kept } else { 0 };
        // Safety: as for the hard kernel; the kept scores are indexed by comptime values below
        // their comptime size, and shared memory fits (`KernelPlan::geometry`).
        unsafe {
            smooth_topk_svm_kernel::launch_unchecked(
                &scores.client,
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
                linear,
                extended,
                kept,
                dtypes,
            );
        }
    }
    Ok((losses, with_grad.then_some(grad)))
}

/// The scores as the kernels read them. The kernels index every row through its stride, so a
/// row-major batch is read where it lies, also when its rows are padded: CUDA allocates 2-D
/// tensors "pitched" (each row starting at an aligned address), which `into_contiguous` would
/// copy into a packed buffer on every call, a whole extra read and write of the batch (on the
/// H200 it made the call at n = 10000, batch 4096 take 0.40 ms instead of 0.26: BENCHMARKS.md).
/// Other layouts (transposed, storage-tiled, quantized) are laid out as rows first, so that the
/// kernels' reads stay coalesced.
fn rows_in_place(logits: CubeTensor) -> CubeTensor {
    let logits = untile(logits);
    if logits.qparams.is_none() && logits.meta.strides()[1] == 1 {
        logits
    } else {
        into_contiguous(logits)
    }
}

fn launch(logits: CubeTensor, targets: CubeTensor, loss: AnyLoss, with_grad: bool) -> Outputs {
    let [batch, n] = logits.shape().dims::<2>();
    let k = match &loss {
        AnyLoss::Hard(l) => l.k(),
        AnyLoss::Smooth(_) | AnyLoss::CrossEntropy(_) => smooth_k(&loss),
        // The kernels compute the smooth SVM family; the field's other losses run on the host
        // copy of the batch (see the crate's documentation).
        _ => return on_host::<CubeBackend>(logits, targets, loss, with_grad),
    };
    if batch == 0 || n < loss.min_classes() || k > MAX_KERNEL_K {
        return on_host::<CubeBackend>(logits, targets, loss, with_grad);
    }
    let scores = rows_in_place(logits);
    let targets = into_contiguous(targets);
    if let AnyLoss::Hard(hard) = &loss {
        return launch_hard(scores, targets, *hard, with_grad);
    }
    let loss = &loss;
    match pinned_plan() {
        Some(plan) => launch_smooth(&scores, &targets, loss, with_grad, plan)
            .or_else(|_| {
                PINNED_FALLBACKS.fetch_add(1, Ordering::Relaxed);
                launch_smooth(&scores, &targets, loss, with_grad, KernelPlan::ALL[0])
            })
            .expect("the first plan fits every shape"),
        None => autotuned_smooth(scores, targets, loss.clone(), with_grad),
    }
}

/// What the autotuner keys its choice on. `n` is exact (a model's class count is fixed) and the
/// batch is rounded up to a power of two (a last, smaller batch reuses the choice). `fitting`
/// has bit i set when plan i of [`KernelPlan::ALL`] fits this shape on this device: a choice is
/// only ever reused for a key where it fits, including one read back from cubecl's cache on disk,
/// which is shared by every device with the same runtime id (another GPU in the same slot, an
/// older build), and where running a plan that does not fit would fail.
#[derive(AutotuneKey, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct PlanKey {
    n: usize,
    #[autotune(anchor)]
    batch: usize,
    k: usize,
    with_grad: bool,
    dtype: DType,
    fitting: u8,
}

/// Scores, labels, loss and whether the gradient is wanted: one smooth top-k evaluation.
type TuneInputs = (CubeTensor, CubeTensor, AnyLoss, bool);

/// [`Outputs`], as the autotuner requires of a result.
struct TunedOutputs(Outputs);

impl AutotuneOutput for TunedOutputs {}

fn plan_key((scores, _, loss, with_grad): &TuneInputs) -> PlanKey {
    let [batch, n] = scores.shape().dims::<2>();
    let k = smooth_k(loss);
    let (budget, units) = device_limits(scores);
    let fitting = KernelPlan::ALL
        .iter()
        .enumerate()
        .filter(|(_, plan)| plan.geometry(n, k, budget, units).is_some())
        .fold(0u8, |mask, (i, _)| mask | 1 << i);
    PlanKey::new(n, batch, k, *with_grad, scores.dtype, fitting)
}

/// k of the smooth kernel's launch (cross-entropy is its top-1 case).
fn smooth_k(loss: &AnyLoss) -> usize {
    match loss {
        AnyLoss::Smooth(l) => l.k(),
        _ => 1,
    }
}

fn tunable(plan: KernelPlan) -> Tunable<PlanKey, TuneInputs, TunedOutputs> {
    Tunable::new(
        plan.name(),
        move |(scores, targets, loss, with_grad): TuneInputs| {
            launch_smooth(&scores, &targets, &loss, with_grad, plan).map(TunedOutputs)
        },
    )
}

/// The smooth kernel under the plan cubecl's autotuner found fastest on this device for this
/// key; the first call with a new key times every plan that fits (on copies of these inputs)
/// and stores the choice (in memory, and in cubecl's cache on disk).
fn autotuned_smooth(
    scores: CubeTensor,
    targets: CubeTensor,
    loss: AnyLoss,
    with_grad: bool,
) -> Outputs {
    static TUNER: LocalTuner<PlanKey, CubeTuneId> = local_tuner!("smooth-topk-plan");
    let client = scores.client.clone();
    let id = CubeTuneId::new(&client, &scores.device);
    let plans = TUNER.init(&id, || {
        // The plan that always fits first: the tuner falls back on the first to succeed.
        KernelPlan::ALL.into_iter().fold(
            TunableSet::<PlanKey, TuneInputs, TunedOutputs>::new_cloning_inputs(plan_key),
            |set, plan| set.with(tunable(plan)),
        )
    });
    let inputs = (scores, targets, loss, with_grad);
    TUNER.execute(&id, &client, plans, inputs).0
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

#[cfg(test)]
mod tests {
    use super::*;

    /// 32 KiB of shared memory and 1024 units per cube (lavapipe, and NVIDIA through Vulkan).
    const BUDGET: usize = SHARED_VALUES;
    const UNITS: usize = 1024;

    /// 4-byte values of shared memory a launch of `dim` units allocates (the kernel's
    /// allocations, counted independently of `geometry`).
    fn shared_values(k: usize, dim: usize, linear: bool, extended: bool) -> usize {
        let list = 2 * k + 1;
        let mut values = dim * (k + 2);
        if linear {
            values += 1 + list;
        }
        if extended {
            values += dim * (k + 1) + list;
        }
        values
    }

    #[test]
    fn two_launches_keep_the_measured_shape() {
        // The shape measured in BENCHMARKS.md: one unit per ~16 classes, 32..256 units, and
        // the same cube for both launches.
        for (n, dim) in [(10, 32), (1000, 64), (10_000, 256), (100_000, 256)] {
            let g = KernelPlan::ALL[0].geometry(n, 5, BUDGET, UNITS).unwrap();
            assert_eq!(
                (g.linear_dim, g.extended_dim, g.kept),
                (dim, dim, 0),
                "n = {n}"
            );
        }
    }

    #[test]
    fn every_geometry_fits_and_keeps_every_class() {
        for plan in KernelPlan::ALL {
            for k in [1, 2, 5, 10, 16, 17, 40, 64] {
                for n in [k + 1, 31, 100, 1000, 4097, 10_000, 16_384, 16_385, 100_000] {
                    for (budget, units) in [(BUDGET, UNITS), (4096, 256), (BUDGET, 128)] {
                        let Some(g) = plan.geometry(n, k, budget, units) else {
                            // Only keeping scores can be refused.
                            assert!(plan.keep_scores, "{plan:?} n={n} k={k}");
                            continue;
                        };
                        let what = format!("{plan:?} n={n} k={k} budget={budget}");
                        for dim in [g.linear_dim, g.extended_dim] {
                            assert!(dim.is_power_of_two() && dim <= units, "{what}");
                        }
                        let (linear, extended) = if plan.one_launch {
                            (shared_values(k, g.linear_dim, true, true), 0)
                        } else {
                            (
                                shared_values(k, g.linear_dim, true, false),
                                shared_values(k, g.extended_dim, false, true),
                            )
                        };
                        // A cube of one unit is the last resort when nothing fits.
                        assert!(
                            linear.max(extended) <= budget || g.linear_dim == 1,
                            "{what}"
                        );
                        if plan.keep_scores {
                            assert!(g.kept <= MAX_KEPT.next_multiple_of(4), "{what}");
                            assert!(g.kept * g.linear_dim >= n, "{what}: classes not kept");
                        } else {
                            assert_eq!(g.kept, 0, "{what}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn keeping_scores_is_offered_where_registers_allow() {
        let kept = KernelPlan::ALL[2];
        assert!(kept.geometry(1000, 5, BUDGET, UNITS).is_some());
        assert!(kept.geometry(16_384, 2, BUDGET, UNITS).is_some());
        assert!(kept.geometry(16_385, 2, BUDGET, UNITS).is_none());
        assert!(kept.geometry(1000, 17, BUDGET, UNITS).is_none());
        // One launch carries the extended passes' shared memory too.
        assert!(KernelPlan::ALL[3]
            .geometry(10_000, 5, BUDGET, UNITS)
            .is_none());
    }
}
