//! Query: a DataFusion session over the lake, and the SQL the tool runs (from `queries/`).
//!
//! User SQL runs read-only (no DDL, no DML, no `COPY`), so an ad-hoc query can never change
//! the lake. Values from users are passed as parameters (`$route`), never spliced into SQL.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Scalar, StringArray};
use arrow::compute::cast;
use arrow::compute::kernels::cmp::eq;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::execution::context::SQLOptions;
use datafusion::functions_aggregate::expr_fn::{max, min};
use datafusion::logical_expr::JoinType;
use datafusion::prelude::{DataFrame, Expr, SessionConfig, SessionContext, col, lit};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::event::{
    EVENTS_TABLE, LABELED_EVENTS_TABLE, LABELS_TABLE, Label, Status, day_of, day_string,
};
use crate::judge::policy::ValueColumn;
use crate::judge::{Arm, Samples, SegmentSample};
use crate::lake::{Lake, Table};

/// Name of the view of each labeled event's latest label.
pub const LATEST_LABELS_VIEW: &str = "llm_latest_labels";
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
    // Lakes written before the labeled-events index have none until their next ingest.
    if lake.table_dir(Table::LabeledEvents).is_dir() {
        lake.register(&ctx, Table::LabeledEvents, LABELED_EVENTS_TABLE)?;
    }
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
    let mut columns: Vec<Expr> = q.segment_by.iter().map(|c| col(c.as_str())).collect();
    columns.extend(["prompt_version", "prompt_sha", "status"].map(col));
    columns.extend(q.value_columns.iter().map(|c| col(c.name())));
    let df = ctx
        .table(EVENTS_TABLE)
        .await?
        .filter(filter.clone())?
        .select(columns)?;
    let mut stream = df.execute_stream().await?;

    let nseg = q.segment_by.len();
    let mut segments = Segmenter::new(nseg);
    let mut shas: [Vec<Option<String>>; 2] = [Vec::new(), Vec::new()];
    let canary = Scalar::new(StringArray::from(vec![q.canary.as_str()]));
    let flagged = Scalar::new(StringArray::from(vec![Status::Flagged.as_str()]));
    let error = Scalar::new(StringArray::from(vec![Status::Error.as_str()]));
    let mut ids = Vec::new();
    let mut vals: Vec<(ValueColumn, f64)> = Vec::with_capacity(3);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let strings =
            |i: usize| -> Result<ArrayRef> { Ok(cast(batch.column(i), &DataType::Utf8)?) };
        let segs: Vec<ArrayRef> = (0..nseg).map(strings).collect::<Result<_>>()?;
        let segs: Vec<&StringArray> = segs.iter().map(|a| a.as_string::<i32>()).collect();
        let version = strings(nseg)?;
        let is_canary = eq(&version, &canary)?;
        let sha = strings(nseg + 1)?;
        let sha = sha.as_string::<i32>();
        let status = strings(nseg + 2)?;
        let is_flagged = eq(&status, &flagged)?;
        let is_error = eq(&status, &error)?;
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
        segments.assign(&segs, batch.num_rows(), &mut ids);
        let mut last_sha: [Option<Option<&str>>; 2] = [None, None];
        for (row, seg) in ids.iter().enumerate() {
            let arm = if is_canary.value(row) {
                Arm::Canary
            } else {
                Arm::Baseline
            };
            let sha_v = sha.is_valid(row).then(|| sha.value(row));
            if last_sha[arm as usize] != Some(sha_v) {
                last_sha[arm as usize] = Some(sha_v);
                let seen = &mut shas[arm as usize];
                if !seen.iter().any(|s| s.as_deref() == sha_v) {
                    seen.push(sha_v.map(str::to_string));
                }
            }
            vals.clear();
            for (c, a) in &values {
                if a.is_valid(row) {
                    vals.push((*c, a.value(row)));
                }
            }
            segments.samples[*seg as usize].arm_mut(arm).push(
                is_flagged.value(row),
                is_error.value(row),
                None,
                &vals,
            );
        }
    }
    if q.labels {
        count_labels(ctx, q, filter, &mut segments).await?;
    }
    Ok(Samples {
        segment_by: q.segment_by.clone(),
        segments: segments.into_map(),
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

/// Adds each segment's labeled and bad counts: the latest label (by label ts, then label_id,
/// as in `llm_latest_labels`) of every event in `filter`. The events come from the labeled-events
/// index (a small table) when the lake has one, else from the events themselves.
async fn count_labels(
    ctx: &SessionContext,
    q: &CanaryQuery,
    filter: Expr,
    segments: &mut Segmenter,
) -> Result<()> {
    let source = if ctx.table_exist(LABELED_EVENTS_TABLE)? {
        LABELED_EVENTS_TABLE
    } else {
        EVENTS_TABLE
    };
    let mut columns: Vec<Expr> = q.segment_by.iter().map(|c| col(c.as_str())).collect();
    columns.extend(["prompt_version", "event_id"].map(col));
    let events = ctx.table(source).await?.filter(filter)?.select(columns)?;
    // Labels are the build side: far fewer than events when the index is missing.
    let labels = ctx.table(LABELS_TABLE).await?.select(vec![
        col("event_id").alias("labeled_id"),
        col("label"),
        col("ts").alias("label_ts"),
        col("label_id"),
    ])?;
    let mut stream = labels
        .join(
            events,
            JoinType::Inner,
            &["labeled_id"],
            &["event_id"],
            None,
        )?
        .execute_stream()
        .await?;
    let nseg = q.segment_by.len();
    // event_id -> (segment, arm, (label ts, label_id), bad) of its latest label so far.
    type Latest = (u32, Arm, (i64, String), bool);
    let mut latest: HashMap<String, Latest, foldhash::fast::RandomState> = HashMap::default();
    let mut ids = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let column = |name: &str| -> Result<ArrayRef> {
            let i = batch.schema().index_of(name)?;
            Ok(cast(batch.column(i), &DataType::Utf8)?)
        };
        let segs: Vec<ArrayRef> = q
            .segment_by
            .iter()
            .map(|c| column(c))
            .collect::<Result<_>>()?;
        let segs: Vec<&StringArray> = segs.iter().map(|a| a.as_string::<i32>()).collect();
        let version = column("prompt_version")?;
        let version = version.as_string::<i32>();
        let event = column("labeled_id")?;
        let event = event.as_string::<i32>();
        let label = column("label")?;
        let label = label.as_string::<i32>();
        let label_id = column("label_id")?;
        let label_id = label_id.as_string::<i32>();
        let ts = cast(
            batch.column(batch.schema().index_of("label_ts")?),
            &DataType::Int64,
        )?;
        let ts = ts.as_primitive::<Int64Type>();
        debug_assert_eq!(segs.len(), nseg);
        segments.assign(&segs, batch.num_rows(), &mut ids);
        for (row, seg) in ids.iter().enumerate() {
            let arm = if version.value(row) == q.canary {
                Arm::Canary
            } else {
                Arm::Baseline
            };
            let order = (ts.value(row), label_id.value(row));
            let bad = label.value(row) == Label::Bad.as_str();
            match latest.get_mut(event.value(row)) {
                Some(l) => {
                    if order > (l.2.0, l.2.1.as_str()) {
                        *l = (*seg, arm, (order.0, order.1.to_string()), bad);
                    }
                }
                None => {
                    latest.insert(
                        event.value(row).to_string(),
                        (*seg, arm, (order.0, order.1.to_string()), bad),
                    );
                }
            }
        }
    }
    for (seg, arm, _, bad) in latest.into_values() {
        let s = segments.samples[seg as usize].arm_mut(arm);
        s.labeled += 1;
        s.bad += bad as u64;
    }
    Ok(())
}

/// Gives each distinct combination of segment values a dense number, column by column: a
/// row's values are interned per column, then combined pairwise, so no key string is built per
/// row. Nulls count as the empty string.
struct Segmenter {
    /// Per segment column: value -> number.
    values: Vec<HashMap<String, u32, foldhash::fast::RandomState>>,
    /// Per segment column after the first: (number so far, value number) -> number so far.
    combos: Vec<HashMap<(u32, u32), u32, foldhash::fast::RandomState>>,
    keys: Vec<Vec<String>>,
    samples: Vec<SegmentSample>,
}

impl Segmenter {
    fn new(columns: usize) -> Self {
        Self {
            values: (0..columns).map(|_| HashMap::default()).collect(),
            combos: (1..columns.max(1)).map(|_| HashMap::default()).collect(),
            keys: Vec::new(),
            samples: Vec::new(),
        }
    }

    /// Sets `out[row]` to the segment number of each of `rows` rows.
    fn assign(&mut self, segs: &[&StringArray], rows: usize, out: &mut Vec<u32>) {
        out.clear();
        if segs.is_empty() {
            // No segment columns: one segment.
            if rows > 0 {
                self.segment_of_row(segs, 0, 0);
            }
            out.resize(rows, 0);
            return;
        }
        let mut level = Vec::with_capacity(rows);
        for (k, s) in segs.iter().enumerate() {
            let map = &mut self.values[k];
            level.clear();
            let mut last: Option<(&str, u32)> = None;
            for row in 0..rows {
                let v = if s.is_valid(row) { s.value(row) } else { "" };
                let id = match last {
                    Some((lv, id)) if lv == v => id,
                    _ => {
                        let next = map.len() as u32;
                        let id = match map.get(v) {
                            Some(id) => *id,
                            None => *map.entry(v.to_string()).or_insert(next),
                        };
                        last = Some((v, id));
                        id
                    }
                };
                level.push(id);
            }
            if k == 0 {
                out.extend_from_slice(&level);
            } else {
                let combos = &mut self.combos[k - 1];
                for (o, v) in out.iter_mut().zip(&level) {
                    let next = combos.len() as u32;
                    *o = *combos.entry((*o, *v)).or_insert(next);
                }
            }
        }
        // Final numbers -> dense segment slots, creating a slot (and its key) on first sight.
        for row in 0..rows {
            out[row] = self.segment_of_row(segs, out[row], row);
        }
    }

    /// The slot of combination `combo`, first seen at `row`.
    fn segment_of_row(&mut self, segs: &[&StringArray], combo: u32, row: usize) -> u32 {
        let combo = combo as usize;
        while self.samples.len() <= combo {
            self.samples.push(SegmentSample::default());
            self.keys.push(Vec::new());
        }
        if self.keys[combo].is_empty() && !segs.is_empty() {
            self.keys[combo] = segs
                .iter()
                .map(|s| {
                    if s.is_valid(row) {
                        s.value(row).to_string()
                    } else {
                        String::new()
                    }
                })
                .collect();
        }
        combo as u32
    }

    fn into_map(self) -> std::collections::BTreeMap<Vec<String>, SegmentSample> {
        self.keys.into_iter().zip(self.samples).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[Option<&str>]) -> StringArray {
        StringArray::from(v.to_vec())
    }

    #[test]
    fn segmenter_numbers_combinations_densely_across_batches() {
        let mut s = Segmenter::new(3);
        let mut ids = Vec::new();
        let m = strings(&[
            Some("m1"),
            Some("m1"),
            Some("m2"),
            None,
            Some("m1"),
            Some("m1"),
        ]);
        let t = strings(&[
            Some("free"),
            Some("pro"),
            Some("free"),
            Some("free"),
            Some("free"),
            Some("free"),
        ]);
        let e = strings(
            &[Some("prod"); 5]
                .iter()
                .copied()
                .chain([Some("dev")])
                .collect::<Vec<_>>(),
        );
        s.assign(&[&m, &t, &e], 6, &mut ids);
        assert_eq!(ids, [0, 1, 2, 3, 0, 4]);
        // A later batch keeps the numbers; a null and "" are the same segment.
        let m = strings(&[Some("m2"), Some("")]);
        let t = strings(&[Some("free"), Some("free")]);
        let e = strings(&[Some("prod"), Some("prod")]);
        s.assign(&[&m, &t, &e], 2, &mut ids);
        assert_eq!(ids, [2, 3]);
        let key = |a: &str, b: &str, c: &str| vec![a.to_string(), b.to_string(), c.to_string()];
        assert_eq!(
            s.keys,
            [
                key("m1", "free", "prod"),
                key("m1", "pro", "prod"),
                key("m2", "free", "prod"),
                key("", "free", "prod"),
                key("m1", "free", "dev"),
            ]
        );
    }

    #[test]
    fn segmenter_without_columns_has_one_segment() {
        let mut s = Segmenter::new(0);
        let mut ids = Vec::new();
        s.assign(&[], 3, &mut ids);
        assert_eq!(ids, [0, 0, 0]);
        s.assign(&[], 0, &mut ids);
        assert!(ids.is_empty());
        assert_eq!(
            s.into_map().into_keys().collect::<Vec<_>>(),
            [Vec::<String>::new()]
        );
    }
}
