//! `train`, `eval`, `reproduce`, `train-bench` and `loader-bench`: flags to a
//! `smooth_topk_train` configuration, then the library runs it and this prints the outcome.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use smooth_topk_data::{Loader, LoaderConfig};
use smooth_topk_train::eval::{evaluate_checkpoint, EvalRequest, Split};
use smooth_topk_train::loader_bench::{self, LoaderBench};
use smooth_topk_train::progress::Console;
use smooth_topk_train::reproduce::{markdown, run_grid, Experiment, Grid, Level, RunInfo};
use smooth_topk_train::step_bench::{self, parameter_count, StepBench};
use smooth_topk_train::{
    BackendKind, DataCache, DataSource, Grouping, LossKind, ModelKind, Observer, Protocol, Start,
    TrainConfig,
};

use crate::output::say;

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

/// How images are read (no effect on results).
#[derive(Args, Clone)]
pub struct LoaderArgs {
    /// Threads that decode and transform images (default: one per core).
    #[arg(long, default_value_t = 0)]
    loader_threads: usize,
    /// Batches prepared ahead of the training step.
    #[arg(long, default_value_t = 2)]
    prefetch: usize,
}

impl LoaderArgs {
    fn loader(&self, skip_unreadable: bool) -> Result<Loader, String> {
        Loader::new(&LoaderConfig {
            threads: self.loader_threads,
            prefetch: self.prefetch,
            skip_unreadable,
        })
        .map_err(|e| e.to_string())
    }
}

/// Flags shared by `train` and `reproduce`; anything left out takes the protocol's value.
#[derive(Args, Clone, Default)]
pub struct RunArgs {
    /// Data source (default: the protocol's own; the built-in data for the quick and CPU
    /// protocols).
    #[arg(long, value_enum)]
    data: Option<DataName>,
    /// Directory of the CIFAR-100 binaries or of the image folder.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, value_enum)]
    model: Option<ModelKind>,
    /// The k of every top-k loss (also the largest k reported).
    #[arg(long)]
    k: Option<usize>,
    /// Smooth SVM temperature.
    #[arg(long)]
    tau: Option<f64>,
    /// SVM margin.
    #[arg(long)]
    alpha: Option<f64>,
    /// Noise standard deviation of the noised hinge (default 1).
    #[arg(long)]
    epsilon: Option<f64>,
    /// Noise draws per sample of the noised hinge (default 5).
    #[arg(long)]
    n_sample: Option<usize>,
    /// Scores the top-k cross-entropy keeps: the label's and the m - 1 largest others
    /// (default 16; `all` keeps every score).
    #[arg(long)]
    sort_m: Option<String>,
    /// NeuralSort temperature of the top-k cross-entropy (default 1).
    #[arg(long)]
    sort_tau: Option<f64>,
    /// The top-k cross-entropy's weight on top-1; the rest goes to top-k (default 0.5).
    #[arg(long)]
    p_top1: Option<f64>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    /// Initial learning rate (with --resume: a new rate from the next epoch on).
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
    /// Training images (balanced per class); default all (synthetic: the protocol's).
    #[arg(long)]
    train_size: Option<usize>,
    /// Validation images held out of the training data (clean labels).
    #[arg(long)]
    valid_size: Option<usize>,
    /// Test images (synthetic data only).
    #[arg(long)]
    test_size: Option<usize>,
    /// Side of the images of an image folder as read (shorter side resized, centre cropped).
    #[arg(long)]
    image_size: Option<usize>,
    /// Side of the network input (random crops in training).
    #[arg(long)]
    crop: Option<usize>,
    /// Label-noise grouping: consecutive indices (the reference) or the coarse labels.
    #[arg(long, value_enum)]
    noise_grouping: Option<Grouping>,
    /// No random crop and flip in training.
    #[arg(long)]
    no_augment: bool,
    /// Evaluate the final checkpoints on ten crops.
    #[arg(long)]
    ten_crop: bool,
    /// Leave out (and count) unreadable images instead of stopping.
    #[arg(long)]
    skip_unreadable: bool,
    /// Seed of the dataset itself (synthetic images, validation split, subsets).
    #[arg(long)]
    data_seed: Option<u64>,
    #[arg(long, value_enum)]
    backend: Option<BackendKind>,
    /// Device indices of the backend to train on, data-parallel, e.g. 0,1,2,3.
    #[arg(long, value_delimiter = ',')]
    devices: Option<Vec<usize>>,
    /// Stop after this many optimisation steps (benchmarks, smoke tests).
    #[arg(long)]
    max_steps: Option<usize>,
    /// Evaluate the test split after every epoch (default: the protocol's choice).
    #[arg(long)]
    test_every_epoch: Option<bool>,
}

impl RunArgs {
    /// The configuration for `loss` under `protocol` (or the data source's own protocol): the
    /// protocol's values, then every flag given.
    fn config(
        &self,
        protocol: Option<Protocol>,
        loss: LossKind,
        noise: f64,
        seed: u64,
    ) -> Result<TrainConfig, String> {
        let data = match (self.data, protocol.and_then(Protocol::builtin_data)) {
            (Some(d), _) => source(d, &self.data_dir)?,
            (None, Some(builtin)) if self.data_dir.is_none() => builtin,
            (None, _) => match protocol {
                Some(Protocol::ImagenetSubsets) => source(DataName::Folder, &self.data_dir)?,
                Some(Protocol::Cifar100Noise) => source(DataName::Cifar100, &self.data_dir)?,
                _ => match &self.data_dir {
                    Some(_) => {
                        return Err("--data-dir needs --data cifar100 or --data folder".into())
                    }
                    None => DataSource::Synthetic,
                },
            },
        };
        let protocol = protocol.unwrap_or_else(|| Protocol::for_source(&data));
        let is_folder = matches!(data, DataSource::Folder { .. });
        let mut c = protocol.config(data, loss);
        if let Some(m) = self.model {
            c.model = m;
        }
        let set = |target: &mut usize, v: Option<usize>| *target = v.unwrap_or(*target);
        let setf = |target: &mut f64, v: Option<f64>| *target = v.unwrap_or(*target);
        set(&mut c.loss.k, self.k);
        c.report_k = c.loss.k;
        setf(&mut c.loss.tau, self.tau);
        setf(&mut c.loss.alpha, self.alpha);
        setf(&mut c.loss.epsilon, self.epsilon);
        set(&mut c.loss.n_sample, self.n_sample);
        setf(&mut c.loss.sort_tau, self.sort_tau);
        setf(&mut c.loss.p_top1, self.p_top1);
        if let Some(m) = &self.sort_m {
            c.loss.m = match m.as_str() {
                "all" => None,
                v => Some(
                    v.parse()
                        .map_err(|_| format!("--sort-m {v}: a number or `all`"))?,
                ),
            };
        }
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
        if self.image_size.is_some() && !is_folder {
            return Err("--image-size applies to --data folder only (the others are 32x32)".into());
        }
        set(&mut c.data.image_size, self.image_size);
        // A smaller --image-size alone shrinks the default crop with it.
        c.data.crop = self.crop.unwrap_or(c.data.crop.min(c.data.image_size));
        c.data.noise = noise;
        if let Some(g) = self.noise_grouping {
            c.data.noise_grouping = g;
        }
        c.data.augment &= !self.no_augment;
        c.data.ten_crop |= self.ten_crop;
        c.data.skip_unreadable |= self.skip_unreadable;
        if let Some(s) = self.data_seed {
            c.data.data_seed = s;
        }
        c.seed = seed;
        if let Some(b) = self.backend {
            c.backend = b;
        }
        if let Some(d) = &self.devices {
            c.devices = d.clone();
        }
        if self.max_steps.is_some() {
            c.max_steps = self.max_steps;
        }
        if let Some(t) = self.test_every_epoch {
            c.test_every_epoch = t;
        }
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    /// The flags given, other than `--lr` (which `--resume` accepts).
    fn given_besides_lr(&self) -> Vec<&'static str> {
        let flags = [
            ("--data", self.data.is_some()),
            ("--data-dir", self.data_dir.is_some()),
            ("--model", self.model.is_some()),
            ("--k", self.k.is_some()),
            ("--tau", self.tau.is_some()),
            ("--alpha", self.alpha.is_some()),
            ("--epochs", self.epochs.is_some()),
            ("--batch-size", self.batch_size.is_some()),
            ("--lr-schedule", self.lr_schedule.is_some()),
            ("--lr-decay", self.lr_decay.is_some()),
            ("--momentum", self.momentum.is_some()),
            ("--weight-decay", self.weight_decay.is_some()),
            ("--train-size", self.train_size.is_some()),
            ("--valid-size", self.valid_size.is_some()),
            ("--test-size", self.test_size.is_some()),
            ("--image-size", self.image_size.is_some()),
            ("--crop", self.crop.is_some()),
            ("--noise-grouping", self.noise_grouping.is_some()),
            ("--no-augment", self.no_augment),
            ("--ten-crop", self.ten_crop),
            ("--skip-unreadable", self.skip_unreadable),
            ("--data-seed", self.data_seed.is_some()),
            ("--backend", self.backend.is_some()),
            ("--devices", self.devices.is_some()),
            ("--max-steps", self.max_steps.is_some()),
            ("--test-every-epoch", self.test_every_epoch.is_some()),
        ];
        flags
            .into_iter()
            .filter(|&(_, given)| given)
            .map(|(name, _)| name)
            .collect()
    }
}

#[derive(Args)]
pub struct TrainArgs {
    #[arg(long, value_enum, default_value = "svm")]
    loss: LossKind,
    /// Label-noise probability on the training labels.
    #[arg(long, default_value_t = 0.0)]
    noise: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The preset the flags start from (default: the data source's own: quick for the built-in
    /// data, cifar100-noise for CIFAR-100, imagenet-subsets for folders).
    #[arg(long, value_enum)]
    protocol: Option<Protocol>,
    /// Output directory: config, metrics (CSV, JSON), results, plots, checkpoints.
    #[arg(long, default_value = "runs/train")]
    out: PathBuf,
    /// Continue the run saved in this directory with its saved configuration; only --lr may
    /// be given with it (a new learning rate from the next epoch on, e.g. after a divergence).
    #[arg(long, conflicts_with_all = ["out", "loss", "noise", "seed", "protocol"])]
    resume: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    loader: LoaderArgs,
}

pub fn train(args: &TrainArgs) -> Result<(), String> {
    let mut console = Console::new("");
    let (start_config, out) = match &args.resume {
        Some(dir) => {
            if let Some(flag) = args.run.given_besides_lr().first() {
                return Err(format!(
                    "--resume continues a run with its own settings: only --lr may be given \
                     with it, not {flag}"
                ));
            }
            (None, dir.clone())
        }
        None => (
            Some(
                args.run
                    .config(args.protocol, args.loss, args.noise, args.seed)?,
            ),
            args.out.clone(),
        ),
    };
    let start = match &start_config {
        Some(config) => Start::New(config),
        None => Start::Resume { lr: args.run.lr },
    };
    // Reading images skips unreadable ones only when the run says so; a resumed run's
    // configuration is read by the library, so its loader skips if its data config asks.
    let skip = match &start_config {
        Some(config) => config.data.skip_unreadable,
        None => smooth_topk_train::checkpoint::read_config(&out)
            .map(|c| c.data.skip_unreadable)
            .unwrap_or(false),
    };
    let loader = args.loader.loader(skip)?;
    smooth_topk_train::train(
        start,
        &out,
        &loader,
        &mut DataCache::default(),
        &mut console,
    )
    .map_err(|e| e.to_string())?;
    console.line(&format!(
        "wrote {0}/results.json, {0}/metrics.csv, {0}/accuracy.png, {0}/loss.png",
        out.display()
    ));
    finished_output(&mut console, &out)
}

/// A run whose console output failed still finished: say so, with the error.
fn finished_output(console: &mut Console, out: &std::path::Path) -> Result<(), String> {
    match console.take_error() {
        Some(e) => Err(format!(
            "cannot write to standard output ({e}); the run finished and its files are in {}",
            out.display()
        )),
        None => Ok(()),
    }
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
    split: Split,
    /// Report top-1 .. top-k.
    #[arg(long, default_value_t = 5)]
    k: usize,
    #[arg(long)]
    ten_crop: bool,
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendKind,
    /// Leave out (and count) unreadable images instead of stopping.
    #[arg(long)]
    skip_unreadable: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    loader: LoaderArgs,
}

pub fn eval(args: &EvalArgs) -> Result<(), String> {
    let request = EvalRequest {
        source: args.data.map(|d| source(d, &args.data_dir)).transpose()?,
        split: args.split,
        k: args.k,
        ten_crop: args.ten_crop,
        backend: args.backend,
    };
    let loader = args.loader.loader(args.skip_unreadable)?;
    let result =
        evaluate_checkpoint(&args.checkpoint, &request, &loader).map_err(|e| e.to_string())?;
    if args.json {
        return say(&serde_json::to_string(&result).map_err(|e| e.to_string())?);
    }
    say(&format!(
        "{} (epoch {}), {:?} split, {} images{}: loss {:.4}",
        result.checkpoint,
        result.epoch,
        result.split,
        result.images,
        if result.ten_crop { ", ten crops" } else { "" },
        result.metrics.loss
    ))?;
    for (j, a) in result.metrics.accuracy.iter().enumerate() {
        say(&format!("top-{:<3} {a:6.2}%", j + 1))?;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExperimentArg {
    /// Table 1: label noise 0, 0.2, 0.4, 0.6, 0.8 x {CE, smooth SVM}.
    Cifar100Noise,
    /// Table 2: training-set sizes x {CE, smooth SVM}.
    ImagenetSubsets,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scale {
    /// The paper's protocol (DenseNet 40-40 / ResNet-18, 300 / 120 epochs): GPUs and the real
    /// data (--data-dir).
    Paper,
    /// The same question on the built-in data in under 45 minutes on 2 cores.
    Cpu,
}

#[derive(Args)]
pub struct ReproduceArgs {
    #[arg(value_enum)]
    experiment: ExperimentArg,
    /// The paper's full protocol (needs --data-dir), or its CPU-scale analogue on the built-in
    /// data.
    #[arg(long, value_enum, default_value = "paper")]
    scale: Scale,
    /// Seeds of each cell.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    seeds: Vec<u64>,
    /// Losses compared.
    #[arg(long, value_delimiter = ',', value_enum, default_value = "ce,svm")]
    losses: Vec<LossKind>,
    /// Noise levels (cifar100-noise), e.g. 0,0.2,0.4,0.6,0.8.
    #[arg(long, value_delimiter = ',')]
    noise_levels: Option<Vec<f64>>,
    /// Training-set sizes (imagenet-subsets), e.g. 64000,128000,all.
    #[arg(long, value_delimiter = ',')]
    train_sizes: Option<Vec<String>>,
    /// Learning rates tried per loss and level, chosen on the validation split; `none` keeps
    /// the protocol's rates (the default at paper scale).
    #[arg(long, value_delimiter = ',')]
    lr_grid: Option<Vec<String>>,
    /// Label noise of the training-size grid (default none).
    #[arg(long, default_value_t = 0.0)]
    noise: f64,
    #[arg(long, default_value = "runs/reproduce")]
    out: PathBuf,
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    loader: LoaderArgs,
}

fn parse_sizes(sizes: &[String]) -> Result<Vec<Level>, String> {
    sizes
        .iter()
        .map(|s| match s.as_str() {
            "all" => Ok(Level::TrainSize(None)),
            n => n
                .parse::<usize>()
                .map(|n| Level::TrainSize(Some(n)))
                .map_err(|_| format!("--train-sizes: {s:?} is neither a count nor `all`")),
        })
        .collect()
}

fn parse_lr_grid(values: &[String]) -> Result<Vec<f64>, String> {
    if values == ["none"] {
        return Ok(Vec::new());
    }
    values
        .iter()
        .map(|v| {
            v.parse::<f64>()
                .ok()
                .filter(|lr| lr.is_finite() && *lr > 0.0)
                .ok_or_else(|| format!("--lr-grid: {v:?} is not a positive learning rate"))
        })
        .collect()
}

pub fn reproduce(args: &ReproduceArgs) -> Result<(), String> {
    let (experiment, protocol) = match (args.experiment, args.scale) {
        (ExperimentArg::Cifar100Noise, Scale::Paper) => {
            (Experiment::Cifar100Noise, Protocol::Cifar100Noise)
        }
        (ExperimentArg::Cifar100Noise, Scale::Cpu) => {
            (Experiment::Cifar100Noise, Protocol::CpuNoise)
        }
        (ExperimentArg::ImagenetSubsets, Scale::Paper) => {
            (Experiment::ImagenetSubsets, Protocol::ImagenetSubsets)
        }
        (ExperimentArg::ImagenetSubsets, Scale::Cpu) => {
            (Experiment::ImagenetSubsets, Protocol::CpuSize)
        }
    };
    if args.scale == Scale::Paper && args.run.data_dir.is_none() && args.run.data.is_none() {
        return Err(format!(
            "the paper-scale {} needs its data: --data-dir D ({}); for the built-in CPU-scale \
             version use --scale cpu",
            protocol.name(),
            match experiment {
                Experiment::Cifar100Noise => "the CIFAR-100 binaries",
                Experiment::ImagenetSubsets => "an image folder with train/ and val/",
            }
        ));
    }
    let levels = match experiment {
        Experiment::Cifar100Noise => args
            .noise_levels
            .clone()
            .unwrap_or(vec![0.0, 0.2, 0.4, 0.6, 0.8])
            .into_iter()
            .map(Level::Noise)
            .collect(),
        Experiment::ImagenetSubsets => match &args.train_sizes {
            Some(sizes) => parse_sizes(sizes)?,
            None if args.scale == Scale::Cpu => {
                parse_sizes(&["500", "1000", "2000", "4000"].map(String::from))?
            }
            None => parse_sizes(&["64000", "128000", "320000", "640000", "all"].map(String::from))?,
        },
    };
    let lr_grid = match &args.lr_grid {
        Some(values) => parse_lr_grid(values)?,
        None => protocol.lr_grid(),
    };
    if args.losses.is_empty() {
        return Err("--losses: at least one loss".into());
    }
    let noise = match experiment {
        Experiment::Cifar100Noise => 0.0,
        Experiment::ImagenetSubsets => args.noise,
    };
    let configs = args
        .losses
        .iter()
        .map(|&loss| args.run.config(Some(protocol), loss, noise, 0))
        .collect::<Result<Vec<_>, _>>()?;
    let grid = Grid {
        experiment,
        protocol,
        levels,
        configs,
        seeds: args.seeds.clone(),
        lr_grid,
    };
    let loader = args
        .loader
        .loader(grid.configs.iter().any(|c| c.data.skip_unreadable))?;
    let mut console = Console::new("");
    let summary = serde_json::to_string(&grid.configs[0]).map_err(|e| e.to_string())?;
    console.line(&format!(
        "{} grid, protocol {}: {} levels x {} losses x {} seeds{}; first configuration: {summary}",
        experiment_name(experiment),
        protocol.name(),
        grid.levels.len(),
        grid.configs.len(),
        grid.seeds.len(),
        if grid.lr_grid.is_empty() {
            String::new()
        } else {
            format!(", learning rate chosen from {:?}", grid.lr_grid)
        }
    ));
    let info = RunInfo {
        command: std::iter::once("smooth-topk".to_string())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" "),
    };
    let results = run_grid(
        &grid,
        &args.out,
        &loader,
        &info,
        |cell| -> Box<dyn Observer> { Box::new(Console::new(cell)) },
        &mut |message| console.line(message),
    )
    .map_err(|e| e.to_string())?;
    console.line(&format!("\n{}", markdown(&results)));
    console.line(&format!(
        "wrote {0}/report.md, {0}/table.md, {0}/table.csv, {0}/topk.png, {0}/top1.png",
        args.out.display()
    ));
    finished_output(&mut console, &args.out)
}

fn experiment_name(e: Experiment) -> &'static str {
    match e {
        Experiment::Cifar100Noise => "noise",
        Experiment::ImagenetSubsets => "training-set size",
    }
}

#[derive(Args)]
pub struct TrainBenchArgs {
    #[arg(long, value_enum, default_value = "densenet40")]
    model: ModelKind,
    /// Losses timed, the first the baseline of the ratios.
    #[arg(long, value_delimiter = ',', value_enum, default_value = "ce,svm")]
    losses: Vec<LossKind>,
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
    backend: BackendKind,
    /// Device indices to train on, data-parallel.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    devices: Vec<usize>,
}

pub fn train_bench(args: &TrainBenchArgs) -> Result<(), String> {
    let bench = StepBench {
        model: args.model,
        batch_size: args.batch_size,
        classes: args.classes,
        image_side: args.image_size,
        warmup: args.warmup,
        steps: args.steps,
        backend: args.backend,
        devices: args.devices.clone(),
        losses: args.losses.clone(),
    };
    bench.validate().map_err(|e| e.to_string())?;
    say(&format!(
        "{} ({} parameters), batch {} of {}x{} images, {} classes, {:?} backend, devices {:?}: \
         median of {} steps",
        args.model.name(),
        parameter_count(args.model, args.classes, args.image_size),
        args.batch_size,
        args.image_size,
        args.image_size,
        args.classes,
        bench.backend,
        bench.devices,
        args.steps
    ))?;
    let timings = step_bench::run(&bench).map_err(|e| e.to_string())?;
    for t in &timings {
        say(&format!(
            "{:<26} {:>9.1} ms/step {:>9.1} images/s",
            t.loss, t.median_ms, t.images_per_s
        ))?;
    }
    if let [base, rest @ ..] = &timings[..] {
        for t in rest {
            say(&format!(
                "{} / {} step time: {:.3}",
                t.loss,
                base.loss,
                t.median_ms / base.median_ms
            ))?;
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct LoaderBenchArgs {
    /// An image folder (train/<class>/...).
    #[arg(long)]
    data_dir: PathBuf,
    /// Side the images are read at (shorter side resized, centre cropped).
    #[arg(long, default_value_t = 256)]
    image_size: usize,
    /// Side of the random crop.
    #[arg(long, default_value_t = 224)]
    crop: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Images read per thread count.
    #[arg(long, default_value_t = 2048)]
    images: usize,
    /// Thread counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Images per second a training step consumes, to size the loader against (ResNet-18 on
    /// one GPU: about 3000).
    #[arg(long, default_value_t = 3000.0)]
    target: f64,
}

pub fn loader_bench(args: &LoaderBenchArgs) -> Result<(), String> {
    let bench = LoaderBench {
        dir: args.data_dir.clone(),
        image_size: args.image_size,
        crop: args.crop,
        batch_size: args.batch_size,
        images: args.images,
        threads: args.threads.clone(),
    };
    say(&format!(
        "decode + resize to {0}x{0} + random crop {1} + flip + normalise, {2} images of {3} per \
         thread count",
        args.image_size,
        args.crop,
        args.images,
        args.data_dir.display()
    ))?;
    let rows = loader_bench::run(&bench).map_err(|e| e.to_string())?;
    for r in &rows {
        say(&format!(
            "{:>3} threads: {:>8.1} images/s ({:>7.1} per thread)",
            r.threads, r.images_per_s, r.per_thread
        ))?;
    }
    if let Some(best) = rows.iter().map(|r| r.per_thread).reduce(f64::max) {
        say(&format!(
            "to feed {} images/s: about {:.0} cores at the best per-thread rate measured",
            args.target,
            (args.target / best).ceil()
        ))?;
    }
    Ok(())
}
