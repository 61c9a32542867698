//! Ingest of input in random time order: memory stays within the budget and each ingest adds one
//! sorted file per `date=` partition (the real binary, its peak RSS measured by the kernel).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow::array::{Array, AsArray};
use arrow::datatypes::TimestampMicrosecondType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

/// The binary under test; `PROMPTGATE_TEST_BIN` overrides cargo's (when several worktrees share
/// one target directory, cargo's path may hold another worktree's build by the time tests run).
fn bin() -> Command {
    Command::new(
        std::env::var_os("PROMPTGATE_TEST_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_promptgate").into()),
    )
}

fn run(lake: &Path, args: &[&str]) -> Output {
    bin().arg("--lake").arg(lake).args(args).output().unwrap()
}

fn ok_json(out: Output) -> Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The lines of `promptgate gen ARGS`, in a fixed pseudo-random order.
fn shuffled_gen(args: &[&str]) -> Vec<String> {
    let out = bin().arg("gen").args(args).output().unwrap();
    assert!(out.status.success());
    let mut lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..lines.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        lines.swap(i, (state % (i as u64 + 1)) as usize);
    }
    lines
}

fn files_by_partition(table_dir: &Path) -> Vec<(String, Vec<PathBuf>)> {
    let mut out = Vec::new();
    let mut dirs: Vec<_> = std::fs::read_dir(table_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("date=")
        })
        .collect();
    dirs.sort();
    for d in dirs {
        let files: Vec<PathBuf> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .collect();
        out.push((d.file_name().unwrap().to_string_lossy().into_owned(), files));
    }
    out
}

/// Rows of a file, checking they are in (route, ts) order and that the order is recorded.
fn sorted_rows(file: &Path) -> usize {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(file).unwrap()).unwrap();
    let meta = builder.metadata().clone();
    for rg in meta.row_groups() {
        let sorting = rg.sorting_columns().expect("sorting_columns recorded");
        assert_eq!(sorting.len(), 2, "{}", file.display());
    }
    let mut last: Option<(String, i64)> = None;
    let mut rows = 0;
    for batch in builder.build().unwrap() {
        let batch = batch.unwrap();
        let route = batch.column_by_name("route").unwrap().as_string::<i32>();
        let ts = batch
            .column_by_name("ts")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        for i in 0..batch.num_rows() {
            let key = (route.value(i).to_string(), ts.value(i));
            if let Some(prev) = &last {
                assert!(
                    prev <= &key,
                    "{} not sorted: {prev:?} > {key:?}",
                    file.display()
                );
            }
            last = Some(key);
        }
        rows += route.len();
    }
    rows
}

/// Peak resident set of the largest child process waited for so far, in MiB.
fn children_peak_rss_mib() -> i64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage struct.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(rc, 0);
    usage.ru_maxrss / 1024
}

/// 200,000 events over 300 days in random order, with 4,000 repeated, through an 8 MiB buffer:
/// the rows are spilled as sorted runs many times over, yet each day ends as one sorted file,
/// every event is there once, and the process stays far below what per-day buffers cost (they
/// took gigabytes on such input).
#[test]
fn shuffled_input_over_hundreds_of_days_gives_one_sorted_file_per_day_within_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = shuffled_gen(&["--events", "200000", "--days", "300", "--seed", "5"]);
    let repeats: Vec<String> = lines.iter().step_by(50).cloned().collect();
    assert_eq!(repeats.len(), 4000);
    lines.extend(repeats);
    let input = dir.path().join("shuffled.ndjson");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let lake = dir.path().join("lake");
    let before = children_peak_rss_mib();

    let r = ok_json(run(
        &lake,
        &[
            "ingest",
            "--json",
            "--no-progress",
            "--buffer-mib",
            "8",
            input.to_str().unwrap(),
        ],
    ));
    assert_eq!(
        (&r["read"], &r["accepted"], &r["duplicates"], &r["rejected"]),
        (
            &Value::from(204_000),
            &Value::from(200_000),
            &Value::from(4_000),
            &Value::from(0)
        )
    );
    let peak = children_peak_rss_mib();
    assert!(
        peak < 400,
        "ingest peak RSS {peak} MiB (children before it: {before} MiB)"
    );

    let partitions = files_by_partition(&lake.join("llm_events"));
    assert_eq!(partitions.len(), 300);
    let mut total = 0;
    for (name, files) in &partitions {
        assert_eq!(files.len(), 1, "{name} has {} files", files.len());
        total += sorted_rows(&files[0]);
    }
    assert_eq!(total, 200_000);
    // Nothing is left behind in staging (runs are scratch files).
    let staging: Vec<_> = std::fs::read_dir(lake.join("_staging")).unwrap().collect();
    assert!(staging.is_empty(), "{staging:?}");

    // The merged files carry id hashes: ingesting it all again adds nothing, and reads only
    // hashes to know it.
    let again = ok_json(run(
        &lake,
        &[
            "ingest",
            "--json",
            "--no-progress",
            "--buffer-mib",
            "8",
            input.to_str().unwrap(),
        ],
    ));
    assert_eq!(again["accepted"], 0);
    assert_eq!(again["duplicates"], 204_000);
}

/// Generates `events` events over `days` days in time order and ingests them through a buffer
/// of `buffer_mib`; checks one sorted file per day holding every event once. Returns the lake's
/// directory (kept alive by the returned temp dir) and the size of the input.
fn ingest_time_ordered(
    events: u64,
    days: u64,
    seed: u64,
    buffer_mib: u64,
) -> (tempfile::TempDir, PathBuf, usize) {
    let dir = tempfile::tempdir().unwrap();
    let (n, d, s) = (events.to_string(), days.to_string(), seed.to_string());
    let out = bin()
        .args(["gen", "--events", &n, "--days", &d, "--seed", &s])
        .output()
        .unwrap();
    let input = dir.path().join("ordered.ndjson");
    std::fs::write(&input, &out.stdout).unwrap();
    let lake = dir.path().join("lake");
    let buffer = buffer_mib.to_string();
    let r = ok_json(run(
        &lake,
        &[
            "ingest",
            "--json",
            "--no-progress",
            "--buffer-mib",
            &buffer,
            input.to_str().unwrap(),
        ],
    ));
    assert_eq!(r["accepted"], events);
    let partitions = files_by_partition(&lake.join("llm_events"));
    assert_eq!(partitions.len() as u64, days);
    let mut rows = 0;
    for (name, files) in &partitions {
        assert_eq!(files.len(), 1, "{name}");
        rows += sorted_rows(&files[0]) as u64;
    }
    assert_eq!(rows, events);
    // DISTINCT, so that the count is not answered from the Delta log's statistics.
    let n = ok_json(run(
        &lake,
        &[
            "sql",
            "SELECT COUNT(DISTINCT event_id) AS n FROM llm_events",
            "--format",
            "json",
        ],
    ));
    assert_eq!(n[0]["n"], events);
    (dir, lake, out.stdout.len())
}

/// Input in time order, through a buffer smaller than the input: one sorted file per day, and
/// the counts agree with SQL.
#[test]
fn time_ordered_input_gives_one_sorted_file_per_day() {
    ingest_time_ordered(60_000, 20, 9, 4);
}

/// Days in time order, each several times the buffer: a day is spilled in runs while it is the
/// current one, and what is left of it when the next day begins goes to a run too (it is merged
/// anyway). Still one sorted file per day, every event kept once, no runs left in staging.
#[test]
fn time_ordered_days_larger_than_the_buffer_give_one_file_each() {
    let (_dir, lake, bytes) = ingest_time_ordered(100_000, 2, 4, 8);
    // About 27 MB of NDJSON per day against an 8 MiB buffer (larger than the 4 MiB chunks read,
    // so a day's tail is still in memory when the next day begins).
    assert!(bytes > 2 * 2 * 8 * (1 << 20), "{bytes}");
    let staged: Vec<_> = std::fs::read_dir(lake.join("_staging"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(staged.is_empty(), "left in staging: {staged:?}");
}
