//! The SQL that PostgreSQL runs, embedded from `sql/` and rendered with quoted names.
//! Placeholders look like `{{name}}`; every value substituted here is an identifier quoted by
//! `quote.rs`, a window literal built by `settings.rs`, or a fixed text of this crate.

pub(crate) const AGGREGATES: &str = include_str!("../../sql/summary_aggregates.sql");
pub(crate) const DEFINITION: &str = include_str!("../../sql/summary_definition.sql");
const MERGE: &str = include_str!("../../sql/summary_merge.sql");
const INDEXES: &str = include_str!("../../sql/summary_indexes.sql");

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

/// The contract's index names.
pub const INDEX_NAMES: [&str; 3] = [
    "idx_trace_summaries_trace_id",
    "idx_trace_summaries_timestamp",
    "idx_trace_summaries_service_timestamp",
];

pub(crate) fn strip_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// duration_ms from the end and start nanoseconds, as the definition computes it.
pub(crate) fn duration(end: &str, start: &str) -> String {
    format!(
        "greatest(coalesce((({end})::numeric - ({start})::numeric)::double precision / 1000000.0::double precision, 0::double precision), 0::double precision)"
    )
}

/// The SET list of the upsert that folds new spans' aggregates (`excluded`) into a summary (`t`).
pub fn merge_set() -> String {
    strip_comments(MERGE).replace(
        "{{merged_duration}}",
        &duration(
            "greatest(t.end_time_unix_nano, excluded.end_time_unix_nano)",
            "least(t.start_time_unix_nano, excluded.start_time_unix_nano)",
        ),
    )
}

/// The contract's three indexes on `relation`, named with `suffix` (empty for the final
/// names, or a temporary suffix while a new relation is built beside the one readers use).
pub fn indexes(relation: &str, suffix: &str) -> String {
    let name = |i: usize| crate::db::quote::ident(&format!("{}{suffix}", INDEX_NAMES[i]));
    strip_comments(INDEXES)
        .replace("{{relation}}", relation)
        .replace("{{trace_id_index}}", &name(0))
        .replace("{{timestamp_index}}", &name(1))
        .replace("{{service_index}}", &name(2))
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

/// `(a.col2, ..., a.col14)`: the value columns of a row, for IS DISTINCT FROM comparisons.
pub fn value_row(alias: &str) -> String {
    let cols = COLUMNS[1..]
        .iter()
        .map(|c| format!("{alias}.{}", crate::db::quote::ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    format!("({cols})")
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
    format!(
        "on conflict (trace_id) do update set {set} where {} is distinct from {}",
        value_row(table_alias),
        value_row("excluded")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_indexes_render_completely() {
        let m = merge_set();
        assert!(!m.contains("{{") && m.contains("least(t.start_time_unix_nano"));
        let i = indexes("\"s\".\"t\"", "_new");
        assert!(i.contains("\"idx_trace_summaries_trace_id_new\""), "{i}");
    }
}
