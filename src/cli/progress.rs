//! Progress on the console: a bar on a terminal, plain per-epoch lines otherwise.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

use crate::train::{EpochRecord, Progress};

pub struct ConsoleProgress {
    bar: Option<ProgressBar>,
    use_bar: bool,
    epochs: usize,
}

impl ConsoleProgress {
    pub fn new(quiet: bool, epochs: usize) -> ConsoleProgress {
        ConsoleProgress { bar: None, use_bar: !quiet && std::io::stderr().is_terminal(), epochs }
    }
}

impl Progress for ConsoleProgress {
    fn epoch_started(&mut self, epoch: usize, batches: usize) {
        if self.use_bar {
            let bar = ProgressBar::new(batches as u64);
            let style = ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
                .expect("valid template")
                .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(format!("{epoch}/{}", self.epochs));
            self.bar = Some(bar);
        }
    }

    fn tick(&mut self, batches_done: usize, train_loss: f64) {
        if let Some(bar) = &self.bar {
            bar.set_position(batches_done as u64);
            bar.set_message(format!("loss {train_loss:.4}"));
        }
    }

    fn epoch_done(&mut self, r: &EpochRecord) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        println!(
            "epoch {:>3}  train {:.4} (recon {:.4}, kl {:.4})  test {:.4} (recon {:.4}, kl {:.4})  {:.2} s  {:.0} samples/s",
            r.epoch,
            r.train.total,
            r.train.recon,
            r.train.kl,
            r.test.total,
            r.test.recon,
            r.test.kl,
            r.seconds,
            r.samples_per_s
        );
    }
}
