-- The worker session's scratch tables, created once per session and emptied at the start of
-- every step (not ON COMMIT DELETE ROWS: truncating them at every commit rebuilt their indexes,
-- wrote their files and invalidated every cached plan that reads them).
-- They are made from otel_traces and from the definition's aggregates themselves, so every
-- column has the source's type and collation ({{traces}}, {{aggregates}} rendered by Rust).

-- The spans found new in this step: committed since the position, in otel_traces order.
create temp table if not exists ts_new as
    select "timestamp", trace_id, span_id, parent_span_id, name, kind, start_time_unix_nano,
           end_time_unix_nano, service_name, status_code, status_message,
           tableoid::oid as leaf, trace_summarizer_xid as xid
    from {{traces}} with no data;

-- Per trace: the aggregates of the definition over some of its spans, and their oldest time.
-- ts_partial gives ts_fresh its columns (the merge aggregates new spans inside its own
-- statement); ts_fresh holds a full recompute over all spans in the window.
create temp table if not exists ts_partial as
    select trace_id::text as trace_id, {{aggregates}}, min("timestamp") as oldest
    from {{traces}} group by trace_id with no data;
create temp table if not exists ts_fresh as
    select * from ts_partial with no data;
create unique index if not exists ts_partial_trace_id on ts_partial (trace_id);
create unique index if not exists ts_fresh_trace_id on ts_fresh (trace_id);

-- The traces to recompute from their spans in this step.
create temp table if not exists ts_affected (trace_id text primary key);
