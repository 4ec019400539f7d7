//! Failover's part of the report (measured by `failover.rs`): the time from SIGKILL of the
//! leader until a standby leads and until a span committed at the kill is summarized, in
//! Other figures and in the failover section of each scale, and its method.

use super::headline::Figure;
use super::input::ReportInput;
use crate::lab::bench::failover::INGEST_RATE;
use crate::lab::bench::scale::ScaleResult;
use crate::lab::bench::stats::{count, median, runs, secs};
use std::fmt::Write;

/// The median and the slowest: `510.0 ms (900.0 ms)`.
fn median_max(v: &[f64]) -> String {
    format!(
        "{} ({})",
        secs(median(v)),
        secs(v.iter().copied().fold(f64::NAN, f64::max))
    )
}

pub fn figures(input: &ReportInput) -> Vec<Figure> {
    let rs = input.results;
    vec![
        Figure::new(
            rs,
            "failover: SIGKILL of the leader → a standby leads",
            "median (max)",
            |r| median_max(&r.failover.to_leader),
        ),
        Figure::new(
            rs,
            "failover: SIGKILL → a span committed at the kill is summarized",
            "median (max)",
            |r| median_max(&r.failover.to_absorbed),
        ),
    ]
}

pub fn section(md: &mut String, r: &ScaleResult) {
    let f = &r.failover;
    let _ = writeln!(
        md,
        "### Failover ({} kills, {} spans/s of ingest)\n\nA standby tries the leader lock once a second. The kills were \
         spread evenly over that second, so these figures are mostly the wait for the standby's next try (about half a second \
         in the median, up to a whole one), plus the time for the server to find the leader's connection closed and for the \
         standby to take the lock.\n\n| from SIGKILL of the leader to | median | max | runs |\n|---|---:|---:|---|\n| a standby leads | {} | {} | {} |\n| a span committed at the kill is summarized | {} | {} | {} |\n",
        f.to_leader.len(),
        count(INGEST_RATE as u64),
        secs(median(&f.to_leader)),
        secs(f.to_leader.iter().copied().fold(f64::NAN, f64::max)),
        runs(&f.to_leader),
        secs(median(&f.to_absorbed)),
        secs(f.to_absorbed.iter().copied().fold(f64::NAN, f64::max)),
        runs(&f.to_absorbed)
    );
}

pub fn method(md: &mut String) {
    let _ = writeln!(
        md,
        "- **Failover.** Two in-process workers with the default settings; the leader is ended as SIGKILL ends a process: its \
         runtime is dropped with every task, so its connections close without a goodbye and nothing is cancelled or unlocked by \
         it (the server ends its sessions when it finds them closed). The time runs from that instant until pg_stat_activity \
         shows the other worker's session as `trace-summarizer leader …` (it sets that right after taking the leader lock), \
         polled every 5 ms, and until a span committed just after the kill is in the summaries. A new standby is started before \
         each kill, and the kill lands at a different point of the standby's once-a-second poll for the lock each time. {} \
         spans/s of ingest run throughout.",
        count(INGEST_RATE as u64)
    );
}
