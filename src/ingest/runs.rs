//! Sorting rows into a table's order, in memory and out of it (an external merge sort).
//!
//! When the buffered rows pass the memory budget and no day's buffer can be written as a file of
//! its own (input in random time order keeps every day busy), all buffered rows of a table are
//! sorted by (day, the table's sort columns) and spilled to one *run*: an Arrow IPC file in
//! staging, cut into batches of at most [`SLICE_ROWS`] rows and about [`SLICE_BYTES`] bytes,
//! with each day's batches noted. At commit, a day whose rows lie in more than one place (runs,
//! or files written straight from memory) is merged into one sorted Parquet file: one batch of
//! each source is in memory at a time. So an ingest writes one file per `date=` partition, in
//! memory bounded by the budget plus one slice per source, whatever the input order.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{
    SortColumn, SortOptions, concat, interleave_record_batch, lexsort_to_indices,
};
use arrow::datatypes::DataType;
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, UnboundedMemoryPool};
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::expressions::Column;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet};
use datafusion::physical_plan::sorts::streaming_merge::StreamingMergeBuilder;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{Error, Result};
use crate::lake::Table;

/// Rows per sorted slice, at most.
pub(super) const SLICE_ROWS: usize = 8 * 1024;
/// Bytes per sorted slice, about (a slice always holds at least one row).
pub(super) const SLICE_BYTES: usize = 4 << 20;
/// Rows per batch the merge emits, at most; fewer when rows are large, so that a batch stays
/// within [`MERGE_BATCH_BYTES`] (far from Arrow's 2 GiB offset limit).
const MERGE_BATCH_ROWS: usize = 8 * 1024;
/// Bytes per batch the merge emits, at most, counted with the largest row of the ingest.
const MERGE_BATCH_BYTES: usize = 64 << 20;

/// Hands the rows of `batches` (all of `table`'s schema) to `out` in the table's sort order, in
/// slices of at most [`SLICE_ROWS`] rows and about [`SLICE_BYTES`] bytes. Only the sort columns
/// are copied whole; each slice is gathered from the original batches as it is needed.
pub(super) fn for_each_sorted_slice(
    table: Table,
    batches: &[RecordBatch],
    mut out: impl FnMut(RecordBatch) -> Result<()>,
) -> Result<()> {
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if total == 0 {
        return Ok(());
    }
    let schema = table.schema();
    let columns: Vec<SortColumn> = table
        .sort_columns()
        .iter()
        .map(|c| {
            let idx = schema.index_of(c).expect("sort column");
            let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(idx).as_ref()).collect();
            Ok(SortColumn {
                values: concat(&parts)?,
                options: Some(SortOptions::default()),
            })
        })
        .collect::<Result<_>>()?;
    let order = lexsort_to_indices(&columns, None)?;
    drop(columns);
    let mut starts = Vec::with_capacity(batches.len());
    let mut seen = 0usize;
    for b in batches {
        starts.push(seen);
        seen += b.num_rows();
    }
    let locate = |g: usize| {
        let b = starts.partition_point(|s| *s <= g) - 1;
        (b, g - starts[b])
    };
    let sizes = RowSizes::new(batches);
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    let mut slice: Vec<(usize, usize)> = Vec::with_capacity(SLICE_ROWS);
    let mut slice_bytes = 0usize;
    for g in order.values() {
        let (b, r) = locate(*g as usize);
        let bytes = sizes.row(b, r);
        if !slice.is_empty() && (slice.len() == SLICE_ROWS || slice_bytes + bytes > SLICE_BYTES) {
            out(interleave_record_batch(&refs, &slice)?)?;
            slice.clear();
            slice_bytes = 0;
        }
        slice.push((b, r));
        slice_bytes += bytes;
    }
    if !slice.is_empty() {
        out(interleave_record_batch(&refs, &slice)?)?;
    }
    Ok(())
}

/// The largest row of `batch` in bytes, as [`RowSizes`] counts them (0 for no rows).
pub(super) fn max_row_bytes(batch: &RecordBatch) -> usize {
    let batches = std::slice::from_ref(batch);
    let sizes = RowSizes::new(batches);
    (0..batch.num_rows())
        .map(|r| sizes.row(0, r))
        .max()
        .unwrap_or(0)
}

/// Approximate bytes of each row: its variable-length values plus 8 bytes a column.
struct RowSizes<'a> {
    /// Per batch, the offsets of each string column.
    offsets: Vec<Vec<&'a [i32]>>,
    fixed: usize,
}

impl<'a> RowSizes<'a> {
    fn new(batches: &'a [RecordBatch]) -> Self {
        let offsets = batches
            .iter()
            .map(|b| {
                b.columns()
                    .iter()
                    .filter(|c| c.data_type() == &DataType::Utf8)
                    .map(|c| c.as_string::<i32>().value_offsets())
                    .collect()
            })
            .collect();
        let fixed = batches.first().map_or(0, |b| b.num_columns() * 8);
        Self { offsets, fixed }
    }

    fn row(&self, batch: usize, row: usize) -> usize {
        self.fixed
            + self.offsets[batch]
                .iter()
                .map(|o| (o[row + 1] - o[row]) as usize)
                .sum::<usize>()
    }
}

/// A spilled run: one Arrow IPC file holding rows of many days, each day's rows sorted.
pub(super) struct RunFile {
    pub path: PathBuf,
    /// Per day, the indices of its batches in the file, in order.
    pub days: BTreeMap<i32, Vec<usize>>,
}

/// Writes one run of `table` from each day's buffered batches (days in any order).
pub(super) fn write_run(
    path: &Path,
    table: Table,
    days: &[(i32, Vec<RecordBatch>)],
) -> Result<RunFile> {
    let io = |e: std::io::Error| Error::io("cannot spill to", path, e);
    let file = File::create(path).map_err(io)?;
    let mut writer = FileWriter::try_new(BufWriter::new(file), &table.schema())?;
    let mut index: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    let mut next = 0usize;
    let mut sorted: Vec<&(i32, Vec<RecordBatch>)> = days.iter().collect();
    sorted.sort_by_key(|(d, _)| *d);
    for (day, batches) in sorted {
        for_each_sorted_slice(table, batches, |slice| {
            writer.write(&slice)?;
            index.entry(*day).or_default().push(next);
            next += 1;
            Ok(())
        })?;
    }
    writer.finish()?;
    Ok(RunFile {
        path: path.to_path_buf(),
        days: index,
    })
}

/// The id column of every row of `run` (for confirming that an id was seen by this ingest).
pub(super) fn run_ids(run: &Path, table: Table) -> Result<Vec<RecordBatch>> {
    let file = File::open(run).map_err(|e| Error::io("cannot read", run, e))?;
    let idx = table.schema().index_of(table.id_column())?;
    let reader = FileReader::try_new_buffered(file, Some(vec![idx]))?;
    reader.map(|b| Ok(b?)).collect()
}

/// A spilled run opened for reading, shared by the merges of all its days: its footer, which
/// lists a batch per day and slice, is read once, not once per day (with years of days that
/// alone was quadratic).
pub(super) struct OpenRun {
    path: PathBuf,
    reader: std::sync::Mutex<FileReader<std::io::BufReader<File>>>,
}

impl OpenRun {
    pub(super) fn open(path: &Path) -> Result<Arc<Self>> {
        let file = File::open(path).map_err(|e| Error::io("cannot read", path, e))?;
        Ok(Arc::new(Self {
            path: path.to_path_buf(),
            reader: std::sync::Mutex::new(FileReader::try_new_buffered(file, None)?),
        }))
    }

    /// Batch `i` of the run.
    fn batch(&self, i: usize) -> Result<RecordBatch> {
        let mut reader = self
            .reader
            .lock()
            .map_err(|_| Error::runtime("a merge of a spilled run panicked"))?;
        reader.set_index(i)?;
        match reader.next() {
            Some(b) => Ok(b?),
            None => Err(Error::runtime(format!(
                "spilled run {} ends before its batch {i}",
                self.path.display()
            ))),
        }
    }
}

/// Where one day's sorted rows are.
pub(super) enum Sorted {
    /// Batches `batches` of a run file.
    Run {
        run: Arc<OpenRun>,
        batches: Vec<usize>,
    },
    /// A sorted Parquet file written by this ingest.
    Parquet(PathBuf),
}

/// Merges one day's sorted sources into one sorted Parquet file at `out` (with its id-hash
/// file when the table keeps them). `max_row_bytes` bounds a row's size (the largest row this
/// ingest parsed); the merge's batches are sized so that their string columns cannot overflow,
/// and as large as that allows. Returns the rows written.
pub(super) async fn merge_day(
    table: Table,
    sources: Vec<Sorted>,
    out: &Path,
    max_row_bytes: usize,
) -> Result<u64> {
    let schema = table.schema();
    let mut streams: Vec<SendableRecordBatchStream> = Vec::with_capacity(sources.len());
    for s in sources {
        let batches: Box<dyn Iterator<Item = Result<RecordBatch>> + Send> = match s {
            Sorted::Run { run, batches } => {
                Box::new(batches.into_iter().map(move |i| run.batch(i)))
            }
            Sorted::Parquet(path) => {
                let file = File::open(&path).map_err(|e| Error::io("cannot read", &path, e))?;
                let reader = ParquetRecordBatchReaderBuilder::try_new(file)?
                    .with_batch_size(SLICE_ROWS)
                    .build()?;
                Box::new(reader.map(|b| Ok(b?)))
            }
        };
        let schema_for = schema.clone();
        let stream = futures::stream::iter(batches.map(move |b| {
            b.and_then(|b| {
                Ok(RecordBatch::try_new(
                    schema_for.clone(),
                    b.columns().to_vec(),
                )?)
            })
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
        }));
        streams.push(Box::pin(RecordBatchStreamAdapter::new(
            schema.clone(),
            stream,
        )));
    }
    let ordering = LexOrdering::new(table.sort_columns().iter().map(|c| {
        let idx = schema.index_of(c).expect("sort column");
        PhysicalSortExpr::new(Arc::new(Column::new(c, idx)), SortOptions::default())
    }))
    .expect("tables have sort columns");
    let pool: Arc<dyn MemoryPool> = Arc::new(UnboundedMemoryPool::default());
    let batch_rows = (MERGE_BATCH_BYTES / max_row_bytes.max(1)).clamp(1, MERGE_BATCH_ROWS);
    let merged = StreamingMergeBuilder::new()
        .with_streams(streams)
        .with_schema(schema.clone())
        .with_expressions(&ordering)
        .with_metrics(BaselineMetrics::new(&ExecutionPlanMetricsSet::new(), 0))
        .with_batch_size(batch_rows)
        .with_reservation(MemoryConsumer::new("ingest merge").register(&pool))
        .build()?;
    crate::lake::write_sorted_stream(merged, out, table).await
}
