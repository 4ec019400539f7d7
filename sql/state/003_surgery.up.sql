-- Version 3: exact under data surgery (copies, reloads, moves, re-attached partitions, a
-- replaced otel_traces) and restores without rewriting otel_traces.
alter table trace_summarizer.state
    -- Stamps are the inserting transaction's id plus this offset. After a restore from a server
    -- whose ids are ahead, the offset moves the stamp space past every restored stamp (no row is
    -- rewritten); it never decreases.
    add column if not exists stamp_offset bigint not null default 0,
    -- The highest window edge a step has processed: when the edge moves back (a DST fall-back
    -- in a calendar window, a clock stepped back), the spans between the two edges are in the
    -- window again and their traces are recomputed.
    add column if not exists edge_done timestamptz,
    -- The row versions of the stamp's default, its index and the triggers on otel_traces when the
    -- summaries were last made exact: any change (a trigger disabled and enabled again, the
    -- default replaced) means rows may have been written or removed unseen.
    add column if not exists capture_version text;
