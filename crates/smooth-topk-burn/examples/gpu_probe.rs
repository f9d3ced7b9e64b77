//! What the wgpu runtime lets a one-cube-per-row kernel reach on the device, as a yardstick for
//! the fused loss kernel: row kernels with the loss kernel's layout (one cube per row, each unit
//! a strided share of the row, four loads in flight) that do only
//! - `sum`: read the row and sum `exp` of it (the forward's memory traffic, almost no arithmetic);
//! - `poly5`: read the row and update degree-5 polynomial coefficients per class (the forward's
//!   arithmetic without its tree);
//! - `write`: read the row and write `exp(x) / 2` per class (the gradient pass's traffic),
//!
//! each with scalar loads and with 4-wide vector loads, for several cube sizes, plus burn's own
//! cross-entropy forward + backward through autodiff on the same backend. Median ms per call
//! with device synchronisation.
//!
//! `cargo run --release -p smooth-topk-burn --features wgpu --example gpu_probe [-- --floor]`
//! (`--floor`: only the [1, 10] shape, i.e. what a launch and a synchronisation cost).

use burn::backend::{Backend, Dispatch};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Device, DeviceKind, Distribution, Int, Shape, Tensor};
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeBackend;
use cubecl::prelude::{CubeCount, CubeDim};
use smooth_topk::{AnyLoss, SmoothTopkSvm};
use smooth_topk_burn::TopkLossBackend;

#[path = "support/timing.rs"]
mod timing;
use timing::median_ms;

/// What a probe kernel does per class (the kernel receives it as its comptime `work`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Work {
    Sum = probe::SUM as isize,
    Poly5 = probe::POLY5 as isize,
    Write = probe::WRITE as isize,
}

mod probe {
    use cubecl::prelude::*;

    pub const SUM: u32 = 0;
    pub const POLY5: u32 = 1;
    pub const WRITE: u32 = 2;

    /// The per-class work on one loaded vector `e = exp(x)`: add it up (`SUM`), update the
    /// degree-5 polynomial by each lane (`POLY5`), or write `e / 2` at `at` (`WRITE`).
    #[cube]
    fn consume<N: Size>(
        e: Vector<f32, N>,
        poly: &mut Array<f32>,
        out: &mut Tensor<Vector<f32, N>>,
        at: usize,
        #[comptime] work: u32,
    ) {
        if comptime!(work == WRITE) {
            out[at] = e * Vector::broadcast(f32::new(0.5));
        } else {
            #[unroll]
            for i in 0..N::value() {
                let w = e.extract(i);
                if comptime!(work == POLY5) {
                    #[unroll]
                    for t in 0..5 {
                        let d = comptime!(5 - t);
                        poly[d] += w * poly[d - 1];
                    }
                } else {
                    poly[1] += w;
                }
            }
        }
    }

    #[cube(launch_unchecked)]
    pub fn row_probe<N: Size>(
        x: &Tensor<Vector<f32, N>>,
        sums: &mut Tensor<f32>,
        out: &mut Tensor<Vector<f32, N>>,
        #[comptime] cube_dim: usize,
        #[comptime] work: u32,
    ) {
        let row = CUBE_POS_X as usize;
        let tid = UNIT_POS_X as usize;
        let width = N::value();
        let n = x.shape(1) / width;
        let base = row * x.stride(0) / width;
        let mut poly = Array::<f32>::new(6usize);
        #[unroll]
        for d in 0..6 {
            poly[d] = f32::new(0.0);
        }
        poly[0] = f32::new(1.0);
        let mut j = tid;
        while j + comptime!(3 * cube_dim) < n {
            let mut v = Array::<Vector<f32, N>>::new(4usize);
            #[unroll]
            for u in 0..4 {
                v[u] = x[base + j + comptime!(u * cube_dim)];
            }
            #[unroll]
            for u in 0..4 {
                let at = base + j + comptime!(u * cube_dim);
                consume::<N>(v[u].exp(), &mut poly, out, at, work);
            }
            j += comptime!(4 * cube_dim);
        }
        while j < n {
            consume::<N>(x[base + j].exp(), &mut poly, out, base + j, work);
            j += cube_dim;
        }
        let mut total = f32::new(0.0);
        #[unroll]
        for d in 0..6 {
            total += poly[d];
        }
        let mut shared = Shared::<[f32]>::new_slice(cube_dim);
        shared[tid] = total;
        sync_cube();
        let mut active = cube_dim.runtime();
        while active > 1 {
            active /= 2;
            if tid < active {
                shared[tid] += shared[tid + active];
            }
            sync_cube();
        }
        if tid == 0 {
            sums[row] = shared[0];
        }
    }
}

/// One launch of the probe kernel over a `[batch, n]` buffer: one cube of `cube` units per row.
#[allow(clippy::too_many_arguments)]
fn launch_probe(
    client: &cubecl::client::Client,
    batch: usize,
    cube: usize,
    vector: usize,
    x: &CubeTensor,
    sums: &CubeTensor,
    out: &CubeTensor,
    work: Work,
) {
    // Safety: every index the kernel forms stays inside the row it reads or writes (rows are
    // whole vectors: `main` only takes a vector width that divides n).
    unsafe {
        probe::row_probe::launch_unchecked(
            client,
            CubeCount::Static(batch as u32, 1, 1),
            CubeDim::new_1d(cube as u32),
            vector,
            x.clone().into_tensor_arg(),
            sums.clone().into_tensor_arg(),
            out.clone().into_tensor_arg(),
            cube,
            work as u32,
        );
    }
}

fn main() {
    let cube_device = cubecl::Device::from(cubecl::wgpu::WgpuDevice::default());
    let device = Device::wgpu(DeviceKind::DefaultDevice);
    let sync = || CubeBackend::sync(&cube_device).unwrap();
    let client = cube_device.client();
    let only_floor = std::env::args().any(|a| a == "--floor");
    let shapes: &[(usize, usize)] = if only_floor {
        &[(10, 1)]
    } else {
        &[
            (10, 1),
            (1000, 4096),
            (10000, 256),
            (10000, 4096),
            (100000, 4096),
        ]
    };
    println!("== row probes: median ms per launch; GB/s counts the bytes read and written ==");
    println!(
        "{:>7} {:>6} {:>6} {:>4} {:>5} {:>10} {:>9}",
        "n", "batch", "work", "vec", "cube", "ms", "GB/s"
    );
    for &(n, batch) in shapes {
        // wgpu zero-fills new buffers: the probes read zeros, which costs what any value costs.
        let dtype = burn::tensor::DType::F32;
        let x = empty_device_dtype(
            client.clone(),
            cube_device.clone(),
            Shape::new([batch, n]),
            dtype,
        );
        let sums = empty_device_dtype(
            client.clone(),
            cube_device.clone(),
            Shape::new([batch]),
            dtype,
        );
        let out = empty_device_dtype(
            client.clone(),
            cube_device.clone(),
            Shape::new([batch, n]),
            dtype,
        );
        for work in [Work::Sum, Work::Poly5, Work::Write] {
            for vector in [1usize, 4].into_iter().filter(|v| n % v == 0) {
                for cube in [128usize, 256, 1024] {
                    let launch =
                        || launch_probe(&client, batch, cube, vector, &x, &sums, &out, work);
                    let ms = median_ms(50, launch, sync);
                    let bytes =
                        (batch * n * 4) as f64 * if work == Work::Write { 2.0 } else { 1.0 };
                    println!(
                        "{n:>7} {batch:>6} {:>6} {vector:>4} {cube:>5} {ms:>10.4} {:>9.0}",
                        format!("{work:?}").to_lowercase(),
                        bytes / ms / 1e6
                    );
                }
            }
        }
        if batch == 1 {
            // What one more launch in the same call costs (the fused op launches twice).
            for launches in [2usize, 4] {
                let ms = median_ms(
                    50,
                    || {
                        for _ in 0..launches {
                            launch_probe(&client, 1, 256, 1, &x, &sums, &out, Work::Sum);
                        }
                    },
                    sync,
                );
                println!("{n:>7} {batch:>6} {launches} launches of sum, one sync: {ms:.4} ms");
            }
        }
    }
    println!("== burn's cross-entropy (autodiff, wgpu) and the fused op, median ms per call ==");
    println!(
        "{:>7} {:>6} {:>14} {:>14} {:>14}",
        "n", "batch", "burn ce f+b", "svm fwd", "svm f+b"
    );
    let autodiff = device.clone().autodiff();
    let ce = CrossEntropyLossConfig::new().init(&autodiff);
    let dsync = || device.sync().unwrap();
    for &(n, batch) in shapes {
        let x = Tensor::<2>::random([batch, n], Distribution::Normal(0.0, 1.0), &device);
        let y = Tensor::<1, Int>::random([batch], Distribution::Uniform(0.0, n as f64), &device);
        let xa = Tensor::<2>::random([batch, n], Distribution::Normal(0.0, 1.0), &autodiff);
        let ya = Tensor::<1, Int>::random([batch], Distribution::Uniform(0.0, n as f64), &autodiff);
        let burn_ce = median_ms(
            30,
            || {
                let logits = xa.clone().require_grad();
                let grads = ce.forward(logits.clone(), ya.clone()).backward();
                drop(logits.grad(&grads));
            },
            dsync,
        );
        let svm: AnyLoss = SmoothTopkSvm::new(5, 1.0, 1.0).unwrap().into();
        let fwd = median_ms(
            30,
            || {
                drop(<Dispatch as TopkLossBackend>::topk_loss(
                    x.clone().into_dispatch(),
                    y.clone().into_dispatch(),
                    svm,
                ))
            },
            dsync,
        );
        let both = median_ms(
            30,
            || {
                drop(<Dispatch as TopkLossBackend>::topk_loss_and_grad(
                    x.clone().into_dispatch(),
                    y.clone().into_dispatch(),
                    svm,
                ))
            },
            dsync,
        );
        println!("{n:>7} {batch:>6} {burn_ce:>14.4} {fwd:>14.4} {both:>14.4}");
    }
}
