//! Deduplication on the table's id column, in memory bounded by the batches being written.
//!
//! Within a day buffer the first occurrence of an id wins. Against the lake, the buffer's id
//! hashes are first merged against each file's id-hash file (`lake::ids`); the files that may
//! hold one (and files without trustworthy hashes), like the files this ingest already staged,
//! are then checked exactly: the buffer's ids are the build side of a semi join that streams
//! only their id column, so the lake's ids are never collected in memory. Ids of files still
//! being written are checked in memory. Each id is hashed once.

use std::collections::HashSet;

use foldhash::fast::RandomState;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, StringArray};
use arrow::compute::{concat, filter_record_batch};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::JoinType;
use datafusion::prelude::{Expr, SessionContext, col};

use crate::error::Result;
use crate::lake::{self, LakeFileWriter, Snapshot, Table, ids};

pub(super) struct Outcome {
    /// One batch per input batch, in the same order, holding only its rows whose ids are new
    /// (first occurrence only); possibly empty.
    pub batches: Vec<RecordBatch>,
    pub rows: u64,
    /// Rows dropped as already seen.
    pub duplicates: u64,
    /// The id hash of each kept row (unsorted), for the file's id-hash file.
    pub id_hashes: Vec<u64>,
}

fn ids(batch: &RecordBatch, table: Table) -> &StringArray {
    let idx = table
        .schema()
        .index_of(table.id_column())
        .expect("id column");
    batch.column(idx).as_string::<i32>()
}

/// Hashes of the ids one ingest run has accepted so far, per table: 8 bytes an id, so ids
/// already staged by this run need not be re-read from disk at every flush. A hash match is only
/// a candidate; it is confirmed in memory or against the staged files before a row is dropped.
#[derive(Default)]
pub(super) struct RunIds {
    hashes: HashSet<u64, RandomState>,
}

/// Drops rows of `batches` whose id was seen earlier in them, is in the lake, or was accepted
/// earlier by this run (staged, spilled to `runs`, or being written: `in_flight`); records the
/// new ids in `run`.
pub(super) async fn unique_new_rows(
    lake: &Snapshot,
    staged_dir: &Path,
    runs: &[&Path],
    table: Table,
    batches: Vec<RecordBatch>,
    in_flight: &[&[RecordBatch]],
    run: &mut RunIds,
) -> Result<Outcome> {
    let mut seen: HashSet<&str, RandomState> = HashSet::default();
    let mut keep: Vec<Vec<bool>> = batches
        .iter()
        .map(|b| {
            ids(b, table)
                .iter()
                .map(|id| seen.insert(id.unwrap_or("")))
                .collect()
        })
        .collect();
    let hashes: Vec<Vec<u64>> = batches
        .iter()
        .map(|b| {
            ids(b, table)
                .iter()
                .map(|id| ids::id_hash(id.unwrap_or("")))
                .collect()
        })
        .collect();

    // Ids this run accepted before: confirmed in memory (in flight) or in the staged files.
    let mut known: HashSet<String> = HashSet::new();
    let mut maybe_own: Vec<&str> = Vec::new();
    for ((b, k), h) in batches.iter().zip(&keep).zip(&hashes) {
        for ((id, first), h) in ids(b, table).iter().zip(k).zip(h) {
            if *first && run.hashes.contains(h) {
                maybe_own.push(id.unwrap_or(""));
            }
        }
    }
    if !maybe_own.is_empty() {
        for list in in_flight {
            for b in *list {
                for id in ids(b, table).iter().flatten() {
                    if seen.contains(id) {
                        known.insert(id.to_string());
                    }
                }
            }
        }
        let unresolved: StringArray = maybe_own
            .iter()
            .filter(|id| !known.contains(**id))
            .map(|s| Some(*s))
            .collect();
        for run_file in runs {
            for b in super::runs::run_ids(run_file, table)? {
                for id in b.column(0).as_string::<i32>().iter().flatten() {
                    if seen.contains(id) {
                        known.insert(id.to_string());
                    }
                }
            }
        }
        let unresolved: StringArray = unresolved
            .iter()
            .flatten()
            .filter(|id| !known.contains(*id))
            .map(Some)
            .collect();
        let unresolved = Candidates::new(unresolved);
        known.extend(existing_ids(None, Some(staged_dir), table, &unresolved).await?);
    }
    // Ids already in the lake: a streaming semi join against the lake's id column.
    let all: Vec<&dyn Array> = batches
        .iter()
        .map(|b| ids(b, table) as &dyn Array)
        .collect();
    if !all.is_empty() {
        let candidates = Candidates::with_hashes(
            concat(&all)?.as_string::<i32>().clone(),
            hashes.iter().flatten().copied().collect(),
        );
        known.extend(existing_ids(Some(lake), None, table, &candidates).await?);
    }
    drop(seen);

    let mut out = Vec::with_capacity(batches.len());
    let (mut rows, mut duplicates) = (0u64, 0u64);
    let mut id_hashes = Vec::new();
    for ((b, k), h) in batches.into_iter().zip(keep.iter_mut()).zip(&hashes) {
        if !known.is_empty() {
            for (keep, id) in k.iter_mut().zip(ids(&b, table).iter()) {
                if *keep && known.contains(id.unwrap_or("")) {
                    *keep = false;
                }
            }
        }
        for (keep, h) in k.iter().zip(h) {
            if *keep {
                run.hashes.insert(*h);
                id_hashes.push(*h);
            }
        }
        let kept = k.iter().filter(|x| **x).count();
        duplicates += (k.len() - kept) as u64;
        rows += kept as u64;
        if kept == k.len() {
            out.push(b);
        } else {
            out.push(filter_record_batch(
                &b,
                &BooleanArray::from(std::mem::take(k)),
            )?);
        }
    }
    Ok(Outcome {
        batches: out,
        rows,
        duplicates,
        id_hashes,
    })
}

/// Ids to look for, with their id hashes sorted and deduplicated (to skip lake files whose
/// id-hash files rule them all out).
pub(super) struct Candidates {
    ids: StringArray,
    hashes: Vec<u64>,
}

impl Candidates {
    pub fn new(ids: StringArray) -> Self {
        let hashes = ids
            .iter()
            .map(|id| ids::id_hash(id.unwrap_or("")))
            .collect();
        Self::with_hashes(ids, hashes)
    }

    /// `hashes` are the [`ids::id_hash`]es of `ids`, in any order.
    fn with_hashes(ids: StringArray, mut hashes: Vec<u64>) -> Self {
        hashes.sort_unstable();
        hashes.dedup();
        Self { ids, hashes }
    }
}

/// Ids of `candidates` already present in the lake's `table` and/or in the staged files.
async fn existing_ids(
    lake: Option<&Snapshot>,
    staged_dir: Option<&Path>,
    table: Table,
    candidates: &Candidates,
) -> Result<HashSet<String>> {
    let found = rows_with_ids(lake, staged_dir, table, candidates, &[table.id_column()]).await?;
    let mut out = HashSet::new();
    for b in &found {
        let ids = arrow::compute::cast(b.column(0), &DataType::Utf8)?;
        for id in ids.as_string::<i32>().iter().flatten() {
            out.insert(id.to_string());
        }
    }
    Ok(out)
}

/// `columns` of the rows of the lake's `table` and/or the staged files whose id is one of
/// `candidates`: a semi join with the candidates as the (small) build side, streaming the
/// existing files.
pub(super) async fn rows_with_ids(
    lake: Option<&Snapshot>,
    staged_dir: Option<&Path>,
    table: Table,
    candidates: &Candidates,
    columns: &[&str],
) -> Result<Vec<RecordBatch>> {
    // The lake's files that may hold a candidate: where id-hash files are kept, only those
    // whose hashes match one (a file without a trustworthy id-hash file is always read).
    let lake_files = match lake {
        Some(l) => l.files_matching(table, &candidates.hashes).await?,
        None => Vec::new(),
    };
    let have_lake = !lake_files.is_empty();
    let have_staged = staged_dir.is_some_and(|d| d.is_dir());
    if candidates.ids.is_empty() || (!have_lake && !have_staged) {
        return Ok(Vec::new());
    }
    let ctx = SessionContext::new();
    let id = table.id_column();
    let schema = Arc::new(Schema::new(vec![Field::new(
        "candidate_id",
        DataType::Utf8,
        true,
    )]));
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(candidates.ids.clone())])?;
    ctx.register_table(
        "candidates",
        Arc::new(MemTable::try_new(schema, vec![vec![batch]])?),
    )?;

    let mut existing: Option<datafusion::prelude::DataFrame> = None;
    if have_lake {
        let l = lake.expect("files come from the lake");
        l.register_files(&ctx, &lake_files, table, "lake")?;
    }
    if have_staged {
        let dir = staged_dir.expect("staged dir present");
        lake::register_dir(&ctx, dir, table.schema(), "staged")?;
    }
    for (name, present) in [("lake", have_lake), ("staged", have_staged)] {
        if !present {
            continue;
        }
        let mut select = vec![col(id).alias("existing_id")];
        select.extend(columns.iter().filter(|c| **c != id).map(|c| col(*c)));
        let rows = ctx.table(name).await?.select(select)?;
        existing = Some(match existing {
            None => rows,
            Some(prev) => prev.union(rows)?,
        });
    }
    let existing = existing.expect("at least one side is present");
    let found = ctx
        .table("candidates")
        .await?
        .join(
            existing,
            JoinType::RightSemi,
            &["candidate_id"],
            &["existing_id"],
            None,
        )?
        .select(
            columns
                .iter()
                .map(|c| {
                    if *c == id {
                        col("existing_id").alias(*c)
                    } else {
                        col(*c)
                    }
                })
                .collect::<Vec<Expr>>(),
        )?
        .collect()
        .await?;
    Ok(found)
}

/// Writes `batches` as one file sorted by the table's sort columns (for events: route, then
/// ts), a slice at a time (see [`super::runs::for_each_sorted_slice`]).
pub(super) fn write_sorted(path: &Path, table: Table, batches: &[RecordBatch]) -> Result<u64> {
    let mut writer = LakeFileWriter::create(path, table)?;
    super::runs::for_each_sorted_slice(table, batches, |slice| writer.write(&slice))?;
    writer.finish()
}
