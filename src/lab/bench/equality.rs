//! The table = view check at the end of a scale: with no worker running, one step, REFRESH
//! CONCURRENTLY of the view, one more step, then both compared row for row over the 14
//! columns, leaving out traces within 10 minutes of the window edge (the two were brought up to
//! date a refresh's duration apart, and traces cross the edge continuously).

use super::refresh::{self, Memory, MV};
use super::steps::cycle_once;
use crate::db::source::Target;
use crate::db::sqltext;
use crate::definition::Window;
use crate::error::{DbContext, Result};
use tokio_postgres::Client;

/// Brings table and view up to date and compares them; returns the rows compared (away from
/// the window edge) and the rows that differ. No worker may be running.
pub async fn measure(client: &mut Client, target: &Target, window: &Window) -> Result<(i64, i64)> {
    cycle_once(client, target).await?;
    refresh::refresh(client, target, true, Memory::LikeRebuild).await?;
    cycle_once(client, target).await?;
    compare(client, target, window).await
}

/// Table and view compared row for row, leaving out traces within 10 minutes of the window
/// edge.
async fn compare(client: &Client, target: &Target, window: &Window) -> Result<(i64, i64)> {
    let cols = sqltext::column_list(None);
    let w = window.literal();
    let keep = format!("\"timestamp\" > now() - {w} + interval '10 minutes'");
    let (t, v) = (target.summaries(), target.rel(MV));
    let row = client
        .query_one(
            &format!(
                "select (select count(*) from {t} where {keep}),
                        (select count(*) from (select {cols} from {t} where {keep} except all select {cols} from {v} where {keep}) a)
                      + (select count(*) from (select {cols} from {v} where {keep} except all select {cols} from {t} where {keep}) b)"
            ),
            &[],
        )
        .await
        .ctx("comparing the table with the view")?;
    Ok((row.get(0), row.get(1)))
}
