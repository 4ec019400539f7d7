//! Recomputing a set of traces from their spans: the affected trace_ids sit in the session's
//! `ts_affected`; their rows are computed with the contract's aggregates (one index lookup per
//! trace, never a scan of the window), then upserted or deleted in the summaries, and the
//! per-trace oldest span time is kept in `trace_summarizer.trace_oldest_span`.

use crate::db::source::Target;
use crate::db::sqltext;
use crate::error::{DbContext, Result};
use tokio_postgres::GenericClient;

/// Creates the session's scratch tables (once per connection).
pub async fn prepare_session<C: GenericClient>(client: &C) -> Result<()> {
    client
        .batch_execute(include_str!("../../sql/session_temp.sql"))
        .await
        .ctx("creating scratch tables")
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Applied {
    pub upserted: i64,
    pub deleted: i64,
}

/// Recomputes every trace in `ts_affected` into `summaries`; `window` is an interval expression.
pub async fn apply<C: GenericClient>(
    client: &C,
    target: &Target,
    summaries: &str,
    window: &str,
) -> Result<Applied> {
    client
        .execute("delete from ts_fresh", &[])
        .await
        .ctx("clearing scratch rows")?;
    let fill = format!(
        "insert into ts_fresh
         select a.trace_id, s.*
         from ts_affected a
         cross join lateral (
             select {aggregates}, min(o.\"timestamp\") as oldest
             from {traces} o
             where o.trace_id = a.trace_id and o.\"timestamp\" > now() - {window}
         ) s",
        aggregates = sqltext::aggregates(),
        traces = target.traces(),
    );
    client
        .execute(&fill, &[])
        .await
        .ctx("recomputing affected traces")?;
    let cols = sqltext::column_list(None);
    let upsert = format!(
        "insert into {summaries} as t ({cols}) select {cols} from ts_fresh where span_count > 0 {tail}",
        tail = sqltext::upsert_tail("t"),
    );
    let upserted = client
        .execute(&upsert, &[])
        .await
        .ctx("upserting summaries")? as i64;
    let deleted = client
        .execute(
            &format!("delete from {summaries} t using ts_fresh f where t.trace_id = f.trace_id and f.span_count = 0"),
            &[],
        )
        .await
        .ctx("deleting summaries of traces that left the window")? as i64;
    client
        .batch_execute(
            "insert into trace_summarizer.trace_oldest_span (trace_id, oldest)
               select trace_id, oldest from ts_fresh where span_count > 0
             on conflict (trace_id) do update set oldest = excluded.oldest
               where trace_oldest_span.oldest is distinct from excluded.oldest;
             delete from trace_summarizer.trace_oldest_span o using ts_fresh f
               where o.trace_id = f.trace_id and f.span_count = 0;",
        )
        .await
        .ctx("updating trace_summarizer.trace_oldest_span")?;
    Ok(Applied { upserted, deleted })
}
