//! `smooth-topk bench`: forward and forward+backward time of each loss against cross-entropy on
//! the same random scores, single thread and all threads, as medians and ratios measured in one
//! run; then the float32-against-float64 error of the smooth loss over score scales.

use crate::losses::{self, LossName};
use crate::output::say;
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::Serialize;
use smooth_topk::AnyLoss;
use smooth_topk::{Loss, SmoothTopkSvm};
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
    /// Skip the stability table.
    #[arg(long)]
    no_stability: bool,
    /// Also write the timings as a JSON array of records to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One timing, in the record format of `--json`.
#[derive(Serialize, Debug, Clone)]
struct Record {
    loss: &'static str,
    n: usize,
    batch: usize,
    k: Option<usize>,
    tau: Option<f64>,
    threads: usize,
    pass: &'static str,
    median_ms: f64,
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
    let mut setups = vec![Setup {
        name: LossName::Ce,
        loss: losses::build(LossName::Ce, args.k, 1.0, args.alpha, false)
            .map_err(|e| e.to_string())?,
        tau: None,
    }];
    for &tau in &args.tau {
        let loss = losses::build(LossName::Svm, args.k, tau, args.alpha, false)
            .map_err(|e| e.to_string())?;
        setups.push(Setup {
            name: LossName::Svm,
            loss,
            tau: Some(tau),
        });
    }
    let hard = losses::build(LossName::HardSvm, args.k, 1.0, args.alpha, false)
        .map_err(|e| e.to_string())?;
    setups.push(Setup {
        name: LossName::HardSvm,
        loss: hard,
        tau: None,
    });

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
         >= 5 runs; ratio = time / this project's cross-entropy time in the same setting (f64 \
         arithmetic, libm exp)",
        args.batch, args.k, args.alpha, args.score_std
    ))?;
    say(&format!(
        "{:<11} {:>6} {:>5} {:>7} {:>12} {:>8} {:>14} {:>8}",
        "loss", "n", "tau", "threads", "forward ms", "ratio", "fwd+bwd ms", "ratio"
    ))?;
    for &n in &args.n {
        if n <= args.k {
            return Err(format!("n = {n} needs to exceed k = {}", args.k));
        }
        let (scores, labels) = random_batch(&mut rng, args.batch, n, args.score_std);
        let mut losses = vec![0f32; args.batch];
        let mut grad = vec![0f32; args.batch * n];
        for (pool, &threads) in pools.iter().zip(&thread_counts) {
            let mut ce_times = (0.0, 0.0);
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
                say(&format!(
                    "{:<11} {:>6} {:>5} {:>7} {:>12.4} {:>8.2} {:>14.4} {:>8.2}",
                    setup.name.as_str(),
                    n,
                    setup.tau.map_or("-".to_string(), |t| t.to_string()),
                    threads,
                    fwd,
                    fwd / ce_times.0,
                    both,
                    both / ce_times.1
                ))?;
                let k = (setup.name != LossName::Ce).then_some(args.k);
                for (pass, ms) in [("forward", fwd), ("forward+backward", both)] {
                    records.push(Record {
                        loss: setup.name.as_str(),
                        n,
                        batch: args.batch,
                        k,
                        tau: setup.tau,
                        threads,
                        pass,
                        median_ms: ms,
                    });
                }
            }
        }
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&records).map_err(|e| e.to_string())?;
        smooth_topk_train::checkpoint::write_atomic(path, text.as_bytes())
            .map_err(|e| format!("cannot write {e}"))?;
        say(&format!("timings written to {}", path.display()))?;
    }
    if !args.no_stability {
        stability(args, &mut rng)?;
    }
    Ok(())
}

/// Max error of float32 storage against float64 for the smooth loss, per score scale.
fn stability(args: &BenchArgs, rng: &mut StdRng) -> Result<(), String> {
    let (batch, n) = (64usize, 1000usize);
    say("")?;
    say(&format!(
        "stability: smooth top-{} SVM, float32 against float64 on the same (f32-rounded) scores, \
         batch {batch} x n {n}, scores ~ scale * N(0, 1)",
        args.k
    ))?;
    say(&format!(
        "{:>8} {:>6} {:>16} {:>16} {:>10}",
        "scale", "tau", "max loss rel err", "max grad err", "non-finite"
    ))?;
    for &tau in &args.tau {
        let loss = SmoothTopkSvm::new(args.k, tau, args.alpha).map_err(|e| e.to_string())?;
        for exp in -4..=4 {
            let scale = 10f64.powi(exp);
            let (s32, labels) = random_batch(rng, batch, n, scale);
            let s64: Vec<f64> = s32.iter().map(|&v| f64::from(v)).collect();
            let (mut l32, mut g32) = (vec![0f32; batch], vec![0f32; batch * n]);
            let (mut l64, mut g64) = (vec![0f64; batch], vec![0f64; batch * n]);
            loss.loss_and_grad_per_sample(&s32, &labels, n, &mut l32, &mut g32)
                .map_err(|e| e.to_string())?;
            loss.loss_and_grad_per_sample(&s64, &labels, n, &mut l64, &mut g64)
                .map_err(|e| e.to_string())?;
            let mut loss_err = 0f64;
            let mut grad_err = 0f64;
            let mut non_finite = 0usize;
            for b in 0..batch {
                let want = l64[b];
                non_finite += usize::from(!l32[b].is_finite());
                loss_err = loss_err.max((f64::from(l32[b]) - want).abs() / want.abs().max(1e-30));
                let rows = (&g32[b * n..(b + 1) * n], &g64[b * n..(b + 1) * n]);
                let gmax = rows.1.iter().fold(0f64, |m, v| m.max(v.abs()));
                let diff = rows.0.iter().zip(rows.1).fold(0f64, |m, (a, w)| {
                    non_finite += usize::from(!a.is_finite());
                    m.max((f64::from(*a) - w).abs())
                });
                if gmax > 0.0 {
                    grad_err = grad_err.max(diff / gmax);
                }
            }
            say(&format!(
                "{scale:>8.0e} {tau:>6} {loss_err:>16.2e} {grad_err:>16.2e} {non_finite:>10}"
            ))?;
        }
    }
    Ok(())
}
