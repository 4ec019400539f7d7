//! The commit horizon: where rows that are not yet visible can still appear.
//!
//! `created_at` defaults to `now()`, the start of the inserting transaction, so a transaction
//! that began before our watermark can commit rows *below* it later. Before each snapshot we
//! read the start times of every transaction in flight in this database (`pg_stat_activity`):
//! rows committed after the snapshot have `created_at` equal to one of those start times, or
//! newer than the moment of the read. The read happens before the snapshot is taken, and a
//! backend clears its `xact_start` only after its commit is visible, so nothing slips between.
//! `COMMIT_MARGIN` covers the microseconds between a transaction's timestamp and its report.

use crate::error::{DbContext, Result};
use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio_postgres::GenericClient;

/// Lookback below the moment of the read, for transactions that took their start timestamp
/// but had not yet published it.
pub const COMMIT_MARGIN: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct Horizon {
    /// Start times of the transactions in flight at `read_at` (excluding our own session).
    pub pending: Vec<DateTime<Utc>>,
    pub read_at: DateTime<Utc>,
}

impl Horizon {
    /// The lower bound of `created_at` for rows committed after this horizon's snapshot,
    /// apart from `pending`.
    pub fn tail_from(&self) -> DateTime<Utc> {
        self.read_at - chrono::Duration::from_std(COMMIT_MARGIN).expect("small duration")
    }
}

/// Reads the horizon. Must run outside (before) the transaction whose snapshot it guards.
/// Needs `pg_read_all_stats` to see other roles' `xact_start`; `privileges.rs` checks that.
pub async fn read<C: GenericClient>(client: &C) -> Result<Horizon> {
    let row = client
        .query_one(
            "select coalesce(array_agg(distinct xact_start) filter (where xact_start is not null), '{}'),
                    clock_timestamp()
             from pg_stat_activity
             where datname = current_database() and pid <> pg_backend_pid()",
            &[],
        )
        .await
        .ctx("reading in-flight transactions from pg_stat_activity")?;
    Ok(Horizon {
        pending: row.get(0),
        read_at: row.get(1),
    })
}
