//! Finding the spans committed since the last step, exactly, whoever wrote them and whatever
//! they put in `created_at`.
//!
//! Every row carries `trace_summarizer_xid`, the id of the transaction that inserted it (a
//! column default evaluated by the server; see `install/capture.rs`). A position is a snapshot
//! boundary: ids below `xmax` had finished, except those in `xip`. The rows committed since are
//! exactly those whose id is at least `xmax` or in `xip`, and that the step's snapshot sees:
//! no clock, no margin, no `pg_stat_activity`. Prepared transactions are in `xip` until they
//! commit; so is any transaction that was still running, however long.
//!
//! Stamps live in a space of their own: the inserting transaction's id plus the installation's
//! stamp offset (zero unless a restore brought stamps from a server whose ids were ahead; see
//! `stamps.rs`). A snapshot read here is already shifted into that space.
//!
//! A row is never read while its transaction is in progress in the step's snapshot, even when
//! the snapshot sees it: rows loaded with `COPY ... FREEZE` into a table attached as a partition
//! are visible to every snapshot at once. Such rows are read once their transaction has ended,
//! like any other (`covered` says which rows a position covers).
//!
//! A step absorbs at most `max_spans` new spans: it reads them in id order and stops at a
//! transaction boundary (`cap`), leaving the rest to the next step. Everything a step
//! recomputes from the spans is restricted to ids below `cap`, so the summaries always equal
//! the definition over exactly the rows the new position covers.

use crate::db::source::Target;
use crate::db::statements::Db;
use crate::error::{DbContext, Result};
use crate::state::Position;
use tokio_postgres::GenericClient;

/// The step's own snapshot, as a position, with `now()` and the window edge.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub xmax: i64,
    pub xip: Vec<i64>,
    pub now: chrono::DateTime<chrono::Utc>,
    pub edge: chrono::DateTime<chrono::Utc>,
}

impl Snapshot {
    /// Reads the transaction's snapshot (REPEATABLE READ: the one every statement sees), in the
    /// stamp space of `offset`.
    pub async fn read<C: GenericClient + Sync>(
        client: &Db<'_, C>,
        window: &str,
        offset: i64,
    ) -> Result<Snapshot> {
        let row = client
            .query_one(
                "select pg_snapshot_xmax(s)::text::bigint + $2,
                        array(select x::text::bigint + $2 from pg_snapshot_xip(s) x order by 1),
                        now(), now() - $1::text::interval
                 from pg_current_snapshot() s",
                &[&window, &offset],
            )
            .await
            .ctx("reading the snapshot")?;
        Ok(Snapshot {
            xmax: row.get(0),
            xip: row.get(1),
            now: row.get(2),
            edge: row.get(3),
        })
    }

    /// The position these summaries reach when everything below `cap` is absorbed: the
    /// transactions below `cap` still running in this snapshot stay pending.
    pub fn position_at(&self, cap: i64) -> Position {
        Position {
            xmax: cap,
            xip: self.xip.iter().copied().filter(|x| *x < cap).collect(),
        }
    }
}

/// What `collect` found.
#[derive(Debug, Clone, Copy)]
pub struct NewSpans {
    /// Rows read (in or out of the window).
    pub rows: i64,
    /// Ids below this are absorbed by this step; the snapshot's xmax unless `capped`.
    pub cap: i64,
    /// More committed rows wait beyond `cap`.
    pub capped: bool,
    /// One transaction alone held more rows than the bound (it is never split): its size.
    pub large_transaction: Option<i64>,
    /// That transaction is larger than a full refresh costs to absorb, and was not read.
    pub refused: bool,
}

const COLUMNS: &str =
    "\"timestamp\", trace_id, span_id, parent_span_id, name, kind, start_time_unix_nano, \
     end_time_unix_nano, service_name, status_code, status_message, tableoid, trace_summarizer_xid";

/// Fills `ts_new` with the in-window rows committed since `from` and visible in `snap` (rows at
/// or below the window edge are in no summary, and only ever leave it), at most about
/// `max_spans` of them (one transaction's rows are never split). With `refuse_large`, a single
/// transaction larger than a full refresh costs to absorb (`refresh_cheaper_above`) is not read
/// at all (`large_transaction` says how large): a full refresh absorbs it more cheaply, under its
/// own time limit.
pub async fn collect<C: GenericClient + Sync>(
    client: &Db<'_, C>,
    target: &Target,
    from: &Position,
    snap: &Snapshot,
    max_spans: i64,
    refuse_large: bool,
) -> Result<NewSpans> {
    let traces = target.traces();
    // Rows of transactions that were still running at the last position.
    let mut rows = 0i64;
    if !from.xip.is_empty() {
        rows += client
            .execute(
                &format!(
                    "insert into ts_new select {COLUMNS} from {traces}
                     where trace_summarizer_xid = any($1::bigint[]) and \"timestamp\" > $2
                       and trace_summarizer_xid <> all($3::bigint[]) and trace_id is not null"
                ),
                &[&from.xip, &snap.edge, &snap.xip],
            )
            .await
            .ctx("reading rows of transactions that were running")? as i64;
    }
    // Rows of transactions that began since, in id order, one more than allowed.
    let read = client
        .execute(
            &format!(
                "insert into ts_new select {COLUMNS} from {traces}
                 where trace_summarizer_xid >= $1 and trace_summarizer_xid < $2 and \"timestamp\" > $4
                   and trace_summarizer_xid <> all($5::bigint[]) and trace_id is not null
                 order by trace_summarizer_xid limit $3"
            ),
            &[&from.xmax, &snap.xmax, &(max_spans + 1), &snap.edge, &snap.xip],
        )
        .await
        .ctx("reading newly committed spans")? as i64;
    rows += read;
    if read <= max_spans {
        return Ok(NewSpans {
            rows,
            cap: snap.xmax,
            capped: false,
            large_transaction: None,
            refused: false,
        });
    }
    // Too many: stop at the last transaction read, which may be incomplete.
    let row = client
        .query_one(
            "select min(xid), max(xid) from ts_new where xid >= $1",
            &[&from.xmax],
        )
        .await
        .ctx("bounding the step")?;
    let (first, last): (i64, i64) = (row.get(0), row.get(1));
    if first == last {
        // One transaction alone is larger than the bound: never split, so take all of it, or
        // none when a full refresh is cheaper.
        let refuse_above = if refuse_large {
            refresh_cheaper_above(client, target).await?
        } else {
            i64::MAX / 4
        };
        let size: i64 = client
            .query_one(
                &format!(
                    "select count(*) from (select 1 from {traces} where trace_summarizer_xid = $1 and \"timestamp\" > $3 and trace_id is not null limit $2) t"
                ),
                &[&first, &(refuse_above + 1), &snap.edge],
            )
            .await
            .ctx("sizing one large transaction")?
            .get(0);
        client
            .execute("delete from ts_new where xid = $1", &[&first])
            .await
            .ctx("bounding the step")?;
        rows -= read;
        if size > refuse_above {
            tracing::warn!(
                spans = size,
                limit = refuse_above,
                "one transaction wrote more spans than a full refresh costs to absorb"
            );
            return Ok(NewSpans {
                rows,
                cap: first,
                capped: true,
                large_transaction: Some(size),
                refused: true,
            });
        }
        rows += client
            .execute(
                &format!(
                    "insert into ts_new select {COLUMNS} from {traces} where trace_summarizer_xid = $1 and \"timestamp\" > $2 and trace_id is not null"
                ),
                &[&first, &snap.edge],
            )
            .await
            .ctx("reading one large transaction")? as i64;
        return Ok(NewSpans {
            rows,
            cap: first + 1,
            capped: first + 1 < snap.xmax,
            large_transaction: Some(size),
            refused: false,
        });
    }
    // Stop at the last transaction read, which may be incomplete.
    rows -= client
        .execute("delete from ts_new where xid >= $1", &[&last])
        .await
        .ctx("bounding the step")? as i64;
    Ok(NewSpans {
        rows,
        cap: last,
        capped: true,
        large_transaction: None,
        refused: false,
    })
}

/// A backlog beyond this many spans (and beyond a tenth of the table) costs more to absorb than
/// a full refresh: per span, a step costs roughly ten times what one sequential aggregation does.
const BACKLOG_FLOOR: i64 = 100_000;

/// New spans beyond which a full refresh is cheaper than absorbing them: a tenth of the
/// source's estimated rows, and never less than `BACKLOG_FLOOR`.
pub async fn refresh_cheaper_above<C: GenericClient + Sync>(
    client: &Db<'_, C>,
    target: &Target,
) -> Result<i64> {
    let estimated: f64 = client
        .query_one(
            "with recursive tree(oid) as (
                 select to_regclass(quote_ident($1) || '.otel_traces')::oid
                 union all select i.inhrelid from pg_inherits i join tree t on i.inhparent = t.oid)
             select coalesce(sum(greatest(c.reltuples, 0)), 0)::float8 from pg_class c join tree t on t.oid = c.oid",
            &[&target.schema],
        )
        .await
        .ctx("estimating the size of otel_traces")?
        .get(0);
    Ok(((estimated / 10.0) as i64).max(BACKLOG_FLOOR))
}

/// Columnar storage off (TimescaleDB's compressed chunks): tailing reads the rowstore only, so
/// an idle check or a step never decompresses old chunks. New rows never go straight to
/// columnar storage (unless `timescaledb.enable_direct_compress_*` is on, which is not
/// supported); rows compressed before a step read them are found by their new compressed
/// batches (`columnar.rs`). Without TimescaleDB the setting is an unused placeholder.
pub const COLUMNAR_OFF: &str = "select set_config('timescaledb.enable_columnarscan', 'off', true)";
/// Columnar storage on again, for everything else a step reads.
pub const COLUMNAR_ON: &str = "select set_config('timescaledb.enable_columnarscan', 'on', true)";

/// The SQL condition that a row stamped `col` is covered by a position (`xmax` and `xip` are
/// parameters or literals): stamped below `xmax` by a transaction not in `xip`, or before install
/// (NULL). Such rows are summarized; the others are new, or not committed yet.
pub fn covered(col: &str, xmax: &str, xip: &str) -> String {
    format!("({col} is null or ({col} < {xmax} and {col} <> all({xip}::bigint[])))")
}
