//! The lake: every table a Delta table, one log of lake versions over them, the files' layout
//! and encodings, compaction, vacuum, and registration with DataFusion. On local disk, or on
//! object storage ([`Remote`]: `s3://bucket/prefix`, same layout).
//!
//! ```text
//! <lake>/llm_events/_delta_log/                 the table's Delta log
//! <lake>/llm_events/date=YYYY-MM-DD/part-<uuid>.parquet   (+ a hidden id-hash file each)
//! <lake>/llm_labels/…, <lake>/llm_labeled_events/…        the same
//! <lake>/_promptgate/log/<version>.json         lake versions: each table's Delta version
//! <lake>/quarantine/<ingest-id>/                rejected records, verbatim, with reasons
//! <lake>/_staging/<txn-id>/                     work in progress; never read by queries
//! ```
//!
//! Readers take no lock: they read one lake version ([`Snapshot`]), which names each table's
//! Delta version and so exactly the files to read. Writers ([`WriteLock`], [`Transaction`])
//! write new files where no version lists them, commit them to the tables, then write the
//! lake's next version; a writer that dies before that last step is undone by the next one.
//! Files a compaction replaces stay until a [`vacuum`] past the retention period.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::SessionContext;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};
use crate::event::{self, EVENTS_TABLE, LABELED_EVENTS_TABLE, LABELS_TABLE};

mod compact;
pub mod delta;
mod doctor;
mod encode;
pub mod ids;
pub(crate) mod lease;
pub mod log;
mod readthrough;
mod remote;
mod snapshot;
mod txn;
mod vacuum;
pub use compact::{CompactReport, compact, compact_small_files};
pub use doctor::{DoctorReport, Finding, doctor};
pub use remote::{Remote, block_on};
pub use snapshot::{AsOf, Snapshot};
pub use txn::{Committed, Transaction, WriteLock};
pub use vacuum::{DEFAULT_RETENTION_HOURS, RETENTION_ENV, VacuumReport, retention_hours, vacuum};

/// Rows per Parquet row group, at most.
pub const MAX_ROW_GROUP_ROWS: usize = 1_000_000;
/// Encoded bytes a writer holds for its row group before closing it early (rows of large text).
pub const MAX_ROW_GROUP_BYTES: usize = 128 << 20;
const STAGING: &str = "_staging";
const QUARANTINE: &str = "quarantine";

/// A table of the lake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Events,
    Labels,
    /// Index of labeled events, maintained by ingest (see `ingest::label_index`).
    LabeledEvents,
    /// Scored blind reviews, one file per review (see `review::table`); not partitioned.
    Reviews,
}

impl Table {
    pub const ALL: [Table; 4] = [
        Table::Events,
        Table::Labels,
        Table::LabeledEvents,
        Table::Reviews,
    ];

    /// The table named `name` in SQL and on disk.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Table::Events => EVENTS_TABLE,
            Table::Labels => LABELS_TABLE,
            Table::LabeledEvents => LABELED_EVENTS_TABLE,
            Table::Reviews => crate::review::table::REVIEWS_TABLE,
        }
    }
    /// Whether the table's files lie in `date=` partitions (all but the reviews).
    pub fn partitioned(self) -> bool {
        self != Table::Reviews
    }
    pub fn schema(self) -> SchemaRef {
        match self {
            Table::Events => event::event_schema(),
            Table::Labels => event::label_schema(),
            Table::LabeledEvents => event::labeled_event_schema(),
            Table::Reviews => crate::review::table::reviews_schema(),
        }
    }
    /// The column that identifies a row; re-ingesting a row with a known id adds nothing.
    pub fn id_column(self) -> &'static str {
        match self {
            Table::Events | Table::LabeledEvents => "event_id",
            Table::Labels => "label_id",
            Table::Reviews => "review_id",
        }
    }
    /// Sort order of rows within a file (recorded as Parquet `sorting_columns`). Events are
    /// sorted by (route, ts) so a route's rows are contiguous and row groups prune on route.
    pub fn sort_columns(self) -> [&'static str; 2] {
        match self {
            Table::Events | Table::LabeledEvents => ["route", "ts"],
            Table::Labels => ["event_id", "ts"],
            Table::Reviews => ["review_id", "item"],
        }
    }
    /// Columns whose values are (nearly) unique: dictionary encoding only costs time there.
    fn high_cardinality_columns(self) -> &'static [&'static str] {
        match self {
            Table::Events => &["event_id", "input", "output", "attributes"],
            Table::Labels => &["label_id", "event_id", "note"],
            Table::LabeledEvents => &["event_id"],
            Table::Reviews => &["event_id", "note"],
        }
    }
}

/// A lake: a local directory, or a prefix on object storage ([`Remote`]).
#[derive(Debug, Clone)]
pub struct Lake {
    /// The directory; of a remote lake, its URL (for messages only: never opened).
    root: PathBuf,
    remote: Option<Arc<Remote>>,
}

impl Lake {
    /// A lake in the local directory `root`; nothing is read or created until a method needs it.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            remote: None,
        }
    }

    /// The lake `--lake` names: a local directory, or an `s3://bucket/prefix` URL.
    pub fn open(arg: &Path) -> Result<Self> {
        let remote = match arg.to_str() {
            Some(s) => Remote::parse(s)?,
            None => None,
        };
        Ok(match remote {
            Some(r) => Self {
                root: r.work_dir(),
                remote: Some(Arc::new(r)),
            },
            None => Self::new(match arg.to_str().and_then(|s| s.strip_prefix("file://")) {
                Some(path) => PathBuf::from(path),
                None => arg.to_path_buf(),
            }),
        })
    }

    /// The directory of a local lake; of a remote one, the local work directory where its
    /// writers stage files ([`Remote::work_dir`]).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the lake is, for people: its directory or its URL.
    pub fn location(&self) -> String {
        match &self.remote {
            Some(r) => r.url().to_string(),
            None => self.root.display().to_string(),
        }
    }

    /// Where `rel` (a path under the lake) is, for people: a path, or an object's URL.
    pub fn location_of(&self, rel: &Path) -> PathBuf {
        match &self.remote {
            Some(r) => PathBuf::from(r.object_url(&rel.to_string_lossy())),
            None => self.root.join(rel),
        }
    }

    /// The object store of a lake on object storage.
    pub fn remote(&self) -> Option<&Remote> {
        self.remote.as_deref()
    }

    /// Fails with a hint when the lake is on object storage, which only readers support.
    pub fn require_local(&self, command: &str) -> Result<()> {
        match &self.remote {
            None => Ok(()),
            Some(r) => Err(Error::usage(format!(
                "`promptgate {command}` needs a lake on local disk; {} is on object storage, where every other command works but {command} is not built yet",
                r.url()
            ))
            .with_hint("run it on a local lake and copy that to the store (README: \"A lake on S3\")")),
        }
    }

    /// The URL of `table`'s Delta table.
    pub fn table_url(&self, table: Table) -> Result<url::Url> {
        match &self.remote {
            Some(r) => r.table_url(table),
            None => delta::table_url(&self.table_dir(table)),
        }
    }

    pub fn table_dir(&self, table: Table) -> PathBuf {
        self.root.join(table.name())
    }

    pub fn quarantine_dir(&self) -> PathBuf {
        self.root.join(QUARANTINE)
    }

    /// Fails with a hint when there is no lake at `root` (for read-only commands). A lake on
    /// object storage is checked when its snapshot is read.
    pub fn require_existing(&self) -> Result<()> {
        if self.remote.is_some() || self.table_dir(Table::Events).is_dir() {
            return Ok(());
        }
        Err(Error::input(format!("no lake at {}", self.root.display())).with_hint(
            "ingest events first (`promptgate ingest events.ndjson`), or point --lake / PROMPTGATE_LAKE at an existing lake",
        ))
    }

    /// Creates the lake's directories if missing.
    pub fn ensure_layout(&self) -> Result<()> {
        for dir in [
            self.table_dir(Table::Events),
            self.table_dir(Table::Labels),
            self.quarantine_dir(),
            self.root.join(STAGING),
        ] {
            fs::create_dir_all(&dir).map_err(|e| {
                Error::io("cannot create lake directory", &dir, e)
                    .with_hint("check that --lake points at a writable directory")
            })?;
        }
        Ok(())
    }

    /// Parquet files found in `table`'s partition directories (optionally of one `date=`
    /// partition), sorted by path: the files of a lake of the old layout, which had no log.
    /// Of a Delta table, read [`Snapshot::files`] instead: its directories also hold files no
    /// version lists (not yet committed, or removed and not yet vacuumed).
    pub fn legacy_data_files(&self, table: Table, day: Option<&str>) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for day_dir in self.partition_dirs(table)? {
            if let Some(d) = day
                && day_dir.file_name().and_then(|n| n.to_str()) != Some(&format!("date={d}"))
            {
                continue;
            }
            for entry in read_dir(&day_dir)? {
                let p = entry.path();
                if p.extension().is_some_and(|e| e == "parquet") {
                    files.push(p);
                }
            }
        }
        files.sort();
        Ok(files)
    }

    /// The directories that hold `table`'s data files, sorted: its `date=` partitions (a table
    /// that is not partitioned: its own directory).
    pub fn partition_dirs(&self, table: Table) -> Result<Vec<PathBuf>> {
        let dir = self.table_dir(table);
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
        if !table.partitioned() {
            return Ok(vec![dir]);
        }
        let mut dirs: Vec<PathBuf> = read_dir(&dir)?
            .into_iter()
            .map(|e| e.path())
            .filter(|p| {
                p.is_dir()
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("date="))
            })
            .collect();
        dirs.sort();
        Ok(dirs)
    }

    /// Registers `table` (its whole directory, Hive-partitioned by `date`) under `name`.
    pub fn register(&self, ctx: &SessionContext, table: Table, name: &str) -> Result<()> {
        register_dir(ctx, &self.table_dir(table), table.schema(), name)
    }

    /// Like [`Lake::register`], but strings read as `Utf8View`: the Parquet reader then points
    /// into each dictionary page instead of copying every row's bytes, which is what scans that
    /// read many low-cardinality string columns (the judge) spend most of their time on.
    pub fn register_string_views(
        &self,
        ctx: &SessionContext,
        table: Table,
        name: &str,
    ) -> Result<()> {
        let schema = table.schema();
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Utf8 => f.as_ref().clone().with_data_type(DataType::Utf8View),
                _ => f.as_ref().clone(),
            })
            .collect();
        register_dir(
            ctx,
            &self.table_dir(table),
            Arc::new(Schema::new(fields)),
            name,
        )
    }
}

/// Registers a Hive-partitioned directory of Parquet files with the given file schema.
pub fn register_dir(ctx: &SessionContext, dir: &Path, schema: SchemaRef, name: &str) -> Result<()> {
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(vec![("date".to_string(), DataType::Utf8)]);
    register_listing(ctx, dir, schema, options, name)
}

/// Registers just `files` (Parquet files of `table`, no `date` column) under `name`.
pub fn register_files(
    ctx: &SessionContext,
    files: &[PathBuf],
    table: Table,
    name: &str,
) -> Result<()> {
    let urls = files
        .iter()
        .map(|f| file_url(f))
        .collect::<Result<Vec<_>>>()?;
    register_file_urls(ctx, urls, table, name)
}

/// Registers the Parquet files at `urls` (of `table`, no `date` column) under `name`.
pub fn register_file_urls(
    ctx: &SessionContext,
    urls: Vec<ListingTableUrl>,
    table: Table,
    name: &str,
) -> Result<()> {
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(table.schema());
    ctx.register_table(name, Arc::new(ListingTable::try_new(config)?))?;
    Ok(())
}

/// A file as a DataFusion table path.
pub(crate) fn file_url(f: &Path) -> Result<ListingTableUrl> {
    let abs = std::path::absolute(f).map_err(|e| Error::io("cannot resolve", f, e))?;
    let url = url::Url::from_file_path(&abs)
        .map_err(|_| Error::runtime(format!("cannot use {} as a table path", abs.display())))?;
    Ok(ListingTableUrl::try_new(url, None)?)
}

pub(crate) fn register_listing(
    ctx: &SessionContext,
    dir: &Path,
    schema: SchemaRef,
    options: ListingOptions,
    name: &str,
) -> Result<()> {
    let abs = std::path::absolute(dir).map_err(|e| Error::io("cannot resolve", dir, e))?;
    let url = url::Url::from_directory_path(&abs)
        .map_err(|_| Error::runtime(format!("cannot use {} as a table path", abs.display())))?;
    let config = ListingTableConfig::new(ListingTableUrl::try_new(url, None)?)
        .with_listing_options(options)
        .with_schema(schema);
    ctx.register_table(name, Arc::new(ListingTable::try_new(config)?))?;
    Ok(())
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    fs::read_dir(dir)
        .and_then(|it| it.collect::<io::Result<Vec<_>>>())
        .map_err(|e| Error::io("cannot list", dir, e))
}

/// Writer properties of every file in the lake: zstd, dictionary encoding for low-cardinality
/// strings, page statistics, row groups of at most [`MAX_ROW_GROUP_ROWS`], and the sort order.
pub fn writer_properties(table: Table) -> WriterProperties {
    let schema = table.schema();
    let sorting = table
        .sort_columns()
        .iter()
        .map(|c| SortingColumn {
            column_idx: schema.index_of(c).expect("sort column in schema") as i32,
            descending: false,
            nulls_first: false,
        })
        .collect();
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("valid level"),
        ))
        .set_max_row_group_row_count(Some(MAX_ROW_GROUP_ROWS))
        .set_sorting_columns(Some(sorting))
        .set_dictionary_enabled(true)
        .set_created_by(format!("promptgate {}", env!("CARGO_PKG_VERSION")));
    for c in table.high_cardinality_columns() {
        b = b.set_column_dictionary_enabled((*c).into(), false);
    }
    // Timestamps are nearly sorted within a route: delta encoding stores each in about two
    // bytes instead of eight, and a dictionary of unique values would only be thrown away.
    b = b
        .set_column_dictionary_enabled("ts".into(), false)
        .set_column_encoding("ts".into(), Encoding::DELTA_BINARY_PACKED);
    b.build()
}

/// Writes one Parquet file of a table: batches in (already sorted), fsync on finish.
pub struct LakeFileWriter {
    path: PathBuf,
    table: Table,
    writer: encode::ParallelWriter,
    rows: u64,
}

impl LakeFileWriter {
    pub fn create(path: &Path, table: Table) -> Result<Self> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io("cannot create", parent, e))?;
        }
        let file = File::create(path).map_err(|e| Error::io("cannot create", path, e))?;
        let writer =
            encode::ParallelWriter::try_new(file, table.schema(), writer_properties(table))?;
        Ok(Self {
            path: path.to_path_buf(),
            table,
            writer,
            rows: 0,
        })
    }

    /// Appends a batch; its columns must match the table's schema (types; names are taken
    /// from the schema).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let batch = if batch.schema() == self.table.schema() {
            batch.clone()
        } else {
            RecordBatch::try_new(self.table.schema(), batch.columns().to_vec())?
        };
        self.rows += batch.num_rows() as u64;
        self.writer.write(&batch)?;
        // Large rows: close the row group early rather than hold a million of them encoded.
        if self.writer.in_progress_size() > MAX_ROW_GROUP_BYTES {
            self.writer.flush()?;
        }
        Ok(())
    }

    /// Closes the file and fsyncs it; returns the rows written.
    pub fn finish(self) -> Result<u64> {
        let file = self.writer.into_inner()?;
        file.sync_all()
            .map_err(|e| Error::io("cannot fsync", &self.path, e))?;
        Ok(self.rows)
    }
}

/// Writes a sorted stream of a table's batches to one file at `out` (fsynced), with the table's
/// event-id hashes beside it where it has them; returns the rows written. The one tail of every
/// merge that produces a lake file (ingest's run merge, compaction).
pub async fn write_sorted_stream(
    mut stream: impl futures::Stream<Item = datafusion::error::Result<RecordBatch>> + Unpin,
    out: &Path,
    table: Table,
) -> Result<u64> {
    use futures::StreamExt;
    let mut writer = LakeFileWriter::create(out, table)?;
    let mut hashes = ids::has_id_hashes(table).then(ids::IdHashes::default);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        if let Some(h) = &mut hashes {
            h.add(table, &batch)?;
        }
        writer.write(&batch)?;
    }
    let rows = writer.finish()?;
    if let Some(h) = hashes {
        h.write(out)?;
    }
    Ok(rows)
}

/// Takes an exclusive `flock` on the directory `dir` itself, waiting for the holder to let go.
pub fn lock_exclusive_dir(dir: &Path) -> Result<File> {
    let file = File::open(dir).map_err(|e| Error::io("cannot open", dir, e))?;
    lock_file(file, dir, dir)
}

/// Takes an exclusive `flock` on `path` (created if missing), waiting for the holder to let go
/// (saying so on stderr, naming `what`). The lock lasts as long as the returned file is open,
/// and the kernel releases it if the process dies, so a crashed writer never leaves it stuck.
pub fn lock_exclusive(path: &Path, what: &Path) -> Result<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("cannot open lock file", path, e))?;
    lock_file(file, path, what)
}

/// Locks `file` (at `path`) exclusively, saying on stderr that it waits when another writer of
/// `what` holds it.
fn lock_file(file: File, path: &Path, what: &Path) -> Result<File> {
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            eprintln!(
                "waiting for another promptgate writer on {} to finish...",
                what.display()
            );
            file.lock().map_err(|e| Error::io("cannot lock", path, e))?;
        }
        Err(fs::TryLockError::Error(e)) => return Err(Error::io("cannot lock", path, e)),
    }
    Ok(file)
}

/// Replaces `path` with `bytes` atomically: writes a temp file beside it, fsyncs it, renames it
/// over `path` and fsyncs the directory. A crash leaves either the old file whole or the new
/// one, never a mix. Callers serialize writers themselves (a lock), as two writers of one path
/// would otherwise race on the last rename.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = write_synced_temp(path, bytes)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("cannot write", path, e));
    }
    sync_dir(dir)
}

/// Writes `bytes` to a hidden temp file beside `path` (`.<name>.<uuid>.tmp`) and fsyncs it; the
/// caller moves it into place (rename, link) and removes it if that fails.
pub(crate) fn write_synced_temp(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let written = (|| {
        let mut f = File::create(&tmp)?;
        io::Write::write_all(&mut f, bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("cannot write", &tmp, e));
    }
    Ok(tmp)
}

/// The `date=` partition value a table-relative path starts with (`""` if none).
pub(crate) fn partition_day(rel: &str) -> &str {
    rel.split('/')
        .next()
        .and_then(|p| p.strip_prefix("date="))
        .unwrap_or_default()
}

/// fsync a directory so that renames into it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("cannot fsync directory", dir, e))
}
