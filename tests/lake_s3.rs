//! A lake on S3: `--lake s3://bucket/prefix` against a local S3 server (moto, started here).
//! Readers (`sql`, `rollup`, `judge`, `lake history|files`, `--as-of`) print exactly what they
//! print on the local lake the store was copied from; a copy stopped before its logs leaves
//! readers on the previous version. Ingest writes to the store directly: the same rows as into
//! a local lake, deduplicated, quarantined and compacted there; two writers take turns; a
//! writer killed or failing at any step of its commit leaves readers on the version before.
//! The registry follows the lake onto the store (conditional puts under a lease: concurrent
//! writers all land, in turn). Commands not built for object storage refuse it and write
//! nothing.

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Lake, bin};
use serde_json::Value;

/// moto's S3 server on a free local port, stopped when dropped.
struct S3 {
    child: Child,
    endpoint: String,
    /// Holds the writers' local work directories (`PROMPTGATE_WORK_DIR`).
    work: tempfile::TempDir,
}

impl S3 {
    fn start() -> S3 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        common::require_python("moto.server, flask, boto3");
        let child = common::python()
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto's S3 server (`./dev test` installs it)");
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        S3 {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            work: tempfile::tempdir().unwrap(),
        }
    }

    /// `cmd` with this server's endpoint and test credentials, and nothing from the machine's
    /// own AWS configuration.
    fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        for var in [
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_DEFAULT_REGION",
            "PROMPTGATE_LAKE",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("PROMPTGATE_WORK_DIR", self.work.path().join("writer"))
            .env("USER", "tester")
    }

    /// Runs the S3 client script below (boto3): `mkbucket B`, `copy DIR B PREFIX STEP`, `keys B`.
    fn client(&self, args: &[&str]) -> String {
        let out = self
            .env(&mut common::python())
            .arg("-c")
            .arg(CLIENT)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// promptgate with `--lake` at `lake` (a URL or a path).
    fn run(&self, lake: &str, args: &[&str]) -> Output {
        self.env(&mut bin())
            .arg("--lake")
            .arg(lake)
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The copy the README gives (`aws s3 sync` in three steps), with boto3: `data` (every file but
/// the logs, the staging, the quarantine and the registry), then `delta` (the tables' Delta
/// logs), then `lake` (the lake's log).
const CLIENT: &str = r#"
import os, sys, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
cmd = sys.argv[1]
if cmd == "mkbucket":
    s3.create_bucket(Bucket=sys.argv[2])
elif cmd == "keys":
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[2]):
        keys += [o["Key"] for o in page.get("Contents", [])]
    print("\n".join(sorted(keys)))
elif cmd == "copy":
    root, bucket, prefix, step = sys.argv[2:6]
    for d, _, files in os.walk(root):
        for f in files:
            rel = os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
            if rel.split("/")[0] in ("_staging", "quarantine", "registry"):
                continue
            kind = "delta" if "/_delta_log/" in rel else "lake" if rel.startswith("_promptgate/log/") else "data"
            if kind == step:
                s3.upload_file(os.path.join(d, f), bucket, prefix + "/" + rel)
"#;

fn copy(s3: &S3, lake: &Path, bucket: &str, prefix: &str, steps: &[&str]) {
    for step in steps {
        s3.client(&["copy", lake.to_str().unwrap(), bucket, prefix, step]);
    }
}

/// Generated events of route `support` (v1 and a canary v2), ingested into the local `lake`.
fn ingest(lake: &Lake, s3: &S3, n: u32, seed: u32) {
    let file = events_file(lake, n, seed);
    let ingested = s3.run(
        lake.lake.to_str().unwrap(),
        &["ingest", "--no-progress", &file],
    );
    assert!(ingested.status.success(), "{ingested:?}");
}

/// `rollup` of route `support` by model, as JSON.
const ROLLUP_JSON: [&str; 7] = [
    "rollup", "--route", "support", "--by", "model", "--format", "json",
];
/// `judge` of v2 against v1 on route `support`, as JSON.
const JUDGE_JSON: [&str; 9] = [
    "judge",
    "--route",
    "support",
    "--baseline",
    "v1",
    "--canary",
    "v2",
    "--format",
    "json",
];

/// Runs `args` on both lakes: the same exit code and output (JSON: the same values, floats
/// within [`same`]'s tolerance).
fn assert_same_output(s3: &S3, local: &str, remote: &str, args: &[&str]) {
    let here = result(&s3.run(local, args));
    let there = s3.run(remote, args);
    let stderr = String::from_utf8_lossy(&there.stderr);
    let there = result(&there);
    assert_eq!(here.0, there.0, "{args:?}\nstderr on S3: {stderr}");
    assert!(!here.1.is_empty(), "{args:?} printed nothing");
    if args.contains(&"json") && !args.contains(&"--json") {
        let (a, b): (Value, Value) = (
            serde_json::from_str(&here.1).unwrap(),
            serde_json::from_str(&there.1).unwrap(),
        );
        assert!(same(&a, &b), "{args:?}\nlocal: {a}\nS3: {b}");
    } else {
        assert_eq!(here.1, there.1, "{args:?}\nstderr on S3: {stderr}");
    }
}

/// Exit code and stdout.
fn result(out: &Output) -> (i32, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Equal JSON, floats within a relative 1e-12: sums over partitions read in another order
/// (the same files fetched over HTTP) round differently in the last bit.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn count(s3: &S3, lake: &str) -> u64 {
    let out = s3.run(
        lake,
        &[
            "sql",
            "SELECT COUNT(*) AS n FROM llm_events",
            "--format",
            "json",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["n"].as_u64().unwrap()
}

#[test]
fn readers_on_s3_print_what_they_print_on_the_local_lake() {
    let s3 = S3::start();
    let lake = Lake::new();
    ingest(&lake, &s3, 20_000, 1);
    ingest(&lake, &s3, 20_000, 2);
    s3.client(&["mkbucket", "team"]);
    copy(
        &s3,
        &lake.lake,
        "team",
        "lakes/llm",
        &["data", "delta", "lake"],
    );
    let local = lake.lake.to_str().unwrap().to_string();
    let remote = "s3://team/lakes/llm";

    let commands: Vec<Vec<&str>> = vec![
        vec![
            "sql",
            "SELECT prompt_version, COUNT(*) AS n, SUM(tokens_in) AS t, COUNT(DISTINCT event_id) AS d \
             FROM llm_events GROUP BY prompt_version ORDER BY prompt_version",
            "--format",
            "json",
        ],
        vec![
            "sql",
            "SELECT (SELECT COUNT(*) FROM llm_labels) AS labels, \
             (SELECT COUNT(*) FROM llm_labeled_events) AS labeled, \
             (SELECT COUNT(*) FROM llm_events_labeled WHERE label = 'bad') AS bad",
            "--format",
            "json",
        ],
        vec![
            "sql",
            "SELECT SUM(tokens_in) AS t FROM llm_events",
            "--as-of",
            "1",
        ],
        ROLLUP_JSON.to_vec(),
        JUDGE_JSON.to_vec(),
        [&JUDGE_JSON[..7], &["--as-of", "1"]].concat(),
        vec!["lake", "history", "--json"],
        vec!["lake", "files", "--json"],
        vec!["lake", "files", "--as-of", "1"],
    ];
    for args in &commands {
        assert_same_output(&s3, &local, remote, args);
    }
    // The judge really judged: a verdict, not an error, from both.
    let judged = s3.run(remote, &commands[4]);
    let v: Value = serde_json::from_slice(&judged.stdout).unwrap();
    assert!(v["n_baseline"].as_u64().unwrap() > 0 && v["n_canary"].as_u64().unwrap() > 0);
    // A version the lake does not have: the same usage error as on local disk.
    let missing = s3.run(remote, &["sql", "SELECT 1", "--as-of", "99"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no version 99"));
}

#[test]
fn a_copy_stopped_before_its_logs_leaves_readers_on_the_previous_version() {
    let s3 = S3::start();
    let lake = Lake::new();
    ingest(&lake, &s3, 10_000, 3);
    s3.client(&["mkbucket", "copies"]);
    copy(&s3, &lake.lake, "copies", "l", &["data", "delta", "lake"]);
    let remote = "s3://copies/l";
    let before = count(&s3, remote);
    assert_eq!(before, count(&s3, lake.lake.to_str().unwrap()));

    // An append (4 ingests: the last compacts each day, replacing files the old version reads).
    for seed in [4, 5, 6] {
        ingest(&lake, &s3, 5_000, seed);
    }
    let after = count(&s3, lake.lake.to_str().unwrap());
    assert!(after > before);
    copy(&s3, &lake.lake, "copies", "l", &["data"]);
    assert_eq!(count(&s3, remote), before, "new files alone change nothing");
    copy(&s3, &lake.lake, "copies", "l", &["delta"]);
    assert_eq!(
        count(&s3, remote),
        before,
        "newer Delta versions no lake version names change nothing"
    );
    copy(&s3, &lake.lake, "copies", "l", &["lake"]);
    assert_eq!(count(&s3, remote), after);
    // The version the store showed before is still there to read.
    let old = s3.run(
        remote,
        &[
            "sql",
            "SELECT COUNT(*) AS n FROM llm_events",
            "--as-of",
            "1",
            "--format",
            "json",
        ],
    );
    let v: Value = serde_json::from_slice(&old.stdout).unwrap();
    assert_eq!(v[0]["n"].as_u64(), Some(before));
}

#[test]
fn commands_not_built_for_s3_refuse_it_and_write_nothing_there() {
    let s3 = S3::start();
    let lake = Lake::new();
    ingest(&lake, &s3, 2_000, 7);
    s3.client(&["mkbucket", "writes"]);
    copy(
        &s3,
        &lake.lake,
        "writes",
        "lake",
        &["data", "delta", "lake"],
    );
    let keys = s3.client(&["keys", "writes"]);
    for args in [
        vec!["lake", "convert"],
        vec!["review", "sample", "--route", "support", "--env", "prod"],
        vec!["review", "score", "--id", "r1", "--labels", "labels.csv"],
        vec![
            "checklist",
            "--route",
            "support",
            "--baseline",
            "v1",
            "--canary",
            "v2",
        ],
    ] {
        let out = s3.run("s3://writes/lake", &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("needs a lake on local disk"),
            "{args:?}: {err}"
        );
        assert!(err.contains("s3://writes/lake/"), "{args:?}: {err}");
    }
    assert_eq!(
        s3.client(&["keys", "writes"]),
        keys,
        "a refused writer wrote to the store"
    );
    // Nothing was created on local disk under a path that looks like the URL either.
    assert!(!Path::new("s3:").exists());
}

#[test]
fn a_prefix_without_a_lake_says_so() {
    let s3 = S3::start();
    s3.client(&["mkbucket", "empty"]);
    for args in [vec!["sql", "SELECT 1"], vec!["lake", "history"]] {
        let out = s3.run("s3://empty/nothing/here", &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("no lake at s3://empty/nothing/here/"), "{err}");
    }
    let out = s3.run("gs://bucket/lake", &["sql", "SELECT 1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gs:// is not a store"));
}

#[test]
fn a_rollout_steps_on_the_judge_of_a_lake_on_s3() {
    // The CI gate: the lake on the store, the registry on local disk (--registry).
    let s3 = S3::start();
    let w = Lake::new();
    w.add_version("support", "v1", "support-v1.txt", None);
    w.add_version("support", "v2", "support-v2.txt", None);
    w.ok(&[
        "registry",
        "set-default",
        "--route",
        "support",
        "--version",
        "v1",
    ]);
    let policy = common::testdata("rollout-policy.toml");
    w.ok(&[
        "rollout", "start", "--route", "support", "--env", "prod", "--canary", "v2", "--id",
        "r-s3", "--policy", &policy,
    ]);
    s3.client(&["mkbucket", "gate"]);
    let registry = w.lake.join("registry");
    let step = |code: i32| -> Value {
        copy(&s3, &w.lake, "gate", "lake", &["data", "delta", "lake"]);
        let out = s3.run(
            "s3://gate/lake",
            &[
                "--registry",
                registry.to_str().unwrap(),
                "rollout",
                "step",
                "--route",
                "support",
                "--env",
                "prod",
                "--format",
                "json",
            ],
        );
        assert_eq!(out.status.code(), Some(code), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    w.traffic(common::Traffic {
        units: 50_000,
        ..Default::default()
    });
    let r = step(0);
    assert_eq!(r["rollout"]["status"], "active", "{r}");
    w.traffic(common::Traffic {
        units: 10_000,
        canary_latency: Some(3.0),
        ..Default::default()
    });
    let r = step(1);
    assert_eq!(r["rollout"]["status"], "aborted", "{r}");
    assert!(
        r["judge"]["reason"]
            .as_str()
            .unwrap()
            .contains("p95_duration_ms"),
        "{r}"
    );
    // The registry on local disk recorded it: everyone is back on v1.
    let resolved = w.ok(&[
        "resolve", "--route", "support", "--env", "prod", "--unit", "u1",
    ]);
    let v: Value = serde_json::from_str(&resolved).unwrap();
    assert_eq!(v["version"], "v1");
}

/// Generated events of route `support` (v1 and a canary v2) in a file beside `lake`.
fn events_file(lake: &Lake, n: u32, seed: u32) -> String {
    let out = bin()
        .args([
            "gen",
            "--events",
            &n.to_string(),
            "--seed",
            &seed.to_string(),
        ])
        .args([
            "--routes",
            "support",
            "--canary-share",
            "0.3",
            "--days",
            "3",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let file = lake.path(&format!("gen-{seed}.ndjson"));
    std::fs::write(&file, &out.stdout).unwrap();
    file.to_string_lossy().into_owned()
}

fn ingest_json(s3: &S3, lake: &str, file: &str, env: &[(&str, &str)]) -> (i32, Value) {
    let (code, v, _) = ingest_output(s3, lake, file, env);
    (code, v)
}

/// Exit code, JSON report and stderr of an ingest.
fn ingest_output(s3: &S3, lake: &str, file: &str, env: &[(&str, &str)]) -> (i32, Value, String) {
    let mut cmd = bin();
    s3.env(&mut cmd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .args(["--lake", lake, "ingest", "--json", "--no-progress", file])
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), v, stderr)
}

/// Rows of each table's latest Delta version on the store, as the `deltalake` Python package
/// (delta-rs, an independent reader) counts them.
fn delta_rs_counts(s3: &S3, lake: &str) -> Vec<u64> {
    ["llm_events", "llm_labels", "llm_labeled_events"]
        .iter()
        .map(|t| {
            let mut python3 = common::python();
            s3.env(&mut python3);
            common::delta_rs_count_at(python3, &format!("{lake}/{t}"))
        })
        .collect()
}

/// Distinct ids of each table (events, labels, labeled-events index): read from the files (a
/// bare `COUNT(*)` is answered from the log's statistics), so a missing file fails it.
fn table_counts(s3: &S3, lake: &str) -> Vec<u64> {
    let q = "SELECT (SELECT COUNT(DISTINCT event_id) FROM llm_events) AS e, \
             (SELECT COUNT(DISTINCT label_id) FROM llm_labels) AS l, \
             (SELECT COUNT(DISTINCT event_id) FROM llm_labeled_events) AS i";
    let out = s3.run(lake, &["sql", q, "--format", "json"]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    ["e", "l", "i"]
        .iter()
        .map(|k| v[0][*k].as_u64().unwrap())
        .collect()
}

#[test]
fn ingest_into_s3_keeps_what_a_local_lake_keeps() {
    let s3 = S3::start();
    let lake = Lake::new();
    s3.client(&["mkbucket", "direct"]);
    let remote = "s3://direct/team/lake";
    let local = lake.lake.to_str().unwrap().to_string();
    let first = events_file(&lake, 20_000, 31);
    // The same events again, plus a line that is not an event.
    let again = lake.path("again.ndjson");
    let mut text = std::fs::read_to_string(&first).unwrap();
    text.push_str("{\"not\": \"an event\"}\n");
    std::fs::write(&again, text).unwrap();
    let mut files = vec![first, again.to_str().unwrap().to_string()];
    // Three more batches: the fourth file in each day makes ingest compact the days.
    files.extend([32, 33, 34].map(|seed| events_file(&lake, 4_000, seed)));
    let mut compacted = false;
    for file in &files {
        let (code, here) = ingest_json(&s3, &local, file, &[]);
        assert_eq!(code, 0, "{here}");
        let (code, there) = ingest_json(&s3, remote, file, &[]);
        assert_eq!(code, 0, "{there}");
        for key in [
            "read",
            "accepted",
            "duplicates",
            "rejected",
            "inline_labels",
        ] {
            assert_eq!(here[key], there[key], "{key}: {here} / {there}");
        }
        compacted |= there["compacted"].is_array();
        if let Some(q) = there["quarantine"].as_str() {
            assert!(
                q.starts_with("s3://direct/team/lake/quarantine/"),
                "{there}"
            );
            let keys = s3.client(&["keys", "direct"]);
            let key = q.trim_start_matches("s3://direct/");
            assert!(
                keys.lines().any(|k| k.starts_with(key)),
                "{q} not in {keys}"
            );
        }
    }
    assert!(compacted, "four appends to each day compact it");
    let counts = table_counts(&s3, remote);
    assert_eq!(counts, table_counts(&s3, &local));
    assert_eq!(counts[0], 32_000);
    assert_eq!(delta_rs_counts(&s3, remote), counts);
    for args in [ROLLUP_JSON.to_vec(), JUDGE_JSON.to_vec()] {
        assert_same_output(&s3, &local, remote, &args);
    }
    // The store's table is laid out as the local one: the same number of files (one per day
    // after the compaction).
    let live = |lake: &str| -> usize {
        let out = s3.run(lake, &["lake", "files", "--table", "llm_events", "--json"]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    assert_eq!(live(remote), live(&local));
    assert_eq!(live(remote), 3);
    // The writer released its lease.
    assert!(!s3.client(&["keys", "direct"]).contains("writer.json"));

    // Vacuum on the store: the files the compaction replaced (and their id-hash files) go once
    // past the retention period; the latest version never loses one.
    let keys = s3.client(&["keys", "direct"]);
    let dry = s3.run(
        remote,
        &["lake", "vacuum", "--retention-hours", "0", "--dry-run"],
    );
    assert!(dry.status.success(), "{dry:?}");
    let listed: Vec<String> = String::from_utf8_lossy(&dry.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("would delete "))
        .filter(|p| p.ends_with(".parquet"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        listed.len(),
        36,
        "3 tables x 3 days x 4 files replaced: {listed:?}"
    );
    assert_eq!(
        s3.client(&["keys", "direct"]),
        keys,
        "a dry run deletes nothing"
    );
    let done = s3.run(remote, &["lake", "vacuum", "--retention-hours", "0"]);
    assert!(done.status.success(), "{done:?}");
    let after = s3.client(&["keys", "direct"]);
    for rel in &listed {
        assert!(!after.contains(rel.as_str()), "{rel} is still on the store");
        assert!(keys.contains(rel.as_str()), "{rel} was never on the store");
    }
    assert_eq!(table_counts(&s3, remote), counts);
    assert_eq!(delta_rs_counts(&s3, remote), counts);
    let old = s3.run(
        remote,
        // Reads the files (a bare COUNT(*) is answered from the log's statistics).
        &[
            "sql",
            "SELECT SUM(tokens_in) FROM llm_events",
            "--as-of",
            "3",
        ],
    );
    assert_eq!(old.status.code(), Some(1), "{old:?}");
    assert!(
        String::from_utf8_lossy(&old.stderr).contains("vacuum"),
        "{old:?}"
    );
}

#[test]
fn two_writers_on_s3_take_turns_and_keep_every_event_once() {
    let s3 = S3::start();
    let lake = Lake::new();
    s3.client(&["mkbucket", "turns"]);
    let remote = "s3://turns/lake";
    let a = events_file(&lake, 30_000, 41);
    let b = events_file(&lake, 30_000, 42);
    // b also carries 10,000 of a's events.
    let mut text = std::fs::read_to_string(&b).unwrap();
    text.extend(
        std::fs::read_to_string(&a)
            .unwrap()
            .lines()
            .take(10_000)
            .map(|l| format!("{l}\n")),
    );
    std::fs::write(&b, text).unwrap();
    // Two machines: two work directories, nothing shared but the store.
    let runs: Vec<(i32, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = [(&a, "one"), (&b, "two")]
            .into_iter()
            .map(|(file, dir)| {
                let work = s3.work.path().join(dir);
                let s3 = &s3;
                scope.spawn(move || {
                    ingest_json(
                        s3,
                        remote,
                        file,
                        &[("PROMPTGATE_WORK_DIR", work.to_str().unwrap())],
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (code, report) in &runs {
        assert_eq!(*code, 0, "{report}");
    }
    let duplicates: u64 = runs
        .iter()
        .map(|(_, r)| r["duplicates"].as_u64().unwrap())
        .sum();
    assert_eq!(duplicates, 10_000, "{runs:?}");
    let out = s3.run(
        remote,
        &[
            "sql",
            "SELECT COUNT(*) AS n, COUNT(DISTINCT event_id) AS d FROM llm_events",
            "--format",
            "json",
        ],
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v[0]["n"].as_u64(), v[0]["d"].as_u64()),
        (Some(60_000), Some(60_000))
    );
}

#[test]
fn a_writer_killed_or_failing_mid_commit_on_s3_leaves_readers_on_the_version_before() {
    let s3 = S3::start();
    let lake = Lake::new();
    s3.client(&["mkbucket", "crash"]);
    let remote = "s3://crash/lake";
    let base = events_file(&lake, 6_000, 51);
    assert_eq!(ingest_json(&s3, remote, &base, &[]).0, 0);
    let mut before = table_counts(&s3, remote);
    let lease = [("PROMPTGATE_LEASE_SECONDS", "2")];
    for (i, step) in [
        "files",
        "llm_labels",
        "llm_labeled_events",
        "llm_events",
        "fail:llm_labels",
        "fail:llm_events",
    ]
    .into_iter()
    .enumerate()
    {
        let file = events_file(&lake, 3_000, 60 + i as u32);
        let (code, _) = ingest_json(
            &s3,
            remote,
            &file,
            &[("PROMPTGATE_CRASH_AT", step), lease[0]],
        );
        match step.strip_prefix("fail:") {
            Some(_) => assert_eq!(code, 1, "{step}: a failed commit exits 1"),
            None => assert_eq!(code, -1, "{step}: killed"),
        }
        assert_eq!(
            table_counts(&s3, remote),
            before,
            "{step}: readers see the version before"
        );
        // The next writer (once the dead one's lease expired) undoes what it left and commits.
        let (code, report, stderr) = ingest_output(&s3, remote, &file, &lease);
        assert_eq!(code, 0, "{step}: {report}");
        if step.starts_with("llm_") {
            // Killed after a table commit: the next writer undid it before its own.
            assert!(
                stderr.contains("undid an interrupted write"),
                "{step}: {stderr}"
            );
        }
        assert_eq!(report["accepted"], 3_000, "{step}: {report}");
        let now = table_counts(&s3, remote);
        assert_eq!(now[0], before[0] + 3_000, "{step}");
        assert_eq!(delta_rs_counts(&s3, remote), now, "{step}: delta-rs agrees");
        before = now;
    }
}

#[test]
fn readers_on_s3_see_whole_versions_while_ingest_compacts() {
    let s3 = S3::start();
    let lake = Lake::new();
    s3.client(&["mkbucket", "loop"]);
    let remote = "s3://loop/lake";
    let files: Vec<String> = (0..4).map(|i| events_file(&lake, 4_000, 70 + i)).collect();
    assert_eq!(ingest_json(&s3, remote, &files[0], &[]).0, 0);
    // Committed totals: after each ingest (the fourth also compacts every day, replacing the
    // files the versions before it read).
    let totals: Vec<u64> = (1..=4).map(|k| 4_000 * k).collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let seen: Vec<u64> = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                seen.push(table_counts(&s3, remote)[0]);
            }
            seen
        });
        for f in &files[1..] {
            let (code, report) = ingest_json(&s3, remote, f, &[]);
            assert_eq!(code, 0, "{report}");
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        reader.join().unwrap()
    });
    assert!(seen.len() >= 3, "the reader ran: {seen:?}");
    for n in &seen {
        assert!(
            totals.contains(n),
            "a reader saw {n}, not a committed total: {seen:?}"
        );
    }
    assert_eq!(table_counts(&s3, remote)[0], 16_000);
}

/// `registry add` of a prompt text written beside `lake`.
fn add_version(s3: &S3, lake: &str, dir: &Path, route: &str, version: &str) -> Output {
    let file = dir.join(format!("{route}-{version}.txt"));
    std::fs::write(
        &file,
        format!("You answer {route} questions. ({version})\n"),
    )
    .unwrap();
    let args = [
        "registry",
        "add",
        "--route",
        route,
        "--version",
        version,
        "--file",
    ];
    s3.run(lake, &[&args[..], &[file.to_str().unwrap()]].concat())
}

fn history(s3: &S3, lake: &str, route: &str) -> Vec<Value> {
    let out = s3.run(
        lake,
        &["registry", "history", "--route", route, "--format", "json"],
    );
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn the_registry_follows_a_lake_onto_s3_and_concurrent_writers_all_land() {
    let s3 = S3::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    s3.client(&["mkbucket", "registry"]);
    let remote = "s3://registry/lake";
    assert!(
        add_version(&s3, remote, dir, "support", "v1")
            .status
            .success()
    );
    let set = s3.run(
        remote,
        &[
            "registry",
            "set-default",
            "--route",
            "support",
            "--version",
            "v1",
        ],
    );
    assert!(set.status.success(), "{set:?}");
    let keys = s3.client(&["keys", "registry"]);
    for key in [
        "lake/registry/state.json",
        "lake/registry/audit/00000000000000000001.ndjson",
        "lake/registry/audit/00000000000000000002.ndjson",
        "lake/registry/prompts/",
    ] {
        assert!(keys.contains(key), "{key} not in {keys}");
    }
    assert!(
        !keys.contains("writer.json"),
        "the lease was released: {keys}"
    );
    let resolved = s3.run(
        remote,
        &[
            "resolve", "--route", "support", "--env", "prod", "--unit", "u1",
        ],
    );
    let v: Value = serde_json::from_slice(&resolved.stdout).unwrap();
    assert_eq!(v["version"], "v1", "{resolved:?}");

    // Eight writers at once (other machines: separate work directories), each adding a version.
    let outs: Vec<Output> = std::thread::scope(|scope| {
        let handles: Vec<_> = (2..10)
            .map(|i| {
                let s3 = &s3;
                scope.spawn(move || add_version(s3, remote, dir, "support", &format!("v{i}")))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for out in &outs {
        assert!(out.status.success(), "{out:?}");
    }
    let h = history(&s3, remote, "support");
    assert_eq!(h.len(), 10, "{h:?}");
    let revisions: Vec<u64> = h.iter().map(|e| e["revision"].as_u64().unwrap()).collect();
    assert_eq!(revisions, (1..=10).collect::<Vec<_>>());

    // A writer that died after writing its audit entry but before its commit: never shown,
    // and replaced by the next write of that revision.
    let planted = dir.join("planted.ndjson");
    std::fs::write(&planted, "{\"revision\":11,\"partial").unwrap();
    let script = r#"
import os, sys, boto3
boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).upload_file(sys.argv[1], "registry", "lake/registry/audit/00000000000000000011.ndjson")
"#;
    let out = s3
        .env(&mut common::python())
        .args(["-c", script, planted.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(history(&s3, remote, "support").len(), 10);
    assert!(
        add_version(&s3, remote, dir, "support", "v10")
            .status
            .success()
    );
    let h = history(&s3, remote, "support");
    assert_eq!(h.len(), 11);
    assert_eq!(h[10]["revision"], 11, "{:?}", h[10]);
    assert!(
        h[10]["after"].as_str().unwrap().starts_with("v10 "),
        "{:?}",
        h[10]
    );
}

#[test]
fn a_registry_copied_from_disk_keeps_its_history_on_s3() {
    let s3 = S3::start();
    let lake = Lake::new();
    lake.add_version("support", "v1", "support-v1.txt", None);
    lake.add_version("support", "v2", "support-v2.txt", Some("shorter answers"));
    let local = lake.lake.to_str().unwrap().to_string();
    let before = history(&s3, &local, "support");
    assert_eq!(before.len(), 2);
    s3.client(&["mkbucket", "copied"]);
    // The registry directory as it is on disk (state.json, audit.ndjson, prompts/).
    let script = r#"
import os, sys, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
root = sys.argv[1]
for d, _, files in os.walk(root):
    for f in files:
        rel = os.path.relpath(os.path.join(d, f), root)
        s3.upload_file(os.path.join(d, f), "copied", "reg/" + rel)
"#;
    let out = s3
        .env(&mut common::python())
        .args(["-c", script, lake.lake.join("registry").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let on_s3 = [&local[..], "--registry", "s3://copied/reg"];
    let run = |args: &[&str]| s3.run(on_s3[0], &[&on_s3[1..], args].concat());
    let out = run(&[
        "registry", "history", "--route", "support", "--format", "json",
    ]);
    let h: Vec<Value> = serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(h, before);
    let set = run(&[
        "registry",
        "set-default",
        "--route",
        "support",
        "--version",
        "v2",
    ]);
    assert!(set.status.success(), "{set:?}");
    let out = run(&[
        "registry", "history", "--route", "support", "--format", "json",
    ]);
    let h: Vec<Value> = serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(h.len(), 3);
    assert_eq!(h[..2], before[..]);
    let shown = run(&["registry", "show", "--format", "json"]);
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("\"v2\""),
        "{shown:?}"
    );
}

/// A blocking HTTP GET of `path` on `addr`: status and JSON body.
fn http_get(addr: &str, path: &str) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut conn = TcpStream::connect(addr).unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap())
}

#[test]
fn serve_answers_from_a_registry_on_s3_and_sees_every_commit() {
    let s3 = S3::start();
    let tmp = tempfile::tempdir().unwrap();
    s3.client(&["mkbucket", "served"]);
    let remote = "s3://served/lake";
    for v in ["v1", "v2"] {
        assert!(
            add_version(&s3, remote, tmp.path(), "support", v)
                .status
                .success()
        );
    }
    let set = |v: &str| {
        let out = s3.run(
            remote,
            &[
                "registry",
                "set-default",
                "--route",
                "support",
                "--version",
                v,
            ],
        );
        assert!(out.status.success(), "{out:?}");
    };
    set("v1");
    let mut child = s3
        .env(&mut bin())
        .args(["--lake", remote, "serve", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = common::serve_banner(&mut child);
    let addr = common::listening_addr(&line);
    assert!(line.contains("s3://served/lake/registry/"), "{line}");
    let resolve = "/v1/resolve?route=support&env=prod&unit=u1";
    let (status, v) = http_get(&addr, resolve);
    assert_eq!((status, v["version"].as_str()), (200, Some("v1")), "{v}");
    // A commit on the store is what the next request sees.
    set("v2");
    let (_, v) = http_get(&addr, resolve);
    assert_eq!(v["version"], "v2", "{v}");
    let (status, p) = http_get(&addr, "/v1/prompts/support/v2");
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["text"], "You answer support questions. (v2)\n");
    let _ = child.kill();
    let _ = child.wait();
}

/// `serve --intake` over a lake on S3: the spool is local (under the work directory), the
/// commits go to the store; a SIGKILL after acknowledged posts and a restart keep every
/// acknowledged event exactly once, with a CLI ingest into the same lake in between.
#[test]
fn serve_intake_into_a_lake_on_s3_keeps_every_acknowledged_event_once() {
    let s3 = S3::start();
    let lake = Lake::new();
    s3.client(&["mkbucket", "intake"]);
    let remote = "s3://intake/lake";
    let start = || {
        let mut child = s3
            .env(&mut bin())
            .args([
                "--lake",
                remote,
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--intake",
            ])
            .args(["--commit-interval", "0.3"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let addr = common::listening_addr(&common::serve_banner(&mut child));
        (child, addr)
    };
    let post = |addr: &str, batch: i64| {
        let lines: Vec<String> = (0..50)
            .map(|i| {
                common::event_line(
                    &format!("s-{batch}-{i}"),
                    1_763_625_600_000 + batch * 60_000 + i,
                    "v1",
                )
            })
            .collect();
        let a = common::http(addr, "POST", "/v1/events", &[], lines.join("\n").as_bytes());
        assert_eq!(a.status, 200);
        a.json()["accepted"].as_u64().unwrap()
    };
    let (mut child, addr) = start();
    let mut acknowledged = 0;
    for batch in 0..20 {
        acknowledged += post(&addr, batch);
    }
    common::signal_and_wait(
        &mut child,
        libc::SIGKILL,
        Duration::from_secs(10),
        "SIGKILL",
    );
    // Another writer on the same machine while the server is down.
    let file = events_file(&lake, 1_000, 77);
    let (code, r) = ingest_json(&s3, remote, &file, &[]);
    assert_eq!(code, 0, "{r}");
    let cli = r["accepted"].as_u64().unwrap();

    let (mut child, addr) = start();
    for batch in 20..30 {
        acknowledged += post(&addr, batch);
    }
    let status = common::signal_and_wait(
        &mut child,
        libc::SIGTERM,
        Duration::from_secs(60),
        "serve --intake stops after its last commit",
    );
    assert!(status.success());
    assert_eq!(acknowledged, 1_500);
    assert_eq!(count(&s3, remote), acknowledged + cli);
    let out = s3.run(
        remote,
        &[
            "sql",
            "SELECT COUNT(DISTINCT event_id) AS n FROM llm_events",
            "--format",
            "json",
        ],
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["n"].as_u64().unwrap(), acknowledged + cli);
}
