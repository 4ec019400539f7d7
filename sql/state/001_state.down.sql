drop schema if exists trace_summarizer cascade;
