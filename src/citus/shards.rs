//! A Citus node's own shards of otel_traces and otel_trace_summaries, from the Citus metadata the
//! node holds (`pg_dist_shard`, `pg_dist_placement`, `pg_dist_local_group`): the pairs a step on
//! that node reads and writes (`db::source::LocalShards`). Only active placements count: a shard
//! being moved away, or left behind for deferred deletion, is not the node's any more.

use crate::db::quote;
use crate::db::source::{LocalShards, ShardPair, Target};
use crate::error::{DbContext, Result};
use tokio_postgres::GenericClient;

/// The pairs of co-located shards placed on this node, in hash order.
pub async fn local<C: GenericClient>(client: &C, target: &Target) -> Result<LocalShards> {
    let rows = client
        .query(
            "with g as (select groupid from pg_dist_local_group),
                  sh as (
                      select s.logicalrelid, s.shardid, s.shardminvalue::int as lo, s.shardmaxvalue::int as hi
                      from pg_dist_shard s join pg_dist_placement p on p.shardid = s.shardid, g
                      where p.groupid = g.groupid and p.shardstate = 1
                        and s.logicalrelid in (to_regclass(quote_ident($1) || '.otel_traces'),
                                               to_regclass(quote_ident($1) || '.otel_trace_summaries')))
             select t.shardid, u.shardid, t.lo, t.hi,
                    to_regclass(quote_ident($1) || '.' || quote_ident('otel_traces_' || t.shardid))::oid,
                    coalesce((select c.relkind = 'p' from pg_class c
                              where c.oid = to_regclass(quote_ident($1) || '.' || quote_ident('otel_traces_' || t.shardid))), false)
             from sh t join sh u on u.lo = t.lo and u.hi = t.hi
             where t.logicalrelid = to_regclass(quote_ident($1) || '.otel_traces')
               and u.logicalrelid = to_regclass(quote_ident($1) || '.otel_trace_summaries')
             order by t.lo",
            &[&target.schema],
        )
        .await
        .ctx("listing this node's shards")?;
    let mut pairs = Vec::new();
    for r in rows {
        let (traces_shard, summaries_shard): (i64, i64) = (r.get(0), r.get(1));
        let Some(traces_oid) = r.get::<_, Option<u32>>(4) else {
            // Placed here in the metadata, not created yet: the next step sees it.
            continue;
        };
        pairs.push(ShardPair {
            traces: quote::qualified(&target.schema, &format!("otel_traces_{traces_shard}")),
            traces_oid,
            partitioned: r.get(5),
            summaries: quote::qualified(
                &target.schema,
                &format!("otel_trace_summaries_{summaries_shard}"),
            ),
            min_hash: r.get(2),
            max_hash: r.get(3),
        });
    }
    Ok(LocalShards { pairs })
}
