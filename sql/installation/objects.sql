-- The side tables of one installation (one target schema), named after its installation id.
-- {{oldest}}, {{queue}}, {{leaves}} and {{enqueue}} are quoted names in schema trace_summarizer
-- (the stamp function, whose body holds the stamp offset, is made by install/capture.rs).

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
-- in-window span times we summarized from each, and the row versions that tell a relation that
-- never left from one detached and attached again (inh_version: its pg_inherits row) or one whose
-- copies of our triggers were disabled, dropped or recreated meanwhile (trig_version).
create table if not exists {{leaves}} (
    relid       oid primary key,
    relfilenode oid not null,
    lo          timestamptz,
    hi          timestamptz
);
alter table {{leaves}}
    add column if not exists inh_version text,
    add column if not exists trig_version text;

-- Runs for each deleted or updated span (never for inserts), as the owner of the queue.
create or replace function {{enqueue}}() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $fn$
begin
    if tg_op = 'UPDATE' and new.trace_summarizer_xid is distinct from old.trace_summarizer_xid then
        -- A stamp set by hand could make a row look new again, or hide it: refused.
        raise exception 'otel_traces.trace_summarizer_xid is set by the server; an UPDATE may not change it'
            using hint = 'leave trace_summarizer_xid out of the UPDATE (trace-summarizer relies on it; see its README)';
    end if;
    -- Spans without a trace_id are in no summary.
    if old.trace_id is not null then
        insert into {{queue}} (trace_id) values (old.trace_id);
    end if;
    if tg_op = 'UPDATE' and new.trace_id is distinct from old.trace_id and new.trace_id is not null then
        insert into {{queue}} (trace_id) values (new.trace_id);
    end if;
    return null;
end
$fn$;
