-- The side tables of one installation (one target schema), named after its installation id.
-- {{oldest}}, {{queue}}, {{leaves}} and {{enqueue}} are quoted names in schema trace_summarizer.

-- Lower bounds of each summarized trace's oldest in-window span: which traces the window edge and
-- a dropped partition or chunk touch, found by an index range instead of a rescan of otel_traces.
-- Append-only: every summarized trace has at least one entry at or below its oldest span (a
-- lower entry only causes an early recompute, which appends the exact value); entries are
-- removed when they pass the window edge. No key on trace_id, so a full refresh builds one index
-- and a step never looks an entry up.
create table if not exists {{oldest}} (
    trace_id text not null,
    oldest   timestamptz not null
);
create index if not exists {{oldest_index}} on {{oldest}} (oldest);

-- Traces to recompute from their spans: deleted or updated spans (written by the trigger below,
-- in the transaction that changed them), and the traces of a dropped, detached or truncated
-- partition. No key: appends are cheap, and a trace named twice is recomputed once per batch.
create table if not exists {{queue}} (
    trace_id text not null
);

-- The partitions or chunks of otel_traces (or the table itself) as last seen, with the range of
-- in-window span times we summarized from each.
create table if not exists {{leaves}} (
    relid       oid primary key,
    relfilenode oid not null,
    lo          timestamptz,
    hi          timestamptz
);

-- Runs for each deleted or updated span (never for inserts), as the owner of the queue.
create or replace function {{enqueue}}() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $fn$
begin
    -- Our own maintenance (clearing stamps after a restore) is not a change of the spans.
    if current_setting('trace_summarizer.maintenance', true) = 'on' then
        return null;
    end if;
    insert into {{queue}} (trace_id) values (old.trace_id);
    if tg_op = 'UPDATE' and new.trace_id is distinct from old.trace_id then
        insert into {{queue}} (trace_id) values (new.trace_id);
    end if;
    return null;
end
$fn$;
