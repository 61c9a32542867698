//! Rendering of a judge [`Verdict`]: a readable table, the versioned JSON document, or a
//! Markdown summary to paste into a pull request.

use std::io::Write;

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};

use super::sig;
use crate::error::{Error, Result};
use crate::judge::verdict::{holds_its_segment, ratio_text, segment_label};
use crate::judge::{Decision, RuleOutcome, RuleResult, Verdict};

/// Output format of `promptgate judge`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum VerdictFormat {
    #[default]
    Table,
    Json,
    Markdown,
}

/// Who was judged, for the headline.
pub struct Subject<'a> {
    pub route: &'a str,
    pub baseline: &'a str,
    pub canary: &'a str,
    pub env: Option<&'a str>,
}

fn w(e: std::io::Error) -> Error {
    Error::runtime(format!("cannot write output: {e}"))
}

pub fn write_verdict(
    v: &Verdict,
    subject: &Subject<'_>,
    format: VerdictFormat,
    out: &mut dyn Write,
) -> Result<()> {
    match format {
        VerdictFormat::Json => {
            let mut doc = serde_json::to_value(v).expect("verdict serializes");
            doc["route"] = subject.route.into();
            doc["baseline_version"] = subject.baseline.into();
            doc["canary_version"] = subject.canary.into();
            doc["env"] = subject.env.map_or(serde_json::Value::Null, Into::into);
            serde_json::to_writer_pretty(&mut *out, &doc)
                .map_err(|e| Error::runtime(e.to_string()))?;
            writeln!(out).map_err(w)
        }
        VerdictFormat::Table => table(v, subject, out),
        VerdictFormat::Markdown => markdown(v, subject, out),
    }
}

fn headline(v: &Verdict, s: &Subject<'_>) -> String {
    format!(
        "{}: canary {:?} vs baseline {:?} on route {:?}{}",
        v.verdict.as_str().to_uppercase(),
        s.canary,
        s.baseline,
        s.route,
        s.env.map(|e| format!(" (env {e:?})")).unwrap_or_default()
    )
}

/// A metric value for people: rates as percentages, others at 4 significant digits.
fn value(r: &RuleResult, x: Option<f64>) -> String {
    match x {
        None => "-".into(),
        Some(x) if r.metric.ends_with("_rate") => format!("{}%", sig(100.0 * x, 3)),
        Some(x) => sig(x, 4),
    }
}

fn bound(x: Option<f64>) -> String {
    x.map_or("unbounded".into(), ratio_text)
}

/// `1.32x [0.91, 1.88]`: the estimate and the one-sided bounds the decision used.
fn ratio_ci(r: &RuleResult) -> String {
    let ratio = match (r.ratio, r.canary, r.baseline) {
        (Some(x), _, _) => ratio_text(x),
        (None, Some(c), Some(b)) if b == 0.0 && c > 0.0 => "unbounded".into(),
        _ => "-".into(),
    };
    if r.ci_low_level.is_none() && r.ci_high.is_none() {
        return ratio;
    }
    let low = match (r.ci_low, r.ci_low_level) {
        (Some(l), _) => ratio_text(l),
        (None, Some(_)) => "unbounded".into(),
        (None, None) => "-".into(),
    };
    format!("{ratio} [{low}, {}]", bound(r.ci_high))
}

fn pvals(r: &RuleResult) -> String {
    match (r.p_value, r.p_adjusted) {
        (Some(p), Some(a)) => format!("{} / {}", sig(p, 2), sig(a, 2)),
        (Some(p), None) => sig(p, 2),
        _ => "-".into(),
    }
}

fn rule_name(r: &RuleResult) -> String {
    let tag = if r.report_only {
        " (report only)"
    } else if r.abort_only {
        " (abort only)"
    } else {
        ""
    };
    format!("{}{tag}", r.rule)
}

fn settings(v: &Verdict) -> String {
    format!(
        "{} baseline / {} canary events; segments by {} (material from {}% of an arm's events); {:.0}% confidence ({}){}; abort tests Holm-adjusted over {}; min_events {} per arm; early-abort alpha {}",
        v.n_baseline,
        v.n_canary,
        if v.segment_by.is_empty() {
            "nothing".into()
        } else {
            v.segment_by.join(", ")
        },
        sig(100.0 * v.material_share, 2),
        100.0 * v.confidence,
        if v.sequential {
            "always valid over repeated looks"
        } else {
            "fixed horizon, one look"
        },
        if v.clustered {
            "; variances per unit_id"
        } else {
            ""
        },
        v.tests,
        v.min_events,
        v.early_abort_alpha
    )
}

fn srm_line(v: &Verdict) -> Option<String> {
    v.srm.as_ref().map(|srm| {
        format!(
            "sample ratio: canary {}% of {} ({} vs {}), planned {}% (chi-square {}, p {}){}",
            sig(100.0 * srm.observed_share, 3),
            srm.basis,
            srm.canary,
            srm.baseline,
            sig(100.0 * srm.expected_share, 3),
            sig(srm.chi2, 3),
            sig(srm.p_value, 2),
            if srm.mismatch { " MISMATCH" } else { "" }
        )
    })
}

fn rules_table(rules: &[RuleResult], with_p: bool) -> Table {
    let mut t = Table::new();
    let mut header = vec![
        "rule",
        "n b/c",
        "baseline",
        "canary",
        "ratio [bounds]",
        "threshold",
    ];
    if with_p {
        header.push("p / adj p");
    }
    header.push("outcome");
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header);
    for r in rules {
        let mut row = vec![
            rule_name(r),
            format!("{}/{}", r.n_baseline, r.n_canary),
            value(r, r.baseline),
            value(r, r.canary),
            ratio_ci(r),
            format!("<= {}", ratio_text(r.threshold)),
        ];
        if with_p {
            row.push(pvals(r));
        }
        row.push(r.verdict.as_str().to_string());
        t.add_row(row);
    }
    t
}

fn table(v: &Verdict, s: &Subject<'_>, out: &mut dyn Write) -> Result<()> {
    writeln!(out, "{}", headline(v, s)).map_err(w)?;
    writeln!(out, "  {}", v.reason).map_err(w)?;
    writeln!(out, "  {}", settings(v)).map_err(w)?;
    if let Some(line) = srm_line(v) {
        writeln!(out, "  {line}").map_err(w)?;
    }
    for x in &v.warnings {
        writeln!(out, "  warning: {x}").map_err(w)?;
    }
    for x in &v.unproven {
        writeln!(out, "  not proven: {x}").map_err(w)?;
    }
    if !v.overall.is_empty() && !v.segments.is_empty() {
        writeln!(
            out,
            "\nall segments (stratified evidence: what promotion is decided on)"
        )
        .map_err(w)?;
        writeln!(out, "{}", rules_table(&v.overall, false)).map_err(w)?;
        for r in &v.overall {
            let more = r
                .what_settles()
                .map(|n| format!("; {n} (a projection at the current values)"))
                .unwrap_or_default();
            writeln!(out, "  {} [{}]: {}{more}", r.rule, r.test, r.reason).map_err(w)?;
        }
    }
    for seg in &v.segments {
        writeln!(
            out,
            "\n{} | n baseline {} | n canary {} | {}: {}",
            segment_label(&seg.key),
            seg.n_baseline,
            seg.n_canary,
            match seg.verdict {
                Decision::Abort => "abort",
                Decision::Continue => "holds the canary",
                _ => "does not hold the canary",
            },
            seg.reason
        )
        .map_err(w)?;
        if seg.rules.is_empty() {
            continue;
        }
        writeln!(out, "{}", rules_table(&seg.rules, true)).map_err(w)?;
        for r in &seg.rules {
            writeln!(out, "  {}: {}", r.rule, r.reason).map_err(w)?;
        }
    }
    writeln!(
        out,
        "\nbounds: ratio [lower at the abort test's level, upper at {}]; a rule fails when the lower bound is above its threshold, passes when the upper bound is within it",
        sig(1.0 - v.confidence, 2)
    )
    .map_err(w)?;
    writeln!(out, "note: {}", v.assumptions.join("; ")).map_err(w)
}

fn md_row(out: &mut dyn Write, place: &str, r: &RuleResult) -> Result<()> {
    writeln!(
        out,
        "| {} | {} | {}/{} | {} | {} | {} | ≤ {} | **{}** |",
        place.replace('|', "\\|"),
        rule_name(r),
        r.n_baseline,
        r.n_canary,
        value(r, r.baseline),
        value(r, r.canary),
        ratio_ci(r),
        ratio_text(r.threshold),
        r.verdict.as_str()
    )
    .map_err(w)
}

const MD_HEADER: &str = "| where | rule | n (b/c) | baseline | canary | ratio [bounds] | threshold | outcome |\n|---|---|---|---|---|---|---|---|";

/// What would settle an open rule, for the decided-by table.
fn next_step(r: &RuleResult) -> String {
    r.what_settles().unwrap_or_else(|| match r.verdict {
        RuleOutcome::Fail => format!("lower bound above {}", ratio_text(r.abort_above)),
        RuleOutcome::Pass => format!("upper bound within {}", ratio_text(r.threshold)),
        _ => "-".into(),
    })
}

/// The rows that made the decision: the failures (abort); the open stratified rules and the
/// rules past a threshold in a segment that holds the canary (continue); every gating rule's
/// stratified evidence (promote).
fn deciding_rows(v: &Verdict) -> Vec<(String, &RuleResult)> {
    fn stratified(r: &RuleResult) -> (String, &RuleResult) {
        ("all segments (stratified)".to_string(), r)
    }
    match v.verdict {
        Decision::Abort => {
            let mut rows: Vec<(String, &RuleResult)> = v
                .segments
                .iter()
                .flat_map(|seg| {
                    seg.rules
                        .iter()
                        .filter(|r| r.verdict == RuleOutcome::Fail)
                        .map(move |r| (segment_label(&seg.key), r))
                })
                .collect();
            let spread: Vec<&RuleResult> = v
                .overall
                .iter()
                .filter(|r| {
                    r.verdict == RuleOutcome::Fail && !rows.iter().any(|(_, x)| x.rule == r.rule)
                })
                .collect();
            rows.extend(spread.into_iter().map(stratified));
            rows
        }
        Decision::Continue => {
            let mut rows: Vec<(String, &RuleResult)> = v
                .overall
                .iter()
                .filter(|r| {
                    v.deciding.contains(&r.rule)
                        && !matches!(r.verdict, RuleOutcome::Pass | RuleOutcome::NoData)
                })
                .map(stratified)
                .collect();
            for seg in v
                .segments
                .iter()
                .filter(|s| s.verdict == Decision::Continue)
            {
                for r in seg.rules.iter().filter(|r| holds_its_segment(r)) {
                    rows.push((segment_label(&seg.key), r));
                }
            }
            rows
        }
        _ => v
            .overall
            .iter()
            .filter(|r| v.deciding.contains(&r.rule))
            .map(stratified)
            .collect(),
    }
}

/// The Markdown for a pull request: the decision and its reason, one table of the rows that
/// decided it with what would settle each, then everything else folded away.
fn markdown(v: &Verdict, s: &Subject<'_>, out: &mut dyn Write) -> Result<()> {
    let icon = match v.verdict {
        Decision::Promote => "✅",
        Decision::Abort => "🛑",
        Decision::Continue => "⏳",
        Decision::Invalid => "⚠️",
    };
    writeln!(
        out,
        "### {icon} promptgate: {}\n",
        headline(v, s).replace('"', "`")
    )
    .map_err(w)?;
    writeln!(out, "{}\n", v.reason).map_err(w)?;
    for x in v.problems.iter().chain(&v.warnings) {
        writeln!(out, "- ⚠️ {x}").map_err(w)?;
    }
    for x in &v.unproven {
        writeln!(out, "- not proven: {x}").map_err(w)?;
    }
    let deciding = deciding_rows(v);
    if !deciding.is_empty() {
        writeln!(
            out,
            "\n| decided by | where | ratio [bounds] | threshold | outcome | next |\n|---|---|---|---|---|---|"
        )
        .map_err(w)?;
        for (place, r) in &deciding {
            writeln!(
                out,
                "| {} | {} | {} | ≤ {} | **{}** | {} |",
                rule_name(r),
                place.replace('|', "\\|"),
                ratio_ci(r),
                ratio_text(r.threshold),
                r.verdict.as_str(),
                next_step(r).replace('|', "\\|")
            )
            .map_err(w)?;
        }
    }
    writeln!(
        out,
        "\n<details><summary>All rules and segments</summary>\n\n{MD_HEADER}"
    )
    .map_err(w)?;
    for r in &v.overall {
        md_row(out, "all segments (stratified)", r)?;
    }
    for seg in &v.segments {
        for r in &seg.rules {
            md_row(out, &segment_label(&seg.key), r)?;
        }
    }
    writeln!(out, "\n{}", settings(v)).map_err(w)?;
    if let Some(line) = srm_line(v) {
        writeln!(out, "\n{line}").map_err(w)?;
    }
    writeln!(
        out,
        "\n</details>\n\n<sub>{}</sub>",
        v.assumptions.join("; ")
    )
    .map_err(w)
}
