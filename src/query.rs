//! Query: a DataFusion session over the lake, and the SQL the tool runs (from `queries/`).
//!
//! User SQL runs read-only (no DDL, no DML, no `COPY`), so an ad-hoc query can never change
//! the lake. Values from users are passed as parameters (`$route`), never spliced into SQL.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Scalar, StringViewArray};
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
use crate::judge::{Arm, ArmSample, Samples, SegmentSample};
use crate::lake::{Lake, Table};

/// The view of each labeled event's latest label.
pub const LATEST_LABELS_SQL: &str = include_str!("../queries/llm_latest_labels.sql");
/// The view of events with their latest label.
pub const LABELED_VIEW_SQL: &str = include_str!("../queries/llm_events_labeled.sql");
/// Volume rollup per prompt version for one route and env (`$route`, `$env`).
pub const PROMPT_VERSION_ROLLUP_SQL: &str = include_str!("../queries/prompt_version_rollup.sql");
/// Segmented rollup (`{segments}` template, `$route`, `$env`, `$since`, `$until`).
pub const ROLLUP_SQL: &str = include_str!("../queries/rollup.sql");

/// A session with `llm_events`, `llm_labels`, `llm_labeled_events` (when the lake has it) and
/// the views `llm_latest_labels` and `llm_events_labeled` registered.
pub async fn lake_session(lake: &Lake) -> Result<SessionContext> {
    session(lake, false).await
}

/// The session the judge reads through: the same tables, with strings read as `Utf8View`
/// (see [`Lake::register_string_views`]). Never handed to user SQL, whose results keep `Utf8`.
pub async fn judge_session(lake: &Lake) -> Result<SessionContext> {
    session(lake, true).await
}

async fn session(lake: &Lake, string_views: bool) -> Result<SessionContext> {
    lake.require_existing()?;
    // DATAFUSION_* environment variables tune the engine (e.g. DATAFUSION_EXECUTION_TARGET_PARTITIONS).
    let config = SessionConfig::from_env()?.with_information_schema(true);
    let ctx = SessionContext::new_with_config(config);
    let mut tables = vec![(Table::Events, EVENTS_TABLE), (Table::Labels, LABELS_TABLE)];
    // Lakes written before the labeled-events index have none until their next ingest.
    if lake.table_dir(Table::LabeledEvents).is_dir() {
        tables.push((Table::LabeledEvents, LABELED_EVENTS_TABLE));
    }
    for (table, name) in tables {
        if string_views {
            lake.register_string_views(&ctx, table, name)?;
        } else {
            lake.register(&ctx, table, name)?;
        }
    }
    crate::review::table::register(lake, &ctx)?;
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
    // The canary is a small share of the route: evaluating the filter while decoding lets the
    // reader decode `ts` only for the canary's rows.
    let (mut state, plan) = df.into_parts();
    state
        .config_mut()
        .options_mut()
        .execution
        .parquet
        .pushdown_filters = true;
    let batches = DataFrame::new(state, plan).collect().await?;
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
    // The label counts come from a small separate query, run while the events stream.
    let labels = async {
        match q.labels {
            true => count_labels(ctx, q, filter.clone()).await.map(Some),
            false => Ok(None),
        }
    };
    let ((segments, shas), labels) = futures::try_join!(scan_arms(ctx, q, filter.clone()), labels)?;
    let mut segments = segments.into_map();
    for (key, counted) in labels.map(Segmenter::into_map).unwrap_or_default() {
        let seg = segments.entry(key).or_default();
        for arm in [Arm::Baseline, Arm::Canary] {
            let (to, from) = (seg.arm_mut(arm), counted.arm(arm));
            to.labeled += from.labeled;
            to.bad += from.bad;
        }
    }
    Ok(Samples {
        segment_by: q.segment_by.clone(),
        segments,
        shas: shas.into_map(),
        window: window.or(match (q.since_us, q.until_us) {
            (None, None) => None,
            (s, u) => Some((s.unwrap_or(i64::MIN), u.unwrap_or(i64::MAX))),
        }),
    })
}

/// Streams the two arms' events through per-segment counts and metric values.
async fn scan_arms(
    ctx: &SessionContext,
    q: &CanaryQuery,
    filter: Expr,
) -> Result<(Segmenter, ShaSet)> {
    let mut columns: Vec<Expr> = q.segment_by.iter().map(|c| col(c.as_str())).collect();
    // Read by position; aliased because a segment column may be one of these (prompt_sha).
    columns.extend(
        ["prompt_version", "prompt_sha", "status"].map(|c| col(c).alias(format!("arm_{c}"))),
    );
    columns.extend(
        q.value_columns
            .iter()
            .map(|c| col(c.name()).alias(format!("value_{}", c.name()))),
    );
    let df = ctx
        .table(EVENTS_TABLE)
        .await?
        .filter(filter)?
        .select(columns)?;
    let mut stream = df.execute_stream().await?;

    let nseg = q.segment_by.len();
    let mut segments = Segmenter::new(nseg);
    let mut shas = ShaSet::default();
    let canary = Scalar::new(StringViewArray::from(vec![q.canary.as_str()]));
    let flagged = Scalar::new(StringViewArray::from(vec![Status::Flagged.as_str()]));
    let error = Scalar::new(StringViewArray::from(vec![Status::Error.as_str()]));
    let mut ids = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let rows = batch.num_rows();
        let strings = |i: usize| views(batch.column(i));
        let segs: Vec<ArrayRef> = (0..nseg).map(strings).collect::<Result<_>>()?;
        let segs: Vec<&StringViewArray> = segs.iter().map(|a| a.as_string_view()).collect();
        let is_canary = eq(&strings(nseg)?, &canary)?;
        let sha = strings(nseg + 1)?;
        let status = strings(nseg + 2)?;
        let is_flagged = eq(&status, &flagged)?;
        let is_error = eq(&status, &error)?;
        segments.assign(&segs, rows, &mut ids);
        shas.add(&is_canary, sha.as_string_view());
        for (row, seg) in ids.iter().enumerate() {
            let s = segments.arm_mut(*seg, arm_of(&is_canary, row));
            s.n += 1;
            s.flagged += is_flagged.value(row) as u64;
            s.errors += is_error.value(row) as u64;
        }
        for (i, c) in q.value_columns.iter().enumerate() {
            let values = cast(batch.column(nseg + 3 + i), &DataType::Float64)?;
            let values = values.as_primitive::<Float64Type>();
            for (row, seg) in ids.iter().enumerate() {
                if values.is_valid(row) {
                    segments
                        .arm_mut(*seg, arm_of(&is_canary, row))
                        .values_mut(*c)
                        .push(values.value(row));
                }
            }
        }
    }
    Ok((segments, shas))
}

/// Each segment's labeled and bad counts (only those are set): the latest label (by label ts,
/// then label_id, as in `llm_latest_labels`) of every event in `filter`. The events come from
/// the labeled-events index (a small table) when the lake has one, else from the events.
async fn count_labels(ctx: &SessionContext, q: &CanaryQuery, filter: Expr) -> Result<Segmenter> {
    let mut segments = Segmenter::new(q.segment_by.len());
    let source = if ctx.table_exist(LABELED_EVENTS_TABLE)? {
        LABELED_EVENTS_TABLE
    } else {
        EVENTS_TABLE
    };
    let mut columns: Vec<Expr> = q.segment_by.iter().map(|c| col(c.as_str())).collect();
    columns.extend(["prompt_version", "event_id"].map(col));
    let events = ctx.table(source).await?.filter(filter)?.select(columns)?;
    let labels = ctx.table(LABELS_TABLE).await?.select(vec![
        col("event_id").alias("labeled_id"),
        col("label"),
        col("ts").alias("label_ts"),
        col("label_id"),
    ])?;
    // The smaller side builds the hash table: the index's rows in the window, or the labels
    // when the events themselves are scanned.
    let joined = if source == LABELED_EVENTS_TABLE {
        events.join(
            labels,
            JoinType::Inner,
            &["event_id"],
            &["labeled_id"],
            None,
        )?
    } else {
        labels.join(
            events,
            JoinType::Inner,
            &["labeled_id"],
            &["event_id"],
            None,
        )?
    };
    let mut stream = joined.execute_stream().await?;
    let nseg = q.segment_by.len();
    // event_id -> (segment, arm, (label ts, label_id), bad) of its latest label so far.
    type Latest = (u32, Arm, (i64, String), bool);
    let mut latest: HashMap<String, Latest, foldhash::fast::RandomState> = HashMap::default();
    let mut ids = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let column = |name: &str| views(batch.column(batch.schema().index_of(name)?));
        let segs: Vec<ArrayRef> = q
            .segment_by
            .iter()
            .map(|c| column(c))
            .collect::<Result<_>>()?;
        let segs: Vec<&StringViewArray> = segs.iter().map(|a| a.as_string_view()).collect();
        let version = column("prompt_version")?;
        let version = version.as_string_view();
        let event = column("labeled_id")?;
        let event = event.as_string_view();
        let label = column("label")?;
        let label = label.as_string_view();
        let label_id = column("label_id")?;
        let label_id = label_id.as_string_view();
        let ts = cast(
            batch.column(batch.schema().index_of("label_ts")?),
            &DataType::Int64,
        )?;
        let ts = ts.as_primitive::<Int64Type>();
        debug_assert_eq!(segs.len(), nseg);
        segments.assign(&segs, batch.num_rows(), &mut ids);
        for (row, seg) in ids.iter().enumerate() {
            let arm = if version.value(row) == q.canary.as_str() {
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
        let s = segments.arm_mut(seg, arm);
        s.labeled += 1;
        s.bad += bad as u64;
    }
    Ok(segments)
}

/// A string column as `Utf8View` (free when it already is one, as in [`judge_session`]).
fn views(a: &ArrayRef) -> Result<ArrayRef> {
    Ok(cast(a, &DataType::Utf8View)?)
}

fn arm_of(is_canary: &BooleanArray, row: usize) -> Arm {
    if is_canary.value(row) {
        Arm::Canary
    } else {
        Arm::Baseline
    }
}

/// Distinct `prompt_sha` values per arm (None = no sha).
#[derive(Default)]
struct ShaSet {
    seen: [Vec<Option<String>>; 2],
}

impl ShaSet {
    fn add(&mut self, is_canary: &BooleanArray, sha: &StringViewArray) {
        // Rows of one sha share a view (the same dictionary entry), so a change of view is rare.
        let mut last: [Option<(bool, u128)>; 2] = [None, None];
        let views = sha.views();
        for row in 0..sha.len() {
            let arm = arm_of(is_canary, row) as usize;
            let key = (sha.is_valid(row), views[row]);
            if last[arm] == Some(key) {
                continue;
            }
            last[arm] = Some(key);
            let v = key.0.then(|| sha.value(row));
            if !self.seen[arm].iter().any(|s| s.as_deref() == v) {
                self.seen[arm].push(v.map(str::to_string));
            }
        }
    }

    fn into_map(self) -> BTreeMap<Arm, BTreeSet<Option<String>>> {
        let [baseline, canary] = self.seen;
        BTreeMap::from([
            (Arm::Baseline, baseline.into_iter().collect()),
            (Arm::Canary, canary.into_iter().collect()),
        ])
    }
}

/// Gives each distinct combination of segment values a dense number, column by column: a
/// row's value is numbered per column (through its 128-bit string view, so a row costs one
/// small hash and no string work), then numbers are combined pairwise. No key string is built
/// per row. Nulls count as the empty string.
struct Segmenter {
    /// Per segment column: value -> number.
    values: Vec<HashMap<String, u32, foldhash::fast::RandomState>>,
    /// Per segment column after the first: (number so far, value number) -> number so far.
    combos: Vec<HashMap<u64, u32, foldhash::fast::RandomState>>,
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

    fn arm_mut(&mut self, segment: u32, arm: Arm) -> &mut ArmSample {
        self.samples[segment as usize].arm_mut(arm)
    }

    /// Sets `out[row]` to the segment number of each of `rows` rows.
    fn assign(&mut self, segs: &[&StringViewArray], rows: usize, out: &mut Vec<u32>) {
        out.clear();
        if segs.is_empty() {
            // No segment columns: one segment.
            if rows > 0 && self.samples.is_empty() {
                self.samples.push(SegmentSample::default());
                self.keys.push(Vec::new());
            }
            out.resize(rows, 0);
            return;
        }
        let mut level = Vec::with_capacity(rows);
        // Within one array equal views are equal strings: a short string (<= 12 bytes) is all
        // in its view, a longer one is the same bytes of the same buffer.
        let mut by_view: HashMap<u128, u32, foldhash::fast::RandomState> = HashMap::default();
        for (k, s) in segs.iter().enumerate() {
            let map = &mut self.values[k];
            level.clear();
            by_view.clear();
            let views = s.views();
            for row in 0..rows {
                let view = if s.is_valid(row) { views[row] } else { 0 };
                let id = match by_view.get(&view) {
                    Some(id) => *id,
                    None => {
                        let v = if view == 0 { "" } else { s.value(row) };
                        let next = map.len() as u32;
                        let id = match map.get(v) {
                            Some(id) => *id,
                            None => *map.entry(v.to_string()).or_insert(next),
                        };
                        by_view.insert(view, id);
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
                    *o = *combos
                        .entry(((*o as u64) << 32) | *v as u64)
                        .or_insert(next);
                }
            }
        }
        // A combination seen for the first time gets its slot and key.
        for (row, combo) in out.iter().enumerate() {
            if *combo as usize == self.samples.len() {
                self.samples.push(SegmentSample::default());
                self.keys.push(
                    segs.iter()
                        .map(|s| {
                            if s.is_valid(row) {
                                s.value(row).to_string()
                            } else {
                                String::new()
                            }
                        })
                        .collect(),
                );
            }
        }
    }

    fn into_map(self) -> BTreeMap<Vec<String>, SegmentSample> {
        self.keys.into_iter().zip(self.samples).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[Option<&str>]) -> StringViewArray {
        StringViewArray::from(v.to_vec())
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
