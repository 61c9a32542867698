//! Each table of the lake is a Delta table: a `_delta_log/` of numbered JSON commits beside the
//! `date=` partitions. This module is the one place that talks to `deltalake-core`: creating a
//! table, committing actions at an expected version, loading a version, listing its files and
//! tombstones, and handing a version to DataFusion.
//!
//! Files are written by the lake itself (its sort order, encodings, id-hash files) and added to
//! the log with their Parquet footer's row count and the `route` range as statistics, so other
//! Delta readers (Spark, DuckDB, the `deltalake` Python package) and file skipping see them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::DataType as ArrowType;
use datafusion::prelude::{SessionContext, col, lit};
use datafusion::scalar::ScalarValue;
use deltalake_core::DeltaTable;
use deltalake_core::delta_datafusion::{DeltaScanConfig, DeltaScanNext};
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake_core::kernel::{Action, Add, DataType, MetadataExt, Remove, StructField, StructType};
use deltalake_core::logstore::LogStoreRef;
use deltalake_core::operations::create::CreateBuilder;
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::statistics::Statistics;
use url::Url;

use super::{Table, ids};
use crate::error::{Error, Result};

/// The partition column every table has (a `YYYY-MM-DD` string, as in the `date=` paths).
pub const PARTITION_COLUMN: &str = "date";
/// The Delta log directory inside a table.
pub const LOG_DIR: &str = "_delta_log";

/// Whether `dir` holds a Delta table: its log has a committed version (a commit file or a
/// checkpoint). A log directory without one, empty or holding only a temporary file, is what a
/// writer killed while it created the table leaves: a table not yet created, which the next
/// writer creates.
pub fn is_table(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir.join(LOG_DIR)) else {
        return false;
    };
    entries
        .flatten()
        .any(|e| is_version_file(&e.file_name().to_string_lossy()))
}

/// `00000000000000000007.json`, or a checkpoint of a version (`...07.checkpoint.parquet`, also
/// in parts): twenty digits, then the kind. Temporary files beside them are not versions.
fn is_version_file(name: &str) -> bool {
    let Some((digits, rest)) = name.split_at_checked(20) else {
        return false;
    };
    digits.bytes().all(|b| b.is_ascii_digit())
        && (rest == ".json" || (rest.starts_with(".checkpoint") && rest.ends_with(".parquet")))
}

/// Whether `name` is a checkpoint file of a version (see [`is_version_file`]).
pub fn is_checkpoint(name: &str) -> bool {
    is_version_file(name) && !name.ends_with(".json")
}

/// How delta-rs opens the table at `url`. A local table with a damaged checkpoint is read
/// through the commits before it (see [`super::readthrough`]), with a warning, once per file,
/// that says which file and what to do; a writer moves such a checkpoint aside
/// ([`set_aside_damaged_checkpoints`]).
fn builder(url: &Url) -> Result<deltalake_core::DeltaTableBuilder> {
    let b = deltalake_core::DeltaTableBuilder::from_url(url.clone()).map_err(delta_err(url))?;
    let Ok(dir) = url.to_file_path() else {
        return Ok(b);
    };
    if url.scheme() != "file" {
        return Ok(b);
    }
    let damaged = super::readthrough::damaged_checkpoints(&dir);
    if damaged.is_empty() {
        return Ok(b);
    }
    static WARNED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    if let Ok(mut warned) = WARNED.lock() {
        for name in &damaged {
            let file = dir.join(LOG_DIR).join(name);
            if !warned.contains(&file) {
                eprintln!(
                    "warning: {} is not a Parquet file; reading {} through the commits before it (the next ingest, compact or vacuum moves it aside and writes a new checkpoint)",
                    file.display(),
                    shown(url)
                );
                warned.push(file);
            }
        }
    }
    let store = Arc::new(super::readthrough::HideLogFiles::new(
        Arc::new(object_store::local::LocalFileSystem::new()),
        &damaged,
    ));
    Ok(b.with_storage_backend(store, url.clone()))
}

pub fn table_url(dir: &Path) -> Result<Url> {
    let abs = std::path::absolute(dir).map_err(|e| Error::io("cannot resolve", dir, e))?;
    Url::from_directory_path(&abs)
        .map_err(|_| Error::runtime(format!("cannot use {} as a table path", abs.display())))
}

fn log_store(url: &Url) -> Result<LogStoreRef> {
    builder(url)?.build_storage().map_err(delta_err(url))
}

fn delta_err(url: &Url) -> impl Fn(deltalake_core::DeltaTableError) -> Error + '_ {
    move |e| {
        damaged_or(
            url,
            format!("Delta table {}: {}", shown(url), first_line(&e)),
            None,
        )
    }
}

/// The first line of an error's text: delta-rs' kernel errors carry a backtrace after it.
fn first_line(e: &impl std::fmt::Display) -> String {
    let text = e.to_string();
    text.lines()
        .next()
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

/// An error reading or writing a table: when a file of its local `_delta_log` is damaged, that
/// is what the message says (which file, what is wrong, what to do); otherwise `message` with
/// `hint`.
fn damaged_or(url: &Url, message: String, hint: Option<&str>) -> Error {
    if let Some((file, what)) = url.to_file_path().ok().and_then(|d| damaged_log_file(&d)) {
        let checkpoint = file.to_string_lossy().contains(".checkpoint");
        return Error::runtime(format!(
            "the Delta log of {} has a damaged file: {} {what}",
            shown(url),
            file.display()
        ))
        .with_hint(if checkpoint {
            "a checkpoint only repeats the commits before it, and some of those are not in _delta_log any more, so the table cannot be read around it: restore the checkpoint (or the missing commits) from a backup"
        } else {
            "a commit of the table was truncated or edited by hand; restore it from a backup (each commit is needed to read the versions after it)"
        });
    }
    let e = Error::runtime(message);
    match hint {
        Some(h) => e.with_hint(h),
        None => e,
    }
}

/// The first damaged file of a table's `_delta_log`, and what is wrong with it (see
/// [`damaged_file`]). Run only after an error (it reads the log's commits).
fn damaged_log_file(dir: &Path) -> Option<(PathBuf, String)> {
    let log = dir.join(LOG_DIR);
    let mut names: Vec<String> = std::fs::read_dir(&log)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_version_file(n))
        .collect();
    names.sort();
    names.into_iter().find_map(|name| {
        let path = log.join(&name);
        damaged_file(&path).map(|what| (path, what))
    })
}

/// What is wrong with the commit or checkpoint at `path`, if anything: a checkpoint that is not
/// a Parquet file (too short, or without the `PAR1` magic at both ends), or a commit with a
/// line that is not JSON. Other files, and files that cannot be read, are not judged.
pub fn damaged_file(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_string_lossy();
    if !is_version_file(&name) {
        return None;
    }
    if name.ends_with(".parquet") {
        let len = std::fs::metadata(path).ok()?.len();
        return (!super::readthrough::looks_like_parquet(path))
            .then(|| format!("is not a Parquet file ({len} bytes)"));
    }
    let bytes = std::fs::read(path).ok()?;
    if let Some(line) = bytes.split(|b| *b == b'\n').position(|l| {
        !l.iter().all(u8::is_ascii_whitespace)
            && serde_json::from_slice::<serde::de::IgnoredAny>(l).is_err()
    }) {
        return Some(format!("has a line that is not JSON (line {})", line + 1));
    }
    None
}

/// Whether `name` belongs in a `_delta_log`: a commit, a checkpoint, a version's checksum
/// (`NNNNNNNNNNNNNNNNNNNN.crc`), `_last_checkpoint`, or the protocol's `_commits` and
/// `_sidecars` directories.
pub fn is_log_name(name: &str) -> bool {
    is_version_file(name)
        || matches!(name, "_last_checkpoint" | "_commits" | "_sidecars")
        || name
            .strip_suffix(".crc")
            .is_some_and(|d| d.len() == 20 && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether a Delta table exists at `url` (its log has a commit).
pub async fn exists(url: &Url) -> Result<bool> {
    log_store(url)?
        .is_delta_table_location()
        .await
        .map_err(delta_err(url))
}

/// The table at `url` (a local directory's or an object store's), at `version` or its latest.
pub async fn load(url: &Url, version: Option<u64>) -> Result<DeltaTable> {
    let mut b = builder(url)?;
    if let Some(v) = version {
        b = b.with_version(v);
    }
    b.load().await.map_err(|e| match version {
        Some(v) => damaged_or(
            url,
            format!(
                "cannot read version {v} of the Delta table {}: {}",
                shown(url),
                first_line(&e)
            ),
            Some("a version whose files a vacuum removed can no longer be read"),
        ),
        None => delta_err(url)(e),
    })
}

/// A table's location for messages: a local table's path, or the URL.
fn shown(url: &Url) -> String {
    match url.to_file_path() {
        Ok(p) if url.scheme() == "file" => p.display().to_string(),
        _ => url.to_string(),
    }
}

/// The latest committed version of the table at `url` (it must exist).
pub async fn latest_version(url: &Url) -> Result<u64> {
    let table = builder(url)?.build().map_err(delta_err(url))?;
    table.get_latest_version().await.map_err(delta_err(url))
}

/// The Delta schema of a table: its file columns, then the `date` partition column.
fn columns(table: Table) -> Result<Vec<StructField>> {
    let mut out = Vec::new();
    for f in table.schema().fields() {
        let t = match f.data_type() {
            ArrowType::Utf8 => DataType::STRING,
            ArrowType::Int64 => DataType::LONG,
            ArrowType::Float64 => DataType::DOUBLE,
            ArrowType::Timestamp(_, Some(_)) => DataType::TIMESTAMP,
            other => {
                return Err(Error::runtime(format!(
                    "column {} of {} has type {other}, which the lake does not map to Delta",
                    f.name(),
                    table.name()
                )));
            }
        };
        out.push(StructField::new(f.name().clone(), t, f.is_nullable()));
    }
    if table.partitioned() {
        out.push(StructField::new(PARTITION_COLUMN, DataType::STRING, false));
    }
    Ok(out)
}

/// Adds to the table at `url`, as version `base + 1`, the columns its schema lacks of those
/// this promptgate writes (nullable all: the files already there read them as null). Columns
/// the table has that this promptgate does not know (a newer one's) are kept. Returns the new
/// version and the names added, or `None` when nothing was missing.
pub async fn add_missing_columns(
    url: &Url,
    table: Table,
    base: u64,
) -> Result<Option<(u64, Vec<String>)>> {
    let loaded = load(url, Some(base)).await?;
    let snapshot = loaded.snapshot().map_err(delta_err(url))?;
    let current = snapshot.schema();
    let wanted = columns(table)?;
    let missing: Vec<StructField> = wanted
        .iter()
        .filter(|f| current.field(f.name()).is_none())
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(None);
    }
    if let Some(f) = missing.iter().find(|f| !f.is_nullable()) {
        return Err(Error::runtime(format!(
            "{} lacks the required column {}, which cannot be added to files already written",
            shown(url),
            f.name()
        )));
    }
    let mut fields = wanted;
    fields.extend(
        current
            .fields()
            .filter(|f| !fields.iter().any(|w| w.name() == f.name()))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let schema_err = |e: &dyn std::fmt::Display| {
        Error::runtime(format!(
            "cannot add columns to the schema of {}: {e}",
            shown(url)
        ))
    };
    let schema = StructType::try_new(fields).map_err(|e| schema_err(&e))?;
    let metadata = snapshot
        .metadata()
        .clone()
        .with_schema(&schema)
        .map_err(|e| schema_err(&e))?;
    let names = missing.iter().map(|f| f.name().to_string()).collect();
    let version = commit(
        url,
        base,
        vec![Action::Metadata(metadata)],
        Operation::AddColumns(missing),
    )
    .await?;
    Ok(Some((version, names)))
}

/// Creates the Delta table of `table` at `url` (version 0), holding `adds` (files already in
/// place, for a conversion) or nothing. Fails if a table is already there.
pub async fn create(url: &Url, table: Table, adds: Vec<Add>) -> Result<u64> {
    if let Ok(dir) = url.to_file_path() {
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create", &dir, e))?;
    }
    let created = CreateBuilder::new()
        .with_log_store(log_store(url)?)
        .with_table_name(table.name())
        .with_columns(columns(table)?)
        .with_partition_columns(if table.partitioned() {
            vec![PARTITION_COLUMN]
        } else {
            Vec::new()
        })
        .with_save_mode(SaveMode::ErrorIfExists)
        .with_actions(adds.into_iter().map(Action::Add))
        .await
        .map_err(delta_err(url))?;
    Ok(created.version().unwrap_or(0) as u64)
}

/// What a commit does to a table, for its log entry.
#[derive(Debug, Clone)]
pub enum Operation {
    /// New rows (ingest, the labeled-events index).
    Append,
    /// The same rows in fewer files (compaction).
    Compact,
    /// Rows replaced by others (a review scored again).
    Replace,
    /// Back to the files of an earlier version (undoing a writer that died before the lake
    /// recorded its commit).
    Restore(u64),
    /// New nullable columns in the schema (a lake written by an older promptgate).
    AddColumns(Vec<StructField>),
}

/// Commits `actions` to the table at `url` as version `base + 1`. Fails, committing nothing,
/// when another writer committed that version first: the caller decides what to do then.
pub async fn commit(url: &Url, base: u64, actions: Vec<Action>, op: Operation) -> Result<u64> {
    let table = load(url, Some(base)).await?;
    let snapshot = table.snapshot().map_err(delta_err(url))?;
    let operation = match op {
        Operation::Append => DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: Some(vec![PARTITION_COLUMN.into()]),
            predicate: None,
        },
        Operation::Compact => DeltaOperation::Optimize {
            predicate: None,
            target_size: 0,
        },
        Operation::Replace => DeltaOperation::Write {
            mode: SaveMode::Overwrite,
            partition_by: None,
            predicate: None,
        },
        Operation::Restore(v) => DeltaOperation::Restore {
            version: Some(v),
            datetime: None,
        },
        Operation::AddColumns(fields) => DeltaOperation::AddColumn { fields },
    };
    // Checkpoints every 100 commits (the table's `checkpointInterval`) keep a reader's log
    // replay short however many ingests the table has seen; `CommitBuilder::default()` alone
    // would never write one.
    let done = CommitBuilder::from(CommitProperties::default().with_max_retries(0))
        .with_actions(actions)
        .build(Some(snapshot), table.log_store(), operation)
        .await
        .map_err(|e| {
            let message = format!(
                "cannot commit version {} of {}: {}",
                base + 1,
                shown(url),
                first_line(&e)
            );
            if no_space_left(&e) {
                return Error::runtime(format!("{message}: the disk is full")).with_hint(
                    "free space on the lake's disk and run the command again; nothing of this command was committed",
                );
            }
            Error::runtime(message).with_hint("another writer may have committed at the same time; nothing of this command was committed, run it again")
        })?;
    Ok(done.version as u64)
}

/// Where a writer moves a table's damaged checkpoints, relative to the lake root: kept, not
/// deleted, for whoever wants to see what was there.
pub const DAMAGED_DIR: &str = "_promptgate/damaged";

/// Moves the damaged checkpoints of the local table `table` of the lake at `root` out of its
/// `_delta_log` (to [`DAMAGED_DIR`]`/<table>/`), with `_last_checkpoint` when it may name one,
/// once the table has been read through the commits before them. A writer calls it holding the
/// lake's lock; [`ensure_checkpoint`] then writes a sound checkpoint where one is due. Returns
/// the files moved.
pub async fn set_aside_damaged_checkpoints(root: &Path, table: Table) -> Result<Vec<PathBuf>> {
    let dir = root.join(table.name());
    let damaged = super::readthrough::damaged_checkpoints(&dir);
    if damaged.is_empty() {
        return Ok(Vec::new());
    }
    // Readable through its commits, or the error names the file and the way out.
    load(&table_url(&dir)?, None).await?;
    let aside = root.join(DAMAGED_DIR).join(table.name());
    std::fs::create_dir_all(&aside).map_err(|e| Error::io("cannot create", &aside, e))?;
    let log = dir.join(LOG_DIR);
    // `_last_checkpoint` goes too when it names a damaged version (or cannot be read).
    let versions: Vec<u64> = damaged
        .iter()
        .filter_map(|n| n[..20].parse().ok())
        .collect();
    let hint = std::fs::read(log.join("_last_checkpoint")).ok().map(|b| {
        serde_json::from_slice::<serde_json::Value>(&b)
            .ok()
            .and_then(|v| v["version"].as_u64())
    });
    let hint_damaged =
        matches!(hint, Some(None)) || matches!(hint, Some(Some(v)) if versions.contains(&v));
    let mut moved = Vec::new();
    for name in damaged
        .iter()
        .map(String::as_str)
        .chain(hint_damaged.then_some("_last_checkpoint"))
    {
        let from = log.join(name);
        if !from.exists() {
            continue;
        }
        let to = aside.join(format!("{}.{name}", super::log::now_ms()));
        std::fs::rename(&from, &to).map_err(|e| Error::io("cannot move aside", &from, e))?;
        moved.push(to);
    }
    super::sync_dir(&log)?;
    Ok(moved)
}

/// Commits between two checkpoints of a table: its `checkpointInterval`, delta-rs' default.
const CHECKPOINT_INTERVAL: u64 = 100;

/// Writes a checkpoint of the table at `url`'s latest version when the last one is
/// [`CHECKPOINT_INTERVAL`] commits behind or more. A commit writes the checkpoint when it
/// crosses the interval; a writer killed right after that commit never wrote it, and without
/// this every reader would replay more and more commits. Returns the table's latest version and
/// whether it was checkpointed now.
pub async fn ensure_checkpoint(url: &Url) -> Result<(u64, bool)> {
    let table = load(url, None).await?;
    let err = delta_err(url);
    let head = table.version().unwrap_or(0);
    if head + 1 < CHECKPOINT_INTERVAL {
        return Ok((head, false));
    }
    use object_store::ObjectStoreExt;
    let hint = object_store::path::Path::from(format!("{LOG_DIR}/_last_checkpoint"));
    let last = match table.log_store().object_store(None).get(&hint).await {
        Ok(got) => {
            let bytes = got
                .bytes()
                .await
                .map_err(|e| err(deltalake_core::DeltaTableError::from(e)))?;
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["version"].as_u64())
        }
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => return Err(err(deltalake_core::DeltaTableError::from(e))),
    };
    if last.is_some_and(|v| head < v + CHECKPOINT_INTERVAL) {
        return Ok((head, false));
    }
    deltalake_core::checkpoints::create_checkpoint(&table, None)
        .await
        .map_err(&err)?;
    Ok((head, true))
}

/// Whether an error comes from a full disk (ENOSPC anywhere in its chain or text).
fn no_space_left(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && (io.raw_os_error() == Some(libc::ENOSPC)
                || io.kind() == std::io::ErrorKind::StorageFull)
        {
            return true;
        }
        let text = err.to_string();
        if text.contains("No space left on device") || text.contains("os error 28") {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A data file of a table version, as its log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// Path relative to the table directory (`date=YYYY-MM-DD/part-….parquet`).
    pub path: String,
    /// The `date` partition value.
    pub day: String,
    pub size: u64,
    /// Rows, from the log's statistics (None when the writer recorded none).
    pub rows: Option<u64>,
    /// The digest of the file's id-hash file, as its add action records it (see
    /// [`super::ids`]); None when it recorded none.
    pub ids_digest: Option<String>,
}

/// The files of a loaded version of `which`, sorted by path (with their id-hash digests where
/// `which` keeps id-hash files).
pub fn files(table: &DeltaTable, which: Table) -> Result<Vec<DataFile>> {
    let digests = ids::has_id_hashes(which);
    let snapshot = table.snapshot().map_err(delta_err(table.table_url()))?;
    let mut out: Vec<DataFile> = snapshot
        .log_data()
        .iter()
        .map(|f| {
            let day = f
                .partition_values_map()
                .get(PARTITION_COLUMN)
                .cloned()
                .flatten()
                .unwrap_or_default();
            // The tags are only reachable through the add action (deprecated as a way to
            // build actions, not to read them), which copies the whole action: only where a
            // digest can be there.
            #[allow(deprecated)]
            let ids_digest = digests
                .then(|| f.add_action().tags)
                .flatten()
                .and_then(|mut t| t.remove(ids::DIGEST_TAG).flatten());
            DataFile {
                path: f.path().into_owned(),
                day,
                size: f.size().max(0) as u64,
                rows: f.num_records().map(|n| n as u64),
                ids_digest,
            }
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Files removed from the table (by compaction or a restore) and when, in milliseconds.
pub async fn tombstones(table: &DeltaTable) -> Result<HashMap<String, i64>> {
    use futures::TryStreamExt;
    let err = delta_err(table.table_url());
    let snapshot = table.snapshot().map_err(&err)?;
    let log_store = table.log_store();
    let views: Vec<_> = snapshot
        .all_tombstones(log_store.as_ref())
        .try_collect()
        .await
        .map_err(&err)?;
    Ok(views
        .into_iter()
        .map(|t| (t.path().into_owned(), t.deletion_timestamp().unwrap_or(0)))
        .collect())
}

/// The add action of the file `rel` of a table (in partition `day`, if the table is
/// partitioned), read from `path` (the file itself, or its copy before an upload): its size,
/// and its row count and `route` range from the Parquet footer as statistics.
pub fn add_action(path: &Path, rel: &str, day: Option<&str>, data_change: bool) -> Result<Add> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("cannot read", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io("cannot read", path, e))?;
    let reader = SerializedFileReader::new(file).map_err(|e| {
        Error::runtime(format!(
            "{} is not a readable Parquet file: {e}",
            path.display()
        ))
    })?;
    let md = reader.metadata();
    let rows = md.file_metadata().num_rows();
    let mut stats = serde_json::json!({ "numRecords": rows });
    if let Some(idx) = md
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.name() == "route")
    {
        let mut lo: Option<Vec<u8>> = None;
        let mut hi: Option<Vec<u8>> = None;
        let mut complete = md.num_row_groups() > 0;
        for rg in md.row_groups() {
            match rg.column(idx).statistics() {
                Some(Statistics::ByteArray(s)) => match (s.min_opt(), s.max_opt()) {
                    (Some(a), Some(b)) => {
                        let (a, b) = (a.data().to_vec(), b.data().to_vec());
                        if lo.as_ref().is_none_or(|l| a < *l) {
                            lo = Some(a);
                        }
                        if hi.as_ref().is_none_or(|h| b > *h) {
                            hi = Some(b);
                        }
                    }
                    _ => complete = false,
                },
                _ => complete = false,
            }
        }
        // Only exact bounds go in the log (Parquet may truncate long values; then none).
        if let (true, Some(lo), Some(hi)) = (complete, lo, hi)
            && let (Ok(lo), Ok(hi)) = (String::from_utf8(lo), String::from_utf8(hi))
            && lo.len() < 64
            && hi.len() < 64
        {
            stats["minValues"] = serde_json::json!({ "route": lo });
            stats["maxValues"] = serde_json::json!({ "route": hi });
            stats["nullCount"] = serde_json::json!({ "route": 0 });
        }
    }
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64);
    Ok(Add {
        path: rel.to_string(),
        partition_values: day
            .map(|d| HashMap::from([(PARTITION_COLUMN.to_string(), Some(d.to_string()))]))
            .unwrap_or_default(),
        size: meta.len() as i64,
        modification_time: modified,
        data_change,
        stats: Some(stats.to_string()),
        // The id-hash file beside it, tied to it by its digest (see `ids`).
        tags: ids::digest_of(path).map(|d| HashMap::from([(ids::DIGEST_TAG.to_string(), Some(d))])),
        ..Default::default()
    })
}

/// The remove action of a file of the table (compaction, restore).
pub fn remove_action(file: &DataFile, data_change: bool, now_ms: i64) -> Remove {
    Remove {
        path: file.path.clone(),
        data_change,
        deletion_timestamp: Some(now_ms),
        extended_file_metadata: Some(true),
        partition_values: Some(if file.day.is_empty() {
            HashMap::new()
        } else {
            HashMap::from([(PARTITION_COLUMN.to_string(), Some(file.day.clone()))])
        }),
        size: Some(file.size as i64),
        // Kept so that a revert re-adds the file with its id-hash digest.
        tags: file
            .ids_digest
            .clone()
            .map(|d| HashMap::from([(ids::DIGEST_TAG.to_string(), Some(d))])),
        ..Default::default()
    }
}

/// Registers a loaded version of `which` with `ctx` under `name`. `string_views` reads strings
/// as `Utf8View` (the judge's scans); otherwise strings stay `Utf8`, as user SQL has always
/// seen. A version from before a column was added (an older promptgate's lake, or time travel
/// to before its upgrade) reads that column as null, so every query sees one schema.
pub fn register(
    ctx: &SessionContext,
    table: &DeltaTable,
    which: Table,
    name: &str,
    string_views: bool,
) -> Result<()> {
    let err = delta_err(table.table_url());
    // Registers the table's object store (local disk or S3) with the session.
    table
        .update_datafusion_session(&ctx.state())
        .map_err(&err)?;
    let snapshot = table.snapshot().map_err(&err)?.snapshot().clone();
    let config = DeltaScanConfig {
        file_column_name: None,
        wrap_partition_values: false,
        enable_parquet_pushdown: ctx
            .state()
            .config()
            .options()
            .execution
            .parquet
            .pushdown_filters,
        schema_force_view_types: string_views,
        schema: None,
    };
    let scan = DeltaScanNext::new(Arc::new(snapshot), config)?;
    let have = datafusion::catalog::TableProvider::schema(&scan);
    let wanted = columns(which)?;
    if wanted
        .iter()
        .all(|f| have.field_with_name(f.name()).is_ok())
    {
        ctx.register_table(name, Arc::new(scan))?;
        return Ok(());
    }
    // The columns in the order of a table created today (new ones before the partition), the
    // missing ones as typed nulls; columns this promptgate does not know stay at the end.
    let null = |f: &StructField| match f.data_type() {
        t if *t == DataType::STRING && string_views => ScalarValue::Utf8View(None),
        t if *t == DataType::STRING => ScalarValue::Utf8(None),
        t if *t == DataType::LONG => ScalarValue::Int64(None),
        t if *t == DataType::DOUBLE => ScalarValue::Float64(None),
        _ => ScalarValue::TimestampMicrosecond(None, Some("UTC".into())),
    };
    let mut exprs: Vec<_> = wanted
        .iter()
        .map(|f| match have.field_with_name(f.name()) {
            Ok(_) => col(datafusion::common::Column::from_name(f.name())),
            Err(_) => lit(null(f)).alias(f.name()),
        })
        .collect();
    exprs.extend(
        have.fields()
            .iter()
            .filter(|f| !wanted.iter().any(|w| w.name() == f.name()))
            .map(|f| col(datafusion::common::Column::from_name(f.name()))),
    );
    let view = ctx.read_table(Arc::new(scan))?.select(exprs)?;
    ctx.register_table(name, view.into_view())?;
    Ok(())
}

/// Commits the table at `url` back to the files of version `to` (or to no files), on top of
/// its latest version; returns the new version (the latest, when nothing differs).
pub async fn restore(url: &Url, to: Option<u64>) -> Result<u64> {
    let head = load(url, None).await?;
    let head_version = head.version().unwrap_or(0) as u64;
    let head_snapshot = head.snapshot().map_err(delta_err(url))?;
    let mut target: HashMap<String, Add> = HashMap::new();
    if let Some(v) = to {
        let old = load(url, Some(v)).await?;
        for f in old.snapshot().map_err(delta_err(url))?.log_data().iter() {
            // The id-hash digest comes back with the file (tags are only reachable this way).
            #[allow(deprecated)]
            let tags = f.add_action().tags;
            let add = Add {
                path: f.path().into_owned(),
                partition_values: f.partition_values_map(),
                size: f.size(),
                modification_time: f.modification_time(),
                data_change: true,
                stats: f.stats(),
                tags,
                ..Default::default()
            };
            target.insert(add.path.clone(), add);
        }
    }
    let now = crate::lake::log::now_ms();
    let mut actions = Vec::new();
    let mut current = std::collections::HashSet::new();
    for f in head_snapshot.log_data().iter() {
        let path = f.path().into_owned();
        if target.remove(&path).is_none() {
            let mut rm = f.remove_action(true);
            rm.deletion_timestamp = Some(now);
            actions.push(Action::Remove(rm));
        }
        current.insert(path);
    }
    actions.extend(target.into_values().map(Action::Add));
    if actions.is_empty() {
        return Ok(head_version);
    }
    commit(
        url,
        head_version,
        actions,
        Operation::Restore(to.unwrap_or(0)),
    )
    .await
}

/// Commits the inverse of `actions` (committed as `version` of the table at `url`) on top of
/// its latest version: what they added is removed, what they removed is added back.
pub async fn revert(url: &Url, version: u64, actions: &[Action], now_ms: i64) -> Result<u64> {
    let inverse = actions
        .iter()
        .filter_map(|a| match a {
            Action::Add(add) => {
                let file = DataFile {
                    path: add.path.clone(),
                    day: add
                        .partition_values
                        .get(PARTITION_COLUMN)
                        .cloned()
                        .flatten()
                        .unwrap_or_default(),
                    size: add.size.max(0) as u64,
                    rows: None,
                    ids_digest: add
                        .tags
                        .as_ref()
                        .and_then(|t| t.get(ids::DIGEST_TAG).cloned().flatten()),
                };
                Some(Action::Remove(remove_action(&file, true, now_ms)))
            }
            Action::Remove(rm) => Some(Action::Add(Add {
                path: rm.path.clone(),
                partition_values: rm.partition_values.clone().unwrap_or_default(),
                size: rm.size.unwrap_or(0),
                modification_time: now_ms,
                data_change: true,
                tags: rm.tags.clone(),
                ..Default::default()
            })),
            _ => None,
        })
        .collect();
    let head = latest_version(url).await?;
    commit(
        url,
        head,
        inverse,
        Operation::Restore(version.saturating_sub(1)),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_commits_and_checkpoints_are_versions() {
        for yes in [
            "00000000000000000000.json",
            "00000000000000000099.checkpoint.parquet",
            "00000000000000000100.checkpoint.0000000001.0000000002.parquet",
        ] {
            assert!(is_version_file(yes), "{yes}");
        }
        for no in [
            "00000000000000000000.json#1",
            "+0000000000000000099.json",
            "0000000000000000099.json",
            "_last_checkpoint",
            ".00000000000000000000.json.tmp",
            "00000000000000000000.crc",
        ] {
            assert!(!is_version_file(no), "{no}");
        }
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(LOG_DIR);
        std::fs::create_dir_all(&log).unwrap();
        assert!(!is_table(dir.path()), "an empty log is no table yet");
        std::fs::write(log.join("00000000000000000000.json#1"), b"{").unwrap();
        assert!(!is_table(dir.path()), "a temporary file is no commit");
        std::fs::write(log.join("00000000000000000000.json"), b"{}").unwrap();
        assert!(is_table(dir.path()));
    }

    #[test]
    fn a_full_disk_is_told_apart_from_a_concurrent_writer() {
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(no_space_left(&full));
        let other = std::io::Error::other("version 3 already exists");
        assert!(!no_space_left(&other));
    }

    #[test]
    fn damaged_log_files_are_found_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(LOG_DIR);
        std::fs::create_dir_all(&log).unwrap();
        std::fs::write(
            log.join("00000000000000000000.json"),
            b"{\"a\":1}\n{\"b\":2}\n",
        )
        .unwrap();
        assert_eq!(damaged_log_file(dir.path()), None);
        std::fs::write(log.join("00000000000000000001.json"), b"{\"a\":1}\n{\"b\":").unwrap();
        let (file, what) = damaged_log_file(dir.path()).unwrap();
        assert!(file.ends_with("00000000000000000001.json"), "{file:?}");
        assert_eq!(what, "has a line that is not JSON (line 2)");
        std::fs::write(log.join("00000000000000000001.json"), b"{}").unwrap();
        std::fs::write(log.join("00000000000000000001.checkpoint.parquet"), b"PAR1").unwrap();
        let (_, what) = damaged_log_file(dir.path()).unwrap();
        assert_eq!(what, "is not a Parquet file (4 bytes)");
    }
    use crate::lake::LakeFileWriter;

    /// A table that has seen many commits is read from a checkpoint, not from every commit.
    #[tokio::test]
    async fn commits_write_checkpoints_and_every_version_stays_readable() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("llm_labels");
        let url = table_url(&dir).unwrap();
        create(&url, Table::Labels, Vec::new()).await.unwrap();
        let part = dir.join("date=2026-11-01");
        for i in 0..100u64 {
            let name = format!("part-{i}.parquet");
            let w = LakeFileWriter::create(&part.join(&name), Table::Labels).unwrap();
            w.finish().unwrap();
            let add = add_action(
                &part.join(&name),
                &format!("date=2026-11-01/{name}"),
                Some("2026-11-01"),
                true,
            )
            .unwrap();
            let v = commit(&url, i, vec![Action::Add(add)], Operation::Append)
                .await
                .unwrap();
            assert_eq!(v, i + 1);
        }
        assert!(
            dir.join(LOG_DIR)
                .join(format!("{:020}.checkpoint.parquet", 99))
                .exists()
        );
        let t = load(&url, None).await.unwrap();
        assert_eq!(files(&t, Table::Labels).unwrap().len(), 100);
        let old = load(&url, Some(42)).await.unwrap();
        assert_eq!(files(&old, Table::Labels).unwrap().len(), 42);
        // A commit at a version already taken commits nothing.
        let add = add_action(
            &part.join("part-0.parquet"),
            "date=2026-11-01/part-0.parquet",
            Some("2026-11-01"),
            true,
        )
        .unwrap();
        assert!(
            commit(&url, 5, vec![Action::Add(add)], Operation::Append)
                .await
                .is_err()
        );
        assert_eq!(latest_version(&url).await.unwrap(), 100);
        // Nothing to do while the last checkpoint is recent.
        assert_eq!(ensure_checkpoint(&url).await.unwrap(), (100, false));
        // A writer killed right after the commit that crossed the interval left no checkpoint:
        // the next writer's recovery writes one, and readers replay from it.
        let log = dir.join(LOG_DIR);
        for f in std::fs::read_dir(&log).unwrap() {
            let name = f.unwrap().file_name().into_string().unwrap();
            if name.contains("checkpoint") {
                std::fs::remove_file(log.join(name)).unwrap();
            }
        }
        assert_eq!(ensure_checkpoint(&url).await.unwrap(), (100, true));
        assert!(log.join(format!("{:020}.checkpoint.parquet", 100)).exists());
        assert_eq!(ensure_checkpoint(&url).await.unwrap(), (100, false));
        assert_eq!(
            files(&load(&url, None).await.unwrap(), Table::Labels)
                .unwrap()
                .len(),
            100
        );
    }
}
