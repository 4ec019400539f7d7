//! What the report is rendered from: the results of every scale, of the Citus section and of
//! the restore section, the settings, and what the
//! bench knows of the machine, the server and the run.

use crate::lab::bench::citus::CitusRuns;
use crate::lab::bench::config::Settings;
use crate::lab::bench::env::Machine;
use crate::lab::bench::restore::RestoreRuns;
use crate::lab::bench::scale::ScaleResult;

pub struct ReportInput<'a> {
    pub machine: &'a Machine,
    pub server: &'a str,
    pub throwaway: bool,
    pub settings: &'a Settings,
    pub results: &'a [ScaleResult],
    /// The Citus section, when it ran (or was skipped: Citus not installed).
    pub citus: Option<&'a CitusRuns>,
    /// The restore section, when it ran.
    pub restore: Option<&'a RestoreRuns>,
    /// The chart's file name (beside the report), when it was written.
    pub chart: Option<String>,
    pub chart_has_text: bool,
    /// The comparison chart's file name (beside the report), when it was written.
    pub comparison_chart: Option<String>,
    pub comparison_chart_has_text: bool,
    pub elapsed_s: f64,
    /// /proc/loadavg's first three fields before and after the run.
    pub load_before: String,
    /// The git state of the source tree the bench ran from ("" when unknown).
    pub source: String,
    pub load_after: String,
}
