-- Per-session scratch tables of the worker, emptied at every commit.
create temp table if not exists ts_affected (trace_id text primary key) on commit delete rows;
create temp table if not exists ts_fresh (
    trace_id             text primary key,
    "timestamp"          timestamptz,
    root_span_id         text,
    root_span_name       text,
    root_service_name    text,
    root_span_kind       integer,
    start_time_unix_nano bigint,
    end_time_unix_nano   bigint,
    duration_ms          double precision,
    status_code          integer,
    status_message       text,
    service_set          text[],
    span_count           bigint,
    error_count          bigint,
    oldest               timestamptz
) on commit delete rows;
