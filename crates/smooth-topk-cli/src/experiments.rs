//! `train`, `eval` and `reproduce`: flags to a `smooth_topk_train` configuration, then the
//! library runs it and this prints the outcome.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use smooth_topk_train::eval::{evaluate_checkpoint, EvalRequest, Split};
use smooth_topk_train::progress::Console;
use smooth_topk_train::reproduce::{markdown, run_grid, Experiment, Grid};
use smooth_topk_train::step_bench::{self, parameter_count, StepBench};
use smooth_topk_train::{
    BackendKind, DataSource, Grouping, LossKind, ModelKind, Observer, TrainConfig,
};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DataName {
    /// Built-in generated 32x32 images, 100 classes in 20 groups of 5 (no download).
    Synthetic,
    /// CIFAR-100 binary files (`train.bin`, `test.bin`) in --data-dir.
    Cifar100,
    /// Image folder: --data-dir/train/<class>/*.jpg|png and --data-dir/val/<class>/...
    Folder,
}

fn source(data: DataName, dir: &Option<PathBuf>) -> Result<DataSource, String> {
    let dir = || {
        dir.clone()
            .ok_or_else(|| "--data-dir is required with this --data".to_string())
    };
    Ok(match data {
        DataName::Synthetic => DataSource::Synthetic,
        DataName::Cifar100 => DataSource::Cifar100 { dir: dir()? },
        DataName::Folder => DataSource::Folder { dir: dir()? },
    })
}

/// Flags shared by `train` and `reproduce`; anything left out takes the paper's default for
/// the data (see `TrainConfig::defaults`).
#[derive(Args, Clone)]
#[group(id = "run_flags", multiple = true)]
pub struct RunArgs {
    #[arg(long, value_enum, default_value = "synthetic")]
    data: DataName,
    /// Directory of the CIFAR-100 binaries or of the image folder.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, value_enum)]
    model: Option<ModelArg>,
    /// Top-k SVM's k (also the largest k reported).
    #[arg(long)]
    k: Option<usize>,
    /// Smooth SVM temperature.
    #[arg(long)]
    tau: Option<f64>,
    /// SVM margin.
    #[arg(long)]
    alpha: Option<f64>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    /// Initial learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Epochs (1-based) from which the learning rate is multiplied by --lr-decay again,
    /// e.g. 151,226.
    #[arg(long, value_delimiter = ',')]
    lr_schedule: Option<Vec<usize>>,
    #[arg(long)]
    lr_decay: Option<f64>,
    #[arg(long)]
    momentum: Option<f64>,
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Training images (balanced per class); default all (synthetic: 10000).
    #[arg(long)]
    train_size: Option<usize>,
    /// Validation images held out of the training data (clean labels).
    #[arg(long)]
    valid_size: Option<usize>,
    /// Test images (synthetic data only).
    #[arg(long)]
    test_size: Option<usize>,
    /// Side of the stored images of an image folder (decoded and resized once).
    #[arg(long)]
    image_size: Option<usize>,
    /// Side of the network input (random crops in training).
    #[arg(long)]
    crop: Option<usize>,
    /// Label-noise grouping: consecutive indices (the reference) or the coarse labels.
    #[arg(long, value_enum, default_value = "consecutive")]
    noise_grouping: GroupingArg,
    /// No random crop and flip in training.
    #[arg(long)]
    no_augment: bool,
    /// Evaluate the final checkpoints on ten crops.
    #[arg(long)]
    ten_crop: bool,
    /// Seed of the dataset itself (synthetic images, validation split, subsets).
    #[arg(long, default_value_t = 0)]
    data_seed: u64,
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendArg,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelArg {
    Convnet,
    Densenet40,
    Resnet18,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GroupingArg {
    Consecutive,
    Coarse,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// burn's Flex CPU backend.
    Cpu,
    /// wgpu (needs a build with --features wgpu).
    Wgpu,
    /// CUDA (needs a build with --features cuda).
    Cuda,
}

fn model_kind(m: ModelArg) -> ModelKind {
    match m {
        ModelArg::Convnet => ModelKind::Convnet,
        ModelArg::Densenet40 => ModelKind::Densenet40,
        ModelArg::Resnet18 => ModelKind::Resnet18,
    }
}

fn backend_kind(b: BackendArg) -> BackendKind {
    match b {
        BackendArg::Cpu => BackendKind::Cpu,
        BackendArg::Wgpu => BackendKind::Wgpu,
        BackendArg::Cuda => BackendKind::Cuda,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LossArg {
    Ce,
    Svm,
    HardSvm,
}

impl From<LossArg> for LossKind {
    fn from(l: LossArg) -> Self {
        match l {
            LossArg::Ce => LossKind::Ce,
            LossArg::Svm => LossKind::Svm,
            LossArg::HardSvm => LossKind::HardSvm,
        }
    }
}

impl RunArgs {
    /// The configuration for `loss`: the data's defaults, then every flag given.
    fn config(&self, loss: LossKind, noise: f64, seed: u64) -> Result<TrainConfig, String> {
        let mut c = TrainConfig::defaults(source(self.data, &self.data_dir)?, loss);
        if let Some(m) = self.model {
            c.model = model_kind(m);
        }
        let set = |target: &mut usize, v: Option<usize>| *target = v.unwrap_or(*target);
        let setf = |target: &mut f64, v: Option<f64>| *target = v.unwrap_or(*target);
        set(&mut c.loss.k, self.k);
        c.report_k = c.loss.k;
        setf(&mut c.loss.tau, self.tau);
        setf(&mut c.loss.alpha, self.alpha);
        set(&mut c.epochs, self.epochs);
        set(&mut c.batch_size, self.batch_size);
        setf(&mut c.lr, self.lr);
        if let Some(s) = &self.lr_schedule {
            c.lr_milestones = s.clone();
        }
        setf(&mut c.lr_decay, self.lr_decay);
        setf(&mut c.momentum, self.momentum);
        setf(&mut c.weight_decay, self.weight_decay);
        if self.train_size.is_some() {
            c.data.train_size = self.train_size;
        }
        if self.valid_size.is_some() {
            c.data.valid_size = self.valid_size;
        }
        set(&mut c.data.test_size, self.test_size);
        if self.image_size.is_some() && self.data != DataName::Folder {
            return Err("--image-size applies to --data folder only (the others are 32x32)".into());
        }
        set(&mut c.data.image_size, self.image_size);
        // A smaller --image-size alone shrinks the default crop with it.
        c.data.crop = self.crop.unwrap_or(c.data.crop.min(c.data.image_size));
        c.data.noise = noise;
        c.data.noise_grouping = match self.noise_grouping {
            GroupingArg::Consecutive => Grouping::Consecutive,
            GroupingArg::Coarse => Grouping::Coarse,
        };
        c.data.augment = !self.no_augment;
        c.data.ten_crop |= self.ten_crop;
        c.data.data_seed = self.data_seed;
        c.seed = seed;
        c.backend = backend_kind(self.backend);
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }
}

#[derive(Args)]
pub struct TrainArgs {
    #[arg(long, value_enum, default_value = "svm")]
    loss: LossArg,
    /// Label-noise probability on the training labels.
    #[arg(long, default_value_t = 0.0)]
    noise: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory: config, metrics (CSV, JSON), results, plots, checkpoints.
    #[arg(long, default_value = "runs/train")]
    out: PathBuf,
    /// Continue the run saved in this directory, with its saved configuration (no other
    /// flags).
    #[arg(long, conflicts_with_all = ["out", "loss", "noise", "seed", "run_flags"])]
    resume: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
}

pub fn train(args: &TrainArgs) -> Result<(), String> {
    let mut console = Console::new("");
    let (config, out) = match &args.resume {
        // The library reads the saved configuration itself.
        Some(dir) => (None, dir.clone()),
        None => (
            Some(args.run.config(args.loss.into(), args.noise, args.seed)?),
            args.out.clone(),
        ),
    };
    smooth_topk_train::train(config.as_ref(), &out, &mut console).map_err(|e| e.to_string())?;
    println!(
        "wrote {0}/results.json, {0}/metrics.csv, {0}/accuracy.png, {0}/loss.png",
        out.display()
    );
    Ok(())
}

#[derive(Args)]
pub struct EvalArgs {
    /// A saved model directory (a run's best-top1 or best-top5).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Evaluate on other data (same classes) instead of the run's own.
    #[arg(long, value_enum)]
    data: Option<DataName>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "test")]
    split: SplitArg,
    /// Report top-1 .. top-k.
    #[arg(long, default_value_t = 5)]
    k: usize,
    #[arg(long)]
    ten_crop: bool,
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendArg,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SplitArg {
    Train,
    Valid,
    Test,
}

pub fn eval(args: &EvalArgs) -> Result<(), String> {
    let request = EvalRequest {
        source: args.data.map(|d| source(d, &args.data_dir)).transpose()?,
        split: match args.split {
            SplitArg::Train => Split::Train,
            SplitArg::Valid => Split::Valid,
            SplitArg::Test => Split::Test,
        },
        k: args.k,
        ten_crop: args.ten_crop,
        backend: backend_kind(args.backend),
    };
    let result = evaluate_checkpoint(&args.checkpoint, &request).map_err(|e| e.to_string())?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&result).map_err(|e| e.to_string())?
        );
    } else {
        println!(
            "{} (epoch {}), {:?} split, {} images{}: loss {:.4}",
            result.checkpoint,
            result.epoch,
            result.split,
            result.images,
            if result.ten_crop { ", ten crops" } else { "" },
            result.metrics.loss
        );
        for (j, a) in result.metrics.accuracy.iter().enumerate() {
            println!("top-{:<3} {a:6.2}%", j + 1);
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExperimentArg {
    /// Table 1: noise 0, 0.2, 0.4, 0.6, 0.8 x {CE, L_{5,1}}.
    Cifar100Noise,
    /// Table 2: training-set sizes x {CE, L_{5,0.1}}.
    ImagenetSubsets,
}

#[derive(Args)]
pub struct ReproduceArgs {
    #[arg(value_enum)]
    experiment: ExperimentArg,
    /// A short version that runs in under 30 minutes on 2 cores on the built-in data
    /// (fewer epochs and images; one seed).
    #[arg(long)]
    quick: bool,
    /// Seeds of each cell, e.g. 0,1,2.
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<u64>>,
    /// Noise levels (cifar100-noise), e.g. 0,0.2,0.4,0.6,0.8.
    #[arg(long, value_delimiter = ',')]
    noise_levels: Option<Vec<f64>>,
    /// Training-set sizes (imagenet-subsets), e.g. 64000,128000.
    #[arg(long, value_delimiter = ',')]
    train_sizes: Option<Vec<usize>>,
    #[arg(long, default_value = "runs/reproduce")]
    out: PathBuf,
    #[command(flatten)]
    run: RunArgs,
}

/// Scale of `--quick` on the built-in data: 10 runs of about 1.5 minutes on 2 cores.
const QUICK_EPOCHS: usize = 10;
const QUICK_MILESTONES: [usize; 2] = [6, 9];
const QUICK_TRAIN_SIZE: usize = 10_000;

pub fn reproduce(args: &ReproduceArgs) -> Result<(), String> {
    let mut run = args.run.clone();
    if args.quick {
        run.epochs = run.epochs.or(Some(QUICK_EPOCHS));
        run.lr_schedule = run.lr_schedule.or(Some(QUICK_MILESTONES.to_vec()));
    }
    let seeds = args.seeds.clone().unwrap_or(vec![0]);
    let (experiment, values, svm_tau) = match args.experiment {
        ExperimentArg::Cifar100Noise => (
            Experiment::Cifar100Noise,
            args.noise_levels
                .clone()
                .unwrap_or(vec![0.0, 0.2, 0.4, 0.6, 0.8]),
            1.0,
        ),
        ExperimentArg::ImagenetSubsets => {
            let default = if run.data == DataName::Synthetic {
                vec![2000, 5000, 10_000, 20_000]
            } else {
                vec![64_000, 128_000, 320_000, 640_000]
            };
            let sizes = args.train_sizes.clone().unwrap_or(default);
            (
                Experiment::ImagenetSubsets,
                sizes.into_iter().map(|s| s as f64).collect(),
                0.1,
            )
        }
    };
    if args.quick && run.train_size.is_none() && experiment == Experiment::Cifar100Noise {
        run.train_size = Some(QUICK_TRAIN_SIZE);
    }
    run.tau = run.tau.or(Some(svm_tau));
    let configs = [LossKind::Ce, LossKind::Svm]
        .into_iter()
        .map(|loss| run.config(loss, 0.0, 0))
        .collect::<Result<Vec<_>, _>>()?;
    let grid = Grid {
        experiment,
        values,
        configs,
        seeds,
    };
    let rows = run_grid(&grid, &args.out, |cell| -> Box<dyn Observer> {
        Box::new(Console::new(cell))
    })
    .map_err(|e| e.to_string())?;
    let k = grid.configs[0].report_k;
    println!("\n{}", markdown(&grid, &rows, k));
    println!(
        "wrote {0}/table.md, {0}/table.csv, {0}/topk.png",
        args.out.display()
    );
    Ok(())
}

#[derive(Args)]
pub struct TrainBenchArgs {
    #[arg(long, value_enum, default_value = "densenet40")]
    model: ModelArg,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 100)]
    classes: usize,
    /// Side of the (random) input images.
    #[arg(long, default_value_t = 32)]
    image_size: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed steps per loss (the median is reported).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendArg,
}

pub fn train_bench(args: &TrainBenchArgs) -> Result<(), String> {
    let model = model_kind(args.model);
    let bench = StepBench {
        model,
        batch_size: args.batch_size,
        classes: args.classes,
        image_side: args.image_size,
        warmup: args.warmup,
        steps: args.steps,
        backend: backend_kind(args.backend),
    };
    bench.validate().map_err(|e| e.to_string())?;
    println!(
        "{} ({} parameters), batch {} of {}x{} images, {} classes, {:?} backend: median of {} steps",
        model.name(),
        parameter_count(model, args.classes, args.image_size),
        args.batch_size,
        args.image_size,
        args.image_size,
        args.classes,
        bench.backend,
        args.steps
    );
    let timings = step_bench::run(&bench).map_err(|e| e.to_string())?;
    for t in &timings {
        println!(
            "{:<26} {:>9.1} ms/step {:>9.1} images/s",
            t.loss, t.median_ms, t.images_per_s
        );
    }
    if let [ce, svm] = &timings[..] {
        println!("svm / ce step time: {:.3}", svm.median_ms / ce.median_ms);
    }
    Ok(())
}
