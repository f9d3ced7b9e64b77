//! `smooth-topk`: top-k losses, metrics, benchmarks, training and reproduction from the
//! command line.
//!
//! This binary only parses arguments, wires them to the libraries and reports; the numerics
//! live in the `smooth-topk` crate, training in `smooth-topk-train`.

mod bench;
mod experiments;
mod input;
mod losses;
mod output;

use clap::{Parser, Subcommand, ValueEnum};
use input::{read_samples, InputFormat, Sample};
use losses::LossName;
use rayon::prelude::*;
use serde::Serialize;
use smooth_topk::AnyLoss;
use smooth_topk::{Loss, Scalar, TopkError};
use std::io::Write;
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
enum Precision {
    F32,
    F64,
}

#[derive(Subcommand)]
enum Command {
    /// Per-sample loss and gradient of saved scores (one JSON line out per sample in).
    #[command(allow_negative_numbers = true)]
    Loss {
        /// Input file (JSON Lines or CSV); standard input when absent or `-`.
        file: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "svm")]
        loss: LossName,
        /// The k of top-k (SVM losses).
        #[arg(long, default_value_t = 5)]
        k: usize,
        /// Temperature of the smooth SVM.
        #[arg(long, default_value_t = 1.0)]
        tau: f64,
        /// Margin of the SVM losses.
        #[arg(long, default_value_t = 1.0)]
        alpha: f64,
        /// Storage precision of scores, losses and gradients.
        #[arg(long, value_enum, default_value = "f32")]
        precision: Precision,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: InputFormat,
        /// Switch samples to the hard loss like the PyTorch reference does (parity only).
        #[arg(long)]
        reference_hard_switch: bool,
    },
    /// Top-1 .. top-k accuracy of saved scores with labels.
    Metrics {
        /// Input file (JSON Lines or CSV); standard input when absent or `-`.
        file: Option<PathBuf>,
        /// Largest k to report.
        #[arg(long, default_value_t = 5)]
        k: usize,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: InputFormat,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
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
    /// Training-step throughput (images/s) with CE and with the smooth SVM, e.g. DenseNet 40-40.
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
        } => losses::build(loss, k, tau, alpha, reference_hard_switch)
            .map_err(|e| e.to_string())
            .and_then(|l| {
                let samples = read_samples(input::open(file.as_deref())?, format)?;
                match precision {
                    Precision::F32 => run_loss::<f32>(&l, &samples),
                    Precision::F64 => run_loss::<f64>(&l, &samples),
                }
            }),
        Command::Metrics {
            file,
            k,
            format,
            json,
        } => input::open(file.as_deref())
            .and_then(|r| read_samples(r, format))
            .and_then(|samples| run_metrics(&samples, k, json)),
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

/// A library error about a single-sample batch, worded for the input line it came from.
fn describe(e: TopkError) -> String {
    match e {
        TopkError::LabelOutOfRange { label, n, .. } => {
            format!("label {label} is out of range for {n} scores")
        }
        TopkError::NonFiniteScore { index, value, .. } => {
            format!("score {index} is {value}, scores must be finite")
        }
        TopkError::TooFewClasses { n, min } => {
            format!("{n} scores is too few for this loss (need at least {min}, i.e. k < n)")
        }
        other => other.to_string(),
    }
}

/// Converts scores to the storage type, refusing values it cannot hold.
fn convert<T: Scalar>(scores: &[f64]) -> Result<Vec<T>, String> {
    scores
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let t = T::from_f64(v);
            if v.is_finite() && !t.to_f64().is_finite() {
                Err(format!("score {i} = {v:e} overflows the chosen precision"))
            } else {
                Ok(t)
            }
        })
        .collect()
}

#[derive(Serialize)]
struct LossLine<T> {
    loss: T,
    grad: Vec<T>,
}

fn run_loss<T: Scalar + Serialize>(loss: &AnyLoss, samples: &[Sample]) -> Result<(), String> {
    // Compute everything first so an error prints nothing but the error.
    let lines = samples
        .par_iter()
        .map(|s| {
            let scores = convert::<T>(&s.scores).map_err(|e| format!("line {}: {e}", s.line))?;
            let n = scores.len();
            let mut value = [T::from_f64(0.0)];
            let mut grad = vec![T::from_f64(0.0); n];
            loss.loss_and_grad_per_sample(&scores, &[s.label], n, &mut value, &mut grad)
                .map_err(|e| format!("line {}: {}", s.line, describe(e)))?;
            serde_json::to_string(&LossLine {
                loss: value[0],
                grad,
            })
            .map_err(|e| format!("line {}: {e}", s.line))
        })
        .collect::<Vec<Result<String, String>>>()
        .into_iter()
        // The first failing line in input order, whichever thread found it.
        .collect::<Result<Vec<String>, String>>()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for line in lines {
        writeln!(out, "{line}").map_err(|e| format!("cannot write output: {e}"))?;
    }
    out.flush().map_err(|e| format!("cannot write output: {e}"))
}

#[derive(Serialize)]
struct TopkLine {
    k: usize,
    correct: usize,
    accuracy: f64,
}

#[derive(Serialize)]
struct MetricsReport {
    samples: usize,
    topk: Vec<TopkLine>,
}

fn run_metrics(samples: &[Sample], max_k: usize, json: bool) -> Result<(), String> {
    if max_k == 0 {
        return Err(TopkError::ZeroK.to_string());
    }
    let mut correct = vec![0usize; max_k];
    for s in samples {
        let row = smooth_topk::topk_correct(&s.scores, &[s.label], s.scores.len(), max_k)
            .map_err(|e| format!("line {}: {}", s.line, describe(e)))?;
        correct.iter_mut().zip(row).for_each(|(c, r)| *c += r);
    }
    let total = samples.len();
    let report = MetricsReport {
        samples: total,
        topk: correct
            .iter()
            .enumerate()
            .map(|(i, &c)| TopkLine {
                k: i + 1,
                correct: c,
                accuracy: c as f64 / total as f64,
            })
            .collect(),
    };
    if json {
        return output::say(&serde_json::to_string(&report).map_err(|e| e.to_string())?);
    }
    output::say(&format!("{total} samples (ties count against the label)"))?;
    for line in &report.topk {
        output::say(&format!(
            "top-{:<3} {:>8.4}  ({}/{})",
            line.k, line.accuracy, line.correct, total
        ))?;
    }
    Ok(())
}
