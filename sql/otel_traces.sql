-- The source table exactly as CONTRACT.md describes it (used by tests, demo and bench).
create table if not exists {{traces}} (
    "timestamp"          timestamptz not null,
    trace_id             text not null,
    span_id              text not null,
    parent_span_id       text,
    name                 text,
    kind                 integer,
    start_time_unix_nano bigint,
    end_time_unix_nano   bigint,
    service_name         text,
    service_version      text,
    service_instance     text,
    scope_name           text,
    scope_version        text,
    status_code          integer,
    status_message       text,
    attributes           text,
    resource_attributes  text,
    events               text,
    links                text,
    created_at           timestamptz not null default now(),
    primary key ("timestamp", trace_id, span_id)
);
create index if not exists otel_traces_timestamp_idx on {{traces}} ("timestamp" desc);
create index if not exists otel_traces_trace_id_idx on {{traces}} (trace_id);
create index if not exists otel_traces_service_timestamp_idx on {{traces}} (service_name, "timestamp" desc);
