//! Devices of a backend, by index.

use burn::tensor::Device;

use crate::config::BackendKind;
use crate::TrainError;

/// A device of a backend (without autodiff): its default device, or the one at `index` (wgpu:
/// the `index`-th discrete GPU; CUDA: device `index`). The CPU backend has a single device,
/// which every index names.
pub fn device_at(backend: BackendKind, index: Option<usize>) -> Result<Device, TrainError> {
    let _ = index;
    match backend {
        BackendKind::Cpu => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => Ok(Device::wgpu(match index {
            None => burn::tensor::DeviceKind::DefaultDevice,
            Some(i) => burn::tensor::DeviceKind::DiscreteGpu(i),
        })),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => Ok(Device::cuda(index.unwrap_or(0))),
        #[allow(unreachable_patterns)]
        other => Err(TrainError::InvalidConfig(format!(
            "backend = {other:?} (not compiled in; rebuild with --features {})",
            format!("{other:?}").to_lowercase()
        ))),
    }
}

/// The default device of a backend.
pub fn device(backend: BackendKind) -> Result<Device, TrainError> {
    device_at(backend, None)
}

/// The devices of `indices`, with autodiff, for data-parallel training: the default device for
/// `[0]`, the indexed devices otherwise.
pub fn training_devices(
    backend: BackendKind,
    indices: &[usize],
) -> Result<Vec<Device>, TrainError> {
    if indices == [0] {
        return Ok(vec![device(backend)?.autodiff()]);
    }
    indices
        .iter()
        .map(|&i| device_at(backend, Some(i)).map(|d| d.autodiff()))
        .collect()
}
