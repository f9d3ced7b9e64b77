//! `smooth-topk bench`: forward and forward+backward time of each loss against this project's
//! cross-entropy and PyTorch's on the same random scores, single thread and all threads, as
//! medians and ratios measured in one run, with nanoseconds per score and the time a plain copy
//! of the same bytes takes (the floor no loss can beat: it must read every score and write every
//! gradient entry).

use crate::losses::{self, LossName};
use crate::output::say;
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::Serialize;
use smooth_topk::AnyLoss;
use smooth_topk::Loss;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Samples per batch.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Numbers of classes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    n: Vec<usize>,
    /// The k of the top-k losses.
    #[arg(long, default_value_t = 5)]
    k: usize,
    /// Temperatures of the smooth loss, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,0.1")]
    tau: Vec<f64>,
    /// Margin of the SVM losses.
    #[arg(long, default_value_t = 1.0)]
    alpha: f64,
    /// Threads for the multi-threaded runs (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Measuring time per configuration, in milliseconds (at least 5 repetitions each).
    #[arg(long, default_value_t = 150)]
    min_time_ms: u64,
    /// Standard deviation of the random scores.
    #[arg(long, default_value_t = 1.0)]
    score_std: f64,
    /// Seed of the random scores.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The Python that times PyTorch's cross-entropy on the same scores (skipped, with a note,
    /// if it cannot import torch).
    #[arg(long, default_value = "python3")]
    python: String,
    /// Do not time PyTorch.
    #[arg(long)]
    no_torch: bool,
    /// Also write the timings as a JSON array of records to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The script that times PyTorch's cross-entropy (also usable alone, with `--reference`).
const TORCH_SCRIPT: &str = include_str!("../../../scripts/bench_reference.py");

/// One timing, in the record format of `--json`.
#[derive(Serialize, Debug, Clone)]
struct Record {
    /// A loss of this project, `torch-ce`, or `copy` (the memory floor).
    loss: &'static str,
    n: usize,
    batch: usize,
    k: Option<usize>,
    tau: Option<f64>,
    threads: usize,
    pass: &'static str,
    median_ms: f64,
    ns_per_score: f64,
}

/// Files holding one batch for the PyTorch script, removed when dropped.
struct BatchFiles {
    scores: PathBuf,
    labels: PathBuf,
}

impl BatchFiles {
    fn write(scores: &[f32], labels: &[usize]) -> Result<Self, String> {
        let stem = std::env::temp_dir().join(format!(
            "smooth-topk-bench-{}-{}",
            std::process::id(),
            scores.len()
        ));
        let files = BatchFiles {
            scores: stem.with_extension("f32"),
            labels: stem.with_extension("i64"),
        };
        let bytes: Vec<u8> = scores.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&files.scores, bytes)
            .map_err(|e| format!("cannot write {}: {e}", files.scores.display()))?;
        let bytes: Vec<u8> = labels
            .iter()
            .flat_map(|&v| (v as i64).to_le_bytes())
            .collect();
        std::fs::write(&files.labels, bytes)
            .map_err(|e| format!("cannot write {}: {e}", files.labels.display()))?;
        Ok(files)
    }
}

impl Drop for BatchFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.scores);
        let _ = std::fs::remove_file(&self.labels);
    }
}

/// PyTorch's cross-entropy (forward, forward + backward) in ms on the batch in `files`, or why
/// it could not be timed.
fn torch_ce(
    python: &str,
    files: &BatchFiles,
    (batch, n, threads): (usize, usize, usize),
    min_time_ms: u64,
) -> Result<(f64, f64, String), String> {
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(TORCH_SCRIPT)
        .args(["--batch", &batch.to_string(), "--n", &n.to_string()])
        .args(["--threads", &threads.to_string()])
        .args(["--min-time-ms", &min_time_ms.to_string()])
        .arg("--scores")
        .arg(&files.scores)
        .arg("--labels")
        .arg(&files.labels)
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut times = (None, None, String::new());
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("{python}: bad output {line:?}: {e}"))?;
        if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
            return Err(e.to_string());
        }
        let ms = v.get("median_ms").and_then(|m| m.as_f64());
        times.2 = v.get("torch").and_then(|t| t.as_str()).unwrap_or("").into();
        match v.get("pass").and_then(|p| p.as_str()) {
            Some("forward") => times.0 = ms,
            Some("forward+backward") => times.1 = ms,
            _ => {}
        }
    }
    match times {
        (Some(f), Some(b), version) => Ok((f, b, version)),
        _ => Err(format!(
            "{python} gave no timings (exit status {}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

fn random_batch(rng: &mut StdRng, batch: usize, n: usize, std: f64) -> (Vec<f32>, Vec<usize>) {
    let scores = (0..batch * n)
        .map(|_| (std * rng.sample::<f64, _>(StandardNormal)) as f32)
        .collect();
    let labels = (0..batch).map(|_| rng.random_range(0..n)).collect();
    (scores, labels)
}

/// Median wall time of `f` over at least 5 runs and `min_time`, after one warm-up run.
fn median_time(min_time: Duration, mut f: impl FnMut()) -> Duration {
    f();
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || (start.elapsed() < min_time && times.len() < 1000) {
        let t = Instant::now();
        f();
        times.push(t.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

struct Setup {
    name: LossName,
    loss: AnyLoss,
    tau: Option<f64>,
}

pub fn run(args: &BenchArgs) -> Result<(), String> {
    let all_threads = args.threads.unwrap_or_else(rayon::current_num_threads);
    if args.batch == 0 || all_threads == 0 || all_threads > 1024 {
        return Err("--batch and --threads must be positive (at most 1024 threads)".into());
    }
    // float32 scores of a few standard deviations must stay finite.
    if !(args.score_std > 0.0 && args.score_std <= 1e30) {
        return Err(format!(
            "--score-std {:e} must be a positive number no larger than 1e30",
            args.score_std
        ));
    }
    // The scores and gradients of the largest n must fit in memory.
    let largest = args.n.iter().copied().max().unwrap_or(0);
    match args.batch.checked_mul(largest) {
        Some(floats) if floats <= 1 << 31 => {}
        _ => {
            return Err(format!(
                "--batch {} x n {largest} is more than 2^31 scores (8 GB each for scores and \
                 gradients)",
                args.batch
            ))
        }
    }
    let other = losses::OtherArgs {
        m: Some(16),
        ..Default::default()
    };
    let build = |name, tau| {
        losses::build(name, args.k, tau, args.alpha, false, &other).map_err(|e| e.to_string())
    };
    let mut setups = vec![Setup {
        name: LossName::Ce,
        loss: build(LossName::Ce, 1.0)?,
        tau: None,
    }];
    for &tau in &args.tau {
        setups.push(Setup {
            name: LossName::Svm,
            loss: build(LossName::Svm, tau)?,
            tau: Some(tau),
        });
    }
    // The field's other losses at their authors' defaults (topk-ce: m = 16, NeuralSort tau 1,
    // p_k = [0.5, 0, .., 0, 0.5]).
    for name in [
        LossName::HardSvm,
        LossName::Entr,
        LossName::Noised,
        LossName::TopkCe,
    ] {
        setups.push(Setup {
            name,
            loss: build(name, 1.0)?,
            tau: None,
        });
    }

    let mut thread_counts = vec![1];
    if all_threads > 1 {
        thread_counts.push(all_threads);
    }
    let pools = thread_counts
        .iter()
        .map(|&t| rayon::ThreadPoolBuilder::new().num_threads(t).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot start thread pool: {e}"))?;
    let min_time = Duration::from_millis(args.min_time_ms);
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut records = Vec::new();

    say(&format!(
        "smooth-topk bench: batch {}, k = {}, alpha = {}, f32 scores ~ N(0, {}^2), median of \
         >= 5 runs; \"/ ce\": time over this project's cross-entropy in the same setting; \
         \"/ torch\": fwd+bwd time over PyTorch's cross-entropy on the same scores and threads \
         (forward, then forward + backward through autograd); ns/score: fwd+bwd per score",
        args.batch, args.k, args.alpha, args.score_std
    ))?;
    say(&format!(
        "{:<11} {:>6} {:>5} {:>7} {:>11} {:>6} {:>11} {:>6} {:>8} {:>9}",
        "loss",
        "n",
        "tau",
        "threads",
        "forward ms",
        "/ ce",
        "fwd+bwd ms",
        "/ ce",
        "/ torch",
        "ns/score"
    ))?;
    let mut torch_note = None;
    let mut torch_version = String::new();
    for &n in &args.n {
        if n <= args.k {
            return Err(format!("n = {n} needs to exceed k = {}", args.k));
        }
        let (scores, labels) = random_batch(&mut rng, args.batch, n, args.score_std);
        let files = if args.no_torch || torch_note.is_some() {
            None
        } else {
            Some(BatchFiles::write(&scores, &labels)?)
        };
        let mut losses = vec![0f32; args.batch];
        let mut grad = vec![0f32; args.batch * n];
        let count = (args.batch * n) as f64;
        for (pool, &threads) in pools.iter().zip(&thread_counts) {
            let torch = match &files {
                Some(files) if torch_note.is_none() => {
                    match torch_ce(
                        &args.python,
                        files,
                        (args.batch, n, threads),
                        args.min_time_ms,
                    ) {
                        Ok(t) => {
                            torch_version.clone_from(&t.2);
                            Some(t)
                        }
                        Err(e) => {
                            torch_note = Some(e);
                            None
                        }
                    }
                }
                _ => None,
            };
            let record = |loss, k, tau, pass, ms: f64| Record {
                loss,
                n,
                batch: args.batch,
                k,
                tau,
                threads,
                pass,
                median_ms: ms,
                ns_per_score: ms * 1e6 / count,
            };
            let mut ce_times = (0.0, 0.0);
            let mut rows = Vec::new();
            for setup in &setups {
                let (fwd, both) = pool.install(|| {
                    let fwd = median_time(min_time, || {
                        setup
                            .loss
                            .loss_per_sample(&scores, &labels, n, &mut losses)
                            .unwrap()
                    });
                    let both = median_time(min_time, || {
                        setup
                            .loss
                            .loss_and_grad_per_sample(&scores, &labels, n, &mut losses, &mut grad)
                            .unwrap()
                    });
                    (fwd.as_secs_f64() * 1e3, both.as_secs_f64() * 1e3)
                });
                if setup.name == LossName::Ce {
                    ce_times = (fwd, both);
                }
                rows.push((setup.name.as_str(), setup.tau, fwd, both));
                let k = (setup.name != LossName::Ce).then_some(args.k);
                for (pass, ms) in [("forward", fwd), ("forward+backward", both)] {
                    records.push(record(setup.name.as_str(), k, setup.tau, pass, ms));
                }
            }
            // The floor: read every score and write every gradient entry, nothing else.
            let copy = pool.install(|| {
                median_time(min_time, || {
                    use rayon::prelude::*;
                    grad.par_chunks_mut(n)
                        .zip(scores.par_chunks(n))
                        .for_each(|(g, s)| g.copy_from_slice(s));
                    std::hint::black_box(&grad);
                })
                .as_secs_f64()
                    * 1e3
            });
            if let Some((f, b, _)) = &torch {
                rows.push(("torch-ce", None, *f, *b));
                for (pass, ms) in [("forward", *f), ("forward+backward", *b)] {
                    records.push(record("torch-ce", None, None, pass, ms));
                }
            }
            records.push(record("copy", None, None, "forward+backward", copy));
            for (name, tau, fwd, both) in rows {
                let vs_torch = torch
                    .as_ref()
                    .map_or("-".to_string(), |t| format!("{:.2}", both / t.1));
                say(&format!(
                    "{:<11} {:>6} {:>5} {:>7} {:>11.4} {:>6.2} {:>11.4} {:>6.2} {:>8} {:>9.2}",
                    name,
                    n,
                    tau.map_or("-".to_string(), |t| t.to_string()),
                    threads,
                    fwd,
                    fwd / ce_times.0,
                    both,
                    both / ce_times.1,
                    vs_torch,
                    both * 1e6 / count
                ))?;
            }
            let bytes = count * 8.0;
            say(&format!(
                "{:<11} {:>6} {:>5} {:>7} {:>11} {:>6} {:>11.4} {:>6.2} {:>8} {:>9.2}   \
                 reading the scores and writing the gradient ({:.1} MB) at {:.1} GB/s",
                "copy",
                n,
                "-",
                threads,
                "-",
                "-",
                copy,
                copy / ce_times.1,
                "-",
                copy * 1e6 / count,
                bytes / 1e6,
                bytes / (copy * 1e6)
            ))?;
        }
    }
    match (&torch_note, args.no_torch) {
        (_, true) => say("PyTorch: not timed (--no-torch)")?,
        (Some(e), _) => say(&format!("PyTorch: not timed ({e})"))?,
        (None, _) => say(&format!(
            "PyTorch {torch_version} through {} (scripts/bench_reference.py, on the same scores)",
            args.python
        ))?,
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&records).map_err(|e| e.to_string())?;
        smooth_topk_train::checkpoint::write_atomic(path, text.as_bytes())
            .map_err(|e| format!("cannot write {e}"))?;
        say(&format!("timings written to {}", path.display()))?;
    }
    Ok(())
}
