//! Keeping the summaries table exact: the incremental cycle and its parts (finding new spans,
//! recomputing traces, noticing deletes), and the full refresh it falls back to.

pub mod cycle;
pub mod deletes;
pub mod horizon;
pub mod rebuild;
pub mod recompute;
