//! Model-snapshot drift: `response_model` is the first column added to `llm_events` after lakes
//! existed. A lake written before it (`testdata/lake_before_response_model`, made by the
//! promptgate of before the column) reads it as null, gains it in one Delta metadata commit at
//! its next write, keeps every row through a compaction that merges old and new files, and
//! stays readable by delta-rs. The judge says invalid (exit 4) when the arms of a segment were
//! answered by different snapshots, naming them, unless the policy allows it.

mod common;

use std::path::Path;

use common::Lake;
use serde_json::{Value, json};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn rows(lake: &Lake, query: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["sql", query, "--format", "json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&lake.ok(&args)).unwrap()
}

fn history_ops(lake: &Lake) -> Vec<String> {
    lake.ok(&["lake", "history", "--json"])
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["operation"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn a_lake_from_before_response_model_reads_it_as_null_and_gains_it_at_its_next_write() {
    let lake = Lake::new();
    copy_dir(
        Path::new(&common::testdata("lake_before_response_model")),
        &lake.lake,
    );
    let before = history_ops(&lake);
    assert_eq!(before.len(), 3, "{before:?}");

    // Reading an old lake sees the column, null, and writes nothing.
    let r = rows(
        &lake,
        "SELECT COUNT(*) AS n, COUNT(response_model) AS known FROM llm_events",
        &[],
    );
    assert_eq!(r[0]["n"], 8);
    assert_eq!(r[0]["known"], 0);
    assert_eq!(history_ops(&lake), before, "a read changed the lake");

    // New events name their snapshot, in both spellings, on a day the old lake holds.
    let new = lake.path("new.ndjson");
    let line = |id: &str, key: &str, model: &str| {
        json!({"event_id": id, "ts": "2026-11-20T11:00:00Z", "route": "support", "env": "prod",
               "model": "m1", "tier": "free", "prompt_version": "v1", "duration_ms": 120,
               "tokens_in": 10, "tokens_out": 2, "status": "ok", key: model})
        .to_string()
    };
    std::fs::write(
        &new,
        [
            line("n-1", "response_model", "m1-2026-01-15"),
            line("n-2", "responseModel", "m1-2026-03-01"),
        ]
        .join("\n"),
    )
    .unwrap();
    let (_, err) = lake.output(&["ingest", "--no-progress", new.to_str().unwrap()], 0);
    // CSV takes the column under both spellings too.
    let csv = lake.path("new.csv");
    std::fs::write(
        &csv,
        "event_id,ts,route,env,model,prompt_version,duration_ms,tokens_in,tokens_out,status,responseModel\n\
         n-3,2026-11-21T11:00:00Z,support,prod,m1,v1,90,1,1,ok,m1-2026-03-01\n",
    )
    .unwrap();
    lake.ok(&["ingest", "--no-progress", csv.to_str().unwrap()]);
    assert!(
        err.contains("llm_events gained response_model"),
        "the upgrade is not said: {err}"
    );
    let after = history_ops(&lake);
    assert!(
        after.iter().any(|o| o == "upgrade schema"),
        "no upgrade version: {after:?}"
    );
    let by_id = |extra: &[&str]| {
        rows(
            &lake,
            "SELECT event_id, response_model FROM llm_events ORDER BY event_id",
            extra,
        )
    };
    let r = by_id(&[]);
    assert_eq!(r.len(), 11);
    let served = |r: &[Value], id: &str| {
        r.iter().find(|x| x["event_id"] == id).unwrap()["response_model"].clone()
    };
    assert_eq!(served(&r, "n-1"), "m1-2026-01-15");
    assert_eq!(served(&r, "n-2"), "m1-2026-03-01");
    assert_eq!(served(&r, "n-3"), "m1-2026-03-01");
    assert_eq!(served(&r, "r-1"), Value::Null);

    // Time travel to before the upgrade reads the column as null too.
    let old = by_id(&["--as-of", "2"]);
    assert_eq!(old.len(), 8);
    assert!(old.iter().all(|x| x["response_model"].is_null()));

    // A compaction merges the old file (no column) with the new one, losing nothing.
    lake.ok(&["compact"]);
    assert_eq!(by_id(&[]), r, "compaction changed the rows");

    // The rollup segments by it; old events form the null segment.
    let roll: Vec<Value> = serde_json::from_str(&lake.ok(&[
        "rollup",
        "--route",
        "support",
        "--by",
        "response_model",
        "--format",
        "json",
    ]))
    .unwrap();
    let n_of = |m: Value| {
        roll.iter()
            .filter(|x| x["response_model"] == m)
            .map(|x| x["n"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(n_of(json!("m1-2026-01-15")), 1);
    assert_eq!(n_of(json!("m1-2026-03-01")), 2);
    assert!(n_of(Value::Null) >= 6, "{roll:?}");

    // Another Delta reader sees the upgraded table whole.
    common::require_python("deltalake");
    assert_eq!(common::delta_rs_count(&lake.lake, "llm_events"), 11);
}

/// Per arm, 400 events a day on one segment; `canary_models` names the snapshot of each
/// canary event by its number.
fn arms(lake: &Lake, canary_models: impl Fn(usize) -> Option<&'static str>) {
    let mut out = String::new();
    for (version, n) in [("v1", 800usize), ("v2", 800)] {
        for i in 0..n {
            let model = match version {
                "v1" => Some("gpt-4o-2024-08-06"),
                _ => canary_models(i),
            };
            let mut e = json!({
                "event_id": format!("{version}-{i}"),
                "ts": format!("2026-11-2{}T{:02}:{:02}:00Z", 1 + i / 400, (i % 400) / 20, i % 20),
                "route": "support", "env": "prod", "model": "gpt-4o", "tier": "free",
                "prompt_version": version, "duration_ms": 100 + (i % 13) * 7,
                "tokens_in": 100 + i % 5, "tokens_out": 40, "unit_id": format!("u{}", i % 300),
                "status": if i % 40 == 0 { "flagged" } else { "ok" },
            });
            if let Some(m) = model {
                e["response_model"] = json!(m);
            }
            out.push_str(&e.to_string());
            out.push('\n');
        }
    }
    let path = lake.path("arms.ndjson");
    std::fs::write(&path, out).unwrap();
    lake.ok(&["ingest", "--no-progress", path.to_str().unwrap()]);
}

/// `judge` of canary v2 against v1 on route `support`, with `extra` flags.
fn run_judge(lake: &Lake, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "judge",
        "--route",
        "support",
        "--baseline",
        "v1",
        "--canary",
        "v2",
    ];
    args.extend_from_slice(extra);
    lake.run(&args)
}

fn judge(lake: &Lake, extra: &[&str]) -> (i32, Value) {
    let out = run_judge(lake, &[&["--format", "json"], extra].concat());
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("no verdict: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), doc)
}

#[test]
fn arms_answered_by_two_snapshots_make_the_verdict_invalid_naming_both() {
    let lake = Lake::new();
    // The provider moved the alias to a new snapshot halfway through the canary.
    arms(&lake, |i| {
        Some(if i < 400 {
            "gpt-4o-2024-08-06"
        } else {
            "gpt-4o-2024-11-20"
        })
    });
    let (code, v) = judge(&lake, &[]);
    assert_eq!(code, 4, "{v:#}");
    assert_eq!(v["verdict"], "invalid");
    let reason = v["reason"].as_str().unwrap();
    for name in ["gpt-4o-2024-08-06", "gpt-4o-2024-11-20", "model=gpt-4o"] {
        assert!(reason.contains(name), "{name} not named: {reason}");
    }
    let seg = &v["response_models"][0];
    assert_eq!(seg["differs"], true);
    assert_eq!(seg["baseline"]["gpt-4o-2024-08-06"], 800);
    assert_eq!(seg["canary"]["gpt-4o-2024-11-20"], 400);

    // The table says it too.
    let out = run_judge(&lake, &[]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stdout).contains("gpt-4o-2024-11-20"));

    // A policy that allows it judges, and says what it allowed.
    let policy = lake.path("policy.toml");
    let text = promptgate::judge::DEFAULT_POLICY_TOML.replace(
        "allow_response_model_drift = false",
        "allow_response_model_drift = true",
    );
    assert_ne!(text, promptgate::judge::DEFAULT_POLICY_TOML);
    std::fs::write(&policy, text).unwrap();
    let (code, v) = judge(&lake, &["--policy", policy.to_str().unwrap()]);
    assert_ne!(code, 4, "{v:#}");
    let warned = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().contains("gpt-4o-2024-11-20"));
    assert!(warned, "{v:#}");
}

#[test]
fn one_snapshot_or_an_unknown_one_is_not_drift() {
    // Both arms on one snapshot.
    let lake = Lake::new();
    arms(&lake, |_| Some("gpt-4o-2024-08-06"));
    let (code, v) = judge(&lake, &[]);
    assert_ne!(code, 4, "{v:#}");
    assert_eq!(v["response_models"][0]["differs"], false);

    // The canary's logger does not report it: nothing to compare, not a difference.
    let lake = Lake::new();
    arms(&lake, |_| None);
    let (code, v) = judge(&lake, &[]);
    assert_ne!(code, 4, "{v:#}");
}

#[test]
fn the_judge_cannot_be_segmented_by_response_model() {
    let lake = Lake::new();
    arms(&lake, |_| Some("gpt-4o-2024-08-06"));
    let policy = lake.path("policy.toml");
    std::fs::write(
        &policy,
        promptgate::judge::DEFAULT_POLICY_TOML.replace(
            "segment_by = [\"model\", \"tier\"]",
            "segment_by = [\"model\", \"response_model\"]",
        ),
    )
    .unwrap();
    let out = run_judge(&lake, &["--policy", policy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("response_model"), "{err}");
}
