//! trace-summarizer's own state in schema `trace_summarizer`, and the only module that writes
//! `trace_summarizer.state`.
//!
//! - `migrate` creates the schema and applies the ordered files of `sql/state/`.
//! - `State` is one installation (one target schema): its mode, window and error rule, the
//!   relation it created, the tailing position, the pending full refresh, the counters of the
//!   last cycle and rebuild, and the audit's progress. `load` reads it once per step.
//! - Named operations change it: `save_position`, `record_cycle`, `record_rebuild`,
//!   `request_rebuild`, `record_audit`, and so on.

use crate::db::quote;
use crate::db::statements::Db;
use crate::definition::{ErrorRule, Window};
use crate::error::{DbContext, Error, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

/// The format of the summaries and the position. A stored row with another version was made
/// by another version of trace-summarizer: its summaries cannot be trusted, and the worker runs
/// a full refresh (fallback `state_version`), which writes this version when it commits.
pub const FORMAT_VERSION: i32 = 3;

/// The ordered migrations of our schema: (version, up SQL).
const MIGRATIONS: [(i32, &str); 3] = [
    (1, include_str!("../sql/state/001_state.up.sql")),
    (2, include_str!("../sql/state/002_capture.up.sql")),
    (3, include_str!("../sql/state/003_surgery.up.sql")),
];
const DOWN: &str = include_str!("../sql/state/002_capture.down.sql");
const OBJECTS: &str = include_str!("../sql/installation/objects.sql");

/// What stands under the name `otel_trace_summaries` in an installation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A table kept exact by the worker.
    Incremental,
    /// The seed's materialized view, refreshed by pg_cron.
    Mv,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Incremental => "incremental",
            Mode::Mv => "mv",
        }
    }
    fn from_name(s: &str) -> Option<Mode> {
        match s {
            "incremental" => Some(Mode::Incremental),
            "mv" => Some(Mode::Mv),
            _ => None,
        }
    }
}

/// Where tailing stands: every transaction id below `xmax`, except those in `xip`, had
/// finished when the summaries were last made exact, and its rows are summarized. Rows written
/// later carry an id of at least `xmax`, or one of `xip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub xmax: i64,
    pub xip: Vec<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct CycleRecord {
    pub at: Option<DateTime<Utc>>,
    pub ms: Option<f64>,
    pub spans: Option<i64>,
    pub upserted: Option<i64>,
    pub pruned: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct RebuildRecord {
    pub at: Option<DateTime<Utc>>,
    pub ms: Option<f64>,
    pub reason: Option<String>,
}

/// The audit's progress through the traces, in trace_id order.
#[derive(Debug, Clone, Default)]
pub struct AuditRecord {
    /// The last trace_id checked in the current pass (None: a pass starts at the beginning).
    pub cursor: Option<String>,
    pub pass_started_at: Option<DateTime<Utc>>,
    pub pass_checked: i64,
    pub pass_mismatches: i64,
    pub last_pass_at: Option<DateTime<Utc>>,
    pub last_pass_checked: Option<i64>,
    pub last_pass_mismatches: Option<i64>,
}

/// One installation.
#[derive(Debug, Clone)]
pub struct State {
    pub schema: String,
    pub id: i32,
    pub version: i32,
    pub mode: Mode,
    pub window: Window,
    pub error_rule: ErrorRule,
    pub relation_oid: Option<u32>,
    pub source_oid: Option<u32>,
    pub position: Option<Position>,
    pub reflected_at: Option<DateTime<Utc>>,
    pub rebuild_reason: Option<String>,
    /// Version 1's index on otel_traces (created_at), dropped when install upgrades.
    pub legacy_index: Option<String>,
    pub last_cycle: CycleRecord,
    pub last_rebuild: RebuildRecord,
    pub last_checked_at: Option<DateTime<Utc>>,
    pub audit: AuditRecord,
    pub adopted: Option<String>,
    /// Stamps are `txid_current() + stamp_offset` (see `install/capture.rs`).
    pub stamp_offset: i64,
    /// The highest window edge a step has processed.
    pub edge_done: Option<DateTime<Utc>>,
    /// The row versions of what install put on otel_traces, when the summaries were last exact.
    pub capture_version: Option<String>,
}

/// The quoted names of one installation's objects in schema `trace_summarizer`.
#[derive(Debug, Clone)]
pub struct Names {
    pub oldest: String,
    /// Unquoted names (a new side table is built under `<name>_new` and renamed).
    pub oldest_table: String,
    pub oldest_index: String,
    pub queue: String,
    pub leaves: String,
    pub enqueue: String,
    /// The function that restamps copied rows (quoted).
    pub stamp_fn: String,
    /// On a Citus node: the node-local function that gives the node's stamp now (quoted).
    pub stamp_now: String,
    /// Unquoted trigger names on otel_traces.
    pub stamp_trigger: String,
    pub delete_trigger: String,
    pub update_trigger: String,
}

impl Names {
    pub fn for_id(id: i32) -> Names {
        let q = |n: String| quote::qualified("trace_summarizer", &n);
        Names {
            oldest: q(format!("oldest_{id}")),
            oldest_table: format!("oldest_{id}"),
            oldest_index: format!("oldest_{id}_oldest"),
            queue: q(format!("recompute_{id}")),
            leaves: q(format!("leaves_{id}")),
            enqueue: q(format!("enqueue_{id}")),
            stamp_fn: q(format!("stamp_{id}")),
            stamp_now: q(format!("stamp_now_{id}")),
            stamp_trigger: format!("trace_summarizer_{id}_stamps"),
            delete_trigger: format!("trace_summarizer_{id}_deletes"),
            update_trigger: format!("trace_summarizer_{id}_updates"),
        }
    }
}

impl Names {
    /// The three triggers on otel_traces, unquoted.
    pub fn triggers(&self) -> Vec<String> {
        vec![
            self.stamp_trigger.clone(),
            self.delete_trigger.clone(),
            self.update_trigger.clone(),
        ]
    }
}

impl State {
    pub fn names(&self) -> Names {
        Names::for_id(self.id)
    }
}

/// The columns `from_row` reads, in order (a query may add its own after them).
pub(crate) const COLUMNS: &str = "target_schema, installation_id, version, mode,
    date_part('day', window_interval)::bigint,
    error_rule,
    relation_oid, source_oid, pos_xmax, pos_xip, reflected_at, rebuild_reason, tailing_index,
    last_cycle_at, last_cycle_ms, last_spans, last_upserted, last_pruned,
    last_rebuild_at, last_rebuild_ms, last_rebuild_reason, last_checked_at,
    audit_cursor, audit_pass_started_at, audit_pass_checked, audit_pass_mismatches,
    last_audit_pass_at, last_audit_pass_checked, last_audit_pass_mismatches, adopted,
    (extract(epoch from window_interval - make_interval(days => date_part('day', window_interval)::int)) * 1000000)::bigint,
    stamp_offset, edge_done, capture_version";
/// How many columns `COLUMNS` names.
pub(crate) const COLUMN_COUNT: usize = 34;

pub(crate) fn from_row(r: &tokio_postgres::Row) -> Result<State> {
    let schema: String = r.get(0);
    let corrupt = |what: &str| {
        Error::precondition(
            format!("trace_summarizer.state for schema {schema:?} has an unreadable {what}"),
            "run `trace-summarizer install` again for this schema (it rewrites the state)",
        )
    };
    let mode: String = r.get(3);
    let window_days: i64 = r.get(4);
    let window_micros: i64 = r.get(30);
    let rule: String = r.get(5);
    let xmax: Option<i64> = r.get(8);
    Ok(State {
        id: r.get(1),
        version: r.get(2),
        mode: Mode::from_name(&mode).ok_or_else(|| corrupt("mode"))?,
        window: Window::from_parts(window_days, window_micros).ok_or_else(|| corrupt("window"))?,
        error_rule: ErrorRule::from_name(&rule).ok_or_else(|| corrupt("error rule"))?,
        relation_oid: r.get(6),
        source_oid: r.get(7),
        position: xmax.map(|xmax| Position {
            xmax,
            xip: r.get(9),
        }),
        reflected_at: r.get(10),
        rebuild_reason: r.get(11),
        legacy_index: r.get(12),
        last_cycle: CycleRecord {
            at: r.get(13),
            ms: r.get(14),
            spans: r.get(15),
            upserted: r.get(16),
            pruned: r.get(17),
        },
        last_rebuild: RebuildRecord {
            at: r.get(18),
            ms: r.get(19),
            reason: r.get(20),
        },
        last_checked_at: r.get(21),
        audit: AuditRecord {
            cursor: r.get(22),
            pass_started_at: r.get(23),
            pass_checked: r.get(24),
            pass_mismatches: r.get(25),
            last_pass_at: r.get(26),
            last_pass_checked: r.get(27),
            last_pass_mismatches: r.get(28),
        },
        adopted: r.get(29),
        stamp_offset: r.get(31),
        edge_done: r.get(32),
        capture_version: r.get(33),
        schema,
    })
}

/// Whether our schema exists at all.
pub async fn schema_exists<C: GenericClient>(client: &C) -> Result<bool> {
    Ok(client
        .query_one(
            "select to_regclass('trace_summarizer.state') is not null",
            &[],
        )
        .await
        .ctx("looking for trace_summarizer.state")?
        .get(0))
}

/// The migrations applied so far (version 1 predates the migrations table).
async fn applied<C: GenericClient>(client: &C) -> Result<Vec<i32>> {
    if !schema_exists(client).await? {
        return Ok(Vec::new());
    }
    let has_table: bool = client
        .query_one(
            "select to_regclass('trace_summarizer.migrations') is not null",
            &[],
        )
        .await
        .ctx("looking for trace_summarizer.migrations")?
        .get(0);
    if !has_table {
        return Ok(vec![1]);
    }
    Ok(client
        .query("select version from trace_summarizer.migrations", &[])
        .await
        .ctx("reading trace_summarizer.migrations")?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Whether our schema is at the newest migration (the worker needs that; install makes it so).
pub async fn is_current<C: GenericClient>(client: &C) -> Result<bool> {
    let done = applied(client).await?;
    Ok(MIGRATIONS.iter().all(|(v, _)| done.contains(v)))
}

/// Creates our schema or brings it to the newest migration, in the caller's transaction.
pub async fn migrate<C: GenericClient>(client: &C) -> Result<()> {
    let done = applied(client).await?;
    for (version, sql) in MIGRATIONS {
        if done.contains(&version) {
            continue;
        }
        crate::db::ddl::run(
            client,
            sql,
            &format!("applying migration {version} of schema trace_summarizer"),
        )
        .await
        .map_err(create_hint)?;
    }
    for (version, _) in MIGRATIONS {
        client
            .execute(
                "insert into trace_summarizer.migrations (version) values ($1) on conflict do nothing",
                &[&version],
            )
            .await
            .ctx("recording migrations")?;
    }
    Ok(())
}

fn create_hint(e: Error) -> Error {
    if e.is_privilege_error() {
        return Error::precondition(
            e.chain(),
            "grant create on database <db> to <role> (install creates the schema trace_summarizer), or run install as the database owner",
        );
    }
    e
}

/// Drops our schema (uninstall of the last installation).
pub async fn drop_schema<C: GenericClient>(client: &C) -> Result<()> {
    crate::db::ddl::run(client, DOWN, "dropping schema trace_summarizer").await
}

/// The installation of `schema`, if there is one.
pub async fn load<C: GenericClient>(client: &C, schema: &str) -> Result<Option<State>> {
    if !schema_exists(client).await? {
        return Ok(None);
    }
    if !is_current(client).await? {
        return Err(Error::precondition(
            "schema trace_summarizer was made by an older version of trace-summarizer",
            "run `trace-summarizer install` once with this version (as the owner of otel_traces); it upgrades in place",
        ));
    }
    let row = client
        .query_opt(
            &format!("select {COLUMNS} from trace_summarizer.state where target_schema = $1"),
            &[&schema],
        )
        .await
        .ctx("reading trace_summarizer.state")?;
    row.as_ref().map(from_row).transpose()
}

/// The installation of `schema`, row-locked until the end of the caller's transaction.
pub async fn load_for_update<C: GenericClient + Sync>(
    client: &Db<'_, C>,
    schema: &str,
) -> Result<Option<State>> {
    let row = client
        .query_opt(
            &format!(
                "select {COLUMNS} from trace_summarizer.state where target_schema = $1 for update"
            ),
            &[&schema],
        )
        .await
        .ctx("reading trace_summarizer.state")?;
    row.as_ref().map(from_row).transpose()
}

/// Every installation in this database.
pub async fn all<C: GenericClient>(client: &C) -> Result<Vec<State>> {
    if !schema_exists(client).await? || !is_current(client).await? {
        return Ok(Vec::new());
    }
    client
        .query(
            &format!("select {COLUMNS} from trace_summarizer.state order by target_schema"),
            &[],
        )
        .await
        .ctx("reading trace_summarizer.state")?
        .iter()
        .map(from_row)
        .collect()
}

/// Creates the installation of `schema` (or updates its settings) and its side tables.
/// A row created here has no position yet: the first full refresh gives it one.
pub async fn upsert_installation<C: GenericClient + Sync>(
    client: &C,
    schema: &str,
    mode: Mode,
    window: &Window,
    error_rule: ErrorRule,
) -> Result<State> {
    client
        .execute(
            "insert into trace_summarizer.state (target_schema, version, mode, window_interval, error_rule)
             values ($1, $2, $3, $4::text::interval, $5)
             on conflict (target_schema) do update
               set mode = excluded.mode, window_interval = excluded.window_interval,
                   error_rule = excluded.error_rule",
            &[&schema, &FORMAT_VERSION, &mode.name(), &window.interval_text(), &error_rule.name()],
        )
        .await
        .ctx("writing trace_summarizer.state")?;
    let state = load_for_update(&Db::once(client), schema)
        .await?
        .expect("the row was just written");
    create_objects(client, &state.names()).await?;
    Ok(state)
}

/// On a Citus node: creates (or updates) the node's copy of the coordinator's installation
/// `coordinator`: the same installation id (the node's objects and the shards' triggers carry
/// it), mode, window and error rule, with the node's own position, and its side tables.
pub async fn upsert_node_installation<C: GenericClient + Sync>(
    client: &C,
    coordinator: &State,
) -> Result<State> {
    client
        .execute(
            "insert into trace_summarizer.state (target_schema, installation_id, version, mode, window_interval, error_rule)
             values ($1, $2, $3, $4, $5::text::interval, $6)
             on conflict (target_schema) do update
               set mode = excluded.mode, window_interval = excluded.window_interval,
                   error_rule = excluded.error_rule",
            &[
                &coordinator.schema,
                &coordinator.id,
                &FORMAT_VERSION,
                &coordinator.mode.name(),
                &coordinator.window.interval_text(),
                &coordinator.error_rule.name(),
            ],
        )
        .await
        .ctx("writing trace_summarizer.state on a Citus node")?;
    let state = load_for_update(&Db::once(client), &coordinator.schema)
        .await?
        .expect("the row was just written");
    create_objects(client, &state.names()).await?;
    Ok(state)
}

/// Creates the side tables and the trigger function of an installation (idempotent).
pub async fn create_objects<C: GenericClient>(client: &C, names: &Names) -> Result<()> {
    let sql = OBJECTS
        .replace("{{oldest_index}}", &quote::ident(&names.oldest_index))
        .replace("{{oldest}}", &names.oldest)
        .replace("{{queue}}", &names.queue)
        .replace("{{leaves}}", &names.leaves)
        .replace("{{enqueue}}", &names.enqueue)
        .replace("{{stamp_fn}}", &names.stamp_fn);
    crate::db::ddl::run(
        client,
        &sql,
        "creating the installation's tables in schema trace_summarizer",
    )
    .await
}

/// Drops an installation's row and side tables.
pub async fn delete_installation<C: GenericClient>(client: &C, state: &State) -> Result<()> {
    let n = state.names();
    crate::db::ddl::run(
        client,
        &format!(
            "drop function if exists {enqueue}() cascade;
             drop function if exists {stamp_fn}() cascade;
             drop function if exists {stamp_now}() cascade;
             drop table if exists {oldest}, {queue}, {leaves};",
            enqueue = n.enqueue,
            stamp_fn = n.stamp_fn,
            stamp_now = n.stamp_now,
            oldest = n.oldest,
            queue = n.queue,
            leaves = n.leaves
        ),
        "dropping the installation's tables",
    )
    .await?;
    client
        .execute(
            "delete from trace_summarizer.state where target_schema = $1",
            &[&state.schema],
        )
        .await
        .ctx("removing the state row")?;
    Ok(())
}

/// How many installations remain.
pub async fn count<C: GenericClient>(client: &C) -> Result<i64> {
    Ok(client
        .query_one("select count(*) from trace_summarizer.state", &[])
        .await
        .ctx("counting installations")?
        .get(0))
}

/// Stores the tailing position the summaries now reflect, with `now()` as the moment, and the
/// window edge they were made exact for (it only moves back when the edge itself does).
pub async fn save_position<C: GenericClient + Sync>(
    client: &Db<'_, C>,
    schema: &str,
    position: &Position,
    source_oid: u32,
    edge: DateTime<Utc>,
) -> Result<()> {
    client
        .execute(
            "update trace_summarizer.state
             set pos_xmax = $2, pos_xip = $3, source_oid = $4, reflected_at = now(),
                 last_checked_at = clock_timestamp(), edge_done = $5
             where target_schema = $1",
            &[&schema, &position.xmax, &position.xip, &source_oid, &edge],
        )
        .await
        .ctx("saving the tailing position")?;
    Ok(())
}

/// Stores what a step that changed something made exact: the position, the edge and the
/// cycle's figures, in one statement.
#[allow(clippy::too_many_arguments)]
pub async fn save_step<C: GenericClient + Sync>(
    client: &Db<'_, C>,
    schema: &str,
    position: &Position,
    source_oid: u32,
    edge: DateTime<Utc>,
    ms: f64,
    spans: i64,
    upserted: i64,
    pruned: i64,
) -> Result<()> {
    client
        .execute(
            "update trace_summarizer.state
             set pos_xmax = $2, pos_xip = $3, source_oid = $4, reflected_at = now(),
                 last_checked_at = clock_timestamp(), edge_done = $5,
                 last_cycle_at = clock_timestamp(), last_cycle_ms = $6, last_spans = $7,
                 last_upserted = $8, last_pruned = $9
             where target_schema = $1",
            &[
                &schema,
                &position.xmax,
                &position.xip,
                &source_oid,
                &edge,
                &ms,
                &spans,
                &upserted,
                &pruned,
            ],
        )
        .await
        .ctx("saving the tailing position")?;
    Ok(())
}

/// Stores the row versions of what install put on otel_traces (see `install/capture.rs`), as
/// seen by the refresh that made the summaries exact.
pub async fn record_capture_version<C: GenericClient>(
    client: &C,
    schema: &str,
    version: &str,
) -> Result<()> {
    client
        .execute(
            "update trace_summarizer.state set capture_version = $2 where target_schema = $1",
            &[&schema, &version],
        )
        .await
        .ctx("recording the capture objects")?;
    Ok(())
}

/// Stores a new stamp offset (in the transaction that changes the stamp's default).
pub async fn set_stamp_offset<C: GenericClient>(
    client: &C,
    schema: &str,
    offset: i64,
) -> Result<()> {
    client
        .execute(
            "update trace_summarizer.state set stamp_offset = $2 where target_schema = $1",
            &[&schema, &offset],
        )
        .await
        .ctx("recording the stamp offset")?;
    Ok(())
}

/// Records a cycle that changed something.
pub async fn record_cycle<C: GenericClient + Sync>(
    client: &Db<'_, C>,
    schema: &str,
    ms: f64,
    spans: i64,
    upserted: i64,
    pruned: i64,
) -> Result<()> {
    client
        .execute(
            "update trace_summarizer.state
             set last_cycle_at = clock_timestamp(), last_cycle_ms = $2, last_spans = $3,
                 last_upserted = $4, last_pruned = $5
             where target_schema = $1",
            &[&schema, &ms, &spans, &upserted, &pruned],
        )
        .await
        .ctx("recording the cycle")?;
    Ok(())
}

/// Records that a check found nothing to do (a heartbeat, written at most every few seconds).
/// `reflected`: when the check found nothing pending, the moment it looked (everything
/// committed before is summarized); otherwise the reflected moment stays.
pub async fn record_check<C: GenericClient>(
    client: &C,
    schema: &str,
    reflected: Option<DateTime<Utc>>,
) -> Result<()> {
    client
        .execute(
            "update trace_summarizer.state set last_checked_at = clock_timestamp(),
                    reflected_at = coalesce($2, reflected_at)
             where target_schema = $1",
            &[&schema, &reflected],
        )
        .await
        .ctx("recording the check")?;
    Ok(())
}

/// Records a committed full refresh: the pending reason is cleared, the format version is this
/// version's, the relation and the position are the new ones. Runs in the refresh's transaction,
/// so a refresh that fails or is killed leaves the fallback pending.
pub async fn record_rebuild<C: GenericClient>(
    client: &C,
    schema: &str,
    reason: &str,
    ms: f64,
    relation_oid: u32,
) -> Result<()> {
    client
        .execute(
            "update trace_summarizer.state
             set rebuild_reason = null, version = $4, relation_oid = $5,
                 last_rebuild_at = clock_timestamp(), last_rebuild_ms = $2, last_rebuild_reason = $3
             where target_schema = $1",
            &[&schema, &ms, &reason, &FORMAT_VERSION, &relation_oid],
        )
        .await
        .ctx("recording the rebuild")?;
    Ok(())
}

/// Asks for a full refresh. The first reason stays until a refresh commits.
pub async fn request_rebuild<C: GenericClient>(
    client: &C,
    schema: &str,
    reason: &str,
) -> Result<()> {
    client
        .execute(
            "update trace_summarizer.state set rebuild_reason = coalesce(rebuild_reason, $2)
             where target_schema = $1",
            &[&schema, &reason],
        )
        .await
        .ctx("flagging a rebuild in trace_summarizer.state")?;
    Ok(())
}

/// The view was refreshed (mv mode, `rebuild`).
pub async fn record_refresh<C: GenericClient>(client: &C, schema: &str, ms: f64) -> Result<()> {
    client
        .execute(
            "update trace_summarizer.state set last_rebuild_at = clock_timestamp(), last_rebuild_ms = $2,
                    last_rebuild_reason = 'manual'
             where target_schema = $1",
            &[&schema, &ms],
        )
        .await
        .ctx("recording the refresh")?;
    Ok(())
}

/// Switching to the view: the worker's position no longer means anything.
pub async fn clear_position<C: GenericClient>(
    client: &C,
    schema: &str,
    relation_oid: u32,
) -> Result<()> {
    client
        .execute(
            "update trace_summarizer.state
             set pos_xmax = null, pos_xip = '{}', rebuild_reason = null, relation_oid = $2,
                 version = $3, audit_cursor = null, audit_pass_started_at = null,
                 audit_pass_checked = 0, audit_pass_mismatches = 0
             where target_schema = $1",
            &[&schema, &relation_oid, &FORMAT_VERSION],
        )
        .await
        .ctx("clearing the tailing position")?;
    Ok(())
}

/// The legacy (version 1) index is gone.
pub async fn forget_legacy_index<C: GenericClient>(client: &C, schema: &str) -> Result<()> {
    client
        .execute(
            "update trace_summarizer.state set tailing_index = null where target_schema = $1",
            &[&schema],
        )
        .await
        .ctx("updating trace_summarizer.state")?;
    Ok(())
}

/// Records what `install --adopt` replaced.
pub async fn record_adopted<C: GenericClient>(client: &C, schema: &str, what: &str) -> Result<()> {
    client
        .execute(
            "update trace_summarizer.state set adopted = $2 where target_schema = $1",
            &[&schema, &what],
        )
        .await
        .ctx("updating trace_summarizer.state")?;
    Ok(())
}

/// Records the audit's progress; `pass_done` closes the current pass.
pub async fn record_audit<C: GenericClient + Sync>(
    client: &Db<'_, C>,
    schema: &str,
    audit: &AuditRecord,
    pass_done: bool,
) -> Result<()> {
    if pass_done {
        client
            .execute(
                "update trace_summarizer.state
                 set audit_cursor = null, audit_pass_started_at = null, audit_pass_checked = 0,
                     audit_pass_mismatches = 0, last_audit_pass_at = clock_timestamp(),
                     last_audit_pass_checked = $2, last_audit_pass_mismatches = $3
                 where target_schema = $1",
                &[&schema, &audit.pass_checked, &audit.pass_mismatches],
            )
            .await
            .ctx("recording the audit")?;
    } else {
        client
            .execute(
                "update trace_summarizer.state
                 set audit_cursor = $2, audit_pass_started_at = coalesce(audit_pass_started_at, clock_timestamp()),
                     audit_pass_checked = $3, audit_pass_mismatches = $4
                 where target_schema = $1",
                &[&schema, &audit.cursor, &audit.pass_checked, &audit.pass_mismatches],
            )
            .await
            .ctx("recording the audit")?;
    }
    Ok(())
}

/// Another installation's schema, when `schema` names none (for a helpful message).
pub async fn schemas<C: GenericClient>(client: &C) -> Result<Vec<String>> {
    Ok(all(client).await?.into_iter().map(|s| s.schema).collect())
}
