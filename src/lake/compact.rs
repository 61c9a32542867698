//! Compaction: rewrite a day's many small files into one large sorted file, swapped in
//! atomically so readers never see duplicates or missing rows.
//!
//! The files of a partition are merged by DataFusion (each file is already sorted, so the merge
//! streams; a memory-limited pool spills to disk in the worst case), written to staging, checked
//! for the exact row count, and exchanged with the live partition directory in one
//! `renameat2(RENAME_EXCHANGE)`.

use std::sync::Arc;

use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext, col};
use parquet::file::reader::{FileReader, SerializedFileReader};
use serde::Serialize;

use super::{Lake, Table, register_sorted_partition};
use crate::error::{Error, Result};

/// What compaction did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CompactReport {
    /// Partitions rewritten.
    pub partitions: usize,
    /// Files replaced, and files written in their place.
    pub files_before: usize,
    pub files_after: usize,
    pub rows: u64,
}

/// Compacts every partition of `table` (or only `date=day`) holding at least `min_files` files.
pub async fn compact(
    lake: &Lake,
    table: Table,
    day: Option<&str>,
    min_files: usize,
) -> Result<CompactReport> {
    lake.require_existing()?;
    let lock = lake.lock()?;
    let mut report = CompactReport::default();
    let dirs = lake.partition_dirs(table)?;
    if let Some(d) = day
        && !dirs.iter().any(|p| p.ends_with(format!("date={d}")))
    {
        return Err(Error::usage(format!("no partition date={d} in {}", lake.table_dir(table).display()))
            .with_hint("list partitions with `promptgate sql \"SELECT date, COUNT(*) FROM llm_events GROUP BY date ORDER BY date\"`"));
    }
    for dir in dirs {
        let name = dir
            .file_name()
            .expect("partition has a name")
            .to_os_string();
        if let Some(d) = day
            && name.to_str() != Some(&format!("date={d}"))
        {
            continue;
        }
        let files = lake.data_files(table, name.to_str().and_then(|n| n.strip_prefix("date=")))?;
        if files.len() < min_files.max(2) {
            continue;
        }
        let mut expected = 0u64;
        for f in &files {
            let file = std::fs::File::open(f).map_err(|e| Error::io("cannot read", f, e))?;
            expected += SerializedFileReader::new(file)?
                .metadata()
                .file_metadata()
                .num_rows() as u64;
        }

        let tx = lock.begin()?;
        let new_dir = tx.dir().join(&name);
        let out = new_dir.join(format!("part-{}.parquet", uuid::Uuid::new_v4().simple()));
        let rows = merge_sorted(&dir, table, files.len(), &out).await?;
        if rows != expected {
            return Err(Error::runtime(format!(
                "compaction of {} wrote {rows} rows but the files hold {expected}; nothing was changed",
                dir.display()
            )));
        }
        lock.exchange_dirs(&dir, &new_dir)?;
        drop(tx); // removes the old files, now in staging
        report.partitions += 1;
        report.files_before += files.len();
        report.files_after += 1;
        report.rows += rows;
    }
    Ok(report)
}

async fn merge_sorted(
    dir: &std::path::Path,
    table: Table,
    files: usize,
    out: &std::path::Path,
) -> Result<u64> {
    // One partition per file so each input stays sorted and the sort becomes a streaming merge.
    let config = SessionConfig::new().with_target_partitions(files.max(1));
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(512 << 20)))
        .build_arc()?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    let sort = table.sort_columns();
    register_sorted_partition(&ctx, dir, table, "part")?;
    let df = ctx
        .table("part")
        .await?
        .sort(sort.iter().map(|c| col(*c).sort(true, false)).collect())?;
    let stream = df.execute_stream().await?;
    crate::lake::write_sorted_stream(stream, out, table).await
}
