//! `smooth-topk`: top-k losses, metrics, benchmarks, training and reproduction from the
//! command line.
//!
//! This binary only parses arguments, wires them to the libraries and reports; the numerics
//! live in the `smooth-topk` crate, training in `smooth-topk-train`.

mod bench;
mod experiments;
mod input;
mod losses;
mod npy;
mod output;
mod saved;

use clap::{Parser, Subcommand, ValueEnum};
use input::InputFormat;
use losses::LossName;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "smooth-topk",
    version,
    about = "Smooth top-k SVM losses, metrics and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Precision {
    F32,
    F64,
}

#[derive(Subcommand)]
enum Command {
    /// Per-sample loss and gradient of saved scores: one JSON line out per sample in, or, for
    /// `--format npy`, .npy files of losses [batch] and gradients [batch, n]. Text input is
    /// read and answered a chunk at a time (memory bounded by the chunk, not the input); an
    /// error stops at the first bad line, after the lines before its chunk were written.
    #[command(allow_negative_numbers = true)]
    Loss {
        /// Input file (JSON Lines, CSV, or .npy scores); standard input when absent or `-`
        /// (text formats).
        file: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "svm")]
        loss: LossName,
        /// The k of top-k (every loss but ce; topk-ce: the length of the default p_k).
        #[arg(long, default_value_t = 5)]
        k: usize,
        /// Temperature of the smooth SVM (topk-ce: of NeuralSort).
        #[arg(long, default_value_t = 1.0)]
        tau: f64,
        /// Margin of the SVM losses.
        #[arg(long, default_value_t = 1.0)]
        alpha: f64,
        /// Storage precision of scores, losses and gradients (text input; a .npy file keeps
        /// its own float type).
        #[arg(long, value_enum, default_value = "f32")]
        precision: Precision,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: InputFormat,
        /// Switch samples to the hard loss like the PyTorch reference does (parity only).
        #[arg(long)]
        reference_hard_switch: bool,
        #[command(flatten)]
        npy: saved::NpyArgs,
        #[command(flatten)]
        other: losses::OtherArgs,
    },
    /// Top-1 .. top-k accuracy of saved scores with labels.
    Metrics {
        /// Input file (JSON Lines, CSV, or .npy scores); standard input when absent or `-`
        /// (text formats).
        file: Option<PathBuf>,
        /// Largest k to report.
        #[arg(long, default_value_t = 5)]
        k: usize,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: InputFormat,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Labels [batch] (.npy of integers) for `--format npy`.
        #[arg(long)]
        labels: Option<PathBuf>,
    },
    /// Speed of each loss against cross-entropy, and float32 stability over score scales.
    Bench(bench::BenchArgs),
    /// Train a classifier (built-in data by default) with CE or a top-k SVM; writes metrics,
    /// plots and checkpoints to --out.
    Train(experiments::TrainArgs),
    /// Top-1 .. top-k of a saved model.
    Eval(experiments::EvalArgs),
    /// Run the grid of the paper's Table 1 or 2 and write the table and a plot.
    Reproduce(experiments::ReproduceArgs),
    /// Training-step throughput (images/s) of each loss of --losses (default CE and the smooth
    /// SVM), e.g. DenseNet 40-40.
    TrainBench(experiments::TrainBenchArgs),
    /// Image-loader throughput (decode, resize, crop, flip, normalise) on a folder, per thread
    /// count.
    LoaderBench(experiments::LoaderBenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Loss {
            file,
            loss,
            k,
            tau,
            alpha,
            precision,
            format,
            reference_hard_switch,
            npy,
            other,
        } => losses::build(loss, k, tau, alpha, reference_hard_switch, &other)
            .map_err(|e| e.to_string())
            .and_then(|l| saved::loss(&l, file.as_deref(), format, precision, &npy)),
        Command::Metrics {
            file,
            k,
            format,
            json,
            labels,
        } => saved::metrics(file.as_deref(), format, labels.as_deref(), k, json),
        Command::Bench(args) => bench::run(&args),
        Command::Train(args) => experiments::train(&args),
        Command::Eval(args) => experiments::eval(&args),
        Command::Reproduce(args) => experiments::reproduce(&args),
        Command::TrainBench(args) => experiments::train_bench(&args),
        Command::LoaderBench(args) => experiments::loader_bench(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("smooth-topk: {msg}");
            ExitCode::FAILURE
        }
    }
}
