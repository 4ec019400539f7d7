-- The view's definition: one row per trace with a span inside the window.
-- {{traces}} is the quoted otel_traces relation, {{edge}} the window's edge (`now() - ` the window
-- as an interval literal, or that instant as a literal when several sessions share the work),
-- {{filter}} empty, or further conditions on the rows (the ones a tailing position covers).
-- Spans without a trace_id belong to no trace, and to no summary.
select trace_id::text as trace_id,
{{aggregates}}
from {{traces}}
where "timestamp" > {{edge}} and trace_id is not null{{filter}}
group by trace_id
