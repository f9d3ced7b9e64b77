//! The classifiers of the experiments: the paper's DenseNet 40-40 (CIFAR-100), ResNet-18
//! (ImageNet subsets) and a small convnet for quick runs on a CPU.
//!
//! All take `[batch, 3, height, width]` normalised images and return `[batch, classes]` logits.
//! Batch norm runs in training mode on an autodiff device and uses its running statistics on a
//! plain one (`Module::valid`), as burn's `BatchNorm` decides by itself.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{
    AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, AvgPool2d, AvgPool2dConfig, MaxPool2d,
    MaxPool2dConfig,
};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// Smallest input side every model accepts (each halves its input three times).
pub const MIN_INPUT_SIDE: usize = 8;

/// Which architecture to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ModelKind {
    /// A multilayer perceptron on the pixels (one hidden layer of 256 ReLU units, no batch
    /// norm): cheap on a CPU, able to memorise noisy labels, and exactly data-parallel (its
    /// gradient over a batch is the sum of its gradients over the shards).
    Mlp,
    /// Three conv-BN-ReLU-pool stages (16, 32, 64 channels): trains in minutes on 2 cores.
    Convnet,
    /// DenseNet-BC, depth 40, growth rate 40, compression 0.5 (the paper's CIFAR-100 model).
    Densenet40,
    /// ResNet-18 (basic blocks 2-2-2-2); a 3x3 stem for inputs under 64 pixels, the ImageNet
    /// 7x7/2 stem with max pooling otherwise.
    Resnet18,
}

impl ModelKind {
    /// The name used on the command line and in saved configurations.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Mlp => "mlp",
            ModelKind::Convnet => "convnet",
            ModelKind::Densenet40 => "densenet40",
            ModelKind::Resnet18 => "resnet18",
        }
    }

    /// Builds the model with freshly initialised weights (burn's default initialisers, drawn
    /// from the device's seeded generator).
    pub fn init(self, classes: usize, image_side: usize, device: &Device) -> Classifier {
        match self {
            ModelKind::Mlp => {
                Classifier::Mlp(Mlp::new(3 * image_side * image_side, classes, device))
            }
            ModelKind::Convnet => Classifier::Convnet(Convnet::new(classes, device)),
            ModelKind::Densenet40 => {
                Classifier::Densenet(DenseNet::new(40, 40, 0.5, classes, device))
            }
            ModelKind::Resnet18 => {
                Classifier::Resnet(ResNet::resnet18(classes, image_side, device))
            }
        }
    }
}

/// Any of the architectures, as one module type (so the training loop is written once).
#[derive(Module, Debug)]
pub enum Classifier {
    Mlp(Mlp),
    Convnet(Convnet),
    Densenet(DenseNet),
    Resnet(ResNet),
}

impl Classifier {
    /// Logits `[batch, classes]` of images `[batch, 3, h, w]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Classifier::Mlp(m) => m.forward(images),
            Classifier::Convnet(m) => m.forward(images),
            Classifier::Densenet(m) => m.forward(images),
            Classifier::Resnet(m) => m.forward(images),
        }
    }
}

fn conv(channels: [usize; 2], kernel: usize, stride: usize, device: &Device) -> Conv2d {
    let pad = kernel / 2;
    Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .init(device)
}

fn batch_norm(channels: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(channels).init(device)
}

/// Global average pooling followed by flattening to `[batch, channels]`.
fn global_pool(pool: &AdaptiveAvgPool2d, x: Tensor<4>) -> Tensor<2> {
    let [batch, channels, ..] = x.dims();
    pool.forward(x).reshape([batch, channels])
}

fn global_pool_layer() -> AdaptiveAvgPool2d {
    AdaptiveAvgPool2dConfig::new([1, 1]).init()
}

/// Flattened pixels, a hidden layer of [`Mlp::HIDDEN`] ReLU units, a linear classifier.
#[derive(Module, Debug)]
pub struct Mlp {
    hidden: Linear,
    relu: Relu,
    classifier: Linear,
}

impl Mlp {
    pub const HIDDEN: usize = 256;

    pub fn new(inputs: usize, classes: usize, device: &Device) -> Self {
        Self {
            hidden: LinearConfig::new(inputs, Self::HIDDEN).init(device),
            relu: Relu::new(),
            classifier: LinearConfig::new(Self::HIDDEN, classes).init(device),
        }
    }

    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let [batch, channels, height, width] = images.dims();
        let x = images.reshape([batch, channels * height * width]);
        self.classifier
            .forward(self.relu.forward(self.hidden.forward(x)))
    }
}

/// Conv, batch norm, ReLU.
#[derive(Module, Debug)]
pub struct ConvBnRelu {
    conv: Conv2d,
    norm: BatchNorm,
    relu: Relu,
}

impl ConvBnRelu {
    fn new(channels: [usize; 2], device: &Device) -> Self {
        Self {
            conv: conv(channels, 3, 1, device),
            norm: batch_norm(channels[1], device),
            relu: Relu::new(),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.relu.forward(self.norm.forward(self.conv.forward(x)))
    }
}

/// The small convnet: three conv-BN-ReLU-max-pool stages, global average pooling, a linear
/// layer. About 25k parameters before the classifier; ~3 M multiply-adds per 32x32 image.
#[derive(Module, Debug)]
pub struct Convnet {
    stages: Vec<ConvBnRelu>,
    pool: MaxPool2d,
    global: AdaptiveAvgPool2d,
    classifier: Linear,
}

impl Convnet {
    const WIDTHS: [usize; 4] = [3, 16, 32, 64];

    pub fn new(classes: usize, device: &Device) -> Self {
        let stages = Self::WIDTHS
            .windows(2)
            .map(|w| ConvBnRelu::new([w[0], w[1]], device))
            .collect();
        Self {
            stages,
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            global: global_pool_layer(),
            classifier: LinearConfig::new(Self::WIDTHS[3], classes).init(device),
        }
    }

    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let x = self
            .stages
            .iter()
            .fold(images, |x, stage| self.pool.forward(stage.forward(x)));
        self.classifier.forward(global_pool(&self.global, x))
    }
}

/// DenseNet-BC bottleneck layer: BN-ReLU-conv1x1 (4 x growth) then BN-ReLU-conv3x3 (growth);
/// its output is concatenated to its input.
#[derive(Module, Debug)]
pub struct DenseLayer {
    norm1: BatchNorm,
    conv1: Conv2d,
    norm2: BatchNorm,
    conv2: Conv2d,
    relu: Relu,
}

impl DenseLayer {
    fn new(input: usize, growth: usize, device: &Device) -> Self {
        let inner = 4 * growth;
        Self {
            norm1: batch_norm(input, device),
            conv1: conv([input, inner], 1, 1, device),
            norm2: batch_norm(inner, device),
            conv2: conv([inner, growth], 3, 1, device),
            relu: Relu::new(),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self
            .conv1
            .forward(self.relu.forward(self.norm1.forward(x.clone())));
        let y = self.conv2.forward(self.relu.forward(self.norm2.forward(y)));
        Tensor::cat(vec![x, y], 1)
    }
}

/// BN-ReLU-conv1x1 (compression) then 2x2 average pooling between dense blocks.
#[derive(Module, Debug)]
pub struct Transition {
    norm: BatchNorm,
    conv: Conv2d,
    pool: AvgPool2d,
    relu: Relu,
}

impl Transition {
    fn new(channels: [usize; 2], device: &Device) -> Self {
        Self {
            norm: batch_norm(channels[0], device),
            conv: conv(channels, 1, 1, device),
            pool: AvgPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            relu: Relu::new(),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.pool
            .forward(self.conv.forward(self.relu.forward(self.norm.forward(x))))
    }
}

/// DenseNet-BC for 32x32 inputs (Huang et al. 2017), as in the paper's CIFAR-100 experiments:
/// a 3x3 stem with 2 x growth channels, three dense blocks of (depth - 4) / 6 bottleneck layers,
/// compressing transitions between them, then BN-ReLU, global pooling and a linear layer.
#[derive(Module, Debug)]
pub struct DenseNet {
    stem: Conv2d,
    blocks: Vec<Vec<DenseLayer>>,
    transitions: Vec<Transition>,
    norm: BatchNorm,
    relu: Relu,
    global: AdaptiveAvgPool2d,
    classifier: Linear,
}

impl DenseNet {
    pub fn new(
        depth: usize,
        growth: usize,
        compression: f64,
        classes: usize,
        device: &Device,
    ) -> Self {
        let layers_per_block = (depth - 4) / 6;
        let mut channels = 2 * growth;
        let stem = conv([3, channels], 3, 1, device);
        let mut blocks = Vec::new();
        let mut transitions = Vec::new();
        for block in 0..3 {
            let layers = (0..layers_per_block)
                .map(|i| DenseLayer::new(channels + i * growth, growth, device))
                .collect();
            blocks.push(layers);
            channels += layers_per_block * growth;
            if block < 2 {
                let out = (channels as f64 * compression).floor() as usize;
                transitions.push(Transition::new([channels, out], device));
                channels = out;
            }
        }
        Self {
            stem,
            blocks,
            transitions,
            norm: batch_norm(channels, device),
            relu: Relu::new(),
            global: global_pool_layer(),
            classifier: LinearConfig::new(channels, classes).init(device),
        }
    }

    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = self.stem.forward(images);
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.iter().fold(x, |x, layer| layer.forward(x));
            if let Some(transition) = self.transitions.get(i) {
                x = transition.forward(x);
            }
        }
        let x = self.relu.forward(self.norm.forward(x));
        self.classifier.forward(global_pool(&self.global, x))
    }
}

/// ResNet basic block: two 3x3 conv-BN with a projected shortcut when the shape changes.
#[derive(Module, Debug)]
pub struct BasicBlock {
    conv1: Conv2d,
    norm1: BatchNorm,
    conv2: Conv2d,
    norm2: BatchNorm,
    /// 1x1 projection when the block changes the shape.
    shortcut_conv: Option<Conv2d>,
    shortcut_norm: Option<BatchNorm>,
    relu: Relu,
}

impl BasicBlock {
    fn new(channels: [usize; 2], stride: usize, device: &Device) -> Self {
        let [input, output] = channels;
        let project = stride != 1 || input != output;
        Self {
            conv1: conv(channels, 3, stride, device),
            norm1: batch_norm(output, device),
            conv2: conv([output, output], 3, 1, device),
            norm2: batch_norm(output, device),
            shortcut_conv: project.then(|| conv(channels, 1, stride, device)),
            shortcut_norm: project.then(|| batch_norm(output, device)),
            relu: Relu::new(),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self
            .relu
            .forward(self.norm1.forward(self.conv1.forward(x.clone())));
        let y = self.norm2.forward(self.conv2.forward(y));
        let identity = match (&self.shortcut_conv, &self.shortcut_norm) {
            (Some(conv), Some(norm)) => norm.forward(conv.forward(x)),
            _ => x,
        };
        self.relu.forward(y + identity)
    }
}

/// ResNet-18 (He et al. 2016).
#[derive(Module, Debug)]
pub struct ResNet {
    stem: Conv2d,
    stem_norm: BatchNorm,
    /// Present with the ImageNet stem only.
    stem_pool: Option<MaxPool2d>,
    blocks: Vec<BasicBlock>,
    relu: Relu,
    global: AdaptiveAvgPool2d,
    classifier: Linear,
}

impl ResNet {
    /// Inputs smaller than this get the CIFAR-style 3x3 stem without pooling: the ImageNet
    /// stem would shrink a 32x32 image to 8x8 before the first block.
    const IMAGENET_STEM_FROM: usize = 64;

    pub fn resnet18(classes: usize, image_side: usize, device: &Device) -> Self {
        let imagenet = image_side >= Self::IMAGENET_STEM_FROM;
        let (stem, stem_pool) = if imagenet {
            let pool = MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init();
            (conv([3, 64], 7, 2, device), Some(pool))
        } else {
            (conv([3, 64], 3, 1, device), None)
        };
        let widths = [64, 128, 256, 512];
        let mut blocks = Vec::new();
        let mut input = 64;
        for (stage, &width) in widths.iter().enumerate() {
            let stride = if stage == 0 { 1 } else { 2 };
            blocks.push(BasicBlock::new([input, width], stride, device));
            blocks.push(BasicBlock::new([width, width], 1, device));
            input = width;
        }
        Self {
            stem,
            stem_norm: batch_norm(64, device),
            stem_pool,
            blocks,
            relu: Relu::new(),
            global: global_pool_layer(),
            classifier: LinearConfig::new(512, classes).init(device),
        }
    }

    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = self
            .relu
            .forward(self.stem_norm.forward(self.stem.forward(images)));
        if let Some(pool) = &self.stem_pool {
            x = pool.forward(x);
        }
        let x = self.blocks.iter().fold(x, |x, block| block.forward(x));
        self.classifier.forward(global_pool(&self.global, x))
    }
}
