//! `promptgate lake`: the lake's versions (`history`), deleting files no version within the
//! retention period needs (`vacuum`), converting a lake of the old layout (`convert`), the files
//! a version reads (`files`) and what lies beside them (`doctor`).

use std::io::Write;

use crate::error::{Error, Result};
use crate::lake::{self, Lake, log};

/// `lake history`: every version, newest first: time, what wrote it, each table's Delta version.
pub async fn history(lake: &Lake, json: bool, limit: Option<usize>) -> Result<i32> {
    lake.require_existing()?;
    let log = log::LakeLog(lake);
    let versions = log.versions().await?;
    if versions.is_empty() && lake.remote().is_some() {
        // Says why: nothing there, or a copy of a lake of the old layout.
        lake::Snapshot::load(lake, &lake::AsOf::Latest).await?;
    }
    if versions.is_empty() {
        return Err(Error::usage(format!(
            "the lake at {} has no versions yet: it is in the layout of before Delta Lake",
            lake.location()
        ))
        .with_hint("convert it with `promptgate lake convert` (its next ingest also does)"));
    }
    let mut out = super::stdout();
    let take = limit.unwrap_or(usize::MAX);
    let io = |e| Error::io("cannot write", std::path::Path::new("stdout"), e);
    for v in versions.iter().rev().take(take) {
        let e = log.read(*v).await?;
        if json {
            serde_json::to_writer(&mut out, &e).map_err(|e| Error::runtime(e.to_string()))?;
            writeln!(out).map_err(io)?;
        } else {
            let when = chrono::DateTime::from_timestamp_millis(e.timestamp_ms)
                .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
                .unwrap_or_default();
            let tables: Vec<String> = e.tables.iter().map(|(t, v)| format!("{t}@{v}")).collect();
            writeln!(
                out,
                "{:>6}  {when}  {:<10}  {}",
                e.version,
                e.operation,
                tables.join(" ")
            )
            .map_err(io)?;
        }
    }
    super::flush(&mut out)?;
    Ok(0)
}

/// `lake vacuum`.
pub async fn vacuum(lake: &Lake, retention_hours: Option<u64>, dry_run: bool) -> Result<i32> {
    let hours = lake::retention_hours(retention_hours)?;
    let r = lake::vacuum(lake, hours, dry_run).await?;
    let verb = if dry_run { "would delete" } else { "deleted" };
    for p in &r.paths {
        println!("{verb} {p}");
    }
    println!(
        "{verb} {} file(s), {} bytes, that no version of the last {hours} hours needs",
        r.files, r.bytes
    );
    Ok(0)
}

/// `lake convert`: what the first write does to a lake of the old layout, on its own.
pub async fn convert(lake: &Lake) -> Result<i32> {
    lake.require_existing()?;
    let before = log::latest(lake.root())?;
    let lock = lake.lock().await?;
    let now = lock.snapshot().version().unwrap_or(0);
    match before {
        Some(_) => println!("the lake is already on Delta Lake (version {now})"),
        None => println!("converted: the lake is on Delta Lake (version {now})"),
    }
    Ok(0)
}

/// `lake doctor`: one line per finding (kind, path, what, what to do), then the files the
/// current version does not read; exit 1 when a damaged file needs restoring.
pub async fn doctor(lake: &Lake, json: bool) -> Result<i32> {
    let r = lake::doctor(lake).await?;
    let mut out = super::stdout();
    let io = |e| Error::io("cannot write", std::path::Path::new("stdout"), e);
    if json {
        serde_json::to_writer(&mut out, &r).map_err(|e| Error::runtime(e.to_string()))?;
        writeln!(out).map_err(io)?;
    } else {
        for f in &r.findings {
            writeln!(
                out,
                "{:<9}  {}: {}\n           {}",
                f.kind, f.path, f.what, f.action
            )
            .map_err(io)?;
        }
        if r.findings.is_empty() {
            writeln!(
                out,
                "nothing stray or damaged in the lake at {}",
                lake.location()
            )
            .map_err(io)?;
        }
        match &r.unreadable {
            Some(why) => writeln!(out, "the lake's current version cannot be read: {why}"),
            None => writeln!(
                out,
                "{} data file(s), {} bytes, that the current version does not read (`lake vacuum` deletes them after the retention period)",
                r.unneeded_files, r.unneeded_bytes
            ),
        }
        .map_err(io)?;
    }
    super::flush(&mut out)?;
    Ok(if r.needs_repair() { 1 } else { 0 })
}

/// `lake files`: the data files a version of the lake reads, per table.
pub async fn files(
    lake: &Lake,
    table: Option<&str>,
    as_of: &lake::AsOf,
    json: bool,
) -> Result<i32> {
    lake.require_existing()?;
    let tables: Vec<lake::Table> = match table {
        None => lake::Table::ALL.to_vec(),
        Some(name) => vec![lake::Table::from_name(name).ok_or_else(|| {
            Error::usage(format!("no table {name:?} in the lake")).with_hint(
                "the tables are llm_events, llm_labels, llm_labeled_events and llm_reviews",
            )
        })?],
    };
    let snapshot = lake::Snapshot::load(lake, as_of).await?;
    let mut out = super::stdout();
    let io = |e| Error::io("cannot write", std::path::Path::new("stdout"), e);
    for t in tables {
        for f in snapshot.file_records(t)? {
            if json {
                let v = serde_json::json!({
                    "table": t.name(), "date": f.day, "path": f.path, "rows": f.rows, "bytes": f.size,
                });
                writeln!(out, "{v}").map_err(io)?;
            } else {
                let rows = f.rows.map_or("?".to_string(), |r| r.to_string());
                writeln!(
                    out,
                    "{:<20} {}  {:>10} rows  {:>12} bytes  {}",
                    t.name(),
                    f.day,
                    rows,
                    f.size,
                    f.path
                )
                .map_err(io)?;
            }
        }
    }
    super::flush(&mut out)?;
    Ok(0)
}
