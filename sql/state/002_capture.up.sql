-- Version 2: tailing by a stamp column of our own on otel_traces (the inserting transaction's
-- id, set by a column default), a position made of that id space, per-installation side tables
-- (see sql/installation/), and the fields of the continuous audit.
create sequence if not exists trace_summarizer.installation_ids;

alter table trace_summarizer.state
    -- Per-installation objects are named after this id: oldest_<id>, recompute_<id>, ...
    add column if not exists installation_id integer,
    add column if not exists error_rule text not null default 'not-ok',
    -- The relation we created under the name otel_trace_summaries, and the otel_traces we
    -- read (both oids change when a database is restored elsewhere: the state is then foreign).
    add column if not exists relation_oid oid,
    add column if not exists source_oid oid,
    -- Tailing position: every transaction id below pos_xmax, except those in pos_xip, was
    -- finished (committed or aborted) when the summaries were last made exact.
    add column if not exists pos_xmax bigint,
    add column if not exists pos_xip bigint[] not null default '{}',
    add column if not exists last_checked_at timestamptz,
    -- The continuous audit: where the current pass is, and what the last full pass found.
    add column if not exists audit_cursor text,
    add column if not exists audit_pass_started_at timestamptz,
    add column if not exists audit_pass_checked bigint not null default 0,
    add column if not exists audit_pass_mismatches bigint not null default 0,
    add column if not exists last_audit_pass_at timestamptz,
    add column if not exists last_audit_pass_checked bigint,
    add column if not exists last_audit_pass_mismatches bigint,
    -- What `install --adopt` replaced, and how to roll back.
    add column if not exists adopted text;

update trace_summarizer.state set installation_id = nextval('trace_summarizer.installation_ids')
 where installation_id is null;
alter table trace_summarizer.state
    alter column installation_id set default nextval('trace_summarizer.installation_ids'),
    alter column installation_id set not null;
create unique index if not exists state_installation_id on trace_summarizer.state (installation_id);

-- Version 1's tailing (created_at and pg_stat_activity) and its shared side table are gone; its
-- created_at index (tailing_index) is dropped by install.
alter table trace_summarizer.state
    drop column if exists tail_from,
    drop column if exists tail_pending,
    drop column if exists tail_snapshot,
    drop column if exists span_floor,
    drop column if exists deletes_seen,
    drop column if exists floor_at_deletes;
drop table if exists trace_summarizer.trace_oldest_span;
drop function if exists trace_summarizer.widen_xid(xid, xid8);

-- Which of these files have run.
create table if not exists trace_summarizer.migrations (
    version    integer primary key,
    applied_at timestamptz not null default now()
);
