-- The maintained table: the contract's 14 columns in order, with the view's exact types.
create table {{table}} (
    trace_id             text not null,
    "timestamp"          timestamptz not null,
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
    error_count          bigint
);
