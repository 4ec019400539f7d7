-- Going back to version 1 means uninstalling: the stamp column and the per-installation objects
-- are removed by `trace-summarizer uninstall`, which drops this schema.
drop schema if exists trace_summarizer cascade;
