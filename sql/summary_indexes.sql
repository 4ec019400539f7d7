-- The contract's three indexes; {{suffix}} is empty for the final names, or a temporary
-- suffix while a new relation is built beside the one readers use.
create unique index {{trace_id_index}} on {{relation}} (trace_id);
create index {{timestamp_index}} on {{relation}} ("timestamp" desc);
create index {{service_index}} on {{relation}} (root_service_name, "timestamp" desc);
