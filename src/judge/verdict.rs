//! The decision, in small steps that each record why: per rule and segment a measurement
//! (estimate, interval, one-sided p-value), then Holm's adjustment across the family, then a
//! classification of each rule, then each segment, then the canary.

use std::collections::BTreeMap;

use serde::Serialize;

use super::policy::{Metric, Policy, PolicyRule, RateKind};
use super::samples::{Arm, ArmSample, Samples};
use super::stats;

/// Version of the JSON document [`Verdict`] serializes to.
pub const SCHEMA_VERSION: u32 = 1;

/// What to do with the canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Promote,
    Continue,
    Abort,
    Invalid,
}

impl Decision {
    /// Exit code of `promptgate judge`: 0 promote, 1 abort, 3 continue, 4 invalid
    /// (2 is usage or input error).
    pub fn exit_code(self) -> i32 {
        match self {
            Decision::Promote => 0,
            Decision::Abort => 1,
            Decision::Continue => 3,
            Decision::Invalid => 4,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Promote => "promote",
            Decision::Continue => "continue",
            Decision::Abort => "abort",
            Decision::Invalid => "invalid",
        }
    }
}

/// Outcome of one rule in one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleOutcome {
    /// Within the threshold, or not significantly worse.
    Pass,
    /// Past the threshold and significantly worse: aborts the canary.
    Fail,
    /// A report-only rule that would have failed.
    Warn,
    /// Too few events to bound the metric; the segment must wait.
    Insufficient,
    /// Nothing to compare (e.g. no labels in an arm); does not block promotion.
    NoData,
}

/// One rule judged in one segment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleResult {
    pub rule: String,
    pub metric: String,
    pub test: &'static str,
    pub report_only: bool,
    /// Events the metric is computed over, per arm (labeled events for bad_label_rate).
    pub n_baseline: u64,
    pub n_canary: u64,
    pub baseline: Option<f64>,
    pub canary: Option<f64>,
    /// canary / baseline (may be infinite when the baseline is 0: serialized as null).
    pub ratio: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub threshold: f64,
    /// One-sided p-value of "canary worse than baseline", and after Holm's adjustment.
    pub p_value: Option<f64>,
    pub p_adjusted: Option<f64>,
    /// Significance the adjusted p-value had to reach (1 - confidence, or early_abort_alpha).
    pub alpha: f64,
    pub verdict: RuleOutcome,
    pub reason: String,
    /// Events each arm still needs for this rule to be evaluable (Insufficient only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs_events: Option<u64>,
}

/// One segment's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentVerdict {
    pub key: BTreeMap<String, String>,
    pub n_baseline: u64,
    pub n_canary: u64,
    pub verdict: Decision,
    pub reason: String,
    /// More events needed per arm before this segment can be promoted.
    pub needs_baseline: u64,
    pub needs_canary: u64,
    pub rules: Vec<RuleResult>,
}

/// Sample-ratio mismatch check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SrmCheck {
    pub expected_share: f64,
    pub observed_share: f64,
    pub chi2: f64,
    pub p_value: f64,
    pub mismatch: bool,
}

/// The judge's answer, with everything that led to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub schema_version: u32,
    pub verdict: Decision,
    pub exit_code: i32,
    pub reason: String,
    pub n_baseline: u64,
    pub n_canary: u64,
    pub segment_by: Vec<String>,
    pub confidence: f64,
    pub min_events: u64,
    pub early_abort_alpha: f64,
    /// Number of gating tests Holm's adjustment covered.
    pub tests: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srm: Option<SrmCheck>,
    /// Problems that make the comparison untrustworthy (verdict `invalid`).
    pub problems: Vec<String>,
    pub segments: Vec<SegmentVerdict>,
    /// Assumptions behind the statistics.
    pub assumptions: Vec<&'static str>,
}

const ASSUMPTIONS: [&str; 2] = [
    "events are treated as independent; calls from the same user are correlated, so intervals are optimistic when a few users dominate traffic",
    "canary and baseline are compared within each segment over the same time window; pooled numbers never decide",
];

/// A measurement of one rule in one segment, before the family-wide adjustment.
struct Measurement {
    result: RuleResult,
    /// Whether the rule could be tested (has a p-value).
    tested: bool,
    material: bool,
    /// Rate rules: canary events of the kind below the floor.
    below_floor: bool,
}

/// Judges `samples` under `policy`. `expected_share` is the planned canary share, for the
/// sample-ratio-mismatch check.
pub fn judge(mut samples: Samples, policy: &Policy, expected_share: Option<f64>) -> Verdict {
    let z = stats::z_two_sided(policy.confidence);
    let alpha = policy.alpha();
    let n_baseline = samples.total(Arm::Baseline);
    let n_canary = samples.total(Arm::Canary);

    let mut problems = Vec::new();
    if n_canary == 0 {
        problems.push("the canary has no events in the window".to_string());
    }
    if n_baseline == 0 {
        problems.push("the baseline has no events in the window".to_string());
    }
    for (arm, shas) in &samples.shas {
        let named: Vec<&str> = shas.iter().flatten().map(String::as_str).collect();
        if named.len() > 1 {
            problems.push(format!(
                "the {} version was seen with {} different prompt_sha values ({}): the events do not all come from one prompt",
                if *arm == Arm::Canary { "canary" } else { "baseline" },
                named.len(),
                named.join(", ")
            ));
        }
    }
    let srm = expected_share.and_then(|share| {
        let (chi2, p) = stats::srm_chi_square(n_canary, n_baseline, share)?;
        let total = (n_canary + n_baseline) as f64;
        Some(SrmCheck {
            expected_share: share,
            observed_share: n_canary as f64 / total,
            chi2,
            p_value: p,
            mismatch: p < 0.001,
        })
    });
    if let Some(s) = &srm
        && s.mismatch
    {
        problems.push(format!(
            "sample-ratio mismatch: canary got {:.2}% of events, planned {:.2}% (chi-square {:.2}, p {:.2e} < 0.001): assignment or logging is broken",
            100.0 * s.observed_share,
            100.0 * s.expected_share,
            s.chi2,
            s.p_value
        ));
    }

    // Step 1: measure every rule in every segment.
    let mut segments: Vec<(Vec<String>, u64, u64, Vec<Measurement>)> = Vec::new();
    for (key, seg) in samples.segments.iter_mut() {
        let ms = policy
            .rules
            .iter()
            .map(|rule| measure(rule, &mut seg.baseline, &mut seg.canary, policy, z))
            .collect();
        segments.push((key.clone(), seg.baseline.n, seg.canary.n, ms));
    }

    // Step 2: Holm over the gating tests, and separately over report-only ones.
    for report_only in [false, true] {
        let idx: Vec<(usize, usize)> = segments
            .iter()
            .enumerate()
            .flat_map(|(s, (_, _, _, ms))| {
                ms.iter()
                    .enumerate()
                    .filter(|(_, m)| m.tested && m.result.report_only == report_only)
                    .map(move |(r, _)| (s, r))
            })
            .collect();
        let ps: Vec<f64> = idx
            .iter()
            .map(|&(s, r)| segments[s].3[r].result.p_value.unwrap_or(1.0))
            .collect();
        for (&(s, r), p) in idx.iter().zip(stats::holm_adjust(&ps)) {
            segments[s].3[r].result.p_adjusted = Some(p);
        }
    }
    let tests = segments
        .iter()
        .flat_map(|s| s.3.iter())
        .filter(|m| m.tested && !m.result.report_only)
        .count();

    // Step 3: classify rules, then segments.
    let mut out_segments = Vec::with_capacity(segments.len());
    for (key, nb, nc, ms) in segments {
        let volume_ok = nb >= policy.min_events && nc >= policy.min_events;
        let level = if volume_ok {
            alpha
        } else {
            policy.early_abort_alpha
        };
        let rules: Vec<RuleResult> = ms
            .into_iter()
            .map(|m| classify(m, level, volume_ok, policy))
            .collect();
        let gating = |r: &&RuleResult| !r.report_only;
        let failed: Vec<&RuleResult> = rules
            .iter()
            .filter(gating)
            .filter(|r| r.verdict == RuleOutcome::Fail)
            .collect();
        let insufficient_need = rules
            .iter()
            .filter(gating)
            .filter(|r| r.verdict == RuleOutcome::Insufficient)
            .filter_map(|r| r.needs_events)
            .max();
        let needs_baseline = policy
            .min_events
            .saturating_sub(nb)
            .max(insufficient_need.map_or(0, |n| n.saturating_sub(nb)));
        let needs_canary = policy
            .min_events
            .saturating_sub(nc)
            .max(insufficient_need.map_or(0, |n| n.saturating_sub(nc)));
        let (verdict, reason) = if !failed.is_empty() {
            let names: Vec<&str> = failed.iter().map(|r| r.rule.as_str()).collect();
            (Decision::Abort, format!("{} failed", names.join(", ")))
        } else if needs_baseline > 0 || needs_canary > 0 {
            (
                Decision::Continue,
                format!(
                    "needs {needs_canary} more canary and {needs_baseline} more baseline events (min_events {}{})",
                    policy.min_events,
                    if insufficient_need.is_some() {
                        ", and enough to bound every percentile"
                    } else {
                        ""
                    }
                ),
            )
        } else {
            (
                Decision::Promote,
                "enough volume and no rule failed".to_string(),
            )
        };
        let key_map = samples
            .segment_by
            .iter()
            .cloned()
            .zip(key.iter().cloned())
            .collect();
        out_segments.push(SegmentVerdict {
            key: key_map,
            n_baseline: nb,
            n_canary: nc,
            verdict,
            reason,
            needs_baseline,
            needs_canary,
            rules,
        });
    }

    // Step 4: the canary.
    let (verdict, reason) = if !problems.is_empty() {
        (Decision::Invalid, problems.join("; "))
    } else if out_segments.iter().any(|s| s.verdict == Decision::Abort) {
        // Which rules failed, and where: in full for one or two segments, counted beyond.
        let aborted: Vec<&SegmentVerdict> = out_segments
            .iter()
            .filter(|s| s.verdict == Decision::Abort)
            .collect();
        let mut by_rule: Vec<(&str, Vec<String>)> = Vec::new();
        for seg in &aborted {
            for r in seg.rules.iter().filter(|r| r.verdict == RuleOutcome::Fail) {
                let place = segment_label(&seg.key);
                match by_rule.iter_mut().find(|(name, _)| *name == r.rule) {
                    Some((_, places)) => places.push(place),
                    None => by_rule.push((&r.rule, vec![place])),
                }
            }
        }
        let parts: Vec<String> = by_rule
            .iter()
            .map(|(rule, places)| match places.len() {
                1 | 2 => format!("{rule} in {}", places.join(" and ")),
                n => format!("{rule} in {n} of {} segments", out_segments.len()),
            })
            .collect();
        (
            Decision::Abort,
            format!("stop condition hit: {}", parts.join("; ")),
        )
    } else if out_segments.iter().any(|s| s.verdict == Decision::Continue) {
        let waiting: Vec<&SegmentVerdict> = out_segments
            .iter()
            .filter(|s| s.verdict == Decision::Continue)
            .collect();
        let nc: u64 = waiting.iter().map(|s| s.needs_canary).sum();
        let nb: u64 = waiting.iter().map(|s| s.needs_baseline).sum();
        (
            Decision::Continue,
            format!(
                "{} of {} segments need more volume ({nc} more canary events, {nb} more baseline events in all); no rule failed",
                waiting.len(),
                out_segments.len()
            ),
        )
    } else {
        (
            Decision::Promote,
            format!(
                "all {} segments have enough volume and no stop condition was hit",
                out_segments.len()
            ),
        )
    };

    Verdict {
        schema_version: SCHEMA_VERSION,
        verdict,
        exit_code: verdict.exit_code(),
        reason,
        n_baseline,
        n_canary,
        segment_by: samples.segment_by.clone(),
        confidence: policy.confidence,
        min_events: policy.min_events,
        early_abort_alpha: policy.early_abort_alpha,
        tests,
        srm,
        problems,
        segments: out_segments,
        assumptions: ASSUMPTIONS.to_vec(),
    }
}

/// `model=gpt-4o, tier=free`
pub fn segment_label(key: &BTreeMap<String, String>) -> String {
    if key.is_empty() {
        return "all events".into();
    }
    key.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn empty_result(rule: &PolicyRule, n_b: u64, n_c: u64) -> RuleResult {
    RuleResult {
        rule: rule.name.clone(),
        metric: rule.metric_name.clone(),
        test: rule.metric.test_name(),
        report_only: rule.report_only,
        n_baseline: n_b,
        n_canary: n_c,
        baseline: None,
        canary: None,
        ratio: None,
        ci_low: None,
        ci_high: None,
        threshold: rule.max_ratio,
        p_value: None,
        p_adjusted: None,
        alpha: 0.0,
        verdict: RuleOutcome::NoData,
        reason: String::new(),
        needs_events: None,
    }
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn measure(
    rule: &PolicyRule,
    b: &mut ArmSample,
    c: &mut ArmSample,
    policy: &Policy,
    z: f64,
) -> Measurement {
    match rule.metric {
        Metric::Rate { rate } => {
            let (xb, nb, xc, nc) = match rate {
                RateKind::Flagged => (b.flagged, b.n, c.flagged, c.n),
                RateKind::Error => (b.errors, b.n, c.errors, c.n),
                RateKind::BadLabel => (b.bad, b.labeled, c.bad, c.labeled),
            };
            let mut r = empty_result(rule, nb, nc);
            let what = match rate {
                RateKind::Flagged => "flagged",
                RateKind::Error => "error",
                RateKind::BadLabel => "bad-label",
            };
            let Some(rr) = stats::rate_ratio_exact(xc, nc, xb, nb, policy.confidence) else {
                r.reason = if rate == RateKind::BadLabel {
                    format!(
                        "no labeled events in the {}",
                        if nc == 0 { "canary" } else { "baseline" }
                    )
                } else {
                    "no events in an arm".into()
                };
                return untested(r);
            };
            r.baseline = Some(rr.baseline_rate);
            r.canary = Some(rr.canary_rate);
            r.ratio = rr.estimate.and_then(finite);
            r.ci_low = Some(rr.low);
            r.ci_high = finite(rr.high);
            r.p_value = Some(rr.p_value);
            let material = rr.estimate.is_some_and(|e| e > rule.max_ratio);
            let below_floor = xc < policy.min_rate_events;
            r.reason = match rr.estimate {
                None => format!("no {what} events in either arm"),
                Some(e) if e.is_infinite() => {
                    format!("{xc} {what} canary events vs none in the baseline")
                }
                Some(e) => format!(
                    "{what} rate {} vs {} ({e:.2}x)",
                    pct(rr.canary_rate),
                    pct(rr.baseline_rate)
                ),
            };
            if rr.estimate.is_none() {
                r.verdict = RuleOutcome::Pass;
            }
            Measurement {
                result: r,
                tested: rr.estimate.is_some(),
                material,
                below_floor,
            }
        }
        Metric::Quantile { q, column } => {
            let (nb, nc) = (b.values(column).len() as u64, c.values(column).len() as u64);
            let mut r = empty_result(rule, nb, nc);
            let sb = stats::quantile_summary(b.values_mut(column), q, z);
            let sc = stats::quantile_summary(c.values_mut(column), q, z);
            r.baseline = sb.estimate;
            r.canary = sc.estimate;
            if let (Some(eb), Some(ec)) = (sb.estimate, sc.estimate)
                && eb > 0.0
            {
                r.ratio = Some(ec / eb);
            }
            match stats::quantile_ratio(&sc, &sb, z) {
                Some(t) => ratio_measurement(r, t, rule.max_ratio),
                None => {
                    let need = stats::min_events_for_quantile(q, z) as u64;
                    if sb.interval.is_none() || sc.interval.is_none() {
                        r.verdict = RuleOutcome::Insufficient;
                        r.needs_events = Some(need);
                        r.reason = format!(
                            "too few events to bound p{} (each arm needs {need}; have {nb} and {nc})",
                            fmt_q(q)
                        );
                    } else {
                        r.reason = "baseline percentile is 0; the ratio is undefined".into();
                    }
                    untested(r)
                }
            }
        }
        Metric::Mean { column } => {
            let (nb, nc) = (b.values(column).len() as u64, c.values(column).len() as u64);
            let mut r = empty_result(rule, nb, nc);
            let (mb, vb) = mean_var(b.values(column));
            let (mc, vc) = mean_var(c.values(column));
            r.baseline = mb;
            r.canary = mc;
            let t = match (mb, vb, mc, vc) {
                (Some(mb), Some(vb), Some(mc), Some(vc)) => {
                    stats::mean_ratio(nc, mc, vc, nb, mb, vb, z)
                }
                _ => None,
            };
            match t {
                Some(t) => ratio_measurement(r, t, rule.max_ratio),
                None => {
                    r.verdict = RuleOutcome::Insufficient;
                    r.needs_events = Some(2);
                    r.reason = "too few events (or a zero baseline mean) to compare means".into();
                    untested(r)
                }
            }
        }
    }
}

/// A measurement from a ratio test of two arms' values (quantiles or means).
fn ratio_measurement(mut r: RuleResult, t: stats::RatioTest, max_ratio: f64) -> Measurement {
    r.ratio = finite(t.estimate);
    r.ci_low = finite(t.low);
    r.ci_high = finite(t.high);
    r.p_value = Some(t.p_value);
    r.reason = format!(
        "{} {} vs {} ({:.2}x)",
        r.metric,
        num(r.canary),
        num(r.baseline),
        t.estimate
    );
    Measurement {
        result: r,
        tested: true,
        material: t.estimate > max_ratio,
        below_floor: false,
    }
}

/// A measurement without a test (its outcome and reason are already set).
fn untested(result: RuleResult) -> Measurement {
    Measurement {
        result,
        tested: false,
        material: false,
        below_floor: false,
    }
}

/// Decides one rule from its measurement and the significance level that applies.
fn classify(m: Measurement, level: f64, volume_ok: bool, policy: &Policy) -> RuleResult {
    let mut r = m.result;
    r.alpha = level;
    if !m.tested {
        return r; // Pass / Insufficient / NoData set by `measure`
    }
    let p_adj = r.p_adjusted.unwrap_or(1.0);
    let significant = p_adj <= level;
    let base = std::mem::take(&mut r.reason);
    let early = if volume_ok {
        ""
    } else {
        " (before min_events: early-abort level)"
    };
    let (fails, why) = if !m.material {
        (false, format!("{base}: within {:.2}x", r.threshold))
    } else if m.below_floor {
        (
            false,
            format!(
                "{base}: past {:.2}x but only {} canary events of the kind; a rate rule needs {} to fail",
                r.threshold,
                (r.canary.unwrap_or(0.0) * r.n_canary as f64).round(),
                policy.min_rate_events
            ),
        )
    } else if !significant {
        (
            false,
            format!(
                "{base}: past {:.2}x but not significant (adjusted p {} > {}{early})",
                r.threshold,
                pval(p_adj),
                level
            ),
        )
    } else {
        (
            true,
            format!(
                "{base}: past {:.2}x and significant (adjusted p {} <= {}{early})",
                r.threshold,
                pval(p_adj),
                level
            ),
        )
    };
    r.reason = why;
    r.verdict = match (fails, r.report_only) {
        (true, false) => RuleOutcome::Fail,
        (true, true) => RuleOutcome::Warn,
        (false, _) => RuleOutcome::Pass,
    };
    r
}

fn mean_var(v: &[f64]) -> (Option<f64>, Option<f64>) {
    let n = v.len();
    if n == 0 {
        return (None, None);
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (Some(mean), None);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (Some(mean), Some(var))
}

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

fn num(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |x| format!("{x:.1}"))
}

fn pval(p: f64) -> String {
    if p < 1e-4 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

fn fmt_q(q: f64) -> String {
    let s = format!("{}", q * 100.0);
    s.trim_end_matches(".0").to_string()
}
