//! Ingest limits and robustness: CSV streamed with the same limits as NDJSON (huge cells and
//! rows, broken quotes, CRLF), quarantine files fit to re-ingest, a cap on what one line may
//! spill, and user SQL inside a memory pool. The real binary, as a user runs it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// The binary under test; `PROMPTGATE_TEST_BIN` overrides cargo's (when several worktrees share
/// one target directory, cargo's path may hold another worktree's build by the time tests run).
fn bin() -> Command {
    Command::new(test_bin())
}

fn test_bin() -> std::ffi::OsString {
    std::env::var_os("PROMPTGATE_TEST_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_promptgate").into())
}

fn run(lake: &Path, args: &[&str]) -> Output {
    bin().arg("--lake").arg(lake).args(args).output().unwrap()
}

fn ingest(lake: &Path, args: &[&str]) -> Value {
    let mut a = vec!["ingest", "--json", "--no-progress"];
    a.extend_from_slice(args);
    let out = run(lake, &a);
    assert!(
        out.status.success(),
        "ingest failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn counts(r: &Value) -> (u64, u64, u64, u64) {
    let n = |k: &str| r[k].as_u64().unwrap();
    (n("read"), n("accepted"), n("duplicates"), n("rejected"))
}

/// (line, reason) of each entry of the quarantine's reasons.ndjson, and the quarantined files.
fn quarantine(r: &Value) -> (Vec<(u64, String)>, Vec<PathBuf>) {
    let dir = PathBuf::from(r["quarantine"].as_str().expect("a quarantine"));
    let reasons = std::fs::read_to_string(dir.join("reasons.ndjson")).unwrap();
    let reasons = reasons
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["line"].as_u64().unwrap(),
                v["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with("reasons.ndjson"))
        .collect();
    files.sort();
    (reasons, files)
}

const HEADER: &str =
    "event_id,ts,route,env,model,prompt_version,duration_ms,tokens_in,tokens_out,status,input";

fn csv_row(i: usize, input: &str) -> String {
    format!("e{i},2026-11-02T10:00:00Z,support,prod,m,v1,12.5,3,4,ok,{input}")
}

/// Rows of 34 KB each used to land in one batch of 64K rows and overflow Arrow's 2 GiB string
/// offsets (a panic). Streamed in chunks, every row is kept, byte for byte.
#[test]
fn csv_gz_with_large_rows_is_streamed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.csv.gz");
    let cell = "x".repeat(34 * 1024);
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::fast(),
    );
    writeln!(gz, "{HEADER}").unwrap();
    for i in 0..8_000 {
        writeln!(gz, "{}", csv_row(i, &cell)).unwrap();
    }
    gz.finish().unwrap();
    let lake = dir.path().join("lake");
    let r = ingest(&lake, &[path.to_str().unwrap()]);
    assert_eq!(counts(&r), (8_000, 8_000, 0, 0));
    let out = run(
        &lake,
        &[
            "sql",
            "SELECT COUNT(*) AS n, MIN(length(input)) AS lo, MAX(length(input)) AS hi FROM llm_events",
            "--format",
            "json",
        ],
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["n"], 8_000);
    assert_eq!(
        (v[0]["lo"].as_u64(), v[0]["hi"].as_u64()),
        (Some(34 * 1024), Some(34 * 1024))
    );
}

/// A cell over --max-line-bytes, on one line or quoted over many, is rejected with the limit in
/// the reason and quarantined in full; the rows around it are kept.
#[test]
fn csv_huge_cells_and_records_are_rejected_and_kept_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.csv");
    let one_line = "y".repeat(3 << 20);
    // 200 lines of 10 KB inside one quoted cell: a 2 MB record.
    let many_lines: Vec<String> = (0..200).map(|_| "z".repeat(10_000)).collect();
    let many_lines = many_lines.join("\n");
    let text = format!(
        "{HEADER}\n{}\n{}\n{}\n{}\n",
        csv_row(1, "small"),
        csv_row(2, &one_line),
        csv_row(3, &format!("\"{many_lines}\"")),
        csv_row(4, "after")
    );
    std::fs::write(&path, &text).unwrap();
    let lake = dir.path().join("lake");
    let r = ingest(&lake, &[path.to_str().unwrap()]);
    let (read, accepted, dup, rejected) = counts(&r);
    assert_eq!((accepted, dup), (2, 0));
    assert_eq!(read, accepted + rejected);
    let (reasons, files) = quarantine(&r);
    assert_eq!(reasons[0].0, 3, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|(line, reason)| *line == 3
                && reason.contains("longer than the 1048576-byte limit"))
    );
    assert!(reasons.iter().any(|(line, reason)| *line == 4
        && reason.contains("does not close within the 1048576-byte limit")));
    // Every byte of the rejected records is in the quarantine, under the header.
    let kept = std::fs::read_to_string(&files[0]).unwrap();
    assert!(kept.starts_with(&format!("{HEADER}\n")));
    assert_eq!(
        kept.len(),
        text.len() - csv_row(1, "small").len() - csv_row(4, "after").len() - 2
    );
    let out = run(
        &lake,
        &[
            "sql",
            "SELECT event_id FROM llm_events ORDER BY 1",
            "--format",
            "csv",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "event_id\ne1\ne4\n");
}

/// A stray quote on row 2 of a long file costs that row, not the rest of the file.
#[test]
fn csv_stray_quote_costs_only_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stray.csv");
    let mut text = format!("{HEADER}\n");
    text.push_str(&csv_row(0, "\"unclosed, oops"));
    text.push('\n');
    for i in 1..5_000 {
        text.push_str(&csv_row(
            i,
            if i % 7 == 0 {
                "\"quoted, fine\""
            } else {
                "plain"
            },
        ));
        text.push('\n');
    }
    std::fs::write(&path, &text).unwrap();
    let lake = dir.path().join("lake");
    let r = ingest(&lake, &[path.to_str().unwrap()]);
    assert_eq!(counts(&r), (5_000, 4_999, 0, 1));
    let (reasons, _) = quarantine(&r);
    assert_eq!(reasons.len(), 1);
    assert_eq!(reasons[0].0, 2);
    assert!(
        reasons[0].1.contains("quoted cell opened on this line"),
        "{reasons:?}"
    );
}

/// CRLF CSV: a reject is reported on its own line and quarantined byte for byte, CRs included.
#[test]
fn csv_crlf_rejects_are_on_the_right_line_and_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crlf.csv");
    let bad = "e2,2026-11-02T10:00:00Z,support,prod,m,v1,-1,3,4,ok,x";
    let text = format!(
        "{HEADER}\r\n{}\r\n{bad}\r\n{}\r\n",
        csv_row(1, "a"),
        csv_row(3, "\"multi\r\nline\"")
    );
    std::fs::write(&path, &text).unwrap();
    let lake = dir.path().join("lake");
    let r = ingest(&lake, &[path.to_str().unwrap()]);
    assert_eq!(counts(&r), (3, 2, 0, 1));
    let (reasons, files) = quarantine(&r);
    assert_eq!(reasons.len(), 1);
    assert_eq!(reasons[0].0, 3);
    assert_eq!(
        std::fs::read(&files[0]).unwrap(),
        format!("{HEADER}\r\n{bad}\r\n").into_bytes()
    );
    let out = run(
        &lake,
        &[
            "sql",
            "SELECT input FROM llm_events WHERE event_id = 'e3'",
            "--format",
            "csv",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "input\n\"multi\r\nline\"\n"
    );
}

/// A gzipped source's quarantine copy is plain text under the name without `.gz`, so it can be
/// ingested again as it is.
#[test]
fn quarantine_of_a_gz_source_can_be_reingested() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.ndjson.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::fast(),
    );
    let good = r#"{"event_id":"g","ts":"2026-11-02T10:00:00Z","route":"r","env":"prod","model":"m","prompt_version":"v1","duration_ms":1,"tokens_in":1,"tokens_out":1,"status":"ok"}"#;
    let bad = good
        .replace(r#""status":"ok""#, r#""status":"done""#)
        .replace("\"g\"", "\"b\"");
    writeln!(gz, "{good}\n{bad}").unwrap();
    gz.finish().unwrap();
    let lake = dir.path().join("lake");
    let r = ingest(&lake, &[path.to_str().unwrap()]);
    assert_eq!(counts(&r), (2, 1, 0, 1));
    let (_, files) = quarantine(&r);
    assert_eq!(files.len(), 1);
    assert!(
        files[0].to_str().unwrap().ends_with("01-events.ndjson"),
        "{files:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&files[0]).unwrap(),
        format!("{bad}\n")
    );
    // Fixed by hand and re-ingested as it is.
    let fixed = std::fs::read_to_string(&files[0])
        .unwrap()
        .replace("done", "ok");
    std::fs::write(&files[0], fixed).unwrap();
    let again = ingest(&lake, &[files[0].to_str().unwrap()]);
    assert_eq!(counts(&again), (1, 1, 0, 0));
}

/// Input without line breaks cannot fill the disk: the source is refused past 4 GiB on one
/// line (of at most 5 GiB fed here), nothing is committed and staging is left empty.
#[test]
fn endless_line_is_refused_without_filling_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let mut child = bin()
        .arg("--lake")
        .arg(&lake)
        .args(["ingest", "--no-progress", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let zeros = vec![0u8; 1 << 20];
        let mut sent = 0u64;
        // Stops when the ingest gives up and closes the pipe.
        while sent < 5 << 30 && stdin.write_all(&zeros).is_ok() {
            sent += zeros.len() as u64;
        }
        sent
    });
    let out = child.wait_with_output().unwrap();
    let sent = feeder.join().unwrap();
    assert!(sent < 5 << 30, "the ingest read all {sent} bytes");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 1 runs past 4 GiB without a line break"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(lake.join("_staging")).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_dir(lake.join("quarantine")).unwrap().count(),
        0
    );
}

/// Token counts past the documented maximum are rejected as too large, so SUM cannot wrap.
#[test]
fn token_counts_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.ndjson");
    let line = |id: &str, t: &str| {
        format!(
            r#"{{"event_id":"{id}","ts":"2026-11-02T10:00:00Z","route":"r","env":"prod","model":"m","prompt_version":"v1","duration_ms":1,"tokens_in":{t},"tokens_out":1,"status":"ok"}}"#
        )
    };
    std::fs::write(
        &path,
        [
            line("a", "1000000000"),
            line("b", "9223372036854775807"),
            line("c", "1000000000"),
        ]
        .join("\n"),
    )
    .unwrap();
    let lake = dir.path().join("lake");
    let r = ingest(&lake, &[path.to_str().unwrap()]);
    assert_eq!(counts(&r), (3, 2, 0, 1));
    let (reasons, _) = quarantine(&r);
    assert_eq!(
        reasons[0].1,
        "`tokens_in` 9223372036854775807 is too large (at most 1000000000)"
    );
    let out = run(
        &lake,
        &[
            "sql",
            "SELECT SUM(tokens_in) AS s FROM llm_events",
            "--format",
            "csv",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "s\n2000000000\n");
}

/// A query that needs more memory than its pool and cannot spill fails with exit 1 and a hint.
#[test]
fn sql_out_of_memory_pool_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let generated = bin()
        .args(["gen", "--events", "20000", "--seed", "2"])
        .output()
        .unwrap();
    let path = dir.path().join("e.ndjson");
    std::fs::write(&path, &generated.stdout).unwrap();
    let lake = dir.path().join("lake");
    ingest(&lake, &[path.to_str().unwrap()]);
    let out = bin()
        .arg("--lake")
        .arg(&lake)
        .env("PROMPTGATE_MEMORY_MIB", "1")
        .args(["sql", "SELECT array_agg(input) AS a FROM llm_events"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Resources exhausted"), "{err}");
    assert!(
        err.contains("hint: the query needs more than its 1 MiB memory pool"),
        "{err}"
    );
    // Within a generous pool the same query runs.
    let ok = bin()
        .arg("--lake")
        .arg(&lake)
        .env("PROMPTGATE_MEMORY_MIB", "512")
        .args([
            "sql",
            "SELECT cardinality(array_agg(input)) AS n FROM llm_events",
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "n\n20000\n");
}

/// Input is never changed silently: a CSV header naming one column twice is refused as a whole
/// (nothing ingested; the second value would have been dropped), and `attributes` text that
/// only looks like a JSON object is a reject, quarantined with its reason, not stored as is.
#[test]
fn input_is_never_changed_silently() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let csv = dir.path().join("dup.csv");
    std::fs::write(
        &csv,
        format!("{HEADER},foo,foo\n{},a,b\n", csv_row(1, "hi")),
    )
    .unwrap();
    let out = run(&lake, &["ingest", "--no-progress", csv.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("names the column `foo` twice"), "{err}");
    let n = run(
        &lake,
        &[
            "sql",
            "SELECT COUNT(*) AS n FROM llm_events",
            "--format",
            "csv",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&n.stdout),
        "n\n0\n",
        "nothing ingested"
    );

    let ndjson = dir.path().join("attrs.ndjson");
    let event = |id: &str, attrs: &str| {
        format!(
            r#"{{"event_id":"{id}","ts":"2026-11-20T10:00:00Z","route":"r","env":"prod","model":"m","prompt_version":"v1","duration_ms":1,"tokens_in":1,"tokens_out":1,"status":"ok","attributes":{attrs}}}"#
        )
    };
    std::fs::write(
        &ndjson,
        [
            event("bad", r#""{bad json""#),
            event("text", r#""{\"top_k\":5}""#),
            event("object", r#"{"top_k":5}"#),
        ]
        .join("\n")
            + "\n",
    )
    .unwrap();
    let r = ingest(&lake, &[ndjson.to_str().unwrap()]);
    assert_eq!(counts(&r), (3, 2, 0, 1));
    let (reasons, _) = quarantine(&r);
    assert_eq!(reasons.len(), 1);
    assert_eq!(reasons[0].0, 1);
    assert!(
        reasons[0].1.contains("not a valid JSON object"),
        "{reasons:?}"
    );

    // An unknown field's value keeps its digits: a 30-digit integer was 1.2345678901234568e+29.
    let big = dir.path().join("big.ndjson");
    let line = event("big", r#"{"k":1}"#).replace(
        r#""attributes""#,
        r#""order":123456789012345678901234567890,"nested":{"n":18446744073709551617},"attributes""#,
    );
    std::fs::write(&big, line + "\n").unwrap();
    assert_eq!(
        counts(&ingest(&lake, &[big.to_str().unwrap()])),
        (1, 1, 0, 0)
    );
    let out = run(
        &lake,
        &[
            "sql",
            "SELECT attributes FROM llm_events WHERE event_id = 'big'",
            "--format",
            "csv",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("123456789012345678901234567890"), "{text}");
    assert!(text.contains("18446744073709551617"), "{text}");
}

/// Under an address-space limit (`ulimit -v`, 4 GB) and no `PROMPTGATE_MEMORY_MIB`, a query
/// too big for memory fails with exit 1 and the pool's hint: the pool is sized from the room
/// under the limit, not from the machine's memory (which made the process abort, exit 134).
#[test]
fn the_memory_pool_respects_an_address_space_limit() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let events = dir.path().join("e.ndjson");
    std::fs::write(
        &events,
        bin()
            .args(["gen", "--events", "100", "--seed", "3"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    ingest(&lake, &[events.to_str().unwrap()]);
    let query = "SELECT cardinality(array_agg(v)) AS n FROM generate_series(1, 600000000) t(v)";
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 4000000 && exec \"$0\" --lake \"$1\" sql \"$2\"")
        .arg(test_bin())
        .arg(&lake)
        .arg(query)
        .env_remove("PROMPTGATE_MEMORY_MIB")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Resources exhausted"), "{err}");
    assert!(err.contains("hint: the query needs more than its"), "{err}");
}
