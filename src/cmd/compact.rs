//! `promptgate compact`: merge a day's small files into one.

use crate::error::Result;
use crate::lake::{self, Lake, Table};

pub async fn run(lake: &Lake, day: Option<&str>, labels: bool, min_files: usize) -> Result<i32> {
    let table = if labels { Table::Labels } else { Table::Events };
    report(
        table,
        lake::compact(lake, table, day, min_files).await?,
        min_files,
    );
    // The labeled-events index gains a small file per day at each ingest, like the events.
    let index = Table::LabeledEvents;
    let days = lake::Snapshot::load(lake, &lake::AsOf::Latest)
        .await?
        .days(index)?;
    if !labels && day.is_none_or(|d| days.iter().any(|x| x == d)) {
        report(
            index,
            lake::compact(lake, index, day, min_files).await?,
            min_files,
        );
    }
    Ok(0)
}

fn report(table: Table, r: lake::CompactReport, min_files: usize) {
    if r.partitions == 0 {
        println!(
            "nothing to compact: no partition of {} has {} or more files",
            table.name(),
            min_files.max(2)
        );
    } else {
        println!(
            "compacted {} partition(s) of {}: {} files -> {} ({} rows)",
            r.partitions,
            table.name(),
            r.files_before,
            r.files_after,
            r.rows
        );
    }
}
