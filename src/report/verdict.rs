//! Rendering of a judge [`Verdict`]: a readable table, the versioned JSON document, or a
//! Markdown summary to paste into a pull request.

use std::io::Write;

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};

use crate::error::{Error, Result};
use crate::judge::verdict::segment_label;
use crate::judge::{RuleResult, Verdict};

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

fn opt(x: Option<f64>, digits: usize) -> String {
    match x {
        Some(x) if x.abs() >= 1e5 || (x != 0.0 && x.abs() < 1e-3) => format!("{x:.2e}"),
        Some(x) => format!("{x:.digits$}"),
        None => "-".into(),
    }
}

fn value(r: &RuleResult, x: Option<f64>) -> String {
    if r.metric.ends_with("_rate") {
        x.map_or("-".into(), |x| format!("{:.2}%", 100.0 * x))
    } else {
        opt(x, 1)
    }
}

fn ratio_ci(r: &RuleResult) -> String {
    let ratio = match (r.ratio, r.canary, r.baseline) {
        (Some(x), _, _) => format!("{x:.2}x"),
        (None, Some(c), Some(b)) if b == 0.0 && c > 0.0 => "inf".into(),
        _ => "-".into(),
    };
    if r.p_value.is_none() {
        return ratio;
    }
    let hi = r.ci_high.map_or("inf".into(), |h| format!("{h:.2}"));
    format!("{ratio} [{}, {hi}]", opt(r.ci_low, 2))
}

fn p(r: &RuleResult) -> String {
    match (r.p_value, r.p_adjusted) {
        (Some(p), Some(a)) => format!("{} / {}", opt(Some(p), 4), opt(Some(a), 4)),
        _ => "-".into(),
    }
}

fn table(v: &Verdict, s: &Subject<'_>, out: &mut dyn Write) -> Result<()> {
    writeln!(out, "{}", headline(v, s)).map_err(w)?;
    writeln!(out, "  {}", v.reason).map_err(w)?;
    writeln!(
        out,
        "  events: {} baseline, {} canary; segments by {}; {:.0}% confidence, Holm over {} tests; min_events {} per arm; early-abort alpha {}",
        v.n_baseline,
        v.n_canary,
        if v.segment_by.is_empty() { "nothing".into() } else { v.segment_by.join(", ") },
        100.0 * v.confidence,
        v.tests,
        v.min_events,
        v.early_abort_alpha
    )
    .map_err(w)?;
    if let Some(srm) = &v.srm {
        writeln!(
            out,
            "  sample ratio: canary {:.2}% of events, planned {:.2}% (chi-square {:.2}, p {}){}",
            100.0 * srm.observed_share,
            100.0 * srm.expected_share,
            srm.chi2,
            opt(Some(srm.p_value), 4),
            if srm.mismatch { " MISMATCH" } else { "" }
        )
        .map_err(w)?;
    }
    for seg in &v.segments {
        writeln!(
            out,
            "\n{} | n baseline {} | n canary {} | {}: {}",
            segment_label(&seg.key),
            seg.n_baseline,
            seg.n_canary,
            seg.verdict.as_str(),
            seg.reason
        )
        .map_err(w)?;
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(vec![
                "rule",
                "n b/c",
                "baseline",
                "canary",
                "ratio [CI]",
                "threshold",
                "p / adj p",
                "verdict",
            ]);
        for r in &seg.rules {
            t.add_row(vec![
                format!(
                    "{}{}",
                    r.rule,
                    if r.report_only { " (report only)" } else { "" }
                ),
                format!("{}/{}", r.n_baseline, r.n_canary),
                value(r, r.baseline),
                value(r, r.canary),
                ratio_ci(r),
                format!("> {:.2}x", r.threshold),
                p(r),
                format!("{:?}", r.verdict).to_lowercase(),
            ]);
        }
        writeln!(out, "{t}").map_err(w)?;
        for r in &seg.rules {
            writeln!(out, "  {}: {}", r.rule, r.reason).map_err(w)?;
        }
    }
    writeln!(out, "\nnote: {}", v.assumptions.join("; ")).map_err(w)
}

fn markdown(v: &Verdict, s: &Subject<'_>, out: &mut dyn Write) -> Result<()> {
    let icon = match v.verdict {
        crate::judge::Decision::Promote => "✅",
        crate::judge::Decision::Abort => "🛑",
        crate::judge::Decision::Continue => "⏳",
        crate::judge::Decision::Invalid => "⚠️",
    };
    writeln!(
        out,
        "### {icon} promptgate: {}\n",
        headline(v, s).replace('"', "`")
    )
    .map_err(w)?;
    writeln!(out, "{}\n", v.reason).map_err(w)?;
    writeln!(
        out,
        "{} baseline / {} canary events · segments by {} · {:.0}% confidence, Holm-adjusted over {} tests · min {} events per arm\n",
        v.n_baseline,
        v.n_canary,
        if v.segment_by.is_empty() { "nothing".into() } else { v.segment_by.join(", ") },
        100.0 * v.confidence,
        v.tests,
        v.min_events
    )
    .map_err(w)?;
    writeln!(out, "| segment | rule | n (b/c) | baseline | canary | ratio [CI] | threshold | adj. p | verdict |").map_err(w)?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|").map_err(w)?;
    for seg in &v.segments {
        for r in &seg.rules {
            writeln!(
                out,
                "| {} | {} | {}/{} | {} | {} | {} | > {:.2}x | {} | **{}** |",
                segment_label(&seg.key).replace('|', "\\|"),
                r.rule,
                r.n_baseline,
                r.n_canary,
                value(r, r.baseline),
                value(r, r.canary),
                ratio_ci(r),
                r.threshold,
                opt(r.p_adjusted, 4),
                format!("{:?}", r.verdict).to_lowercase()
            )
            .map_err(w)?;
        }
    }
    let notable: Vec<String> = v
        .segments
        .iter()
        .flat_map(|seg| {
            seg.rules
                .iter()
                .filter(|r| !matches!(r.verdict, crate::judge::RuleOutcome::Pass))
                .map(move |r| {
                    format!(
                        "- **{}** in {}: {}",
                        r.rule,
                        segment_label(&seg.key),
                        r.reason
                    )
                })
        })
        .collect();
    if !notable.is_empty() {
        writeln!(out, "\n{}", notable.join("\n")).map_err(w)?;
    }
    writeln!(out, "\n<sub>{}</sub>", v.assumptions.join("; ")).map_err(w)
}
