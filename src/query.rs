//! Query: a DataFusion session over the lake, and the SQL the tool runs (from `queries/`).
//!
//! User SQL runs read-only (no DDL, no DML, no `COPY`), so an ad-hoc query can never change
//! the lake. Values from users are passed as parameters (`$route`), never spliced into SQL.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use datafusion::execution::context::SQLOptions;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;

use crate::error::{Error, Result};
use crate::event::{EVENTS_TABLE, LABELED_EVENTS_TABLE, LABELS_TABLE, day_of, day_string};
use crate::lake::{AsOf, Lake, Snapshot, Table};
use crate::review::table::REVIEWS_TABLE;

/// The view of each labeled event's latest label.
pub const LATEST_LABELS_SQL: &str = include_str!("../queries/llm_latest_labels.sql");
/// The view of events with their latest label.
pub const LABELED_VIEW_SQL: &str = include_str!("../queries/llm_events_labeled.sql");
/// Volume rollup per prompt version for one route and env (`$route`, `$env`).
pub const PROMPT_VERSION_ROLLUP_SQL: &str = include_str!("../queries/prompt_version_rollup.sql");
/// Segmented rollup (`{segments}` template, `$route`, `$env`, `$since`, `$until`).
pub const ROLLUP_SQL: &str = include_str!("../queries/rollup.sql");

/// A session with `llm_events`, `llm_labels`, `llm_labeled_events` (when the lake has it) and
/// the views `llm_latest_labels` and `llm_events_labeled` registered, all as of the lake's
/// latest version.
pub async fn lake_session(lake: &Lake) -> Result<SessionContext> {
    session(lake, &AsOf::Latest, false).await
}

/// [`lake_session`] as of an earlier version of the lake (time travel).
pub async fn lake_session_at(lake: &Lake, as_of: &AsOf) -> Result<SessionContext> {
    session(lake, as_of, false).await
}

/// The session the judge reads through: the same tables, with strings read as `Utf8View`
/// (see [`Lake::register_string_views`]). Never handed to user SQL, whose results keep `Utf8`.
pub async fn judge_session(lake: &Lake) -> Result<SessionContext> {
    session(lake, &AsOf::Latest, true).await
}

/// [`judge_session`] as of an earlier version of the lake: what the judge saw then.
pub async fn judge_session_at(lake: &Lake, as_of: &AsOf) -> Result<SessionContext> {
    session(lake, as_of, true).await
}

async fn session(lake: &Lake, as_of: &AsOf, string_views: bool) -> Result<SessionContext> {
    lake.require_existing()?;
    // DATAFUSION_* environment variables tune the engine (e.g. DATAFUSION_EXECUTION_TARGET_PARTITIONS).
    let config = SessionConfig::from_env()?.with_information_schema(true);
    // Queries run in a memory pool: sorts, aggregations and joins spill to disk past it, and
    // what cannot spill fails with "Resources exhausted" instead of exhausting the machine.
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(query_memory_bytes()?)))
        .build_arc()?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    // Every table is read at the versions of one lake version: never part of a commit, never
    // a file that a compaction removed (those stay until a vacuum past the retention period).
    let snapshot = Snapshot::load(lake, as_of).await?;
    let mut tables = vec![(Table::Events, EVENTS_TABLE), (Table::Labels, LABELS_TABLE)];
    // Lakes written before the labeled-events index have none until their next ingest.
    if snapshot.has(Table::LabeledEvents) {
        tables.push((Table::LabeledEvents, LABELED_EVENTS_TABLE));
    }
    for (table, name) in tables {
        snapshot.register(&ctx, table, name, string_views)?;
    }
    if snapshot.version().is_none() {
        crate::review::table::register_legacy(lake, &ctx)?;
    } else if snapshot.has(Table::Reviews) {
        snapshot.register(&ctx, Table::Reviews, REVIEWS_TABLE, string_views)?;
    }
    ctx.sql(LATEST_LABELS_SQL).await?.collect().await?;
    ctx.sql(LABELED_VIEW_SQL).await?.collect().await?;
    Ok(ctx)
}

/// Says why a file a version lists can be missing: a vacuum removed it (an old version), or
/// the lake was damaged (the latest).
pub fn missing_file_hint(e: Error, as_of: &AsOf) -> Error {
    if !e.message.contains("not found") || e.hint.is_some() {
        return e;
    }
    match as_of {
        AsOf::Latest => e.with_hint(
            "a file the lake's latest version lists is gone: it was deleted by hand; restore it from a backup",
        ),
        _ => e.with_hint(
            "this version's files were deleted by a vacuum after the retention period (`promptgate lake vacuum`); read a newer version",
        ),
    }
}

/// The environment variable that sets the query memory pool, in MiB.
pub const MEMORY_ENV: &str = "PROMPTGATE_MEMORY_MIB";

/// Bytes of the query memory pool: `PROMPTGATE_MEMORY_MIB`, or half the memory this process may
/// really use: the smallest of the machine's physical memory, its cgroup's limit
/// (`memory.max`, or v1's `memory.limit_in_bytes`) and the room left under its address-space
/// limit (`ulimit -v`). Half of physical memory alone let a query under a 4 GB address-space
/// limit reach for 12 GB and abort the process instead of failing with the pool's hint.
pub fn query_memory_bytes() -> Result<usize> {
    if let Ok(v) = std::env::var(MEMORY_ENV) {
        return match v.trim().parse::<usize>() {
            Ok(mib) if mib > 0 => Ok(mib.saturating_mul(1 << 20)),
            _ => Err(
                Error::usage(format!("{MEMORY_ENV}={v:?} is not a whole number of MiB"))
                    .with_hint(format!("for example {MEMORY_ENV}=4096")),
            ),
        };
    }
    // SAFETY: sysconf has no preconditions.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let physical = (pages > 0 && page > 0).then(|| (pages as u64).saturating_mul(page as u64));
    Ok(pool_bytes(
        physical,
        cgroup_memory_limit(),
        address_space_room(),
    ))
}

/// Half the smallest of the limits that are known; 4 GiB when none is.
fn pool_bytes(physical: Option<u64>, cgroup: Option<u64>, address_room: Option<u64>) -> usize {
    let limit = [physical, cgroup, address_room]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(8 << 30);
    usize::try_from(limit / 2).unwrap_or(usize::MAX)
}

/// The memory limit of this process's cgroup (v2 `memory.max`, v1 `memory.limit_in_bytes`),
/// `None` when there is none or it cannot be read.
fn cgroup_memory_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut candidates = Vec::new();
    for line in own.lines() {
        if let Some(path) = line.strip_prefix("0::") {
            candidates.push(format!("/sys/fs/cgroup{path}/memory.max"));
        } else if let Some((_, path)) = line.split_once(":memory:") {
            candidates.push(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"));
        }
    }
    candidates.push("/sys/fs/cgroup/memory.max".into());
    candidates.push("/sys/fs/cgroup/memory/memory.limit_in_bytes".into());
    candidates.iter().find_map(|p| {
        let text = std::fs::read_to_string(p).ok()?;
        // "max" (v2) or a value near 2^63 (v1) means no limit.
        text.trim().parse::<u64>().ok().filter(|v| *v < (1 << 62))
    })
}

/// Room left under the address-space limit (`RLIMIT_AS`, `ulimit -v`): the limit less what the
/// process has mapped already (its code, stacks, the allocator's reservations). `None` without a
/// limit.
fn address_space_room() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) } != 0
        || lim.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    let mapped_kib: u64 = std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Some(lim.rlim_cur.saturating_sub(mapped_kib * 1024))
}

/// Plans `sql` read-only with named parameters (`$name`) bound to `params`.
pub async fn plan(
    ctx: &SessionContext,
    sql: &str,
    params: Vec<(String, ScalarValue)>,
) -> Result<DataFrame> {
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let df = ctx.sql_with_options(sql, options).await.map_err(|e| {
        let msg = e.strip_backtrace();
        let err = Error::query(msg.clone());
        if msg.contains("No value found for placeholder") {
            err.with_hint("pass a value for each $name in the query with --param name=value")
        } else if msg.contains("not found") && msg.contains("table") {
            err.with_hint(
                "tables: llm_events, llm_labels, llm_labeled_events, llm_latest_labels, llm_events_labeled, llm_reviews",
            )
        } else {
            err
        }
    })?;
    if params.is_empty() {
        return Ok(df);
    }
    Ok(df.with_param_values(params)?)
}

/// Parses `name=value` parameters as strings.
pub fn parse_params(raw: &[String]) -> Result<Vec<(String, ScalarValue)>> {
    raw.iter()
        .map(|p| {
            let (k, v) = p.split_once('=').ok_or_else(|| {
                Error::usage(format!("parameter {p:?} is not name=value"))
                    .with_hint("for example --param route=support")
            })?;
            let k = k.trim().trim_start_matches('$');
            if k.is_empty() {
                return Err(Error::usage(format!("parameter {p:?} has no name")));
            }
            Ok((k.to_string(), ScalarValue::Utf8(Some(v.to_string()))))
        })
        .collect()
}

pub use crate::event::SEGMENT_COLUMNS;

/// What to roll up.
#[derive(Debug, Clone, Default)]
pub struct RollupSpec {
    pub route: String,
    pub env: Option<String>,
    /// Inclusive lower bound, microseconds since the epoch.
    pub since_us: Option<i64>,
    /// Exclusive upper bound.
    pub until_us: Option<i64>,
    /// Segment columns (each one of [`SEGMENT_COLUMNS`]).
    pub by: Vec<String>,
}

/// Checks segment column names against [`SEGMENT_COLUMNS`].
pub fn check_segment_columns(by: &[String]) -> Result<()> {
    for c in by {
        if !SEGMENT_COLUMNS.contains(&c.as_str()) {
            return Err(Error::usage(format!("cannot segment by {c:?}"))
                .with_hint(format!("choose from {}", SEGMENT_COLUMNS.join(", "))));
        }
    }
    Ok(())
}

/// The segmented rollup of `queries/rollup.sql` for one route.
pub async fn rollup(ctx: &SessionContext, spec: &RollupSpec) -> Result<DataFrame> {
    check_segment_columns(&spec.by)?;
    let mut segments = vec!["route".to_string()];
    for c in &spec.by {
        if !segments.contains(c) {
            segments.push(c.clone());
        }
    }
    // Identifiers come from the fixed list above, quoted; values go in as parameters.
    let segments = segments
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = ROLLUP_SQL.replace("{segments}", &segments);
    let params = window_params(
        &spec.route,
        spec.env.as_deref(),
        spec.since_us,
        spec.until_us,
    );
    plan(ctx, &sql, params).await
}

/// The parameters of a query over one route's events in a window: `$route`, `$env` (NULL: every
/// env), `$since` and `$until` (timestamps; NULL: unbounded), and `$since_day` and `$until_day`,
/// the days of `[since, until)` (YYYY-MM-DD, both inclusive; NULL: unbounded), for partition
/// pruning.
pub fn window_params(
    route: &str,
    env: Option<&str>,
    since_us: Option<i64>,
    until_us: Option<i64>,
) -> Vec<(String, ScalarValue)> {
    let ts = |v: Option<i64>| ScalarValue::TimestampMicrosecond(v, Some("UTC".into()));
    let day = |us: Option<i64>| ScalarValue::Utf8(us.map(|us| day_string(day_of(us))));
    vec![
        (
            "route".to_string(),
            ScalarValue::Utf8(Some(route.to_string())),
        ),
        (
            "env".to_string(),
            ScalarValue::Utf8(env.map(str::to_string)),
        ),
        ("since".to_string(), ts(since_us)),
        ("until".to_string(), ts(until_us)),
        // The same window in days (both inclusive; `until` is exclusive), so that only its
        // date= partitions are opened: the ts bounds alone prune row groups, not files.
        ("since_day".to_string(), day(since_us)),
        (
            "until_day".to_string(),
            day(until_us.map(|u| u.saturating_sub(1))),
        ),
    ]
}

/// Events and units per arm of a rollout step, and the prompt_sha they carry
/// (`$route`, `$env`, `$baseline`, `$canary`, `$since`, `$since_day`).
pub const ROLLOUT_ARMS_SQL: &str = include_str!("../queries/rollout_arms.sql");

/// One row of [`ROLLOUT_ARMS_SQL`]: a version's events with one `prompt_sha` since a step began.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ArmEvents {
    pub version: String,
    pub prompt_sha: Option<String>,
    pub events: u64,
    /// Distinct `unit_id`s (events without one are not counted here).
    pub units: u64,
}

/// Runs [`ROLLOUT_ARMS_SQL`] for `baseline` and `canary` on `route`/`env` since `since_us`.
pub async fn rollout_arms(
    ctx: &SessionContext,
    route: &str,
    env: &str,
    baseline: &str,
    canary: &str,
    since_us: i64,
) -> Result<Vec<ArmEvents>> {
    let s = |v: &str| ScalarValue::Utf8(Some(v.to_string()));
    let params = vec![
        ("route".to_string(), s(route)),
        ("env".to_string(), s(env)),
        ("baseline".to_string(), s(baseline)),
        ("canary".to_string(), s(canary)),
        (
            "since".to_string(),
            ScalarValue::TimestampMicrosecond(Some(since_us), Some("UTC".into())),
        ),
        (
            "since_day".to_string(),
            s(&day_string(since_us.div_euclid(86_400_000_000) as i32)),
        ),
    ];
    let batches = plan(ctx, ROLLOUT_ARMS_SQL, params).await?.collect().await?;
    let mut out = Vec::new();
    for b in &batches {
        let text = |i: usize| cast(b.column(i), &DataType::Utf8);
        let (versions, shas) = (text(0)?, text(1)?);
        let (versions, shas) = (versions.as_string::<i32>(), shas.as_string::<i32>());
        let events = b.column(2).as_primitive::<Int64Type>();
        let units = b.column(3).as_primitive::<Int64Type>();
        for r in 0..b.num_rows() {
            out.push(ArmEvents {
                version: versions.value(r).to_string(),
                prompt_sha: shas.is_valid(r).then(|| shas.value(r).to_string()),
                events: events.value(r) as u64,
                units: units.value(r) as u64,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_is_half_the_smallest_known_limit() {
        const GIB: u64 = 1 << 30;
        assert_eq!(pool_bytes(Some(24 * GIB), None, None), (12 * GIB) as usize);
        // A 4 GB address-space limit with 0.5 GB already mapped: 1.75 GB, not 12.
        assert_eq!(
            pool_bytes(Some(24 * GIB), None, Some(4 * GIB - GIB / 2)),
            (7 * GIB / 4) as usize
        );
        assert_eq!(
            pool_bytes(Some(24 * GIB), Some(2 * GIB), None),
            GIB as usize
        );
        assert_eq!(pool_bytes(None, None, None), (4 * GIB) as usize);
    }

    #[test]
    fn an_address_space_limit_is_read_as_room_left() {
        // No limit in the test process (the default), or a finite room below the limit.
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) }, 0);
        match address_space_room() {
            None => assert_eq!(lim.rlim_cur, libc::RLIM_INFINITY),
            Some(room) => assert!(room < lim.rlim_cur),
        }
    }
}
