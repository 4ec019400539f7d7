//! The SQL that PostgreSQL runs, embedded from `sql/` and rendered with quoted names.
//! Placeholders look like `{{name}}`; every value substituted here is an identifier quoted by
//! `quote.rs` or a literal built by `config.rs`, never raw input.

use crate::db::source::Target;

pub const AGGREGATES: &str = include_str!("../../sql/summary_aggregates.sql");
pub const DEFINITION: &str = include_str!("../../sql/summary_definition.sql");
pub const STATE_UP: &str = include_str!("../../sql/state/001_state.up.sql");
pub const STATE_DOWN: &str = include_str!("../../sql/state/001_state.down.sql");
pub const WIDEN_XID: &str = include_str!("../../sql/widen_xid.sql");

/// The state schema's version; a different stored version means the state cannot be trusted.
pub const STATE_VERSION: i32 = 1;

/// The 14 contract columns, in order.
pub const COLUMNS: [&str; 14] = [
    "trace_id",
    "timestamp",
    "root_span_id",
    "root_span_name",
    "root_service_name",
    "root_span_kind",
    "start_time_unix_nano",
    "end_time_unix_nano",
    "duration_ms",
    "status_code",
    "status_message",
    "service_set",
    "span_count",
    "error_count",
];

/// The aggregate list without its comment lines.
pub fn aggregates() -> String {
    AGGREGATES
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The view's definition over `target`'s otel_traces for a window given as an interval literal.
/// `extra` adds select-list items (for example the oldest span time) after the 14 columns.
pub fn definition(target: &Target, window: &str, extra: &str) -> String {
    let body: String = DEFINITION
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    body.replace("{{aggregates}}", &format!("{}{extra}", aggregates()))
        .replace("{{traces}}", &target.traces())
        .replace("{{window}}", window)
}

/// The column list, quoted, optionally prefixed with a table alias.
pub fn column_list(alias: Option<&str>) -> String {
    COLUMNS
        .iter()
        .map(|c| match alias {
            Some(a) => format!("{a}.{}", crate::db::quote::ident(c)),
            None => crate::db::quote::ident(c),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `set col = excluded.col, ...` and the `where (...) is distinct from (...)` guard of an
/// upsert into `table_alias`, so unchanged rows are not rewritten.
pub fn upsert_tail(table_alias: &str) -> String {
    let cols: Vec<&str> = COLUMNS[1..].to_vec();
    let set = cols
        .iter()
        .map(|c| format!("{0} = excluded.{0}", crate::db::quote::ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let old = cols
        .iter()
        .map(|c| format!("{table_alias}.{}", crate::db::quote::ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let new = cols
        .iter()
        .map(|c| format!("excluded.{}", crate::db::quote::ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    format!("on conflict (trace_id) do update set {set} where ({old}) is distinct from ({new})")
}
