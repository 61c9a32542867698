//! The checklist as Markdown: the seed's pull-request checklist, in its shape and order.

use std::io::Write;

use super::{CHECK_JUDGE, CHECK_PINS, CHECK_REVIEW, CHECK_SHA, Check, Checklist, ImpactMetric};
use crate::error::{Error, Result};

fn tick(c: Option<&Check>) -> &'static str {
    match c {
        Some(c) if c.passed => "[x]",
        _ => "[ ]",
    }
}

fn num(x: Option<f64>, metric: &str) -> String {
    match x {
        None => "-".to_string(),
        Some(v) if metric.ends_with("_rate") => format!("{:.2}%", v * 100.0),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn p_value(p: f64) -> String {
    if p < 0.0001 {
        "< 0.0001".to_string()
    } else {
        format!("= {p:.4}")
    }
}

fn ratio(m: &ImpactMetric) -> String {
    let b = |x: Option<f64>| x.map_or("no upper bound yet".to_string(), |v| format!("{v:.2}"));
    match m.ratio {
        None if m.n_canary == 0 || m.n_baseline == 0 => "no data".to_string(),
        None => "ratio undefined".to_string(),
        Some(r) => format!(
            "×{r:.2} [{}, {}]",
            m.ci_low.map_or("0".to_string(), |v| format!("{v:.2}")),
            b(m.ci_high)
        ),
    }
}

/// Renders the checklist as Markdown, in the seed's shape and order.
pub fn write_markdown(c: &Checklist, out: &mut dyn Write) -> Result<()> {
    let mut s = String::new();
    let p = |s: &mut String, line: String| {
        s.push_str(&line);
        s.push('\n');
    };
    p(&mut s, "## Prompt change checklist".into());
    // The verdict first, once: what a reviewer reads before anything else.
    let required: Vec<&Check> = c.checks.iter().filter(|c| c.required).collect();
    let failed: Vec<&str> = required
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name.as_str())
        .collect();
    p(
        &mut s,
        if failed.is_empty() {
            format!(
                "**Ready: all {} required checks pass** (exit 0).\n",
                required.len()
            )
        } else {
            format!(
                "**Not ready: {} of {} required checks fail: {}** (exit 1).\n",
                failed.len(),
                required.len(),
                failed.join(", ")
            )
        },
    );
    p(&mut s, format!("- Route: `{}` (env `{}`)", c.route, c.env));
    p(
        &mut s,
        format!(
            "- PromptVersion (old → new): `{}` (sha256 `{}`) → `{}` (sha256 `{}`)",
            c.baseline.version,
            &c.baseline.sha256[..12],
            c.canary.version,
            &c.canary.sha256[..12]
        ),
    );
    let (plus, minus) = c.diff.lines().fold((0, 0), |(a, d), l| {
        if l.starts_with('+') && !l.starts_with("+++") {
            (a + 1, d)
        } else if l.starts_with('-') && !l.starts_with("---") {
            (a, d + 1)
        } else {
            (a, d)
        }
    });
    p(
        &mut s,
        format!(
            "  <details><summary>Diff of the registered texts (+{plus} −{minus} lines)</summary>\n"
        ),
    );
    p(&mut s, "  ```diff".into());
    if c.diff.is_empty() {
        p(&mut s, "  (the texts are identical)".into());
    }
    for l in c.diff.lines() {
        p(&mut s, format!("  {l}"));
    }
    p(&mut s, "  ```\n  </details>\n".into());
    p(
        &mut s,
        match (&c.why.text, c.why.source.as_str()) {
            (Some(t), "registry") => format!(
                "- Why: {t} (note given when `{}` was registered{})",
                c.canary.version,
                c.why
                    .registered
                    .as_deref()
                    .map(|r| format!(", {r}"))
                    .unwrap_or_default()
            ),
            (Some(t), _) => format!("- Why: {t}"),
            (None, _) => format!(
                "- Why: not given (pass `--why`, or register the version with `--why`: `{}` was registered without a note)",
                c.canary.version
            ),
        },
    );
    // Expected impact.
    if c.impact.no_canary_data {
        p(
            &mut s,
            format!(
                "- Expected impact (quality / cost / latency): no canary data yet ({})",
                c.impact.window
            ),
        );
    } else {
        p(
            &mut s,
            format!(
                "- Expected impact (quality / cost / latency): measured over {}; {}",
                c.impact.window, c.impact.intervals
            ),
        );
        for seg in &c.impact.segments {
            let metrics: Vec<String> = seg
                .metrics
                .iter()
                .map(|m| {
                    if m.baseline.is_none() && m.canary.is_none() {
                        let what = if m.metric.ends_with("label_rate") {
                            "labeled events"
                        } else {
                            "events"
                        };
                        return format!("{}: no {what}", m.metric);
                    }
                    format!(
                        "{} {} → {} ({})",
                        m.metric,
                        num(m.baseline, &m.metric),
                        num(m.canary, &m.metric),
                        ratio(m)
                    )
                })
                .collect();
            p(
                &mut s,
                format!(
                    "  - {} ({} baseline / {} canary events): {}",
                    seg.segment,
                    seg.n_baseline,
                    seg.n_canary,
                    metrics.join("; ")
                ),
            );
        }
    }
    // Canary plan.
    p(&mut s, "- Canary plan:".into());
    match &c.canary_plan.rollout {
        Some(r) => {
            let steps: Vec<String> = r
                .steps
                .iter()
                .enumerate()
                .map(|(i, st)| {
                    if i + 1 == r.step {
                        format!("**{st}**")
                    } else {
                        st.clone()
                    }
                })
                .collect();
            let at = match r.status.as_str() {
                "active" => format!(
                    "active at step {}/{} ({}) since {}",
                    r.step,
                    r.steps.len(),
                    r.share,
                    r.step_started_at
                ),
                status => format!(
                    "{status} at {}, last judged at step {}/{} ({})",
                    r.ended_at.as_deref().unwrap_or("?"),
                    r.step,
                    r.steps.len(),
                    r.share
                ),
            };
            p(
                &mut s,
                format!(
                    "  - % rollout: {} (rollout `{}`, {at})",
                    steps.join(" → "),
                    r.id
                ),
            );
        }
        None => p(
            &mut s,
            format!(
                "  - % rollout: no rollout of `{}` over `{}` in env `{}` yet (`promptgate rollout start --route {} --env {} --canary {}`)",
                c.canary.version, c.baseline.version, c.env, c.route, c.env, c.canary.version
            ),
        ),
    }
    p(&mut s, "  - Stop conditions:".into());
    for sc in &c.canary_plan.stop_conditions {
        p(&mut s, format!("    - {sc}"));
    }
    match &c.canary_plan.judge {
        Some(j) => {
            p(
                &mut s,
                format!(
                    "  - Judge now: **{}** ({} baseline / {} canary events): {}",
                    j.verdict, j.n_baseline, j.n_canary, j.reason
                ),
            );
            for seg in &j.segments {
                p(
                    &mut s,
                    format!(
                        "    - {}: {} ({} baseline / {} canary events): {}",
                        seg.segment, seg.verdict, seg.n_baseline, seg.n_canary, seg.reason
                    ),
                );
            }
        }
        None => p(
            &mut s,
            "  - Judge now: not run (no rollout or no events)".into(),
        ),
    }
    for name in [CHECK_JUDGE, CHECK_SHA, CHECK_PINS] {
        if let Some(ch) = c.check(name) {
            let label = match name {
                CHECK_JUDGE => "Judge: promote, or in progress without abort",
                CHECK_SHA => "Every event of both versions carries the registry's prompt_sha",
                _ => "Pinned knobs unchanged",
            };
            p(
                &mut s,
                format!("  - {} {label}: {}", tick(Some(ch)), ch.evidence),
            );
        }
    }
    // Review.
    let rc = c.check(CHECK_REVIEW);
    match &c.review.score {
        Some(sc) => p(
            &mut s,
            format!(
                "- Review set size + result:\n  - {} Review `{}`: n = {} pairs ({} labeler(s)), canary wins {} / losses {} / ties {}, sign test p {}, good rate {} → {}; verdict **{}**: {}",
                tick(rc),
                sc.review,
                sc.pairs,
                sc.labelers.len(),
                sc.wins,
                sc.losses,
                sc.ties,
                p_value(sc.sign_test_p),
                num(sc.baseline.good_rate, "good_rate"),
                num(sc.canary.good_rate, "good_rate"),
                sc.verdict,
                sc.reason
            ),
        ),
        None => p(
            &mut s,
            format!(
                "- Review set size + result:\n  - {} Review not done ({})",
                tick(rc),
                c.review.note
            ),
        ),
    }
    // Rollback.
    match (&c.rollback.last_known_good, &c.rollback.command) {
        (Some(v), Some(cmd)) => p(
            &mut s,
            format!("- Rollback knob: last-known-good `{v}`: `{cmd}`"),
        ),
        _ => p(&mut s, format!("- Rollback knob: {}", c.rollback.note)),
    }
    out.write_all(s.as_bytes())
        .map_err(|e| Error::runtime(format!("cannot write output: {e}")))
}
