//! The release checklist of a prompt change: the seed's pull-request checklist, every field
//! filled from data (the registry, the judge, the review), each check ticked or not with its
//! evidence, rendered as Markdown or JSON.
//!
//! This module turns plain results (a [`Verdict`], a [`Policy`], [`ArmEvents`], a
//! [`ReviewScore`]) into a [`Checklist`] and renders it; `promptgate checklist`
//! (`src/cmd/checklist.rs`) gathers them.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::judge::{Decision, Policy, Verdict};
use crate::query::ArmEvents;
use crate::registry::sha_matches;
use crate::review::score::ReviewScore;

mod markdown;
pub use markdown::write_markdown;

/// Output format of `promptgate checklist`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ChecklistFormat {
    /// The pull-request checklist, for a PR description or a CI comment.
    #[default]
    Markdown,
    /// Everything the checklist says, as one JSON object.
    Json,
}

/// A registered version: its name and the SHA-256 of its text.
#[derive(Debug, Clone, Serialize)]
pub struct VersionRef {
    pub version: String,
    pub sha256: String,
}

/// Why the change is made, and where that came from.
#[derive(Debug, Clone, Serialize)]
pub struct Why {
    pub text: Option<String>,
    /// `--why`, `registry` (the note given when the canary was registered) or `none`.
    pub source: String,
    /// Who registered the canary and when (for `registry`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registered: Option<String>,
}

/// One metric of one segment: canary against baseline.
#[derive(Debug, Clone, Serialize)]
pub struct ImpactMetric {
    pub metric: String,
    pub n_baseline: u64,
    pub n_canary: u64,
    pub baseline: Option<f64>,
    pub canary: Option<f64>,
    /// canary / baseline, with the judge's lower and upper bounds.
    pub ratio: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
}

/// The measured impact in one segment.
#[derive(Debug, Clone, Serialize)]
pub struct ImpactSegment {
    /// `model=m1, tier=free`, or `all traffic` when the policy does not segment.
    pub segment: String,
    pub n_baseline: u64,
    pub n_canary: u64,
    pub metrics: Vec<ImpactMetric>,
}

/// Expected impact: what the canary measured so far, per segment.
#[derive(Debug, Clone, Serialize)]
pub struct Impact {
    /// The events measured (e.g. "since the rollout started at ...").
    pub window: String,
    /// True when the canary has no event in the window.
    pub no_canary_data: bool,
    pub segments: Vec<ImpactSegment>,
    /// What the intervals are.
    pub intervals: String,
}

/// The rollout of this change and where it stands.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutPlan {
    pub id: String,
    pub status: String,
    pub steps: Vec<String>,
    /// The step judged (1-based) and its share.
    pub step: usize,
    pub share: String,
    pub started_at: String,
    pub step_started_at: String,
    pub ended_at: Option<String>,
    pub pins: Vec<String>,
}

/// The judge's verdict on one segment.
#[derive(Debug, Clone, Serialize)]
pub struct JudgeSegment {
    pub segment: String,
    pub verdict: String,
    pub n_baseline: u64,
    pub n_canary: u64,
    pub reason: String,
}

/// The judge's current verdict on the rollout's step.
#[derive(Debug, Clone, Serialize)]
pub struct JudgeNow {
    pub verdict: String,
    pub reason: String,
    pub n_baseline: u64,
    pub n_canary: u64,
    pub segments: Vec<JudgeSegment>,
    pub problems: Vec<String>,
}

/// The canary plan: the rollout's steps, its stop conditions, the judge now.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryPlan {
    pub rollout: Option<RolloutPlan>,
    pub stop_conditions: Vec<String>,
    pub judge: Option<JudgeNow>,
}

/// Events of both versions against the registry's prompt_sha.
#[derive(Debug, Clone, Serialize)]
pub struct ShaCheck {
    pub events: u64,
    pub matching: u64,
    /// Share of events whose prompt_sha matches (null without events).
    pub share: Option<f64>,
    /// Events that carry no prompt_sha.
    pub missing: u64,
    /// Each prompt_sha that does not match its version's registered SHA-256.
    pub mismatched: Vec<ShaMismatch>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShaMismatch {
    pub version: String,
    pub prompt_sha: String,
    pub events: u64,
    pub registered: String,
}

/// The review's outcome, or why there is none.
#[derive(Debug, Clone, Serialize)]
pub struct ReviewResult {
    pub review: Option<String>,
    pub done: bool,
    pub score: Option<ReviewScore>,
    pub note: String,
}

/// The kill switch for this change.
#[derive(Debug, Clone, Serialize)]
pub struct Rollback {
    pub last_known_good: Option<String>,
    pub command: Option<String>,
    pub note: String,
}

/// One check, ticked or not, with its evidence.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    /// Required checks decide the exit code.
    pub required: bool,
    pub passed: bool,
    pub evidence: String,
}

/// The filled checklist.
#[derive(Debug, Clone, Serialize)]
pub struct Checklist {
    pub route: String,
    pub env: String,
    pub baseline: VersionRef,
    pub canary: VersionRef,
    /// Unified diff of the two registered texts.
    pub diff: String,
    pub why: Why,
    pub impact: Impact,
    pub canary_plan: CanaryPlan,
    pub review: ReviewResult,
    pub rollback: Rollback,
    pub checks: Vec<Check>,
    /// 0 when every required check passes, 1 otherwise.
    pub exit_code: i32,
}

impl Checklist {
    /// Sets the exit code from the required checks.
    pub fn decide(&mut self) {
        let ok = self.checks.iter().filter(|c| c.required).all(|c| c.passed);
        self.exit_code = if ok { 0 } else { 1 };
    }
    pub(crate) fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }
}

/// Names of the checks.
pub const CHECK_JUDGE: &str = "judge";
pub const CHECK_SHA: &str = "prompt_sha";
pub const CHECK_PINS: &str = "pins";
pub const CHECK_REVIEW: &str = "review";

/// Unified diff (3 lines of context) of the baseline's text to the canary's.
///
/// ```
/// let d = promptgate::report::checklist::unified_diff("v1", "a\nb\n", "v2", "a\nc\n");
/// assert!(d.starts_with("--- v1\n+++ v2\n"));
/// assert!(d.contains("-b\n+c\n"));
/// ```
pub fn unified_diff(old_name: &str, old: &str, new_name: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_name, new_name)
        .missing_newline_hint(false)
        .to_string()
}

/// `model=m1, tier=free`, or `all traffic` for an empty key.
pub fn segment_name(key: &BTreeMap<String, String>) -> String {
    if key.is_empty() {
        return "all traffic".to_string();
    }
    crate::judge::verdict::segment_label(key)
}

/// The measured impact per segment, from a judge run with report-only impact rules.
pub fn impact(verdict: &Verdict, window: String) -> Impact {
    let segments = verdict
        .segments
        .iter()
        .map(|s| ImpactSegment {
            segment: segment_name(&s.key),
            n_baseline: s.n_baseline,
            n_canary: s.n_canary,
            metrics: s
                .rules
                .iter()
                .map(|r| ImpactMetric {
                    metric: r.metric.clone(),
                    n_baseline: r.n_baseline,
                    n_canary: r.n_canary,
                    baseline: r.baseline,
                    canary: r.canary,
                    ratio: r.ratio,
                    ci_low: r.ci_low,
                    ci_high: r.ci_high,
                })
                .collect(),
        })
        .collect();
    Impact {
        window,
        no_canary_data: verdict.n_canary == 0,
        segments,
        intervals: format!(
            "canary/baseline ratio [lower, upper]: the judge's bounds, the upper one-sided at {}%{}",
            pct(verdict.confidence),
            if verdict.sequential {
                ", always valid however often the canary is looked at"
            } else {
                ""
            }
        ),
    }
}

/// The judge's verdict on a step, per segment with volumes; `decision` and `reason` are what
/// the step decides (the judge's, or invalid when events do not match the registry).
pub fn judge_now(v: &Verdict, decision: Decision, reason: &str) -> JudgeNow {
    JudgeNow {
        verdict: decision.as_str().to_string(),
        reason: reason.to_string(),
        n_baseline: v.n_baseline,
        n_canary: v.n_canary,
        segments: v
            .segments
            .iter()
            .map(|s| JudgeSegment {
                segment: segment_name(&s.key),
                verdict: s.verdict.as_str().to_string(),
                n_baseline: s.n_baseline,
                n_canary: s.n_canary,
                reason: s.reason.clone(),
            })
            .collect(),
        problems: v.problems.clone(),
    }
}

fn pct(x: f64) -> String {
    let p = x * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{}", p.round())
    } else {
        format!("{p:.1}")
    }
}

/// The policy's stop conditions, in words.
pub fn stop_conditions(p: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    for r in &p.rules {
        if r.report_only {
            out.push(format!(
                "{}: reported only, never stops the canary (warns above {}x baseline)",
                r.name, r.max_ratio
            ));
            continue;
        }
        let shown = match r.abort_on {
            crate::judge::policy::AbortOn::Threshold => {
                format!("above {}x the baseline's", r.max_ratio)
            }
            crate::judge::policy::AbortOn::AnyHarm => {
                "above the baseline's (any significant harm)".to_string()
            }
        };
        let mut s = format!(
            "abort when {} is shown {shown} (always-valid lower bound, one-sided, Holm-adjusted, α {}; before {} events per arm only at α {})",
            r.name,
            p.alpha(),
            p.min_events,
            p.early_abort_alpha
        );
        if r.abort_only {
            s.push_str("; abort-only: it never holds a promotion");
        }
        out.push(s);
    }
    out.push(format!(
        "promote a step when every gating rule is shown within its margin ({}% confidence) on estimates stratified over segments, with at least {} events per arm, and no segment of {}% or more of an arm's events below that or past a threshold ({})",
        pct(p.confidence),
        p.min_events,
        pct(p.material_share),
        if p.segment_by.is_empty() {
            "one segment".to_string()
        } else {
            format!("segments: {}", p.segment_by.join(" × "))
        }
    ));
    out.push(
        "hold as invalid on a sample-ratio mismatch (p < 0.001), a pinned knob that differs between the arms, or events whose prompt_sha is not the registry's"
            .to_string(),
    );
    out
}

/// Events of both versions against the registry: `registered` maps version -> SHA-256.
pub fn sha_check(arms: &[ArmEvents], registered: &BTreeMap<String, String>) -> ShaCheck {
    let mut c = ShaCheck {
        events: 0,
        matching: 0,
        share: None,
        missing: 0,
        mismatched: Vec::new(),
    };
    for a in arms {
        c.events += a.events;
        let Some(reg) = registered.get(&a.version) else {
            continue;
        };
        match a.prompt_sha.as_deref() {
            None => c.missing += a.events,
            Some(sha) if sha_matches(reg, sha) => c.matching += a.events,
            Some(sha) => c.mismatched.push(ShaMismatch {
                version: a.version.clone(),
                prompt_sha: sha.to_string(),
                events: a.events,
                registered: reg[..12].to_string(),
            }),
        }
    }
    c.share = (c.events > 0).then(|| c.matching as f64 / c.events as f64);
    c
}

impl ShaCheck {
    pub fn to_check(&self) -> Check {
        let passed = self.matching == self.events;
        let evidence = if self.events == 0 {
            "no events of either version yet: nothing to contradict the registry".to_string()
        } else {
            let mut e = format!(
                "{} of {} events ({}) carry the registry's prompt_sha",
                self.matching,
                self.events,
                percent(self.share.unwrap_or(0.0))
            );
            if self.missing > 0 {
                e.push_str(&format!("; {} carry none", self.missing));
            }
            for m in &self.mismatched {
                e.push_str(&format!(
                    "; {} events of {} carry {:?}, not the registry's {}",
                    m.events, m.version, m.prompt_sha, m.registered
                ));
            }
            e
        };
        Check {
            name: CHECK_SHA.to_string(),
            required: true,
            passed,
            evidence,
        }
    }
}

fn percent(x: f64) -> String {
    let p = x * 100.0;
    if p == 100.0 || p == 0.0 {
        format!("{p:.0}%")
    } else {
        format!("{p:.2}%")
    }
}

/// The judge check: promote, or a rollout in progress that has not aborted. `decided` is the
/// step's decision and its reason.
/// The judge check: `killed` says why the canary is out of service, if a kill switch took it;
/// without a rollout, `decided` is the judge over `window` (traffic split by another tool).
pub fn judge_check(
    rollout: Option<&RolloutPlan>,
    decided: Option<&(Decision, String)>,
    killed: Option<&str>,
    window: &str,
) -> Check {
    let (passed, evidence) = match (killed, rollout, decided) {
        (Some(kill), _, _) => (false, kill.to_string()),
        (None, None, Some((d, reason))) => (
            *d == Decision::Promote,
            format!(
                "no promptgate rollout of this change (traffic split elsewhere): the judge on both versions' events {window}: {}: {reason}",
                d.as_str()
            ),
        ),
        (None, None, None) => (
            false,
            "no rollout of this change: start one with `promptgate rollout start`".to_string(),
        ),
        (None, Some(r), _) if r.status == "aborted" || r.status == "killed" => {
            (false, format!("rollout {} was {}", r.id, r.status))
        }
        (None, Some(r), None) => (false, format!("rollout {}: no events to judge yet", r.id)),
        (None, Some(r), Some((d, reason))) => match d {
            Decision::Promote => (true, format!("promote: {reason}")),
            Decision::Continue if r.status == "active" => (
                true,
                format!("in progress at {} (continue): {reason}", r.share),
            ),
            d => (false, format!("{}: {reason}", d.as_str())),
        },
    };
    Check {
        name: CHECK_JUDGE.to_string(),
        required: true,
        passed,
        evidence,
    }
}

/// The pinned-knobs check, from the judge's problems on the step.
pub fn pins_check(pins: &[String], verdict: Option<&Verdict>) -> Check {
    let differing: Vec<&String> = verdict
        .map(|v| {
            v.problems
                .iter()
                .filter(|p| p.starts_with("pinned knob"))
                .collect()
        })
        .unwrap_or_default();
    let (passed, evidence) = if pins.is_empty() {
        (
            true,
            "no knob pinned (`rollout start --pin ATTR` pins one)".to_string(),
        )
    } else if differing.is_empty() {
        (
            true,
            format!(
                "{} take the same values in both arms",
                pins.iter()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    } else {
        (
            false,
            differing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        )
    };
    Check {
        name: CHECK_PINS.to_string(),
        required: true,
        passed,
        evidence,
    }
}

/// The review check: the review's verdict is ship.
pub fn review_check(r: &ReviewResult) -> Check {
    let (passed, evidence) = match &r.score {
        Some(s) => (
            s.verdict == "ship",
            format!("verdict {}: {}", s.verdict, s.reason),
        ),
        None => (false, r.note.clone()),
    };
    Check {
        name: CHECK_REVIEW.to_string(),
        required: true,
        passed,
        evidence,
    }
}

/// Renders the checklist as pretty JSON.
pub fn write_json(c: &Checklist, out: &mut dyn Write) -> Result<()> {
    serde_json::to_writer_pretty(&mut *out, c).map_err(|e| Error::runtime(e.to_string()))?;
    writeln!(out).map_err(|e| Error::runtime(format!("cannot write output: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_is_unified_with_headers() {
        let d = unified_diff("v1", "a\nb\nc\n", "v2", "a\nB\nc\n");
        assert!(d.starts_with("--- v1\n+++ v2\n"), "{d}");
        assert!(d.contains("\n-b\n+B\n"), "{d}");
    }

    #[test]
    fn sha_check_counts_missing_and_mismatched() {
        let reg: BTreeMap<String, String> = [
            ("v1".to_string(), "ab".repeat(32)),
            ("v2".to_string(), "cd".repeat(32)),
        ]
        .into();
        let arm = |v: &str, sha: Option<&str>, n: u64| ArmEvents {
            version: v.into(),
            prompt_sha: sha.map(str::to_string),
            events: n,
            units: n,
        };
        let c = sha_check(
            &[
                arm("v1", Some("abababababab"), 90),
                arm("v2", Some("cdcdcdcd"), 5),
                arm("v2", Some("deadbeefdead"), 3),
                arm("v2", None, 2),
            ],
            &reg,
        );
        assert_eq!((c.events, c.matching, c.missing), (100, 95, 2));
        assert_eq!(c.mismatched.len(), 1);
        assert_eq!(c.mismatched[0].prompt_sha, "deadbeefdead");
        let check = c.to_check();
        assert!(!check.passed);
        assert!(
            check.evidence.contains("95 of 100 events (95.00%)"),
            "{}",
            check.evidence
        );
        assert!(
            check.evidence.contains("\"deadbeefdead\""),
            "{}",
            check.evidence
        );
    }
}
