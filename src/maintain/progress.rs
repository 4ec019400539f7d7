//! Progress display for long operations: an indicatif bar (rows, rate, ETA) on a terminal,
//! and periodic log lines otherwise.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Progress {
    bar: Option<ProgressBar>,
    label: &'static str,
    total: u64,
    done: Mutex<(u64, Instant)>,
    started: Instant,
}

fn on_terminal() -> bool {
    std::io::stderr().is_terminal()
}

impl Progress {
    /// An indeterminate step (a single long statement).
    pub fn spinner(label: &'static str) -> Self {
        let bar = on_terminal().then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]")
                    .expect("valid template"),
            );
            b.set_message(label);
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        if bar.is_none() {
            tracing::info!(step = label, "rebuild progress");
        }
        Progress {
            bar,
            label,
            total: 0,
            done: Mutex::new((0, Instant::now())),
            started: Instant::now(),
        }
    }

    /// A bar over `total` rows.
    pub fn bar(total: u64, label: &'static str) -> Self {
        let bar = on_terminal().then(|| {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {human_pos}/{human_len} rows, {per_sec}, ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            b.set_message(label);
            b
        });
        Progress {
            bar,
            label,
            total,
            done: Mutex::new((0, Instant::now())),
            started: Instant::now(),
        }
    }

    pub fn advance(&self, rows: u64) {
        if let Some(b) = &self.bar {
            b.inc(rows);
            return;
        }
        let mut done = self.done.lock().expect("progress lock");
        done.0 += rows;
        // Off a terminal: one line every 5 seconds at most.
        if done.1.elapsed() >= Duration::from_secs(5) {
            done.1 = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(1e-3);
            tracing::info!(
                step = self.label,
                rows = done.0,
                total = self.total,
                rate = (done.0 as f64 / secs) as u64,
                "rebuild progress"
            );
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
