//! The 2am timeline: which prompt version was live when a rate rose, and since when.
//!
//! Per time bucket and prompt version of one route (`queries/timeline.sql`): the events, the
//! version's share of the bucket's traffic, the flagged and error rates and the p95 duration,
//! interleaved with the registry's changes of the route in the window (from its audit log:
//! defaults set, overrides, kills, rollout starts and steps with their verdicts). As a table, as
//! JSON, or as one self-contained HTML page with a chart per metric (SVG drawn here: no script,
//! no network), one line per version and the registry's changes marked on the time axis.
//! `--at TIME` answers for one instant: what each env and tier was served in the bucket holding
//! it, the registry's last change per env at or before it, and the commands that go back to it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::registry::{AuditEntry, format_us};

/// The query, with `$route`, `$env`, `$since`, `$until`, `$since_us`, `$bucket_us`.
pub const TIMELINE_SQL: &str = include_str!("../../queries/timeline.sql");

/// The most buckets a timeline draws: a wider window needs a wider `--bucket`.
pub const MAX_BUCKETS: i64 = 5_000;

/// What to draw.
#[derive(Debug, Clone)]
pub struct TimelineSpec {
    pub route: String,
    pub env: Option<String>,
    /// Window, microseconds since the epoch: `[since, until)`.
    pub since_us: i64,
    pub until_us: i64,
    /// Bucket width, microseconds.
    pub bucket_us: i64,
}

impl TimelineSpec {
    pub fn check(&self) -> Result<()> {
        if self.until_us <= self.since_us {
            return Err(Error::usage(format!(
                "the window is empty: --since {} is not before --until {}",
                format_us(self.since_us),
                format_us(self.until_us)
            )));
        }
        if self.bucket_us <= 0 {
            return Err(Error::usage("--bucket must be longer than 0"));
        }
        let span = self.until_us - self.since_us;
        let buckets = span / self.bucket_us + i64::from(span % self.bucket_us != 0);
        if buckets > MAX_BUCKETS {
            return Err(Error::usage(format!(
                "{buckets} buckets is more than a timeline draws ({MAX_BUCKETS})"
            ))
            .with_hint("choose a wider --bucket or a shorter window (--since, --until)"));
        }
        Ok(())
    }
}

/// One version's traffic in one bucket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionStats {
    pub version: String,
    pub events: u64,
    /// Of the bucket's events (every version).
    pub share: f64,
    pub flagged_rate: f64,
    pub error_rate: f64,
    pub p95_duration_ms: Option<f64>,
}

/// One time bucket that had events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    pub start: String,
    #[serde(skip)]
    pub start_us: i64,
    pub versions: Vec<VersionStats>,
}

/// A registry change of the route, placed in time.
#[derive(Debug, Clone, Serialize)]
pub struct Marker {
    #[serde(skip)]
    pub at_us: i64,
    #[serde(flatten)]
    pub entry: AuditEntry,
}

impl Marker {
    /// One line: what changed, by whom, why.
    pub fn describe(&self) -> String {
        let c = &self.entry.change;
        let mut s = c.action.clone();
        if let Some(e) = &c.env {
            let _ = write!(s, " env={e}");
        }
        if let Some(t) = &c.tier {
            let _ = write!(s, " tier={t}");
        }
        match (&c.before, &c.after) {
            (Some(b), Some(a)) => {
                let _ = write!(s, " {b} -> {a}");
            }
            (None, Some(a)) => {
                let _ = write!(s, " -> {a}");
            }
            (Some(b), None) => {
                let _ = write!(s, " {b} ->");
            }
            (None, None) => {}
        }
        if let Some(r) = &c.rollout {
            let _ = write!(s, " rollout {r}");
        }
        if let Some(v) = &c.verdict {
            let _ = write!(s, " verdict {} ({})", v.verdict, v.reason);
        }
        let _ = write!(s, " (by {}", self.entry.actor);
        if let Some(w) = &self.entry.why {
            let _ = write!(s, ": {w}");
        }
        s.push(')');
        for n in &c.notes {
            let _ = write!(s, "; {n}");
        }
        s
    }
}

/// The timeline of one route over a window.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub route: String,
    pub env: Option<String>,
    pub since: String,
    pub until: String,
    #[serde(skip)]
    pub since_us: i64,
    #[serde(skip)]
    pub until_us: i64,
    pub bucket_seconds: f64,
    pub buckets: Vec<Bucket>,
    pub changes: Vec<Marker>,
}

/// Reads the buckets from the lake and the changes from `history` (the registry's audit log).
pub async fn build(
    ctx: &SessionContext,
    spec: &TimelineSpec,
    history: Vec<AuditEntry>,
) -> Result<Timeline> {
    spec.check()?;
    let mut params = crate::query::window_params(
        &spec.route,
        spec.env.as_deref(),
        Some(spec.since_us),
        Some(spec.until_us),
    );
    params.push(("since_us".into(), ScalarValue::Int64(Some(spec.since_us))));
    params.push(("bucket_us".into(), ScalarValue::Int64(Some(spec.bucket_us))));
    let batches = crate::query::plan(ctx, TIMELINE_SQL, params)
        .await?
        .collect()
        .await?;
    let mut by_bucket: BTreeMap<i64, Vec<VersionStats>> = BTreeMap::new();
    for b in &batches {
        let col = |name: &str, to: &DataType| -> Result<arrow::array::ArrayRef> {
            let c = b.column_by_name(name).ok_or_else(|| {
                Error::runtime(format!("the timeline query has no column {name}"))
            })?;
            Ok(cast(c, to)?)
        };
        let bucket = col("bucket", &DataType::Int64)?;
        let version = col("prompt_version", &DataType::Utf8)?;
        let n = col("n", &DataType::Int64)?;
        let flagged = col("flagged_rate", &DataType::Float64)?;
        let error = col("error_rate", &DataType::Float64)?;
        let p95 = col("p95_duration_ms", &DataType::Float64)?;
        let (bucket, version, n) = (
            bucket.as_primitive::<Int64Type>(),
            version.as_string::<i32>(),
            n.as_primitive::<Int64Type>(),
        );
        let (flagged, error, p95) = (
            flagged.as_primitive::<Float64Type>(),
            error.as_primitive::<Float64Type>(),
            p95.as_primitive::<Float64Type>(),
        );
        for i in 0..b.num_rows() {
            by_bucket
                .entry(bucket.value(i))
                .or_default()
                .push(VersionStats {
                    version: if version.is_null(i) {
                        "(none)".into()
                    } else {
                        version.value(i).to_string()
                    },
                    events: n.value(i) as u64,
                    share: 0.0,
                    flagged_rate: flagged.value(i),
                    error_rate: error.value(i),
                    p95_duration_ms: (!p95.is_null(i)).then(|| p95.value(i)),
                });
        }
    }
    let buckets = by_bucket
        .into_iter()
        .map(|(k, mut versions)| {
            let total: u64 = versions.iter().map(|v| v.events).sum();
            for v in &mut versions {
                v.share = v.events as f64 / total.max(1) as f64;
            }
            let start_us = spec.since_us + k * spec.bucket_us;
            Bucket {
                start: format_us(start_us),
                start_us,
                versions,
            }
        })
        .collect();
    let changes = route_changes(history, spec, spec.since_us, spec.until_us);
    Ok(Timeline {
        route: spec.route.clone(),
        env: spec.env.clone(),
        since: format_us(spec.since_us),
        until: format_us(spec.until_us),
        since_us: spec.since_us,
        until_us: spec.until_us,
        bucket_seconds: spec.bucket_us as f64 / 1e6,
        buckets,
        changes,
    })
}

/// The registry changes of the route that change what it serves (defaults, overrides, kills,
/// rollout starts and steps; for an env, the changes of that env or of every env) made in
/// `[from, to)`, oldest first.
fn route_changes(history: Vec<AuditEntry>, spec: &TimelineSpec, from: i64, to: i64) -> Vec<Marker> {
    history
        .into_iter()
        // What changes which version is served; registering a version (`add`) does not.
        .filter(|e| e.change.route == spec.route && e.change.action != "add")
        .filter(|e| match (&spec.env, &e.change.env) {
            (Some(want), Some(env)) => env == want || env == crate::registry::state::ALL_ENVS,
            _ => true,
        })
        .filter_map(|e| {
            let at_us = crate::event::parse_time_arg(&e.at).ok()?;
            (from <= at_us && at_us < to).then_some(Marker { at_us, entry: e })
        })
        .collect()
}

/// Writes the timeline as a table: buckets and changes in time order.
pub fn write_table(t: &Timeline, out: &mut dyn Write) -> Result<()> {
    let io = |e| Error::io("cannot write", std::path::Path::new("stdout"), e);
    writeln!(
        out,
        "route {}{}, {} to {}, buckets of {}",
        t.route,
        t.env
            .as_ref()
            .map(|e| format!(" env {e}"))
            .unwrap_or_default(),
        t.since,
        t.until,
        human_seconds(t.bucket_seconds)
    )
    .map_err(io)?;
    writeln!(
        out,
        "{:<21} {:<16} {:>8} {:>7} {:>8} {:>7} {:>10}",
        "bucket", "version", "events", "share", "flagged", "error", "p95 ms"
    )
    .map_err(io)?;
    let mut changes = t.changes.iter().peekable();
    for b in &t.buckets {
        while let Some(m) = changes.next_if(|m| m.at_us < b.start_us) {
            writeln!(out, "{:<21} >> {}", short_time(m.at_us), m.describe()).map_err(io)?;
        }
        let start = short_time(b.start_us);
        for (i, v) in b.versions.iter().enumerate() {
            writeln!(
                out,
                "{:<21} {:<16} {:>8} {:>6.1}% {:>7.2}% {:>6.2}% {:>10}",
                if i == 0 { start.as_str() } else { "" },
                v.version,
                v.events,
                100.0 * v.share,
                100.0 * v.flagged_rate,
                100.0 * v.error_rate,
                v.p95_duration_ms.map_or("-".into(), |p| format!("{p:.0}"))
            )
            .map_err(io)?;
        }
    }
    for m in changes {
        writeln!(out, "{:<21} >> {}", short_time(m.at_us), m.describe()).map_err(io)?;
    }
    if t.buckets.is_empty() {
        writeln!(out, "no events of route {} in this window", t.route).map_err(io)?;
    }
    Ok(())
}

/// `2026-11-20 10:05:30Z`: a time for people (seconds, no fraction).
fn short_time(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| format_us(us))
}

/// A time axis label: `11-20 10:05` at the ends, `10:05` between.
fn tick_time(us: i64, with_day: bool) -> String {
    let f = if with_day { "%m-%d %H:%M" } else { "%H:%M" };
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.format(f).to_string())
        .unwrap_or_default()
}

fn human_seconds(s: f64) -> String {
    let s = s.round() as i64;
    match s {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Line colours of versions, in order of first appearance (colour-blind safe, Okabe-Ito).
const COLOURS: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// One self-contained HTML page: a chart per metric over time, one line per version, the
/// registry's changes as dashed vertical lines (numbered, listed below the charts).
pub fn to_html(t: &Timeline) -> String {
    let (since_us, until_us) = (t.since_us, t.until_us);
    let mut versions: Vec<&str> = Vec::new();
    for b in &t.buckets {
        for v in &b.versions {
            if !versions.contains(&v.version.as_str()) {
                versions.push(&v.version);
            }
        }
    }
    let colour = |v: &str| {
        let i = versions.iter().position(|x| *x == v).unwrap_or(0);
        COLOURS[i % COLOURS.len()]
    };
    type Metric = fn(&VersionStats) -> Option<f64>;
    let metrics: [(&str, Metric, bool); 4] = [
        ("Flagged rate", |v| Some(v.flagged_rate), true),
        ("Error rate", |v| Some(v.error_rate), true),
        ("p95 duration (ms)", |v| v.p95_duration_ms, false),
        ("Share of traffic", |v| Some(v.share), true),
    ];
    let mut charts = String::new();
    for (title, metric, percent) in metrics {
        charts.push_str(&chart(
            t, &versions, &colour, title, metric, percent, since_us, until_us,
        ));
    }
    let mut legend = String::new();
    for v in &versions {
        let _ = write!(
            legend,
            r#"<span class="key"><i style="background:{}"></i>{}</span>"#,
            colour(v),
            esc(v)
        );
    }
    let mut changes = String::new();
    for (i, m) in t.changes.iter().enumerate() {
        let _ = write!(
            changes,
            r#"<li value="{}">{} {}</li>"#,
            i + 1,
            esc(&short_time(m.at_us)),
            esc(&m.describe())
        );
    }
    if changes.is_empty() {
        changes.push_str("<li>no registry change of this route in the window</li>");
    }
    let title = format!(
        "{}{}: {} to {}",
        t.route,
        t.env
            .as_ref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default(),
        short_time(since_us),
        short_time(until_us)
    );
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>Timeline {title_e}</title>
<style>
body {{ margin:0; padding:16px clamp(10px, 3vw, 24px); font:14px/1.45 system-ui, sans-serif; color:#1d2330; background:#fff; }}
h1 {{ font-size:18px; margin:0 0 4px; }} .meta {{ color:#5d6778; }}
.legend {{ margin:10px 0 4px; }} .key {{ margin-right:16px; white-space:nowrap; }}
.key i {{ display:inline-block; width:18px; height:4px; margin-right:6px; vertical-align:middle; }}
.charts {{ display:grid; grid-template-columns:repeat(auto-fit, minmax(min(460px, 100%), 1fr)); gap:12px 24px; }}
svg {{ width:100%; height:auto; }} svg text {{ font:12px system-ui, sans-serif; fill:#3b4352; }}
svg .title {{ font-weight:600; font-size:13px; fill:#1d2330; }}
ol {{ padding-left:22px; }} li {{ margin:2px 0; }}
</style></head><body>
<h1>Timeline of {title_e}</h1>
<div class="meta">{buckets} buckets of {width} (times in UTC); dashed lines are registry changes, numbered as listed below the charts.</div>
<div class="legend">{legend}</div>
<div class="charts">{charts}</div>
<h2 style="font-size:15px">Registry changes</h2>
<ol>{changes}</ol>
</body></html>
"#,
        title_e = esc(&title),
        buckets = t.buckets.len(),
        width = human_seconds(t.bucket_seconds),
    )
}

#[allow(clippy::too_many_arguments)]
fn chart(
    t: &Timeline,
    versions: &[&str],
    colour: &dyn Fn(&str) -> &'static str,
    title: &str,
    metric: fn(&VersionStats) -> Option<f64>,
    percent: bool,
    since_us: i64,
    until_us: i64,
) -> String {
    let (w, h, left, right, top, bottom) = (640.0, 230.0, 58.0, 14.0, 26.0, 36.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let span = (until_us - since_us).max(1) as f64;
    let half = t.bucket_seconds * 1e6 / 2.0;
    let x = |us: f64| left + pw * ((us - since_us as f64) / span).clamp(0.0, 1.0);
    let max = t
        .buckets
        .iter()
        .flat_map(|b| b.versions.iter().filter_map(metric))
        .fold(0.0f64, f64::max);
    let top_value = if max <= 0.0 { 1.0 } else { max * 1.1 };
    let y = |v: f64| top + ph * (1.0 - v / top_value);
    let fmt = |v: f64| {
        if percent {
            format!("{:.1}%", 100.0 * v)
        } else {
            format!("{v:.0}")
        }
    };
    let mut s = format!(
        r#"<svg viewBox="0 0 {w} {h}" role="img" aria-label="{t_e}"><text class="title" x="{left}" y="16">{t_e}</text>"#,
        t_e = esc(title)
    );
    for i in 0..=4 {
        let v = top_value * i as f64 / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e3e7ee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + pw,
            left - 6.0,
            y(v) + 4.0,
            fmt(v),
            yy = y(v)
        );
    }
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let at = since_us + ((until_us - since_us) as f64 * f) as i64;
        let anchor = match i {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{}" y2="{}" stroke="#9aa3b2"/><text x="{x:.1}" y="{}" text-anchor="{anchor}">{}</text>"##,
            top + ph,
            top + ph + 4.0,
            h - 12.0,
            esc(&tick_time(at, i == 0 || i == 4)),
            x = left + pw * f
        );
    }
    for v in versions {
        let mut points = Vec::new();
        for b in &t.buckets {
            if let Some(value) = b.versions.iter().find(|s| s.version == *v).and_then(metric) {
                points.push(format!(
                    "{:.1},{:.1}",
                    x(b.start_us as f64 + half),
                    y(value)
                ));
            }
        }
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            colour(v),
            points.join(" ")
        );
        if points.len() == 1 {
            let (px, py) = points[0].split_once(',').unwrap_or(("0", "0"));
            let _ = write!(
                s,
                r#"<circle cx="{px}" cy="{py}" r="3" fill="{}"/>"#,
                colour(v)
            );
        }
    }
    for (i, m) in t.changes.iter().enumerate() {
        let mx = x(m.at_us as f64);
        let _ = write!(
            s,
            r##"<line x1="{mx:.1}" x2="{mx:.1}" y1="{top}" y2="{}" stroke="#5d6778" stroke-dasharray="4 3"/><text x="{:.1}" y="{}">{}</text>"##,
            top + ph,
            mx + 3.0,
            top + 10.0,
            i + 1
        );
    }
    s.push_str("</svg>");
    s
}

/// What the route was served at one instant, from the events and the registry.
#[derive(Debug, Clone, Serialize)]
pub struct AtInstant {
    pub at: String,
    /// The bucket holding the instant: per env and tier, each version's share of its events.
    pub bucket_start: String,
    pub served: Vec<Served>,
    /// Per env, the registry's last change at or before the instant.
    pub last_changes: Vec<Marker>,
    /// Commands that make each env serve again what it served then.
    pub go_back: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Served {
    pub env: String,
    pub tier: String,
    pub version: String,
    pub events: u64,
    pub share: f64,
}

/// Per env and tier, the events of each version in `[$since, $until)` (`--at`).
pub const SERVED_SQL: &str = include_str!("../../queries/timeline_at.sql");

/// What the route was served at `at_us` (the bucket of width `spec.bucket_us` centred on it) and
/// how to go back to it.
pub async fn at_instant(
    ctx: &SessionContext,
    spec: &TimelineSpec,
    at_us: i64,
    history: Vec<AuditEntry>,
) -> Result<AtInstant> {
    let from = at_us - spec.bucket_us / 2;
    let to = from + spec.bucket_us;
    let params =
        crate::query::window_params(&spec.route, spec.env.as_deref(), Some(from), Some(to));
    let batches = crate::query::plan(ctx, SERVED_SQL, params)
        .await?
        .collect()
        .await?;
    let mut served = Vec::new();
    for b in &batches {
        let s = |i: usize| -> Result<arrow::array::ArrayRef> {
            Ok(cast(b.column(i), &DataType::Utf8)?)
        };
        let (env, tier, version) = (s(0)?, s(1)?, s(2)?);
        let n = cast(b.column(3), &DataType::Int64)?;
        let (env, tier, version, n) = (
            env.as_string::<i32>(),
            tier.as_string::<i32>(),
            version.as_string::<i32>(),
            n.as_primitive::<Int64Type>(),
        );
        for i in 0..b.num_rows() {
            let text = |a: &arrow::array::StringArray| {
                if a.is_null(i) {
                    "(none)".to_string()
                } else {
                    a.value(i).to_string()
                }
            };
            served.push(Served {
                env: text(env),
                tier: text(tier),
                version: text(version),
                events: n.value(i) as u64,
                share: 0.0,
            });
        }
    }
    let mut totals: BTreeMap<(String, String), u64> = BTreeMap::new();
    for s in &served {
        *totals.entry((s.env.clone(), s.tier.clone())).or_default() += s.events;
    }
    for s in &mut served {
        s.share = s.events as f64 / totals[&(s.env.clone(), s.tier.clone())].max(1) as f64;
    }
    // The last change per env at or before the instant (route-wide changes count for every env).
    let before = route_changes(history, spec, i64::MIN, at_us.saturating_add(1));
    let mut last: BTreeMap<String, Marker> = BTreeMap::new();
    for m in before {
        let env = m
            .entry
            .change
            .env
            .clone()
            .unwrap_or_else(|| "(every env)".into());
        last.insert(env, m);
    }
    // Going back: each env to the version most of its events had then.
    let mut by_env: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for s in &served {
        *by_env
            .entry(&s.env)
            .or_default()
            .entry(&s.version)
            .or_default() += s.events;
    }
    let go_back = by_env
        .iter()
        .filter_map(|(env, versions)| {
            let (version, _) = versions.iter().max_by_key(|(_, n)| **n)?;
            Some(format!(
                "promptgate registry set-default --route {} --env {} --version {} --why {}",
                shell_word(&spec.route),
                shell_word(env),
                shell_word(version),
                shell_word(&format!(
                    "back to what served {env} at {}",
                    format_us(at_us)
                ))
            ))
        })
        .collect();
    Ok(AtInstant {
        at: format_us(at_us),
        bucket_start: format_us(from),
        served,
        last_changes: last.into_values().collect(),
        go_back,
    })
}

/// `s` as one word for a POSIX shell.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/=+@".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Writes [`AtInstant`] for people.
pub fn write_at(a: &AtInstant, bucket_seconds: f64, out: &mut dyn Write) -> Result<()> {
    let io = |e| Error::io("cannot write", std::path::Path::new("stdout"), e);
    writeln!(
        out,
        "at {} (events from {} for {}):",
        a.at,
        a.bucket_start,
        human_seconds(bucket_seconds)
    )
    .map_err(io)?;
    if a.served.is_empty() {
        writeln!(out, "  no events of the route around then").map_err(io)?;
    }
    for s in &a.served {
        writeln!(
            out,
            "  env {:<12} tier {:<10} {:<16} {:>6.1}% of {} events",
            s.env,
            s.tier,
            s.version,
            100.0 * s.share,
            s.events
        )
        .map_err(io)?;
    }
    if !a.last_changes.is_empty() {
        writeln!(out, "registry, last change at or before then:").map_err(io)?;
        for m in &a.last_changes {
            writeln!(out, "  {} {}", m.entry.at, m.describe()).map_err(io)?;
        }
    }
    if !a.go_back.is_empty() {
        writeln!(out, "to serve each env what it served then:").map_err(io)?;
        for c in &a.go_back {
            writeln!(out, "  {c}").map_err(io)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(shell_word("v2"), "v2");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("$(rm -rf /)"), "'$(rm -rf /)'");
    }

    #[test]
    fn html_escapes_names() {
        let t = Timeline {
            route: "<script>".into(),
            env: None,
            since: "a".into(),
            until: "b".into(),
            since_us: 0,
            until_us: 600_000_000,
            bucket_seconds: 600.0,
            buckets: vec![Bucket {
                start: "s".into(),
                start_us: 0,
                versions: vec![VersionStats {
                    version: "<img src=x>".into(),
                    events: 3,
                    share: 1.0,
                    flagged_rate: 0.5,
                    error_rate: 0.0,
                    p95_duration_ms: Some(10.0),
                }],
            }],
            changes: Vec::new(),
        };
        let html = to_html(&t);
        assert!(
            !html.contains("<script>") && !html.contains("<img"),
            "{html}"
        );
        assert!(html.contains("&lt;img src=x&gt;"));
    }
}
