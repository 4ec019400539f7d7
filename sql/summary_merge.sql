-- Folds the aggregates of a trace's NEW spans (`excluded`, computed with summary_aggregates.sql)
-- into its existing summary (`t`), when only inserts happened since the summary was exact: the
-- SET list of the upsert that inserts new traces and merges into existing ones. Every
-- aggregate of the definition merges: max and min by greatest and least (both ignore NULLs, as
-- max and min do), counts by addition, the root columns as maxima among roots, and service_set
-- as the sorted distinct union, sorted by array_agg(distinct ...) with the column's collation,
-- exactly as the definition sorts it. duration_ms is derived from the merged nanoseconds with
-- the definition's own expression.
    "timestamp"          = greatest(t."timestamp", excluded."timestamp"),
    root_span_id         = greatest(t.root_span_id, excluded.root_span_id),
    root_span_name       = greatest(t.root_span_name, excluded.root_span_name),
    root_service_name    = greatest(t.root_service_name, excluded.root_service_name),
    root_span_kind       = greatest(t.root_span_kind, excluded.root_span_kind),
    start_time_unix_nano = least(t.start_time_unix_nano, excluded.start_time_unix_nano),
    end_time_unix_nano   = greatest(t.end_time_unix_nano, excluded.end_time_unix_nano),
    duration_ms          = {{merged_duration}},
    status_code          = greatest(t.status_code, excluded.status_code),
    status_message       = greatest(t.status_message, excluded.status_message),
    service_set          = (select array_agg(distinct s) from unnest(t.service_set || excluded.service_set) s),
    span_count           = t.span_count + excluded.span_count,
    error_count          = t.error_count + excluded.error_count
