//! `promptgate review sample|run|import|example-runner`: the blind review of real requests.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use rand::Rng;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::registry::Registry;
use crate::review::runner::{self, RunRequest};
use crate::review::sample::{self, check_n};
use crate::review::store::{Answer, ReviewDir, ReviewManifest, now_rfc3339};

/// Options of `review sample`.
pub struct SampleArgs {
    pub route: String,
    pub env: String,
    pub n: u64,
    pub since_us: Option<i64>,
    pub since_text: Option<String>,
    pub seed: Option<u64>,
}

/// Samples, redacts and creates the review; prints its id first.
pub async fn sample(lake: &Lake, a: SampleArgs) -> Result<i32> {
    let n = check_n(a.n)?;
    let seed = a.seed.unwrap_or_else(|| rand::rng().random());
    let candidates = sample::read_candidates(lake, &a.route, &a.env, a.since_us).await?;
    if candidates.is_empty() {
        return Err(Error::input(format!(
            "no events of route {:?} in env {:?}{} carry an input",
            a.route,
            a.env,
            a.since_text
                .as_deref()
                .map(|s| format!(" since {s}"))
                .unwrap_or_default()
        ))
        .with_hint(
            "log the request text in the event's `input` field; check --route, --env and --since",
        ));
    }
    let s = sample::choose(candidates, n, seed);
    let now = chrono::Utc::now();
    let id = format!(
        "{}-{:04x}",
        now.format("%Y%m%d-%H%M%S"),
        rand::rng().random::<u16>()
    );
    let manifest = ReviewManifest {
        id: id.clone(),
        route: a.route.clone(),
        env: a.env.clone(),
        since: a.since_text.clone(),
        seed,
        requested: n,
        sampled: s.items.len() as u64,
        eligible_events: s.eligible_events,
        distinct_inputs: s.distinct_inputs,
        created_at: now_rfc3339(),
        strata: s.strata.clone(),
        redactions: s.redactions.to_json(),
        baseline: None,
        canary: None,
    };
    let review = ReviewDir::create(lake, &manifest, &s.items)?;
    let mut out = super::stdout();
    let w = |out: &mut dyn Write, line: String| {
        writeln!(out, "{line}").map_err(|e| Error::runtime(format!("cannot write output: {e}")))
    };
    w(&mut out, id.clone())?;
    w(
        &mut out,
        format!(
            "sampled {} of {} requested from {} distinct inputs ({} events with an input) of route {} in {}; seed {seed}",
            s.items.len(),
            n,
            s.distinct_inputs,
            s.eligible_events,
            a.route,
            a.env
        ),
    )?;
    if (s.items.len() as u64) < n {
        w(
            &mut out,
            format!(
                "note: only {} distinct inputs are eligible, fewer than the {n} asked; sampled them all",
                s.distinct_inputs
            ),
        )?;
    }
    for st in &s.strata {
        w(
            &mut out,
            format!(
                "  {} x {}: {} sampled ({} events, {} distinct inputs)",
                st.model, st.tier, st.sampled, st.traffic, st.available
            ),
        )?;
    }
    let counts: Vec<String> = crate::review::redact::RedactionKind::ALL
        .iter()
        .map(|k| {
            format!(
                "{} {}",
                k.name(),
                s.redactions.0.get(k).copied().unwrap_or(0)
            )
        })
        .collect();
    w(
        &mut out,
        format!("redacted {}: {}", s.redactions.total(), counts.join(", ")),
    )?;
    w(
        &mut out,
        format!("review directory: {}", review.dir.display()),
    )?;
    w(
        &mut out,
        format!(
            "next: promptgate review run --id {id} --baseline V --canary V --runner \"promptgate review example-runner\""
        ),
    )?;
    super::flush(&mut out)?;
    Ok(0)
}

/// Options of `review run`.
pub struct RunArgs {
    pub id: String,
    pub baseline: String,
    pub canary: String,
    pub runner: String,
    pub jobs: usize,
    pub timeout: Duration,
}

/// Runs the user's command for every item and version that has no answer yet.
///
/// Exit 0 when every item has both answers afterwards, 1 when some failed (re-run to retry).
pub async fn run(lake: &Lake, registry: &Registry, a: RunArgs) -> Result<i32> {
    if a.jobs == 0 || a.jobs > 256 {
        return Err(Error::usage(format!(
            "--jobs {} is out of range (1 to 256)",
            a.jobs
        )));
    }
    if a.runner.trim().is_empty() {
        return Err(Error::usage("--runner is empty")
            .with_hint("try --runner \"promptgate review example-runner\""));
    }
    let review = ReviewDir::open(lake, &a.id)?;
    let _lock = review.lock()?;
    let mut manifest = review.manifest()?;
    // The pair first: a review compares one pair of versions.
    review.fix_versions(
        &mut manifest.clone(),
        Some(&a.baseline),
        Some(&a.canary),
        false,
    )?;
    let state = registry.load()?;
    let route = state.routes.get(&manifest.route).ok_or_else(|| {
        Error::input(format!(
            "route {:?} is not in the registry at {}",
            manifest.route,
            registry.location()
        ))
        .with_hint("register both versions' prompts with `promptgate registry add`")
    })?;
    let mut prompts = HashMap::new();
    for v in [&a.baseline, &a.canary] {
        let pv = route.versions.get(v.as_str()).ok_or_else(|| {
            Error::input(format!(
                "version {v:?} of route {:?} is not registered",
                manifest.route
            ))
            .with_hint("see `promptgate registry show --route ROUTE`")
        })?;
        prompts.insert(v.clone(), registry.prompt_text(&pv.sha256)?);
    }
    review.fix_versions(&mut manifest, Some(&a.baseline), Some(&a.canary), true)?;
    let items = review.items()?;
    let mut answers = review.answers()?;
    let mut todo = Vec::new();
    let mut already = 0usize;
    for it in &items {
        for v in [&a.baseline, &a.canary] {
            let have = answers
                .get(v.as_str())
                .and_then(|m| m.get(&it.item))
                .is_some_and(|x| x.output.is_some());
            if have {
                already += 1;
            } else {
                todo.push(RunRequest {
                    item: it.item,
                    route: manifest.route.clone(),
                    version: v.clone(),
                    prompt: prompts[v.as_str()].clone(),
                    input: it.input.clone(),
                });
            }
        }
    }
    let total = todo.len();
    let runner = a.runner.clone();
    let timeout = a.timeout;
    let mut results = futures::stream::iter(todo.into_iter().map(|req| {
        let runner = runner.clone();
        async move {
            let outcome = runner::run_one(&runner, &req, timeout).await;
            (req.item, req.version, outcome)
        }
    }))
    .buffer_unordered(a.jobs);
    let (mut ok, mut failed, mut timed_out) = (0usize, 0usize, 0usize);
    let mut first_failure: Option<String> = None;
    while let Some((item, version, outcome)) = results.next().await {
        let at = now_rfc3339();
        let answer = match outcome {
            Ok(output) => {
                ok += 1;
                Answer {
                    output: Some(output),
                    error: None,
                    source: "runner".into(),
                    at,
                }
            }
            Err(e) => {
                failed += 1;
                if e.starts_with("timed out") {
                    timed_out += 1;
                }
                first_failure.get_or_insert_with(|| format!("item {item}, {version}: {e}"));
                Answer {
                    output: None,
                    error: Some(e),
                    source: "runner".into(),
                    at,
                }
            }
        };
        answers.entry(version).or_default().insert(item, answer);
        // Saved after every answer: an interrupted run keeps what it got.
        review.write_answers(&answers)?;
        if total >= 10 && (ok + failed) % 10 == 0 {
            eprintln!("{} of {total} runs done", ok + failed);
        }
    }
    let mut out = super::stdout();
    let line = format!(
        "review {}: ran {total} ({ok} answered, {failed} failed{}), {already} already answered",
        a.id,
        if timed_out > 0 {
            format!(", {timed_out} timed out")
        } else {
            String::new()
        }
    );
    writeln!(out, "{line}").map_err(|e| Error::runtime(format!("cannot write output: {e}")))?;
    if let Some(f) = &first_failure {
        writeln!(out, "first failure: {f}")
            .map_err(|e| Error::runtime(format!("cannot write output: {e}")))?;
        writeln!(
            out,
            "hint: fix the runner and run the same command again: only the missing answers are run"
        )
        .map_err(|e| Error::runtime(format!("cannot write output: {e}")))?;
    }
    super::flush(&mut out)?;
    Ok(if failed > 0 { 1 } else { 0 })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportLine {
    item: u32,
    version: String,
    output: String,
}

/// Imports answers produced elsewhere: all lines are checked before any is applied.
pub fn import(
    lake: &Lake,
    id: &str,
    file: &Path,
    baseline: Option<&str>,
    canary: Option<&str>,
) -> Result<i32> {
    let review = ReviewDir::open(lake, id)?;
    let _lock = review.lock()?;
    let mut manifest = review.manifest()?;
    review.fix_versions(&mut manifest, baseline, canary, true)?;
    let versions = [
        manifest.baseline.clone().unwrap_or_default(),
        manifest.canary.clone().unwrap_or_default(),
    ];
    let items: std::collections::HashSet<u32> = review.items()?.iter().map(|i| i.item).collect();
    let mut text = String::new();
    std::fs::File::open(file)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| Error::input(format!("cannot read {}: {e}", file.display())))?;
    let mut seen: BTreeMap<(String, u32), (usize, String)> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let at = format!("{}:{}", file.display(), i + 1);
        if line.trim().is_empty() {
            continue;
        }
        let rec: ImportLine = serde_json::from_str(line).map_err(|e| {
            Error::input(format!("{at}: {e}"))
                .with_hint("each line is {\"item\": N, \"version\": \"V\", \"output\": \"...\"}")
        })?;
        if !items.contains(&rec.item) {
            return Err(Error::input(format!(
                "{at}: item {} is not in review {id}",
                rec.item
            )));
        }
        if !versions.contains(&rec.version) {
            return Err(Error::input(format!(
                "{at}: version {:?} is neither the baseline {:?} nor the canary {:?}",
                rec.version, versions[0], versions[1]
            )));
        }
        if rec.output.trim().is_empty() {
            return Err(Error::input(format!("{at}: the output is empty")));
        }
        if let Some((prev, other)) = seen.get(&(rec.version.clone(), rec.item)) {
            if *other != rec.output {
                return Err(Error::input(format!(
                    "{at}: item {} of {} already has another output on line {prev}",
                    rec.item, rec.version
                )));
            }
            continue;
        }
        seen.insert((rec.version, rec.item), (i + 1, rec.output));
    }
    let mut answers = review.answers()?;
    let n = seen.len();
    let at = now_rfc3339();
    for ((version, item), (_, output)) in seen {
        answers.entry(version).or_default().insert(
            item,
            Answer {
                output: Some(output),
                error: None,
                source: "import".into(),
                at: at.clone(),
            },
        );
    }
    review.write_answers(&answers)?;
    let missing = missing_answers(&answers, &versions, &items);
    let mut out = super::stdout();
    writeln!(
        out,
        "review {id}: imported {n} answers; {missing} of {} still missing",
        items.len() * 2
    )
    .map_err(|e| Error::runtime(format!("cannot write output: {e}")))?;
    super::flush(&mut out)?;
    Ok(0)
}

fn missing_answers(
    answers: &crate::review::store::Answers,
    versions: &[String; 2],
    items: &std::collections::HashSet<u32>,
) -> usize {
    versions
        .iter()
        .map(|v| {
            items
                .iter()
                .filter(|i| {
                    answers
                        .get(v)
                        .and_then(|m| m.get(i))
                        .is_none_or(|a| a.output.is_none())
                })
                .count()
        })
        .sum()
}

#[derive(Deserialize)]
struct ExampleRequest {
    prompt: String,
    input: String,
}

/// The offline example runner: a run request on stdin, the answer on stdout.
pub fn example_runner() -> Result<i32> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| Error::input(format!("cannot read stdin: {e}")))?;
    let req: ExampleRequest = serde_json::from_str(&text).map_err(|e| {
        Error::input(format!("stdin is not a run request: {e}"))
            .with_hint("`promptgate review run` sends {\"item\", \"route\", \"version\", \"prompt\", \"input\"}")
    })?;
    let mut out = super::stdout();
    writeln!(out, "{}", runner::example_answer(&req.prompt, &req.input))
        .map_err(|e| Error::runtime(format!("cannot write output: {e}")))?;
    super::flush(&mut out)?;
    Ok(0)
}

const KEY_FILE: &str = "key.json";
const ANSWERS_FILE: &str = "answers.json";
/// The folder of a review that holds what labelers get (the sheet), and nothing else.
pub const SHARE_DIR: &str = "share";

/// Writes the blind sheet (`share/sheet.csv`, `share/sheet.html`) and, apart from it, `key.json`.
pub fn sheet(lake: &Lake, id: &str) -> Result<i32> {
    use crate::review::sheet;
    let review = ReviewDir::open(lake, id)?;
    let _lock = review.lock()?;
    let manifest = review.manifest()?;
    let (Some(baseline), Some(canary)) = (manifest.baseline.clone(), manifest.canary.clone())
    else {
        return Err(
            Error::input(format!("review {id} has no answers yet")).with_hint(format!(
                "run `promptgate review run --id {id} ...` or `review import` first"
            )),
        );
    };
    let items = review.items()?;
    let answers = review.answers()?;
    let key_path = review.path(KEY_FILE);
    let previous: Option<sheet::SheetKey> = match std::fs::read(&key_path) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| {
            Error::input(format!("{}: {e}", key_path.display()))
                .with_hint("the key is written by `review sheet`; restore it, labels depend on it")
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("cannot read", &key_path, e)),
    };
    let s = sheet::build(
        id,
        &items,
        &answers,
        &baseline,
        &canary,
        manifest.seed,
        previous.as_ref(),
    );
    if s.rows.is_empty() {
        return Err(Error::input(format!(
            "no item of review {id} has answers from both {baseline} and {canary}"
        ))
        .with_hint("re-run `promptgate review run` to fill in the missing answers"));
    }
    let csv = sheet::to_csv(&s.rows)?;
    let storage_key = format!("{id}-{:016x}", xxhash_rust::xxh3::xxh3_64(&csv));
    let html = sheet::to_html(&s.rows, &storage_key)?;
    let key = serde_json::to_vec_pretty(&s.key)
        .map_err(|e| Error::runtime(format!("cannot encode the key: {e}")))?;
    crate::lake::write_file_atomic(&review.path(KEY_FILE), &key)?;
    let share = review.path(SHARE_DIR);
    std::fs::create_dir_all(&share).map_err(|e| Error::io("cannot create", &share, e))?;
    crate::lake::write_file_atomic(&share.join("sheet.csv"), &csv)?;
    crate::lake::write_file_atomic(&share.join("sheet.html"), html.as_bytes())?;
    // A sheet written before `share/` existed lay beside the key: one copy, in `share/`.
    for old in ["sheet.csv", "sheet.html"] {
        let _ = std::fs::remove_file(review.path(old));
    }
    let canary_a = s.key.sides.values().filter(|(a, _)| *a == canary).count();
    let mut out = super::stdout();
    let mut say = |l: String| {
        writeln!(out, "{l}").map_err(|e| Error::runtime(format!("cannot write output: {e}")))
    };
    say(format!(
        "review {id}: sheet of {} items (canary shown as A on {canary_a}, as B on {})",
        s.rows.len(),
        s.rows.len() - canary_a
    ))?;
    if !s.left_out.is_empty() {
        say(format!(
            "left out {} items without both answers: {:?}",
            s.left_out.len(),
            s.left_out
        ))?;
    }
    say(format!(
        "hand labelers the folder {} (sheet.html to label in a browser, or sheet.csv), and only it:",
        share.display()
    ))?;
    say(format!(
        "{} and {} beside it tell which version wrote which answer",
        KEY_FILE, ANSWERS_FILE
    ))?;
    say(format!(
        "next: promptgate review score --id {id} --labels FILE.csv [FILE.csv...]"
    ))?;
    super::flush(&mut out)?;
    Ok(0)
}

/// Output format of `review score`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ScoreFormat {
    #[default]
    Table,
    Json,
}

/// Unblinds filled sheets, scores them, records them in `llm_reviews`, and decides.
///
/// Exit codes: 0 ship, 1 do not ship, 3 fewer than 20 labeled pairs, 2 a bad labels file
/// (nothing recorded) or a usage error.
pub async fn score(
    lake: &Lake,
    id: &str,
    labels: &[std::path::PathBuf],
    accept_tradeoff: Option<&str>,
    format: ScoreFormat,
) -> Result<i32> {
    use crate::review::{score, sheet::SheetKey, table};
    if labels.is_empty() {
        return Err(Error::usage("no --labels file given"));
    }
    if accept_tradeoff.is_some_and(|t| t.trim().is_empty()) {
        return Err(Error::usage("--accept-tradeoff needs the reason, in words"));
    }
    let review = ReviewDir::open(lake, id)?;
    let _lock = review.lock()?;
    let manifest = review.manifest()?;
    let key_path = review.path(KEY_FILE);
    let key_bytes = std::fs::read(&key_path).map_err(|e| {
        Error::input(format!("cannot read {}: {e}", key_path.display())).with_hint(format!(
            "write the sheet first: promptgate review sheet --id {id}"
        ))
    })?;
    let key: SheetKey = serde_json::from_slice(&key_bytes)
        .map_err(|e| Error::input(format!("{}: {e}", key_path.display())))?;
    let files: Vec<&Path> = labels.iter().map(|p| p.as_path()).collect();
    // A labels file that is not what the sheet exports is bad input: exit 2, never the 1 of
    // "do not ship", so CI can tell a broken file from a verdict.
    let labels = score::read_labels(&files, &key).map_err(|e| Error {
        kind: crate::error::ErrorKind::Usage,
        ..e
    })?;
    let s = score::score(&key, &labels, accept_tradeoff);
    let rows = labels.rows;
    let event_ids: HashMap<u32, String> = review
        .items()?
        .into_iter()
        .map(|i| (i.item, i.event_id))
        .collect();
    if !rows.is_empty() {
        table::write_review_rows(lake, &manifest, &event_ids, &rows, &s).await?;
        review.write_score(&s)?;
    }
    let mut out = super::stdout();
    let io = |e: std::io::Error| Error::runtime(format!("cannot write output: {e}"));
    match format {
        ScoreFormat::Json => {
            let v = serde_json::to_string_pretty(&s)
                .map_err(|e| Error::runtime(format!("cannot encode JSON: {e}")))?;
            writeln!(out, "{v}").map_err(io)?;
        }
        ScoreFormat::Table => {
            writeln!(
                out,
                "verdict: {} (exit {})",
                s.verdict.to_uppercase(),
                s.exit_code
            )
            .map_err(io)?;
            writeln!(out, "reason: {}", s.reason).map_err(io)?;
            writeln!(
                out,
                "review {id}: {} labeled pairs, {} labeled rows from {} labeler(s), {} unlabeled rows skipped",
                s.pairs,
                s.labeled_rows,
                s.labelers.len(),
                s.unlabeled_rows
            )
            .map_err(io)?;
            if !s.half_labeled.is_empty() {
                writeln!(
                    out,
                    "  {} half-labeled rows skipped (both answers and a preference are needed): {}",
                    s.half_labeled.len(),
                    s.half_labeled.join(", ")
                )
                .map_err(io)?;
            }
            for (role, g) in [("baseline", &s.baseline), ("canary", &s.canary)] {
                let rate = match (g.good_rate, g.ci_low, g.ci_high) {
                    (Some(r), Some(lo), Some(hi)) => {
                        format!(
                            "{:.1}% (95% CI {:.1}% to {:.1}%)",
                            r * 100.0,
                            lo * 100.0,
                            hi * 100.0
                        )
                    }
                    _ => "no labels".to_string(),
                };
                writeln!(
                    out,
                    "  {role:<8} {:<12} good {} of {}: {rate}",
                    g.version, g.good, g.labeled
                )
                .map_err(io)?;
            }
            writeln!(
                out,
                "  canary wins {}, losses {}, ties {}; exact two-sided sign test p = {:.4}",
                s.wins, s.losses, s.ties, s.sign_test_p
            )
            .map_err(io)?;
            match s.kappa {
                Some(k) => writeln!(out, "  agreement on preferred: Cohen's kappa {k:.3}"),
                None => writeln!(out, "  agreement: n/a (one labeler, or no items in common)"),
            }
            .map_err(io)?;
            writeln!(out, "recorded in llm_reviews (promptgate sql \"SELECT * FROM llm_reviews WHERE review_id = '{id}'\")").map_err(io)?;
        }
    }
    super::flush(&mut out)?;
    Ok(s.exit_code)
}
