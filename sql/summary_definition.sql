-- The view's definition: one row per trace with a span inside the window.
-- {{traces}} is the quoted otel_traces relation, {{window}} the window as an interval literal.
select trace_id::text as trace_id,
{{aggregates}}
from {{traces}}
where "timestamp" > now() - {{window}}
group by trace_id
