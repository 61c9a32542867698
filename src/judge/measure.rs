//! Steps 1 and 2 of the judge: each rule measured in each segment (estimate, evidence, the
//! always-valid p-value of its stop condition), then the evidence of each rule stratified over
//! the segments, which is what a promotion is decided on.
//!
//! - Rates: the exact conditional test per segment (independent events), or per-unit
//!   variances (delta method for ratio metrics) when events carry unit ids from enough units;
//!   stratified by Mantel-Haenszel.
//! - Percentiles: the delta method on the log ratio, each arm's standard error from its order
//!   statistics (tie-aware, see [`super::evidence`]); stratified by inverse-variance weights.
//! - Means: the delta method on the log ratio of means; stratified by inverse-variance weights.
//!
//! Small clusters: a per-unit variance is an asymptotic estimate, unstable with a handful of
//! units, and then often far too small (measured: 9/49 vs 2/60 bad labels from three units gave
//! p 6.8e-5 where the exact test gives 0.0147) or, with strongly correlated users, rightly far
//! larger than the independent-events one. So the judge takes the larger of the two: the
//! per-unit variance when it exceeds the independent-events variance of the same counts, else
//! the independent-events test (for rates, the exact test). A rule whose arms have fewer than
//! [`MIN_UNITS`] effective units (Kish: `(ΣN)²/ΣN²`, so a few whales count as few) says so in
//! its `test`.

use super::evidence::{Evidence, QuantilePair, effective_events, quantile_pair};
use super::policy::{Metric, Policy, PolicyRule, RateKind, ValueColumn};
use super::samples::{ArmSample, RatioMoments, UnitMetric};
use super::sequential::Boundary;
use super::stats::{self, LogRatio, Margin};
use super::verdict::{RuleOutcome, RuleResult, num, ratio_text};

/// Effective units per arm below which a per-unit variance is flagged as unstable.
pub const MIN_UNITS: f64 = 30.0;

/// A measurement of one rule in one segment (or stratified), before the family-wide
/// adjustment.
pub(super) struct Measurement {
    pub result: RuleResult,
    pub evidence: Option<Evidence>,
    /// Rate rules: (x_c, n_c, x_b, n_b), for the Mantel-Haenszel stratification.
    pub counts: Option<(u64, u64, u64, u64)>,
    /// Percentile rules: both arms' quantiles, for the stratified estimate.
    pub quantiles: Option<QuantilePair>,
    /// Mean rules: the log ratio and effective events, for the stratified estimate.
    pub stratum: Option<(LogRatio, f64)>,
    /// The point estimate is past the threshold.
    pub past_threshold: bool,
    /// Rate rules: canary events of the kind below the floor (cannot fail).
    pub below_floor: bool,
}

impl Measurement {
    /// A measurement without evidence: its outcome and reason are set on `result`.
    fn untested(result: RuleResult) -> Self {
        Measurement {
            result,
            evidence: None,
            counts: None,
            quantiles: None,
            stratum: None,
            past_threshold: false,
            below_floor: false,
        }
    }

    pub fn tested(&self) -> bool {
        self.evidence.is_some()
    }
}

pub(super) fn empty_result(rule: &PolicyRule, n_b: u64, n_c: u64, alpha: f64) -> RuleResult {
    RuleResult {
        rule: rule.name.clone(),
        metric: rule.metric_name.clone(),
        test: rule.metric.test_name().to_string(),
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
        abort_above: rule.abort_ratio(),
        past_threshold: false,
        log_se: None,
        p_value: None,
        p_adjusted: None,
        alpha: 0.0,
        verdict: RuleOutcome::NoData,
        reason: String::new(),
        needs_baseline: None,
        needs_canary: None,
        cannot_settle: None,
        precision: None,
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

/// Effective number of units of a ratio metric's denominator (Kish: `(ΣN)²/ΣN²`).
fn effective_units(m: &RatioMoments) -> f64 {
    if m.nn > 0.0 { m.n * m.n / m.nn } else { 0.0 }
}

/// Variance of `ln(ΣS/ΣN)` over an arm's units (delta method) and the arm's effective units;
/// `None` with fewer than two units or a ratio of 0.
fn clustered_log_var(arm: &ArmSample, metric: UnitMetric) -> Option<(f64, f64)> {
    let m = arm.ratio_moments(metric);
    let r = m.s / m.n;
    let v = stats::ratio_metric_var(&m)?;
    (r > 0.0).then(|| (v / (r * r), effective_units(&m)))
}

/// ` (N effective units in an arm: the per-unit variance is unstable)` when an arm has fewer
/// than [`MIN_UNITS`].
fn few_units_note(units: f64) -> String {
    if units < MIN_UNITS {
        format!(
            " ({units:.0} effective units in an arm, fewer than {MIN_UNITS:.0}: the per-unit variance is unstable)"
        )
    } else {
        String::new()
    }
}

/// Measures `rule` in one segment and computes the p-value of its abort test.
pub(super) fn measure(
    rule: &PolicyRule,
    b: &mut ArmSample,
    c: &mut ArmSample,
    policy: &Policy,
) -> Measurement {
    let mut m = measure_evidence(rule, b, c, policy);
    if let Some(e) = &m.evidence {
        m.result.p_value = Some(e.p_above(rule.abort_ratio()));
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
    let boundary = Boundary::for_margin(policy.sequential, alpha, rule.max_ratio);
    let clustered = b.clustered() || c.clustered();
    let untested = |mut r: RuleResult, verdict: RuleOutcome, reason: String| {
        r.verdict = verdict;
        r.reason = reason;
        Measurement::untested(r)
    };
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
            if nb == 0 || nc == 0 {
                let arm = if nc == 0 { "canary" } else { "baseline" };
                let why = if rate == RateKind::BadLabel {
                    format!("no labeled events in the {arm}")
                } else {
                    format!("no events in the {arm}")
                };
                return untested(r, RuleOutcome::NoData, why);
            }
            let (rate_b, rate_c) = (xb as f64 / nb as f64, xc as f64 / nc as f64);
            r.baseline = Some(rate_b);
            r.canary = Some(rate_c);
            if xc + xb == 0 {
                return untested(
                    r,
                    RuleOutcome::NoData,
                    format!("no {what} events in either arm"),
                );
            }
            let exact = Evidence::ExactRate {
                x_c: xc,
                n_c: nc,
                x_b: xb,
                n_b: nb,
                boundary,
            };
            let exact_name = if policy.sequential {
                "exact conditional rate ratio (beta-mixture, always valid)"
            } else {
                "exact conditional rate ratio (Clopper-Pearson)"
            };
            // With unit ids and events of the kind in both arms, the per-unit variance when it
            // is the larger; else the exact test of the counts.
            r.test = exact_name.into();
            let mut evidence = exact;
            let metric = unit_metric(rate);
            if clustered
                && xb > 0
                && xc > 0
                && let (Some((vc, uc)), Some((vb, ub))) =
                    (clustered_log_var(c, metric), clustered_log_var(b, metric))
            {
                let poisson = 1.0 / xc as f64 + 1.0 / xb as f64;
                let note = few_units_note(uc.min(ub));
                if vc + vb > poisson {
                    r.test = format!("log rate ratio, per-unit variance (delta method){note}");
                    evidence = Evidence::LogNormal {
                        ratio: LogRatio {
                            log_estimate: (rate_c / rate_b).ln(),
                            se: (vc + vb).sqrt(),
                        },
                        boundary,
                    };
                } else {
                    r.test = format!(
                        "{exact_name}: the per-unit variance is not above the independent-events one{note}"
                    );
                }
            }
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
                past_threshold: margin.exceeded_by_counts(xc, nc, xb, nb),
                below_floor: xc < policy.min_rate_events,
                evidence: Some(evidence),
                counts: Some((xc, nc, xb, nb)),
                quantiles: None,
                stratum: None,
                result: r,
            }
        }
        Metric::Quantile { q, column } => {
            let (nb, nc) = (b.values(column).len() as u64, c.values(column).len() as u64);
            let mut r = empty_result(rule, nb, nc, alpha);
            let pair = quantile_pair(c, b, column as usize, q);
            r.baseline = pair.baseline.estimate;
            r.canary = pair.canary.estimate;
            let (Some(eb), Some(ec)) = (pair.baseline.estimate, pair.canary.estimate) else {
                return untested(r, RuleOutcome::NoData, "no values in an arm".into());
            };
            let past_threshold = margin.exceeded_by_values(ec, eb) && ec > 0.0;
            r.ratio = (eb > 0.0).then(|| ec / eb);
            let base = format!(
                "{} {} vs {} ({})",
                rule.metric_name,
                num(ec),
                num(eb),
                r.ratio.map_or("unbounded".into(), ratio_text)
            );
            if pair.log_ratio_at(1.0).is_none() {
                let why = if !(eb > 0.0 && ec > 0.0) {
                    format!("{base}: a percentile of 0 has no ratio")
                } else {
                    let short: Vec<String> =
                        [("canary", &pair.canary), ("baseline", &pair.baseline)]
                            .iter()
                            .filter(|(_, a)| a.sd_at(1.0).is_none())
                            .map(|(arm, a)| {
                                format!(
                                    "the {arm} has {} of at least {}",
                                    a.n,
                                    a.events_to_bracket()
                                )
                            })
                            .collect();
                    format!(
                        "{base}: too few events to bracket the percentile ({})",
                        short.join(", ")
                    )
                };
                let mut m = untested(r, RuleOutcome::Inconclusive, why);
                m.past_threshold = past_threshold;
                return m;
            }
            r.reason = base;
            Measurement {
                past_threshold,
                below_floor: false,
                evidence: Some(Evidence::Quantiles {
                    strata: vec![pair.clone()],
                    boundary,
                }),
                counts: None,
                quantiles: Some(pair),
                stratum: None,
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
                return untested(
                    r,
                    RuleOutcome::Inconclusive,
                    "too few events (two per arm), or a mean of 0, to compare means".into(),
                );
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
                past_threshold: margin.exceeded_by_values(mc, mb),
                below_floor: false,
                evidence: Some(Evidence::LogNormal { ratio, boundary }),
                counts: None,
                quantiles: None,
                stratum: Some((ratio, effective_events(nc as f64, nb as f64))),
                result: r,
            }
        }
    }
}

/// Mean and variance of the mean of an arm's values: the larger of the per-unit variance
/// (delta method for the ratio metric ΣS/ΣN) and `s²/n`.
fn mean_var(a: &ArmSample, column: ValueColumn) -> (Option<f64>, Option<f64>) {
    let v = a.values(column);
    let n = v.len();
    if n == 0 {
        return (None, None);
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (Some(mean), None);
    }
    let s2 = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let iid = s2 / n as f64;
    if a.clustered()
        && let Some(var) = stats::ratio_metric_var(&a.ratio_moments(UnitMetric::Sum(column)))
    {
        return (Some(mean), Some(var.max(iid)));
    }
    (Some(mean), Some(iid))
}

/// The evidence for one rule stratified over segments, as a measurement (not yet classified).
/// Rates: Mantel-Haenszel over the segments' counts (with unit ids, its variance scaled by the
/// design effect the segments measured); percentiles and means: inverse-variance weighting of
/// the segments' log ratios ([`stats::stratified_log_ratio`]). With one segment, that
/// segment's own measurement.
pub(super) fn pool(
    rule: &PolicyRule,
    parts: &[&Measurement],
    policy: &Policy,
    clustered: bool,
) -> Measurement {
    let alpha = policy.alpha();
    let n_b: u64 = parts.iter().map(|m| m.result.n_baseline).sum();
    let n_c: u64 = parts.iter().map(|m| m.result.n_canary).sum();
    let mut r = empty_result(rule, n_b, n_c, alpha);
    if let [only] = parts {
        let mut m = Measurement {
            result: only.result.clone(),
            evidence: only.evidence.clone(),
            counts: only.counts,
            quantiles: only.quantiles.clone(),
            stratum: only.stratum,
            past_threshold: only.past_threshold,
            below_floor: only.below_floor,
        };
        m.result.reason = format!("in the only segment: {}", m.result.reason);
        return m;
    }
    let boundary = Boundary::for_margin(policy.sequential, alpha, rule.max_ratio);
    let judged = parts.iter().filter(|m| m.tested()).count();
    let (evidence, below_floor) = match rule.metric {
        Metric::Quantile { .. } => {
            r.test =
                "delta method on log ratios of percentiles, stratified (inverse-variance)".into();
            let strata: Vec<QuantilePair> =
                parts.iter().filter_map(|m| m.quantiles.clone()).collect();
            let weights = |pick: fn(&QuantilePair) -> Option<f64>| -> Option<f64> {
                let (mut s, mut w) = (0.0, 0.0);
                for p in &strata {
                    let e = effective_events(p.canary.n as f64, p.baseline.n as f64);
                    s += pick(p)? * e;
                    w += e;
                }
                (w > 0.0).then(|| s / w)
            };
            r.canary = weights(|p| p.canary.estimate);
            r.baseline = weights(|p| p.baseline.estimate);
            let e = (!strata.is_empty()).then_some(Evidence::Quantiles { strata, boundary });
            (e, false)
        }
        Metric::Rate { .. } => {
            let counts: Vec<(u64, u64, u64, u64)> = parts.iter().filter_map(|m| m.counts).collect();
            let sum = |f: fn(&(u64, u64, u64, u64)) -> u64| counts.iter().map(f).sum::<u64>();
            let (xc, nc, xb, nb) = (sum(|c| c.0), sum(|c| c.1), sum(|c| c.2), sum(|c| c.3));
            r.n_canary = nc;
            r.n_baseline = nb;
            r.canary = (nc > 0).then(|| xc as f64 / nc as f64);
            r.baseline = (nb > 0).then(|| xb as f64 / nb as f64);
            // Mantel-Haenszel copes with sparse segments (a zero count) where weighting log
            // ratios by inverse variance does not. With unit ids its variance is scaled by the
            // design effect the segments measured: the precision-weighted mean of each
            // segment's per-unit variance over its Poisson variance (at least 1).
            let mut ratio = stats::mantel_haenszel_rate_ratio(&counts);
            r.test = "Mantel-Haenszel rate ratio (Greenland-Robins variance)".into();
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
                    "Mantel-Haenszel rate ratio (variance scaled by the per-unit design effect)"
                        .into();
            }
            let e = ratio.map(|ratio| Evidence::LogNormal { ratio, boundary });
            (e, xc < policy.min_rate_events)
        }
        Metric::Mean { .. } => {
            r.test = "delta method on log ratios of means, stratified (inverse-variance)".into();
            let strata: Vec<(LogRatio, f64)> = parts.iter().filter_map(|m| m.stratum).collect();
            let e = stats::stratified_log_ratio(&strata)
                .map(|ratio| Evidence::LogNormal { ratio, boundary });
            (e, false)
        }
    };
    let Some(evidence) = evidence else {
        // Nothing at all to compare is no data; segments with events that none could judge
        // (too few to bracket a percentile) leave the rule open, never passed by default.
        let all_empty = parts
            .iter()
            .all(|m| m.result.verdict == RuleOutcome::NoData);
        r.verdict = if all_empty {
            RuleOutcome::NoData
        } else {
            RuleOutcome::Inconclusive
        };
        r.reason = match parts.iter().find(|m| !m.tested()) {
            Some(m) if all_empty => m.result.reason.clone(),
            Some(m) => format!(
                "no segment can be judged on its own yet ({})",
                m.result.reason
            ),
            None => "nothing to stratify".into(),
        };
        return Measurement::untested(r);
    };
    let estimate = evidence.estimate();
    r.ratio = finite(estimate);
    r.p_value = Some(evidence.p_above(rule.abort_ratio()));
    r.reason = format!(
        "stratified over {judged} of {} segments: {}",
        parts.len(),
        r.ratio.map_or("unbounded".into(), ratio_text)
    );
    Measurement {
        result: r,
        past_threshold: Margin::new(rule.max_ratio).exceeded_by_values(estimate, 1.0),
        below_floor,
        evidence: Some(evidence),
        counts: None,
        quantiles: None,
        stratum: None,
    }
}

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}
