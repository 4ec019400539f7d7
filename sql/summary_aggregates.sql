-- The contract's columns 2..14 as aggregates over the spans of ONE trace (already restricted to
-- the window by the caller). This text is the single definition shared by the materialized
-- view, the incremental cycle (over all spans of a trace, or over its new spans only before a
-- merge), rebuild, verify and the audit, so the forms cannot drift apart.
-- A root span is one whose parent_span_id is NULL or ''. Explicit casts pin the contract's types.
-- {{error_condition}} is the error rule (see settings.rs); {{duration}} renders duration_ms.
max("timestamp")::timestamptz as "timestamp",
(max(span_id) filter (where coalesce(parent_span_id, '') = ''))::text as root_span_id,
(max(name) filter (where coalesce(parent_span_id, '') = ''))::text as root_span_name,
(max(service_name) filter (where coalesce(parent_span_id, '') = ''))::text as root_service_name,
(max(kind) filter (where coalesce(parent_span_id, '') = ''))::integer as root_span_kind,
min(start_time_unix_nano)::bigint as start_time_unix_nano,
max(end_time_unix_nano)::bigint as end_time_unix_nano,
{{duration}} as duration_ms,
(max(status_code) filter (where coalesce(parent_span_id, '') = ''))::integer as status_code,
(max(status_message) filter (where coalesce(parent_span_id, '') = ''))::text as status_message,
(array_agg(distinct service_name) filter (where service_name is not null))::text[] as service_set,
count(*)::bigint as span_count,
(count(*) filter (where {{error_condition}}))::bigint as error_count
