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
            "\n# {what}\n$ promptgate judge --route {route} --baseline v1 --canary v2 --env prod{until_flag}"
        )
        .map_err(w)?;
        let args = super::judge::JudgeArgs {
            as_of: None,
            route: route.into(),
            baseline: "v1".into(),
            canary: "v2".into(),
            env: Some("prod".into()),
            policy: None,
            since_us: None,
            until_us: until,
            expected_share: None,
            srm_exclude: Vec::new(),
            pins: Vec::new(),
            format: report::VerdictFormat::Table,
        };
        let verdict = super::judge::evaluate(&ctx, &args, &policy).await?;
        let subject = report::Subject {
            route,
            baseline: "v1",
            canary: "v2",
            env: Some("prod"),
        };
        // The table for a terminal; `--format markdown` is the report for a PR comment.
        report::write_verdict(&verdict, &subject, report::VerdictFormat::Table, &mut out)?;
        writeln!(out, "(exit code {})", verdict.exit_code).map_err(w)?;
    }
    writeln!(
        out,
        "# For a pull-request comment: the same command with --format markdown (--format json for a program)"
    )
    .map_err(w)?;
    rollout_tour(&lake, &dir, &mut out).await?;
    review_tour(&lake, &dir, &mut out).await?;
    let (files, bytes) = tree_size(lake.root());
    writeln!(
        out,
        "\nThe demo's lake is {} ({files} files, {:.1} MB; a temporary directory: delete it when done).",
        lake.root().display(),
        bytes as f64 / 1e6
    )
    .map_err(w)?;
    writeln!(
        out,
        "Explore it yourself:\n  promptgate --lake {0} sql \"SELECT route, prompt_version, COUNT(*) FROM llm_events GROUP BY 1, 2 ORDER BY 1, 2\"\n  promptgate --lake {0} judge --route support --baseline v1 --canary v2 --env prod\n  promptgate --lake {0} lake history   # every version; sql and judge take --as-of VERSION\n  promptgate --lake {0} registry history --route onboarding\n  promptgate --lake {0} checklist --route onboarding --baseline v1 --canary v2 --env prod --format json\n  promptgate --lake {0} serve   # then: curl 'http://127.0.0.1:8719/v1/resolve?route=onboarding&env=prod&unit=u7'",
        lake.root().display()
    )
    .map_err(w)?;
    super::flush(&mut out)?;
    Ok(0)
}

/// Files under `dir` and their bytes (what is unreadable is not counted).
fn tree_size(dir: &std::path::Path) -> (u64, u64) {
    let mut stack = vec![dir.to_path_buf()];
    let (mut files, mut bytes) = (0u64, 0u64);
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => {
                    files += 1;
                    bytes += m.len();
                }
                Err(_) => {}
            }
        }
    }
    (files, bytes)
}

/// Route of the rollout tour (no events of the week above, so every step sees only its own).
const TOUR_ROUTE: &str = "onboarding";

/// Judge policy of the tour. Its steps carry about 500 canary events each, far below what the
/// default policy needs to prove a canary safe (see the README's volumes table), so: one segment
/// per env, a wide p95 margin (2x) with the always-valid bounds tightest at 500 events, and the
/// flagged rate abort-only (it can stop a regression, it never holds a promotion).
const TOUR_POLICY: &str = r#"min_events = 200
segment_by = []
confidence = 0.95
[[rules]]
metric = "flagged_rate"
max_ratio = 1.5
abort_only = true
[[rules]]
metric = "p95_duration_ms"
max_ratio = 2.0
"#;

/// The registry part of the tour: a rollout that advances to 100%, one that aborts at 5% on a
/// planted regression, and the kill switch. Each step's traffic follows `resolve`.
async fn rollout_tour(lake: &Lake, dir: &std::path::Path, out: &mut dyn Write) -> Result<()> {
    use super::registry::WriteMeta;
    use crate::registry::{self, Registry, ResolveRequest};
    use crate::rollout::{self, StartSpec};

    let w = |e: std::io::Error| Error::runtime(format!("cannot write output: {e}"));
    let reg = Registry::locate(None, lake)?;
    let meta = WriteMeta {
        actor: "demo".into(),
        why: Some("promptgate demo".into()),
    };
    writeln!(
        out,
        "\n# The registry: versions by content, a rollout gated by the judge at every step, the kill switch"
    )
    .map_err(w)?;
    let texts = [
        (
            "v1",
            "Welcome the new user and list the three first steps.\n",
        ),
        (
            "v2",
            "Welcome the new user by name and list the three first steps, shortest first.\n",
        ),
        (
            "v3",
            "Welcome the new user, list every step in detail and quote the docs.\n",
        ),
    ];
    for (v, text) in texts {
        let bytes = text.as_bytes();
        let sha = registry::sha256_hex(bytes);
        reg.update(&meta.actor, meta.why.as_deref(), |s, st| {
            let c = s.add_version(TOUR_ROUTE, v, &sha, bytes.len() as u64, st)?;
            reg.store_prompt(bytes)?;
            Ok(((), c.into_iter().collect()))
        })?;
        writeln!(
            out,
            "$ promptgate registry add --route {TOUR_ROUTE} --version {v} --file onboarding-{v}.txt   # sha256 {}...",
            &sha[..12]
        )
        .map_err(w)?;
    }
    reg.update(&meta.actor, meta.why.as_deref(), |s, st| {
        let c = s.set_default(TOUR_ROUTE, None, "v1", st)?;
        Ok(((), c.into_iter().collect()))
    })?;
    writeln!(
        out,
        "$ promptgate registry set-default --route {TOUR_ROUTE} --version v1"
    )
    .map_err(w)?;

    // Units per step: about 500 canary events at 1%, 5%, 25% and 50%.
    let plan_units = [50_000u64, 10_000, 2_000, 1_000];
    for (n, (canary, latency, what)) in [
        (
            "v2",
            1.0,
            "a clean canary, promoted step by step until it is the default",
        ),
        (
            "v3",
            3.0,
            "a canary whose p95 latency triples, aborted at 5%",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        writeln!(out, "\n# {what}").map_err(w)?;
        let spec = StartSpec {
            route: TOUR_ROUTE.into(),
            env: "prod".into(),
            canary: canary.into(),
            plan: rollout::DEFAULT_PLAN.to_vec(),
            policy: Some(TOUR_POLICY.into()),
            pins: vec![],
            cohort: None,
            // A fixed id fixes who gets the canary, so the tour tells the same story each run.
            id: Some(format!("tour-{canary}")),
        };
        let ro = reg.update(&meta.actor, meta.why.as_deref(), |s, st| {
            let (ro, c) = rollout::start(s, spec, st)?;
            Ok((ro, vec![c]))
        })?;
        writeln!(
            out,
            "$ promptgate rollout start --route {TOUR_ROUTE} --env prod --canary {canary}   # baseline {}, plan 1,5,25,50,100",
            ro.baseline
        )
        .map_err(w)?;
        for (i, units) in plan_units.into_iter().enumerate() {
            // The regression shows from the second step on (after a clean first one).
            let regressed = if i > 0 { latency } else { 1.0 };
            let batch = n * plan_units.len() + i;
            let n = tour_traffic(lake, &reg, dir, canary, units, regressed, batch).await?;
            let o = super::rollout::judge_step(lake, &reg, TOUR_ROUTE, "prod", &meta).await?;
            writeln!(
                out,
                "  {n} events from {units} units -> $ promptgate rollout step --route {TOUR_ROUTE} --env prod\n    {} (exit {}): {}\n    {}",
                o.decided.verdict.to_uppercase(),
                o.decided.exit_code,
                o.decided.reason,
                o.action.describe(&o.after)
            )
            .map_err(w)?;
            if !o.after.is_active() {
                break;
            }
        }
    }

    writeln!(out, "\n# The kill switch: v2 misbehaves at 2am").map_err(w)?;
    let state = reg.load()?;
    let req = ResolveRequest {
        route: TOUR_ROUTE,
        env: "prod",
        tier: None,
        unit: "u7",
    };
    let show =
        |r: &registry::Resolution| format!("{} -> {} ({})", r.arm.as_str(), r.version, r.reason);
    writeln!(
        out,
        "$ promptgate resolve --route {TOUR_ROUTE} --env prod --unit u7\n  {}",
        show(&registry::resolve(&state, &req)?)
    )
    .map_err(w)?;
    let c = reg.update(&meta.actor, Some("answers cite the wrong docs"), |s, st| {
        let c = s.kill(TOUR_ROUTE, Some("prod"), st)?;
        Ok((c.clone(), vec![c]))
    })?;
    writeln!(
        out,
        "$ promptgate registry kill --route {TOUR_ROUTE} --env prod --why \"answers cite the wrong docs\"\n  {} out of service, all traffic on last-known-good {}",
        c.before.as_deref().unwrap_or("-"),
        c.after.as_deref().unwrap_or("-")
    )
    .map_err(w)?;
    let state = reg.load()?;
    writeln!(
        out,
        "$ promptgate resolve --route {TOUR_ROUTE} --env prod --unit u7\n  {}",
        show(&registry::resolve(&state, &req)?)
    )
    .map_err(w)?;
    Ok(())
}

/// One event per unit, timed inside the current step, each on the version `resolve` gives its
/// unit (the canary's latency times `latency`); ingested. Returns the events written.
async fn tour_traffic(
    lake: &Lake,
    reg: &crate::registry::Registry,
    dir: &std::path::Path,
    canary: &str,
    units: u64,
    latency: f64,
    batch: usize,
) -> Result<u64> {
    use crate::registry::{self, ResolveRequest};
    let state = reg.load()?;
    let step_start = state
        .route(TOUR_ROUTE)?
        .active_rollout("prod")
        .map_or_else(registry::now_us, |r| r.step_started_us);
    while registry::now_us() < step_start + 2_000 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let start_us = step_start + 1;
    let cfg = generator::ResolvedTraffic {
        route: TOUR_ROUTE.into(),
        env: "prod".into(),
        units,
        events: units,
        seed: 7 + batch as u64,
        start_us,
        span_us: registry::now_us() - start_us,
        regression: Regression {
            latency,
            ..Regression::default()
        },
        regressed_version: Some(canary.into()),
        attributes: vec![],
        sha_chars: 12,
        flagged_rate: 0.02,
    };
    let path = dir.join(format!("events-{TOUR_ROUTE}-{canary}-{batch}.ndjson"));
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&path).map_err(|e| Error::io("cannot create", &path, e))?,
    );
    let n = generator::write_resolved_events(
        &cfg,
        &mut |unit, tier| {
            let req = ResolveRequest {
                route: TOUR_ROUTE,
                env: "prod",
                tier: Some(tier),
                unit,
            };
            registry::resolve(&state, &req)
                .map(|r| (r.version, r.prompt_sha))
                .map_err(|e| e.message)
        },
        &mut file,
    )
    .map_err(|e| Error::io("cannot write", &path, e))?;
    drop(file);
    ingest_quietly(lake, &path).await?;
    Ok(n)
}

/// Requests of the review part of the tour: what new users ask, some with the personal data
/// real requests carry (the sample redacts it).
const TOUR_QUESTIONS: [&str; 6] = [
    "I just signed up, where do I start?",
    "How do I invite my team? My e-mail is {name}@example.com",
    "Which plan fits a team of {n}?",
    "Can I import my projects from a spreadsheet?",
    "Call me back at +44 20 7946 {n:04}, the setup wizard froze",
    "How do I connect the calendar integration?",
];

/// The review part of the tour: what the metrics missed. Generated requests with their inputs,
/// a blind review of v2 against v1 (answers from the offline example runner, labels simulated),
/// and v2's release checklist.
async fn review_tour(lake: &Lake, dir: &std::path::Path, out: &mut dyn Write) -> Result<()> {
    use super::review::{RunArgs, SampleArgs, ScoreFormat};
    use crate::registry::{self, Registry};
    use crate::review::sheet::SheetKey;

    let w = |e: std::io::Error| Error::runtime(format!("cannot write output: {e}"));
    let reg = Registry::locate(None, lake)?;
    writeln!(
        out,
        "\n# What the metrics missed: a blind review of v2 against v1 on real requests, and v2's release checklist"
    )
    .map_err(w)?;

    // Requests with their input text, as prod logs them now (on v1, after the kill).
    let state = reg.load()?;
    let v1_sha = state
        .route(TOUR_ROUTE)?
        .require_version(TOUR_ROUTE, "v1")?
        .sha256
        .clone();
    let names = [
        "ann", "bo", "chen", "dara", "eli", "fay", "gus", "hana", "ivo", "jo",
    ];
    let now = registry::now_us();
    let mut nd = String::new();
    for i in 0..60u64 {
        let q = TOUR_QUESTIONS[i as usize % TOUR_QUESTIONS.len()]
            .replace("{name}", names[i as usize % names.len()])
            .replace("{n:04}", &format!("{:04}", 1000 + i * 37))
            .replace("{n}", &(3 + i % 40).to_string());
        let event = serde_json::json!({
            "event_id": format!("onboarding-request-{i}"),
            "ts": registry::format_us(now - 1_000_000 * (60 - i as i64)),
            "route": TOUR_ROUTE, "env": "prod",
            "model": if i % 3 == 0 { "small" } else { "large" },
            "tier": if i % 4 == 0 { "pro" } else { "free" },
            "prompt_version": "v1", "prompt_sha": &v1_sha[..12],
            "duration_ms": 800 + (i * 53) % 900, "tokens_in": 300 + i, "tokens_out": 120 + i % 50,
            "status": "ok",
            "input": format!("{q} (request {i})"),
        });
        nd.push_str(&event.to_string());
        nd.push('\n');
    }
    let path = dir.join(format!("{TOUR_ROUTE}-requests.ndjson"));
    std::fs::write(&path, nd).map_err(|e| Error::io("cannot write", &path, e))?;
    ingest_quietly(lake, &path).await?;
    writeln!(
        out,
        "$ promptgate ingest {TOUR_ROUTE}-requests.ndjson   # 60 requests with their input text"
    )
    .map_err(w)?;

    writeln!(
        out,
        "$ promptgate review sample --route {TOUR_ROUTE} --env prod --n 40 --seed 1"
    )
    .map_err(w)?;
    out.flush().map_err(w)?;
    super::review::sample(
        lake,
        SampleArgs {
            route: TOUR_ROUTE.into(),
            env: "prod".into(),
            n: 40,
            since_us: None,
            since_text: None,
            seed: Some(1),
        },
    )
    .await?;
    // The demo's lake is fresh: the review just made is its only one.
    let root = crate::review::store::reviews_root(lake);
    let id = std::fs::read_dir(&root)
        .map_err(|e| Error::io("cannot read", &root, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .max()
        .ok_or_else(|| Error::runtime(format!("no review in {}", root.display())))?;

    // Both versions' answers from the offline example runner (this binary).
    let exe = std::env::current_exe()
        .map_err(|e| Error::runtime(format!("cannot locate the promptgate binary: {e}")))?;
    let exe = format!("'{}'", exe.display().to_string().replace('\'', r"'\''"));
    writeln!(
        out,
        "$ promptgate review run --id {id} --baseline v1 --canary v2 --runner \"promptgate review example-runner\""
    )
    .map_err(w)?;
    out.flush().map_err(w)?;
    super::review::run(
        lake,
        &reg,
        RunArgs {
            id: id.clone(),
            baseline: "v1".into(),
            canary: "v2".into(),
            runner: format!("{exe} review example-runner"),
            jobs: 4,
            timeout: std::time::Duration::from_secs(60),
        },
    )
    .await?;
    writeln!(out, "$ promptgate review sheet --id {id}").map_err(w)?;
    out.flush().map_err(w)?;
    super::review::sheet(lake, &id)?;

    // Simulated labels: a script stands in for the person who would open sheet.html.
    let review_dir = root.join(&id);
    let key_path = review_dir.join("key.json");
    let key: SheetKey = serde_json::from_slice(
        &std::fs::read(&key_path).map_err(|e| Error::io("cannot read", &key_path, e))?,
    )
    .map_err(|e| Error::runtime(format!("{}: {e}", key_path.display())))?;
    let labels = dir.join("labels-simulated.csv");
    simulate_labels(
        &review_dir.join(super::review::SHARE_DIR).join("sheet.csv"),
        &key,
        &labels,
    )?;
    writeln!(
        out,
        "# SIMULATED labels: no person labeled this demo. A script filled the sheet as a labeler\n# who finds v2's answers worse on most items would (it reads key.json, which a real\n# labeler never sees). For real, open {} and export the CSV.",
        review_dir
            .join(super::review::SHARE_DIR)
            .join("sheet.html")
            .display()
    )
    .map_err(w)?;
    writeln!(
        out,
        "$ promptgate review score --id {id} --labels labels-simulated.csv"
    )
    .map_err(w)?;
    out.flush().map_err(w)?;
    let code = super::review::score(
        lake,
        &id,
        std::slice::from_ref(&labels),
        None,
        ScoreFormat::Table,
    )
    .await?;
    writeln!(out, "(exit code {code})").map_err(w)?;

    writeln!(
        out,
        "\n$ promptgate checklist --route {TOUR_ROUTE} --baseline v1 --canary v2 --env prod --review {id}"
    )
    .map_err(w)?;
    out.flush().map_err(w)?;
    let code = super::checklist::run(
        lake,
        &reg,
        super::checklist::ChecklistArgs {
            route: TOUR_ROUTE.into(),
            baseline: "v1".into(),
            canary: "v2".into(),
            env: Some("prod".into()),
            review: Some(id.clone()),
            why: None,
            since_us: None,
            format: crate::report::checklist::ChecklistFormat::Markdown,
        },
    )
    .await;
    writeln!(out, "(exit code {code})").map_err(w)?;
    if code == 1 {
        writeln!(
            out,
            "# The judge promoted v2 at every step; the blind review would have stopped it before the kill switch had to."
        )
        .map_err(w)?;
    }
    Ok(())
}

/// Fills `sheet` as a simulated labeler would and writes the result to `to`: per item in sheet
/// order, v2 wins one in four, ties one in eight, loses the rest (marked bad, with a note).
fn simulate_labels(
    sheet: &std::path::Path,
    key: &crate::review::sheet::SheetKey,
    to: &std::path::Path,
) -> Result<()> {
    let csv_err = |e: csv::Error| Error::runtime(format!("simulated labels: {e}"));
    let mut r = csv::Reader::from_path(sheet).map_err(csv_err)?;
    let mut wr = csv::Writer::from_path(to).map_err(csv_err)?;
    wr.write_record(r.headers().map_err(csv_err)?)
        .map_err(csv_err)?;
    for (i, rec) in r.records().enumerate() {
        let rec = rec.map_err(csv_err)?;
        let item: u32 = rec[0]
            .parse()
            .map_err(|_| Error::runtime(format!("sheet item {:?} is not a number", &rec[0])))?;
        let canary_is_a = key.sides.get(&item).is_some_and(|(a, _)| *a == key.canary);
        let (canary_label, pref, note) = match i % 8 {
            0 | 4 => ("good", if canary_is_a { "A" } else { "B" }, ""),
            7 => ("good", "tie", ""),
            _ => (
                "bad",
                if canary_is_a { "B" } else { "A" },
                "skips the user's question",
            ),
        };
        let (la, lb) = if canary_is_a {
            (canary_label, "good")
        } else {
            ("good", canary_label)
        };
        wr.write_record([
            &rec[0],
            &rec[1],
            &rec[2],
            &rec[3],
            la,
            lb,
            pref,
            note,
            "simulated",
        ])
        .map_err(csv_err)?;
    }
    wr.flush()
        .map_err(|e| Error::runtime(format!("simulated labels: {e}")))
}

/// Ingests one NDJSON file of the tour without a progress bar.
async fn ingest_quietly(lake: &Lake, path: &std::path::Path) -> Result<()> {
    let sources = Source::open_all(
        &[path.to_string_lossy().into_owned()],
        Some(InputFormat::Ndjson),
    )?;
    let opts = IngestOptions {
        progress: false,
        ..IngestOptions::default()
    };
    ingest::ingest(lake, sources, &opts).await?;
    Ok(())
}
