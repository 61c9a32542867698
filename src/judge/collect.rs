//! The judge's data access: the canary's time span, then one streaming pass over both arms'
//! events of one route into per-segment [`Samples`], with label counts from the labeled-events
//! index alongside. Names from users are bound as literals through the DataFrame API, never
//! spliced into SQL. The statistics never see the lake: they get plain [`Samples`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Scalar, StringViewArray};
use arrow::compute::cast;
use arrow::compute::kernels::cmp::eq;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::functions_aggregate::expr_fn::{max, min};
use datafusion::logical_expr::JoinType;
use datafusion::prelude::{DataFrame, Expr, SessionContext, col, lit};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;

use super::policy::ValueColumn;
use super::samples::{Arm, ArmSample, EventObs, Samples, SegmentSample};
use crate::error::Result;
use crate::event::{
    EVENTS_TABLE, LABELED_EVENTS_TABLE, LABELS_TABLE, Label, Status, day_of, day_string,
};

/// What the judge compares: two versions of one route.
#[derive(Debug, Clone)]
pub struct CanaryQuery {
    pub route: String,
    pub env: Option<String>,
    pub baseline: String,
    pub canary: String,
    /// Bounds on the window (inclusive since, exclusive until); within them the window is the
    /// span of the canary's events, so both arms always cover the same time.
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
    pub segment_by: Vec<String>,
    pub value_columns: Vec<ValueColumn>,
    /// Read latest labels too (for bad-label rules).
    pub labels: bool,
    /// Attributes whose values per arm are collected (pinned knobs).
    pub pins: Vec<String>,
    /// Units left out of the distinct-unit counts of the sample-ratio check (a rollout's
    /// cohort, which is on the canary whatever its buckets).
    pub srm_exclude: Vec<String>,
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

/// The (first, last) timestamp of the canary's events within the query's bounds, if any.
pub async fn canary_span(ctx: &SessionContext, q: &CanaryQuery) -> Result<Option<(i64, i64)>> {
    let mut filter = canary_filter(q, vec![lit(q.canary.as_str())]);
    if let Some(s) = q.since_us {
        filter = filter
            .and(col("ts").gt_eq(ts_lit(s)))
            .and(col("date").gt_eq(lit(day_string(day_of(s)))));
    }
    if let Some(u) = q.until_us {
        filter = filter
            .and(col("ts").lt(ts_lit(u)))
            .and(col("date").lt_eq(lit(day_string(day_of(u)))));
    }
    let df = ctx.table(EVENTS_TABLE).await?.filter(filter)?.aggregate(
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
    // Both arms are compared over the span of the canary's events (within --since/--until):
    // a baseline window that starts before the canary existed compares different times.
    let window = canary_span(ctx, q).await?;
    let mut filter = canary_filter(q, vec![lit(q.baseline.as_str()), lit(q.canary.as_str())]);
    let bounds = match window {
        Some((first, last)) => Some((first, last)),
        // No canary event in the bounds: the baseline in the bounds, so the verdict can say so.
        None => match (q.since_us, q.until_us) {
            (None, None) => None,
            (s, u) => Some((s.unwrap_or(i64::MIN), u.map_or(i64::MAX, |u| u - 1))),
        },
    };
    if let Some((first, last)) = bounds {
        if first > i64::MIN {
            filter = filter
                .and(col("ts").gt_eq(ts_lit(first)))
                // The same bound on the `date` partition lets DataFusion skip whole days.
                .and(col("date").gt_eq(lit(day_string(day_of(first)))));
        }
        if last < i64::MAX {
            filter = filter
                .and(col("ts").lt_eq(ts_lit(last)))
                .and(col("date").lt_eq(lit(day_string(day_of(last)))));
        }
    }
    // The label counts come from a small separate query, run while the events stream.
    let labels = async {
        match q.labels {
            true => count_labels(ctx, q, filter.clone()).await.map(Some),
            false => Ok(None),
        }
    };
    let (scan, labels) = futures::try_join!(scan_arms(ctx, q, filter.clone()), labels)?;
    let mut segments = scan.segments;
    for (key, mut counted) in labels.map(Segmenter::into_map).unwrap_or_default() {
        let seg = segments.entry(key).or_default();
        for arm in [Arm::Baseline, Arm::Canary] {
            seg.arm_mut(arm).merge(std::mem::take(counted.arm_mut(arm)));
        }
    }
    crate::judge::samples::finish_units_all(
        segments
            .values_mut()
            .flat_map(|s| [&mut s.baseline, &mut s.canary])
            .collect(),
    );
    let distinct_units = scan.any_unit.then(|| {
        let excluded: std::collections::HashSet<u64> =
            q.srm_exclude.iter().map(|u| unit_key_of(u)).collect();
        // A unit may appear in several segments (it used two models): count it once.
        let count = |arm: Arm| {
            let mut keys: Vec<u64> = segments
                .values()
                .flat_map(|seg| seg.arm(arm).unit_keys().iter().copied())
                .filter(|k| !excluded.contains(k))
                .collect();
            keys.sort_unstable();
            keys.dedup();
            keys.len() as u64
        };
        (count(Arm::Baseline), count(Arm::Canary))
    });
    Ok(Samples {
        segment_by: q.segment_by.clone(),
        segments,
        shas: scan.shas.into_map(),
        window: bounds,
        distinct_units,
        pins: scan.pins,
    })
}

/// What one pass over (a partition of) the arms' events yields.
struct Scan {
    segments: BTreeMap<Vec<String>, SegmentSample>,
    shas: ShaSet,
    /// Whether any event carried a unit id.
    any_unit: bool,
    pins: BTreeMap<String, BTreeMap<Arm, BTreeSet<String>>>,
}

impl Scan {
    fn empty(pins: &[String]) -> Self {
        Scan {
            segments: BTreeMap::new(),
            shas: ShaSet::default(),
            any_unit: false,
            pins: PinCollector::new(pins).finish(),
        }
    }

    /// Adds another partition's results.
    fn merge(&mut self, other: Scan) {
        for (key, seg) in other.segments {
            let into = self.segments.entry(key).or_default();
            into.baseline.merge(seg.baseline);
            into.canary.merge(seg.canary);
        }
        for (arm, seen) in other.shas.seen.into_iter().enumerate() {
            for sha in seen {
                if !self.shas.seen[arm].contains(&sha) {
                    self.shas.seen[arm].push(sha);
                }
            }
        }
        self.any_unit |= other.any_unit;
        for (pin, arms) in other.pins {
            let into = self.pins.entry(pin).or_default();
            for (arm, values) in arms {
                into.entry(arm).or_default().extend(values);
            }
        }
    }
}

/// The 64-bit key of a unit id (XXH3; collisions among a canary's units are negligible). A
/// string of at most 12 bytes is stored whole in its 128-bit view (Arrow's inline form), so its
/// key hashes the view without touching string data; a longer one hashes its bytes. Both forms
/// are fixed per string, so one unit always gets one key.
fn unit_key(units: Option<&StringViewArray>, row: usize) -> Option<u64> {
    let u = units?;
    if !u.is_valid(row) {
        return None;
    }
    let view = u.views()[row];
    Some(if (view as u32) <= 12 {
        xxhash_rust::xxh3::xxh3_64(&view.to_le_bytes())
    } else {
        xxhash_rust::xxh3::xxh3_64(u.value(row).as_bytes())
    })
}

/// [`unit_key`] of a unit id given as text (the same key as in a column).
pub fn unit_key_of(unit: &str) -> u64 {
    let b = unit.as_bytes();
    if b.len() <= 12 {
        // Arrow's inline view: the length (u32, little-endian), then the bytes, zero-padded.
        let mut view = [0u8; 16];
        view[..4].copy_from_slice(&(b.len() as u32).to_le_bytes());
        view[4..4 + b.len()].copy_from_slice(b);
        xxhash_rust::xxh3::xxh3_64(&view)
    } else {
        xxhash_rust::xxh3::xxh3_64(b)
    }
}

/// Streams the two arms' events through per-segment counts, metric values and unit totals. Each
/// of DataFusion's output partitions is consumed by its own task (the per-row work, numbering
/// segments and keying units, runs on every core instead of behind one merged stream), and the
/// partial results are merged at the end.
async fn scan_arms(ctx: &SessionContext, q: &CanaryQuery, filter: Expr) -> Result<Scan> {
    let mut columns: Vec<Expr> = q.segment_by.iter().map(|c| col(c.as_str())).collect();
    // Read by position; aliased because a segment column may be one of these (prompt_sha).
    columns.extend(
        [
            "prompt_version",
            "prompt_sha",
            "status",
            "unit_id",
            "response_model",
        ]
        .map(|c| col(c).alias(format!("arm_{c}"))),
    );
    columns.extend(
        q.value_columns
            .iter()
            .map(|c| col(c.name()).alias(format!("value_{}", c.name()))),
    );
    if !q.pins.is_empty() {
        columns.push(col("attributes").alias("arm_attributes"));
    }
    let df = ctx
        .table(EVENTS_TABLE)
        .await?
        .filter(filter)?
        .select(columns)?;
    let task_ctx = df.task_ctx();
    let plan = df.create_physical_plan().await?;
    let streams = datafusion::physical_plan::execute_stream_partitioned(plan, task_ctx.into())?;
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|stream| tokio::spawn(consume(stream, q.clone())))
        .collect();
    let mut scan: Option<Scan> = None;
    for task in tasks {
        let part = task
            .await
            .map_err(|e| crate::error::Error::runtime(format!("the judge's scan failed: {e}")))??;
        match &mut scan {
            None => scan = Some(part),
            Some(s) => s.merge(part),
        }
    }
    Ok(scan.unwrap_or_else(|| Scan::empty(&q.pins)))
}

/// One partition's events into a [`Scan`].
async fn consume(mut stream: SendableRecordBatchStream, q: CanaryQuery) -> Result<Scan> {
    let nseg = q.segment_by.len();
    let nval = q.value_columns.len();
    let mut segments = Segmenter::new(nseg);
    let mut shas = ShaSet::default();
    let mut any_unit = false;
    let mut pins = PinCollector::new(&q.pins);
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
        let units = strings(nseg + 3)?;
        let units = units.as_string_view();
        let units = (units.null_count() < rows).then_some(units);
        any_unit |= units.is_some();
        let is_flagged = eq(&status, &flagged)?;
        let is_error = eq(&status, &error)?;
        let served_by = strings(nseg + 4)?;
        let served_by = served_by.as_string_view();
        let values: Vec<ArrayRef> = (0..nval)
            .map(|i| cast(batch.column(nseg + 5 + i), &DataType::Float64))
            .collect::<std::result::Result<_, _>>()?;
        let values: Vec<&arrow::array::Float64Array> = values
            .iter()
            .map(|a| a.as_primitive::<Float64Type>())
            .collect();
        segments.assign(&segs, rows, &mut ids);
        shas.add(&is_canary, sha.as_string_view());
        if !q.pins.is_empty() {
            let attrs = strings(nseg + 5 + nval)?;
            pins.add(&is_canary, attrs.as_string_view());
        }
        let mut row_values = [(ValueColumn::DurationMs, 0.0); 3];
        for (row, seg) in ids.iter().enumerate() {
            let mut k = 0;
            for (i, c) in q.value_columns.iter().enumerate() {
                if values[i].is_valid(row) {
                    row_values[k] = (*c, values[i].value(row));
                    k += 1;
                }
            }
            let obs = EventObs {
                flagged: is_flagged.value(row),
                error: is_error.value(row),
                label_bad: None,
            };
            segments.arm_mut(*seg, arm_of(&is_canary, row)).push(
                obs,
                &row_values[..k],
                unit_key(units, row),
            );
        }
        if served_by.null_count() < rows {
            count_response_models(&mut segments, &ids, &is_canary, served_by);
        }
    }
    Ok(Scan {
        segments: segments.into_map(),
        shas,
        any_unit,
        pins: pins.finish(),
    })
}

/// Counts each segment's and arm's events per response model. Runs of one model (the common
/// case: a snapshot serves for days) cost a comparison per event, not a map lookup.
fn count_response_models(
    segments: &mut Segmenter,
    ids: &[u32],
    is_canary: &BooleanArray,
    served_by: &StringViewArray,
) {
    let mut run: Option<(u32, Arm, &str, u64)> = None;
    let flush = |segments: &mut Segmenter, run: Option<(u32, Arm, &str, u64)>| {
        if let Some((seg, arm, model, n)) = run {
            *segments
                .arm_mut(seg, arm)
                .response_models
                .entry(model.to_string())
                .or_default() += n;
        }
    };
    for (row, seg) in ids.iter().enumerate() {
        if !served_by.is_valid(row) {
            continue;
        }
        let (arm, model) = (arm_of(is_canary, row), served_by.value(row));
        match &mut run {
            Some((s, a, m, n)) if *s == *seg && *a == arm && *m == model => *n += 1,
            _ => flush(segments, run.replace((*seg, arm, model, 1))),
        }
    }
    flush(segments, run);
}

/// Distinct values of pinned attributes per arm, parsing each distinct `attributes` text once.
struct PinCollector<'a> {
    pins: &'a [String],
    /// Hash of an `attributes` text -> the pins' values in it.
    parsed: HashMap<u64, Vec<String>, foldhash::fast::RandomState>,
    seen: [Vec<BTreeSet<String>>; 2],
}

impl<'a> PinCollector<'a> {
    fn new(pins: &'a [String]) -> Self {
        PinCollector {
            pins,
            parsed: HashMap::default(),
            seen: [
                vec![BTreeSet::new(); pins.len()],
                vec![BTreeSet::new(); pins.len()],
            ],
        }
    }

    fn add(&mut self, is_canary: &BooleanArray, attrs: &StringViewArray) {
        for row in 0..attrs.len() {
            let text = if attrs.is_valid(row) {
                attrs.value(row)
            } else {
                ""
            };
            let key = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
            let values = self.parsed.entry(key).or_insert_with(|| {
                let object: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(text).unwrap_or_default();
                self.pins
                    .iter()
                    .map(|p| {
                        object
                            .get(p)
                            .map_or("(absent)".to_string(), |v| v.to_string())
                    })
                    .collect()
            });
            let arm = arm_of(is_canary, row) as usize;
            for (i, v) in values.iter().enumerate() {
                if !self.seen[arm][i].contains(v) {
                    self.seen[arm][i].insert(v.clone());
                }
            }
        }
    }

    fn finish(self) -> BTreeMap<String, BTreeMap<Arm, BTreeSet<String>>> {
        let [baseline, canary] = self.seen;
        self.pins
            .iter()
            .zip(baseline.into_iter().zip(canary))
            .map(|(p, (b, c))| {
                (
                    p.clone(),
                    BTreeMap::from([(Arm::Baseline, b), (Arm::Canary, c)]),
                )
            })
            .collect()
    }
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
    columns.extend(["prompt_version", "event_id", "unit_id"].map(col));
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
    // event_id -> (segment, arm, (label ts, label_id), bad, unit key) of its latest label.
    type Latest = (u32, Arm, (i64, String), bool, Option<u64>);
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
        let units = column("unit_id")?;
        let units = Some(units.as_string_view());
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
            let unit = unit_key(units, row);
            match latest.get_mut(event.value(row)) {
                Some(l) => {
                    if order > (l.2.0, l.2.1.as_str()) {
                        *l = (*seg, arm, (order.0, order.1.to_string()), bad, unit);
                    }
                }
                None => {
                    latest.insert(
                        event.value(row).to_string(),
                        (*seg, arm, (order.0, order.1.to_string()), bad, unit),
                    );
                }
            }
        }
    }
    for (seg, arm, _, bad, unit) in latest.into_values() {
        segments.arm_mut(seg, arm).add_labels(1, bad as u64, unit);
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
    fn a_unit_has_one_key_as_text_and_in_a_column() {
        let ids = [
            "",
            "u",
            "user-0000042",
            "user-00000042",
            "ünïcode-ünit-id-long",
        ];
        let col = strings(&ids.map(Some));
        for (row, id) in ids.iter().enumerate() {
            assert_eq!(unit_key(Some(&col), row), Some(unit_key_of(id)), "{id:?}");
        }
        assert_ne!(unit_key_of("user-0000042"), unit_key_of("user-0000043"));
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
