//! `loss` and `metrics` on saved scores: JSON Lines and CSV streamed a chunk at a time, NumPy
//! `.npy` files read in place.

use crate::input::{self, InputFormat, Sample, Samples};
use crate::npy::{self, Dtype, FromLe};
use crate::output;
use crate::Precision;
use clap::Args;
use rayon::prelude::*;
use serde::Serialize;
use smooth_topk::{AnyLoss, Loss, Scalar, TopkError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// About this many scores are held (as text, parsed, and answered) at a time.
const CHUNK_SCORES: usize = 1 << 21;

/// The `.npy` files of `loss --format npy`.
#[derive(Args, Debug, Clone, Default)]
pub struct NpyArgs {
    /// Labels [batch] (.npy of integers) for `--format npy`.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Where to write the per-sample losses [batch] (.npy, the scores' float type).
    #[arg(long)]
    out_loss: Option<PathBuf>,
    /// Where to write the gradients [batch, n] (.npy, the scores' float type).
    #[arg(long)]
    out_grad: Option<PathBuf>,
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
        TopkError::NotRepresentable { .. } => "the loss is not representable (it overflows \
            the chosen precision, or the scores are too far apart for k tau)"
            .to_string(),
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

/// `loss`: text in, JSON Lines out, or `.npy` in and out.
pub fn loss(
    loss: &AnyLoss,
    file: Option<&Path>,
    format: InputFormat,
    precision: Precision,
    npy_args: &NpyArgs,
) -> Result<(), String> {
    if format == InputFormat::Npy {
        return loss_npy(loss, file, npy_args);
    }
    if npy_args.labels.is_some() || npy_args.out_loss.is_some() || npy_args.out_grad.is_some() {
        return Err("--labels, --out-loss and --out-grad go with --format npy".into());
    }
    let mut samples = Samples::new(input::open(file)?, format);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    loop {
        let chunk = samples.next_chunk(CHUNK_SCORES)?;
        if chunk.is_empty() {
            break;
        }
        let lines = match precision {
            Precision::F32 => loss_lines::<f32>(loss, &chunk)?,
            Precision::F64 => loss_lines::<f64>(loss, &chunk)?,
        };
        for line in lines {
            writeln!(out, "{line}").map_err(|e| format!("cannot write output: {e}"))?;
        }
    }
    out.flush().map_err(|e| format!("cannot write output: {e}"))
}

/// The output lines of one chunk, or the first failing line's error (in input order).
fn loss_lines<T: Scalar + Serialize>(
    loss: &AnyLoss,
    chunk: &[Sample],
) -> Result<Vec<String>, String> {
    chunk
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
        .collect()
}

/// The scores `[batch, n]` and labels `[batch]` of `--format npy`, checked against each other.
fn open_npy(
    file: Option<&Path>,
    labels: Option<&Path>,
) -> Result<(npy::Array, Vec<usize>), String> {
    let file = file.ok_or("--format npy reads a file: give the scores' .npy path")?;
    let labels = labels.ok_or("--format npy needs --labels LABELS.npy")?;
    let scores = npy::Array::open(file)?;
    let [batch, n] = scores.shape[..] else {
        return Err(format!(
            "{}: scores must have shape [batch, n], not {:?}",
            file.display(),
            scores.shape
        ));
    };
    if !matches!(scores.dtype, Dtype::F32 | Dtype::F64) {
        return Err(format!(
            "{}: scores must be float32 or float64",
            file.display()
        ));
    }
    let label_array = npy::Array::open(labels)?;
    if label_array.shape != [batch] {
        return Err(format!(
            "{}: labels must have shape [{batch}] (one per row of scores), not {:?}",
            labels.display(),
            label_array.shape
        ));
    }
    let values = label_array
        .labels()
        .map_err(|e| format!("{}: {e}", labels.display()))?;
    if batch == 0 || n == 0 {
        return Err(format!(
            "{}: no scores (shape [{batch}, {n}])",
            file.display()
        ));
    }
    Ok((scores, values))
}

/// Rows per chunk for `n` classes.
fn rows_per_chunk(n: usize) -> usize {
    (CHUNK_SCORES / n).max(1)
}

/// A library error about rows `offset..`, worded with the sample index in the whole file.
fn describe_at(e: TopkError, offset: usize) -> String {
    match e {
        TopkError::LabelOutOfRange { sample, label, n } => {
            format!(
                "sample {}: label {label} is out of range for {n} classes",
                sample + offset
            )
        }
        TopkError::NonFiniteScore {
            sample,
            index,
            value,
        } => format!(
            "sample {}: score {index} is {value}, scores must be finite",
            sample + offset
        ),
        TopkError::NotRepresentable { sample } => format!(
            "sample {}: the loss is not representable (it overflows the scores' float type, \
             or the scores are too far apart for k tau)",
            sample + offset
        ),
        other => other.to_string(),
    }
}

fn loss_npy(loss: &AnyLoss, file: Option<&Path>, args: &NpyArgs) -> Result<(), String> {
    if args.out_loss.is_none() && args.out_grad.is_none() {
        return Err("--format npy writes .npy files: give --out-loss and/or --out-grad".into());
    }
    let (scores, labels) = open_npy(file, args.labels.as_deref())?;
    match scores.dtype {
        Dtype::F64 => loss_npy_as::<f64>(loss, &scores, &labels, args),
        _ => loss_npy_as::<f32>(loss, &scores, &labels, args),
    }
}

fn loss_npy_as<T: Scalar + FromLe>(
    loss: &AnyLoss,
    scores: &npy::Array,
    labels: &[usize],
    args: &NpyArgs,
) -> Result<(), String> {
    let [batch, n] = [scores.shape[0], scores.shape[1]];
    // Written under temporary names and renamed at the end: an error leaves no output.
    let mut out_loss = args
        .out_loss
        .as_deref()
        .map(|p| npy::Writer::create(p, T::DESCR, &[batch]))
        .transpose()?;
    let mut out_grad = args
        .out_grad
        .as_deref()
        .map(|p| npy::Writer::create(p, T::DESCR, &[batch, n]))
        .transpose()?;
    let rows = rows_per_chunk(n);
    let mut start = 0;
    while start < batch {
        let end = (start + rows).min(batch);
        let values = scores.floats::<T>(start * n, end * n)?;
        let mut losses = vec![T::from_f64(0.0); end - start];
        let mut grad = vec![T::from_f64(0.0); if out_grad.is_some() { values.len() } else { 0 }];
        let result = if out_grad.is_some() {
            loss.loss_and_grad_per_sample(&values, &labels[start..end], n, &mut losses, &mut grad)
        } else {
            loss.loss_per_sample(&values, &labels[start..end], n, &mut losses)
        };
        result.map_err(|e| describe_at(e, start))?;
        if let Some(w) = out_loss.as_mut() {
            w.write(&losses.iter().flat_map(|&v| v.to_le()).collect::<Vec<u8>>())?;
        }
        if let Some(w) = out_grad.as_mut() {
            w.write(&grad.iter().flat_map(|&v| v.to_le()).collect::<Vec<u8>>())?;
        }
        start = end;
    }
    for w in [out_loss, out_grad].into_iter().flatten() {
        w.finish()?;
    }
    Ok(())
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

/// Counts of labels in the top 1..=max_k, accumulated chunk by chunk; at most as many counters
/// as the largest number of classes seen.
struct Counts {
    max_k: usize,
    correct: Vec<usize>,
    classes: usize,
    samples: usize,
}

impl Counts {
    fn add(&mut self, scores: &[f64], labels: &[usize], n: usize) -> Result<(), TopkError> {
        self.classes = self.classes.max(n);
        let k = self.max_k.min(n);
        let row = smooth_topk::topk_correct(scores, labels, n, k)?;
        if self.correct.len() < k {
            // Rows seen before with fewer classes had every label within their top n.
            let all = self.samples;
            self.correct.resize(k, all);
        }
        for (i, c) in self.correct.iter_mut().enumerate() {
            *c += row.get(i).copied().unwrap_or(labels.len());
        }
        self.samples += labels.len();
        Ok(())
    }
}

/// `metrics`: top-1 .. top-k accuracy of text or `.npy` scores.
pub fn metrics(
    file: Option<&Path>,
    format: InputFormat,
    labels: Option<&Path>,
    max_k: usize,
    json: bool,
) -> Result<(), String> {
    if max_k == 0 {
        return Err(TopkError::ZeroK.to_string());
    }
    let mut counts = Counts {
        max_k,
        correct: Vec::new(),
        classes: 0,
        samples: 0,
    };
    if format == InputFormat::Npy {
        let (scores, labels) = open_npy(file, labels)?;
        let n = scores.shape[1];
        let rows = rows_per_chunk(n);
        for start in (0..labels.len()).step_by(rows) {
            let end = (start + rows).min(labels.len());
            let values = match scores.dtype {
                Dtype::F64 => scores.floats::<f64>(start * n, end * n)?,
                _ => scores
                    .floats::<f32>(start * n, end * n)?
                    .into_iter()
                    .map(f64::from)
                    .collect(),
            };
            counts
                .add(&values, &labels[start..end], n)
                .map_err(|e| describe_at(e, start))?;
        }
    } else {
        if labels.is_some() {
            return Err("--labels goes with --format npy".into());
        }
        let mut samples = Samples::new(input::open(file)?, format);
        loop {
            let chunk = samples.next_chunk(CHUNK_SCORES)?;
            if chunk.is_empty() {
                break;
            }
            for s in &chunk {
                counts
                    .add(&s.scores, &[s.label], s.scores.len())
                    .map_err(|e| format!("line {}: {}", s.line, describe(e)))?;
            }
        }
    }
    // Past the number of classes every label is in the top k: more lines would say nothing.
    if max_k > counts.classes.max(1) {
        return Err(format!(
            "--k {max_k} is more than the {} classes of the input (top-k accuracy is 1 for \
             every k >= the number of classes)",
            counts.classes
        ));
    }
    let total = counts.samples;
    let report = MetricsReport {
        samples: total,
        topk: counts
            .correct
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
