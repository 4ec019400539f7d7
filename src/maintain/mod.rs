//! Keeping the summaries table exact: one incremental step (`cycle`) and its parts (finding new
//! spans, merging them, recomputing traces, noticing removed rows and relations, the window
//! edge, the audit), the full refresh it falls back to (`rebuild`, on several
//! connections: `parallel`), and the relation readers
//! use with the swap that replaces it (`relation`).

pub mod audit;
pub mod columnar;
pub mod cycle;
pub mod leaves;
pub mod merge;
pub mod parallel;
pub mod probe;
pub mod progress;
pub mod rebuild;
pub mod recompute;
pub mod relation;
pub mod retention;
pub mod scratch;
pub mod stamps;
pub mod tailing;
