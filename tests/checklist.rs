//! Integration tests: `promptgate checklist` through the binary, on a rollout driven by
//! generated traffic that follows `resolve` and on a blind review scored from filled sheets.

mod common;

use std::ops::Deref;

use common::{Lake, Traffic, bin, testdata};
use promptgate::registry::sha256_hex;
use serde_json::Value;

const WHY_V2: &str = "customers asked what to do next";

/// A lake with route `support`: v1 (the default) and v2 (registered with a note), and 60
/// older requests with inputs (for a review sample) that carry v1's prompt_sha.
struct World(Lake);

impl Deref for World {
    type Target = Lake;
    fn deref(&self) -> &Lake {
        &self.0
    }
}

impl World {
    fn new() -> Self {
        let w = World(Lake::new());
        w.add_version("support", "v1", "support-v1.txt", None);
        w.add_version("support", "v2", "support-v2.txt", Some(WHY_V2));
        w.ok(&[
            "registry",
            "set-default",
            "--route",
            "support",
            "--version",
            "v1",
        ]);
        let v1_sha = sha256_hex(&std::fs::read(testdata("prompts/support-v1.txt")).unwrap())[..12]
            .to_string();
        let mut nd = String::new();
        for i in 0..60u32 {
            let v = serde_json::json!({
                "event_id": format!("in-{i}"),
                "ts": format!("2026-11-01T10:{:02}:00Z", i),
                "route": "support", "env": "prod",
                "model": if i % 3 == 0 { "m2" } else { "m1" }, "tier": "free",
                "prompt_version": "v1", "prompt_sha": v1_sha,
                "duration_ms": 100, "tokens_in": 10, "tokens_out": 5, "status": "ok",
                "input": format!("question {i}: how do I change the e-mail of account {i}?"),
            });
            nd.push_str(&v.to_string());
            nd.push('\n');
        }
        let path = w.path("inputs.ndjson");
        std::fs::write(&path, nd).unwrap();
        w.ok(&["ingest", "--no-progress", path.to_str().unwrap()]);
        w
    }
    /// Starts v2 over v1 in prod with the rollout tests' policy and a fixed id (so the same
    /// units get the canary on every run and the verdicts below are deterministic).
    fn start(&self) {
        self.ok(&[
            "rollout",
            "start",
            "--route",
            "support",
            "--env",
            "prod",
            "--canary",
            "v2",
            "--id",
            "r-check",
            "--policy",
            &testdata("rollout-policy.toml"),
            "--pin",
            "top_k",
        ]);
    }
    /// `units` units, one event each, inside the current step, each on the version `resolve`
    /// gives it; the canary's events carry `canary_sha` when given.
    fn traffic(&self, units: u64, canary_latency: f64, canary_sha: Option<&str>) {
        self.0.traffic(Traffic {
            units,
            canary_latency: Some(canary_latency),
            canary_sha,
            seed: 1000,
            ..Traffic::default()
        });
    }
    /// A review of 30 requests answered by both versions (the offline example runner), scored
    /// from a sheet where the canary wins `wins` items and loses the rest. Returns its id.
    fn review(&self, wins: usize) -> String {
        let out = self.ok(&[
            "review", "sample", "--route", "support", "--env", "prod", "--n", "30", "--seed", "7",
        ]);
        let id = out.lines().next().unwrap().to_string();
        let runner = format!("{} review example-runner", env!("CARGO_BIN_EXE_promptgate"));
        self.ok(&[
            "review",
            "run",
            "--id",
            &id,
            "--baseline",
            "v1",
            "--canary",
            "v2",
            "--runner",
            &runner,
        ]);
        self.ok(&["review", "sheet", "--id", &id]);
        let dir = self.lake.join("reviews").join(&id);
        let key: Value =
            serde_json::from_slice(&std::fs::read(dir.join("key.json")).unwrap()).unwrap();
        let mut r = csv::Reader::from_path(dir.join("share/sheet.csv")).unwrap();
        let labels = self.path(&format!("labels-{id}.csv"));
        let mut w = csv::Writer::from_path(&labels).unwrap();
        w.write_record(r.headers().unwrap()).unwrap();
        for (i, rec) in r.records().enumerate() {
            let rec = rec.unwrap();
            let canary_is_a = key["sides"][&rec[0]][0] == "v2";
            let canary_wins = i < wins;
            let pref = if canary_wins == canary_is_a { "A" } else { "B" };
            w.write_record([
                &rec[0], &rec[1], &rec[2], &rec[3], "good", "good", pref, "", "ann",
            ])
            .unwrap();
        }
        w.flush().unwrap();
        let code = if wins >= 25 { 0 } else { 1 };
        self.expect(
            &[
                "review",
                "score",
                "--id",
                &id,
                "--labels",
                labels.to_str().unwrap(),
            ],
            code,
        );
        id
    }
    fn checklist(&self, extra: &[&str], code: i32) -> String {
        let mut args = vec![
            "checklist",
            "--route",
            "support",
            "--baseline",
            "v1",
            "--canary",
            "v2",
        ];
        args.extend_from_slice(extra);
        self.expect(&args, code)
    }
    fn checklist_json(&self, extra: &[&str], code: i32) -> Value {
        let mut args = vec!["--format", "json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&self.checklist(&args, code)).unwrap()
    }
}

fn check<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {doc:#}"))
}

/// The seed's checklist fields, in its order.
const FIELDS: [&str; 10] = [
    "## Prompt change checklist",
    "- Route:",
    "- PromptVersion (old → new):",
    "- Why:",
    "- Expected impact (quality / cost / latency):",
    "- Canary plan:",
    "  - % rollout:",
    "  - Stop conditions:",
    "- Review set size + result:",
    "- Rollback knob:",
];

fn assert_shape(md: &str) {
    let mut at = 0;
    for f in FIELDS {
        let pos = md[at..]
            .find(f)
            .unwrap_or_else(|| panic!("{f:?} missing or out of order in\n{md}"));
        at += pos + f.len();
    }
}

#[test]
fn a_clean_canary_with_a_winning_review_passes() {
    let w = World::new();
    w.start();
    w.traffic(50_000, 1.0, None);
    let id = w.review(27);
    let md = w.checklist(&["--review", &id], 0);
    eprintln!("{md}");
    assert_shape(&md);
    assert!(md.contains("- Route: `support` (env `prod`)"), "{md}");
    // Both versions with their shas, and the diff of the registered texts.
    let v1 = sha256_hex(&std::fs::read(testdata("prompts/support-v1.txt")).unwrap());
    let v2 = sha256_hex(&std::fs::read(testdata("prompts/support-v2.txt")).unwrap());
    assert!(
        md.contains(&format!(
            "`v1` (sha256 `{}`) → `v2` (sha256 `{}`)",
            &v1[..12],
            &v2[..12]
        )),
        "{md}"
    );
    assert!(
        md.contains("<details><summary>Diff of the registered texts (+1 −1 lines)"),
        "{md}"
    );
    assert!(md.contains("--- v1\n  +++ v2"), "{md}");
    assert!(md.contains("+You are a support agent for Acme. Answer briefly, cite the help-center article you used, and offer a next step."), "{md}");
    // Why: the note given when v2 was registered.
    assert!(
        md.contains(&format!(
            "- Why: {WHY_V2} (note given when `v2` was registered"
        )),
        "{md}"
    );
    // Expected impact: measured per segment (the test policy does not segment).
    assert!(md.contains("  - all traffic ("), "{md}");
    assert!(md.contains("p95_duration_ms "), "{md}");
    assert!(md.contains("avg_tokens_out "), "{md}");
    // The plan, where it stands, the stop conditions and the judge.
    assert!(
        md.contains(
            "**1%** → 5% → 25% → 50% → 100% (rollout `r-check`, active at step 1/5 (1%) since "
        ),
        "{md}"
    );
    assert!(
        md.contains("abort when p95_duration_ms is shown above 2x the baseline's"),
        "{md}"
    );
    assert!(md.contains("  - Judge now: **promote**"), "{md}");
    assert!(
        md.contains("  - [x] Judge: promote, or in progress without abort: promote"),
        "{md}"
    );
    assert!(
        md.contains("  - [x] Every event of both versions carries the registry's prompt_sha: "),
        "{md}"
    );
    assert!(
        md.contains("(100%) carry the registry's prompt_sha"),
        "{md}"
    );
    assert!(
        md.contains("  - [x] Pinned knobs unchanged: `top_k` take the same values"),
        "{md}"
    );
    assert!(
        md.contains(&format!(
            "- Review set size + result:\n  - [x] Review `{id}`: n = 30 pairs"
        )),
        "{md}"
    );
    assert!(md.contains("canary wins 27 / losses 3 / ties 0"), "{md}");
    assert!(md.contains("verdict **ship**"), "{md}");
    assert!(md.contains("- Rollback knob: last-known-good `v1`: `promptgate registry kill --route support --env prod --why"), "{md}");
    assert!(
        md.starts_with(
            "## Prompt change checklist\n**Ready: all 4 required checks pass** (exit 0).\n"
        ),
        "{md}"
    );

    let doc = w.checklist_json(&["--review", &id], 0);
    assert_eq!(doc["exit_code"], 0);
    assert_eq!(doc["why"]["source"], "registry");
    assert_eq!(doc["canary"]["sha256"], v2.as_str());
    assert_eq!(doc["canary_plan"]["judge"]["verdict"], "promote");
    let n = doc["canary_plan"]["judge"]["n_canary"].as_u64().unwrap();
    assert!((200..1000).contains(&n), "about 1% of 50,000 units: {n}");
    assert_eq!(doc["review"]["score"]["wins"], 27);
    assert_eq!(doc["review"]["score"]["verdict"], "ship");
    for c in ["judge", "prompt_sha", "pins", "review"] {
        assert_eq!(check(&doc, c)["passed"], true, "{c}: {doc:#}");
    }
    // --why overrides the registry's note.
    let doc = w.checklist_json(&["--review", &id, "--why", "a better next step"], 0);
    assert_eq!(doc["why"]["text"], "a better next step");
    assert_eq!(doc["why"]["source"], "--why");
    // Killed: the same canary, the same winning review, and it cannot pass while the kill
    // stands; the checklist says when, why and by whom.
    w.ok(&[
        "registry",
        "kill",
        "--route",
        "support",
        "--env",
        "prod",
        "--why",
        "v2 cites the wrong docs",
    ]);
    let doc = w.checklist_json(&["--review", &id], 1);
    let j = check(&doc, "judge");
    assert_eq!(j["passed"], false, "{j}");
    let evidence = j["evidence"].as_str().unwrap();
    for says in [
        "v2 is out of service: killed in env prod at ",
        "by tester (v2 cites the wrong docs)",
        "traffic goes to v1",
    ] {
        assert!(evidence.contains(says), "{says:?} in {evidence}");
    }
}

#[test]
fn a_failing_canary_is_unticked_with_its_evidence() {
    let w = World::new();
    w.start();
    // The canary logs a prompt it was not registered with.
    w.traffic(50_000, 1.0, Some("deadbeefdead"));
    let id = w.review(12);
    let md = w.checklist(&["--review", &id], 1);
    eprintln!("{md}");
    assert_shape(&md);
    assert!(
        md.contains("  - [ ] Every event of both versions carries the registry's prompt_sha: "),
        "{md}"
    );
    assert!(
        md.contains("events of v2 carry \"deadbeefdead\", not the registry's"),
        "{md}"
    );
    assert!(
        md.contains("- Review set size + result:\n  - [ ] Review"),
        "{md}"
    );
    assert!(md.contains("canary wins 12 / losses 18"), "{md}");
    assert!(md.contains("verdict **do not ship**"), "{md}");
    assert!(
        md.starts_with("## Prompt change checklist\n**Not ready: "),
        "{md}"
    );
    assert_eq!(
        md.matches("required checks fail").count(),
        1,
        "said once: {md}"
    );
    let doc = w.checklist_json(&["--review", &id], 1);
    assert_eq!(doc["exit_code"], 1);
    let sha = check(&doc, "prompt_sha");
    assert_eq!(sha["passed"], false);
    assert!(sha["evidence"].as_str().unwrap().contains("deadbeefdead"));
    assert_eq!(check(&doc, "review")["passed"], false);
    // The judge sees it too (the same check `rollout step` makes): the step is invalid.
    assert_eq!(check(&doc, "judge")["passed"], false, "{doc:#}");

    // A planted latency regression aborts the next rollout step; the checklist of the
    // aborted rollout fails on the judge.
    let w = World::new();
    w.start();
    w.traffic(50_000, 3.0, None);
    w.expect(
        &["rollout", "step", "--route", "support", "--env", "prod"],
        1,
    );
    let doc = w.checklist_json(&[], 1);
    let j = check(&doc, "judge");
    assert_eq!(j["passed"], false);
    assert!(
        j["evidence"].as_str().unwrap().contains("was aborted"),
        "{j}"
    );
    assert_eq!(doc["canary_plan"]["rollout"]["status"], "aborted");
    assert_eq!(doc["canary_plan"]["judge"]["verdict"], "abort", "{doc:#}");
}

/// Traffic split by another tool (no promptgate rollout): the judge check judges the canary
/// against the baseline over a window, as `promptgate judge` does, and says there is no rollout.
#[test]
fn without_a_rollout_the_judge_compares_the_versions_over_a_window() {
    let w = World::new();
    let sha = |v: &str| {
        sha256_hex(&std::fs::read(testdata(&format!("prompts/support-{v}.txt"))).unwrap())[..12]
            .to_string()
    };
    let mut nd = String::new();
    for i in 0..600u32 {
        let v = if i % 2 == 0 { "v1" } else { "v2" };
        let e = serde_json::json!({
            "event_id": format!("split-{i}"),
            "ts": format!("2026-11-20T{:02}:{:02}:00Z", 8 + i / 60, i % 60),
            "route": "support", "env": "prod", "model": "m1", "tier": "free",
            "unit_id": format!("user-{}", i / 2),
            "prompt_version": v, "prompt_sha": sha(v),
            "duration_ms": 100 + (i * 37) % 400, "tokens_in": 10, "tokens_out": 5,
            "status": "ok",
        });
        nd.push_str(&e.to_string());
        nd.push('\n');
    }
    let path = w.path("split.ndjson");
    std::fs::write(&path, nd).unwrap();
    w.ok(&["ingest", "--no-progress", path.to_str().unwrap()]);
    let doc = w.checklist_json(&["--env", "prod"], 1);
    assert!(doc["canary_plan"]["rollout"].is_null());
    let judge = &doc["canary_plan"]["judge"];
    // Both arms over the canary's span: the baseline's first event (08:00) precedes the
    // canary's first (08:01).
    assert_eq!(judge["n_canary"], 300, "{doc:#}");
    assert_eq!(judge["n_baseline"], 299, "{doc:#}");
    let evidence = check(&doc, "judge")["evidence"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        evidence.starts_with(
            "no promptgate rollout of this change (traffic split elsewhere): the judge on both versions' events from the canary's first event: "
        ),
        "{evidence}"
    );
    // A window that starts after every event leaves nothing to judge.
    let doc = w.checklist_json(&["--env", "prod", "--since", "2026-11-21"], 1);
    assert_eq!(doc["canary_plan"]["judge"]["n_canary"], 0, "{doc:#}");
    assert!(
        check(&doc, "judge")["evidence"]
            .as_str()
            .unwrap()
            .contains("events since 2026-11-21T00:00:00"),
        "{doc:#}"
    );
}

#[test]
fn before_traffic_and_review_it_says_so() {
    let w = World::new();
    // No rollout yet: it cannot tell the env by itself, and with one the judge check fails.
    w.checklist(&[], 2);
    let doc = w.checklist_json(&["--env", "prod"], 1);
    assert!(doc["canary_plan"]["rollout"].is_null());
    let j = check(&doc, "judge");
    assert_eq!(j["passed"], false);
    assert!(
        j["evidence"]
            .as_str()
            .unwrap()
            .starts_with("no promptgate rollout of this change (traffic split elsewhere)"),
        "{j}"
    );
    // The 60 older requests of v1 carry its sha.
    assert!(
        check(&doc, "prompt_sha")["evidence"]
            .as_str()
            .unwrap()
            .starts_with("60 of 60 events"),
        "{doc:#}"
    );

    w.start();
    let md = w.checklist(&[], 1);
    assert_shape(&md);
    assert!(
        md.contains("- Expected impact (quality / cost / latency): no canary data yet"),
        "{md}"
    );
    assert!(
        md.contains("- Review set size + result:\n  - [ ] Review not done (no --review given"),
        "{md}"
    );
    let doc = w.checklist_json(&[], 1);
    assert_eq!(doc["impact"]["no_canary_data"], true);
    assert_eq!(doc["review"]["done"], false);
    assert_eq!(check(&doc, "review")["passed"], false);

    // A review that exists but is not scored is not done either.
    let out = w.ok(&[
        "review", "sample", "--route", "support", "--env", "prod", "--n", "20",
    ]);
    let id = out.lines().next().unwrap();
    let md = w.checklist(&["--review", id], 1);
    assert!(
        md.contains(&format!(
            "[ ] Review not done (review {id} is not scored yet"
        )),
        "{md}"
    );

    // Usage and input errors are 2, never 1.
    w.expect(
        &[
            "checklist",
            "--route",
            "support",
            "--baseline",
            "v1",
            "--canary",
            "v9",
        ],
        2,
    );
    w.expect(
        &[
            "checklist",
            "--route",
            "support",
            "--baseline",
            "v1",
            "--canary",
            "v1",
        ],
        2,
    );
    w.checklist(&["--review", "no-such-review"], 2);
}

#[test]
fn the_demo_ends_with_a_review_and_the_checklist() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let out = bin()
        .args(["demo", "--dir", demo.to_str().unwrap()])
        .env_remove("PROMPTGATE_REGISTRY")
        .env_remove("PROMPTGATE_LAKE")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The tour before it is intact.
    let tour = text
        .find("promoted: rollout tour-v2 completed")
        .expect("the rollout tour");
    let kill = text
        .find("$ promptgate registry kill --route onboarding")
        .expect("the kill switch");
    let review = text
        .find("# What the metrics missed: a blind review of v2 against v1")
        .expect("the review part");
    assert!(tour < kill && kill < review, "{text}");
    // In a terminal the judge reports are tables, with a pointer to the Markdown for a PR.
    let judged = &text[..tour];
    assert!(!judged.contains("<details>"), "{judged}");
    assert!(
        judged.contains("the same command with --format markdown"),
        "{judged}"
    );
    assert!(text.contains("The demo's lake is "), "{text}");
    let rest = &text[review..];
    assert!(rest.contains("redacted 15: "), "{rest}");
    assert!(rest.contains("ran 80 (80 answered, 0 failed)"), "{rest}");
    assert!(
        rest.contains("# SIMULATED labels: no person labeled this demo."),
        "{rest}"
    );
    assert!(rest.contains("verdict: DO NOT SHIP (exit 1)"), "{rest}");
    assert!(rest.contains("canary wins 10, losses 25, ties 5"), "{rest}");
    assert_shape(rest);
    assert!(rest.contains("(rollout `tour-v2`, completed at "), "{rest}");
    // The tour pulled the kill switch on v2 before the review: a killed canary cannot pass.
    assert!(
        rest.contains(
            "  - [ ] Judge: promote, or in progress without abort: v2 is out of service: killed in env prod at "
        ),
        "{rest}"
    );
    assert!(
        rest.contains("**Not ready: 2 of 4 required checks fail: judge, review** (exit 1).")
            && rest.contains("\n(exit code 1)"),
        "{rest}"
    );
    assert!(
        text.trim_end()
            .ends_with("/v1/resolve?route=onboarding&env=prod&unit=u7'"),
        "{text}"
    );
}
