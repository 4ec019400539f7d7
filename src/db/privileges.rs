//! Privilege checks made up front, so a missing privilege stops with the GRANT to run instead
//! of failing halfway through a cycle.

use crate::db::source::Target;
use crate::error::{DbContext, Error, Result};
use tokio_postgres::GenericClient;

/// What the worker needs beyond reading otel_traces (checked in `source.rs`).
pub async fn check_worker<C: GenericClient>(client: &C, target: &Target) -> Result<()> {
    let row = client
        .query_one(
            "select current_user::text,
                    pg_has_role(current_user, 'pg_read_all_stats', 'member')
                      or (select rolsuper from pg_roles where rolname = current_user),
                    to_regclass(quote_ident($1) || '.otel_trace_summaries') is null
                      or has_table_privilege(to_regclass(quote_ident($1) || '.otel_trace_summaries'), 'select,insert,update,delete'),
                    to_regclass('trace_summarizer.state') is null
                      or has_table_privilege('trace_summarizer.state', 'select,update'),
                    has_database_privilege(current_database(), 'temporary')",
            &[&target.schema],
        )
        .await
        .ctx("checking the worker's privileges")?;
    let role: String = row.get(0);
    let role_q = crate::db::quote::ident(&role);
    if !row.get::<_, bool>(1) {
        return Err(Error::precondition(
            format!("role {role:?} cannot see other sessions' transactions in pg_stat_activity"),
            format!("grant pg_read_all_stats to {role_q};  (the worker must never pass an ingest transaction that has not committed yet)"),
        ));
    }
    if !row.get::<_, bool>(2) {
        return Err(Error::precondition(
            format!("role {role:?} may not write {}", target.summaries()),
            format!(
                "grant select, insert, update, delete on {} to {role_q};",
                target.summaries()
            ),
        ));
    }
    if !row.get::<_, bool>(3) {
        return Err(Error::precondition(
            format!("role {role:?} may not update trace_summarizer.state"),
            format!("grant usage on schema trace_summarizer to {role_q}; grant select, insert, update, delete, truncate on all tables in schema trace_summarizer to {role_q};"),
        ));
    }
    if !row.get::<_, bool>(4) {
        return Err(Error::precondition(
            format!("role {role:?} may not create temporary tables"),
            format!("grant temporary on database <db> to {role_q};"),
        ));
    }
    Ok(())
}
