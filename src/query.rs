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
use crate::event::{EVENTS_TABLE, LABELED_EVENTS_TABLE, LABELS_TABLE, day_string};
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

/// Bytes of the query memory pool: `PROMPTGATE_MEMORY_MIB`, or half the machine's memory.
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
    Ok(if pages > 0 && page > 0 {
        (pages as usize).saturating_mul(page as usize) / 2
    } else {
        4 << 30
    })
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
    let ts = |v: Option<i64>| ScalarValue::TimestampMicrosecond(v, Some("UTC".into()));
    let params = vec![
        (
            "route".to_string(),
            ScalarValue::Utf8(Some(spec.route.clone())),
        ),
        ("env".to_string(), ScalarValue::Utf8(spec.env.clone())),
        ("since".to_string(), ts(spec.since_us)),
        ("until".to_string(), ts(spec.until_us)),
    ];
    plan(ctx, &sql, params).await
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
