//! Console reporting of a run: a progress bar per epoch (on stderr, shown only on a terminal)
//! and one line per epoch on stdout.

use indicatif::{ProgressBar, ProgressStyle};

use crate::config::TrainConfig;
use crate::data::PreparedData;
use crate::train::{EpochMetrics, Observer, RunResults, SelectedResult, SplitMetrics};

/// Prints a run to the console; `prefix` tags every line (the grid cell in `reproduce`).
pub struct Console {
    prefix: String,
    bar: Option<ProgressBar>,
}

impl Console {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            bar: None,
        }
    }
}

fn split(name: &str, m: &SplitMetrics, k: usize) -> String {
    format!(
        "{name} loss {:.4} top-1 {:5.2}% top-{k} {:5.2}%",
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
        println!(
            "{}{} on {} ({} classes; {} train / {} valid / {} test{noise}), {}, {} epochs of batch {}, lr {}{}",
            self.prefix,
            config.loss.label(),
            config.data.source.name(),
            data.classes,
            data.train.len(),
            data.valid.len(),
            data.test.len(),
            config.model.name(),
            config.epochs,
            config.batch_size,
            config.lr,
            if resumed_at > 0 {
                format!(", resumed after epoch {resumed_at}")
            } else {
                String::new()
            }
        );
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
        println!(
            "{}epoch {:>3}/{} lr {:<7} | {} | {} | {} | {:.1} s",
            self.prefix,
            m.epoch,
            config.epochs,
            m.lr,
            split("train", &m.train, k),
            split("valid", &m.valid, k),
            split("test", &m.test, k),
            m.seconds
        );
    }

    fn finished(&mut self, results: &RunResults) {
        let k = results.config.report_k;
        println!(
            "{}final: {} | {}",
            self.prefix,
            selected(&results.best_top1, k),
            selected(&results.best_topk, k)
        );
    }
}
