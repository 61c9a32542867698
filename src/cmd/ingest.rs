//! `promptgate ingest`: load NDJSON/CSV events or labels into the lake.

use std::io::Write;

use crate::error::Result;
use crate::ingest::{self, IngestOptions, IngestReport, Source};
use crate::lake::Lake;

/// Runs an ingest and prints its report; exit 1 under `--strict` when records were rejected.
pub async fn run(lake: &Lake, paths: &[String], opts: IngestOptions, json: bool) -> Result<i32> {
    opts.check()?;
    let sources = Source::open_all(paths, opts.format)?;
    let report = ingest::ingest(lake, sources, &opts).await?;
    let mut out = super::stdout();
    print_report(
        &mut out,
        &report,
        json,
        opts.kind == ingest::RecordKind::Labels,
    )?;
    super::flush(&mut out)?;
    Ok(if opts.strict && report.rejected > 0 {
        1
    } else {
        0
    })
}

fn print_report(out: &mut dyn Write, r: &IngestReport, json: bool, labels: bool) -> Result<()> {
    let w = |e: std::io::Error| crate::error::Error::runtime(format!("cannot write output: {e}"));
    if json {
        let line = serde_json::to_string(r).expect("report serializes");
        writeln!(out, "{line}").map_err(w)?;
        return Ok(());
    }
    let what = if labels { "labels" } else { "events" };
    writeln!(
        out,
        "read {}, accepted {}, duplicates {}, rejected {} ({what})",
        r.read, r.accepted, r.duplicates, r.rejected
    )
    .map_err(w)?;
    if r.skipped > 0 {
        writeln!(
            out,
            "skipped {} spans without gen_ai.* attributes (not LLM calls)",
            r.skipped
        )
        .map_err(w)?;
    }
    if r.inline_labels > 0 {
        writeln!(out, "inline labels added: {}", r.inline_labels).map_err(w)?;
    }
    if r.labeled_events_indexed > 0 {
        writeln!(out, "labeled events indexed: {}", r.labeled_events_indexed).map_err(w)?;
    }
    if let Some(q) = &r.quarantine {
        writeln!(
            out,
            "rejected records kept verbatim in {} (reasons in reasons.ndjson)",
            q.display()
        )
        .map_err(w)?;
    }
    if !r.committed {
        writeln!(
            out,
            "--strict: records were rejected, so nothing was added to the lake"
        )
        .map_err(w)?;
    }
    Ok(())
}
