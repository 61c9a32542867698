//! Integration tests: the real `promptgate` binary against fixtures in `testdata/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::walk;
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_promptgate"))
}

fn testdata(name: &str) -> String {
    format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"))
}

struct Lake {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Lake {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lake");
        Lake { _dir: dir, path }
    }
    fn run(&self, args: &[&str]) -> Output {
        bin()
            .arg("--lake")
            .arg(&self.path)
            .args(args)
            .output()
            .unwrap()
    }
    fn ingest_json(&self, args: &[&str]) -> Value {
        let mut a = vec!["ingest", "--json"];
        a.extend_from_slice(args);
        let out = self.run(&a);
        assert!(
            out.status.success(),
            "ingest failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
    fn sql_json(&self, sql: &str) -> Vec<Value> {
        let out = self.run(&["sql", sql, "--format", "json"]);
        assert!(
            out.status.success(),
            "sql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
    }
    fn count(&self) -> i64 {
        self.sql_json("SELECT COUNT(*) AS n FROM llm_events")[0]["n"]
            .as_i64()
            .unwrap()
    }
    /// The events' Parquet files.
    /// The events' data files the lake's latest version reads (others may lie beside them
    /// until a vacuum).
    fn files(&self) -> Vec<PathBuf> {
        self.live_files("llm_events")
    }
    fn live_files(&self, table: &str) -> Vec<PathBuf> {
        let out = self.run(&["lake", "files", "--json", "--table", table]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut files: Vec<PathBuf> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                self.path.join(v["path"].as_str().unwrap())
            })
            .collect();
        files.sort();
        files
    }
    /// The events' hidden id-hash files (`.part-X.parquet.ids`).
    fn id_hash_files(&self) -> Vec<PathBuf> {
        self.event_files_ending("ids")
    }
    fn event_files_ending(&self, extension: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.path.join("llm_events"), &mut out);
        out.retain(|p| p.extension().is_some_and(|e| e == extension));
        out.sort();
        out
    }
}

/// Writes `promptgate gen ARGS` to a new file in `dir`; returns its path.
fn gen_file(dir: &Path, args: &[&str]) -> String {
    let out = bin().arg("gen").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = dir.join(format!("gen-{}.ndjson", args.join("_")));
    std::fs::write(&p, out.stdout).unwrap();
    p.to_str().unwrap().to_string()
}

fn assert_invariant(r: &Value) {
    let n = |k: &str| r[k].as_u64().unwrap();
    assert_eq!(
        n("read"),
        n("accepted") + n("duplicates") + n("rejected"),
        "{r}"
    );
}

#[test]
fn mixed_spellings_are_normalized_and_unknown_fields_kept() {
    let lake = Lake::new();
    let r = lake.ingest_json(&[&testdata("mixed_spellings.ndjson")]);
    assert_eq!(
        (
            r["read"].as_u64(),
            r["accepted"].as_u64(),
            r["rejected"].as_u64()
        ),
        (Some(5), Some(5), Some(0))
    );
    assert!(r["quarantine"].is_null());
    let rows = lake.sql_json(
        "SELECT event_id, tier, prompt_version, prompt_sha, status, attributes, CAST(ts AS VARCHAR) AS ts, label FROM llm_events_labeled ORDER BY event_id",
    );
    assert_eq!(rows[1]["prompt_version"], "v1"); // promptVersion
    assert_eq!(rows[1]["prompt_sha"], "aaa111"); // promptSha
    assert_eq!(rows[1]["status"], "flagged"); // FLAGGED normalized
    assert_eq!(rows[1]["tier"], "default"); // missing tier
    let attrs: Value = serde_json::from_str(rows[1]["attributes"].as_str().unwrap()).unwrap();
    assert_eq!(attrs["top_k"], 5);
    assert_eq!(attrs["reranker"], "bge");
    // explicit attributes win over an unknown top-level key of the same name
    let attrs: Value = serde_json::from_str(rows[2]["attributes"].as_str().unwrap()).unwrap();
    assert_eq!(attrs["top_k"], 3);
    // epoch ms and +01:00 offsets land on the right instant
    assert!(
        rows[1]["ts"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-20T10:01:00"),
        "{}",
        rows[1]["ts"]
    );
    assert!(
        rows[2]["ts"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-20T10:02:00"),
        "{}",
        rows[2]["ts"]
    );
    // inline labels
    assert_eq!(rows[2]["label"], "bad");
    assert_eq!(rows[3]["label"], "good");
}

#[test]
fn every_malformed_line_is_quarantined_verbatim_with_a_precise_reason() {
    let lake = Lake::new();
    let r = lake.ingest_json(&[&testdata("malformed.ndjson")]);
    assert_invariant(&r);
    assert_eq!(r["read"], 14);
    assert_eq!(r["accepted"], 2);
    assert_eq!(r["duplicates"], 1);
    assert_eq!(r["rejected"], 11);
    let q = PathBuf::from(r["quarantine"].as_str().unwrap());
    let reasons: Vec<Value> = std::fs::read_to_string(q.join("reasons.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let expect = [
        (2, "invalid JSON"),
        (3, "missing required field `route`"),
        (4, "`duration_ms` must be >= 0"),
        (5, "is not an RFC 3339 timestamp"),
        (6, "`duration_ms` must be a number, got string"),
        (7, "`status` \"done\" is not one of ok, flagged, error"),
        (8, "array"),
        (9, "epoch seconds"),
        (10, "`route` must not be empty"),
        (11, "`tokens_in` must be a whole number"),
        (12, "appears twice"),
    ];
    assert_eq!(reasons.len(), expect.len());
    for (r, (line, text)) in reasons.iter().zip(expect) {
        assert_eq!(r["line"], line);
        assert!(
            r["reason"].as_str().unwrap().contains(text),
            "line {line}: {}",
            r["reason"]
        );
        assert!(r["source"].as_str().unwrap().ends_with("malformed.ndjson"));
    }
    // The quarantined file holds exactly the rejected lines, byte for byte.
    let original: Vec<String> = std::fs::read_to_string(testdata("malformed.ndjson"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let kept = std::fs::read_to_string(q.join(reasons[0]["file"].as_str().unwrap())).unwrap();
    let expected: Vec<&str> = expect
        .iter()
        .map(|(l, _)| original[l - 1].as_str())
        .collect();
    assert_eq!(kept.lines().collect::<Vec<_>>(), expected);
    assert_eq!(lake.count(), 2);
}

#[test]
fn reingesting_adds_nothing() {
    let lake = Lake::new();
    let first = lake.ingest_json(&[&testdata("rollup_small.ndjson")]);
    assert_eq!(first["accepted"], 8);
    let files = lake.files();
    let again = lake.ingest_json(&[
        &testdata("rollup_small.ndjson"),
        &testdata("mixed_spellings.ndjson"),
    ]);
    assert_invariant(&again);
    assert_eq!(again["duplicates"], 8);
    assert_eq!(again["accepted"], 5);
    assert_eq!(lake.count(), 13);
    let third = lake.ingest_json(&[&testdata("rollup_small.ndjson")]);
    assert_eq!(
        (third["accepted"].as_u64(), third["duplicates"].as_u64()),
        (Some(0), Some(8))
    );
    assert!(lake.files().len() > files.len());
}

#[test]
fn huge_line_is_rejected_and_kept_without_losing_neighbours() {
    let lake = Lake::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.ndjson");
    let good = std::fs::read_to_string(testdata("rollup_small.ndjson")).unwrap();
    let mut lines: Vec<String> = good.lines().map(String::from).collect();
    let huge = format!(
        "{{\"event_id\":\"h\",\"input\":\"{}\"}}",
        "x".repeat(3 << 20)
    );
    lines.insert(3, huge.clone());
    std::fs::write(&path, lines.join("\n")).unwrap();
    let r = lake.ingest_json(&[path.to_str().unwrap()]);
    assert_invariant(&r);
    assert_eq!(
        (r["accepted"].as_u64(), r["rejected"].as_u64()),
        (Some(8), Some(1))
    );
    let q = PathBuf::from(r["quarantine"].as_str().unwrap());
    let reason = std::fs::read_to_string(q.join("reasons.ndjson")).unwrap();
    assert!(
        reason.contains("\"line\":4") && reason.contains("--max-line-bytes"),
        "{reason}"
    );
    let kept = std::fs::read_to_string(q.join("01-huge.ndjson")).unwrap();
    assert_eq!(kept.trim_end_matches('\n'), huge);
}

#[test]
fn csv_with_aliases_multiline_cells_and_bad_rows() {
    let lake = Lake::new();
    let r = lake.ingest_json(&[&testdata("events.csv")]);
    assert_invariant(&r);
    assert_eq!(
        (r["accepted"].as_u64(), r["rejected"].as_u64()),
        (Some(2), Some(2))
    );
    let rows = lake.sql_json(
        "SELECT event_id, output, attributes, prompt_version FROM llm_events ORDER BY event_id",
    );
    assert_eq!(rows[0]["output"], "multi\nline answer");
    assert_eq!(rows[0]["prompt_version"], "v1");
    let attrs: Value = serde_json::from_str(rows[0]["attributes"].as_str().unwrap()).unwrap();
    assert_eq!(attrs["region"], "eu");
    let q = PathBuf::from(r["quarantine"].as_str().unwrap());
    let kept = std::fs::read_to_string(q.join("01-events.csv")).unwrap();
    let mut kept_lines = kept.lines();
    assert!(kept_lines.next().unwrap().starts_with("event_id,ts,route"));
    assert!(kept_lines.next().unwrap().starts_with("c-3,"));
    assert!(kept_lines.next().unwrap().starts_with("c-4,"));
}

#[test]
fn labels_arrive_later_and_the_latest_wins() {
    let lake = Lake::new();
    lake.ingest_json(&[&testdata("rollup_small.ndjson")]);
    let r = lake.ingest_json(&["--labels", &testdata("labels.ndjson")]);
    assert_invariant(&r);
    assert_eq!(
        (r["accepted"].as_u64(), r["rejected"].as_u64()),
        (Some(4), Some(1))
    );
    let again = lake.ingest_json(&["--labels", &testdata("labels.ndjson")]);
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(4))
    );
    let rows =
        lake.sql_json("SELECT event_id, label, labeler FROM llm_events_labeled ORDER BY event_id");
    assert_eq!(rows[0]["label"], "bad"); // r-1: ben's later label
    assert_eq!(rows[0]["labeler"], "ben");
    assert_eq!(rows[1]["label"], "bad");
    assert!(rows[2]["label"].is_null());
    assert_eq!(rows[3]["label"], "good");
}

#[test]
fn rollup_query_matches_hand_computed_values() {
    let lake = Lake::new();
    lake.ingest_json(&[&testdata("rollup_small.ndjson")]);
    let sql = format!(
        "{}/queries/prompt_version_rollup.sql",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = lake.run(&[
        "sql",
        "-f",
        &sql,
        "--param",
        "route=support",
        "--param",
        "env=prod",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    // By hand: v1 = r-1..r-4, durations 100,200,300,400: avg 250; p95 by linear interpolation
    // at (4-1)*0.95 = 2.85 -> 300 + 0.85*100 = 385; tokens_in avg 25, tokens_out avg 2.5;
    // flagged 1 of 4. v2 (prod only) = r-5, r-6: avg 1500, p95 = 1000 + 0.95*1000 = 1950;
    // tokens_in avg 150, tokens_out avg 15, flagged 1 of 2.
    // (version, n, avg duration, p95 duration, avg tokens_in, avg tokens_out, flagged rate)
    let expected = [
        ("v1", 4, 250.0, 385.0, 25.0, 2.5, 0.25),
        ("v2", 2, 1500.0, 1950.0, 150.0, 15.0, 0.5),
    ];
    assert_eq!(rows.len(), expected.len());
    // DataFusion's percentile_cont quantizes its interpolation weight (~1e-6 relative).
    let close = |v: &Value, x: f64| (v.as_f64().unwrap() - x).abs() <= 1e-5 * x.abs().max(1.0);
    for (row, (version, n, avg, p95, tin, tout, flagged)) in rows.iter().zip(expected) {
        assert_eq!(row["prompt_version"], version);
        assert_eq!(row["n"], n);
        for (col, want) in [
            ("avg_duration_ms", avg),
            ("p95_duration_ms", p95),
            ("avg_tokens_in", tin),
            ("avg_tokens_out", tout),
            ("flagged_rate", flagged),
        ] {
            assert!(
                close(&row[col], want),
                "{version} {col}: {} != {want}",
                row[col]
            );
        }
    }
}

/// `rollup --since/--until` bounds the `date` partitions it opens by the window's days (the
/// last one is the day before an exclusive `until` at midnight): the counts are exactly those of
/// the window's timestamps, at every edge of a day.
#[test]
fn rollup_window_counts_every_event_in_it_at_day_edges() {
    let lake = Lake::new();
    let day = 86_400_000_i64;
    let d0 = 1_793_491_200_000_i64; // 2026-11-01T00:00:00Z
    // (id, ms): the last instant of day 0, midnight, mid-day 1, and the first of day 2.
    let events = [
        ("a", d0 + day / 2 - 1),
        ("b", d0 + day - 1),
        ("c", d0 + day),
        ("d", d0 + day + day / 4),
        ("e", d0 + 2 * day),
        ("f", d0 + 2 * day + 1),
    ];
    let path = lake._dir.path().join("edges.ndjson");
    let lines: Vec<String> = events
        .iter()
        .map(|(id, ms)| common::event_line(id, *ms, "v1"))
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    assert!(
        lake.run(&["ingest", path.to_str().unwrap()])
            .status
            .success()
    );
    let count = |since: &str, until: &str| -> u64 {
        let out = lake.run(&[
            "rollup", "--route", "support", "--since", since, "--until", until, "--by", "model",
            "--format", "json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        rows.iter().map(|r| r["n"].as_u64().unwrap()).sum()
    };
    // [mid-day 0, midnight of day 1): a, b. Midnight itself belongs to the next day.
    assert_eq!(count("2026-11-01T11:59:59.999Z", "2026-11-02"), 2);
    // [midnight of day 1, 06:00 on day 1]: c and d (an `until` within a day keeps that day).
    assert_eq!(count("2026-11-02", "2026-11-02T06:00:00.001Z"), 2);
    // [the last ms of day 0, the first ms of day 2]: b, c, d, e.
    assert_eq!(
        count("2026-11-01T23:59:59.999Z", "2026-11-03T00:00:00.001Z"),
        4
    );
    // Unbounded on either side.
    assert_eq!(count("2026-11-02", "2100-01-01"), 4);
    assert_eq!(count("2000-01-01", "2026-11-03"), 4);
}

#[test]
fn unreadable_input_exits_1_and_leaves_the_lake_untouched() {
    let lake = Lake::new();
    lake.ingest_json(&[&testdata("rollup_small.ndjson")]);
    let before = lake.files();
    let out = lake.run(&[
        "ingest",
        &testdata("mixed_spellings.ndjson"),
        "/no/such/file.ndjson",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/file.ndjson"));
    assert_eq!(lake.files(), before);
    let out = lake.run(&["ingest", "--strict", &testdata("malformed.ndjson")]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        lake.files(),
        before,
        "--strict adds nothing when records are rejected"
    );
    let out = lake.run(&["ingest", "--format", "xml", "x"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn stdin_and_sql_errors() {
    let lake = Lake::new();
    let mut child = bin()
        .args([
            "--lake",
            lake.path.to_str().unwrap(),
            "ingest",
            "-",
            "--json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(testdata("rollup_small.ndjson")).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["accepted"], 8);
    let out = lake.run(&["sql", "SELECT nope FROM llm_events"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
    let out = lake.run(&["sql", "DROP TABLE llm_events"]);
    assert_eq!(out.status.code(), Some(1), "user SQL is read-only");
    assert_eq!(lake.count(), 8);
}

#[test]
fn compaction_merges_files_without_changing_rows() {
    let lake = Lake::new();
    let dir = tempfile::tempdir().unwrap();
    // Three appends: below the number of small files at which ingest compacts by itself.
    for seed in 0..3 {
        let p = gen_file(
            dir.path(),
            &[
                "--events",
                "3000",
                "--days",
                "2",
                "--seed",
                &seed.to_string(),
            ],
        );
        lake.ingest_json(&[&p]);
    }
    let before = lake.sql_json("SELECT COUNT(*) AS n, COUNT(DISTINCT event_id) AS d, SUM(duration_ms) AS s FROM llm_events");
    assert_eq!(before[0]["n"], 9000);
    assert_eq!(lake.files().len(), 6);
    let index_files = || lake.live_files("llm_labeled_events").len();
    assert_eq!(
        index_files(),
        6,
        "each ingest indexed its labeled events per day"
    );
    let index_before = labeled_index(&lake);
    let out = lake.run(&["compact"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lake.files().len(), 2);
    assert_eq!(index_files(), 2);
    assert_eq!(labeled_index(&lake), index_before);
    assert_eq!(index_before.0.len() as i64, index_before.1);
    let after = lake.sql_json("SELECT COUNT(*) AS n, COUNT(DISTINCT event_id) AS d, SUM(duration_ms) AS s FROM llm_events");
    assert_eq!(before[0]["n"], after[0]["n"]);
    assert_eq!(before[0]["d"], after[0]["d"]);
    let (a, b) = (
        before[0]["s"].as_f64().unwrap(),
        after[0]["s"].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-6 * a);
}

#[test]
fn concurrent_ingests_neither_lose_nor_duplicate() {
    let lake = Lake::new();
    let dir = tempfile::tempdir().unwrap();
    let generate = |seed: &str, n: &str| {
        bin()
            .args(["gen", "--events", n, "--seed", seed])
            .output()
            .unwrap()
            .stdout
    };
    let a = dir.path().join("a.ndjson");
    let b = dir.path().join("b.ndjson");
    std::fs::write(&a, generate("7", "20000")).unwrap();
    std::fs::write(&b, generate("8", "20000")).unwrap();
    let spawn = |files: Vec<&Path>| {
        let mut c = bin();
        c.arg("--lake")
            .arg(&lake.path)
            .args(["ingest", "--json"])
            .args(files)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    // Both processes ingest an overlapping set: a+b and b+a.
    let p1 = spawn(vec![&a, &b]);
    let p2 = spawn(vec![&b, &a]);
    let r1: Value = serde_json::from_slice(&p1.wait_with_output().unwrap().stdout).unwrap();
    let r2: Value = serde_json::from_slice(&p2.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(
        r1["accepted"].as_u64().unwrap() + r2["accepted"].as_u64().unwrap(),
        40000
    );
    let rows = lake.sql_json("SELECT COUNT(*) AS n, COUNT(DISTINCT event_id) AS d FROM llm_events");
    assert_eq!(rows[0]["n"], 40000);
    assert_eq!(rows[0]["d"], 40000);
}

#[test]
fn gen_is_deterministic() {
    let run = |seed: &str| {
        bin()
            .args(["gen", "--events", "500", "--seed", seed])
            .output()
            .unwrap()
            .stdout
    };
    assert_eq!(run("3"), run("3"));
    assert_ne!(run("3"), run("4"));
    assert_eq!(String::from_utf8(run("3")).unwrap().lines().count(), 500);
}

// ---- judge -----------------------------------------------------------------------------------

/// A lake with one route's baseline v1 and canary v2 from `gen` with the given extra flags.
fn judge_lake(events: &str, extra: &[&str]) -> Lake {
    let lake = Lake::new();
    let mut args = vec![
        "gen",
        "--events",
        events,
        "--seed",
        "11",
        "--routes",
        "support",
        "--canary-share",
        "0.3",
    ];
    args.extend_from_slice(extra);
    let out = bin().args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut child = bin()
        .arg("--lake")
        .arg(&lake.path)
        .args(["ingest", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    assert!(child.wait().unwrap().success());
    lake
}

/// Runs `judge` on route `support` comparing `canary` against `baseline`, plus `extra` flags.
fn run_judge(lake: &Lake, baseline: &str, canary: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "judge",
        "--route",
        "support",
        "--baseline",
        baseline,
        "--canary",
        canary,
    ];
    args.extend_from_slice(extra);
    lake.run(&args)
}

/// The JSON a command printed, after checking it exited with `code`.
fn json_exiting(out: Output, code: i32) -> Value {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn judge(lake: &Lake, extra: &[&str]) -> (i32, Value) {
    let out = run_judge(
        lake,
        "v1",
        "v2",
        &[&["--format", "json"][..], extra].concat(),
    );
    let code = out.status.code().unwrap();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (code, doc)
}

#[test]
fn judge_promotes_a_clean_canary_only_on_evidence() {
    // 6,000 events: nothing fails, but the flagged rate cannot yet be shown within 1.5x:
    // continue, saying which rules are open and about how many events they need.
    let lake = judge_lake("6000", &[]);
    let (code, v) = judge(&lake, &[]);
    assert_eq!(code, 3, "{v:#}");
    assert!(!v["deciding"].as_array().unwrap().is_empty());
    let open: Vec<&Value> = v["overall"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["verdict"] == "inconclusive" && r["abort_only"] == false)
        .collect();
    assert!(!open.is_empty(), "{v:#}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("not yet shown within")
    );

    // More volume: every gating rule is shown within its threshold on the estimates stratified
    // over gen's nine segments, each material segment measures each rule to within half its
    // threshold (gen's flagged rates of 1-2% make that the slowest), and the small segments do
    // not hold it. Judge v2, which required every percentile in every segment, needed 300,000.
    let lake = judge_lake("200000", &[]);
    let (code, v) = judge(&lake, &[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["verdict"], "promote");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["schema_version"], 3);
    let minor: Vec<&Value> = v["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["material"] == false)
        .collect();
    assert!(!minor.is_empty(), "gen has minor segments: {v:#}");
    assert_eq!(v["clustered"], true, "gen's events carry unit_id");
    for r in v["overall"].as_array().unwrap() {
        if r["abort_only"] == false {
            assert_eq!(r["verdict"], "pass", "{r:#}");
            assert!(r["ci_high"].as_f64().unwrap() <= r["threshold"].as_f64().unwrap());
        }
    }
    // The abort-only bad-label rule is reported as not proven.
    assert!(
        v["unproven"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u.as_str().unwrap().contains("bad_label_rate (abort-only)")),
        "{v:#}"
    );
    let seg = &v["segments"][0];
    for k in [
        "n_baseline",
        "n_canary",
        "share",
        "material",
        "verdict",
        "rules",
        "key",
    ] {
        assert!(!seg[k].is_null(), "segment lacks {k}");
    }
    for k in [
        "rule",
        "test",
        "n_baseline",
        "n_canary",
        "baseline",
        "canary",
        "ratio",
        "ci_low",
        "ci_low_level",
        "ci_high",
        "ci_high_level",
        "threshold",
        "abort_above",
        "past_threshold",
        "p_value",
        "p_adjusted",
        "verdict",
        "reason",
    ] {
        assert!(seg["rules"][0].get(k).is_some(), "rule lacks {k}");
    }
}

#[test]
fn judge_aborts_a_regression() {
    let lake = judge_lake("60000", &["--regress-latency", "1.6"]);
    let (code, v) = judge(&lake, &[]);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(v["verdict"], "abort");
    let failed: Vec<&Value> = v["segments"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["rules"].as_array().unwrap())
        .filter(|r| r["verdict"] == "fail")
        .collect();
    assert!(
        failed.iter().all(|r| r["rule"] == "p95_duration_ms"),
        "{failed:?}"
    );
    assert!(!failed.is_empty());
}

#[test]
fn judge_continues_on_low_volume_and_flags_invalid_comparisons() {
    let lake = judge_lake("1500", &[]);
    let (code, v) = judge(&lake, &[]);
    assert_eq!(code, 3, "{v:#}");
    assert_eq!(v["verdict"], "continue");
    assert!(
        v["reason"].as_str().unwrap().contains("more canary"),
        "{v:#}"
    );

    // Sample-ratio mismatch: the canary got ~30% of the units but 5% was planned. gen's events
    // carry unit_id, so distinct units are counted, and a mismatch is invalid.
    let (code, v) = judge(&lake, &["--expected-share", "0.05"]);
    assert_eq!(code, 4, "{v:#}");
    assert_eq!(v["srm"]["basis"], "units");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("sample-ratio mismatch")
    );

    // No events for the canary version.
    let out = run_judge(&lake, "v1", "v9", &[]);
    assert_eq!(out.status.code(), Some(4));

    // Usage errors are 2, never 1 (1 means abort).
    let out = run_judge(&lake, "v1", "v1", &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = lake.run(&["judge", "--route", "support"]);
    assert_eq!(out.status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, "min_events = 'many'\n").unwrap();
    let out = run_judge(&lake, "v1", "v2", &["--policy", policy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("min_events"));
}

#[test]
fn judge_detects_two_shas_for_one_version_and_handles_quoted_names() {
    let lake = Lake::new();
    lake.ingest_json(&[&testdata("mixed_spellings.ndjson")]);
    let extra = r#"{"event_id":"q-2","ts":"2026-11-21T08:00:01Z","route":"it's \"quoted\"","env":"prod","model":"gpt-4o-mini","tier":"free","prompt_version":"v'2","duration_ms":10,"tokens_in":1,"tokens_out":1,"status":"ok"}"#;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("q.ndjson");
    std::fs::write(&p, extra).unwrap();
    lake.ingest_json(&[p.to_str().unwrap()]);
    let route = [
        "--route",
        "it's \"quoted\"",
        "--baseline",
        "v'1",
        "--canary",
        "v'2",
        "--format",
        "json",
    ];
    let v = json_exiting(lake.run(&[&["judge"][..], &route].concat()), 4);
    assert_eq!(v["n_canary"], 1);
    assert_eq!(
        v["n_baseline"], 0,
        "the baseline event is outside the canary's window"
    );
    // --since alone does not widen the baseline's window past the canary's span: both arms
    // are still compared over the time the canary ran.
    let v = json_exiting(
        lake.run(&[&["judge", "--since", "2026-11-01"][..], &route].concat()),
        4,
    );
    assert_eq!(
        (v["n_baseline"].as_u64(), v["n_canary"].as_u64()),
        (Some(0), Some(1))
    );

    // Within the canary's span (its one event at 10:02), v1 on route support shows up with
    // two different shas.
    let two = [
        r#"{"event_id":"s-8","ts":"2026-11-20T10:02:00Z","route":"support","env":"prod","model":"claude-3-5-haiku","tier":"pro","prompt_version":"v1","prompt_sha":"aaa111","duration_ms":10,"tokens_in":1,"tokens_out":1,"status":"ok"}"#,
        r#"{"event_id":"s-9","ts":"2026-11-20T10:02:00Z","route":"support","env":"prod","model":"claude-3-5-haiku","tier":"pro","prompt_version":"v1","prompt_sha":"bbb222","duration_ms":10,"tokens_in":1,"tokens_out":1,"status":"ok"}"#,
    ]
    .join("\n");
    std::fs::write(&p, two).unwrap();
    lake.ingest_json(&[p.to_str().unwrap()]);
    let v = json_exiting(run_judge(&lake, "v1", "v2", &["--format", "json"]), 4);
    assert!(v["reason"].as_str().unwrap().contains("prompt_sha"));
}

#[test]
fn judge_markdown_and_default_policy() {
    let text = judge_default_policy();
    assert!(text.contains("min_events = 200") && text.contains("early_abort_alpha = 0.001"));
    let lake = judge_lake("3000", &[]);
    let out = run_judge(&lake, "v1", "v2", &["--format", "markdown"]);
    let md = String::from_utf8(out.stdout).unwrap();
    assert!(md.starts_with("### "), "{md}");
    // The decision first, one table of the rules that decided it with what would settle each,
    // then everything else folded away; no bullet list repeating the table.
    let decided = md.find("| decided by | where |").expect("deciding rules");
    let details = md.find("<details>").expect("a collapsed block");
    assert!(decided < details, "{md}");
    assert!(!md[..details].contains("- **"), "{md}");
    assert!(md.contains("| where | rule |"));
    assert!(!md.contains("2683.8999"), "numbers are rounded for people");
}

/// An independent reader (DuckDB, from PyPI; `./dev test` installs it) reads the files the lake's
/// latest version lists (`lake files`; replaced files still lie beside them after a compaction)
/// as a Hive-partitioned dataset, with the same row count, and computes the same rollup.
#[test]
fn duckdb_reads_the_lake_and_agrees_on_the_rollup() {
    let lake = Lake::new();
    let out = bin()
        .args(["gen", "--events", "20000", "--seed", "5", "--days", "3"])
        .output()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // In two halves, then compacted: the halves' files stay on disk beside the merged ones.
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for (i, half) in lines.chunks(lines.len() / 2).enumerate() {
        let p = dir.path().join(format!("e{i}.ndjson"));
        std::fs::write(&p, half.join("\n") + "\n").unwrap();
        lake.ingest_json(&[p.to_str().unwrap()]);
    }
    lake.ingest_json(&["--labels", &testdata("labels.ndjson")]);
    assert!(lake.run(&["compact"]).status.success());
    let files: Vec<String> = String::from_utf8(
        lake.run(&["lake", "files", "--table", "llm_events", "--json"])
            .stdout,
    )
    .unwrap()
    .lines()
    .map(|l| {
        let v: Value = serde_json::from_str(l).unwrap();
        lake.path
            .join(v["path"].as_str().unwrap())
            .display()
            .to_string()
    })
    .collect();
    assert_eq!(files.len(), 3, "one file a day after compaction");
    let ours = lake.sql_json(
        "SELECT prompt_version, COUNT(*) AS n, AVG(duration_ms) AS avg_d, \
         percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_d, \
         AVG(CASE WHEN status = 'flagged' THEN 1 ELSE 0 END) AS flagged \
         FROM llm_events WHERE route = 'support' AND env = 'prod' GROUP BY prompt_version ORDER BY n DESC",
    );
    let script = r#"
import duckdb, json, sys
c = duckdb.connect()
src = f"read_parquet({json.loads(sys.argv[1])}, hive_partitioning=true)"
total = c.execute(f"SELECT COUNT(*), COUNT(DISTINCT date) FROM {src}").fetchone()
rows = c.execute(f"""SELECT prompt_version, COUNT(*), AVG(duration_ms), quantile_cont(duration_ms, 0.95),
    AVG(CASE WHEN status = 'flagged' THEN 1 ELSE 0 END)
    FROM {src} WHERE route = 'support' AND env = 'prod' GROUP BY 1 ORDER BY 2 DESC""").fetchall()
print(json.dumps({"total": total[0], "days": total[1], "rows": rows}))
"#;
    common::require_python("duckdb");
    let out = common::python()
        .arg("-c")
        .arg(script)
        .arg(serde_json::to_string(&files).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "duckdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let duck: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(duck["total"], 20000);
    assert_eq!(duck["days"], 3);
    let rows = duck["rows"].as_array().unwrap();
    assert_eq!(rows.len(), ours.len());
    for (d, o) in rows.iter().zip(&ours) {
        assert_eq!(d[0], o["prompt_version"]);
        assert_eq!(d[1], o["n"]);
        let rel = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b.abs().max(1.0);
        assert!(rel(d[2].as_f64().unwrap(), o["avg_d"].as_f64().unwrap()));
        // percentile_cont's interpolation weight is quantized in DataFusion (~1e-6 relative)
        assert!(
            rel(d[3].as_f64().unwrap(), o["p95_d"].as_f64().unwrap()),
            "{} vs {}",
            d[3],
            o["p95_d"]
        );
        assert!(rel(d[4].as_f64().unwrap(), o["flagged"].as_f64().unwrap()));
    }
}

#[test]
fn empty_inputs_and_empty_results_are_well_formed() {
    let lake = Lake::new();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("blank.ndjson");
    std::fs::write(&p, "\n  \n\r\n").unwrap();
    let r = lake.ingest_json(&[p.to_str().unwrap()]);
    assert_eq!(
        (r["read"].as_u64(), r["accepted"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(lake.sql_json("SELECT * FROM llm_events").is_empty());
    let out = lake.run(&["sql", "SELECT event_id FROM llm_events", "--format", "csv"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "event_id");
}

#[test]
fn gzip_inputs_are_read_and_a_corrupt_one_changes_nothing() {
    use std::io::Write;
    let lake = Lake::new();
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("events.ndjson.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&std::fs::read(testdata("rollup_small.ndjson")).unwrap())
        .unwrap();
    let bytes = enc.finish().unwrap();
    std::fs::write(&gz, &bytes).unwrap();
    let csv_gz = dir.path().join("events.csv.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&std::fs::read(testdata("events.csv")).unwrap())
        .unwrap();
    std::fs::write(&csv_gz, enc.finish().unwrap()).unwrap();
    let r = lake.ingest_json(&[gz.to_str().unwrap(), csv_gz.to_str().unwrap()]);
    assert_invariant(&r);
    assert_eq!(
        (r["accepted"].as_u64(), r["rejected"].as_u64()),
        (Some(10), Some(2))
    );

    let before = lake.files();
    let broken = dir.path().join("broken.ndjson.gz");
    let mut cut = bytes[..bytes.len() / 2].to_vec();
    cut.extend_from_slice(b"garbage");
    std::fs::write(&broken, cut).unwrap();
    let out = lake.run(&["ingest", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken.ndjson.gz"));
    assert_eq!(lake.files(), before);
}

/// Event ids in the labeled-events index, and how many of them agree with their event on every
/// indexed column.
fn labeled_index(lake: &Lake) -> (Vec<String>, i64) {
    let ids = lake
        .sql_json("SELECT event_id FROM llm_labeled_events ORDER BY event_id")
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_string())
        .collect();
    let agree = lake.sql_json(
        "SELECT COUNT(*) AS n FROM llm_labeled_events x JOIN llm_events e USING (event_id) \
         WHERE x.ts = e.ts AND x.route = e.route AND x.env = e.env AND x.model = e.model \
         AND x.tier = e.tier AND x.prompt_version = e.prompt_version AND x.status = e.status \
         AND x.date = e.date AND x.prompt_sha IS NOT DISTINCT FROM e.prompt_sha",
    )[0]["n"]
        .as_i64()
        .unwrap();
    (ids, agree)
}

#[test]
fn labeled_events_index_is_the_same_whatever_arrives_first() {
    let expected: Vec<String> = ["r-1", "r-2", "r-4"].map(String::from).to_vec();
    // Labels first: the index starts empty, the events fill it.
    let a = Lake::new();
    let r = a.ingest_json(&["--labels", &testdata("labels.ndjson")]);
    assert!(r.get("labeled_events_indexed").is_none(), "{r}");
    assert!(a.path.join("llm_labeled_events").is_dir());
    let r = a.ingest_json(&[&testdata("rollup_small.ndjson")]);
    assert_eq!(r["labeled_events_indexed"], 3, "{r}");
    // Events first: the labels find them in the lake.
    let b = Lake::new();
    b.ingest_json(&[&testdata("rollup_small.ndjson")]);
    let r = b.ingest_json(&["--labels", &testdata("labels.ndjson")]);
    assert_eq!(r["labeled_events_indexed"], 3, "{r}");
    // Labels again, and events again: nothing new to index.
    let r = b.ingest_json(&["--labels", &testdata("labels.ndjson")]);
    assert!(r.get("labeled_events_indexed").is_none(), "{r}");
    let r = b.ingest_json(&[&testdata("rollup_small.ndjson")]);
    assert!(r.get("labeled_events_indexed").is_none(), "{r}");
    for lake in [&a, &b] {
        assert_eq!(labeled_index(lake), (expected.clone(), 3));
    }
}

/// The judge's label counts come from the index; without one (a lake written before it
/// existed) they come from joining labels to every event. Both give the same verdict, equal to
/// the bad-label rates SQL computes over `llm_events_labeled`, and the next ingest builds the
/// missing index.
#[test]
fn judge_counts_labels_from_the_index_or_the_events_alike() {
    let lake = judge_lake("60000", &[]);
    let window = ["--since", "2000-01-01", "--until", "2100-01-01"];
    let (_, with_index) = judge(&lake, &window);
    let sql = lake.sql_json(
        "SELECT model, tier, prompt_version AS v, \
         SUM(CASE WHEN label = 'bad' THEN 1.0 ELSE 0.0 END) / COUNT(label) AS rate, \
         COUNT(label) AS labeled \
         FROM llm_events_labeled WHERE route = 'support' AND prompt_version IN ('v1', 'v2') \
         GROUP BY model, tier, prompt_version",
    );
    let mut checked = 0;
    for seg in with_index["segments"].as_array().unwrap() {
        let rule = seg["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["rule"] == "bad_label_rate")
            .expect("default policy has a bad-label rule");
        for (arm, v) in [("baseline", "v1"), ("canary", "v2")] {
            let row = sql
                .iter()
                .find(|r| {
                    r["model"] == seg["key"]["model"]
                        && r["tier"] == seg["key"]["tier"]
                        && r["v"] == v
                })
                .expect("segment in SQL");
            if row["labeled"].as_i64().unwrap() == 0 {
                continue;
            }
            let (judge, sql) = (rule[arm].as_f64().unwrap(), row["rate"].as_f64().unwrap());
            assert!(
                (judge - sql).abs() < 1e-12,
                "{seg:#} {arm}: {judge} vs {sql}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} arms had labels");

    // A lake of the layout before Delta Lake and before the index (no logs, no index): read
    // from its directories, labels joined to events.
    for d in [
        "_promptgate",
        "llm_events/_delta_log",
        "llm_labels/_delta_log",
        "llm_labeled_events",
    ] {
        std::fs::remove_dir_all(lake.path.join(d)).unwrap();
    }
    let (_, without_index) = judge(&lake, &window);
    assert_eq!(with_index, without_index);

    let empty = lake.path.parent().unwrap().join("empty.ndjson");
    std::fs::write(&empty, "").unwrap();
    let r = lake.ingest_json(&[empty.to_str().unwrap()]);
    let labeled = lake.sql_json(
        "SELECT COUNT(DISTINCT l.event_id) AS n FROM llm_labels l JOIN llm_events e USING (event_id)",
    )[0]["n"]
        .as_i64()
        .unwrap();
    assert_eq!(r["labeled_events_indexed"].as_i64(), Some(labeled), "{r}");
    let (ids, agree) = labeled_index(&lake);
    assert_eq!((ids.len() as i64, agree), (labeled, labeled));
    let (_, rebuilt) = judge(&lake, &window);
    assert_eq!(with_index, rebuilt);
}

/// Segmenting by more columns (including the date partition) splits the same events and labels
/// into more segments; segmenting by prompt_sha, which differs between the versions by
/// definition, is refused with the reason.
#[test]
fn judge_segments_by_any_allowed_columns_without_losing_events() {
    let lake = judge_lake("20000", &[]);
    let dir = tempfile::tempdir().unwrap();
    let totals = |segment_by: &str| {
        let policy = dir.path().join("policy.toml");
        let text = judge_default_policy().replace("segment_by = [\"model\", \"tier\"]", segment_by);
        std::fs::write(&policy, text).unwrap();
        let (code, v) = judge(&lake, &["--policy", policy.to_str().unwrap()]);
        assert!([0, 1, 3].contains(&code), "{code}: {v:#}");
        let segs = v["segments"].as_array().unwrap();
        let sum = |f: &dyn Fn(&Value) -> u64| segs.iter().map(f).sum::<u64>();
        let labeled = |s: &Value| {
            s["rules"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["rule"] == "bad_label_rate")
                .map(|r| r["n_baseline"].as_u64().unwrap() + r["n_canary"].as_u64().unwrap())
                .sum::<u64>()
        };
        (
            segs.len(),
            sum(&|s| s["n_baseline"].as_u64().unwrap()),
            sum(&|s| s["n_canary"].as_u64().unwrap()),
            sum(&labeled),
        )
    };
    let two = totals("segment_by = [\"model\", \"tier\"]");
    let four = totals("segment_by = [\"model\", \"tier\", \"date\", \"env\"]");
    let none = totals("segment_by = []");
    assert!(
        four.0 > two.0 && two.0 > none.0 && none.0 == 1,
        "{none:?} {two:?} {four:?}"
    );
    assert_eq!((two.1, two.2, two.3), (four.1, four.2, four.3));
    assert_eq!((two.1, two.2, two.3), (none.1, none.2, none.3));
    assert!(two.3 > 0, "the lake has labeled events");
    let policy = dir.path().join("sha.toml");
    let text = judge_default_policy().replace(
        "segment_by = [\"model\", \"tier\"]",
        "segment_by = [\"model\", \"prompt_sha\"]",
    );
    std::fs::write(&policy, text).unwrap();
    let out = run_judge(&lake, "v1", "v2", &["--policy", policy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("differ in it by definition"));
}

fn judge_default_policy() -> String {
    let out = bin()
        .args(["judge", "--print-default-policy"])
        .output()
        .unwrap();
    assert!(out.status.success());
    // The same with the lake given through the environment (clap must not count it as an
    // argument that conflicts with --print-default-policy).
    let with_env = bin()
        .args(["judge", "--print-default-policy"])
        .env("PROMPTGATE_LAKE", "/nonexistent/lake")
        .output()
        .unwrap();
    assert!(
        with_env.status.success(),
        "{}",
        String::from_utf8_lossy(&with_env.stderr)
    );
    assert_eq!(with_env.stdout, out.stdout);
    String::from_utf8(out.stdout).unwrap()
}

/// Ingest checks new ids against each file's id hashes and reads only the files that may hold
/// one. Files without (or with stale) id hashes are read in full, so duplicates are still
/// caught; compaction writes the merged file's hashes.
#[test]
fn duplicates_are_caught_with_or_without_id_hash_files() {
    let lake = Lake::new();
    let dir = tempfile::tempdir().unwrap();
    let mut inputs = Vec::new();
    for seed in 0..2 {
        inputs.push(gen_file(
            dir.path(),
            &[
                "--events",
                "2000",
                "--days",
                "2",
                "--seed",
                &seed.to_string(),
            ],
        ));
    }
    lake.ingest_json(&[&inputs[0]]);
    let expected_hashes = |lake: &Lake| {
        lake.files()
            .iter()
            .map(|f| f.with_file_name(format!(".{}.ids", f.file_name().unwrap().to_string_lossy())))
            .collect::<Vec<_>>()
    };
    assert_eq!(lake.id_hash_files(), expected_hashes(&lake));
    // With id hashes: the second file is new, the first is all duplicates.
    let r = lake.ingest_json(&[&inputs[1], &inputs[0]]);
    assert_eq!(
        (r["accepted"].as_u64(), r["duplicates"].as_u64()),
        (Some(2000), Some(2000))
    );
    // Without them (a lake from before they existed), and with one that no longer matches its
    // file: every file is read, and nothing gets in twice.
    let hashes = lake.id_hash_files();
    std::fs::write(&hashes[0], b"PGIDS\0\0\x01 not a real id-hash file").unwrap();
    for h in &hashes[1..] {
        std::fs::remove_file(h).unwrap();
    }
    let r = lake.ingest_json(&[&inputs[0], &inputs[1]]);
    assert_eq!(
        (r["accepted"].as_u64(), r["duplicates"].as_u64()),
        (Some(0), Some(4000))
    );
    assert_eq!(lake.count(), 4000);
    // Compaction writes hashes for the merged files, and they are used.
    assert!(lake.run(&["compact"]).status.success());
    assert!(expected_hashes(&lake).iter().all(|h| h.exists()));
    let r = lake.ingest_json(&[&inputs[1]]);
    assert_eq!(
        (r["accepted"].as_u64(), r["duplicates"].as_u64()),
        (Some(0), Some(2000))
    );
    assert_eq!(lake.count(), 4000);
    // A file whose hashes rule out every new id is not read at all: overwrite the lake's files
    // with zeros of the same length (so their hashes still apply) and ingest new events.
    for f in lake.files() {
        let len = std::fs::metadata(&f).unwrap().len() as usize;
        std::fs::write(&f, vec![0u8; len]).unwrap();
    }
    let p = gen_file(
        dir.path(),
        &["--events", "500", "--days", "2", "--seed", "99"],
    );
    let r = lake.ingest_json(&[&p]);
    assert_eq!(
        (r["accepted"].as_u64(), r["duplicates"].as_u64()),
        (Some(500), Some(0))
    );
}

/// Runs `sql` with `args` and a 64 MiB memory pool, reading its stdout as it comes without
/// keeping it: (exit code, bytes, records, the process's peak RSS in MiB). Records are lines,
/// or objects (`{`) for the one-line JSON array.
// The child is waited for with wait4 (for its own rusage), which clippy does not see.
#[allow(clippy::zombie_processes)]
fn sql_streamed(lake: &Lake, args: &[&str]) -> (i32, u64, u64, u64) {
    use std::io::Read;
    let mut child = bin()
        .arg("--lake")
        .arg(&lake.path)
        .arg("sql")
        .args(args)
        .env("PROMPTGATE_MEMORY_MIB", "64")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let (mut bytes, mut lines) = (0u64, 0u64);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        bytes += n as u64;
        let mark = if args.contains(&"json") { b'{' } else { b'\n' };
        lines += buf[..n].iter().filter(|&&b| b == mark).count() as u64;
    }
    // wait4 gives this child's own peak RSS (getrusage of all children would mix in others).
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, writing its status and usage.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    };
    (code, bytes, lines, usage.ru_maxrss as u64 / 1024)
}

/// Every output format streams: 600 MB of output (60,000 rows of 10 KB) print through a 64 MiB
/// pool with the process's peak memory close to CSV's (which always streamed), where collecting
/// the result first (as the table and the JSON array did) holds all of it at once.
#[test]
fn query_output_of_any_size_streams_in_every_format() {
    let lake = Lake::new();
    let dir = lake.path.parent().unwrap().to_path_buf();
    let events = gen_file(&dir, &["--events", "60000", "--days", "3", "--seed", "9"]);
    lake.ingest_json(&[&events]);
    let query = "SELECT event_id, repeat('x', 10000) AS big FROM llm_events";
    let mut peaks = Vec::new();
    for format in ["table", "json", "ndjson", "csv"] {
        let (code, bytes, lines, peak_mib) = sql_streamed(&lake, &[query, "--format", format]);
        assert_eq!(code, 0, "{format}");
        assert!(bytes > 600_000_000, "{format}: {bytes} bytes");
        // Every row is there: one line (one object) each, plus headers and borders.
        assert!(lines >= 60_000, "{format}: {lines} records");
        peaks.push((format, peak_mib, bytes / 1_000_000));
    }
    eprintln!("peak RSS (MiB) and output (MB) by format: {peaks:?}");
    // CSV always streamed: every format now stays within 1.3x of its peak (what remains is
    // DataFusion's batches in flight, 8,192 rows of 10 KB each, the same for every format).
    let csv_peak = peaks[3].1;
    for (format, peak_mib, mb) in peaks {
        assert!(
            (peak_mib as f64) < 1.3 * csv_peak as f64,
            "{format}: peak RSS {peak_mib} MiB for {mb} MB of output (CSV: {csv_peak} MiB)"
        );
    }
}

/// A query with nothing to account memory for runs until it is stopped: `--timeout` stops it
/// (exit 1, saying so), and so does Ctrl-C, at once.
#[test]
fn a_query_that_would_run_forever_is_stopped() {
    let lake = Lake::new();
    lake.ingest_json(&[&testdata("rollup_small.ndjson")]);
    let forever = "SELECT COUNT(*) FROM generate_series(1, 1000000000000)";
    let start = std::time::Instant::now();
    let out = lake.run(&["sql", forever, "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("timeout"), "{err}");
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
    let mut cmd = bin();
    cmd.arg("--lake")
        .arg(&lake.path)
        .args(["sql", forever])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Ctrl-C's default action, as a terminal gives it: a test run started in the background of
    // a non-interactive shell inherits SIGINT ignored, and a CLI rightly keeps that.
    // SAFETY: signal() is async-signal-safe, as pre_exec requires.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let status = common::signal_and_wait(
        &mut child,
        libc::SIGINT,
        std::time::Duration::from_secs(5),
        "sql stops at once on Ctrl-C",
    );
    assert!(!status.success());
}
