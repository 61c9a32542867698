//! The decision, in small steps that each record why: per rule and segment a measurement
//! (estimate, evidence, always-valid one-sided p-value), then Holm's adjustment across the
//! family for the abort side, then a classification of each rule (fail / pass / inconclusive),
//! then the pooled (stratified) evidence per rule for the promote side, then each segment, then
//! the canary.
//!
//! Two questions, answered differently (see `STATS.md`):
//! - **Abort?** A rule fails in a segment when its estimate is past the threshold (material)
//!   and the canary is significantly worse than the baseline after Holm's adjustment over every
//!   gating rule × segment (real). Per segment, so a regression confined to one segment aborts.
//! - **Promote?** Only on evidence: for every rule that must pass, the one-sided upper bound of
//!   the ratio is at or below the threshold (non-inferiority). Requiring every such test to pass
//!   is an intersection-union test (Berger 1982), valid at level α with no multiplicity
//!   correction. Rates and means are judged on an estimate stratified across segments
//!   (Mantel-Haenszel; inverse-variance weighted log ratios), which compares within segments
//!   (Simpson-safe) and needs far fewer events than a proof in every small segment; percentile
//!   bounds, which are order statistics, do not pool, so each segment must show its own.
//! - Otherwise: continue, with an estimate of the events that would settle each open rule.

use std::collections::BTreeMap;

use serde::Serialize;

use super::evidence::{Evidence, QuantileArm};
use super::policy::{Metric, Policy, PolicyRule, RateKind};
use super::samples::{Arm, ArmSample, Samples, UnitMetric};
use super::sequential::{Boundary, MIN_LEVEL};
use super::stats::{self, LogRatio, Margin};

/// Version of the JSON document [`Verdict`] serializes to.
pub const SCHEMA_VERSION: u32 = 2;

/// Expected canary events in a segment the canary never served, above which that is a broken
/// comparison rather than bad luck (P(0 | Poisson(20)) = 2e-9).
const MISSING_SEGMENT_EXPECTED: f64 = 20.0;

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

/// Outcome of one rule (in one segment, or pooled over segments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleOutcome {
    /// Evidence that the ratio is within the threshold (upper bound at or below it).
    Pass,
    /// Past the threshold and significantly worse: aborts the canary.
    Fail,
    /// A report-only rule that would have failed.
    Warn,
    /// No evidence either way yet.
    Inconclusive,
    /// Nothing to compare (no labels, or no events of the kind in either arm).
    NoData,
}

impl RuleOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleOutcome::Pass => "pass",
            RuleOutcome::Fail => "fail",
            RuleOutcome::Warn => "warn",
            RuleOutcome::Inconclusive => "inconclusive",
            RuleOutcome::NoData => "no_data",
        }
    }
}

/// One rule judged in one segment, or pooled over all segments.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleResult {
    pub rule: String,
    pub metric: String,
    pub test: &'static str,
    pub report_only: bool,
    pub abort_only: bool,
    /// Events the metric is computed over, per arm (labeled events for bad_label_rate).
    pub n_baseline: u64,
    pub n_canary: u64,
    pub baseline: Option<f64>,
    pub canary: Option<f64>,
    /// canary / baseline point estimate (null when undefined or infinite).
    pub ratio: Option<f64>,
    /// The bounds the decision used: `ci_low` is the one-sided lower bound at the level the
    /// abort test applied (`ci_low_level`, after Holm), `ci_high` the one-sided upper bound at
    /// 1 - confidence (`ci_high_level`) that a pass needs at or below `threshold`. Null =
    /// unbounded.
    pub ci_low: Option<f64>,
    pub ci_low_level: Option<f64>,
    pub ci_high: Option<f64>,
    pub ci_high_level: f64,
    pub threshold: f64,
    /// Always-valid one-sided p-value of "canary worse than baseline", and after Holm.
    pub p_value: Option<f64>,
    pub p_adjusted: Option<f64>,
    /// Significance the adjusted p-value had to reach (1 - confidence, or early_abort_alpha).
    pub alpha: f64,
    pub verdict: RuleOutcome,
    pub reason: String,
    /// For an inconclusive rule: about how many more events per arm would settle it at the
    /// current estimates (a projection, not a promise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs_baseline: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs_canary: Option<u64>,
}

/// One segment's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentVerdict {
    pub key: BTreeMap<String, String>,
    pub n_baseline: u64,
    pub n_canary: u64,
    pub verdict: Decision,
    pub reason: String,
    /// More events needed per arm before this segment stops holding the canary (estimate).
    pub needs_baseline: u64,
    pub needs_canary: u64,
    pub rules: Vec<RuleResult>,
}

/// Sample-ratio mismatch check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SrmCheck {
    /// What was counted: `units` (distinct unit ids, what was randomized) or `events`.
    pub basis: &'static str,
    pub canary: u64,
    pub baseline: u64,
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
    /// Whether bounds are always valid over repeated looks.
    pub sequential: bool,
    /// Whether variances are per unit (events carried unit ids).
    pub clustered: bool,
    /// Number of gating tests Holm's adjustment covered.
    pub tests: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srm: Option<SrmCheck>,
    /// Problems that make the comparison untrustworthy (verdict `invalid`).
    pub problems: Vec<String>,
    /// Things worth knowing that do not change the verdict.
    pub warnings: Vec<String>,
    /// Rules that decided the verdict (failed, or still open), by name.
    pub deciding: Vec<String>,
    /// Rules that hold no promotion but were not shown within their threshold.
    pub unproven: Vec<String>,
    /// Per rule, the evidence pooled over segments (what a promotion is decided on).
    pub overall: Vec<RuleResult>,
    pub segments: Vec<SegmentVerdict>,
    /// Assumptions behind the statistics.
    pub assumptions: Vec<String>,
}

/// A measurement of one rule in one segment, before the family-wide adjustment.
struct Measurement {
    result: RuleResult,
    evidence: Option<Evidence>,
    /// Rate rules: (x_c, n_c, x_b, n_b), for the Mantel-Haenszel pooling.
    counts: Option<(u64, u64, u64, u64)>,
    material: bool,
    /// Rate rules: canary events of the kind below the floor.
    below_floor: bool,
}

impl Measurement {
    /// A measurement without evidence: its outcome and reason are set on `result`.
    fn untested(result: RuleResult) -> Self {
        Measurement {
            result,
            evidence: None,
            counts: None,
            material: false,
            below_floor: false,
        }
    }

    fn tested(&self) -> bool {
        self.evidence.is_some()
    }
}

/// Judges `samples` under `policy`. `expected_share` is the planned canary share, for the
/// sample-ratio-mismatch check.
pub fn judge(mut samples: Samples, policy: &Policy, expected_share: Option<f64>) -> Verdict {
    samples.settle_units();
    let alpha = policy.alpha();
    let clustered = samples.clustered();
    let n_baseline = samples.total(Arm::Baseline);
    let n_canary = samples.total(Arm::Canary);
    let mut warnings = Vec::new();
    let (mut problems, srm) = check_comparison(&samples, expected_share, &mut warnings);

    // Step 1: measure every rule in every segment with both arms.
    let mut segments: Vec<(Vec<String>, u64, u64, Vec<Measurement>)> = Vec::new();
    for (key, seg) in samples.segments.iter_mut() {
        let (nb, nc) = (seg.baseline.n, seg.canary.n);
        if nb == 0 || nc == 0 {
            continue; // reported by check_comparison or waiting (see below)
        }
        let ms = policy
            .rules
            .iter()
            .map(|rule| measure(rule, &mut seg.baseline, &mut seg.canary, policy))
            .collect();
        segments.push((key.clone(), nb, nc, ms));
    }

    // Step 2: the evidence per rule pooled over segments (rates and means; percentiles are
    // decided per segment).
    let mut pooled_ms: Vec<Measurement> = policy
        .rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let parts: Vec<&Measurement> = segments.iter().map(|s| &s.3[i]).collect();
            pool(rule, &parts, policy, clustered)
        })
        .collect();
    // With one segment the pooled test is that segment's test: not tested twice.
    let pooled_tested = segments.len() > 1;

    // Step 3: Holm over the gating tests (every segment's, and the pooled ones), and
    // separately over report-only ones.
    let mut tests = 0;
    for report_only in [false, true] {
        let mut family: Vec<&mut Measurement> = segments
            .iter_mut()
            .flat_map(|(_, _, _, ms)| ms.iter_mut())
            .chain(pooled_ms.iter_mut().filter(|_| pooled_tested))
            .filter(|m| m.tested() && m.result.report_only == report_only)
            .collect();
        let ps: Vec<f64> = family
            .iter()
            .map(|m| m.result.p_value.unwrap_or(1.0))
            .collect();
        for (m, p) in family.iter_mut().zip(stats::holm_adjust(&ps)) {
            m.result.p_adjusted = Some(p);
        }
        if !report_only {
            tests = ps.len();
        }
    }

    // Step 4: classify rules per segment, then pooled.
    let all_volume_ok = segments
        .iter()
        .all(|(_, nb, nc, _)| *nb >= policy.min_events && *nc >= policy.min_events);
    let mut classified: Vec<(Vec<String>, u64, u64, Vec<RuleResult>)> = Vec::new();
    for (key, nb, nc, ms) in segments {
        let volume_ok = nb >= policy.min_events && nc >= policy.min_events;
        let level = if volume_ok {
            alpha
        } else {
            policy.early_abort_alpha
        };
        let rules = ms
            .into_iter()
            .zip(&policy.rules)
            .map(|(m, rule)| classify(m, rule, level, volume_ok, alpha, policy))
            .collect();
        classified.push((key, nb, nc, rules));
    }
    let pooled_level = if all_volume_ok {
        alpha
    } else {
        policy.early_abort_alpha
    };
    let overall: Vec<RuleResult> = pooled_ms
        .into_iter()
        .zip(&policy.rules)
        .enumerate()
        .map(|(i, (m, rule))| {
            let seg_results: Vec<&RuleResult> =
                classified.iter().map(|(_, _, _, rs)| &rs[i]).collect();
            let mut m = m;
            if !pooled_tested {
                // One segment: its own test and outcome are the pooled ones.
                if let Some(only) = seg_results.first() {
                    m.result.p_adjusted = only.p_adjusted;
                }
            }
            classify_pooled(m, rule, &seg_results, pooled_level, all_volume_ok, policy)
        })
        .collect();

    // Step 5: segments.
    let mut out_segments = Vec::new();
    for (key, nb, nc, rules) in classified {
        let volume_ok = nb >= policy.min_events && nc >= policy.min_events;
        let failed: Vec<&str> = rules
            .iter()
            .filter(|r| r.verdict == RuleOutcome::Fail)
            .map(|r| r.rule.as_str())
            .collect();
        // Percentile rules that must pass are proven per segment: an open one holds it.
        let open: Vec<&RuleResult> = rules
            .iter()
            .zip(&policy.rules)
            .filter(|(r, p)| {
                p.must_pass()
                    && matches!(p.metric, Metric::Quantile { .. })
                    && r.verdict == RuleOutcome::Inconclusive
            })
            .map(|(r, _)| r)
            .collect();
        let need = |n: u64, f: fn(&RuleResult) -> Option<u64>| {
            open.iter()
                .filter_map(|r| f(r))
                .max()
                .unwrap_or(0)
                .max(policy.min_events.saturating_sub(n))
        };
        let needs_baseline = need(nb, |r| r.needs_baseline);
        let needs_canary = need(nc, |r| r.needs_canary);
        let (verdict, reason) = if !failed.is_empty() {
            (Decision::Abort, format!("{} failed", failed.join(", ")))
        } else if !volume_ok || !open.is_empty() {
            let mut why = Vec::new();
            if !volume_ok {
                why.push(format!(
                    "below min_events ({} per arm; has {nb} baseline, {nc} canary)",
                    policy.min_events
                ));
            }
            for r in &open {
                why.push(format!(
                    "{} not yet shown within {}",
                    r.rule,
                    ratio_text(r.threshold)
                ));
            }
            let more = if needs_canary + needs_baseline > 0 {
                format!(
                    "; about {needs_canary} more canary and {needs_baseline} more baseline events"
                )
            } else {
                "; a few more events".to_string()
            };
            (Decision::Continue, format!("{}{more}", why.join("; ")))
        } else {
            (
                Decision::Promote,
                "nothing in this segment holds the canary".to_string(),
            )
        };
        out_segments.push(SegmentVerdict {
            key: key_map(&samples.segment_by, &key),
            n_baseline: nb,
            n_canary: nc,
            verdict,
            reason,
            needs_baseline,
            needs_canary,
            rules,
        });
    }
    // Segments one arm has not reached yet (few events expected there): they wait.
    let share = n_canary as f64 / n_baseline.max(1) as f64;
    for (key, seg) in &samples.segments {
        let (nb, nc) = (seg.baseline.n, seg.canary.n);
        let label = segment_label(&key_map(&samples.segment_by, key));
        if (nb > 0 && nc > 0) || problems.iter().any(|p| p.contains(&label)) {
            continue;
        }
        let (missing, expected) = if nc == 0 {
            ("canary", nb as f64 * share)
        } else {
            ("baseline", nc as f64 / share.max(f64::MIN_POSITIVE))
        };
        out_segments.push(SegmentVerdict {
            key: key_map(&samples.segment_by, key),
            n_baseline: nb,
            n_canary: nc,
            verdict: Decision::Continue,
            reason: format!(
                "the {missing} has no events here yet (about {expected:.1} expected at the current split)"
            ),
            needs_baseline: policy.min_events.saturating_sub(nb),
            needs_canary: policy.min_events.saturating_sub(nc),
            rules: Vec::new(),
        });
    }
    out_segments.sort_by(|a, b| a.key.cmp(&b.key));

    // Step 6: the canary.
    let gating_open: Vec<&RuleResult> = overall
        .iter()
        .zip(&policy.rules)
        .filter(|(r, p)| {
            p.must_pass() && !matches!(r.verdict, RuleOutcome::Pass | RuleOutcome::NoData)
        })
        .map(|(r, _)| r)
        .collect();
    let unproven: Vec<String> = overall
        .iter()
        .zip(&policy.rules)
        .filter(|(r, p)| {
            !p.report_only && r.verdict != RuleOutcome::Pass && r.verdict != RuleOutcome::Fail
        })
        .map(|(r, p)| {
            let what = if r.verdict == RuleOutcome::NoData {
                "no data".to_string()
            } else {
                format!(
                    "not shown within {} (upper bound {})",
                    ratio_text(r.threshold),
                    r.ci_high.map_or("unbounded".into(), ratio_text)
                )
            };
            if p.abort_only {
                format!("{} (abort-only): {what}; it did not fail", r.rule)
            } else {
                format!("{}: {what}", r.rule)
            }
        })
        .collect();
    if problems.is_empty() && n_canary == 0 {
        problems.push("the canary has no events in the window".into());
    }
    let mut deciding = Vec::new();
    let (verdict, reason) = if !problems.is_empty() {
        (Decision::Invalid, problems.join("; "))
    } else if out_segments.iter().any(|s| s.verdict == Decision::Abort)
        || overall
            .iter()
            .any(|r| r.verdict == RuleOutcome::Fail && !r.report_only)
    {
        let mut by_rule: Vec<(&str, Vec<String>)> = Vec::new();
        for seg in out_segments.iter().filter(|s| s.verdict == Decision::Abort) {
            for r in seg.rules.iter().filter(|r| r.verdict == RuleOutcome::Fail) {
                let place = segment_label(&seg.key);
                match by_rule.iter_mut().find(|(name, _)| *name == r.rule) {
                    Some((_, places)) => places.push(place),
                    None => by_rule.push((&r.rule, vec![place])),
                }
            }
        }
        // A regression spread over segments can fail pooled without failing in any one.
        for r in overall
            .iter()
            .filter(|r| r.verdict == RuleOutcome::Fail && !r.report_only)
        {
            if !by_rule.iter().any(|(name, _)| *name == r.rule) {
                by_rule.push((&r.rule, vec!["all segments pooled".into()]));
            }
        }
        deciding = by_rule.iter().map(|(r, _)| r.to_string()).collect();
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
    } else if !gating_open.is_empty()
        || out_segments.iter().any(|s| s.verdict == Decision::Continue)
    {
        let mut parts: Vec<String> = Vec::new();
        for r in &gating_open {
            deciding.push(r.rule.clone());
            parts.push(format!(
                "{} not yet shown within {} (upper bound {}{})",
                r.rule,
                ratio_text(r.threshold),
                r.ci_high.map_or("unbounded".into(), ratio_text),
                match (r.needs_canary, r.needs_baseline) {
                    (Some(c), Some(b)) =>
                        format!("; about {c} more canary and {b} more baseline events"),
                    _ => String::new(),
                }
            ));
        }
        let waiting: Vec<&SegmentVerdict> = out_segments
            .iter()
            .filter(|s| s.verdict == Decision::Continue)
            .collect();
        if !waiting.is_empty() {
            let nc: u64 = waiting.iter().map(|s| s.needs_canary).sum();
            let nb: u64 = waiting.iter().map(|s| s.needs_baseline).sum();
            parts.push(format!(
                "{} of {} segments still open (about {nc} more canary and {nb} more baseline events)",
                waiting.len(),
                out_segments.len()
            ));
        }
        (
            Decision::Continue,
            format!("no rule failed; {}", parts.join("; ")),
        )
    } else {
        let shown: Vec<String> = overall
            .iter()
            .zip(&policy.rules)
            .filter(|(r, p)| p.must_pass() && r.verdict == RuleOutcome::Pass)
            .map(|(r, _)| {
                format!(
                    "{} <= {}",
                    r.rule,
                    r.ci_high.map_or("unbounded".into(), ratio_text)
                )
            })
            .collect();
        deciding = overall
            .iter()
            .zip(&policy.rules)
            .filter(|(_, p)| p.must_pass())
            .map(|(r, _)| r.rule.clone())
            .collect();
        (
            Decision::Promote,
            format!(
                "evidence that every gating rule is within its threshold ({}) across {} segments with at least {} events per arm",
                shown.join(", "),
                out_segments.len(),
                policy.min_events
            ),
        )
    };

    let mut assumptions = vec![if clustered {
        "events carry unit_id: variances are per unit (delta method for ratio metrics; design effect for percentiles), so correlated events of one unit are not counted as independent evidence".to_string()
    } else {
        "events are treated as independent (they carry no unit_id); calls from one user are correlated, so bounds are optimistic when a few users dominate traffic".to_string()
    }];
    assumptions.push(if policy.sequential {
        "bounds and p-values are always valid (confidence sequences): judging the canary again as data arrives keeps the error rates at their nominal level".to_string()
    } else {
        "fixed-horizon bounds: valid for one planned look; judging repeatedly inflates both error rates".to_string()
    });
    assumptions.push("canary and baseline are compared within each segment over the canary's time span; pooled numbers never decide".to_string());

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
        sequential: policy.sequential,
        clustered,
        tests,
        srm,
        problems,
        warnings,
        deciding,
        unproven,
        overall,
        segments: out_segments,
        assumptions,
    }
}

/// Checks that make the comparison itself untrustworthy (problems) or worth a warning.
fn check_comparison(
    samples: &Samples,
    expected_share: Option<f64>,
    warnings: &mut Vec<String>,
) -> (Vec<String>, Option<SrmCheck>) {
    let mut problems = Vec::new();
    let n_baseline = samples.total(Arm::Baseline);
    let n_canary = samples.total(Arm::Canary);
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
                arm.as_str(),
                named.len(),
                named.join(", ")
            ));
        }
    }
    if n_canary > 0 && n_baseline > 0 {
        let share = n_canary as f64 / n_baseline as f64;
        let mut one_armed = Vec::new();
        for (key, seg) in &samples.segments {
            let label = segment_label(&key_map(&samples.segment_by, key));
            let expected_b = seg.canary.n as f64 / share;
            if seg.baseline.n == 0 && expected_b >= MISSING_SEGMENT_EXPECTED {
                one_armed.push(format!(
                    "segment {label} has {} canary events and no baseline events, though about {expected_b:.0} were expected: the canary serves something the baseline does not (a new model or tier is not an apples-to-apples comparison)",
                    seg.canary.n
                ));
            } else if seg.canary.n == 0 && seg.baseline.n as f64 * share >= MISSING_SEGMENT_EXPECTED
            {
                one_armed.push(format!(
                    "segment {label} has {} baseline events and no canary events, though about {:.0} were expected at the canary's share: the canary is not served there",
                    seg.baseline.n,
                    seg.baseline.n as f64 * share
                ));
            }
        }
        if one_armed.len() > 3 {
            let n = one_armed.len();
            one_armed.truncate(2);
            one_armed.push(format!(
                "{} more segments are served by one arm only",
                n - 2
            ));
        }
        problems.extend(one_armed);
    }
    for (pin, arms) in &samples.pins {
        let empty = Default::default();
        let b = arms.get(&Arm::Baseline).unwrap_or(&empty);
        let c = arms.get(&Arm::Canary).unwrap_or(&empty);
        if b.is_empty() || c.is_empty() {
            continue;
        }
        let only_c: Vec<&str> = c.difference(b).map(String::as_str).collect();
        let only_b: Vec<&str> = b.difference(c).map(String::as_str).collect();
        if !only_c.is_empty() || !only_b.is_empty() {
            let show = |v: &std::collections::BTreeSet<String>| {
                v.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
            };
            problems.push(format!(
                "pinned knob `{pin}` differs between the arms: baseline has {}, canary has {}: the canary changed more than the prompt",
                show(b),
                show(c)
            ));
        }
    }
    let srm = expected_share.and_then(|share| {
        let (basis, c, b) = match samples.distinct_units {
            Some((b, c)) => ("units", c, b),
            None => ("events", n_canary, n_baseline),
        };
        let (chi2, p) = stats::srm_chi_square(c, b, share)?;
        Some(SrmCheck {
            basis,
            canary: c,
            baseline: b,
            expected_share: share,
            observed_share: c as f64 / (c + b) as f64,
            chi2,
            p_value: p,
            mismatch: p < 0.001,
        })
    });
    if let Some(s) = &srm
        && s.mismatch
    {
        let text = format!(
            "sample-ratio mismatch: the canary got {:.2}% of {}, planned {:.2}% (chi-square {:.2}, p {:.2e} < 0.001)",
            100.0 * s.observed_share,
            s.basis,
            100.0 * s.expected_share,
            s.chi2,
            s.p_value
        );
        if s.basis == "units" {
            problems.push(format!("{text}: assignment or logging is broken"));
        } else {
            warnings.push(format!(
                "{text}; counted on events, which are not independent draws when some users send many requests: log unit_id so the check counts what was randomized"
            ));
        }
    }
    (problems, srm)
}

fn key_map(segment_by: &[String], key: &[String]) -> BTreeMap<String, String> {
    segment_by
        .iter()
        .cloned()
        .zip(key.iter().cloned())
        .collect()
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

/// A ratio for people: `1.50x`, `12.3x`.
pub fn ratio_text(x: f64) -> String {
    if !x.is_finite() {
        return "unbounded".into();
    }
    if x >= 1000.0 {
        ">1000x".into()
    } else if x >= 100.0 {
        format!("{x:.0}x")
    } else if x >= 10.0 {
        format!("{x:.1}x")
    } else {
        format!("{x:.2}x")
    }
}

fn empty_result(rule: &PolicyRule, n_b: u64, n_c: u64, alpha: f64) -> RuleResult {
    RuleResult {
        rule: rule.name.clone(),
        metric: rule.metric_name.clone(),
        test: rule.metric.test_name(),
        report_only: rule.report_only,
        abort_only: rule.abort_only,
        n_baseline: n_b,
        n_canary: n_c,
        baseline: None,
        canary: None,
        ratio: None,
        ci_low: None,
        ci_low_level: None,
        ci_high: None,
        ci_high_level: alpha,
        threshold: rule.max_ratio,
        p_value: None,
        p_adjusted: None,
        alpha: 0.0,
        verdict: RuleOutcome::NoData,
        reason: String::new(),
        needs_baseline: None,
        needs_canary: None,
    }
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn rate_counts(rate: RateKind, a: &ArmSample) -> (u64, u64) {
    match rate {
        RateKind::Flagged => (a.flagged, a.n),
        RateKind::Error => (a.errors, a.n),
        RateKind::BadLabel => (a.bad, a.labeled),
    }
}

fn unit_metric(rate: RateKind) -> UnitMetric {
    match rate {
        RateKind::Flagged => UnitMetric::Flagged,
        RateKind::Error => UnitMetric::Errors,
        RateKind::BadLabel => UnitMetric::Bad,
    }
}

/// Variance of `ln(ΣS/ΣN)` over an arm's units (delta method), when it has at least two.
fn clustered_log_var(arm: &ArmSample, metric: UnitMetric) -> Option<f64> {
    let m = arm.ratio_moments(metric);
    let r = m.s / m.n;
    let v = stats::ratio_metric_var(&m)?;
    (r > 0.0).then(|| v / (r * r))
}

fn measure(
    rule: &PolicyRule,
    b: &mut ArmSample,
    c: &mut ArmSample,
    policy: &Policy,
) -> Measurement {
    let mut m = measure_evidence(rule, b, c, policy);
    if let Some(e) = &m.evidence {
        m.result.p_value = Some(e.p_value());
    }
    m
}

fn measure_evidence(
    rule: &PolicyRule,
    b: &mut ArmSample,
    c: &mut ArmSample,
    policy: &Policy,
) -> Measurement {
    let alpha = policy.alpha();
    let margin = Margin::new(rule.max_ratio);
    let gaussian = Boundary::for_margin(policy.sequential, alpha, rule.max_ratio);
    let clustered = b.clustered() || c.clustered();
    match rule.metric {
        Metric::Rate { rate } => {
            let (xb, nb) = rate_counts(rate, b);
            let (xc, nc) = rate_counts(rate, c);
            let mut r = empty_result(rule, nb, nc, alpha);
            let what = match rate {
                RateKind::Flagged => "flagged",
                RateKind::Error => "error",
                RateKind::BadLabel => "bad-label",
            };
            let untested = |mut r: RuleResult, reason: String| {
                r.reason = reason;
                Measurement::untested(r)
            };
            if nb == 0 || nc == 0 {
                let arm = if nc == 0 { "canary" } else { "baseline" };
                let why = if rate == RateKind::BadLabel {
                    format!("no labeled events in the {arm}")
                } else {
                    format!("no events in the {arm}")
                };
                return untested(r, why);
            }
            let (rate_b, rate_c) = (xb as f64 / nb as f64, xc as f64 / nc as f64);
            r.baseline = Some(rate_b);
            r.canary = Some(rate_c);
            if xc + xb == 0 {
                return untested(r, format!("no {what} events in either arm"));
            }
            // With unit ids and events of the kind in both arms, the per-unit (clustered)
            // variance of the log ratio; otherwise the exact conditional test of the counts.
            let evidence = match (
                clustered && xb > 0 && xc > 0,
                clustered_log_var(c, unit_metric(rate)),
                clustered_log_var(b, unit_metric(rate)),
            ) {
                (true, Some(vc), Some(vb)) => Evidence::LogNormal {
                    ratio: LogRatio {
                        log_estimate: (rate_c / rate_b).ln(),
                        se: (vc + vb).sqrt(),
                    },
                    boundary: gaussian,
                },
                _ => {
                    r.test = if policy.sequential {
                        "exact conditional rate ratio (beta-mixture, always valid)"
                    } else {
                        "exact conditional rate ratio (Clopper-Pearson)"
                    };
                    Evidence::ExactRate {
                        x_c: xc,
                        n_c: nc,
                        x_b: xb,
                        n_b: nb,
                        boundary: gaussian,
                    }
                }
            };
            r.ratio = if xb > 0 { Some(rate_c / rate_b) } else { None };
            r.reason = if xb == 0 {
                format!("{xc} {what} canary events vs none in the baseline")
            } else {
                format!(
                    "{what} rate {} vs {} ({})",
                    pct(rate_c),
                    pct(rate_b),
                    ratio_text(rate_c / rate_b)
                )
            };
            Measurement {
                material: margin.exceeded_by_counts(xc, nc, xb, nb),
                below_floor: xc < policy.min_rate_events,
                evidence: Some(evidence),
                counts: Some((xc, nc, xb, nb)),
                result: r,
            }
        }
        Metric::Quantile { q, column } => {
            let col = column as usize;
            let (nb, nc) = (b.values(column).len() as u64, c.values(column).len() as u64);
            let mut r = empty_result(rule, nb, nc, alpha);
            let boundary =
                Boundary::for_events(policy.sequential, alpha, policy.planned_events as f64);
            let qb = QuantileArm::new(b, col, q, boundary);
            let qc = QuantileArm::new(c, col, q, boundary);
            r.baseline = qb.estimate;
            r.canary = qc.estimate;
            let (Some(eb), Some(ec)) = (qb.estimate, qc.estimate) else {
                r.reason = "no values in an arm".into();
                return Measurement::untested(r);
            };
            let evidence = Evidence::Quantiles {
                canary: qc,
                baseline: qb,
            };
            r.ratio = finite(evidence.estimate());
            r.reason = format!(
                "{} {} vs {} ({})",
                rule.metric_name,
                num(ec),
                num(eb),
                r.ratio.map_or("unbounded".into(), ratio_text)
            );
            Measurement {
                material: margin.exceeded_by_values(ec, eb) && ec > 0.0,
                below_floor: false,
                evidence: Some(evidence),
                counts: None,
                result: r,
            }
        }
        Metric::Mean { column } => {
            let (nb, nc) = (b.values(column).len() as u64, c.values(column).len() as u64);
            let mut r = empty_result(rule, nb, nc, alpha);
            let (mb, vb) = mean_var(b, column);
            let (mc, vc) = mean_var(c, column);
            r.baseline = mb;
            r.canary = mc;
            let ratio = match (mb, vb, mc, vc) {
                (Some(mb), Some(vb), Some(mc), Some(vc)) if mb > 0.0 && mc > 0.0 => {
                    Some(LogRatio {
                        log_estimate: (mc / mb).ln(),
                        se: (vc / (mc * mc) + vb / (mb * mb)).sqrt(),
                    })
                }
                _ => None,
            };
            let Some(ratio) = ratio else {
                r.verdict = RuleOutcome::Inconclusive;
                r.reason = "too few events (two per arm), or a mean of 0, to compare means".into();
                return Measurement::untested(r);
            };
            let (mb, mc) = (mb.unwrap_or(0.0), mc.unwrap_or(0.0));
            r.ratio = Some(mc / mb);
            r.reason = format!(
                "{} {} vs {} ({})",
                rule.metric_name,
                num(mc),
                num(mb),
                ratio_text(mc / mb)
            );
            Measurement {
                material: margin.exceeded_by_values(mc, mb),
                below_floor: false,
                evidence: Some(Evidence::LogNormal {
                    ratio,
                    boundary: gaussian,
                }),
                counts: None,
                result: r,
            }
        }
    }
}

/// Mean and variance of the mean of an arm's values: per unit (delta method for the ratio
/// metric ΣS/ΣN) when the arm has unit ids, else `s²/n`.
fn mean_var(a: &ArmSample, column: super::policy::ValueColumn) -> (Option<f64>, Option<f64>) {
    let v = a.values(column);
    let n = v.len();
    if n == 0 {
        return (None, None);
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (Some(mean), None);
    }
    if a.clustered() {
        let m = a.ratio_moments(UnitMetric::Sum(column));
        if let Some(var) = stats::ratio_metric_var(&m) {
            return (Some(mean), Some(var));
        }
    }
    let s2 = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (Some(mean), Some(s2 / n as f64))
}

/// Decides one rule in one segment from its measurement.
fn classify(
    m: Measurement,
    rule: &PolicyRule,
    level: f64,
    volume_ok: bool,
    alpha: f64,
    policy: &Policy,
) -> RuleResult {
    let mut r = m.result;
    r.alpha = level;
    let Some(evidence) = m.evidence else {
        return r; // NoData / Inconclusive with its reason, set by `measure`
    };
    let p = r.p_value.unwrap_or(1.0);
    let p_adj = r.p_adjusted.unwrap_or(1.0);
    // The level the abort test effectively applied to this p-value after Holm: rejecting at
    // p_adj <= level is rejecting p at level·p/p_adj, so the lower bound shown at that level
    // exceeds 1 exactly when the test rejects.
    let abort_level = if p_adj > 0.0 {
        (level * p / p_adj).clamp(MIN_LEVEL, 0.5)
    } else {
        level
    };
    let low = evidence.lower(abort_level);
    let high = evidence.upper(alpha);
    r.ci_low = Some(low).filter(|x| x.is_finite());
    r.ci_low_level = Some(abort_level);
    r.ci_high = finite(high);
    r.ci_high_level = alpha;
    let significant = p_adj <= level;
    let base = std::mem::take(&mut r.reason);
    let early = if volume_ok {
        ""
    } else {
        " (before min_events: early-abort level)"
    };
    let threshold = ratio_text(r.threshold);
    let within = Margin::new(rule.max_ratio).covers(high);
    let (outcome, why) = if m.material && !m.below_floor && significant {
        (
            if rule.report_only {
                RuleOutcome::Warn
            } else {
                RuleOutcome::Fail
            },
            format!(
                "{base}: past {threshold} and significantly worse (adjusted p {} <= {}{early})",
                pval(p_adj),
                level
            ),
        )
    } else if within {
        (
            RuleOutcome::Pass,
            format!(
                "{base}: within {threshold} (upper bound {})",
                ratio_text(high)
            ),
        )
    } else {
        let detail = if m.material && m.below_floor {
            format!(
                "past {threshold} on only {} canary events of the kind (a rate rule needs {} to fail)",
                (r.canary.unwrap_or(0.0) * r.n_canary as f64).round(),
                policy.min_rate_events
            )
        } else if m.material {
            format!(
                "past {threshold} but not significantly worse yet (adjusted p {} > {}{early})",
                pval(p_adj),
                level
            )
        } else {
            format!(
                "upper bound {} not yet within {threshold}",
                if high.is_finite() {
                    ratio_text(high)
                } else {
                    "unbounded".into()
                }
            )
        };
        (RuleOutcome::Inconclusive, format!("{base}: {detail}"))
    };
    r.verdict = outcome;
    r.reason = why;
    if outcome == RuleOutcome::Inconclusive {
        set_needs(&mut r, &evidence, alpha, level, rule.max_ratio);
    }
    r
}

/// Fills `needs_*` from the evidence's projected growth factor of the rule's events.
fn set_needs(r: &mut RuleResult, evidence: &Evidence, alpha: f64, abort_level: f64, margin: f64) {
    if let Some(k) = evidence
        .growth_to_settle(alpha, abort_level, margin)
        .filter(|k| *k > 1.0)
    {
        r.needs_baseline = Some(((k - 1.0) * r.n_baseline as f64).ceil() as u64);
        r.needs_canary = Some(((k - 1.0) * r.n_canary as f64).ceil() as u64);
    }
}

/// The evidence for one rule pooled over segments, as a measurement (not yet classified).
/// Rates: Mantel-Haenszel over the segments' counts, or, with unit ids, inverse-variance
/// weighting of the segments' clustered log ratios; means: inverse-variance weighting;
/// percentiles: none (decided per segment, see [`classify_pooled`]).
fn pool(
    rule: &PolicyRule,
    parts: &[&Measurement],
    policy: &Policy,
    clustered: bool,
) -> Measurement {
    let alpha = policy.alpha();
    let n_b: u64 = parts.iter().map(|m| m.result.n_baseline).sum();
    let n_c: u64 = parts.iter().map(|m| m.result.n_canary).sum();
    let mut r = empty_result(rule, n_b, n_c, alpha);
    // Each segment's log ratio, for inverse-variance pooling of means.
    let log_ratios = || -> Vec<LogRatio> {
        parts
            .iter()
            .filter_map(|m| match &m.evidence {
                Some(Evidence::LogNormal { ratio, .. }) => Some(*ratio),
                _ => None,
            })
            .collect()
    };
    if let [only] = parts
        && only.tested()
        && !matches!(rule.metric, Metric::Quantile { .. })
    {
        // One segment: its evidence is the pooled evidence.
        let mut m = Measurement {
            result: only.result.clone(),
            evidence: only.evidence.clone(),
            counts: only.counts,
            material: only.material,
            below_floor: only.below_floor,
        };
        m.result.reason = format!("in the only segment: {}", m.result.reason);
        return m;
    }
    let (ratio, below_floor) = match rule.metric {
        Metric::Quantile { .. } => {
            r.test = "order-statistic bounds per arm, in every segment";
            (None, false)
        }
        Metric::Rate { .. } => {
            let counts: Vec<(u64, u64, u64, u64)> = parts.iter().filter_map(|m| m.counts).collect();
            let sum = |f: fn(&(u64, u64, u64, u64)) -> u64| counts.iter().map(f).sum::<u64>();
            let (xc, nc, xb, nb) = (sum(|c| c.0), sum(|c| c.1), sum(|c| c.2), sum(|c| c.3));
            r.n_canary = nc;
            r.n_baseline = nb;
            r.canary = (nc > 0).then(|| xc as f64 / nc as f64);
            r.baseline = (nb > 0).then(|| xb as f64 / nb as f64);
            // Mantel-Haenszel, which copes with sparse segments (a zero count) where weighting
            // log ratios by inverse variance does not. With unit ids its variance is scaled by
            // the design effect the segments measured: the precision-weighted mean of each
            // segment's per-unit variance over its Poisson variance (at least 1).
            let mut ratio = stats::mantel_haenszel_rate_ratio(&counts);
            r.test = "Mantel-Haenszel rate ratio (Greenland-Robins variance)";
            if clustered {
                let (mut num, mut den) = (0.0, 0.0);
                for m in parts {
                    if let (Some(Evidence::LogNormal { ratio, .. }), Some((xc, _, xb, _))) =
                        (&m.evidence, m.counts)
                    {
                        let poisson = 1.0 / xc as f64 + 1.0 / xb as f64;
                        num += ratio.se * ratio.se / (poisson * poisson);
                        den += 1.0 / poisson;
                    }
                }
                let deff = if den > 0.0 { (num / den).max(1.0) } else { 1.0 };
                if let Some(rr) = &mut ratio {
                    rr.se *= deff.sqrt();
                }
                r.test =
                    "Mantel-Haenszel rate ratio (variance scaled by the per-unit design effect)";
            }
            (ratio, xc < policy.min_rate_events)
        }
        Metric::Mean { .. } => {
            r.test = "inverse-variance pooled log ratio of means";
            (stats::inverse_variance_mean(&log_ratios()), false)
        }
    };
    let Some(ratio) = ratio else {
        r.reason = parts
            .iter()
            .find(|m| !m.tested())
            .map_or("nothing to pool".into(), |m| m.result.reason.clone());
        return Measurement::untested(r);
    };
    let evidence = Evidence::LogNormal {
        ratio,
        boundary: Boundary::for_margin(policy.sequential, alpha, rule.max_ratio),
    };
    let estimate = evidence.estimate();
    r.ratio = finite(estimate);
    r.p_value = Some(evidence.p_value());
    r.reason = format!(
        "pooled over segments {}",
        r.ratio.map_or("unbounded".into(), ratio_text)
    );
    Measurement {
        result: r,
        material: Margin::new(rule.max_ratio).exceeded_by_values(estimate, 1.0),
        below_floor,
        evidence: Some(evidence),
        counts: None,
    }
}

/// Decides a rule on its pooled evidence; percentile rules, which do not pool, pass only when
/// every segment passes.
fn classify_pooled(
    m: Measurement,
    rule: &PolicyRule,
    seg_results: &[&RuleResult],
    level: f64,
    volume_ok: bool,
    policy: &Policy,
) -> RuleResult {
    let alpha = policy.alpha();
    let any_fail = seg_results.iter().any(|s| s.verdict == RuleOutcome::Fail);
    if seg_results.is_empty() || seg_results.iter().all(|s| s.verdict == RuleOutcome::NoData) {
        let mut r = m.result;
        r.alpha = level;
        r.reason = seg_results
            .first()
            .map_or("no segment has both arms".into(), |s| s.reason.clone());
        return r;
    }
    if !matches!(rule.metric, Metric::Quantile { .. }) {
        let mut r = classify(m, rule, level, volume_ok, alpha, policy);
        if any_fail && r.verdict != RuleOutcome::Fail {
            r.verdict = RuleOutcome::Fail;
            r.reason = format!("{}; failed in a segment", r.reason);
        }
        return r;
    }
    let mut r = m.result;
    r.alpha = level;
    let threshold = ratio_text(rule.max_ratio);
    let passing = seg_results
        .iter()
        .filter(|s| s.verdict == RuleOutcome::Pass)
        .count();
    let worst = seg_results
        .iter()
        .map(|s| s.ci_high.unwrap_or(f64::INFINITY))
        .fold(0.0_f64, f64::max);
    r.ci_high = finite(worst);
    r.verdict = if any_fail {
        RuleOutcome::Fail
    } else if passing == seg_results.len() {
        RuleOutcome::Pass
    } else {
        RuleOutcome::Inconclusive
    };
    r.reason = format!(
        "{passing} of {} segments within {threshold} (largest upper bound {})",
        seg_results.len(),
        ratio_text(worst)
    );
    if r.verdict == RuleOutcome::Inconclusive {
        let open: Vec<&&RuleResult> = seg_results
            .iter()
            .filter(|s| s.verdict != RuleOutcome::Pass)
            .collect();
        if open.iter().all(|s| s.needs_canary.is_some()) {
            r.needs_baseline = Some(open.iter().filter_map(|s| s.needs_baseline).sum());
            r.needs_canary = Some(open.iter().filter_map(|s| s.needs_canary).sum());
        }
    }
    r
}

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

/// A value for people: 3 significant digits, no float noise (`2683.9`, `0.0123`).
pub fn num(x: f64) -> String {
    crate::report::sig(x, 4)
}

fn pval(p: f64) -> String {
    if p < 1e-4 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::policy::ValueColumn;
    use crate::judge::samples::{EventObs, SegmentSample};
    use std::collections::BTreeSet;

    /// `n` events, `flagged` of them flagged, durations cycling 100..=1099.
    fn arm(n: u64, flagged: u64, unit: impl Fn(u64) -> Option<u64>) -> ArmSample {
        let mut a = ArmSample::default();
        for i in 0..n {
            a.push(
                EventObs {
                    flagged: i < flagged,
                    ..EventObs::default()
                },
                &[
                    (ValueColumn::DurationMs, 100.0 + (i % 1000) as f64),
                    (ValueColumn::TokensIn, 800.0),
                ],
                unit(i),
            );
        }
        a
    }

    fn samples(segments: Vec<(&str, ArmSample, ArmSample)>) -> Samples {
        let mut s = Samples {
            segment_by: vec!["tier".into()],
            ..Samples::default()
        };
        for (name, baseline, canary) in segments {
            s.segments
                .insert(vec![name.into()], SegmentSample { baseline, canary });
        }
        s
    }

    fn policy(toml_rules: &str) -> Policy {
        Policy::from_toml(&format!("segment_by = [\"tier\"]\n{toml_rules}")).unwrap()
    }

    const FLAGGED: &str = "[[rules]]\nmetric = 'flagged_rate'\nmax_ratio = 1.5\n";

    #[test]
    fn a_segment_only_the_canary_serves_is_invalid_and_named() {
        let s = samples(vec![
            ("free", arm(5000, 150, |_| None), arm(5000, 150, |_| None)),
            ("gold", ArmSample::default(), arm(300, 9, |_| None)),
        ]);
        let v = judge(s, &policy(FLAGGED), None);
        assert_eq!(v.verdict, Decision::Invalid);
        assert!(v.reason.contains("tier=gold"), "{}", v.reason);
    }

    #[test]
    fn a_segment_the_canary_has_not_reached_yet_waits() {
        // 3 expected canary events in "rare": bad luck, not a broken comparison.
        let s = samples(vec![
            ("free", arm(20000, 600, |_| None), arm(1000, 30, |_| None)),
            ("rare", arm(60, 2, |_| None), ArmSample::default()),
        ]);
        let v = judge(s, &policy(FLAGGED), None);
        assert_eq!(v.verdict, Decision::Continue, "{}", v.reason);
        let rare = v.segments.iter().find(|g| g.key["tier"] == "rare").unwrap();
        assert_eq!(rare.verdict, Decision::Continue);
        // Expected 60 · 1000/20060 ≈ 3.0 canary events there.
        assert!(rare.reason.contains("3.0 expected"), "{}", rare.reason);
    }

    #[test]
    fn promote_needs_evidence_and_says_which_rule_is_open() {
        // Identical 3% flagged at 300 per arm: nothing fails, nothing is shown either.
        let s = samples(vec![("free", arm(300, 9, |_| None), arm(300, 9, |_| None))]);
        let v = judge(s, &policy(FLAGGED), None);
        assert_eq!(v.verdict, Decision::Continue);
        assert_eq!(v.deciding, ["flagged_rate"]);
        let r = &v.overall[0];
        assert_eq!(r.verdict, RuleOutcome::Inconclusive);
        assert!(r.needs_canary.unwrap() > 0);
        assert!(
            v.reason.contains("not yet shown within 1.50x"),
            "{}",
            v.reason
        );
        // With plenty of events the same rates are shown within 1.5x.
        let s = samples(vec![(
            "free",
            arm(40000, 1200, |_| None),
            arm(40000, 1200, |_| None),
        )]);
        let v = judge(s, &policy(FLAGGED), None);
        assert_eq!(v.verdict, Decision::Promote, "{}", v.reason);
        assert!(v.overall[0].ci_high.unwrap() <= 1.5);
    }

    #[test]
    fn an_abort_only_rule_never_holds_promotion_but_is_reported() {
        let rules = format!(
            "{FLAGGED}[[rules]]\nmetric = 'bad_label_rate'\nmax_ratio = 1.1\nabort_only = true\n"
        );
        let mut b = arm(40000, 1200, |_| None);
        let mut c = arm(40000, 1200, |_| None);
        b.add_labels(40, 4, None);
        c.add_labels(40, 4, None);
        let v = judge(samples(vec![("free", b, c)]), &policy(&rules), None);
        assert_eq!(v.verdict, Decision::Promote, "{}", v.reason);
        assert_eq!(v.unproven.len(), 1);
        assert!(v.unproven[0].contains("abort-only"), "{:?}", v.unproven);
    }

    #[test]
    fn pinned_knobs_that_differ_make_the_verdict_invalid() {
        let mut s = samples(vec![(
            "free",
            arm(1000, 30, |_| None),
            arm(1000, 30, |_| None),
        )]);
        s.pins.insert(
            "top_k".into(),
            BTreeMap::from([
                (Arm::Baseline, BTreeSet::from(["5".to_string()])),
                (Arm::Canary, BTreeSet::from(["8".to_string()])),
            ]),
        );
        let v = judge(s, &policy(FLAGGED), None);
        assert_eq!(v.verdict, Decision::Invalid);
        assert!(
            v.reason.contains("top_k") && v.reason.contains('8'),
            "{}",
            v.reason
        );
    }

    #[test]
    fn sample_ratio_counts_units_when_there_are_some_and_only_warns_on_events() {
        // 5% planned; events say 10% (a few heavy canary users), units say 5%.
        let s = samples(vec![(
            "free",
            arm(9000, 270, |i| Some(i % 950)),
            arm(1000, 30, |i| Some(10_000 + i % 50)),
        )]);
        let mut with_units = s.clone();
        with_units.distinct_units = Some((950, 50));
        let v = judge(with_units, &policy(FLAGGED), Some(0.05));
        let srm = v.srm.as_ref().unwrap();
        assert_eq!(srm.basis, "units");
        assert!(!srm.mismatch);
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        // Without unit ids the event counts are checked, and a mismatch only warns.
        let v = judge(s, &policy(FLAGGED), Some(0.05));
        let srm = v.srm.as_ref().unwrap();
        assert_eq!(srm.basis, "events");
        assert!(srm.mismatch);
        assert_ne!(v.verdict, Decision::Invalid);
        assert_eq!(v.warnings.len(), 1);
    }

    #[test]
    fn correlated_units_widen_rate_bounds() {
        // 20 units; flagged events concentrated in two of them.
        let units = |base: u64| move |i: u64| Some(base + i % 20);
        let mut b = ArmSample::default();
        let mut c = ArmSample::default();
        for (a, base) in [(&mut b, 0), (&mut c, 100)] {
            for i in 0..4000u64 {
                let unit = units(base)(i);
                let flagged = unit.unwrap() % 20 < 2 && i % 3 == 0;
                a.push(
                    EventObs {
                        flagged,
                        ..EventObs::default()
                    },
                    &[],
                    unit,
                );
            }
        }
        let clustered = judge(
            samples(vec![("free", b.clone(), c.clone())]),
            &policy(FLAGGED),
            None,
        );
        b.drop_units();
        c.drop_units();
        let plain = judge(samples(vec![("free", b, c)]), &policy(FLAGGED), None);
        assert!(clustered.clustered && !plain.clustered);
        let width = |v: &Verdict| v.overall[0].ci_high.unwrap_or(f64::INFINITY);
        assert!(width(&clustered) > width(&plain));
    }

    #[test]
    fn a_segment_with_a_zero_count_counts_in_the_clustered_pool() {
        // "pro" has no flagged baseline events and 30 flagged canary events: it must pull the
        // pooled ratio up (Mantel-Haenszel: (60 + 15) / 60 = 1.25), not drop out or be weighted
        // away as an inverse-variance mean of log ratios would.
        let unit = |base: u64| move |i: u64| Some(base + i % 400);
        let s = samples(vec![
            (
                "free",
                arm(4000, 120, unit(0)),
                arm(4000, 120, unit(10_000)),
            ),
            (
                "pro",
                arm(2000, 0, unit(20_000)),
                arm(2000, 30, unit(30_000)),
            ),
        ]);
        let v = judge(s, &policy(FLAGGED), None);
        assert!(v.clustered);
        let pooled = &v.overall[0];
        assert!((pooled.ratio.unwrap() - 1.25).abs() < 1e-9, "{pooled:#?}");
        assert!(pooled.test.contains("design effect"));
    }
}
