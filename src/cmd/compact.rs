//! `promptgate compact`: merge a day's small files into one.

use crate::error::Result;
use crate::lake::{self, Lake, Table};

pub async fn run(lake: &Lake, day: Option<&str>, labels: bool, min_files: usize) -> Result<i32> {
    let table = if labels { Table::Labels } else { Table::Events };
    let r = lake::compact(lake, table, day, min_files).await?;
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
    Ok(0)
}
