//! Compaction: rewrite a day's files into one large sorted file, in one commit that adds the
//! new file and removes the old ones. Readers of the version before keep reading the old files,
//! which stay on disk until a vacuum past the retention period, so compaction never breaks a
//! reader.
//!
//! The files are merged by DataFusion (each file is already sorted, so the merge streams; a
//! memory-limited pool spills to disk in the worst case), written to staging and checked for
//! the exact row count before anything is committed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext, col};
use parquet::file::reader::{FileReader, SerializedFileReader};
use serde::Serialize;

use super::delta::DataFile;
use super::{Lake, Table, Transaction, WriteLock, ids};
use crate::error::{Error, Result};
use crate::event;

/// Files below this size count as small: ingest compacts a partition once it holds
/// [`AUTO_COMPACT_FILES`] of them.
pub const SMALL_FILE_BYTES: u64 = 64 << 20;
/// Small files a partition may hold before ingest compacts it.
pub const AUTO_COMPACT_FILES: usize = 4;

/// What compaction did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CompactReport {
    /// Partitions rewritten.
    pub partitions: usize,
    /// Files replaced, and files written in their place.
    pub files_before: usize,
    pub files_after: usize,
    pub rows: u64,
    /// The lake version that holds the result (None when nothing was compacted).
    pub version: Option<u64>,
}

/// Compacts every partition of `table` (or only `date=day`) holding at least `min_files` files.
pub async fn compact(
    lake: &Lake,
    table: Table,
    day: Option<&str>,
    min_files: usize,
) -> Result<CompactReport> {
    lake.require_lake().await?;
    let lock = lake.lock().await?;
    let days = lock.snapshot().days(table)?;
    if let Some(d) = day
        && !days.iter().any(|x| x == d)
    {
        return Err(Error::usage(format!("no partition date={d} in {} of {}", table.name(), lake.location()))
            .with_hint("list partitions with `promptgate sql \"SELECT date, COUNT(*) FROM llm_events GROUP BY date ORDER BY date\"`"));
    }
    let mut tx = lock.begin()?;
    let mut report = compact_into(&lock, &mut tx, table, |d, files| {
        if day.is_some_and(|x| x != d) || files.len() < min_files.max(2) {
            Vec::new()
        } else {
            files.to_vec()
        }
    })
    .await?;
    if report.partitions > 0 {
        report.version = tx.commit("compact").await?.version;
    }
    Ok(report)
}

/// Compacts, in each table, the small files of every partition that holds
/// [`AUTO_COMPACT_FILES`] or more of them (what ingest runs after its commit).
pub async fn compact_small_files(lake: &Lake) -> Result<Vec<(Table, CompactReport)>> {
    let lock = lake.lock().await?;
    let mut tx = lock.begin()?;
    let mut out = Vec::new();
    for table in Table::ALL {
        let r = compact_into(&lock, &mut tx, table, |_, files| {
            let small: Vec<DataFile> = files
                .iter()
                .filter(|f| f.size < SMALL_FILE_BYTES)
                .cloned()
                .collect();
            if small.len() >= AUTO_COMPACT_FILES {
                small
            } else {
                Vec::new()
            }
        })
        .await?;
        if r.partitions > 0 {
            out.push((table, r));
        }
    }
    // All tables in one commit: one new version of the lake.
    if !out.is_empty() {
        let version = tx.commit("compact").await?.version;
        for (_, r) in &mut out {
            r.version = version;
        }
    }
    Ok(out)
}

/// Merges, per day of `table`, the files `pick` chooses (none, or two or more) into one file
/// of `tx`, which removes the files it replaces when it commits.
async fn compact_into(
    lock: &WriteLock,
    tx: &mut Transaction<'_>,
    table: Table,
    pick: impl Fn(&str, &[DataFile]) -> Vec<DataFile>,
) -> Result<CompactReport> {
    let lake = lock.lake();
    let snapshot = lock.snapshot();
    // A table that is not partitioned (the reviews) has one file per review, replaced whole.
    if !snapshot.has(table) || !table.partitioned() {
        return Ok(CompactReport::default());
    }
    let mut report = CompactReport::default();
    for day in snapshot.days(table)? {
        let files: Vec<DataFile> = snapshot
            .data_files(table)
            .iter()
            .filter(|f| f.day == day)
            .cloned()
            .collect();
        let chosen = pick(&day, &files);
        if chosen.len() < 2 {
            continue;
        }
        // Of a lake on object storage, the inputs are downloaded into the transaction's staging.
        let mut paths: Vec<PathBuf> = Vec::with_capacity(chosen.len());
        for f in &chosen {
            paths.push(
                snapshot
                    .local_copy(table, f, &tx.dir().join("inputs"))
                    .await?,
            );
        }
        let mut expected = 0u64;
        for f in &paths {
            let file = std::fs::File::open(f).map_err(|e| Error::io("cannot read", f, e))?;
            expected += SerializedFileReader::new(file)
                .map_err(|e| {
                    Error::runtime(format!(
                        "{} is not a readable Parquet file: {e}",
                        f.display()
                    ))
                })?
                .metadata()
                .file_metadata()
                .num_rows() as u64;
        }
        let day_num = event::parse_day(&day).ok_or_else(|| {
            Error::runtime(format!(
                "{} of {} has a partition with a date that is not a date: {day:?}",
                table.name(),
                lake.location()
            ))
        })?;
        let out = tx.new_file(table, day_num);
        if ids::has_id_hashes(table) {
            tx.add_id_hashes(&out);
        }
        let rows = merge_sorted(&paths, table, &out).await?;
        if rows != expected {
            return Err(Error::runtime(format!(
                "compaction of {} date={day} of {} wrote {rows} rows but the files hold {expected}; nothing was changed",
                table.name(),
                lake.location()
            )));
        }
        for f in &chosen {
            tx.remove_file(table, f);
        }
        report.partitions += 1;
        report.files_before += chosen.len();
        report.files_after += 1;
        report.rows += rows;
    }
    Ok(report)
}

async fn merge_sorted(files: &[PathBuf], table: Table, out: &Path) -> Result<u64> {
    // One partition per file so each input stays sorted and the sort becomes a streaming merge.
    let config = SessionConfig::new().with_target_partitions(files.len().max(1));
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(512 << 20)))
        .build_arc()?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    let sort = table.sort_columns();
    register_sorted_files(&ctx, files, table, "part")?;
    let df = ctx
        .table("part")
        .await?
        .sort(sort.iter().map(|c| col(*c).sort(true, false)).collect())?;
    let stream = df.execute_stream().await?;
    crate::lake::write_sorted_stream(stream, out, table).await
}

/// Registers `files` of `table` (no `date` column), declaring each sorted by the table's sort
/// columns so DataFusion merges them instead of sorting.
pub(crate) fn register_sorted_files(
    ctx: &SessionContext,
    files: &[PathBuf],
    table: Table,
    name: &str,
) -> Result<()> {
    let order = table
        .sort_columns()
        .iter()
        .map(|c| col(*c).sort(true, false))
        .collect();
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_file_sort_order(vec![order]);
    let urls = files
        .iter()
        .map(|f| super::file_url(f))
        .collect::<Result<Vec<_>>>()?;
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(table.schema());
    ctx.register_table(name, Arc::new(ListingTable::try_new(config)?))?;
    Ok(())
}
