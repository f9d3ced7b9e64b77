//! Console reporting of a run: a progress bar per epoch (on stderr, shown only on a terminal)
//! and one line per epoch on stdout.
//!
//! Standard output may be a closed pipe or a full disk: a failed write never stops a run (its
//! files are what matter); the first error is kept, and [`Console::error`] gives it to the
//! caller, which reports it once the run is over.

use std::io::Write;

use indicatif::{ProgressBar, ProgressStyle};

use crate::config::TrainConfig;
use crate::data::PreparedData;
use crate::train::{EpochMetrics, Observer, RunResults, SelectedResult, SplitMetrics};

/// Prints a run to the console; `prefix` tags every line (the grid cell in `reproduce`).
pub struct Console {
    prefix: String,
    bar: Option<ProgressBar>,
    error: Option<std::io::Error>,
}

impl Console {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            bar: None,
            error: None,
        }
    }

    /// The first error writing to standard output, if any.
    pub fn error(&self) -> Option<&std::io::Error> {
        self.error.as_ref()
    }

    /// Takes the first write error (for a caller that reports it).
    pub fn take_error(&mut self) -> Option<std::io::Error> {
        self.error.take()
    }

    /// Writes one line to standard output, keeping the first error.
    pub fn line(&mut self, text: &str) {
        if self.error.is_some() {
            return;
        }
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, "{}{text}", self.prefix).and_then(|()| out.flush()) {
            self.error = Some(e);
        }
    }
}

fn split(name: &str, m: &SplitMetrics, k: usize) -> String {
    let skipped = if m.skipped > 0 {
        format!(" ({} unreadable skipped)", m.skipped)
    } else {
        String::new()
    };
    format!(
        "{name} loss {:.4} top-1 {:5.2}% top-{k} {:5.2}%{skipped}",
        m.loss,
        m.top(1),
        m.top(k)
    )
}

fn selected(m: &SelectedResult, k: usize) -> String {
    format!(
        "best valid {} (epoch {}): test top-1 {:.2}% top-{k} {:.2}%",
        m.selected_by,
        m.epoch,
        m.test.top(1),
        m.test.top(k)
    )
}

impl Observer for Console {
    fn started(&mut self, config: &TrainConfig, data: &PreparedData, resumed_at: usize) {
        let noise = if config.data.noise > 0.0 {
            format!(
                ", noise {} ({} labels changed)",
                config.data.noise, data.noisy_labels
            )
        } else {
            String::new()
        };
        let devices = if config.devices.len() > 1 {
            format!(" on {} devices {:?}", config.devices.len(), config.devices)
        } else {
            String::new()
        };
        let line = format!(
            "{} on {} ({} classes; {} train / {} valid / {} test{noise}), {}, {} epochs of batch {}{devices}, lr {}{}",
            config.loss.label(),
            config.data.source.name(),
            data.classes,
            data.train.len(),
            data.valid.len(),
            data.test.len(),
            config.model.name(),
            config.epochs,
            config.batch_size,
            config.lr_at(resumed_at + 1),
            if resumed_at > 0 {
                format!(", resumed after epoch {resumed_at}")
            } else {
                String::new()
            }
        );
        self.line(&line);
    }

    fn epoch_started(&mut self, epoch: usize, batches: usize) {
        let bar = ProgressBar::new(batches as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} {bar:30} {pos}/{len} batches, loss {msg} ({eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(format!("{}epoch {epoch}", self.prefix));
        self.bar = Some(bar);
    }

    fn batch_done(&mut self, loss: f64) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{loss:.4}"));
            bar.inc(1);
        }
    }

    fn epoch_done(&mut self, config: &TrainConfig, m: &EpochMetrics) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let k = config.report_k;
        let true_labels = if m.train_true_accuracy != m.train.accuracy {
            format!(
                " (true labels top-1 {:5.2}%)",
                m.train_true_accuracy.first().copied().unwrap_or(f64::NAN)
            )
        } else {
            String::new()
        };
        let test = m
            .test
            .as_ref()
            .map(|t| format!(" | {}", split("test", t, k)))
            .unwrap_or_default();
        let skipped = if m.skipped > 0 {
            format!(", {} unreadable images skipped", m.skipped)
        } else {
            String::new()
        };
        let line = format!(
            "epoch {:>3}/{} lr {:<7} | {}{true_labels} | {}{test} | {:.1} s{skipped}",
            m.epoch,
            config.epochs,
            m.lr,
            split("train", &m.train, k),
            split("valid", &m.valid, k),
            m.seconds
        );
        self.line(&line);
    }

    fn finished(&mut self, results: &RunResults) {
        let k = results.config.report_k;
        let line = format!(
            "final: {} | {}",
            selected(&results.best_top1, k),
            selected(&results.best_topk, k)
        );
        self.line(&line);
    }
}
