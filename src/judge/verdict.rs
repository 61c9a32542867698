//! The decision, in small steps that each record why: per rule and segment a measurement
//! ([`super::measure`]), the same rule stratified over segments, Holm's adjustment across the
//! family for the abort side, a classification of each rule (fail / pass / inconclusive), each
//! segment's part, then the canary.
//!
//! Two questions, answered differently (see `STATS.md`):
//! - **Abort?** Only when a stop condition holds with evidence: a rule fails when the
//!   always-valid lower bound of its ratio is above its threshold (the one-sided test of
//!   "ratio > max_ratio", Holm-adjusted over every gating rule × segment and the stratified
//!   estimates). A canary at or inside a threshold is then aborted at most at the nominal rate
//!   however often it is judged. Per segment, so a regression confined to one segment aborts;
//!   stratified, so one spread thinly over all of them aborts too. A rule may opt in to
//!   aborting on any significant deterioration (`abort_on = "any_harm"`: lower bound above 1).
//!   Before `min_events`, a test needs `early_abort_alpha` (the catastrophe path).
//! - **Promote?** Only on evidence: for every rule that must pass, the one-sided upper bound of
//!   the estimate stratified over segments is at or below the threshold (non-inferiority;
//!   requiring all of them is an intersection-union test, Berger 1982, valid at level α with no
//!   correction). Stratified estimates compare within segments (Simpson-safe) and let small
//!   segments count for what they weigh: a segment too small to judge alone never holds a
//!   canary. A regression confined to one segment is kept from being averaged away by the
//!   material-segment rule: a segment with at least `material_share` of an arm's events must
//!   reach `min_events` per arm and must not have an estimate past a threshold.
//! - Otherwise: continue, with the events that would settle each open rule, or why no number
//!   of events would.

use std::collections::BTreeMap;

use serde::Serialize;

use super::evidence::Settle;
use super::measure::{Measurement, measure, pool};
use super::policy::{AbortOn, Policy, PolicyRule};
use super::samples::{Arm, Samples};
use super::sequential::MIN_LEVEL;
use super::stats::{self, Margin};

/// Version of the JSON document [`Verdict`] serializes to.
pub const SCHEMA_VERSION: u32 = 3;

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

/// Outcome of one rule (in one segment, or stratified over segments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleOutcome {
    /// Evidence that the ratio is within the threshold (upper bound at or below it).
    Pass,
    /// The stop condition holds with evidence: aborts the canary.
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

/// One rule judged in one segment, or stratified over all segments.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleResult {
    pub rule: String,
    pub metric: String,
    pub test: String,
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
    /// abort test applied (`ci_low_level`, after Holm), above `abort_above` exactly when the
    /// rule fails; `ci_high` the one-sided upper bound at 1 - confidence (`ci_high_level`) that
    /// a pass needs at or below `threshold`. Null = unbounded.
    pub ci_low: Option<f64>,
    pub ci_low_level: Option<f64>,
    pub ci_high: Option<f64>,
    pub ci_high_level: f64,
    pub threshold: f64,
    /// The ratio the abort test must show the canary above: the threshold, or 1 for a rule
    /// with `abort_on = "any_harm"`.
    pub abort_above: f64,
    /// The point estimate is past the threshold (compared exactly).
    pub past_threshold: bool,
    /// Standard error of the log ratio (null when it cannot be estimated): how precisely the
    /// rule is measured here.
    pub log_se: Option<f64>,
    /// Always-valid one-sided p-value of "ratio > abort_above", and after Holm.
    pub p_value: Option<f64>,
    pub p_adjusted: Option<f64>,
    /// Significance the adjusted p-value had to reach (1 - confidence, or early_abort_alpha).
    pub alpha: f64,
    pub verdict: RuleOutcome,
    pub reason: String,
    /// For an inconclusive rule: about how many more events per arm would settle it at the
    /// current estimates (a projection, not a promise)...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs_baseline: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs_canary: Option<u64>,
    /// ...or why no number of events would (instead of a number).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cannot_settle: Option<String>,
    /// When `log_se` is above half the log threshold: the events that would measure the rule
    /// that precisely, or why none would (what a material segment waits for; in its `holds`).
    #[serde(skip)]
    pub precision: Option<Settle>,
}

impl RuleResult {
    /// Whether the rule decides promotion (neither report-only nor abort-only).
    pub fn gating(&self) -> bool {
        !self.report_only && !self.abort_only
    }

    /// For an open rule, what would settle it, in words: about how many more events per arm
    /// (at the current estimates), or why no number would. `None` when neither is known.
    pub fn what_settles(&self) -> Option<String> {
        match (&self.cannot_settle, self.needs_canary, self.needs_baseline) {
            (Some(why), _, _) => Some(format!("cannot be shown on this data: {why}")),
            (None, Some(c), Some(b)) => Some(format!(
                "about {c} more canary and {b} more baseline events"
            )),
            _ => None,
        }
    }
}

/// One segment's part in the verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentVerdict {
    pub key: BTreeMap<String, String>,
    pub n_baseline: u64,
    pub n_canary: u64,
    /// The larger of the segment's shares of the baseline's and the canary's events.
    pub share: f64,
    /// At least `material_share`: it must reach `min_events` and show no estimate past a
    /// threshold before the canary is promoted.
    pub material: bool,
    /// `abort` (a rule failed here), `continue` (it holds the canary), `promote` (it does not).
    pub verdict: Decision,
    pub reason: String,
    /// Why a material segment holds the canary (empty when it does not).
    pub holds: Vec<String>,
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

/// Which model snapshots answered each arm of one segment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResponseModels {
    pub segment: BTreeMap<String, String>,
    pub baseline: BTreeMap<String, u64>,
    pub canary: BTreeMap<String, u64>,
    /// Both arms name response models here, and not the same set.
    pub differs: bool,
}

/// Per segment, the response models of each arm; a line for each segment whose two arms were
/// answered by different sets of them. Events without a response model (older loggers) are
/// left out: an arm none of whose events name one is not compared.
fn response_model_drift(samples: &Samples) -> (Vec<ResponseModels>, Vec<String>) {
    let mut all = Vec::new();
    let mut lines = Vec::new();
    for (key, seg) in &samples.segments {
        let (b, c) = (&seg.baseline.response_models, &seg.canary.response_models);
        if b.is_empty() && c.is_empty() {
            continue;
        }
        let differs = !b.is_empty() && !c.is_empty() && !b.keys().eq(c.keys());
        let segment = key_map(&samples.segment_by, key);
        if differs {
            let show = |m: &BTreeMap<String, u64>| {
                m.iter()
                    .map(|(k, n)| format!("{k} ({n})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            lines.push(format!(
                "segment {}: the arms were answered by different model snapshots: baseline by {}, canary by {} (events in brackets); the canary's difference may be the model's, not the prompt's",
                segment_label(&segment),
                show(b),
                show(c)
            ));
        }
        all.push(ResponseModels {
            segment,
            baseline: b.clone(),
            canary: c.clone(),
            differs,
        });
    }
    (all, lines)
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
    pub material_share: f64,
    pub early_abort_alpha: f64,
    /// Whether bounds are always valid over repeated looks.
    pub sequential: bool,
    /// Whether variances are per unit (events carried unit ids).
    pub clustered: bool,
    /// Number of gating tests Holm's adjustment covered.
    pub tests: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srm: Option<SrmCheck>,
    /// Per segment, the events of each arm per response model (the snapshot that answered),
    /// where events name one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub response_models: Vec<ResponseModels>,
    /// Problems that make the comparison untrustworthy (verdict `invalid`).
    pub problems: Vec<String>,
    /// Things worth knowing that do not change the verdict.
    pub warnings: Vec<String>,
    /// Rules that decided the verdict (failed, or still open), by name.
    pub deciding: Vec<String>,
    /// Rules that hold no promotion but were not shown within their threshold.
    pub unproven: Vec<String>,
    /// Per rule, the evidence stratified over segments (what a promotion is decided on).
    pub overall: Vec<RuleResult>,
    pub segments: Vec<SegmentVerdict>,
    /// Assumptions behind the statistics.
    pub assumptions: Vec<String>,
}

/// Judges `samples` under `policy`. `expected_share` is the planned canary share, for the
/// sample-ratio-mismatch check.
pub fn judge(mut samples: Samples, policy: &Policy, expected_share: Option<f64>) -> Verdict {
    samples.settle_units();
    let alpha = policy.alpha();
    let clustered = samples.clustered();
    let n_baseline = samples.total(Arm::Baseline);
    let n_canary = samples.total(Arm::Canary);
    let mut warnings = policy.notes.clone();
    let (mut problems, srm) = check_comparison(&samples, expected_share, &mut warnings);
    let (response_models, drift) = response_model_drift(&samples);
    if policy.allow_response_model_drift {
        warnings.extend(
            drift
                .into_iter()
                .map(|d| format!("{d} (allowed by the policy)")),
        );
    } else if let Some((last, rest)) = drift.split_last() {
        problems.extend_from_slice(rest);
        problems.push(format!(
            "{last}. Judge again on a window where both arms ran on one snapshot (--since after the switch), or set allow_response_model_drift = true in the policy to judge across it"
        ));
    }
    let share_of = |nb: u64, nc: u64| {
        (nb as f64 / n_baseline.max(1) as f64).max(nc as f64 / n_canary.max(1) as f64)
    };

    // Step 1: measure every rule in every segment with both arms.
    let mut segments: Vec<(Vec<String>, u64, u64, Vec<Measurement>)> = Vec::new();
    for (key, seg) in samples.segments.iter_mut() {
        let (nb, nc) = (seg.baseline.n, seg.canary.n);
        if nb == 0 || nc == 0 {
            continue; // reported by check_comparison, or waiting (see below)
        }
        let ms = policy
            .rules
            .iter()
            .map(|rule| measure(rule, &mut seg.baseline, &mut seg.canary, policy))
            .collect();
        segments.push((key.clone(), nb, nc, ms));
    }

    // Step 2: each rule's evidence stratified over segments.
    let mut pooled_ms: Vec<Measurement> = policy
        .rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let parts: Vec<&Measurement> = segments.iter().map(|s| &s.3[i]).collect();
            pool(rule, &parts, policy, clustered)
        })
        .collect();
    // With one segment the stratified test is that segment's test: not tested twice.
    let pooled_tested = segments.len() > 1;

    // Step 3: Holm over the gating tests (every segment's, and the stratified ones), and
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

    // Step 4: classify each rule per segment, then stratified.
    let level_for = |ok: bool| if ok { alpha } else { policy.early_abort_alpha };
    let mut classified: Vec<(Vec<String>, u64, u64, Vec<RuleResult>)> = Vec::new();
    for (key, nb, nc, ms) in segments {
        let volume_ok = nb >= policy.min_events && nc >= policy.min_events;
        let rules = ms
            .into_iter()
            .zip(&policy.rules)
            .map(|(m, rule)| classify(m, rule, level_for(volume_ok), volume_ok, policy))
            .collect();
        classified.push((key, nb, nc, rules));
    }
    let volume_ok = n_baseline >= policy.min_events && n_canary >= policy.min_events;
    let overall: Vec<RuleResult> = pooled_ms
        .into_iter()
        .zip(&policy.rules)
        .enumerate()
        .map(|(i, (mut m, rule))| {
            if !pooled_tested && let Some((_, _, _, rs)) = classified.first() {
                // One segment: its own test and outcome are the stratified ones.
                m.result.p_adjusted = rs[i].p_adjusted;
            }
            let mut r = classify(m, rule, level_for(volume_ok), volume_ok, policy);
            let failed_in_segment = classified
                .iter()
                .any(|(_, _, _, rs)| rs[i].verdict == RuleOutcome::Fail);
            if failed_in_segment && r.verdict != RuleOutcome::Fail && !rule.report_only {
                r.verdict = RuleOutcome::Fail;
                r.reason = format!("{}; failed in a segment", r.reason);
            }
            r
        })
        .collect();

    // Step 5: each segment's part.
    let mut out_segments = Vec::new();
    for (key, nb, nc, rules) in classified {
        let share = share_of(nb, nc);
        out_segments.push(segment_verdict(
            key_map(&samples.segment_by, &key),
            nb,
            nc,
            share,
            rules,
            policy,
        ));
    }
    // Segments one arm has not reached yet (few events expected there): material ones wait.
    let split = n_canary as f64 / n_baseline.max(1) as f64;
    for (key, seg) in &samples.segments {
        let (nb, nc) = (seg.baseline.n, seg.canary.n);
        let label = segment_label(&key_map(&samples.segment_by, key));
        if (nb > 0 && nc > 0) || problems.iter().any(|p| p.contains(&label)) {
            continue;
        }
        let (missing, expected) = if nc == 0 {
            ("canary", nb as f64 * split)
        } else {
            ("baseline", nc as f64 / split.max(f64::MIN_POSITIVE))
        };
        let share = share_of(nb, nc);
        let material = share >= policy.material_share;
        out_segments.push(SegmentVerdict {
            key: key_map(&samples.segment_by, key),
            n_baseline: nb,
            n_canary: nc,
            share,
            material,
            verdict: if material {
                Decision::Continue
            } else {
                Decision::Promote
            },
            reason: format!(
                "the {missing} has no events here yet (about {expected:.1} expected at the current split){}",
                if material {
                    ""
                } else {
                    "; a minor segment, it does not hold the canary"
                }
            ),
            holds: if material {
                vec![format!("no {missing} events yet")]
            } else {
                Vec::new()
            },
            needs_baseline: if material {
                policy.min_events.saturating_sub(nb)
            } else {
                0
            },
            needs_canary: if material {
                policy.min_events.saturating_sub(nc)
            } else {
                0
            },
            rules: Vec::new(),
        });
    }
    out_segments.sort_by(|a, b| a.key.cmp(&b.key));

    // Step 6: the canary.
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
                    bound_text(r.ci_high)
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
    let (verdict, reason, deciding) = if !problems.is_empty() {
        (Decision::Invalid, problems.join("; "), Vec::new())
    } else {
        decide(
            &overall,
            &out_segments,
            policy,
            volume_ok,
            n_baseline,
            n_canary,
        )
    };

    let mut assumptions = vec![if clustered {
        "events carry unit_id: variances are per unit (delta method for ratio metrics; design effect for percentiles) whenever that is the larger, so correlated events of one unit are not counted as independent evidence and a handful of units cannot narrow a bound".to_string()
    } else {
        "events are treated as independent (they carry no unit_id); calls from one user are correlated, so bounds are optimistic when a few users dominate traffic".to_string()
    }];
    assumptions.push(if policy.sequential {
        "bounds and p-values are always valid (confidence sequences): judging the canary again as data arrives keeps the error rates at their nominal level".to_string()
    } else {
        "fixed-horizon bounds: valid for one planned look; judging repeatedly inflates both error rates".to_string()
    });
    assumptions.push(format!(
        "canary and baseline are compared within each segment over the canary's time span and combined by stratification; a segment under {}% of an arm's events counts for what it weighs and never holds the canary alone",
        stats_pct(policy.material_share)
    ));

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
        material_share: policy.material_share,
        early_abort_alpha: policy.early_abort_alpha,
        sequential: policy.sequential,
        clustered,
        tests,
        srm,
        response_models,
        problems,
        warnings,
        deciding,
        unproven,
        overall,
        segments: out_segments,
        assumptions,
    }
}

/// A segment's part: abort when a rule failed here; hold the canary (continue) when it is
/// material and below `min_events`, past a threshold in a gating rule's estimate, or unable to
/// judge a gating rule; otherwise it does not hold the canary.
fn segment_verdict(
    key: BTreeMap<String, String>,
    nb: u64,
    nc: u64,
    share: f64,
    rules: Vec<RuleResult>,
    policy: &Policy,
) -> SegmentVerdict {
    let material = share >= policy.material_share;
    let volume_ok = nb >= policy.min_events && nc >= policy.min_events;
    let failed: Vec<String> = rules
        .iter()
        .filter(|r| r.verdict == RuleOutcome::Fail)
        .map(|r| {
            format!(
                "{} (lower bound {} above {})",
                r.rule,
                bound_text(r.ci_low),
                ratio_text(r.abort_above)
            )
        })
        .collect();
    let mut holds: Vec<String> = Vec::new();
    let (mut needs_baseline, mut needs_canary) = (0, 0);
    if material {
        if !volume_ok {
            holds.push(format!(
                "below min_events of {} per arm: {nb} baseline, {nc} canary",
                policy.min_events
            ));
            needs_baseline = policy.min_events.saturating_sub(nb);
            needs_canary = policy.min_events.saturating_sub(nc);
        }
        for r in rules.iter().filter(|r| holds_its_segment(r)) {
            let enough = guard_se(r.threshold);
            match r.log_se {
                None => holds.push(format!("{} cannot be judged here yet", r.rule)),
                Some(se) if se > enough => match &r.precision {
                    Some(Settle::Never(why)) => holds.push(format!(
                        "{} cannot be measured to within half its threshold here: {why}",
                        r.rule
                    )),
                    _ => {
                        let k = match r.precision {
                            Some(Settle::After(k)) => k,
                            // Events grow the information linearly.
                            _ => (se / enough).powi(2),
                        };
                        needs_baseline =
                            needs_baseline.max(((k - 1.0) * r.n_baseline as f64).ceil() as u64);
                        needs_canary =
                            needs_canary.max(((k - 1.0) * r.n_canary as f64).ceil() as u64);
                        holds.push(format!(
                            "{} not yet precise here (log-ratio standard error {:.2}, needs {:.2})",
                            r.rule, se, enough
                        ));
                    }
                },
                Some(_) => {
                    holds.push(format!(
                        "{} estimate {} past {}",
                        r.rule,
                        bound_text(r.ratio),
                        ratio_text(r.threshold)
                    ));
                    needs_baseline = needs_baseline.max(r.needs_baseline.unwrap_or(0));
                    needs_canary = needs_canary.max(r.needs_canary.unwrap_or(0));
                }
            }
        }
    }
    let too_small = !volume_ok
        || rules
            .iter()
            .any(|r| r.gating() && r.p_value.is_none() && r.verdict != RuleOutcome::NoData);
    let (verdict, reason) = if !failed.is_empty() {
        (Decision::Abort, format!("{} failed", failed.join(", ")))
    } else if !holds.is_empty() {
        (
            Decision::Continue,
            format!(
                "material segment ({}% of an arm's events) holds the canary: {}",
                stats_pct(share),
                holds.join("; ")
            ),
        )
    } else if !material {
        (
            Decision::Promote,
            format!(
                "minor segment ({}% of an arm's events){}: counts in the stratified estimates for what it weighs, never holds the canary alone",
                stats_pct(share),
                if too_small {
                    ", too small to judge alone"
                } else {
                    ""
                }
            ),
        )
    } else {
        (
            Decision::Promote,
            "nothing in this segment holds the canary".to_string(),
        )
    };
    SegmentVerdict {
        key,
        n_baseline: nb,
        n_canary: nc,
        share,
        material,
        verdict,
        reason,
        needs_baseline,
        needs_canary,
        rules,
        holds,
    }
}

/// The call, from the stratified rules and the segments: abort, continue or promote, the
/// one-line reason naming the rule, place and bound that made it, and the deciding rules.
fn decide(
    overall: &[RuleResult],
    segments: &[SegmentVerdict],
    policy: &Policy,
    volume_ok: bool,
    n_baseline: u64,
    n_canary: u64,
) -> (Decision, String, Vec<String>) {
    let gating: Vec<(&RuleResult, &PolicyRule)> = overall
        .iter()
        .zip(&policy.rules)
        .filter(|(_, p)| p.must_pass())
        .collect();
    // Abort: every failed rule, with where and the bound that showed it.
    let mut failed: Vec<(String, Vec<String>)> = Vec::new();
    for seg in segments.iter().filter(|s| s.verdict == Decision::Abort) {
        for r in seg.rules.iter().filter(|r| r.verdict == RuleOutcome::Fail) {
            let place = format!(
                "{} (lower bound {} above {})",
                segment_label(&seg.key),
                bound_text(r.ci_low),
                ratio_text(r.abort_above)
            );
            match failed.iter_mut().find(|(name, _)| *name == r.rule) {
                Some((_, places)) => places.push(place),
                None => failed.push((r.rule.clone(), vec![place])),
            }
        }
    }
    // A regression spread over segments can fail stratified without failing in any one.
    for r in overall
        .iter()
        .filter(|r| r.verdict == RuleOutcome::Fail && !r.report_only)
    {
        if !failed.iter().any(|(name, _)| *name == r.rule) {
            failed.push((
                r.rule.clone(),
                vec![format!(
                    "all segments stratified (lower bound {} above {})",
                    bound_text(r.ci_low),
                    ratio_text(r.abort_above)
                )],
            ));
        }
    }
    if !failed.is_empty() {
        let parts: Vec<String> = failed
            .iter()
            .map(|(rule, places)| match places.len() {
                1 | 2 => format!("{rule} in {}", places.join(" and ")),
                n => format!(
                    "{rule} in {n} of {} segments, first {}",
                    segments.len(),
                    places[0]
                ),
            })
            .collect();
        let deciding = failed.into_iter().map(|(r, _)| r).collect();
        return (
            Decision::Abort,
            format!("stop condition hit: {}", parts.join("; ")),
            deciding,
        );
    }
    let mut parts: Vec<String> = Vec::new();
    let mut deciding = Vec::new();
    if !volume_ok {
        parts.push(format!(
            "below min_events ({} per arm; has {n_baseline} baseline, {n_canary} canary)",
            policy.min_events
        ));
    }
    for (r, _) in gating
        .iter()
        .filter(|(r, _)| !matches!(r.verdict, RuleOutcome::Pass | RuleOutcome::NoData))
    {
        deciding.push(r.rule.clone());
        let settle = r
            .what_settles()
            .map(|t| format!("; {t}"))
            .unwrap_or_default();
        parts.push(format!(
            "{} not yet shown within {} (upper bound {}{settle})",
            r.rule,
            ratio_text(r.threshold),
            bound_text(r.ci_high)
        ));
    }
    let holding: Vec<&SegmentVerdict> = segments
        .iter()
        .filter(|s| s.verdict == Decision::Continue)
        .collect();
    for s in &holding {
        for r in s.rules.iter().filter(|r| holds_its_segment(r)) {
            if !deciding.contains(&r.rule) {
                deciding.push(r.rule.clone());
            }
        }
    }
    if !holding.is_empty() {
        let each: Vec<String> = holding
            .iter()
            .map(|s| format!("{} ({})", segment_label(&s.key), s.holds.join("; ")))
            .collect();
        parts.push(format!(
            "held by {} material segment{}: {}",
            holding.len(),
            if holding.len() == 1 { "" } else { "s" },
            each.join("; ")
        ));
    }
    if !parts.is_empty() {
        return (
            Decision::Continue,
            format!("no rule failed; {}", parts.join("; ")),
            deciding,
        );
    }
    let shown: Vec<String> = gating
        .iter()
        .filter(|(r, _)| r.verdict == RuleOutcome::Pass)
        .map(|(r, _)| format!("{} <= {}", r.rule, bound_text(r.ci_high)))
        .collect();
    let material = segments.iter().filter(|s| s.material).count();
    (
        Decision::Promote,
        if segments.len() == 1 {
            format!(
                "evidence that every gating rule is within its threshold ({})",
                shown.join(", ")
            )
        } else {
            format!(
                "evidence that every gating rule is within its threshold ({}) on the estimates stratified over {} segments; none of the {material} material ones holds the canary",
                shown.join(", "),
                segments.len(),
            )
        },
        gating.iter().map(|(r, _)| r.rule.clone()).collect(),
    )
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

/// Whether this rule, in a material segment, holds the canary: a gating rule that did not fail
/// and is either not measured precisely enough here to be trusted (standard error of the log
/// ratio above half the log threshold, or none at all) or has its estimate past the threshold.
/// Measured to within half the threshold, a segment at par shows an estimate past it in at most
/// 2.3% of looks, so its estimate can be trusted.
pub fn holds_its_segment(r: &RuleResult) -> bool {
    if !r.gating() || matches!(r.verdict, RuleOutcome::Fail | RuleOutcome::NoData) {
        return false;
    }
    match r.log_se {
        None => true,
        Some(se) => se > guard_se(r.threshold) || r.past_threshold,
    }
}

/// The standard error of a log ratio (at most) at which a material segment's estimate is
/// trusted to say whether the segment is past `threshold`: half the log threshold (a threshold
/// of exactly 1 is taken as 1.01).
fn guard_se(threshold: f64) -> f64 {
    threshold.max(1.01).ln() / 2.0
}

/// A bound for people; `None` is unbounded.
fn bound_text(x: Option<f64>) -> String {
    x.map_or("unbounded".into(), ratio_text)
}

/// A share as a percentage with meaningful digits (`5`, `0.15`).
fn stats_pct(share: f64) -> String {
    crate::report::sig(100.0 * share, 2)
}

/// Decides one rule (in one segment, or stratified) from its measurement.
fn classify(
    m: Measurement,
    rule: &PolicyRule,
    level: f64,
    volume_ok: bool,
    policy: &Policy,
) -> RuleResult {
    let alpha = policy.alpha();
    let mut r = m.result;
    r.alpha = level;
    r.past_threshold = m.past_threshold;
    let Some(evidence) = m.evidence else {
        return r; // NoData / Inconclusive with its reason, set by `measure`
    };
    r.log_se = evidence
        .log_ratio_at(1.0)
        .map(|x| x.se)
        .filter(|se| se.is_finite());
    if r.log_se.is_none_or(|se| se > guard_se(r.threshold)) {
        r.precision = Some(evidence.growth_to_precision(guard_se(r.threshold)));
    }
    let p = r.p_value.unwrap_or(1.0);
    let p_adj = r.p_adjusted.unwrap_or(1.0);
    // The level the abort test effectively applied to this p-value after Holm: rejecting at
    // p_adj <= level is rejecting p at level·p/p_adj, so the lower bound shown at that level
    // exceeds `abort_above` exactly when the test rejects.
    let abort_level = if p_adj > 0.0 {
        (level * p / p_adj).clamp(MIN_LEVEL, 0.5)
    } else {
        level
    };
    let low = evidence.lower(abort_level);
    let high = evidence.upper(alpha);
    r.ci_low = Some(low).filter(|x| x.is_finite());
    r.ci_low_level = Some(abort_level);
    r.ci_high = high.is_finite().then_some(high);
    r.ci_high_level = alpha;
    let significant = p_adj <= level;
    let base = std::mem::take(&mut r.reason);
    let early = if volume_ok {
        ""
    } else {
        " (before min_events: early-abort level)"
    };
    let threshold = ratio_text(r.threshold);
    let above = match rule.abort_on {
        AbortOn::Threshold => format!("past {threshold}"),
        AbortOn::AnyHarm => "worse than the baseline (abort_on = any_harm)".to_string(),
    };
    let (outcome, why) = if significant && !m.below_floor {
        (
            if rule.report_only {
                RuleOutcome::Warn
            } else {
                RuleOutcome::Fail
            },
            format!(
                "{base}: shown {above} (lower bound {}, adjusted p {} <= {}{early})",
                ratio_text(low),
                pval(p_adj),
                level
            ),
        )
    } else if Margin::new(rule.max_ratio).covers(high) {
        (
            RuleOutcome::Pass,
            format!(
                "{base}: within {threshold} (upper bound {})",
                ratio_text(high)
            ),
        )
    } else {
        let detail = if significant && m.below_floor {
            format!(
                "{above} on only {} canary events of the kind (a rate rule needs {} to fail)",
                (r.canary.unwrap_or(0.0) * r.n_canary as f64).round(),
                policy.min_rate_events
            )
        } else if m.past_threshold {
            format!(
                "estimate past {threshold}, not yet shown {above} (lower bound {}, adjusted p {} > {}{early})",
                ratio_text(low),
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
        match evidence.growth_to_settle(alpha, level, rule.max_ratio, rule.abort_ratio()) {
            Settle::After(k) => {
                r.needs_baseline = Some(((k - 1.0) * r.n_baseline as f64).ceil().max(1.0) as u64);
                r.needs_canary = Some(((k - 1.0) * r.n_canary as f64).ceil().max(1.0) as u64);
            }
            Settle::Never(why) => r.cannot_settle = Some(why),
        }
    }
    r
}

/// A value for people: 4 significant digits, no float noise (`2683.9`, `0.0123`).
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
    use crate::judge::samples::{ArmSample, EventObs, SegmentSample};
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
    fn a_segment_the_canary_has_not_reached_yet_waits_only_when_material() {
        // 3 expected canary events in "rare": bad luck, not a broken comparison; a minor
        // segment, so it does not hold the canary.
        let s = samples(vec![
            ("free", arm(20000, 600, |_| None), arm(1000, 30, |_| None)),
            ("rare", arm(60, 2, |_| None), ArmSample::default()),
        ]);
        let v = judge(s, &policy(FLAGGED), None);
        let rare = v.segments.iter().find(|g| g.key["tier"] == "rare").unwrap();
        assert!(!rare.material);
        assert_eq!(rare.verdict, Decision::Promote, "{}", rare.reason);
        // Expected 60 · 1000/20060 ≈ 3.0 canary events there.
        assert!(rare.reason.contains("3.0 expected"), "{}", rare.reason);
        // 2,000 baseline events (9% of the baseline) and about 18 canary events expected: a
        // material segment the canary has not reached yet holds it.
        let s = samples(vec![
            ("free", arm(20000, 600, |_| None), arm(200, 6, |_| None)),
            ("gold", arm(2000, 60, |_| None), ArmSample::default()),
        ]);
        let v = judge(s, &policy(FLAGGED), None);
        let gold = v.segments.iter().find(|g| g.key["tier"] == "gold").unwrap();
        assert!(gold.material);
        assert_eq!(gold.verdict, Decision::Continue, "{}", gold.reason);
        assert_eq!(v.verdict, Decision::Continue);
    }

    #[test]
    fn abort_needs_the_lower_bound_past_the_threshold() {
        // 4.2% against 3% (1.4x) at 200,000 per arm: clearly worse than the baseline, clearly
        // inside 1.5x: shown within, not aborted.
        let s = samples(vec![(
            "free",
            arm(200_000, 6_000, |_| None),
            arm(200_000, 8_400, |_| None),
        )]);
        let v = judge(s, &policy(FLAGGED), None);
        assert_eq!(v.verdict, Decision::Promote, "{}", v.reason);
        assert!(v.overall[0].p_value.unwrap() > 0.5);
        // Twice the rate at 40,000 per arm: the lower bound is past 1.5x, and the reason says
        // which rule, where, and the bound.
        let s = samples(vec![(
            "free",
            arm(40_000, 1_200, |_| None),
            arm(40_000, 2_400, |_| None),
        )]);
        let v = judge(s, &policy(FLAGGED), None);
        assert_eq!(v.verdict, Decision::Abort, "{}", v.reason);
        let r = &v.segments[0].rules[0];
        assert!(r.ci_low.unwrap() > 1.5, "{r:#?}");
        assert!(
            v.reason.contains("flagged_rate in tier=free (lower bound"),
            "{}",
            v.reason
        );
    }

    #[test]
    fn a_minor_segment_never_holds_and_a_material_one_past_a_threshold_does() {
        let p95 = "[[rules]]\nmetric = 'p95_duration_ms'\nmax_ratio = 1.25\n";
        // "rare" has 30 events per arm: too few to bracket its p95; it does not hold.
        let s = samples(vec![
            ("free", arm(20_000, 0, |_| None), arm(20_000, 0, |_| None)),
            ("rare", arm(30, 0, |_| None), arm(30, 0, |_| None)),
        ]);
        let v = judge(s, &policy(p95), None);
        assert_eq!(v.verdict, Decision::Promote, "{}", v.reason);
        let rare = v.segments.iter().find(|g| g.key["tier"] == "rare").unwrap();
        assert!(
            rare.reason.contains("too small to judge alone"),
            "{}",
            rare.reason
        );
        // "mid" has 7% of the events and durations 1.3x: the stratified p95 is shown inside
        // 1.25x and mid's own lower bound is not yet past it, but mid is material and its
        // estimate is past the threshold: it holds the canary.
        let slow = |n: u64| {
            let mut a = ArmSample::default();
            for i in 0..n {
                a.push(
                    EventObs::default(),
                    &[(ValueColumn::DurationMs, 1.3 * (100.0 + (i % 1000) as f64))],
                    None,
                );
            }
            a
        };
        let s = samples(vec![
            ("free", arm(2_000, 0, |_| None), arm(2_000, 0, |_| None)),
            ("mid", arm(150, 0, |_| None), slow(150)),
        ]);
        let v = judge(s, &policy(p95), None);
        assert_eq!(v.verdict, Decision::Continue, "{}", v.reason);
        assert_eq!(
            v.overall[0].verdict,
            RuleOutcome::Pass,
            "{:#?}",
            v.overall[0]
        );
        let mid = v.segments.iter().find(|g| g.key["tier"] == "mid").unwrap();
        assert!(mid.material);
        assert!(mid.reason.contains("past 1.25x"), "{}", mid.reason);
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
    fn a_per_unit_variance_needs_enough_units() {
        // 9/49 vs 2/60 bad labels, all from 3 units per arm: the per-unit variance of so few
        // units is far too small; the exact test of the counts is used and says why.
        let mut b = ArmSample::default();
        let mut c = ArmSample::default();
        for (a, bad, labeled) in [(&mut b, 2u64, 60u64), (&mut c, 9, 49)] {
            for u in 0..3u64 {
                let share = labeled / 3 + u64::from(u < labeled % 3);
                let bad_here = bad / 3 + u64::from(u < bad % 3);
                a.push(EventObs::default(), &[], Some(u));
                a.add_labels(share, bad_here, Some(u));
            }
        }
        let rules =
            "[[rules]]\nmetric = 'bad_label_rate'\nmax_ratio = 1.1\nabort_on = 'any_harm'\n";
        let v = judge(samples(vec![("free", b, c)]), &policy(rules), None);
        let r = &v.overall[0];
        assert!(r.test.contains("effective units"), "{}", r.test);
        // scipy.stats.binomtest(9, 11, 49/109, alternative='greater').pvalue -> 0.0147 at one
        // look; the always-valid p-value is larger, never the clustered 6.8e-5.
        assert!(r.p_value.unwrap() > 0.0147, "{r:#?}");
    }

    #[test]
    fn correlated_units_widen_rate_bounds() {
        // 40 units; flagged events concentrated in two of them.
        let units = |base: u64| move |i: u64| Some(base + i % 40);
        let mut b = ArmSample::default();
        let mut c = ArmSample::default();
        for (a, base) in [(&mut b, 0), (&mut c, 100)] {
            for i in 0..4000u64 {
                let unit = units(base)(i);
                let flagged = unit.unwrap() % 40 < 2 && i % 3 == 0;
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
