//! The judge's policy: stop conditions and the volume and significance settings, from TOML.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::SEGMENT_COLUMNS;

/// The default policy, as printed by `promptgate judge --print-default-policy`.
pub const DEFAULT_POLICY_TOML: &str = r#"# promptgate judge policy
#
# Each rule bounds the canary/baseline ratio of one metric by max_ratio. Per rule, in each
# segment and stratified over all segments, the judge reaches one of three outcomes:
#   fail          the stop condition holds with evidence: the always-valid lower bound of the
#                 ratio is above max_ratio (Holm-adjusted over all rules x segments), so a canary
#                 at or inside a threshold is aborted at most at the nominal rate however often
#                 it is judged; the canary is aborted;
#   pass          evidence that the ratio is within max_ratio: the one-sided upper bound of the
#                 estimate stratified over segments is at or below it (non-inferiority);
#   inconclusive  neither yet: the canary keeps running; the output says how many more events
#                 would settle it, or why no number of events would.
# A canary is promoted when every gating rule passes on the stratified estimate, both arms have
# min_events, and every material segment (material_share of an arm's events or more) has
# min_events, measures each gating rule to within half its threshold (log-ratio standard error
# at most ln(max_ratio)/2) and has no estimate past it. Small segments count for what they weigh
# in the stratified estimate and never hold a canary on their own.
# Metrics: flagged_rate, error_rate, bad_label_rate, avg_<col>, p<NN>_<col> with <col> one of
# duration_ms, tokens_in, tokens_out (e.g. p99_duration_ms, avg_tokens_out).
# A rule may be report_only (shown, never decides) or abort_only (can abort, never holds a
# promotion: for margins no canary can prove at realistic volume; the output says it was not
# proven). abort_on = "any_harm" makes a rule abort on any significant deterioration (the lower
# bound above 1, as risk-aware platforms treat guardrails) instead of on its threshold.

# Events per arm (over all segments, and in each material segment) before a canary can be
# promoted. Below it a rule can still fail, but only at early_abort_alpha.
min_events = 200
# Columns that define a segment; canary and baseline are compared within each segment.
segment_by = ["model", "tier"]
# A segment with at least this share of either arm's events is material: it must reach
# min_events, measure each gating rule to within half its threshold, and show no estimate past
# a threshold for the canary to be promoted, so a regression confined to it is not averaged
# away by the other segments.
material_share = 0.05
# Confidence level: 1 - confidence is the one-sided level of every pass bound and the
# family-wise level of the abort tests.
confidence = 0.95
# Significance a rule needs to abort a canary before min_events is reached.
early_abort_alpha = 0.001
# A rate rule cannot fail on fewer canary events of its kind than this (so 0 -> 1 cannot abort).
min_rate_events = 5
# Always-valid bounds (confidence sequences): the error rates hold however often the canary is
# judged while it runs. false: one planned look (fixed-horizon bounds, narrower).
sequential = true
# When, within a segment, the arms were answered by different sets of model snapshots
# (`response_model`, e.g. the provider moved an alias mid-canary), the comparison is not of the
# prompt alone and the verdict is invalid. true: say so as a warning and judge anyway.
allow_response_model_drift = false

[[rules]]
metric = "flagged_rate"
max_ratio = 1.5

[[rules]]
metric = "p95_duration_ms"
max_ratio = 1.25

[[rules]]
metric = "p95_tokens_in"
max_ratio = 1.25

# A +10% margin on a rate of about 10% needs tens of thousands of labels to prove; with the
# tens to hundreds of labels a canary gets, this rule can only stop a clear regression.
[[rules]]
metric = "bad_label_rate"
max_ratio = 1.10
abort_only = true
"#;

/// A column a value metric reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueColumn {
    DurationMs,
    TokensIn,
    TokensOut,
}

impl ValueColumn {
    pub fn name(self) -> &'static str {
        match self {
            ValueColumn::DurationMs => "duration_ms",
            ValueColumn::TokensIn => "tokens_in",
            ValueColumn::TokensOut => "tokens_out",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "duration_ms" => ValueColumn::DurationMs,
            "tokens_in" => ValueColumn::TokensIn,
            "tokens_out" => ValueColumn::TokensOut,
            _ => return None,
        })
    }
    pub const ALL: [ValueColumn; 3] = [Self::DurationMs, Self::TokensIn, Self::TokensOut];
}

/// Which events count for a rate metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RateKind {
    /// status = flagged, over all events.
    Flagged,
    /// status = error, over all events.
    Error,
    /// latest label = bad, over labeled events.
    BadLabel,
}

/// What a rule measures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Metric {
    Rate { rate: RateKind },
    Quantile { q: f64, column: ValueColumn },
    Mean { column: ValueColumn },
}

impl Metric {
    /// Parses `flagged_rate`, `error_rate`, `bad_label_rate`, `avg_<col>`, `p<NN>_<col>`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "unknown metric {s:?}; use flagged_rate, error_rate, bad_label_rate, avg_<col> or p<NN>_<col> with <col> one of duration_ms, tokens_in, tokens_out"
            )
        };
        match s {
            "flagged_rate" => {
                return Ok(Metric::Rate {
                    rate: RateKind::Flagged,
                });
            }
            "error_rate" => {
                return Ok(Metric::Rate {
                    rate: RateKind::Error,
                });
            }
            "bad_label_rate" => {
                return Ok(Metric::Rate {
                    rate: RateKind::BadLabel,
                });
            }
            _ => {}
        }
        if let Some(col) = s.strip_prefix("avg_") {
            return ValueColumn::parse(col)
                .map(|column| Metric::Mean { column })
                .ok_or_else(bad);
        }
        if let Some(rest) = s.strip_prefix('p')
            && let Some((num, col)) = rest.split_once('_')
            && let Some(column) = ValueColumn::parse(col)
            && let Ok(pct) = num.parse::<f64>()
        {
            // p95 -> 0.95, p50 -> 0.5, p999 -> 0.999 (digits after "99" are decimals)
            let q = if num.len() > 2 && num.starts_with("99") && !num.contains('.') {
                pct / 10f64.powi(num.len() as i32)
            } else {
                pct / 100.0
            };
            if q > 0.0 && q < 1.0 {
                return Ok(Metric::Quantile { q, column });
            }
        }
        Err(bad())
    }

    /// The statistical method behind this metric's interval and test.
    pub fn test_name(&self) -> &'static str {
        match self {
            Metric::Rate { .. } => "log rate ratio (Poisson or clustered variance)",
            Metric::Quantile { .. } => {
                "delta method on log ratio of percentiles (order-statistic standard errors, tie-aware)"
            }
            Metric::Mean { .. } => "delta method on log ratio of means",
        }
    }

    /// Columns whose raw values this metric needs.
    pub fn value_column(&self) -> Option<ValueColumn> {
        match self {
            Metric::Rate { .. } => None,
            Metric::Quantile { column, .. } | Metric::Mean { column } => Some(*column),
        }
    }
}

/// A stop condition as written in the policy file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Display name (default: the metric).
    #[serde(default)]
    pub name: Option<String>,
    pub metric: String,
    /// The rule fails when canary / baseline exceeds this (1.5 = "more than 1.5x baseline",
    /// 1.25 = "more than baseline + 25%").
    pub max_ratio: f64,
    /// Shown in the output, never decides the verdict.
    #[serde(default)]
    pub report_only: bool,
    /// Can abort the canary, never holds a promotion (its margin is not provable at the
    /// volumes a canary gets); the output says it was not proven.
    #[serde(default)]
    pub abort_only: bool,
    /// What the abort test compares against (default: the threshold).
    #[serde(default)]
    pub abort_on: AbortOn,
}

/// When a rule aborts the canary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbortOn {
    /// The stop condition as written: the ratio's always-valid lower bound is above
    /// `max_ratio`.
    #[default]
    Threshold,
    /// Any significant deterioration: the lower bound is above 1 (opt-in; the threshold then
    /// only gates promotion).
    AnyHarm,
}

/// A validated stop condition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyRule {
    pub name: String,
    pub metric_name: String,
    pub metric: Metric,
    pub max_ratio: f64,
    pub report_only: bool,
    pub abort_only: bool,
    pub abort_on: AbortOn,
}

impl PolicyRule {
    /// Whether this rule must pass for the canary to be promoted.
    pub fn must_pass(&self) -> bool {
        !self.report_only && !self.abort_only
    }

    /// The ratio the abort test must show the canary above: the threshold, or 1.
    pub fn abort_ratio(&self) -> f64 {
        match self.abort_on {
            AbortOn::Threshold => self.max_ratio,
            AbortOn::AnyHarm => 1.0,
        }
    }
}

/// The policy file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default = "default_min_events")]
    min_events: u64,
    #[serde(default = "default_segments")]
    segment_by: Vec<String>,
    #[serde(default = "default_confidence")]
    confidence: f64,
    #[serde(default = "default_early")]
    early_abort_alpha: f64,
    #[serde(default = "default_min_rate_events")]
    min_rate_events: u64,
    #[serde(default = "default_true")]
    sequential: bool,
    #[serde(default = "default_material_share")]
    material_share: f64,
    /// Judge v2's tuning of percentile bounds; accepted so old policy files still load, unused.
    #[serde(default)]
    planned_events: Option<u64>,
    #[serde(default)]
    allow_response_model_drift: bool,
    #[serde(default)]
    rules: Vec<RuleSpec>,
}

fn default_min_events() -> u64 {
    200
}
fn default_segments() -> Vec<String> {
    vec!["model".into(), "tier".into()]
}
fn default_confidence() -> f64 {
    0.95
}
fn default_early() -> f64 {
    0.001
}
fn default_min_rate_events() -> u64 {
    5
}
fn default_true() -> bool {
    true
}
fn default_material_share() -> f64 {
    0.05
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    pub min_events: u64,
    pub segment_by: Vec<String>,
    pub confidence: f64,
    pub early_abort_alpha: f64,
    pub min_rate_events: u64,
    /// Always-valid (confidence-sequence) bounds rather than a single fixed-horizon look.
    pub sequential: bool,
    /// Share of an arm's events from which a segment is material (must not look past a
    /// threshold, must reach `min_events`).
    pub material_share: f64,
    /// Whether arms answered by different response models may still be judged (a warning).
    pub allow_response_model_drift: bool,
    pub rules: Vec<PolicyRule>,
    /// Settings the file has that no longer do anything, said in the verdict's warnings.
    pub notes: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::from_toml(DEFAULT_POLICY_TOML).expect("the default policy is valid")
    }
}

impl Policy {
    /// Family-wise significance level.
    pub fn alpha(&self) -> f64 {
        // Rounded so 1 - 0.95 prints as 0.05, not 0.050000000000000044.
        ((1.0 - self.confidence) * 1e12).round() / 1e12
    }

    /// Parses and validates a policy; `source` names it in messages.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let f: PolicyFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if !(f.confidence > 0.5 && f.confidence < 1.0) {
            return Err(format!(
                "confidence must be between 0.5 and 1, got {}",
                f.confidence
            ));
        }
        if !(f.early_abort_alpha > 0.0 && f.early_abort_alpha < 1.0 - f.confidence + 1e-12) {
            return Err(format!(
                "early_abort_alpha must be > 0 and at most 1 - confidence ({}), got {}",
                1.0 - f.confidence,
                f.early_abort_alpha
            ));
        }
        if f.min_events == 0 {
            return Err("min_events must be at least 1".into());
        }
        if !(f.material_share > 0.0 && f.material_share <= 1.0) {
            return Err(format!(
                "material_share must be a share in (0, 1] (0.05 = 5% of an arm's events), got {}",
                f.material_share
            ));
        }
        for c in &f.segment_by {
            if c == "prompt_sha" {
                return Err(
                    "cannot segment the judge by \"prompt_sha\": the two versions differ in it by definition, so no segment would hold both arms (the judge checks each version's sha on its own)".into(),
                );
            }
            if c == "response_model" {
                return Err(
                    "cannot segment the judge by \"response_model\": the judge checks that both arms of each segment were answered by the same snapshots, which segmenting by it would hide (set allow_response_model_drift = true to judge across a snapshot change)".into(),
                );
            }
            if !SEGMENT_COLUMNS.contains(&c.as_str()) || c == "status" {
                return Err(format!(
                    "cannot segment by {c:?}; choose from env, model, tier, date"
                ));
            }
        }
        if f.rules.is_empty() {
            return Err("the policy has no [[rules]]".into());
        }
        let mut rules = Vec::with_capacity(f.rules.len());
        for r in f.rules {
            let metric = Metric::parse(&r.metric)?;
            if !(r.max_ratio.is_finite() && r.max_ratio >= 1.0) {
                return Err(format!(
                    "rule {:?}: max_ratio must be a number >= 1 (1.5 means canary > 1.5x baseline), got {}",
                    r.name.as_deref().unwrap_or(&r.metric),
                    r.max_ratio
                ));
            }
            let name = r.name.unwrap_or_else(|| r.metric.clone());
            if r.report_only && r.abort_only {
                return Err(format!(
                    "rule {name:?}: report_only and abort_only exclude each other (report_only never decides; abort_only can abort)"
                ));
            }
            if rules.iter().any(|x: &PolicyRule| x.name == name) {
                return Err(format!("two rules are named {name:?}; give one a `name`"));
            }
            rules.push(PolicyRule {
                name,
                metric_name: r.metric,
                metric,
                max_ratio: r.max_ratio,
                report_only: r.report_only,
                abort_only: r.abort_only,
                abort_on: r.abort_on,
            });
        }
        Ok(Policy {
            min_events: f.min_events,
            segment_by: f.segment_by,
            confidence: f.confidence,
            early_abort_alpha: f.early_abort_alpha,
            min_rate_events: f.min_rate_events,
            sequential: f.sequential,
            material_share: f.material_share,
            allow_response_model_drift: f.allow_response_model_drift,
            rules,
            notes: f
                .planned_events
                .map(|_| {
                    "the policy's planned_events is no longer used (every bound is now tuned to its rule's threshold); remove it".to_string()
                })
                .into_iter()
                .collect(),
        })
    }

    /// Reads a policy file.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::usage(format!("cannot read policy {}: {e}", path.display())))?;
        Policy::from_toml(&text).map_err(|e| {
            Error::usage(format!("invalid policy {}: {e}", path.display()))
                .with_hint("see `promptgate judge --print-default-policy` for a valid example")
        })
    }

    /// Value columns any rule needs raw values of.
    pub fn value_columns(&self) -> Vec<ValueColumn> {
        ValueColumn::ALL
            .into_iter()
            .filter(|c| {
                self.rules
                    .iter()
                    .any(|r| r.metric.value_column() == Some(*c))
            })
            .collect()
    }

    /// Whether any rule needs labels.
    pub fn needs_labels(&self) -> bool {
        self.rules.iter().any(|r| {
            matches!(
                r.metric,
                Metric::Rate {
                    rate: RateKind::BadLabel
                }
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_matches_the_documented_rules() {
        let p = Policy::default();
        assert_eq!(p.min_events, 200);
        assert_eq!(p.segment_by, vec!["model", "tier"]);
        let names: Vec<_> = p
            .rules
            .iter()
            .map(|r| (r.name.as_str(), r.max_ratio))
            .collect();
        assert_eq!(
            names,
            vec![
                ("flagged_rate", 1.5),
                ("p95_duration_ms", 1.25),
                ("p95_tokens_in", 1.25),
                ("bad_label_rate", 1.10)
            ]
        );
        assert!(p.sequential);
        let abort_only: Vec<_> = p
            .rules
            .iter()
            .filter(|r| r.abort_only)
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(abort_only, ["bad_label_rate"]);
    }

    #[test]
    fn metric_names() {
        assert_eq!(
            Metric::parse("p99_duration_ms").unwrap(),
            Metric::Quantile {
                q: 0.99,
                column: ValueColumn::DurationMs
            }
        );
        assert_eq!(
            Metric::parse("p999_tokens_out").unwrap(),
            Metric::Quantile {
                q: 0.999,
                column: ValueColumn::TokensOut
            }
        );
        assert!(Metric::parse("p95_latency").is_err());
        assert!(Metric::parse("p100_duration_ms").is_err());
    }

    #[test]
    fn bad_policies_say_what_is_wrong() {
        let e = Policy::from_toml("confidence = 2\n[[rules]]\nmetric='error_rate'\nmax_ratio=2")
            .unwrap_err();
        assert!(e.contains("confidence"), "{e}");
        let e = Policy::from_toml("[[rules]]\nmetric='error_rate'\nmax_ratio=0.5").unwrap_err();
        assert!(e.contains("max_ratio"), "{e}");
        let e =
            Policy::from_toml("typo = 1\n[[rules]]\nmetric='error_rate'\nmax_ratio=2").unwrap_err();
        assert!(e.contains("typo"), "{e}");
        let e = Policy::from_toml(
            "[[rules]]\nmetric='error_rate'\nmax_ratio=2\nreport_only=true\nabort_only=true",
        )
        .unwrap_err();
        assert!(e.contains("exclude"), "{e}");
        let e =
            Policy::from_toml("[[rules]]\nmetric='error_rate'\nmax_ratio=2\nabort_on='sometimes'")
                .unwrap_err();
        assert!(e.contains("any_harm"), "{e}");
        let e =
            Policy::from_toml("material_share = 0\n[[rules]]\nmetric='error_rate'\nmax_ratio=2")
                .unwrap_err();
        assert!(e.contains("material_share"), "{e}");
    }

    #[test]
    fn abort_on_any_harm_is_an_opt_in_and_old_settings_still_load() {
        let p = Policy::from_toml(
            "planned_events = 500\n[[rules]]\nmetric='error_rate'\nmax_ratio=2\nabort_on='any_harm'\n[[rules]]\nmetric='flagged_rate'\nmax_ratio=1.5",
        )
        .unwrap();
        assert_eq!(p.rules[0].abort_ratio(), 1.0);
        assert_eq!(p.rules[1].abort_ratio(), 1.5);
        assert_eq!(p.notes.len(), 1, "{:?}", p.notes);
        assert!(Policy::default().notes.is_empty());
    }
}
