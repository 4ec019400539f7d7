-- trace-summarizer's own state. One row per installation (one target schema per database).
create schema if not exists trace_summarizer;
comment on schema trace_summarizer is 'State of trace-summarizer (watermark, window, mode, last cycle). Managed by trace-summarizer; removed by its uninstall.';

create table if not exists trace_summarizer.state (
    target_schema     text primary key,
    version           integer not null,
    mode              text not null check (mode in ('incremental', 'mv')),
    window_interval   interval not null,
    -- Tailing position. Rows visible in tail_snapshot are summarized. Rows committed later have
    -- created_at >= tail_from or created_at = any(tail_pending) (the start times of the
    -- transactions still in flight when the position was taken).
    tail_from         timestamptz,
    tail_pending      timestamptz[] not null default '{}',
    tail_snapshot     pg_snapshot,
    reflected_at      timestamptz,
    -- Retention detection: min(timestamp) of otel_traces and the delete counters last seen.
    span_floor        timestamptz,
    deletes_seen      bigint,
    floor_at_deletes  timestamptz,
    -- Set when the next cycle must be a full refresh (verify found drift, unexplained deletes).
    rebuild_reason    text,
    tailing_index     text,
    last_cycle_at     timestamptz,
    last_cycle_ms     double precision,
    last_spans        bigint,
    last_upserted     bigint,
    last_pruned       bigint,
    last_rebuild_at   timestamptz,
    last_rebuild_ms   double precision,
    last_rebuild_reason text,
    installed_at      timestamptz not null default now()
);

-- The oldest in-window span of each summarized trace: which traces the window edge and
-- retention touch, found by an index range scan instead of a rescan of otel_traces.
create table if not exists trace_summarizer.trace_oldest_span (
    trace_id text primary key,
    oldest   timestamptz not null
);
create index if not exists trace_oldest_span_oldest on trace_summarizer.trace_oldest_span (oldest);
