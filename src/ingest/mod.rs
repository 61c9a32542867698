//! Ingest: NDJSON or CSV in, validated and deduplicated Parquet files out, atomically.
//!
//! The pipeline: a reader cuts the input into chunks of lines; chunks are parsed and validated
//! in parallel (rayon) into per-day Arrow batches plus rejects; batches wait in per-day buffers.
//! When the buffers pass the memory budget, days no longer being added to (input in time order
//! leaves days behind) are written as sorted Parquet files in staging; if that is not enough
//! (input in random order keeps every day busy), all buffered rows are spilled as one sorted
//! run (see [`runs`]). Every write first drops ids already in the lake or already taken by this
//! ingest. At the end each day whose rows lie in more than one place is merged into one file, so
//! an ingest adds one file per `date=` partition. Rejects go to the quarantine verbatim; finally
//! the lake's writer lock commits everything at once (see [`crate::lake`]).
//!
//! Memory is bounded by the budget (up to three times it: the buffers being filled and two
//! being written), the chunks being parsed, and during the final merges one slice of each
//! source, whatever the input size or order.

mod batch;
mod csv;
mod dedupe;
mod label_index;
mod lines;
mod ndjson;
pub mod otlp;
mod quarantine;
mod records;
mod runs;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::File;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::lake::{self, Lake, Snapshot, Table, Transaction, ids};
use lines::{LineChunker, Piece};
use quarantine::{Quarantine, SourceToken};
use records::{ChunkSink, Parsed};
use runs::{RunFile, Sorted};

pub(crate) use ndjson::event_fields;
pub use records::RecordKind;

/// Input format of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    Ndjson,
    Csv,
    /// OpenTelemetry OTLP/JSON traces, one export request per line (as the Collector's file
    /// exporter writes them): GenAI spans become events (see [`otlp`]).
    Otlp,
}

impl InputFormat {
    /// The format a file name implies: `.csv` (or `.csv.gz`) is CSV, anything else NDJSON.
    pub fn from_path(path: &str) -> Self {
        let lower = path.to_ascii_lowercase();
        if lower.trim_end_matches(".gz").ends_with(".csv") {
            InputFormat::Csv
        } else {
            InputFormat::Ndjson
        }
    }
}

/// Options of one ingest.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Force a format; by default it follows the file extension.
    pub format: Option<InputFormat>,
    pub kind: RecordKind,
    /// Lines longer than this are rejected (and streamed to quarantine, not buffered).
    pub max_line_bytes: usize,
    /// Commit nothing but the quarantine when any record is rejected.
    pub strict: bool,
    /// Show a progress bar (only drawn when stderr is a terminal).
    pub progress: bool,
    /// Arrow memory held in day buffers before they are written to files or spilled as a run.
    pub buffer_bytes: usize,
    /// Bytes of input handed to one parser thread at a time.
    pub chunk_bytes: usize,
    /// How OTLP span attributes map to event fields ([`InputFormat::Otlp`] sources).
    pub otlp: Arc<otlp::OtlpMapping>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            format: None,
            kind: RecordKind::Events,
            max_line_bytes: 1 << 20,
            strict: false,
            progress: true,
            buffer_bytes: 128 << 20,
            chunk_bytes: 4 << 20,
            otlp: Arc::new(otlp::OtlpMapping::default()),
        }
    }
}

/// The largest `--max-line-bytes`: a chunk of lines must stay well under Arrow's 2 GiB limit
/// on one string column.
pub const MAX_LINE_BYTES_LIMIT: usize = 1 << 30;

impl IngestOptions {
    /// Rejects options no ingest can honour (a usage error, exit 2).
    pub fn check(&self) -> Result<()> {
        if self.max_line_bytes == 0 || self.max_line_bytes > MAX_LINE_BYTES_LIMIT {
            return Err(Error::usage(format!(
                "--max-line-bytes {} is out of range",
                self.max_line_bytes
            ))
            .with_hint(format!("use 1 to {MAX_LINE_BYTES_LIMIT} (1 GiB)")));
        }
        if self.buffer_bytes < 1 << 20 {
            return Err(Error::usage("--buffer-mib must be at least 1")
                .with_hint("the default, 128, suits most machines"));
        }
        Ok(())
    }
}

/// What an ingest did. Invariant: `read == accepted + duplicates + rejected`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct IngestReport {
    pub read: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    /// Directory holding the rejected records and their reasons, when there were any.
    pub quarantine: Option<PathBuf>,
    /// OTLP spans without `gen_ai.*` attributes (not LLM calls): not records, not counted in
    /// `read`.
    #[serde(skip_serializing_if = "is_zero")]
    pub skipped: u64,
    /// Labels that came inline on events and were added to `llm_labels`.
    #[serde(skip_serializing_if = "is_zero")]
    pub inline_labels: u64,
    /// Labeled events added to the `llm_labeled_events` index (events of this run that a label
    /// names, and events of the lake named by this run's labels).
    #[serde(skip_serializing_if = "is_zero")]
    pub labeled_events_indexed: u64,
    /// False when `--strict` refused to commit because of rejects.
    pub committed: bool,
    /// The lake version that holds this ingest (None when it added nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lake_version: Option<u64>,
    /// Partitions whose small files were merged after the commit (see `lake::compact`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub compacted: Vec<CompactedTable>,
    /// Files older than the retention period that no version needs any more, deleted.
    #[serde(skip_serializing_if = "is_zero")]
    pub vacuumed_files: u64,
}

/// Compaction run by an ingest after its commit, per table.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CompactedTable {
    pub table: &'static str,
    pub partitions: usize,
    pub files_before: usize,
    pub files_after: usize,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A named input: a file or standard input.
pub struct Source {
    pub name: String,
    pub format: InputFormat,
    reader: Box<dyn Read + Send>,
    size: Option<u64>,
}

impl Source {
    /// Opens every input up front, so an unreadable one fails the ingest before anything is
    /// written. `-` is standard input.
    pub fn open_all(paths: &[String], format: Option<InputFormat>) -> Result<Vec<Source>> {
        let paths: Vec<String> = if paths.is_empty() {
            vec!["-".into()]
        } else {
            paths.to_vec()
        };
        paths
            .iter()
            .map(|p| {
                let fmt = format.unwrap_or_else(|| InputFormat::from_path(p));
                if p == "-" {
                    return Ok(Source {
                        name: "stdin".into(),
                        format: fmt,
                        reader: Box::new(std::io::stdin()),
                        size: None,
                    });
                }
                let path = Path::new(p);
                if path.is_dir() {
                    return Err(
                        Error::input(format!("{p} is a directory, not a file")).with_hint(
                            "pass the files inside it, e.g. `promptgate ingest dir/*.ndjson`",
                        ),
                    );
                }
                let file = File::open(path).map_err(|e| {
                    Error::input(format!("cannot read {p}: {e}"))
                        .with_hint("check the path; nothing was ingested")
                })?;
                let size = file.metadata().ok().map(|m| m.len());
                // Gzip (`.gz`, also concatenated members, as rotated logs often are).
                let reader: Box<dyn Read + Send> = if p.to_ascii_lowercase().ends_with(".gz") {
                    Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
                        file,
                    )))
                } else {
                    Box::new(file)
                };
                Ok(Source {
                    name: p.clone(),
                    format: fmt,
                    reader,
                    // Progress counts input bytes; a compressed size would mislead it.
                    size: if p.to_ascii_lowercase().ends_with(".gz") {
                        None
                    } else {
                        size
                    },
                })
            })
            .collect()
    }

    /// A source over in-memory or other readers (for tests and the demo).
    pub fn from_reader(name: &str, format: InputFormat, reader: Box<dyn Read + Send>) -> Self {
        Source {
            name: name.into(),
            format,
            reader,
            size: None,
        }
    }
}

/// Ingests `sources` into `lake`. On error nothing is committed and the lake is as it was.
pub async fn ingest(
    lake: &Lake,
    sources: Vec<Source>,
    opts: &IngestOptions,
) -> Result<IngestReport> {
    let lock = lake.lock().await?;
    let snapshot = lock.snapshot();
    let mut tx = lock.begin()?;
    let quarantine_dir = tx.dir().join("quarantine");
    let index = label_index::LabelIndex::load(snapshot).await?;
    let mut run = Run {
        opts,
        snapshot,
        buffers: BTreeMap::new(),
        buffered_bytes: 0,
        chunks_seen: 0,
        runs: Default::default(),
        direct: BTreeMap::new(),
        spilled_days: BTreeSet::new(),
        max_row_bytes: 0,
        report: IngestReport::default(),
        quarantine: Quarantine::new(quarantine_dir),
        writers: VecDeque::new(),
        run_ids: Default::default(),
        index,
        now_us: chrono::Utc::now().timestamp_micros(),
    };
    let total: Option<u64> = sources.iter().map(|s| s.size).sum();
    let bar = progress_bar(opts.progress, total);
    for source in sources {
        run.read_source(&mut tx, source, &bar).await?;
    }
    bar.finish_and_clear();
    run.flush_all(&mut tx).await?;
    run.join_writers()?;
    run.merge_days(&mut tx).await?;

    let rejected = run.quarantine.count();
    debug_assert_eq!(rejected, run.report.rejected);
    let q = run.quarantine.finish()?;
    let mut report = run.report;
    if let Some(dir) = q {
        let final_rel = PathBuf::from("quarantine").join(tx.id());
        report.quarantine = Some(lake.location_of(&final_rel));
        if opts.strict && rejected > 0 {
            // Keep the reasons, add nothing else.
            let mut qtx = lock.begin()?;
            let moved = qtx.dir().join("q");
            std::fs::rename(&dir, &moved).map_err(|e| Error::io("cannot stage", &moved, e))?;
            qtx.add_move(&moved, final_rel);
            drop(tx);
            qtx.commit("quarantine").await?;
            report.committed = false;
            return Ok(report);
        }
        tx.add_move(&dir, final_rel);
    }
    report.labeled_events_indexed = run.index.finish(snapshot, &mut tx).await?;
    report.lake_version = tx.commit("ingest").await?.version;
    report.committed = true;
    drop(lock);
    if report.lake_version.is_some() {
        maintain(lake, &mut report).await;
    }
    Ok(report)
}

/// After an ingest's commit: merges partitions that now hold many small files and vacuums
/// files past the retention period. The ingest is committed whatever happens here, so a
/// failure is a warning (the next ingest, `compact` or `vacuum` tries again), not an error.
async fn maintain(lake: &Lake, report: &mut IngestReport) {
    match lake::compact_small_files(lake).await {
        Ok(done) => {
            report.compacted = done
                .into_iter()
                .map(|(t, r)| CompactedTable {
                    table: t.name(),
                    partitions: r.partitions,
                    files_before: r.files_before,
                    files_after: r.files_after,
                })
                .collect();
        }
        Err(e) => {
            eprintln!("warning: the ingest is committed, but compacting its partitions failed: {e}")
        }
    }
    let vacuumed = match lake::retention_hours(None) {
        Ok(hours) => lake::vacuum(lake, hours, false).await,
        Err(e) => Err(e),
    };
    match vacuumed {
        Ok(v) => report.vacuumed_files = v.files as u64,
        Err(e) => {
            eprintln!("warning: the ingest is committed, but the vacuum after it failed: {e}")
        }
    }
}

fn progress_bar(enabled: bool, total: Option<u64>) -> ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    match total {
        Some(t) => ProgressBar::new(t).with_style(
            ProgressStyle::with_template(
                "{spinner} ingesting [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} ingesting {bytes} {bytes_per_sec}")
                .expect("valid template"),
        ),
    }
}

/// Prefixes an error with the source it came from.
fn in_source(name: &str) -> impl Fn(Error) -> Error + '_ {
    move |e| Error {
        message: format!("{name}: {}", e.message),
        ..e
    }
}

/// State of one ingest run.
struct Run<'a> {
    opts: &'a IngestOptions,
    snapshot: &'a Snapshot,
    /// Per (table, day) batches waiting to be written.
    buffers: BTreeMap<(TableKey, i32), DayBuffer>,
    buffered_bytes: usize,
    /// Chunks absorbed so far (a day not added to for [`COLD_CHUNKS`] of them is taken as done).
    chunks_seen: u64,
    /// Runs spilled by this ingest and finished, per table.
    runs: [Vec<RunFile>; 2],
    /// Files written straight from a day's buffer by this ingest, per table and day.
    direct: BTreeMap<(TableKey, i32), Vec<PathBuf>>,
    /// Days with rows in a run (finished or being written): merged at the end.
    spilled_days: BTreeSet<(TableKey, i32)>,
    /// The largest row parsed so far: sizes the final merge's batches.
    max_row_bytes: usize,
    report: IngestReport,
    quarantine: Quarantine,
    writers: VecDeque<Writer>,
    /// Ids accepted by this run so far, per table (events, labels).
    run_ids: [dedupe::RunIds; 2],
    /// Labeled events this run adds to the index.
    index: label_index::LabelIndex,
    now_us: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TableKey {
    Events,
    Labels,
}

impl TableKey {
    fn table(self) -> Table {
        match self {
            TableKey::Events => Table::Events,
            TableKey::Labels => Table::Labels,
        }
    }
}

#[derive(Default)]
struct DayBuffer {
    batches: Vec<RecordBatch>,
    bytes: usize,
    /// The chunk that last added to it.
    last_chunk: u64,
}

/// Chunks (of about 4 MiB of input) a day's buffer must go without new rows before it is
/// written as a file of its own rather than spilled with the others. Input in time order leaves
/// a day behind for good; input in random order touches every day in every chunk (a chunk holds
/// thousands of records), so a day it skips twice in a row is rare, and still correct: the day's
/// file is merged with its later rows at the end.
const COLD_CHUNKS: u64 = 2;

/// Where buffered days go when memory is short.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Destination {
    /// One sorted Parquet file per day (final unless the day gets more rows later); a day that
    /// already has rows in a run joins a run instead.
    Files,
    /// One sorted run per table, merged per day at the end.
    Run,
}

impl Run<'_> {
    async fn read_source(
        &mut self,
        tx: &mut Transaction<'_>,
        source: Source,
        bar: &ProgressBar,
    ) -> Result<()> {
        let Source {
            name,
            format,
            reader,
            ..
        } = source;
        let (kind, now, max_line) = (self.opts.kind, self.now_us, self.opts.max_line_bytes);
        match format {
            InputFormat::Ndjson => {
                let token = self.quarantine.start_source(&name, None);
                let chunker = LineChunker::new(reader, self.opts.chunk_bytes, max_line);
                let parse = |c: &lines::LineChunk| parse_chunk(c, kind, now, max_line);
                self.read_chunked(tx, &name, &token, chunker, parse, bar)
                    .await
            }
            InputFormat::Otlp => {
                if kind == RecordKind::Labels {
                    return Err(Error::usage(
                        "--format otlp reads spans as events; labels come as NDJSON or CSV",
                    ));
                }
                let token = self.quarantine.start_source(&name, None);
                let chunker = LineChunker::new(reader, self.opts.chunk_bytes, max_line);
                let mapping = self.opts.otlp.clone();
                let parse = |c: &lines::LineChunk| parse_otlp_chunk(c, &mapping, now, max_line);
                self.read_chunked(tx, &name, &token, chunker, parse, bar)
                    .await
            }
            InputFormat::Csv => {
                let (chunker, header, header_line) =
                    csv::CsvChunker::open(reader, kind, self.opts.chunk_bytes, max_line)
                        .map_err(in_source(&name))?;
                let token = self.quarantine.start_source(&name, Some(header_line));
                let parse = |c: &csv::CsvChunk| csv::parse_chunk(c, &header, kind, now);
                self.read_chunked(tx, &name, &token, chunker, parse, bar)
                    .await
            }
        }
    }

    /// Reads a source chunk by chunk, parsing each group of chunks in parallel while the next
    /// group is read (the first round only reads).
    async fn read_chunked<C: Chunker>(
        &mut self,
        tx: &mut Transaction<'_>,
        name: &str,
        token: &SourceToken,
        mut chunker: C,
        parse: impl Fn(&C::Chunk) -> Parsed + Sync,
        bar: &ProgressBar,
    ) -> Result<()> {
        let group = rayon::current_num_threads().max(1) * 2;
        let max_line = self.opts.max_line_bytes;
        let spill_dir = tx.dir().to_path_buf();
        let mut group_of_chunks: Vec<C::Chunk> = Vec::new();
        loop {
            let (parsed, next) = rayon::join(
                || {
                    group_of_chunks
                        .par_iter()
                        .map(&parse)
                        .collect::<Vec<Parsed>>()
                },
                || {
                    let mut oversize = Vec::new();
                    let next = read_chunks(&mut chunker, group, &spill_dir, &mut oversize);
                    (next, oversize)
                },
            );
            for p in parsed {
                self.absorb(tx, token, p).await?;
            }
            let (next, oversize) = next;
            for o in oversize {
                self.quarantine_oversize(token, o, max_line)?;
            }
            bar.set_position(chunker.consumed());
            group_of_chunks = next.map_err(in_source(name))?;
            if group_of_chunks.is_empty() {
                return Ok(());
            }
        }
    }

    /// Counts and quarantines a line that was too long to parse.
    fn quarantine_oversize(
        &mut self,
        token: &SourceToken,
        o: Oversize,
        max_line: usize,
    ) -> Result<()> {
        let reason = if o.len > OVERSIZE_KEEP_BYTES {
            format!(
                "line is {} bytes, longer than the {max_line}-byte limit (raise it with --max-line-bytes); only its first {OVERSIZE_KEEP_BYTES} bytes are kept here",
                o.len
            )
        } else {
            format!(
                "line is {} bytes, longer than the {max_line}-byte limit (raise it with --max-line-bytes)",
                o.len
            )
        };
        self.quarantine.begin_record(token, o.line, &reason)?;
        let mut f = File::open(&o.path).map_err(|e| Error::io("cannot read", &o.path, e))?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| Error::io("cannot read", &o.path, e))?;
            if n == 0 {
                break;
            }
            self.quarantine.write_raw(&buf[..n])?;
        }
        self.quarantine.end_record()?;
        let _ = std::fs::remove_file(&o.path);
        self.report.read += 1;
        self.report.rejected += 1;
        Ok(())
    }

    /// Takes a parsed chunk: counts, quarantines rejects, buffers batches, flushes if needed.
    async fn absorb(
        &mut self,
        tx: &mut Transaction<'_>,
        token: &SourceToken,
        p: Parsed,
    ) -> Result<()> {
        self.report.read += p.records;
        self.report.skipped += p.skipped;
        self.report.rejected += p.rejects.len() as u64;
        self.max_row_bytes = self.max_row_bytes.max(p.max_row_bytes);
        for r in &p.rejects {
            self.quarantine.record(token, r)?;
        }
        self.chunks_seen += 1;
        for (key, list) in [(TableKey::Events, p.events), (TableKey::Labels, p.labels)] {
            for (day, batch) in list {
                if key == TableKey::Labels {
                    self.index.add_labels(&batch);
                }
                let bytes = batch.get_array_memory_size();
                let buf = self.buffers.entry((key, day)).or_default();
                buf.batches.push(batch);
                buf.bytes += bytes;
                buf.last_chunk = self.chunks_seen;
                self.buffered_bytes += bytes;
            }
        }
        if self.buffered_bytes > self.opts.buffer_bytes {
            let cold: Vec<_> = self
                .buffers
                .iter()
                .filter(|(_, b)| b.last_chunk + COLD_CHUNKS <= self.chunks_seen)
                .map(|(k, _)| *k)
                .collect();
            self.write_days(tx, cold, Destination::Files).await?;
            if self.buffered_bytes > self.opts.buffer_bytes / 2 {
                let all: Vec<_> = self.buffers.keys().copied().collect();
                self.write_days(tx, all, Destination::Run).await?;
            }
        }
        Ok(())
    }

    async fn flush_all(&mut self, tx: &mut Transaction<'_>) -> Result<()> {
        let keys: Vec<_> = self.buffers.keys().copied().collect();
        self.write_days(tx, keys, Destination::Files).await
    }

    /// Takes the buffers of `keys` out of memory: drops ids already in the lake, spilled,
    /// staged, or being written, then writes what is left (sorted, on background threads while
    /// reading goes on) as one file per day or one run per table.
    async fn write_days(
        &mut self,
        tx: &mut Transaction<'_>,
        keys: Vec<(TableKey, i32)>,
        to: Destination,
    ) -> Result<()> {
        for table_key in [TableKey::Events, TableKey::Labels] {
            let mut days = Vec::new();
            let mut batches = Vec::new();
            for key in keys.iter().filter(|k| k.0 == table_key) {
                if let Some(buf) = self.buffers.remove(key) {
                    self.buffered_bytes -= buf.bytes;
                    days.push((key.1, buf.batches.len()));
                    batches.extend(buf.batches);
                }
            }
            if batches.is_empty() {
                continue;
            }
            while self.writers.len() >= MAX_WRITERS {
                self.join_oldest_writer()?;
            }
            let table = table_key.table();
            let staged = tx.staged_table_dir(table);
            let in_flight: Vec<&[RecordBatch]> = self
                .writers
                .iter()
                .filter(|w| w.table == table)
                .map(|w| w.batches.as_slice())
                .collect();
            let spilled: Vec<&Path> = self.runs[table_key as usize]
                .iter()
                .map(|r| r.path.as_path())
                .collect();
            let run_ids = &mut self.run_ids[table_key as usize];
            let outcome = dedupe::unique_new_rows(
                self.snapshot,
                &staged,
                &spilled,
                table,
                batches,
                &in_flight,
                run_ids,
            )
            .await?;
            let is_primary = match self.opts.kind {
                RecordKind::Events => table == Table::Events,
                RecordKind::Labels => table == Table::Labels,
            };
            if is_primary {
                self.report.duplicates += outcome.duplicates;
                self.report.accepted += outcome.rows;
            } else {
                self.report.inline_labels += outcome.rows;
            }
            // Regroup the surviving rows (and their id hashes, in the same order) by day.
            let mut kept = outcome.batches.into_iter();
            let mut hashes = outcome.id_hashes.into_iter();
            let mut by_day: Vec<(i32, Vec<RecordBatch>, Vec<u64>)> = Vec::new();
            for (day, n) in days {
                let part: Vec<RecordBatch> =
                    kept.by_ref().take(n).filter(|b| b.num_rows() > 0).collect();
                let rows: usize = part.iter().map(RecordBatch::num_rows).sum();
                if rows == 0 {
                    continue;
                }
                let day_hashes: Vec<u64> = hashes.by_ref().take(rows).collect();
                if table == Table::Events {
                    self.index.add_events(day, &part)?;
                }
                by_day.push((day, part, day_hashes));
            }
            match to {
                Destination::Files => {
                    // A day that already has rows in a run is merged at the end anyway: its
                    // rows join a run (a plain copy) instead of a Parquet file that the merge
                    // would decode and encode again.
                    let (merged_later, final_now): (Vec<_>, Vec<_>) = by_day
                        .into_iter()
                        .partition(|(day, _, _)| self.spilled_days.contains(&(table_key, *day)));
                    for (day, part, day_hashes) in final_now {
                        self.write_file(tx, table_key, day, part, day_hashes)?;
                    }
                    if !merged_later.is_empty() {
                        self.spill_run(tx, table_key, merged_later);
                    }
                }
                Destination::Run if !by_day.is_empty() => {
                    self.spill_run(tx, table_key, by_day);
                }
                Destination::Run => {}
            }
        }
        Ok(())
    }

    /// Writes one day's rows as a sorted Parquet file in staging, on a background thread.
    fn write_file(
        &mut self,
        tx: &mut Transaction<'_>,
        key: TableKey,
        day: i32,
        batches: Vec<RecordBatch>,
        id_hashes: Vec<u64>,
    ) -> Result<()> {
        while self.writers.len() >= MAX_WRITERS {
            self.join_oldest_writer()?;
        }
        let table = key.table();
        let path = tx.new_file(table, day);
        if ids::has_id_hashes(table) {
            tx.add_id_hashes(&path);
        }
        self.direct
            .entry((key, day))
            .or_default()
            .push(path.clone());
        let batches = Arc::new(batches);
        let for_thread = batches.clone();
        let id_hashes = ids::has_id_hashes(table).then(|| ids::IdHashes::from_hashes(id_hashes));
        let handle = std::thread::spawn(move || {
            // Written under a name queries ignore, renamed once complete.
            let name = path.file_name().expect("file name").to_string_lossy();
            let tmp = path.with_file_name(format!(".{name}.tmp"));
            dedupe::write_sorted(&tmp, table, &for_thread)?;
            std::fs::rename(&tmp, &path).map_err(|e| Error::io("cannot stage", &path, e))?;
            if let Some(hashes) = id_hashes {
                hashes.write(&path)?;
            }
            Ok(None)
        });
        self.writers.push_back(Writer {
            table,
            key,
            batches,
            handle,
        });
        Ok(())
    }

    /// Spills the rows of many days as one sorted run, on a background thread.
    fn spill_run(
        &mut self,
        tx: &Transaction<'_>,
        key: TableKey,
        by_day: Vec<(i32, Vec<RecordBatch>, Vec<u64>)>,
    ) {
        let table = key.table();
        let path = tx.dir().join(format!(
            "run-{}-{}.arrow",
            table.name(),
            uuid::Uuid::new_v4().simple()
        ));
        let days: Vec<(i32, Vec<RecordBatch>)> =
            by_day.into_iter().map(|(d, b, _)| (d, b)).collect();
        self.spilled_days
            .extend(days.iter().map(|(d, _)| (key, *d)));
        let batches = Arc::new(days.iter().flat_map(|(_, b)| b.clone()).collect());
        let handle = std::thread::spawn(move || Ok(Some(runs::write_run(&path, table, &days)?)));
        self.writers.push_back(Writer {
            table,
            key,
            batches,
            handle,
        });
    }

    /// Merges each day whose rows lie in more than one place (runs, files) into one file.
    async fn merge_days(&mut self, tx: &mut Transaction<'_>) -> Result<()> {
        let mut plan: BTreeMap<(TableKey, i32), Vec<Sorted>> = BTreeMap::new();
        for key in [TableKey::Events, TableKey::Labels] {
            for run in &self.runs[key as usize] {
                let open = runs::OpenRun::open(&run.path)?;
                for (day, batches) in &run.days {
                    plan.entry((key, *day)).or_default().push(Sorted::Run {
                        run: open.clone(),
                        batches: batches.clone(),
                    });
                }
            }
        }
        for (key, files) in &self.direct {
            if files.len() > 1 || plan.contains_key(key) {
                let sources = plan.entry(*key).or_default();
                sources.extend(files.iter().cloned().map(Sorted::Parquet));
            }
        }
        let max_row = self.max_row_bytes.max(1);
        let mut tasks = tokio::task::JoinSet::new();
        let mut pending = plan.into_iter();
        let mut replaced: Vec<PathBuf> = Vec::new();
        loop {
            while tasks.len() < MAX_WRITERS {
                let Some(((key, day), sources)) = pending.next() else {
                    break;
                };
                let table = key.table();
                let out = tx.new_file(table, day);
                if ids::has_id_hashes(table) {
                    tx.add_id_hashes(&out);
                }
                if let Some(files) = self.direct.get(&(key, day)) {
                    replaced.extend(files.iter().cloned());
                }
                tasks.spawn(async move { runs::merge_day(table, sources, &out, max_row).await });
            }
            match tasks.join_next().await {
                None => break,
                Some(done) => {
                    done.map_err(|e| Error::runtime(format!("a merge task failed: {e}")))??;
                }
            }
        }
        for file in replaced {
            tx.discard_file(&file)?;
        }
        for run in self.runs.iter_mut().flat_map(std::mem::take) {
            let _ = std::fs::remove_file(&run.path);
        }
        Ok(())
    }

    fn join_oldest_writer(&mut self) -> Result<()> {
        if let Some(w) = self.writers.pop_front() {
            let run = w
                .handle
                .join()
                .map_err(|_| Error::runtime("a Parquet writer thread panicked"))??;
            if let Some(run) = run {
                self.runs[w.key as usize].push(run);
            }
        }
        Ok(())
    }

    /// Waits for every file being written.
    fn join_writers(&mut self) -> Result<()> {
        while !self.writers.is_empty() {
            self.join_oldest_writer()?;
        }
        Ok(())
    }
}

/// A file or run being sorted and written on its own thread.
struct Writer {
    table: Table,
    key: TableKey,
    batches: Arc<Vec<RecordBatch>>,
    /// A spilled run, once written (a day's file is already reserved in the transaction).
    handle: std::thread::JoinHandle<Result<Option<RunFile>>>,
}

/// Files or runs written at once, each on its own thread (bounds memory: each holds the buffers
/// it writes).
const MAX_WRITERS: usize = 2;

/// A line over the limit, spilled to a scratch file as it was read (never held in memory).
struct Oversize {
    line: u64,
    path: PathBuf,
    /// Its full length (the scratch file holds at most [`OVERSIZE_KEEP_BYTES`] of it).
    len: u64,
}

/// A source cut into pieces that parse independently: chunks of whole records, and lines over
/// the limit (streamed to the caller, never buffered).
trait Chunker: Send {
    type Chunk: Send + Sync;
    fn next_piece(
        &mut self,
        oversize: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<Option<Piece<Self::Chunk>>>;
    /// Input bytes consumed so far.
    fn consumed(&self) -> u64;
}

impl<R: Read + Send> Chunker for LineChunker<R> {
    type Chunk = lines::LineChunk;
    fn next_piece(
        &mut self,
        oversize: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<Option<Piece<Self::Chunk>>> {
        LineChunker::next_piece(self, oversize)
    }
    fn consumed(&self) -> u64 {
        self.consumed
    }
}

impl<R: Read + Send> Chunker for csv::CsvChunker<R> {
    type Chunk = csv::CsvChunk;
    fn next_piece(
        &mut self,
        oversize: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<Option<Piece<Self::Chunk>>> {
        csv::CsvChunker::next_piece(self, oversize)
    }
    fn consumed(&self) -> u64 {
        self.consumed
    }
}

/// Bytes of one over-long line kept in the quarantine; the rest is counted, not kept, so that
/// input without line breaks (`ingest - < /dev/zero`) cannot fill the disk.
pub const OVERSIZE_KEEP_BYTES: u64 = 64 << 20;
/// Length at which an over-long line makes the source unreadable: input that runs this far
/// without a line break is not NDJSON or CSV.
pub const OVERSIZE_ABANDON_BYTES: u64 = 4 << 30;

/// Reads up to `group` chunks. A line over the limit is not kept in a chunk: its first
/// [`OVERSIZE_KEEP_BYTES`] are streamed to a scratch file in `spill_dir` for the quarantine.
fn read_chunks<C: Chunker>(
    chunker: &mut C,
    group: usize,
    spill_dir: &Path,
    oversize: &mut Vec<Oversize>,
) -> Result<Vec<C::Chunk>> {
    let mut chunks = Vec::with_capacity(group);
    let mut spill: Option<std::io::BufWriter<File>> = None;
    while chunks.len() < group {
        let mut on_oversize = |line: u64, piece: &[u8]| -> Result<()> {
            if oversize.last().map(|o| o.line) != Some(line) {
                let path = spill_dir.join(format!("oversize-{line}.tmp"));
                let f = File::create(&path).map_err(|e| Error::io("cannot write", &path, e))?;
                spill = Some(std::io::BufWriter::new(f));
                oversize.push(Oversize { line, path, len: 0 });
            }
            let o = oversize.last_mut().expect("pushed above");
            let keep = OVERSIZE_KEEP_BYTES
                .saturating_sub(o.len)
                .min(piece.len() as u64) as usize;
            o.len += piece.len() as u64;
            if o.len > OVERSIZE_ABANDON_BYTES {
                return Err(Error::input(format!(
                    "line {line} runs past {} GiB without a line break",
                    OVERSIZE_ABANDON_BYTES >> 30
                ))
                .with_hint("this is not NDJSON or CSV; nothing was ingested"));
            }
            let out = spill.as_mut().expect("opened above");
            std::io::Write::write_all(out, &piece[..keep])
                .map_err(|e| Error::runtime(format!("cannot spill an oversize line: {e}")))
        };
        match chunker.next_piece(&mut on_oversize)? {
            None => break,
            Some(Piece::Lines(c)) => chunks.push(c),
            Some(Piece::Oversize) => {
                if let Some(mut f) = spill.take() {
                    std::io::Write::flush(&mut f).map_err(|e| {
                        Error::runtime(format!("cannot spill an oversize line: {e}"))
                    })?;
                }
            }
        }
    }
    Ok(chunks)
}

/// The records of one chunk of lines: blank lines skipped, lines over `max_line` rejected, a
/// UTF-8 byte-order mark dropped; `each` gets the line number, the line as read and its record.
fn each_record(
    chunk: &lines::LineChunk,
    max_line: usize,
    sink: &mut ChunkSink,
    mut each: impl FnMut(&mut ChunkSink, u64, &[u8], &[u8]),
) {
    for (n, raw) in lines::lines(chunk) {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        if line.len() > max_line {
            sink.reject(
                n,
                raw,
                format!(
                    "line is {} bytes, longer than the {max_line}-byte limit (raise it with --max-line-bytes)",
                    line.len()
                ),
            );
            continue;
        }
        // A UTF-8 byte-order mark is not part of the first record.
        let body = line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line);
        each(sink, n, raw, body);
    }
}

/// Parses one chunk of NDJSON lines into per-day batches and rejects.
fn parse_chunk(chunk: &lines::LineChunk, kind: RecordKind, now_us: i64, max_line: usize) -> Parsed {
    let mut sink = ChunkSink::new(now_us, chunk.lines as usize);
    each_record(
        chunk,
        max_line,
        &mut sink,
        |sink, n, raw, body| match kind {
            RecordKind::Events => sink.event(n, raw, ndjson::event_fields(body)),
            RecordKind::Labels => sink.label(n, raw, ndjson::label_fields(body)),
        },
    );
    sink.finish()
}

/// Parses one chunk of OTLP/JSON lines (export requests): each GenAI span is an event record,
/// kept or rejected (as the OTLP JSON of that span); other spans are skipped and counted; a
/// line that is not an export request is rejected whole.
fn parse_otlp_chunk(
    chunk: &lines::LineChunk,
    mapping: &otlp::OtlpMapping,
    now_us: i64,
    max_line: usize,
) -> Parsed {
    let mut sink = ChunkSink::new(now_us, chunk.lines as usize);
    let mut skipped = 0;
    each_record(chunk, max_line, &mut sink, |sink, n, raw, body| {
        let req = match otlp::decode_json(body) {
            Ok(r) => r,
            Err(why) => return sink.reject(n, raw, why),
        };
        for (rs, ss, span) in otlp::spans(&req) {
            let raw_span = || otlp::span_request_json(rs, ss, span).into_bytes();
            match otlp::map_span(rs, span, mapping) {
                otlp::Mapped::Skipped => skipped += 1,
                otlp::Mapped::Rejected(why) => sink.reject(n, &raw_span(), why),
                otlp::Mapped::Event(event) => {
                    sink.event_or(n, ndjson::event_fields(event.as_bytes()), raw_span)
                }
            }
        }
    });
    let mut parsed = sink.finish();
    parsed.skipped = skipped;
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: usize, day: usize) -> String {
        format!(
            r#"{{"event_id":"e-{i}","ts":"2026-11-0{day}T10:00:00Z","route":"r{}","env":"prod","model":"m","prompt_version":"v1","duration_ms":{i},"tokens_in":1,"tokens_out":1,"status":"ok"}}"#,
            i % 3
        )
    }

    /// Duplicates far apart in one input, with a buffer so small that every few records spill a
    /// run and several writers are in flight: each id is kept exactly once.
    #[tokio::test(flavor = "multi_thread")]
    async fn duplicates_across_flushes_and_writers_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::new(dir.path().join("lake"));
        let mut text = String::new();
        for i in 0..3000 {
            text.push_str(&line(i, 1 + i % 3));
            text.push('\n');
            if i % 3 == 0 {
                // an earlier id again, on the same day
                let j = i / 2;
                text.push_str(&line(j - j % 3 + i % 3, 1 + i % 3));
                text.push('\n');
            }
        }
        let opts = IngestOptions {
            buffer_bytes: 64 << 10,
            chunk_bytes: 16 << 10,
            progress: false,
            ..IngestOptions::default()
        };
        let src = Source::from_reader(
            "t",
            InputFormat::Ndjson,
            Box::new(std::io::Cursor::new(text.clone())),
        );
        let r = ingest(&lake, vec![src], &opts).await.unwrap();
        assert_eq!(r.read, 4000);
        assert_eq!(r.accepted, 3000);
        assert_eq!(r.duplicates, 1000);
        // Many spills, yet one sorted file per day.
        let snapshot = crate::lake::Snapshot::load(&lake, &crate::lake::AsOf::Latest)
            .await
            .unwrap();
        assert_eq!(snapshot.files(Table::Events, None).unwrap().len(), 3);
        // And again: everything is a duplicate of the lake now.
        let src = Source::from_reader(
            "t",
            InputFormat::Ndjson,
            Box::new(std::io::Cursor::new(text)),
        );
        let r = ingest(&lake, vec![src], &opts).await.unwrap();
        assert_eq!((r.accepted, r.duplicates), (0, 4000));
    }
}
