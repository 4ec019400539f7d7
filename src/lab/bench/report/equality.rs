//! The table = view check's part of the report (measured by `equality.rs`): rows that differ
//! in the Targets, the Table = view section of each scale, and its method.

use super::headline::Check;
use crate::lab::bench::scale::ScaleResult;
use crate::lab::bench::stats::count;
use std::fmt::Write;

pub fn checks(rs: &[ScaleResult]) -> Vec<Check> {
    vec![Check {
        measure: "table = view at the end: rows that differ".into(),
        target: "0".into(),
        cells: rs
            .iter()
            .map(|r| {
                Check::cell(
                    format!("{} of {}", r.differing, count(r.compared.max(0) as u64)),
                    Some(r.differing == 0 && r.compared > 0),
                )
            })
            .collect(),
    }]
}

pub fn section(md: &mut String, r: &ScaleResult) {
    let _ = writeln!(
        md,
        "### Table = view\n\nAfter a final step and a fresh REFRESH CONCURRENTLY, {} rows of the table (traces more than 10 minutes \
         from the window edge) were compared with the view column for column: **{} differ**.\n",
        r.compared, r.differing
    );
}

pub fn method(md: &mut String) {
    let _ = writeln!(
        md,
        "- **Equality.** After the worker stopped: one step, REFRESH CONCURRENTLY, one more step, then `EXCEPT ALL` both ways over \
         the 14 columns, leaving out traces within 10 minutes of the window edge (they cross it continuously, and the two sides \
         were brought up to date a refresh's duration apart).\n"
    );
}
