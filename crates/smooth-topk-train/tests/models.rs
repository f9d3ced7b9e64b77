//! Architectures against independent parameter counts, and output shapes.

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use smooth_topk_train::ModelKind;

/// burn's `num_params` also counts batch norm's running mean and variance (two values per
/// channel) besides its scale and shift; PyTorch-style counts leave those buffers out.
fn buffers(batch_norm_channels: usize) -> usize {
    2 * batch_norm_channels
}

#[test]
fn densenet_40_40_matches_the_bottleneck_compression_arithmetic() {
    // Worked out by hand from the architecture (stem 3x3 to 80 channels; 3 blocks of 6
    // bottleneck layers, growth 40, 1x1 to 160 channels; transitions halving; BN; linear):
    // stem 2160, block 1 522480, transition 1 51840, block 2 600240, transition 2 80800,
    // block 3 639120, final BN 880, linear 44100.
    let trainable = 1_941_620;
    // Batch-norm channels: blocks 2040 + 2520 + 2760, transitions 320 + 400, final 440.
    let bn = 2040 + 320 + 2520 + 400 + 2760 + 440;
    let model = ModelKind::Densenet40.init(100, 32, &Device::flex());
    assert_eq!(model.num_params(), trainable + buffers(bn));
}

#[test]
fn resnet18_imagenet_has_torchvisions_parameter_count() {
    // torchvision's resnet18(num_classes=1000) has 11,689,512 parameters; its batch norms
    // have 4800 channels (stem 64, blocks 2x(64x2 + 128x2 + 256x2 + 512x2), shortcuts 128 +
    // 256 + 512).
    let model = ModelKind::Resnet18.init(1000, 224, &Device::flex());
    assert_eq!(model.num_params(), 11_689_512 + buffers(4800));
}

#[test]
fn the_mlp_has_one_hidden_layer_of_256() {
    let model = ModelKind::Mlp.init(100, 32, &Device::flex());
    assert_eq!(model.num_params(), 3072 * 256 + 256 + 256 * 100 + 100);
}

#[test]
fn every_model_maps_images_to_logits() {
    let device = Device::flex();
    for (kind, side) in [
        (ModelKind::Mlp, 32),
        (ModelKind::Mlp, 12),
        (ModelKind::Convnet, 32),
        (ModelKind::Densenet40, 32),
        (ModelKind::Resnet18, 32),
        (ModelKind::Resnet18, 64),
    ] {
        let model = kind.init(7, side, &device).valid();
        let images =
            Tensor::<4>::random([2, 3, side, side], Distribution::Normal(0.0, 1.0), &device);
        let logits = model.forward(images);
        assert_eq!(logits.dims(), [2, 7], "{kind:?} at {side}");
        let values = logits.into_data().try_into_vec_as::<f32>().unwrap();
        assert!(values.iter().all(|v| v.is_finite()), "{kind:?}");
    }
}
