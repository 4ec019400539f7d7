//! Privilege checks made up front, so a missing privilege stops with the GRANT to run instead
//! of failing halfway through a cycle.

use crate::db::quote;
use crate::db::source::Target;
use crate::error::{DbContext, Error, Result};
use crate::state::Names;
use tokio_postgres::GenericClient;

/// What the worker needs besides reading otel_traces (checked in `source.rs`): writing the
/// summaries, its state and side tables, and temporary tables. It needs no role membership:
/// tailing reads only otel_traces and its own state.
pub async fn check_worker<C: GenericClient>(
    client: &C,
    target: &Target,
    names: &Names,
) -> Result<()> {
    let row = client
        .query_one(
            "select current_user::text,
                    to_regclass(quote_ident($1) || '.otel_trace_summaries') is null
                      or has_table_privilege(to_regclass(quote_ident($1) || '.otel_trace_summaries'), 'select,insert,update,delete'),
                    has_table_privilege('trace_summarizer.state', 'select,update'),
                    has_table_privilege($2::text, 'select,insert,update,delete')
                      and has_table_privilege($3::text, 'select,insert,update,delete')
                      and has_table_privilege($4::text, 'select,insert,update,delete'),
                    has_database_privilege(current_database(), 'temporary')",
            &[&target.schema, &names.oldest, &names.queue, &names.leaves],
        )
        .await
        .ctx("checking the worker's privileges")?;
    let role: String = row.get(0);
    let role_q = quote::ident(&role);
    if !row.get::<_, bool>(1) {
        return Err(Error::precondition(
            format!("role {role:?} may not write {}", target.summaries()),
            format!(
                "grant select, insert, update, delete on {} to {role_q};",
                target.summaries()
            ),
        ));
    }
    if !row.get::<_, bool>(2) || !row.get::<_, bool>(3) {
        return Err(Error::precondition(
            format!("role {role:?} may not write the tables of schema trace_summarizer"),
            format!("grant usage on schema trace_summarizer to {role_q}; grant select, insert, update, delete on all tables in schema trace_summarizer to {role_q};"),
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
