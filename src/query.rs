//! Query: a DataFusion session over the lake, and the SQL the tool runs (from `queries/`).
//!
//! User SQL runs read-only (no DDL, no DML, no `COPY`), so an ad-hoc query can never change
//! the lake. Values from users are passed as parameters (`$route`), never spliced into SQL.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::execution::context::SQLOptions;
use datafusion::functions_aggregate::expr_fn::{max, min};
use datafusion::prelude::{DataFrame, Expr, SessionConfig, SessionContext, col, lit};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::event::{EVENTS_TABLE, LABELS_TABLE, day_of, day_string};
use crate::judge::policy::ValueColumn;
use crate::judge::{Arm, Samples, SegmentSample};
use crate::lake::{Lake, Table};

/// The view of each labeled event's latest label.
pub const LATEST_LABELS_SQL: &str = include_str!("../queries/llm_latest_labels.sql");
/// The view of events with their latest label.
pub const LABELED_VIEW_SQL: &str = include_str!("../queries/llm_events_labeled.sql");
/// Volume rollup per prompt version for one route and env (`$route`, `$env`).
pub const PROMPT_VERSION_ROLLUP_SQL: &str = include_str!("../queries/prompt_version_rollup.sql");
/// Segmented rollup (`{segments}` template, `$route`, `$env`, `$since`, `$until`).
pub const ROLLUP_SQL: &str = include_str!("../queries/rollup.sql");

/// A session with `llm_events`, `llm_labels` and `llm_events_labeled` registered.
pub async fn lake_session(lake: &Lake) -> Result<SessionContext> {
    lake.require_existing()?;
    // DATAFUSION_* environment variables tune the engine (e.g. DATAFUSION_EXECUTION_TARGET_PARTITIONS).
    let config = SessionConfig::from_env()?.with_information_schema(true);
    let ctx = SessionContext::new_with_config(config);
    lake.register(&ctx, Table::Events, EVENTS_TABLE)?;
    lake.register(&ctx, Table::Labels, LABELS_TABLE)?;
    ctx.sql(LATEST_LABELS_SQL).await?.collect().await?;
    ctx.sql(LABELED_VIEW_SQL).await?.collect().await?;
    Ok(ctx)
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
            err.with_hint("tables: llm_events, llm_labels, llm_latest_labels, llm_events_labeled")
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

/// Columns a rollup or the judge may segment by: schema columns only, never user text.
pub const SEGMENT_COLUMNS: [&str; 6] = ["env", "model", "tier", "prompt_sha", "status", "date"];

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

/// What the judge compares: two versions of one route.
#[derive(Debug, Clone)]
pub struct CanaryQuery {
    pub route: String,
    pub env: Option<String>,
    pub baseline: String,
    pub canary: String,
    /// Window bounds; when both are None the window is the span of the canary's events.
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
    pub segment_by: Vec<String>,
    pub value_columns: Vec<ValueColumn>,
    /// Read latest labels too (for bad-label rules).
    pub labels: bool,
}

fn canary_filter(q: &CanaryQuery, versions: Vec<Expr>) -> Expr {
    let mut f = col("route")
        .eq(lit(q.route.as_str()))
        .and(col("prompt_version").in_list(versions, false));
    if let Some(env) = &q.env {
        f = f.and(col("env").eq(lit(env.as_str())));
    }
    f
}

fn ts_lit(us: i64) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(us),
        Some("UTC".into()),
    ))
}

/// The (first, last) timestamp of the canary's events, if it has any.
pub async fn canary_span(ctx: &SessionContext, q: &CanaryQuery) -> Result<Option<(i64, i64)>> {
    let df = ctx
        .table(EVENTS_TABLE)
        .await?
        .filter(canary_filter(q, vec![lit(q.canary.as_str())]))?
        .aggregate(
            vec![],
            vec![min(col("ts")).alias("first"), max(col("ts")).alias("last")],
        )?;
    let batches = df.collect().await?;
    let Some(b) = batches.first().filter(|b| b.num_rows() == 1) else {
        return Ok(None);
    };
    let get = |i: usize| -> Option<i64> {
        let a = cast(b.column(i), &DataType::Int64).ok()?;
        let a = a.as_primitive::<Int64Type>();
        a.is_valid(0).then(|| a.value(0))
    };
    Ok(get(0).zip(get(1)))
}

/// Latest label per labeled event: event_id -> label is `bad`. Labels are human judgements, far
/// fewer than events, so they are looked up in memory rather than joined against the events.
async fn latest_bad_labels(
    ctx: &SessionContext,
) -> Result<HashMap<String, bool, foldhash::fast::RandomState>> {
    let mut out = HashMap::default();
    let mut stream = ctx
        .table("llm_latest_labels")
        .await?
        .select(vec![col("event_id"), col("label")])?
        .execute_stream()
        .await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let ids = cast(batch.column(0), &DataType::Utf8)?;
        let labels = cast(batch.column(1), &DataType::Utf8)?;
        for (id, label) in ids
            .as_string::<i32>()
            .iter()
            .zip(labels.as_string::<i32>().iter())
        {
            if let (Some(id), Some(label)) = (id, label) {
                out.insert(id.to_string(), label == "bad");
            }
        }
    }
    Ok(out)
}

/// Streams the two arms' events of one route into per-segment [`Samples`]. Names are bound as
/// literals through the DataFrame API, never spliced into SQL.
pub async fn collect_samples(ctx: &SessionContext, q: &CanaryQuery) -> Result<Samples> {
    let window = if q.since_us.is_none() && q.until_us.is_none() {
        canary_span(ctx, q).await?
    } else {
        None
    };
    let mut filter = canary_filter(q, vec![lit(q.baseline.as_str()), lit(q.canary.as_str())]);
    match window {
        Some((first, last)) => {
            filter = filter
                .and(col("ts").gt_eq(ts_lit(first)))
                .and(col("ts").lt_eq(ts_lit(last)))
                // The same bound on the `date` partition lets DataFusion skip whole days.
                .and(col("date").gt_eq(lit(day_string(day_of(first)))))
                .and(col("date").lt_eq(lit(day_string(day_of(last)))));
        }
        None => {
            if let Some(s) = q.since_us {
                filter = filter.and(col("ts").gt_eq(ts_lit(s)));
            }
            if let Some(u) = q.until_us {
                filter = filter.and(col("ts").lt(ts_lit(u)));
            }
        }
    }
    let labels = if q.labels {
        Some(latest_bad_labels(ctx).await?)
    } else {
        None
    };
    let mut columns: Vec<Expr> = q.segment_by.iter().map(|c| col(c.as_str())).collect();
    columns.extend(["prompt_version", "prompt_sha", "status"].map(col));
    columns.extend(q.value_columns.iter().map(|c| col(c.name())));
    if labels.is_some() {
        columns.push(col("event_id"));
    }
    let df = ctx
        .table(EVENTS_TABLE)
        .await?
        .filter(filter)?
        .select(columns)?;
    let mut stream = df.execute_stream().await?;

    let nseg = q.segment_by.len();
    let mut by_key: HashMap<String, (Vec<String>, SegmentSample), foldhash::fast::RandomState> =
        HashMap::default();
    let mut shas: [Vec<Option<String>>; 2] = [Vec::new(), Vec::new()];
    let mut key = String::new();
    let mut vals: Vec<(ValueColumn, f64)> = Vec::with_capacity(3);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let strings =
            |i: usize| -> Result<ArrayRef> { Ok(cast(batch.column(i), &DataType::Utf8)?) };
        let segs: Vec<ArrayRef> = (0..nseg).map(strings).collect::<Result<_>>()?;
        let segs: Vec<&StringArray> = segs.iter().map(|a| a.as_string::<i32>()).collect();
        let version = strings(nseg)?;
        let version = version.as_string::<i32>();
        let sha = strings(nseg + 1)?;
        let sha = sha.as_string::<i32>();
        let status = strings(nseg + 2)?;
        let status = status.as_string::<i32>();
        let values: Vec<(ValueColumn, ArrayRef)> = q
            .value_columns
            .iter()
            .enumerate()
            .map(|(i, c)| Ok((*c, cast(batch.column(nseg + 3 + i), &DataType::Float64)?)))
            .collect::<Result<_>>()?;
        let values: Vec<(ValueColumn, &Float64Array)> = values
            .iter()
            .map(|(c, a)| (*c, a.as_primitive::<Float64Type>()))
            .collect();
        let event_ids = if labels.is_some() {
            Some(strings(batch.num_columns() - 1)?)
        } else {
            None
        };
        let event_ids = event_ids.as_ref().map(|a| a.as_string::<i32>());
        for row in 0..batch.num_rows() {
            let arm = if version.value(row) == q.canary {
                Arm::Canary
            } else {
                Arm::Baseline
            };
            key.clear();
            for s in &segs {
                key.push_str(if s.is_valid(row) { s.value(row) } else { "" });
                key.push('\u{1f}');
            }
            let seg = match by_key.get_mut(key.as_str()) {
                Some(s) => &mut s.1,
                None => {
                    let parts = segs
                        .iter()
                        .map(|s| {
                            if s.is_valid(row) {
                                s.value(row).to_string()
                            } else {
                                String::new()
                            }
                        })
                        .collect();
                    &mut by_key
                        .entry(key.clone())
                        .or_insert((parts, SegmentSample::default()))
                        .1
                }
            };
            let sha_v = sha.is_valid(row).then(|| sha.value(row));
            let seen = &mut shas[arm as usize];
            if !seen.iter().any(|s| s.as_deref() == sha_v) {
                seen.push(sha_v.map(str::to_string));
            }
            vals.clear();
            for (c, a) in &values {
                if a.is_valid(row) {
                    vals.push((*c, a.value(row)));
                }
            }
            let st = status.value(row);
            let bad = match (&labels, event_ids) {
                (Some(l), Some(ids)) => l.get(ids.value(row)).copied(),
                _ => None,
            };
            seg.arm_mut(arm)
                .push(st == "flagged", st == "error", bad, &vals);
        }
    }
    Ok(Samples {
        segment_by: q.segment_by.clone(),
        segments: by_key.into_values().collect(),
        shas: [Arm::Baseline, Arm::Canary]
            .into_iter()
            .map(|a| (a, shas[a as usize].iter().cloned().collect()))
            .collect(),
        window: window.or(match (q.since_us, q.until_us) {
            (None, None) => None,
            (s, u) => Some((s.unwrap_or(i64::MIN), u.unwrap_or(i64::MAX))),
        }),
    })
}
