//! Ingest: NDJSON or CSV in, validated and deduplicated Parquet files out, atomically.
//!
//! The pipeline: a reader cuts the input into chunks of lines; chunks are parsed and validated
//! in parallel (rayon) into per-day Arrow batches plus rejects; batches wait in per-day buffers
//! that are flushed to sorted Parquet files in staging when memory passes a budget, each flush
//! dropping ids already in the lake or already staged; rejects go to the quarantine verbatim;
//! finally the lake's writer lock commits everything at once (see [`crate::lake`]).
//!
//! Memory is bounded by the flush budget plus a few chunks, whatever the input size.

mod batch;
mod csv;
mod dedupe;
mod label_index;
mod lines;
mod ndjson;
mod quarantine;
mod records;

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::lake::{Lake, Table, Transaction, ids};
use lines::{LineChunker, Piece};
use quarantine::{Quarantine, SourceToken};
use records::{ChunkSink, Parsed};

pub use records::RecordKind;

/// Input format of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    Ndjson,
    Csv,
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
    /// Arrow memory held in day buffers before the largest is flushed to a file.
    pub buffer_bytes: usize,
    /// Bytes of input handed to one parser thread at a time.
    pub chunk_bytes: usize,
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
        }
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
    /// Labels that came inline on events and were added to `llm_labels`.
    #[serde(skip_serializing_if = "is_zero")]
    pub inline_labels: u64,
    /// Labeled events added to the `llm_labeled_events` index (events of this run that a label
    /// names, and events of the lake named by this run's labels).
    #[serde(skip_serializing_if = "is_zero")]
    pub labeled_events_indexed: u64,
    /// False when `--strict` refused to commit because of rejects.
    pub committed: bool,
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
    let lock = lake.lock()?;
    let mut tx = lock.begin()?;
    let quarantine_dir = tx.dir().join("quarantine");
    let index = label_index::LabelIndex::load(lake).await?;
    let mut run = Run {
        opts,
        lake,
        buffers: BTreeMap::new(),
        buffered_bytes: 0,
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

    let rejected = run.quarantine.count();
    debug_assert_eq!(rejected, run.report.rejected);
    let q = run.quarantine.finish()?;
    let mut report = run.report;
    if let Some(dir) = q {
        let final_rel = PathBuf::from("quarantine").join(tx.id());
        report.quarantine = Some(lake.root().join(&final_rel));
        if opts.strict && rejected > 0 {
            // Keep the reasons, add nothing else.
            let mut qtx = lock.begin()?;
            let moved = qtx.dir().join("q");
            std::fs::rename(&dir, &moved).map_err(|e| Error::io("cannot stage", &moved, e))?;
            qtx.add_move(&moved, final_rel);
            drop(tx);
            qtx.commit()?;
            report.committed = false;
            return Ok(report);
        }
        tx.add_move(&dir, final_rel);
    }
    report.labeled_events_indexed = run.index.finish(lake, &mut tx).await?;
    tx.commit()?;
    report.committed = true;
    Ok(report)
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
    lake: &'a Lake,
    /// Per (table, day) batches waiting to be written.
    buffers: BTreeMap<(TableKey, i32), DayBuffer>,
    buffered_bytes: usize,
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
        match format {
            InputFormat::Ndjson => self.read_ndjson(tx, &name, reader, bar).await,
            InputFormat::Csv => {
                let (mut csv, header) = csv::CsvSource::open(reader, self.opts.kind, self.now_us)
                    .map_err(in_source(&name))?;
                let token = self.quarantine.start_source(&name, Some(header));
                while let Some(p) = csv.next_batch().map_err(in_source(&name))? {
                    self.absorb(tx, &token, p).await?;
                }
                Ok(())
            }
        }
    }

    async fn read_ndjson(
        &mut self,
        tx: &mut Transaction<'_>,
        name: &str,
        reader: Box<dyn Read + Send>,
        bar: &ProgressBar,
    ) -> Result<()> {
        let token = self.quarantine.start_source(name, None);
        let mut chunker = LineChunker::new(reader, self.opts.chunk_bytes, self.opts.max_line_bytes);
        let group = rayon::current_num_threads().max(1) * 2;
        let kind = self.opts.kind;
        let now = self.now_us;
        let max_line = self.opts.max_line_bytes;
        // Read the next group of chunks while the current one is parsed (the first round only
        // reads).
        let spill_dir = tx.dir().to_path_buf();
        let mut group_of_chunks = Vec::new();
        loop {
            let (parsed, next) = rayon::join(
                || {
                    group_of_chunks
                        .par_iter()
                        .map(|c| parse_chunk(c, kind, now, max_line))
                        .collect::<Vec<Parsed>>()
                },
                || {
                    let mut oversize = Vec::new();
                    let next = read_chunks(&mut chunker, group, &spill_dir, &mut oversize);
                    (next, oversize)
                },
            );
            for p in parsed {
                self.absorb(tx, &token, p).await?;
            }
            let (next, oversize) = next;
            for o in oversize {
                self.quarantine_oversize(&token, o, max_line)?;
            }
            bar.set_position(chunker.consumed);
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
        self.quarantine.begin_record(
            token,
            o.line,
            &format!(
                "line is longer than the {max_line}-byte limit (raise it with --max-line-bytes)"
            ),
        )?;
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
        self.report.rejected += p.rejects.len() as u64;
        for r in &p.rejects {
            self.quarantine.record(token, r)?;
        }
        for (key, list) in [(TableKey::Events, p.events), (TableKey::Labels, p.labels)] {
            for (day, batch) in list {
                if key == TableKey::Labels {
                    self.index.add_labels(&batch);
                }
                let bytes = batch.get_array_memory_size();
                let buf = self.buffers.entry((key, day)).or_default();
                buf.batches.push(batch);
                buf.bytes += bytes;
                self.buffered_bytes += bytes;
            }
        }
        while self.buffered_bytes > self.opts.buffer_bytes {
            let largest = *self
                .buffers
                .iter()
                .max_by_key(|(_, b)| b.bytes)
                .map(|(k, _)| k)
                .expect("non-empty when bytes are buffered");
            self.flush(tx, largest).await?;
        }
        Ok(())
    }

    async fn flush_all(&mut self, tx: &mut Transaction<'_>) -> Result<()> {
        let keys: Vec<_> = self.buffers.keys().copied().collect();
        for k in keys {
            self.flush(tx, k).await?;
        }
        Ok(())
    }

    /// Writes one day's buffer as a sorted file, minus ids already in the lake, staged, or
    /// being written. The sort and write run on a background thread while reading goes on.
    async fn flush(&mut self, tx: &mut Transaction<'_>, key: (TableKey, i32)) -> Result<()> {
        let Some(buf) = self.buffers.remove(&key) else {
            return Ok(());
        };
        self.buffered_bytes -= buf.bytes;
        while self.writers.len() >= MAX_WRITERS {
            self.join_oldest_writer()?;
        }
        let table = key.0.table();
        let staged = tx.staged_table_dir(table);
        let in_flight: Vec<&[RecordBatch]> = self
            .writers
            .iter()
            .filter(|w| w.table == table)
            .map(|w| w.batches.as_slice())
            .collect();
        let run_ids = &mut self.run_ids[key.0 as usize];
        let outcome =
            dedupe::unique_new_rows(self.lake, &staged, table, buf.batches, &in_flight, run_ids)
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
        if table == Table::Events {
            self.index.add_events(key.1, &outcome.batches)?;
        }
        if outcome.rows > 0 {
            let path = tx.new_file(table, key.1);
            if ids::has_id_hashes(table) {
                tx.add_id_hashes(&path);
            }
            let batches = Arc::new(outcome.batches);
            let for_thread = batches.clone();
            let id_hashes =
                ids::has_id_hashes(table).then(|| ids::IdHashes::from_hashes(outcome.id_hashes));
            let handle = std::thread::spawn(move || {
                // Written under a name queries ignore, renamed once complete.
                let name = path.file_name().expect("file name").to_string_lossy();
                let tmp = path.with_file_name(format!(".{name}.tmp"));
                dedupe::write_sorted(&tmp, table, &for_thread)?;
                std::fs::rename(&tmp, &path).map_err(|e| Error::io("cannot stage", &path, e))?;
                if let Some(hashes) = id_hashes {
                    hashes.write(&path)?;
                }
                Ok(())
            });
            self.writers.push_back(Writer {
                table,
                batches,
                handle,
            });
        }
        Ok(())
    }

    fn join_oldest_writer(&mut self) -> Result<()> {
        if let Some(w) = self.writers.pop_front() {
            w.handle
                .join()
                .map_err(|_| Error::runtime("a Parquet writer thread panicked"))??;
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

/// A file being sorted and written on its own thread.
struct Writer {
    table: Table,
    batches: Arc<Vec<RecordBatch>>,
    handle: std::thread::JoinHandle<Result<()>>,
}

/// Files written at once, each on its own thread (bounds memory: each holds one day buffer).
const MAX_WRITERS: usize = 2;

/// A line over the limit, spilled to a scratch file as it was read (never held in memory).
struct Oversize {
    line: u64,
    path: PathBuf,
}

/// Reads up to `group` chunks. A line over the limit is not kept in a chunk: its bytes are
/// streamed to a scratch file in `spill_dir` for the quarantine.
fn read_chunks<R: Read>(
    chunker: &mut LineChunker<R>,
    group: usize,
    spill_dir: &Path,
    oversize: &mut Vec<Oversize>,
) -> Result<Vec<lines::LineChunk>> {
    let mut chunks = Vec::with_capacity(group);
    let mut spill: Option<std::io::BufWriter<File>> = None;
    while chunks.len() < group {
        let mut on_oversize = |line: u64, piece: &[u8]| -> Result<()> {
            if oversize.last().map(|o| o.line) != Some(line) {
                let path = spill_dir.join(format!("oversize-{line}.tmp"));
                let f = File::create(&path).map_err(|e| Error::io("cannot write", &path, e))?;
                spill = Some(std::io::BufWriter::new(f));
                oversize.push(Oversize { line, path });
            }
            let out = spill.as_mut().expect("opened above");
            std::io::Write::write_all(out, piece)
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

/// Parses one chunk of NDJSON lines into per-day batches and rejects.
fn parse_chunk(chunk: &lines::LineChunk, kind: RecordKind, now_us: i64, max_line: usize) -> Parsed {
    let mut sink = ChunkSink::new(kind, now_us, chunk.lines as usize);
    for (n, line) in lines::lines(chunk) {
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        if line.len() > max_line {
            sink.reject(
                n,
                line,
                format!(
                    "line is {} bytes, longer than the {max_line}-byte limit (raise it with --max-line-bytes)",
                    line.len()
                ),
            );
            continue;
        }
        // A UTF-8 byte-order mark is not part of the first record.
        let body = line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line);
        match sink.kind() {
            RecordKind::Events => sink.event(n, line, ndjson::event_fields(body)),
            RecordKind::Labels => sink.label(n, line, ndjson::label_fields(body)),
        }
    }
    sink.finish()
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

    /// Duplicates far apart in one input, with a buffer so small that every few records flush
    /// a file and several writers are in flight: each id is kept exactly once.
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
        assert!(
            lake.data_files(Table::Events, None).unwrap().len() > 10,
            "many flushes"
        );
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
