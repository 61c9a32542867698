//! `promptgate demo`: a week of synthetic events into a fresh lake, ingested and rolled up.

use std::io::Write;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::r#gen::{self as generator, CanarySpec, GenConfig, Regression};
use crate::ingest::{self, IngestOptions, InputFormat, Source};
use crate::lake::Lake;
use crate::query;
use crate::report::{self, OutputFormat};
use datafusion::scalar::ScalarValue;

/// Events the demo generates.
pub const DEMO_EVENTS: u64 = 800_000;

pub async fn run(dir: Option<PathBuf>) -> Result<i32> {
    let dir = match dir {
        Some(d) => {
            if d.exists()
                && std::fs::read_dir(&d)
                    .map(|mut it| it.next().is_some())
                    .unwrap_or(true)
            {
                return Err(
                    Error::usage(format!("{} exists and is not empty", d.display())).with_hint(
                        "the demo builds a fresh lake; pass a new directory or omit --dir",
                    ),
                );
            }
            d
        }
        None => {
            std::env::temp_dir().join(format!("promptgate-demo-{}", uuid::Uuid::new_v4().simple()))
        }
    };
    let lake = Lake::new(dir.join("lake"));
    let mut out = super::stdout();
    let w = |e: std::io::Error| Error::runtime(format!("cannot write output: {e}"));

    writeln!(
        out,
        "promptgate demo: a week of synthetic LLM events in a fresh lake at {}",
        lake.root().display()
    )
    .map_err(w)?;
    // Routes `support` and `chat` run canary v2 on 10% of traffic with a planted regression
    // (+60% latency, 3x flagged rate); `search` and `summarize` run a clean canary v2 on half
    // of their (larger) traffic, enough for the judge to show it within every threshold.
    let base = GenConfig {
        events: DEMO_EVENTS / 2,
        days: 7,
        ..GenConfig::default()
    };
    let first_day_end = base.start.timestamp_micros() + 86_400_000_000;
    let regressed = GenConfig {
        seed: 1,
        routes: vec!["support".into(), "chat".into()],
        canary: Some(CanarySpec {
            version: "v2".into(),
            share: 0.1,
            regression: Regression {
                latency: 1.6,
                flagged: 3.0,
                ..Regression::default()
            },
        }),
        ..base.clone()
    };
    let clean = GenConfig {
        seed: 2,
        events: DEMO_EVENTS - regressed.events,
        routes: vec!["search".into(), "summarize".into()],
        canary: Some(CanarySpec {
            version: "v2".into(),
            share: 0.5,
            regression: Regression::default(),
        }),
        ..base
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create", &dir, e))?;
    let mut sources = Vec::new();
    for (name, cfg) in [
        ("events-support-chat.ndjson", &regressed),
        ("events-search-summarize.ndjson", &clean),
    ] {
        let path = dir.join(name);
        let file =
            std::fs::File::create(&path).map_err(|e| Error::io("cannot create", &path, e))?;
        generator::write_events(cfg, file).map_err(|e| Error::io("cannot write", &path, e))?;
        sources.push(path.to_string_lossy().into_owned());
    }
    writeln!(
        out,
        "\n$ promptgate gen --events {} --days 7 ... > events-support-chat.ndjson\n$ promptgate gen --events {} --days 7 ... > events-search-summarize.ndjson",
        regressed.events,
        clean.events
    )
    .map_err(w)?;
    let opened = Source::open_all(&sources, Some(InputFormat::Ndjson))?;
    let started = std::time::Instant::now();
    let report = ingest::ingest(&lake, opened, &IngestOptions::default()).await?;
    writeln!(
        out,
        "$ promptgate ingest events-*.ndjson\nread {}, accepted {}, duplicates {}, rejected {} ({:.2}s)",
        report.read,
        report.accepted,
        report.duplicates,
        report.rejected,
        started.elapsed().as_secs_f64()
    )
    .map_err(w)?;

    let ctx = query::lake_session(&lake).await?;
    let policy = crate::judge::Policy::default();
    for route in ["support", "search"] {
        writeln!(
            out,
            "\n$ promptgate sql -f queries/prompt_version_rollup.sql --param route={route} --param env=prod"
        )
        .map_err(w)?;
        let params = vec![
            ("route".to_string(), ScalarValue::Utf8(Some(route.into()))),
            ("env".to_string(), ScalarValue::Utf8(Some("prod".into()))),
        ];
        let df = query::plan(&ctx, query::PROMPT_VERSION_ROLLUP_SQL, params).await?;
        report::write_dataframe(df, OutputFormat::Table, &mut out).await?;
    }
    let ctx = query::judge_session(&lake).await?;
    // The clean canary is judged twice, as a rollout step or a cron job would: after its first
    // day (too little evidence yet: continue, with the events still needed), then after the week.
    for (route, what, until) in [
        ("support", "a canary with a planted regression", None),
        (
            "search",
            "a clean canary, judged after its first day",
            Some(first_day_end),
        ),
        ("search", "the same canary, judged again after a week", None),
    ] {
        let until_flag = if until.is_some() {
            " --until 2026-11-02"
        } else {
            ""
        };
        writeln!(
            out,
            "\n# {what}\n$ promptgate judge --route {route} --baseline v1 --canary v2 --env prod{until_flag} --format markdown"
        )
        .map_err(w)?;
        let args = super::judge::JudgeArgs {
            route: route.into(),
            baseline: "v1".into(),
            canary: "v2".into(),
            env: Some("prod".into()),
            policy: None,
            since_us: None,
            until_us: until,
            expected_share: None,
            pins: Vec::new(),
            format: report::VerdictFormat::Markdown,
        };
        let verdict = super::judge::evaluate(&ctx, &args, &policy).await?;
        let subject = report::Subject {
            route,
            baseline: "v1",
            canary: "v2",
            env: Some("prod"),
        };
        report::write_verdict(
            &verdict,
            &subject,
            report::VerdictFormat::Markdown,
            &mut out,
        )?;
        writeln!(out, "(exit code {})", verdict.exit_code).map_err(w)?;
    }
    writeln!(
        out,
        "\nExplore it yourself:\n  promptgate --lake {0} sql \"SELECT route, prompt_version, COUNT(*) FROM llm_events GROUP BY 1, 2 ORDER BY 1, 2\"\n  promptgate --lake {0} judge --route support --baseline v1 --canary v2 --env prod",
        lake.root().display()
    )
    .map_err(w)?;
    super::flush(&mut out)?;
    Ok(0)
}
