//! Parquet encoding on two threads: the columns of each row group are split between the calling
//! thread and a helper (by size, so that each gets about half the bytes), and encoded at once.
//!
//! The file is the one [`ArrowWriter`] would write, byte for byte: the same column writers, fed
//! the same slices, closed into row groups at the same rows. Only the work is shared. A day's
//! final merge in an ingest, and a compaction, otherwise encode on one core while the other
//! idles once every other partition is done (a one-day ingest spent half its time so).

use std::fs::File;

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves,
};
use parquet::errors::{ParquetError, Result};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;

/// Writes batches of one schema to a Parquet file, encoding columns in parallel.
pub struct ParallelWriter {
    file: SerializedFileWriter<File>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    /// The open row group: its writers on this thread (by column), and its rows so far.
    open: Option<Vec<(usize, ArrowColumnWriter)>>,
    buffered_rows: usize,
    max_rows: usize,
    /// The thread encoding the other columns (started with the first row group); none when the
    /// machine has one core or the schema is nested (one writer per leaf, not per column).
    helper: Option<Helper>,
    parallel: bool,
}

/// A long-lived encoder thread: it keeps its allocator's memory between batches, where a thread
/// per batch spent more on fresh pages than it saved (measured: 10% more CPU for a slower ingest).
struct Helper {
    jobs: SyncSender<Job>,
    done: Receiver<Reply>,
    /// Columns it encodes, chosen from the first batch's sizes.
    columns: Vec<bool>,
    /// Memory of its writers after the last batch.
    memory: usize,
}

enum Job {
    Open(Vec<(usize, ArrowColumnWriter)>),
    Encode(RecordBatch),
    Close,
}

enum Reply {
    Encoded(Result<usize>),
    Closed(Result<Vec<(usize, ArrowColumnChunk)>>),
}

/// Rows the first batch of a file needs for its columns to be encoded on two threads.
const PARALLEL_MIN_ROWS: usize = 1024;

impl ParallelWriter {
    pub fn try_new(file: File, schema: SchemaRef, props: WriterProperties) -> Result<Self> {
        let max_rows = props.max_row_group_row_count().unwrap_or(usize::MAX);
        // ArrowWriter adds the Arrow schema to the file's metadata, as readers expect.
        let (file, factory) =
            ArrowWriter::try_new(file, schema.clone(), Some(props))?.into_serialized_writer()?;
        let flat = schema.fields().len() == file.schema_descr().num_columns();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Self {
            file,
            factory,
            schema,
            open: None,
            buffered_rows: 0,
            max_rows: max_rows.max(1),
            helper: None,
            parallel: flat && cores > 1,
        })
    }

    /// Appends a batch, starting a new row group past the row limit (as [`ArrowWriter::write`]).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut rest = batch.clone();
        while rest.num_rows() > 0 {
            if self.open.is_none() {
                self.open_row_group(&rest)?;
            }
            let take = rest.num_rows().min(self.max_rows - self.buffered_rows);
            let part = rest.slice(0, take);
            rest = rest.slice(take, rest.num_rows() - take);
            self.encode(&part)?;
            self.buffered_rows += take;
            if self.buffered_rows >= self.max_rows {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Memory held by the open row group (encoded pages and buffered values).
    pub fn in_progress_size(&self) -> usize {
        let here: usize = self
            .open
            .as_ref()
            .map_or(0, |w| w.iter().map(|(_, w)| w.memory_size()).sum());
        here + self.helper.as_ref().map_or(0, |h| h.memory)
    }

    /// Closes the open row group, if any rows are in it.
    pub fn flush(&mut self) -> Result<()> {
        let Some(mine) = self.open.take() else {
            return Ok(());
        };
        self.buffered_rows = 0;
        let mut chunks = Vec::with_capacity(self.schema.fields().len());
        if let Some(h) = &mut self.helper {
            h.send(Job::Close)?;
            h.memory = 0;
            match h.recv()? {
                Reply::Closed(theirs) => chunks.extend(theirs?),
                Reply::Encoded(_) => return Err(out_of_step()),
            }
        }
        for (i, w) in mine {
            chunks.push((i, w.close()?));
        }
        chunks.sort_by_key(|(i, _)| *i);
        let mut row_group = self.file.next_row_group()?;
        for (_, chunk) in chunks {
            chunk.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
        Ok(())
    }

    /// Closes the last row group and writes the footer; returns the file.
    pub fn into_inner(mut self) -> Result<File> {
        self.flush()?;
        self.file.into_inner()
    }

    /// Creates the row group's writers and hands the helper its share.
    fn open_row_group(&mut self, first: &RecordBatch) -> Result<()> {
        let index = self.file.flushed_row_groups().len();
        let writers = self.factory.create_column_writers(index)?;
        // A file that starts small (one of years of daily partitions, a few events each) is
        // encoded here: a helper thread would cost more than it saves.
        if !self.parallel || (self.helper.is_none() && first.num_rows() < PARALLEL_MIN_ROWS) {
            self.open = Some(writers.into_iter().enumerate().collect());
            return Ok(());
        }
        let helper = match &mut self.helper {
            Some(h) => h,
            None => self.helper.insert(Helper::start(
                split_by_size(first.columns()),
                self.schema.clone(),
            )),
        };
        let (theirs, mine): (Vec<_>, Vec<_>) = writers
            .into_iter()
            .enumerate()
            .partition(|(i, _)| helper.columns[*i]);
        helper.send(Job::Open(theirs))?;
        self.open = Some(mine);
        Ok(())
    }

    fn encode(&mut self, batch: &RecordBatch) -> Result<()> {
        let fields = self.schema.fields();
        let mine = self.open.as_mut().expect("a row group is open");
        let Some(helper) = &mut self.helper else {
            let mut writers = mine.iter_mut();
            for (field, column) in fields.iter().zip(batch.columns()) {
                for leaf in compute_leaves(field, column)? {
                    let (_, w) = writers
                        .next()
                        .ok_or_else(|| ParquetError::General("more leaves than writers".into()))?;
                    w.write(&leaf)?;
                }
            }
            return Ok(());
        };
        helper.send(Job::Encode(batch.clone()))?;
        let here = encode_columns(mine, fields, batch);
        let there = match helper.recv()? {
            Reply::Encoded(r) => r,
            Reply::Closed(_) => return Err(out_of_step()),
        };
        here?;
        helper.memory = there?;
        Ok(())
    }
}

impl Helper {
    fn start(columns: Vec<bool>, schema: SchemaRef) -> Self {
        let (jobs, inbox) = sync_channel::<Job>(1);
        let (outbox, done) = sync_channel::<Reply>(1);
        std::thread::spawn(move || {
            let mut writers: Vec<(usize, ArrowColumnWriter)> = Vec::new();
            for job in inbox {
                let reply = match job {
                    Job::Open(w) => {
                        writers = w;
                        continue;
                    }
                    Job::Encode(batch) => Reply::Encoded(
                        encode_columns(&mut writers, schema.fields(), &batch)
                            .map(|()| writers.iter().map(|(_, w)| w.memory_size()).sum()),
                    ),
                    Job::Close => Reply::Closed(
                        std::mem::take(&mut writers)
                            .into_iter()
                            .map(|(i, w)| Ok((i, w.close()?)))
                            .collect(),
                    ),
                };
                if outbox.send(reply).is_err() {
                    break;
                }
            }
        });
        Self {
            jobs,
            done,
            columns,
            memory: 0,
        }
    }

    fn send(&self, job: Job) -> Result<()> {
        self.jobs
            .send(job)
            .map_err(|_| ParquetError::General("the Parquet encoder thread stopped".into()))
    }

    fn recv(&self) -> Result<Reply> {
        self.done
            .recv()
            .map_err(|_| ParquetError::General("the Parquet encoder thread stopped".into()))
    }
}

fn out_of_step() -> ParquetError {
    ParquetError::General("the Parquet encoder thread answered out of step".into())
}

/// Encodes the columns of `batch` that `writers` hold (flat schema: one writer per column).
fn encode_columns(
    writers: &mut [(usize, ArrowColumnWriter)],
    fields: &arrow::datatypes::Fields,
    batch: &RecordBatch,
) -> Result<()> {
    for (i, w) in writers {
        for leaf in compute_leaves(&fields[*i], batch.column(*i))? {
            w.write(&leaf)?;
        }
    }
    Ok(())
}

/// Which columns go to the helper: largest first, each to the lighter side, so both threads
/// encode about the same bytes.
fn split_by_size(columns: &[ArrayRef]) -> Vec<bool> {
    let mut order: Vec<(usize, usize)> = columns
        .iter()
        .map(|c| c.get_array_memory_size())
        .enumerate()
        .collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut helper = vec![false; columns.len()];
    let (mut here, mut there) = (0usize, 0usize);
    for (i, size) in order {
        if there < here {
            helper[i] = true;
            there += size;
        } else {
            here += size;
        }
    }
    helper
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::{Table, writer_properties};
    use arrow::array::{Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use std::sync::Arc;

    /// Batches of the events table with varied values, nulls and long strings.
    fn batches(rows: usize, per_batch: usize) -> Vec<RecordBatch> {
        let schema = Table::Events.schema();
        let mut out = Vec::new();
        let mut start = 0;
        while start < rows {
            let n = per_batch.min(rows - start);
            let columns: Vec<ArrayRef> = schema
                .fields()
                .iter()
                .map(|f| -> ArrayRef {
                    let v = |i: usize| (start + i) * 7919 % 1013;
                    match f.data_type() {
                        arrow::datatypes::DataType::Utf8 => {
                            Arc::new(StringArray::from_iter((0..n).map(|i| {
                                match (f.name().as_str(), v(i)) {
                                    (_, x) if f.is_nullable() && x % 11 == 0 => None,
                                    ("input" | "output", x) => Some("text ".repeat(x % 90)),
                                    (name, x) => Some(format!("{name}-{}", x % 5)),
                                }
                            })))
                        }
                        arrow::datatypes::DataType::Int64 => {
                            Arc::new(Int64Array::from_iter((0..n).map(|i| {
                                (!f.is_nullable() || v(i) % 13 != 0).then_some(v(i) as i64)
                            })))
                        }
                        arrow::datatypes::DataType::Float64 => Arc::new(Float64Array::from_iter(
                            (0..n).map(|i| Some(v(i) as f64 / 3.0)),
                        )),
                        arrow::datatypes::DataType::Timestamp(_, tz) => Arc::new(
                            TimestampMicrosecondArray::from_iter_values(
                                (0..n).map(|i| 1_700_000_000_000_000 + (start + i) as i64),
                            )
                            .with_timezone_opt(tz.clone()),
                        ),
                        other => panic!("the test does not build {other}"),
                    }
                })
                .collect();
            out.push(RecordBatch::try_new(schema.clone(), columns).unwrap());
            start += n;
        }
        out
    }

    #[test]
    fn writes_the_file_arrow_writer_writes_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        // Row groups of 3,000 rows, batches of 1,300: batches straddle row-group boundaries,
        // and the last row group is partial.
        let props = || {
            let mut p = writer_properties(Table::Events).into_builder();
            p = p.set_max_row_group_row_count(Some(3_000));
            p.build()
        };
        let input = batches(10_250, 1_300);
        let serial = dir.path().join("serial.parquet");
        let mut w = ArrowWriter::try_new(
            File::create(&serial).unwrap(),
            Table::Events.schema(),
            Some(props()),
        )
        .unwrap();
        for b in &input {
            w.write(b).unwrap();
        }
        w.close().unwrap();
        let parallel = dir.path().join("parallel.parquet");
        let mut p = ParallelWriter::try_new(
            File::create(&parallel).unwrap(),
            Table::Events.schema(),
            props(),
        )
        .unwrap();
        assert!(p.parallel, "the test must run the two-thread path");
        for b in &input {
            p.write(b).unwrap();
        }
        assert!(p.helper.is_some(), "the helper thread encoded columns");
        p.into_inner().unwrap();
        let (a, b) = (
            std::fs::read(&serial).unwrap(),
            std::fs::read(&parallel).unwrap(),
        );
        assert!(a.len() > 100_000, "a real file: {} bytes", a.len());
        assert!(a == b, "files differ: {} and {} bytes", a.len(), b.len());
    }

    #[test]
    fn splits_columns_so_both_threads_get_about_half_the_bytes() {
        let cols: Vec<ArrayRef> = [900usize, 500, 300, 200, 100]
            .iter()
            .map(|n| Arc::new(Int64Array::from(vec![0i64; *n])) as ArrayRef)
            .collect();
        let helper = split_by_size(&cols);
        let size = |on: bool| -> usize {
            cols.iter()
                .zip(&helper)
                .filter(|(_, h)| **h == on)
                .map(|(c, _)| c.get_array_memory_size())
                .sum()
        };
        let (here, there) = (size(false), size(true));
        assert!(here.abs_diff(there) <= 100 * 8 + 64, "{here} vs {there}");
        assert!(helper.iter().any(|h| *h) && helper.iter().any(|h| !*h));
    }
}
