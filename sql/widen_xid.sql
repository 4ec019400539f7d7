-- Widens a row's 32-bit xmin to xid8, relative to a recent xid8 (the current snapshot's xmax):
-- every visible xid lies less than 2^32 below it.
create or replace function trace_summarizer.widen_xid(x xid, ref xid8) returns xid8
language sql immutable parallel safe
as $$ select greatest(ref::text::bigint - ((ref::text::bigint - x::text::bigint) & 4294967295), 0)::text::xid8 $$;
