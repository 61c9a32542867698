//! Deduplication on the table's id column, in memory bounded by the batch being written.
//!
//! Within a batch the first occurrence of an id wins. Against the lake (and files this ingest
//! already staged) the batch's ids are the build side of a semi join that streams only the id
//! column of the existing files: the lake's ids are never collected in memory.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, StringArray};
use arrow::compute::{
    SortColumn, SortOptions, concat_batches, filter_record_batch, lexsort_to_indices,
    take_record_batch,
};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::JoinType;
use datafusion::prelude::{SessionContext, col};

use crate::error::Result;
use crate::lake::{self, Lake, Table};

pub(super) struct Outcome {
    /// Rows whose ids are new, first occurrence only.
    pub batch: RecordBatch,
    /// Rows dropped as already seen.
    pub duplicates: u64,
}

pub(super) async fn unique_new_rows(
    lake: &Lake,
    staged_dir: &Path,
    table: Table,
    batches: Vec<RecordBatch>,
) -> Result<Outcome> {
    let batch = concat_batches(&table.schema(), &batches)?;
    drop(batches);
    let id_idx = table
        .schema()
        .index_of(table.id_column())
        .expect("id column");
    let ids = batch.column(id_idx).as_string::<i32>().clone();

    let mut first = HashSet::with_capacity(ids.len());
    let mut keep: Vec<bool> = ids
        .iter()
        .map(|id| first.insert(id.unwrap_or("")))
        .collect();

    let existing = existing_ids(lake, staged_dir, table, &ids).await?;
    if !existing.is_empty() {
        for (k, id) in keep.iter_mut().zip(ids.iter()) {
            if *k && existing.contains(id.unwrap_or("")) {
                *k = false;
            }
        }
    }
    let kept = keep.iter().filter(|k| **k).count();
    let duplicates = (ids.len() - kept) as u64;
    let batch = if kept == ids.len() {
        batch
    } else {
        filter_record_batch(&batch, &BooleanArray::from(keep))?
    };
    Ok(Outcome { batch, duplicates })
}

/// Ids of `candidates` already present in the lake's `table` or in the staged files.
async fn existing_ids(
    lake: &Lake,
    staged_dir: &Path,
    table: Table,
    candidates: &StringArray,
) -> Result<HashSet<String>> {
    let have_lake = !lake.data_files(table, None)?.is_empty();
    let have_staged = staged_dir.is_dir();
    if candidates.is_empty() || (!have_lake && !have_staged) {
        return Ok(HashSet::new());
    }
    let ctx = SessionContext::new();
    let id = table.id_column();
    let schema = Arc::new(Schema::new(vec![Field::new(
        "candidate_id",
        DataType::Utf8,
        true,
    )]));
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(candidates.clone())])?;
    ctx.register_table(
        "candidates",
        Arc::new(MemTable::try_new(schema, vec![vec![batch]])?),
    )?;

    let mut existing: Option<datafusion::prelude::DataFrame> = None;
    for (name, dir, present) in [
        ("lake", lake.table_dir(table), have_lake),
        ("staged", staged_dir.to_path_buf(), have_staged),
    ] {
        if !present {
            continue;
        }
        lake::register_dir(&ctx, &dir, table.schema(), name)?;
        let ids = ctx
            .table(name)
            .await?
            .select(vec![col(id).alias("existing_id")])?;
        existing = Some(match existing {
            None => ids,
            Some(prev) => prev.union(ids)?,
        });
    }
    let existing = existing.expect("at least one side is present");
    let found = ctx
        .table("candidates")
        .await?
        .join(
            existing,
            JoinType::LeftSemi,
            &["candidate_id"],
            &["existing_id"],
            None,
        )?
        .collect()
        .await?;
    let mut out = HashSet::new();
    for b in &found {
        let ids = arrow::compute::cast(b.column(0), &DataType::Utf8)?;
        for id in ids.as_string::<i32>().iter().flatten() {
            out.insert(id.to_string());
        }
    }
    Ok(out)
}

/// Sorts a batch by the table's sort columns (for events: route, then ts).
pub(super) fn sort_for_table(batch: &RecordBatch, table: Table) -> Result<RecordBatch> {
    let columns: Vec<SortColumn> = table
        .sort_columns()
        .iter()
        .map(|c| SortColumn {
            values: batch
                .column(batch.schema().index_of(c).expect("sort column"))
                .clone(),
            options: Some(SortOptions::default()),
        })
        .collect();
    let indices = lexsort_to_indices(&columns, None)?;
    Ok(take_record_batch(batch, &indices)?)
}
