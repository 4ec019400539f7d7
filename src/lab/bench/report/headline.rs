//! The report's two headline tables, one column per scale: Targets (each ratio, its target, met
//! or not, then how many were met and which were not) and Other figures. Their rows come from
//! the section files as `Check`s and `Figure`s; `scale_header` is the tables' shared header.

use crate::lab::bench::scale::ScaleResult;
use crate::lab::bench::stats::count;
use std::fmt::Write;

/// One row of the targets table: a value per scale, with whether the target was met where it
/// applies.
pub struct Check {
    pub measure: String,
    pub target: String,
    pub cells: Vec<(String, Option<bool>)>,
}

impl Check {
    pub fn cell(value: String, met: Option<bool>) -> (String, Option<bool>) {
        match met {
            Some(m) => (format!("{value} {}", mark(m)), Some(m)),
            None => (value, None),
        }
    }
}

/// One row of the Other figures table: what, how it is computed, a value per scale.
pub struct Figure {
    pub measure: String,
    pub how: String,
    pub cells: Vec<String>,
}

impl Figure {
    /// A row with `value` of each scale.
    pub fn new(
        rs: &[ScaleResult],
        measure: impl Into<String>,
        how: impl Into<String>,
        value: impl Fn(&ScaleResult) -> String,
    ) -> Figure {
        Figure {
            measure: measure.into(),
            how: how.into(),
            cells: rs.iter().map(value).collect(),
        }
    }
}

fn mark(met: bool) -> &'static str {
    if met {
        "✓"
    } else {
        "✗"
    }
}

/// A table header: the label columns, then one column per scale.
pub fn scale_header(rs: &[ScaleResult], labels: &[&str]) -> String {
    let mut head = format!("| {} |", labels.join(" | "));
    let mut sep = "|---".repeat(labels.len()) + "|";
    for r in rs {
        let _ = write!(head, " {} spans |", count(r.spans));
        sep += "---:|";
    }
    format!("{head}\n{sep}")
}

/// The Targets table, then the count of checks met and the list of those not met.
pub fn targets(md: &mut String, rs: &[ScaleResult], checks: &[Check]) {
    let _ = writeln!(md, "## Targets\n");
    let _ = writeln!(md, "{}", scale_header(rs, &["measure", "target"]));
    let (mut met, mut missed) = (Vec::new(), Vec::new());
    for c in checks {
        let mut line = format!("| {} | {} |", c.measure, c.target);
        for (i, (value, m)) in c.cells.iter().enumerate() {
            let _ = write!(line, " {value} |");
            match m {
                Some(true) => met.push(()),
                Some(false) => {
                    missed.push(format!("{} at {} spans", c.measure, count(rs[i].spans)))
                }
                None => {}
            }
        }
        let _ = writeln!(md, "{line}");
    }
    let _ = writeln!(
        md,
        "\n✓ met, ✗ not met; a value without a mark is shown for reference (its target applies at another scale). \
         **{} of {} checks met.**",
        met.len(),
        met.len() + missed.len()
    );
    if !missed.is_empty() {
        let _ = writeln!(md, "\nNot met:\n");
        for m in &missed {
            let _ = writeln!(md, "- {m}");
        }
    }
    let _ = writeln!(md);
}

/// The Other figures table.
pub fn other_figures(md: &mut String, rs: &[ScaleResult], figures: &[Figure]) {
    let _ = writeln!(md, "## Other figures\n");
    let _ = writeln!(md, "{}", scale_header(rs, &["measure", "how"]));
    for f in figures {
        let mut line = format!("| {} | {} |", f.measure, f.how);
        for cell in &f.cells {
            let _ = write!(line, " {cell} |");
        }
        let _ = writeln!(md, "{line}");
    }
    let _ = writeln!(md);
}
